/**
 * File parameters stay confined to the uploads of their execution.
 *
 * An action reads the files of its `file` parameters from paths the runtime made:
 * `<uploadDir>/<executionId>/<name>`. Those paths come back to the extension in the config of the
 * prepare and in the state the agent holds — both written by the client, so a client that is not
 * the agent could put any path of this host there (`/etc/passwd`) and read it through the action's
 * messages. For actions with `file` parameters, checked before author code runs:
 *
 * 1. **Prepare:** a `file` parameter's value is the file uploaded for it in this request
 *    (multipart). A value in the JSON config of a parameter with no uploaded file is refused;
 *    `null`, `""` or absent is fine (a missing required file is the author's to report).
 * 2. **Later states of an execution this process prepared** (start, status, stop): every location
 *    of a state the extension handed out for it that held a path into the execution's upload
 *    folder (an {@link UploadLocations} record, grown with every state handed out) must hold such
 *    a path again, or nothing (`null`, absent). Paths are resolved as `fs` resolves them (relative
 *    ones against the working directory), so `<folder>/../x` and `../../etc/passwd` are outside.
 *    Other locations are the author's own and are not judged: whatever the client sends there
 *    never named an upload.
 * 3. **Executions this process does not know** (after a restart or a move; their uploads were
 *    never here or were removed with the process that received them): the lifecycle runs no start
 *    and no status handler for them — only the stop, so that the rollback still happens, as the
 *    reference does. That stop sees the agent's state unchecked: nothing records which of its
 *    locations named uploads.
 *
 * A violation is a 400 naming the location; nothing of the request runs.
 *
 * Where the rules run: the main thread checks states it holds as objects; a large state stays
 * sealed on the main thread (`./sealed.ts`) and is checked by the same functions on the
 * large-request lane. The locations a handed-out state names uploads at are found on the handler
 * thread that made it ({@link uploadLocationsIn}), so the main thread never walks a state.
 *
 * @module
 */
import * as path from 'node:path';
import type { JsonObject } from '../api/schemas.js';
import { ErrorCode, RuntimeError } from '../errors.js';

/** A location in a JSON value: object keys and array indices from the root. */
export type JsonLocation = readonly (string | number)[];

/** The file parameters with a value in `config` (not absent, `null` or `""`): rule 1 wants each uploaded. */
export function filledFileParameters(fileParameters: Iterable<string>, config: JsonObject): string[] {
  return [...fileParameters].filter((name) => {
    const value = config[name];
    return value !== undefined && value !== null && value !== '';
  });
}

/** Rule 1: every file parameter with a value in the config (`filled`) must have an upload in this request. */
export function assertFileParametersUploaded(filled: Iterable<string>, uploaded: ReadonlyMap<string, string> | undefined): void {
  for (const name of filled) {
    if (uploaded?.has(name) === true) continue;
    throw new RuntimeError(
      ErrorCode.InvalidRequest,
      400,
      `Invalid request body: file parameter ${name} must be uploaded`,
      `config.${name} names no file uploaded with this prepare; send the prepare as multipart/form-data with the file in a part named ${JSON.stringify(name)} (a path in the JSON config is refused: it could name any file on this host)`,
    );
  }
}

/** The upload folder of an execution, resolved. */
export function uploadFolderOf(uploadDir: string, executionId: string): string {
  return path.resolve(uploadDir, executionId);
}

/**
 * Rule 2's record: the locations of the states handed out for one execution that held a path into
 * its upload folder. Bounded: a state has only so many strings, and the set is keyed by location.
 */
export class UploadLocations {
  private readonly locations = new Map<string, JsonLocation>();

  constructor(readonly folder: string) {}

  /** Add the locations a handed-out state names uploads at (from {@link uploadLocationsIn}). */
  add(locations: readonly JsonLocation[] | undefined): void {
    for (const location of locations ?? []) this.locations.set(JSON.stringify(location), location);
  }

  /** The locations recorded so far. */
  list(): JsonLocation[] {
    return [...this.locations.values()];
  }
}

/** Where `state` names a file in `folder`: the locations to record when it is handed out. */
export function uploadLocationsIn(state: unknown, folder: string): JsonLocation[] {
  const found = new Map<string, JsonLocation>();
  visitStrings(state, (value, at) => {
    if (!isInside(value, folder)) return;
    const location = at();
    found.set(JSON.stringify(location), location);
  });
  return [...found.values()];
}

/** Rule 2: the first recorded location of `state` that holds neither a path into `folder` nor nothing, or undefined. */
export function uploadViolation(state: unknown, folder: string, locations: Iterable<JsonLocation>): JsonLocation | undefined {
  for (const location of locations) {
    const value = valueAt(state, location);
    if (value === undefined || value === null || (typeof value === 'string' && isInside(value, folder))) continue;
    return location;
  }
  return undefined;
}

/** The 400 for a rule-2 violation at `location`. */
export function uploadNotKept(location: JsonLocation, executionId: string): RuntimeError {
  return new RuntimeError(
    ErrorCode.InvalidRequest,
    400,
    `Invalid request body: state${formatLocation(location)} names no upload of execution ${executionId}`,
    'this location of the state named a file uploaded for the execution; an action with file parameters reads only those files, so send back the state the extension handed out',
  );
}

/** A string that names a path inside `folder` once resolved (as `fs` would resolve it). */
function isInside(value: string, folder: string): boolean {
  return value !== '' && path.resolve(value).startsWith(folder + path.sep);
}

function valueAt(root: unknown, at: JsonLocation): unknown {
  let value = root;
  for (const key of at) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<string | number, unknown>)[key];
  }
  return value;
}

/** `.a[2].b`, or `["odd key"]` for keys that are not identifiers. */
function formatLocation(at: JsonLocation): string {
  return at.map((key) => (typeof key === 'number' ? `[${key}]` : /^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`)).join('');
}

/** A location as a chain to the root, materialised only when asked for (most strings never are). */
interface Step {
  key: string | number;
  parent: Step | undefined;
}

function locationOf(step: Step | undefined): JsonLocation {
  const at: (string | number)[] = [];
  for (let s = step; s !== undefined; s = s.parent) at.push(s.key);
  return at.reverse();
}

/** Every string in a JSON value with (a way to get) its location; iterative (states may nest deeply). */
function visitStrings(root: unknown, visit: (value: string, at: () => JsonLocation) => void): void {
  const stack: [unknown, Step | undefined][] = [[root, undefined]];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const [value, step] = item;
    if (typeof value === 'string') visit(value, () => locationOf(step));
    else if (Array.isArray(value)) value.forEach((child, index) => stack.push([child, { key: index, parent: step }]));
    else if (typeof value === 'object' && value !== null) for (const [key, child] of Object.entries(value)) stack.push([child, { key, parent: step }]);
  }
}
