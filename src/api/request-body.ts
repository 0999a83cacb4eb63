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
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw invalidBody(parsed.error);
  return parsed.data;
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
