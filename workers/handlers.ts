/**
 * Handler lane worker: runs the author's prepare, start, status, stop and query handlers.
 *
 * Everything author-provided is checked here, off the main thread: the config schema, the shape of
 * results (validated against the wire schemas, so a bad message level is the author's error, not a
 * response the agent rejects), JSON-serialisability (a JSON round trip: what the agent will see
 * is exactly what the next call gets back) and the size of the state (one the agent could not
 * send back is refused here, before it is copied to the main thread: `src/runtime/state-limit.ts`).
 */
import { workerData } from 'node:worker_threads';
import type { z } from 'zod';
import type { BodyInfo, BodyReports, DefinedAction, HandlerContext, JsonObject } from '../src/action.js';
import { jsonTextDeeperThan, MAX_JSON_DEPTH } from '../src/api/json-depth.js';
import {
  PrepareResultSchema,
  QueryMetricsResultSchema,
  StartResultSchema,
  StatusResultSchema,
  StopResultSchema,
  formatZodIssues,
} from '../src/api/schemas.js';
import { ErrorCode, ExtensionError, toErrorData } from '../src/errors.js';
import { createLogger, type Logger } from '../src/logging.js';
import { importActions } from '../src/runtime/modules.js';
import type { HandlerReply, HandlerTask, HandlerThreadBootData, Phase } from '../src/runtime/protocol.js';
import { REQUEST_ENVELOPE_BYTES, stateBytesOver } from '../src/runtime/state-limit.js';

/** Deepest state that fits into a request: `{"executionId":…,"state":<state>}` adds one level. */
const MAX_STATE_DEPTH = MAX_JSON_DEPTH - 1;

const boot = workerData as HandlerThreadBootData;
const actions = new Map((await importActions(boot.actionModules)).map((action) => [action.description.id, action]));
const rootLogger = createLogger(boot.log, { thread: 'handler' });

const RESULT_SCHEMAS: Record<Phase, z.ZodType> = {
  prepare: PrepareResultSchema,
  start: StartResultSchema,
  status: StatusResultSchema,
  stop: StopResultSchema,
  query: QueryMetricsResultSchema,
};

/** piscina entry point: one handler invocation. Never throws; failures are replies. */
export default async function runHandler(task: HandlerTask): Promise<HandlerReply> {
  const action = actions.get(task.actionId);
  if (action === undefined) {
    return { ok: false, error: { code: ErrorCode.Internal, message: `action ${task.actionId} is not loaded on this worker`, details: {} } };
  }
  // The state object the handler may mutate; on failure we return it as the handler left it.
  const state: JsonObject = task.state ?? {};
  try {
    const raw = await invoke(action, task, state, context(task));
    return finish(task.phase, raw, state);
  } catch (error) {
    if (task.phase === 'prepare') return { ok: false, error: toErrorData(error), state: {} };
    // Nobody uses the state a failed stop or query left.
    if (task.phase === 'stop' || task.phase === 'query') return { ok: false, error: toErrorData(error) };
    return failedWithState(task.phase, error, state);
  }
}

function context(task: HandlerTask): HandlerContext {
  let logger: Logger | undefined;
  let signal: AbortSignal | undefined;
  return {
    executionId: task.executionId,
    actionId: task.actionId,
    // Created on first use, like the logger: most handlers never look, and a timeout signal costs
    // ~20 µs. A signal created late still fires at the task's deadline.
    get signal() {
      signal ??= AbortSignal.timeout(Math.max(0, task.deadlineMs - Date.now()));
      return signal;
    },
    // Created on first use: most status calls never log, and a child logger is not free.
    get logger() {
      logger ??= rootLogger.child({ action: task.actionId, executionId: task.executionId, phase: task.phase });
      return logger;
    },
  };
}

async function invoke(action: DefinedAction, task: HandlerTask, state: JsonObject, ctx: HandlerContext): Promise<unknown> {
  switch (task.phase) {
    case 'prepare': {
      const request = task.request ?? {};
      let config: unknown = request['config'];
      if (action.config !== undefined) {
        const parsed = action.config.safeParse(withoutNulls(config));
        if (!parsed.success) {
          const issues = formatZodIssues(parsed.error);
          throw new ExtensionError(`Invalid configuration: ${issues.first}`, { detail: issues.all });
        }
        config = parsed.data;
      }
      const input = {
        executionId: task.executionId,
        config,
        target: request['target'],
        executionContext: request['executionContext'],
        properties: (request['properties'] as JsonObject | undefined) ?? {},
      };
      return action.prepare(input as Parameters<DefinedAction['prepare']>[0], ctx);
    }
    case 'start':
      return action.start?.(state, ctx);
    // Object.assign, not a spread: a spread would call the lazy getters (signal, logger).
    case 'status':
      return action.status?.(state, Object.assign(ctx, { body: bodyOf(task) }));
    case 'stop':
      return action.stop?.(
        state,
        Object.assign(ctx, { reason: task.stop?.reason ?? 'agent stop', requestedBy: task.stop?.requestedBy ?? 'agent', body: bodyOf(task) }),
      );
    case 'query':
      return action.query?.(task.request as unknown as Parameters<NonNullable<DefinedAction['query']>>[0], ctx);
  }
}

/** The body information of a status or stop task, with its reports always present. */
function bodyOf(task: HandlerTask): BodyInfo & { stopMs?: number; reports: BodyReports } {
  const body = task.body ?? { phase: 'none', progress: 0 };
  return { ...body, reports: body.reports ?? { messages: [], metrics: [] } };
}

/**
 * The agent sends `null` for a parameter the user left empty (reference §4.3). Dropping those keys
 * before the author's schema runs lets `.default()` and `.optional()` mean what they say.
 */
function withoutNulls(config: unknown): unknown {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) return config;
  return Object.fromEntries(Object.entries(config).filter(([, value]) => value !== null));
}

/** Validate and normalise what a handler returned into a reply. */
function finish(phase: Phase, raw: unknown, mutatedState: JsonObject): HandlerReply {
  if (raw !== undefined && raw !== null && (typeof raw !== 'object' || Array.isArray(raw))) {
    throw new TypeError(`${phase} must return an object or nothing, got ${Array.isArray(raw) ? 'an array' : typeof raw}`);
  }
  const returned = (raw ?? {}) as Record<string, unknown>;
  const { state: returnedState, ...extras } = returned;
  if (phase === 'prepare' && (typeof returnedState !== 'object' || returnedState === null || Array.isArray(returnedState))) {
    throw new TypeError('prepare must return { state: {...} } with a JSON object as state');
  }
  const result = toJson(extras, `${phase} result`) as Record<string, unknown>;
  if (phase === 'status' && typeof result['completed'] !== 'boolean') {
    throw new TypeError('status must return { completed: boolean, ... }');
  }
  let stateOut: JsonObject | undefined;
  // A returned state replaces the mutated one; query and stop have no state.
  if (phase !== 'query' && phase !== 'stop') {
    const text = jsonText(returnedState !== undefined && returnedState !== null ? returnedState : mutatedState, 'state');
    const tooLarge = stateTooLarge(phase, text);
    if (tooLarge !== undefined) return { ok: false, error: toErrorData(tooLarge) };
    stateOut = JSON.parse(text) as JsonObject;
  }
  const candidate = stateOut === undefined ? result : { ...result, state: stateOut };
  const checked = RESULT_SCHEMAS[phase].safeParse(candidate);
  if (!checked.success) {
    const issues = formatZodIssues(checked.error);
    return {
      ok: false,
      error: toErrorData(new ExtensionError(`Invalid ${phase} result: ${issues.first}`, { detail: issues.all })),
      ...(stateOut === undefined ? {} : { state: stateOut }),
    };
  }
  return { ok: true, result, ...(stateOut === undefined ? {} : { state: stateOut }) };
}

/**
 * The reply of a start or status handler that threw: its error and the state as it left it — or,
 * when that state is too large to hand out, the size error naming the handler's error too.
 */
function failedWithState(phase: Phase, error: unknown, state: JsonObject): HandlerReply {
  let text: string;
  try {
    text = jsonText(state, 'state');
  } catch (notJson) {
    rootLogger.error({ err: notJson }, 'state left by a failed handler is not JSON-serialisable; returning {}');
    return { ok: false, error: toErrorData(error), state: {} };
  }
  const tooLarge = stateTooLarge(phase, text, toErrorData(error).message);
  if (tooLarge !== undefined) return { ok: false, error: toErrorData(tooLarge) };
  return { ok: false, error: toErrorData(error), state: JSON.parse(text) as JsonObject };
}

/**
 * The error for a state the agent could not send back (`src/runtime/state-limit.ts`), or
 * undefined when it fits. Such a state is not handed out: the agent keeps the one it sent, and
 * that one still fits into its start, status and stop requests.
 */
function stateTooLarge(phase: Phase, stateJson: string, handlerFailure?: string): ExtensionError | undefined {
  const { maxStateBytes, maxBodyBytes } = boot.stateLimit;
  const kept = phase === 'prepare' ? 'none: {}' : `the state of this ${phase} request`;
  const alsoFailed = handlerFailure === undefined ? '' : ` The ${phase} handler had also failed: ${handlerFailure}`;
  // The request puts the state one level down: deeper than this, the agent's next request is refused.
  if (jsonTextDeeperThan(stateJson, MAX_STATE_DEPTH)) {
    const detail =
      `the ${phase} handler left a state nested deeper than ${MAX_STATE_DEPTH} levels; requests nest at most ${MAX_JSON_DEPTH} deep, so ` +
      `the agent could not send it back. The state was not taken; the agent keeps the one it had (${kept}).${alsoFailed}`;
    return new ExtensionError('State too deeply nested', { detail });
  }
  const bytes = stateBytesOver(stateJson, maxStateBytes);
  if (bytes === undefined) return undefined;
  const detail =
    `the ${phase} handler left a state of ${bytes} bytes of JSON (as the agent sends it back), more than the ${maxStateBytes} bytes ` +
    `the agent can send back: ACTIONKIT_MAX_BODY_BYTES is ${maxBodyBytes} bytes, and a start, status or stop request adds ` +
    `${REQUEST_ENVELOPE_BYTES} bytes around the state. The state was not taken; the agent keeps the one it had (${kept}). ` +
    'Keep bulky data out of the state (in a file, for example), or raise ACTIONKIT_MAX_BODY_BYTES.' +
    alsoFailed;
  return new ExtensionError('State too large', { detail });
}

/** JSON round trip: exactly what the agent will see; throws naming `what` if not serialisable. */
function toJson(value: unknown, what: string): unknown {
  return JSON.parse(jsonText(value, what)) as unknown;
}

/** The JSON text of `value` (`{}` for a value JSON drops, such as undefined); throws naming `what` if not serialisable. */
function jsonText(value: unknown, what: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (error) {
    throw new TypeError(`${what} is not JSON-serialisable: ${error instanceof Error ? error.message : String(error)}`);
  }
  return text ?? '{}';
}

/** Warm-up task (`WorkerPools.warmUp`): resolves once this thread has loaded the actions. */
export function ping(): boolean {
  return true;
}
