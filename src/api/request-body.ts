/**
 * Request bodies from JSON text to validated values, the same on every thread: the main thread
 * runs it for the bodies it parses itself, the large-request lane for those it decodes
 * (`src/runtime/sealed.ts`). Every failure is the {@link RuntimeError} the agent gets (400).
 */
import type { z } from 'zod';
import { ErrorCode, RuntimeError } from '../errors.js';
import { jsonTextDeeperThan, MAX_JSON_DEPTH } from './json-depth.js';
import {
  ActionStatusRequestBodySchema,
  formatZodIssues,
  PrepareActionRequestBodySchema,
  QueryMetricsRequestBodySchema,
  StartActionRequestBodySchema,
  StopActionRequestBodySchema,
  type StartActionRequestBody,
} from './schemas.js';

/** The request body schema of each lifecycle endpoint. */
export const REQUEST_SCHEMAS = {
  prepare: PrepareActionRequestBodySchema,
  start: StartActionRequestBodySchema,
  status: ActionStatusRequestBodySchema,
  stop: StopActionRequestBodySchema,
  query: QueryMetricsRequestBodySchema,
} as const;

/**
 * Parse the text of a JSON body: a leading byte-order mark is dropped (as body-parser does), the
 * depth is checked on the text before parsing (a pass over the characters instead of a walk
 * allocating an entry per JSON value), then `JSON.parse`.
 */
export function parseBodyText(text: string): unknown {
  const json = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  if (jsonTextDeeperThan(json, MAX_JSON_DEPTH)) throw tooDeep();
  try {
    return JSON.parse(json);
  } catch (error) {
    throw badJson(error instanceof Error ? error.message : String(error));
  }
}

/** 400 `Failed to parse request body.` with the parser's message. */
export function badJson(message: string): RuntimeError {
  return new RuntimeError(ErrorCode.BadJson, 400, 'Failed to parse request body.', message);
}

/**
 * Check nesting depth (unless `depthChecked`: done on the text already), then the schema; both
 * failures are 400s naming the problem.
 */
export function validateBody<S extends z.ZodType>(body: unknown, schema: S, depthChecked = false): z.output<S> {
  if (!depthChecked && exceedsDepth(body, MAX_JSON_DEPTH)) throw tooDeep();
  if (STATE_REQUEST_SCHEMAS.has(schema)) {
    const accepted = acceptedStateRequest(body);
    if (accepted !== undefined) return accepted as z.output<S>;
  }
  let parsed: z.ZodSafeParseResult<z.output<S>>;
  try {
    parsed = schema.safeParse(body);
  } catch (error) {
    // zod collects issues recursively: hundreds of thousands of bad values overflow its stack.
    if (error instanceof RangeError) throw new RuntimeError(ErrorCode.InvalidRequest, 400, 'Invalid request body: too many invalid values to validate', error.message);
    throw error;
  }
  if (!parsed.success) throw invalidBody(parsed.error);
  return parsed.data;
}

/** The schemas of start, status and stop: `{ executionId, state }` ({@link acceptedStateRequest}). */
const STATE_REQUEST_SCHEMAS: ReadonlySet<z.ZodType> = new Set([StartActionRequestBodySchema, ActionStatusRequestBodySchema, StopActionRequestBodySchema]);

/** `ExecutionIdSchema`'s pattern (zod's `guid`). */
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/**
 * The body of nearly every start, status and stop — an object whose `executionId` is a UUID and
 * whose `state` is an object — accepted without zod: what the schema makes of it (a copy with
 * every key), at a fraction of the cost on the main thread, which parses every such body. Anything
 * else (a missing or `null` state, a wrong type, an own `__proto__` key) is undefined: the schema
 * decides, and says why.
 * A test holds the two to the same answers.
 */
function acceptedStateRequest(body: unknown): StartActionRequestBody | undefined {
  if (!isObject(body)) return undefined;
  const { executionId, state } = body;
  if (typeof executionId !== 'string' || !UUID.test(executionId) || !isObject(state)) return undefined;
  // zod leaves out an own `__proto__` key (JSON can make one): so does the schema's path.
  if (Object.hasOwn(body, '__proto__')) return undefined;
  return { ...body, executionId, state };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** 400 for a body nested deeper than {@link MAX_JSON_DEPTH}. */
export function tooDeep(): RuntimeError {
  return new RuntimeError(ErrorCode.InvalidRequest, 400, `Invalid request body: nested deeper than ${MAX_JSON_DEPTH} levels`);
}

/** Iterative (a recursive walk would itself overflow on the input it guards against). */
function exceedsDepth(root: unknown, maxDepth: number): boolean {
  const stack: [unknown, number][] = [[root, 1]];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const [value, depth] = item;
    if (typeof value !== 'object' || value === null) continue;
    if (depth > maxDepth) return true;
    for (const child of Array.isArray(value) ? value : Object.values(value)) stack.push([child, depth + 1]);
  }
  return false;
}

function invalidBody(error: z.ZodError): RuntimeError {
  const issues = formatZodIssues(error);
  return new RuntimeError(ErrorCode.InvalidRequest, 400, `Invalid request body: ${issues.first}`, issues.all);
}

/** `true` when `value` is an 8-4-4-4-12 hex UUID (any case). */
export function isUuid(value: string): boolean {
  return UUID_PATTERN.test(value);
}
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Title of every refusal of a multipart prepare's `request` field before its schema is checked. */
const REQUEST_FIELD_TITLE = 'Failed to parse request body.';

/**
 * The `request` field of a multipart prepare as far as the upload needs it before the schema:
 * JSON (no byte-order mark, as `JSON.parse` reads it), an object, with an `executionId` that is a
 * UUID (it names the upload folder). The same refusals wherever it runs: the main thread for a
 * small field, the large-request lane for a large one; the caller then checks the schema.
 */
export function parseRequestField(text: string): { request: Record<string, unknown>; executionId: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new RuntimeError(ErrorCode.BadJson, 400, REQUEST_FIELD_TITLE, `The \`request\` field is not valid JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new RuntimeError(ErrorCode.InvalidRequest, 400, REQUEST_FIELD_TITLE, 'The `request` field must hold a JSON object.');
  }
  const executionId: unknown = (parsed as { executionId?: unknown }).executionId;
  if (typeof executionId !== 'string' || !isUuid(executionId)) {
    const shown = JSON.stringify(executionId) ?? 'undefined';
    throw new RuntimeError(
      ErrorCode.InvalidRequest,
      400,
      REQUEST_FIELD_TITLE,
      `executionId must be a UUID (8-4-4-4-12 hex digits), got ${shown.length > 80 ? `${shown.slice(0, 80)}…` : shown}.`,
    );
  }
  return { request: parsed as Record<string, unknown>, executionId };
}
