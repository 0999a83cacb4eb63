/**
 * What "JSON" means for states, results and body payloads: the types an author's values must have
 * (checked at compile time as far as TypeScript can) and the check every such value passes at run
 * time, on the thread that made it, before it is handed out.
 *
 * The rule is the agent's: it holds the state as JSON and sends it back as JSON, so a value is
 * accepted only if `JSON.parse(JSON.stringify(value))` gives the same value back. A `Date` would
 * come back as a string, a `Map` or `Set` as `{}`, `NaN` as `null`, a class instance without its
 * prototype, a function not at all — and the next handler would get something its types deny.
 * One exception: an object member whose value is `undefined` is accepted and dropped, as JSON
 * drops it (reading it gives `undefined` either way); in an array it would become `null` and is refused.
 */

/** A JSON value: what survives `JSON.stringify` and `JSON.parse` unchanged. */
export type Json = string | number | boolean | null | Json[] | JsonObject;

/**
 * A JSON object: the shape of `state` and of the agent's `config`. Members may be `undefined`
 * (JSON drops them); in arrays they may not.
 */
export type JsonObject = { [key: string]: Json | undefined };

declare const notJson: unique symbol;

/**
 * Where a value that is not JSON stood, and why: the compiler's error then reads
 * `Type 'Date' is not assignable to type '… NotJson<"Date is not JSON; store an ISO string">'`.
 */
export interface NotJson<Why extends string> {
  readonly [notJson]: Why;
}

/**
 * `T` with every member that is not JSON replaced by a {@link NotJson} naming the problem, so
 * `value: T & JsonChecked<T>` accepts exactly the JSON values of `T`. Unlike {@link Json}, it
 * accepts interfaces (which have no index signature) as long as their members are JSON.
 *
 * What TypeScript cannot see is checked at run time: `NaN` and `Infinity` (they are `number`),
 * class instances whose members are all data, cycles.
 */
export type JsonChecked<T> = T extends Json
  ? T
  : T extends undefined
    ? NotJson<'undefined is not JSON'>
    : T extends bigint
      ? NotJson<'a bigint is not JSON; store a string'>
      : T extends symbol
        ? NotJson<'a symbol is not JSON'>
        : T extends (...args: never[]) => unknown
          ? NotJson<'a function is not JSON'>
          : T extends Date
            ? NotJson<'Date is not JSON; store an ISO string'>
            : T extends ReadonlyMap<unknown, unknown>
              ? NotJson<'Map is not JSON; store an object or an array of entries'>
              : T extends ReadonlySet<unknown>
                ? NotJson<'Set is not JSON; store an array'>
                : T extends ArrayBufferView | ArrayBuffer
                  ? NotJson<'binary data is not JSON; store base64'>
                  : T extends RegExp
                    ? NotJson<'RegExp is not JSON; store its source'>
                    : T extends PromiseLike<unknown>
                      ? NotJson<'a Promise is not JSON; await it'>
                      : T extends readonly unknown[]
                        ? { [K in keyof T]: JsonChecked<T[K]> }
                        : T extends object
                          ? { [K in keyof T]: JsonMember<T[K]> }
                          : NotJson<'this type is not known to be JSON'>;

/** An object member: `undefined` is allowed (JSON drops the member). */
type JsonMember<T> = [undefined] extends [T] ? (T extends undefined ? undefined : JsonChecked<T>) : JsonChecked<T>;

/** A value that is not JSON, with the path where it stood: `state.when: Date is not JSON; store an ISO string`. */
export class NotJsonError extends TypeError {
  /** Where the value stood, e.g. `state.items[3].when`. */
  readonly path: string;

  constructor(path: string, problem: string) {
    super(`${path}: ${problem}`);
    this.name = 'NotJsonError';
    this.path = path;
  }
}

/**
 * The JSON text of `value`, after checking that it is JSON (see the module documentation);
 * `undefined` gives `undefined`.
 *
 * @param root how the value is named in the error's path (`state`, `metrics`, …).
 * @throws NotJsonError naming the first value that is not JSON and where it stood.
 */
export function checkedJsonText(value: unknown, root: string): string | undefined {
  assertJson(value, root);
  return JSON.stringify(value);
}

/**
 * Check that `value` is JSON.
 * @throws NotJsonError as {@link checkedJsonText}.
 */
export function assertJson(value: unknown, root: string): void {
  const keys: (string | number)[] = [];
  let problem: string | undefined;
  try {
    problem = findProblem(value, keys, []);
  } catch (error) {
    // A getter that throws, a revoked Proxy: reading the value failed, which is the value's problem.
    problem = `reading it threw: ${error instanceof Error ? error.message : 'a non-Error value'}`;
  }
  if (problem !== undefined) throw new NotJsonError(formatPath(root, keys), problem);
}

/**
 * Deeper than this is refused by the walk itself (it recurses): far beyond the 512 levels a
 * request may nest (`src/api/json-depth.ts`), far below a thread's stack limit.
 */
const MAX_WALK_DEPTH = 1_024;

/**
 * Depth-first: the first problem under `value`, with `keys` left holding its path (they are
 * pushed on the way down and popped only on the way back from a clean subtree). `ancestors` are
 * the objects on the current path, for cycles: JSON.stringify would throw on one, this names it.
 *
 * A separate walk before a plain `JSON.stringify` costs less than checking in a `JSON.stringify`
 * replacer, which takes V8 off its fast serialiser (two to four times slower, measured on small
 * and large states); the walk adds a fraction of the stringify's own time.
 */
function findProblem(value: unknown, keys: (string | number)[], ancestors: object[]): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'boolean':
    case 'undefined':
      return undefined;
    case 'number':
      return Number.isFinite(value) ? undefined : `${String(value)} is not JSON`;
    case 'bigint':
      return 'a bigint is not JSON; store a string';
    case 'symbol':
      return 'a symbol is not JSON';
    case 'function':
      return 'a function is not JSON';
  }
  if (value === null) return undefined;
  const object = value as object;
  if (ancestors.includes(object)) return 'a circular reference is not JSON';
  if (ancestors.length >= MAX_WALK_DEPTH) return `nesting deeper than ${MAX_WALK_DEPTH} levels is not JSON the agent can send back`;
  if (Array.isArray(object)) {
    if ('toJSON' in object) return TO_JSON;
    // A RegExp match, an array with named properties: JSON keeps only the elements.
    if (Object.keys(object).length !== object.length && Object.keys(object).some((key) => !ARRAY_INDEX.test(key))) {
      return 'an array with properties besides its elements is not JSON (they would be dropped); copy the elements';
    }
    ancestors.push(object);
    for (let i = 0; i < object.length; i++) {
      keys.push(i);
      const element: unknown = object[i];
      const problem = element === undefined ? 'undefined in an array is not JSON (it would come back as null)' : findProblem(element, keys, ancestors);
      if (problem !== undefined) return problem;
      keys.pop();
    }
    ancestors.pop();
    return undefined;
  }
  const prototype: unknown = Object.getPrototypeOf(object);
  if (prototype !== Object.prototype && prototype !== null) return notPlain(object);
  if ('toJSON' in object) return TO_JSON;
  ancestors.push(object);
  for (const key of Object.keys(object)) {
    keys.push(key);
    const problem = findProblem((object as Record<string, unknown>)[key], keys, ancestors);
    if (problem !== undefined) return problem;
    keys.pop();
  }
  ancestors.pop();
  return undefined;
}

/** An array index as `Object.keys` lists it. */
const ARRAY_INDEX = /^(0|[1-9]\d*)$/;

/** JSON.stringify would call it: what comes back is what toJSON returns, not the value itself. */
const TO_JSON = 'a value with a toJSON method is not JSON as it is; store what toJSON returns';

/** Why an object that is neither a plain object nor an array is not JSON, and what to store instead. */
function notPlain(object: object): string {
  if (object instanceof Date) return 'Date is not JSON; store an ISO string';
  if (object instanceof Map) return 'Map is not JSON; store an object or an array of entries';
  if (object instanceof Set) return 'Set is not JSON; store an array';
  if (Buffer.isBuffer(object)) return 'Buffer is not JSON; store base64';
  if (ArrayBuffer.isView(object)) return `${object.constructor.name} is not JSON; store base64 or an array of numbers`;
  if (object instanceof ArrayBuffer || object instanceof SharedArrayBuffer) return `${object.constructor.name} is not JSON; store base64`;
  if (object instanceof RegExp) return 'RegExp is not JSON; store its source';
  if (object instanceof Promise) return 'a Promise is not JSON; await it';
  if (object instanceof Error) return `${object.name} is not JSON; store its message`;
  if (object instanceof String || object instanceof Number || object instanceof Boolean) {
    return `a ${object.constructor.name} object is not JSON; store the primitive ${typeof object.valueOf()}`;
  }
  const name: unknown = (object as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === 'string' && name !== '' ? `class ${name} is not JSON; store its fields` : 'an object with a prototype is not JSON; store its fields';
}

/** `state.items[3].when`, `state["a key"]`; with an empty root the path starts at the first key (`metrics[0]`). */
function formatPath(root: string, keys: readonly (string | number)[]): string {
  let path = root;
  for (const key of keys) {
    if (typeof key === 'number') path += `[${key}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(key)) path += path === '' ? key : `.${key}`;
    else path += `[${JSON.stringify(key)}]`;
  }
  return path === '' ? 'the value' : path;
}
