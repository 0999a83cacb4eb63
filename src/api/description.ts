/**
 * Registration of action descriptions: validation of what the author wrote, the reference SDK's
 * defaults (reference §1.2), its six registration rules (§1.3) and the gaps it leaves open.
 *
 * Everything here runs once at start-up on the main thread. A violation is a {@link RegistrationError}
 * that names the action and the offending field, so the extension refuses to start instead of
 * failing later in front of the agent (the reference SDK either exits without naming the field or,
 * for the gaps, crashes or serves dangling endpoints at run time).
 */
import { z } from 'zod';
import {
  ActionDescriptionSchema,
  CALL_INTERVAL_PATTERN,
  MetricsQueryConfigurationSchema,
  formatZodIssues,
  formatZodPath,
  type ActionDescription,
  type ActionParameter,
  type MutatingEndpointReferenceWithCallInterval,
  type MutatingHttpMethod,
} from './schemas.js';

/** What an action module implements (known on the main thread without calling anything). */
export interface ImplementedHandlers {
  /** The module has a `status` handler. */
  status: boolean;
  /** The module has a `stop` handler. */
  stop: boolean;
  /** The module has a metric `query` handler. */
  query: boolean;
  /** The module has a long-running `body`. */
  body: boolean;
}

/**
 * A description that cannot be registered. Messages read `Action "<id>": <what is wrong>` and always
 * name the field; {@link RegistrationError.field} carries it separately for tooling.
 */
export class RegistrationError extends Error {
  /** Id of the offending action; `undefined` when the description has no usable id. */
  readonly actionId: string | undefined;
  /** Path of the offending field (`parameters[0].type`, `timeControl`, …); `undefined` for the whole description. */
  readonly field: string | undefined;

  /**
   * @param message the complete message, conventionally `Action "<id>": <field and what is wrong>`
   *   (see {@link registrationError} which builds it)
   * @param actionId id of the action, if known
   * @param field path of the offending field, if any
   */
  constructor(message: string, actionId?: string, field?: string) {
    super(message);
    this.name = 'RegistrationError';
    this.actionId = actionId;
    this.field = field;
  }
}

/**
 * Build a {@link RegistrationError} with the conventional message `Action "<id>": <reason>`
 * (`Action <unknown id>: …` without a usable id). `reason` must itself name the field.
 */
export function registrationError(actionId: string | undefined, field: string | undefined, reason: string): RegistrationError {
  const who = actionId === undefined ? '<unknown id>' : JSON.stringify(actionId);
  return new RegistrationError(`Action ${who}: ${reason}`, actionId, field);
}

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

const MS_PER_UNIT: Readonly<Record<string, number>> = {
  ns: 1e-6,
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/**
 * Parse a duration in the spec's form `<integer>(ns|ms|s|m|h|d)` (e.g. `500ms`, `5s`, `1d`) into
 * milliseconds. Nanoseconds round up to whole milliseconds so that a positive interval never becomes
 * 0 (`1ns` → 1). Compound or decimal forms (`1m30s`, `1.5s`), signs, spaces and other units are
 * rejected, as the spec's pattern does.
 *
 * @throws RangeError when `text` is not in that form or the result is not a safe integer.
 */
export function parseDurationMs(text: string): number {
  const match = typeof text === 'string' ? CALL_INTERVAL_PATTERN.exec(text) : null;
  const unit = match?.[1];
  const msPerUnit = unit === undefined ? undefined : MS_PER_UNIT[unit];
  if (match === null || unit === undefined || msPerUnit === undefined) {
    throw new RangeError(`Invalid duration ${JSON.stringify(text)}: expected <integer><unit> with unit ns, ms, s, m, h or d (e.g. "5s")`);
  }
  const amount = Number(text.slice(0, text.length - unit.length));
  const ms = unit === 'ns' ? Math.ceil(amount / 1e6) : amount * msPerUnit;
  if (!Number.isSafeInteger(ms)) throw new RangeError(`Invalid duration ${JSON.stringify(text)}: too large`);
  return ms;
}

// ---------------------------------------------------------------------------------------------
// Input schema: what authors may write
// ---------------------------------------------------------------------------------------------

const MUTATING_METHODS: readonly MutatingHttpMethod[] = ['POST', 'PUT', 'DELETE'];

/** Endpoint path as an author may write it: empty/missing means "use the default". */
const PathInputSchema = z
  .string()
  .regex(/^(?:\/.*)?$/, { message: 'Invalid path: a custom endpoint path must start with "/"' })
  .optional();

/** Method as an author may write it: any case (the removed TS example used `post`), empty = default. */
const MethodInputSchema = z
  .string()
  .refine((method) => method === '' || (MUTATING_METHODS as readonly string[]).includes(method.toUpperCase()), {
    message: 'Invalid option: expected one of "POST"|"PUT"|"DELETE" (any case)',
  })
  .optional();

/** callInterval as an author may write it: spec pattern and strictly positive; empty = default. */
const CallIntervalInputSchema = z
  .string()
  .superRefine((interval, ctx) => {
    if (interval === '') return;
    if (!CALL_INTERVAL_PATTERN.test(interval)) {
      ctx.addIssue({ code: 'custom', message: `Invalid duration ${JSON.stringify(interval)}: expected <integer><unit> with unit ns, ms, s, m, h or d (e.g. "5s")` });
      return;
    }
    let ms: number;
    try {
      ms = parseDurationMs(interval);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
      return;
    }
    if (ms <= 0) ctx.addIssue({ code: 'custom', message: `Invalid duration ${JSON.stringify(interval)}: must be greater than 0` });
  })
  .optional();

const EndpointInputSchema = z.looseObject({ path: PathInputSchema, method: MethodInputSchema });
const EndpointWithCallIntervalInputSchema = EndpointInputSchema.extend({ callInterval: CallIntervalInputSchema });

/**
 * What an author may write as a description: the spec's {@link ActionDescriptionSchema} except that
 * endpoint references (prepare, start, status, stop, metrics.query.endpoint) and their path/method
 * may be omitted or empty (defaults are filled in), methods may be lowercase, and `parameters`
 * (also of `metrics.query`) may be omitted for actions without parameters.
 */
export const ActionDescriptionInputSchema = ActionDescriptionSchema.extend({
  parameters: ActionDescriptionSchema.shape.parameters.optional(),
  prepare: EndpointInputSchema.optional(),
  start: EndpointInputSchema.optional(),
  status: EndpointWithCallIntervalInputSchema.optional(),
  stop: EndpointInputSchema.optional(),
  metrics: z
    .looseObject({
      query: MetricsQueryConfigurationSchema.extend({
        endpoint: EndpointWithCallIntervalInputSchema.optional(),
        parameters: MetricsQueryConfigurationSchema.shape.parameters.optional(),
      }).optional(),
    })
    .optional(),
});
/**
 * A description as an author writes it (input of {@link normalizeDescription}): exactly the fields
 * of the spec, so a misspelt one (`categroy`, `icn`) in an object literal is a compile error. The
 * spec lets no description object carry fields of its own; {@link assertKnownFields} refuses them
 * at start-up too, for descriptions built where the compiler does not look.
 */
export type ActionDescriptionInput = Exact<z.input<typeof ActionDescriptionInputSchema>>;

/**
 * `T` without index signatures, recursively: the wire schemas are loose (they accept what a newer
 * agent or extension adds), which as author input would let any misspelt key through.
 */
type Exact<T> = T extends readonly (infer Item)[]
  ? Exact<Item>[]
  : T extends object
    ? { [K in keyof T as string extends K ? never : number extends K ? never : K]: Exact<T[K]> }
    : T;
type ParsedInput = z.output<typeof ActionDescriptionInputSchema>;
type EndpointInput = z.output<typeof EndpointWithCallIntervalInputSchema>;

// ---------------------------------------------------------------------------------------------
// assertKnownFields
// ---------------------------------------------------------------------------------------------

/** A field of an author's description that the spec does not have. */
interface UnknownField {
  /** Where it is, spelled as in messages: `categroy`, `parameters[0].lable`. */
  path: string;
  /** The known field it probably misspells, if one is close. */
  suggestion: string | undefined;
}

/**
 * Refuse fields of an author's description that the spec does not have, naming each (with the
 * known field it probably misspells): they would go to the agent as they are, and the field the
 * author meant would silently be missing. Run on descriptions an author wrote, before
 * {@link normalizeDescription} — which itself keeps unknown fields, as the spec allows on the wire
 * (`actionkit check` validates other extensions' descriptions with it).
 *
 * A field whose shape is wrong is left to {@link normalizeDescription}; where a value matches no
 * variant of a union (a widget of an unknown type), its fields are not looked at here.
 *
 * @throws RegistrationError `Action "<id>": unknown field "categroy" (did you mean "category"?)`
 */
export function assertKnownFields(input: unknown): void {
  let json: unknown;
  try {
    json = JSON.parse(JSON.stringify(input ?? null)) as unknown;
  } catch {
    return; // normalizeDescription reports it
  }
  const unknown: UnknownField[] = [];
  collectUnknownFields(ActionDescriptionInputSchema, json, [], unknown);
  const first = unknown[0];
  if (first === undefined) return;
  const described = unknown.map(({ path, suggestion }) => `unknown field ${JSON.stringify(path)}${suggestion === undefined ? '' : ` (did you mean ${JSON.stringify(suggestion)}?)`}`);
  throw registrationError(rawId(json), first.path, `${described.join('; ')}: the ActionKit spec has no such field${unknown.length === 1 ? '' : 's'}`);
}

/**
 * Walk `value` along `schema` through the classes the description schemas are made of (objects,
 * arrays, optionals, unions) and collect the keys objects have beyond their shape.
 */
function collectUnknownFields(schema: z.ZodType, value: unknown, path: PropertyKey[], out: UnknownField[]): void {
  if (schema instanceof z.ZodOptional || schema instanceof z.ZodNullable || schema instanceof z.ZodDefault) {
    collectUnknownFields(schema.unwrap() as z.ZodType, value, path, out);
  } else if (schema instanceof z.ZodArray) {
    if (Array.isArray(value)) value.forEach((item, index) => collectUnknownFields(schema.element as z.ZodType, item, [...path, index], out));
  } else if (schema instanceof z.ZodUnion) {
    // The variant the value is: the first that accepts it. None does: normalizeDescription reports it.
    const variant = (schema.options as readonly z.ZodType[]).find((option) => option.safeParse(value).success);
    if (variant !== undefined) collectUnknownFields(variant, value, path, out);
  } else if (schema instanceof z.ZodObject) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return;
    const shape = schema.shape as Record<string, z.ZodType>;
    for (const [key, child] of Object.entries(value)) {
      const field = shape[key];
      if (field === undefined || !Object.hasOwn(shape, key)) out.push({ path: formatZodPath([...path, key]), suggestion: closestKey(key, Object.keys(shape)) });
      else collectUnknownFields(field, child, [...path, key], out);
    }
  }
}

/** The known key `key` probably misspells: within two edits (a swap of neighbours counts as one), case ignored. */
function closestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours. */
function editDistance(a: string, b: string): number {
  const rows: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  const at = (i: number, j: number): number => rows[i]![j]!;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let distance = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) distance = Math.min(distance, at(i - 2, j - 2) + 1);
      rows[i]![j] = distance;
    }
  }
  return at(a.length, b.length);
}

// ---------------------------------------------------------------------------------------------
// normalizeDescription
// ---------------------------------------------------------------------------------------------

/** Characters that survive in a URL path segment without escaping (RFC 3986 "unreserved"). */
const ID_PATTERN = /^[A-Za-z0-9._~-]+$/;

/** Status interval of real status endpoints when the author gives none (reference `defaultCallInterval`). */
export const DEFAULT_STATUS_CALL_INTERVAL = '5s';
/** Interval of the synthetic status endpoint of stoppable actions without status (heartbeat channel). */
export const SYNTHETIC_STATUS_CALL_INTERVAL = '15s';

/**
 * Validate an author's description, apply the reference defaults, enforce the rules.
 *
 * Defaults (reference §1.2): prepare `POST /<id>/prepare`, start `POST /<id>/start`; `stop`
 * (`POST /<id>/stop`) exists when a stop handler or a body is implemented (the runtime must be able to
 * stop a body); `status` (`POST /<id>/status`, callInterval `5s`) exists when a status handler is
 * implemented; a stoppable action without status gets the synthetic status `15s`;
 * `metrics.query.endpoint` defaults to `POST /<id>/query` (callInterval not defaulted). Methods are
 * uppercased. The describe endpoint is always `GET /<id>` (not part of the description).
 *
 * The description is first converted to JSON and back, so what is validated, cached and frozen is
 * exactly the document the agent receives (no functions, `undefined`s or shared author objects).
 *
 * @returns a deep-frozen description that validates against {@link ActionDescriptionSchema}.
 * @throws RegistrationError naming the action id and the field, e.g.
 *   `Action "com.example.x": parameters[0].type: Invalid option: expected one of "string"|...` or
 *   `Action "com.example.x": timeControl "internal" requires a status handler`.
 */
export function normalizeDescription(input: unknown, implemented: ImplementedHandlers): ActionDescription {
  let json: unknown;
  try {
    json = JSON.parse(JSON.stringify(input ?? null)) as unknown;
  } catch (error) {
    throw registrationError(rawId(input), undefined, `description is not JSON-serialisable: ${(error as Error).message}`);
  }

  const parsed = ActionDescriptionInputSchema.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const field = first === undefined ? undefined : fieldOf(first.path);
    throw registrationError(rawId(json), field, formatZodIssues(parsed.error).all);
  }
  const description = parsed.data;
  const id = description.id;

  checkId(id);
  checkParameters(description);
  checkHandlers(description, implemented);

  const normalized = applyDefaults(description, implemented);

  // Defensive: the defaults above must always produce a spec-valid document. If not, that is a bug
  // here, but it is still reported as a registration problem of this action rather than as a
  // malformed document served to the agent later.
  const check = ActionDescriptionSchema.safeParse(normalized);
  if (!check.success) {
    const first = check.error.issues[0];
    throw registrationError(id, first === undefined ? undefined : fieldOf(first.path), formatZodIssues(check.error).all);
  }
  return deepFreeze(check.data);
}

/** The id for messages, when the raw input has a string id (even if it is otherwise invalid). */
function rawId(input: unknown): string | undefined {
  if (typeof input !== 'object' || input === null) return undefined;
  const id = (input as { id?: unknown }).id;
  return typeof id === 'string' ? id : undefined;
}

/** A zod path as the `field` of a {@link RegistrationError} (`parameters[0].type`), spelled as in the message. */
function fieldOf(path: readonly PropertyKey[]): string | undefined {
  return path.length === 0 ? undefined : formatZodPath(path);
}

function checkId(id: string): void {
  if (id === '') throw registrationError(id, 'id', 'id: must not be empty');
  // The id becomes a path segment of every default route (`/<id>/prepare`) and is used raw, like the
  // reference; `/`, `?`, `#`, `%`, spaces etc. would change the route or need escaping. `.` and `..`
  // are dot-segments that URL resolution removes.
  if (!ID_PATTERN.test(id) || id === '.' || id === '..') {
    throw registrationError(
      id,
      'id',
      `id: ${JSON.stringify(id)} cannot be used as a URL path segment: use only letters, digits and . _ ~ - (and not "." or "..")`,
    );
  }
}

function checkParameters(description: ParsedInput): void {
  const id = description.id;
  assertUniqueNames(id, description.parameters ?? [], 'parameters');
  const query = description.metrics?.query;
  if (query !== undefined) {
    const parameters = query.parameters ?? [];
    assertUniqueNames(id, parameters, 'metrics.query.parameters');
    parameters.forEach((parameter, index) => {
      if (parameter.type === 'file') {
        // Metric queries are stateless JSON calls: there is no multipart upload and no stop to clean up.
        throw registrationError(
          id,
          `metrics.query.parameters[${index}].type`,
          `metrics.query.parameters[${index}].type: parameters of type "file" are not supported in metric queries`,
        );
      }
    });
  }
}

function assertUniqueNames(id: string, parameters: readonly ActionParameter[], base: string): void {
  const seen = new Map<string, number>();
  parameters.forEach((parameter, index) => {
    const previous = seen.get(parameter.name);
    if (previous !== undefined) {
      // Both would be stored under the same `config[name]`; the reference's own example has this bug.
      throw registrationError(
        id,
        `${base}[${index}].name`,
        `${base}[${index}].name: duplicate parameter name ${JSON.stringify(parameter.name)} (also ${base}[${previous}].name)`,
      );
    }
    seen.set(parameter.name, index);
  });
}

function checkHandlers(description: ParsedInput, implemented: ImplementedHandlers): void {
  const id = description.id;
  const stoppable = implemented.stop || implemented.body;
  const timeControl = description.timeControl;

  // Reference rules 4-6.
  if (timeControl === 'internal' && !implemented.status) {
    throw registrationError(id, 'timeControl', 'timeControl "internal" requires a status handler (it decides when the action is completed)');
  }
  if (timeControl === 'instantaneous') {
    const forbidden = implemented.status ? 'a status handler' : implemented.stop ? 'a stop handler' : implemented.body ? 'a body' : undefined;
    if (forbidden !== undefined) {
      throw registrationError(id, 'timeControl', `timeControl "instantaneous" must not have ${forbidden} (the action ends when start returns)`);
    }
  }

  // Gap: the platform drives `external` actions with the user's `duration` parameter.
  if (timeControl === 'external') {
    const parameters = description.parameters ?? [];
    const index = parameters.findIndex((parameter) => parameter.name === 'duration');
    const duration = parameters[index];
    if (duration === undefined) {
      throw registrationError(id, 'parameters', 'timeControl "external" requires a parameter named "duration" of type "duration" in parameters');
    }
    if (duration.type !== 'duration') {
      throw registrationError(
        id,
        `parameters[${index}].type`,
        `parameters[${index}].type: timeControl "external" requires the parameter "duration" to be of type "duration", not ${JSON.stringify(duration.type)}`,
      );
    }
  }

  // Reference rule 3: uploaded files are removed when the execution stops, so it must be stoppable.
  (description.parameters ?? []).forEach((parameter, index) => {
    if (parameter.type === 'file' && !stoppable) {
      throw registrationError(
        id,
        `parameters[${index}].type`,
        `parameters[${index}].type "file" requires a stop handler (or a body): uploaded files are removed when the action stops`,
      );
    }
  });

  // Reference rules 1-2, and the reverse gap (a declared query nobody answers).
  if (implemented.query) {
    if (description.metrics === undefined) {
      throw registrationError(id, 'metrics', 'metrics: a query handler is implemented but metrics is missing (declare metrics.query)');
    }
    if (description.metrics.query === undefined) {
      throw registrationError(id, 'metrics.query', 'metrics.query: a query handler is implemented but metrics.query is missing');
    }
  } else if (description.metrics?.query !== undefined) {
    throw registrationError(id, 'metrics.query', 'metrics.query is declared but no query handler is implemented');
  }

  // Gaps: endpoints declared but never served. A declared stop without handler crashed the
  // reference's heartbeat goroutine; a declared status without status/stop was never registered.
  if (description.stop !== undefined && !stoppable) {
    throw registrationError(id, 'stop', 'stop is declared but neither a stop handler nor a body is implemented');
  }
  if (description.status !== undefined && !implemented.status && !stoppable) {
    throw registrationError(id, 'status', 'status is declared but neither a status handler, a stop handler nor a body is implemented');
  }
}

/**
 * An endpoint reference with the defaults `/<id>/<suffix>` and `POST` filled in and the method
 * uppercased; everything else the author wrote (including a `callInterval`) is kept.
 */
function endpoint(id: string, declared: EndpointInput | undefined, suffix: string): MutatingEndpointReferenceWithCallInterval {
  const { path, method, callInterval, ...extra } = declared ?? {};
  const reference: MutatingEndpointReferenceWithCallInterval = {
    ...extra,
    path: path === undefined || path === '' ? `/${id}/${suffix}` : path,
    method: method === undefined || method === '' ? 'POST' : (method.toUpperCase() as MutatingHttpMethod),
  };
  // An empty callInterval means "not set" (as in the reference); it would fail the spec pattern.
  if (callInterval !== undefined && callInterval !== '') reference.callInterval = callInterval;
  return reference;
}

function applyDefaults(description: ParsedInput, implemented: ImplementedHandlers): ActionDescription {
  const id = description.id;
  const stoppable = implemented.stop || implemented.body;
  const { prepare, start, status, stop, metrics, parameters, ...rest } = description;

  const normalized: ActionDescription = {
    ...rest,
    parameters: parameters ?? [],
    prepare: endpoint(id, prepare, 'prepare'),
    start: endpoint(id, start, 'start'),
  };

  if (stop !== undefined || stoppable) normalized.stop = endpoint(id, stop, 'stop');

  // Real status when implemented or declared; otherwise the synthetic one of stoppable actions
  // (heartbeat + extension-stop reporting channel), with its own, slower interval.
  let declaredStatus: EndpointInput | undefined = status;
  let defaultInterval = DEFAULT_STATUS_CALL_INTERVAL;
  if (declaredStatus === undefined && implemented.status) declaredStatus = {};
  if (declaredStatus === undefined && normalized.stop !== undefined) {
    declaredStatus = {};
    defaultInterval = SYNTHETIC_STATUS_CALL_INTERVAL;
  }
  if (declaredStatus !== undefined) {
    const statusEndpoint = endpoint(id, declaredStatus, 'status');
    statusEndpoint.callInterval ??= defaultInterval;
    normalized.status = statusEndpoint;
  }

  if (metrics !== undefined) {
    const { query, ...metricsRest } = metrics;
    normalized.metrics = metricsRest;
    if (query !== undefined) {
      const { endpoint: declaredEndpoint, parameters: queryParameters, ...queryRest } = query;
      normalized.metrics.query = {
        ...queryRest,
        // callInterval is deliberately not defaulted (reference): the agent applies its own.
        endpoint: endpoint(id, declaredEndpoint, 'query'),
        parameters: queryParameters ?? [],
      };
    }
  }
  return normalized;
}

/** Freeze a JSON tree recursively (the cached description is shared by every request). */
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// assertUniqueRoutes
// ---------------------------------------------------------------------------------------------

/**
 * Throws {@link RegistrationError} when two descriptions share an id or two endpoints (of different
 * actions or of the same one) claim the same method and path. The describe endpoint `GET /<id>` counts.
 *
 * Paths are compared case-insensitively and without a trailing slash because express routes that way
 * by default (`caseSensitive: false`, `strict: false`): `/A/start` and `/a/start/` reach the same
 * handler, so allowing both would let one action silently shadow the other.
 */
export function assertUniqueRoutes(descriptions: readonly ActionDescription[]): void {
  const ids = new Set<string>();
  const routes = new Map<string, { actionId: string; endpoint: string }>();
  for (const description of descriptions) {
    const id = description.id;
    if (ids.has(id)) throw registrationError(id, 'id', 'id: registered more than once (action ids must be unique)');
    ids.add(id);

    const claims: Array<{ endpoint: string; method: string; path: string }> = [
      { endpoint: 'describe', method: 'GET', path: `/${id}` },
      { endpoint: 'prepare', ...description.prepare },
      { endpoint: 'start', ...description.start },
    ];
    if (description.status !== undefined) claims.push({ endpoint: 'status', ...description.status });
    if (description.stop !== undefined) claims.push({ endpoint: 'stop', ...description.stop });
    const query = description.metrics?.query;
    if (query !== undefined) claims.push({ endpoint: 'metrics.query.endpoint', ...query.endpoint });

    for (const claim of claims) {
      const key = `${claim.method.toUpperCase()} ${routeKey(claim.path)}`;
      const owner = routes.get(key);
      if (owner !== undefined) {
        const by = owner.actionId === id ? `${owner.endpoint} of the same action` : `${owner.endpoint} of action ${JSON.stringify(owner.actionId)}`;
        const field = claim.endpoint === 'describe' ? 'id' : `${claim.endpoint}.path`;
        throw registrationError(id, field, `${field}: route ${claim.method} ${claim.path} is already claimed by ${by}`);
      }
      routes.set(key, { actionId: id, endpoint: claim.endpoint });
    }
  }
}

/** How express matches a path by default: case-insensitive, optional trailing slash. */
function routeKey(path: string): string {
  const lower = path.toLowerCase();
  return lower.length > 1 && lower.endsWith('/') ? lower.slice(0, -1) : lower;
}
