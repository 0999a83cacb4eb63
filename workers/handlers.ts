/**
 * Handler lane worker: runs the author's prepare, start, status, stop and query handlers.
 *
 * Everything author-provided is checked here, off the main thread: the config schema, the shape of
 * results (validated against the wire schemas, so a bad message level is the author's error, not a
 * response the agent rejects), that state and results are JSON (`src/json.ts`: a `Date`, `Map`,
 * `NaN`, class instance… fails the call naming its path, because the next call would get back
 * something else) and the size of the state (one the agent could not send back is refused here,
 * before it is copied to the main thread: `src/runtime/state-limit.ts`).
 */
import { setPriority } from 'node:os';
import { workerData } from 'node:worker_threads';
import type { z } from 'zod';
import type { BodyInfo, BodyReports, DefinedAction, HandlerContext, Json, JsonObject } from '../src/action.js';
import { jsonTextDeeperThan, MAX_JSON_DEPTH } from '../src/api/json-depth.js';
import {
  PrepareResultSchema,
  QueryMetricsResultSchema,
  StartResultSchema,
  StatusResultSchema,
  StopResultSchema,
  formatZodIssues,
} from '../src/api/schemas.js';
import { ErrorCode, ExtensionError, RuntimeError, toErrorData } from '../src/errors.js';
import { createLogger, type Logger } from '../src/logging.js';
import { importActions } from '../src/runtime/modules.js';
import { parseBodyText, parseRequestField, REQUEST_SCHEMAS, validateBody } from '../src/api/request-body.js';
import { filledFileParameters, uploadLocationsIn, uploadViolation as firstUploadViolation, type JsonLocation } from '../src/runtime/file-state.js';
import type { DecodeReply, DecodeTask, HandlerThreadBootData, Phase, UploadCheckTask, WireHandlerReply, WireHandlerTask } from '../src/runtime/protocol.js';
import { GatePoint, TestGates } from '../src/shm/test-gates.js';
import { LARGE_JSON_BYTES, SealedJson, stateOfWire, wireStateFromText, type WireState } from '../src/runtime/sealed.js';
import { assertJson, NotJsonError } from '../src/json.js';
import { REQUEST_ENVELOPE_BYTES, stateBytesOver } from '../src/runtime/state-limit.js';

/** Deepest state that fits into a request: `{"executionId":…,"state":<state>}` adds one level. */
const MAX_STATE_DEPTH = MAX_JSON_DEPTH - 1;

const boot = workerData as HandlerThreadBootData;
if (boot.nice !== undefined && boot.nice > 0) {
  try {
    // Before the action modules load: the large-request lane yields from its first task on.
    setPriority(0, boot.nice);
  } catch {
    // Lowering one's own priority needs no privilege; should it fail all the same, the lane runs at normal priority.
  }
}
const gates = boot.gates === undefined ? undefined : TestGates.attach(boot.gates);
gates?.pass(GatePoint.HandlerThreadLoad);
const actions = new Map((await importActions(boot.actionModules)).map((action) => [action.description.id, action]));
const rootLogger = createLogger(boot.log, { thread: 'handler' });

const RESULT_SCHEMAS: Record<Phase, z.ZodType> = {
  prepare: PrepareResultSchema,
  start: StartResultSchema,
  status: StatusResultSchema,
  stop: StopResultSchema,
  query: QueryMetricsResultSchema,
};

/** One handler invocation (piscina calls it through `./handlers-entry.cts`). Never throws; failures are replies. */
export default async function runHandler(task: WireHandlerTask): Promise<WireHandlerReply> {
  const action = actions.get(task.actionId);
  if (action === undefined) {
    return { ok: false, error: { code: ErrorCode.Internal, message: `action ${task.actionId} is not loaded on this worker`, details: {} } };
  }
  // The state object the handler may mutate; on failure we return it as the handler left it. It
  // came as JSON from the agent (or the execution's last state, which passed the check here);
  // a sealed one as its text, parsed here.
  const state = (stateOfWire(task) ?? {}) as JsonObject;
  try {
    const raw = await invoke(action, task, state, context(task));
    return finish(task, raw, state);
  } catch (error) {
    if (task.phase === 'prepare') return { ok: false, error: toErrorData(error), state: {} };
    // Nobody uses the state a failed stop or query left.
    if (task.phase === 'stop' || task.phase === 'query') return { ok: false, error: toErrorData(error) };
    return failedWithState(task, error, state);
  }
}

/**
 * Large-request lane: decode a request body (or multipart `request` field) above `LARGE_JSON_BYTES`
 * exactly as the main thread parses a small one (`src/api/request-body.ts`), and hand back what the main thread needs — the
 * execution id — with the rest as JSON text when it is still large. Never throws: a body the main
 * thread would have refused comes back as that refusal.
 */
export function decode(task: DecodeTask): DecodeReply {
  gates?.pass(GatePoint.LargeRequestDecode);
  try {
    const body = (
      task.requestField === undefined
        ? validateBody(parseBodyText(Buffer.from(task.bytes!.buffer, task.bytes!.byteOffset, task.bytes!.byteLength).toString('utf8')), REQUEST_SCHEMAS[task.kind], true)
        : validateBody(parseRequestField(task.requestField).request, REQUEST_SCHEMAS[task.kind])
    ) as JsonObject & { executionId: string; state?: JsonObject };
    if (task.kind === 'prepare' || task.kind === 'query') {
      const json = JSON.stringify(body);
      return {
        ok: true,
        executionId: body.executionId,
        ...(Buffer.byteLength(json) > LARGE_JSON_BYTES ? { sealedRequest: SealedJson.of(json).bytes } : { request: body }),
        ...(task.fileParameters === undefined ? {} : { filledFileParameters: filledFileParameters(task.fileParameters, body['config'] as JsonObject) }),
      };
    }
    return { ok: true, executionId: body.executionId, state: wireStateFromText(JSON.stringify(body.state ?? {})) };
  } catch (error) {
    if (error instanceof RuntimeError) return { ok: false, error: { code: error.code, httpStatus: error.httpStatus, title: error.message, detail: error.detail } };
    return { ok: false, error: { code: ErrorCode.Internal, httpStatus: 500, title: 'Internal Server Error', detail: error instanceof Error ? error.message : String(error) } };
  }
}

/** Large-request lane: rule 2 of `src/runtime/file-state.ts` on a sealed state. */
export function uploadViolation(task: UploadCheckTask): JsonLocation | undefined {
  return firstUploadViolation(SealedJson.received(task.sealedState).parse(), task.folder, task.locations);
}

function context(task: WireHandlerTask): HandlerContext {
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

async function invoke(action: DefinedAction, task: WireHandlerTask, state: JsonObject, ctx: HandlerContext): Promise<unknown> {
  switch (task.phase) {
    case 'prepare': {
      const request = requestOf(task);
      // The uploaded files replace what the config said of their parameters (`src/runtime/file-state.ts`).
      let config: unknown = task.uploadedFiles === undefined ? request['config'] : { ...(request['config'] as JsonObject), ...task.uploadedFiles };
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
      return action.query?.(requestOf(task) as unknown as Parameters<NonNullable<DefinedAction['query']>>[0], ctx);
  }
}

/** The request of a prepare or query task, parsed when it came sealed. */
function requestOf(task: WireHandlerTask): JsonObject {
  return (task.sealedRequest === undefined ? (task.request ?? {}) : SealedJson.received(task.sealedRequest).parse()) as JsonObject;
}

/** The body information of a status or stop task as the author sees it: reports always present, the result parsed. */
function bodyOf(task: WireHandlerTask): BodyInfo & { stopMs?: number; reports: BodyReports } {
  const { resultJson, ...body } = task.body ?? { phase: 'none', progress: 0 };
  return {
    ...body,
    reports: body.reports ?? { messages: [], metrics: [] },
    // Parsed per call: a handler may mutate what it got, and the next call must see the result as published.
    ...(resultJson === undefined ? {} : { result: JSON.parse(resultJson) as Json }),
  };
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
function finish(task: WireHandlerTask, raw: unknown, mutatedState: JsonObject): WireHandlerReply {
  const { phase } = task;
  if (raw !== undefined && raw !== null && (typeof raw !== 'object' || Array.isArray(raw))) {
    throw new TypeError(`${phase} must return an object or nothing, got ${Array.isArray(raw) ? 'an array' : typeof raw}`);
  }
  const returned = (raw ?? {}) as Record<string, unknown>;
  const { state: returnedState, ...extras } = returned;
  if (phase === 'prepare' && (typeof returnedState !== 'object' || returnedState === null || Array.isArray(returnedState))) {
    throw new TypeError('prepare must return { state: {...} } with a JSON object as state');
  }
  // A returned state replaces the mutated one; query and stop hand out no state.
  const handsOutState = phase !== 'query' && phase !== 'stop';
  const stateValue: unknown = returnedState !== undefined && returnedState !== null ? returnedState : mutatedState;
  // One walk over everything handed out (`src/json.ts`). Something that is not JSON fails the
  // call without a state: the agent keeps the one it sent, as for a state too large.
  const notJson = notJsonIn(handsOutState ? { ...extras, state: stateValue } : extras);
  if (notJson !== undefined) return { ok: false, error: toErrorData(notJson) };
  const result = JSON.parse(jsonText(extras, `${phase} result`)) as Record<string, unknown>;
  if (phase === 'status' && typeof result['completed'] !== 'boolean') {
    throw new TypeError('status must return { completed: boolean, ... }');
  }
  let handedOut: HandedOut | undefined;
  if (handsOutState) {
    const text = jsonText(stateValue, 'state');
    const tooLarge = stateTooLarge(phase, text);
    if (tooLarge !== undefined) return { ok: false, error: toErrorData(tooLarge) };
    handedOut = handOut(task, text, stateValue);
  }
  const candidate = handedOut === undefined ? result : { ...result, state: stateValue };
  const checked = RESULT_SCHEMAS[phase].safeParse(candidate);
  if (!checked.success) {
    const issues = formatZodIssues(checked.error);
    return { ok: false, error: toErrorData(new ExtensionError(`Invalid ${phase} result: ${issues.first}`, { detail: issues.all })), ...handedOut };
  }
  return { ok: true, result, ...handedOut };
}

/** A state on its way to the main thread, with where it names uploads when the task asked. */
type HandedOut = WireState & { uploadLocations?: JsonLocation[] };

/**
 * The reply fields of a state handed out, from its checked JSON text: sealed when large
 * (`src/runtime/sealed.ts`), else a fresh object parsed from the text; with the task's
 * `uploadFolder`, the locations at which it names files there (`src/runtime/file-state.ts`).
 */
function handOut(task: WireHandlerTask, text: string, state: unknown): HandedOut {
  const wire = wireStateFromText(text);
  return task.uploadFolder === undefined ? wire : { ...wire, uploadLocations: uploadLocationsIn(state, task.uploadFolder) };
}

/** The {@link NotJsonError} for the first value in `value` that is not JSON, or undefined. Paths start at its keys (`state.when`, `metrics[0].value`). */
function notJsonIn(value: unknown): NotJsonError | undefined {
  try {
    assertJson(value, '');
    return undefined;
  } catch (error) {
    if (error instanceof NotJsonError) return error;
    throw error;
  }
}

/**
 * The reply of a start or status handler that threw: its error and the state as it left it — or,
 * when that state cannot be handed out (not JSON, too large), that error naming the handler's
 * error too, and no state: the agent keeps the one it sent.
 */
function failedWithState(task: WireHandlerTask, error: unknown, state: JsonObject): WireHandlerReply {
  const { phase } = task;
  const handlerFailure = toErrorData(error).message;
  const notJson = notJsonIn({ state });
  if (notJson !== undefined) {
    return { ok: false, error: toErrorData(new TypeError(`${notJson.message}. The ${phase} handler had also failed: ${handlerFailure}`)) };
  }
  const text = jsonText(state, 'state');
  const tooLarge = stateTooLarge(phase, text, handlerFailure);
  if (tooLarge !== undefined) return { ok: false, error: toErrorData(tooLarge) };
  return { ok: false, error: toErrorData(error), ...handOut(task, text, state) };
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

/**
 * The JSON text of a value {@link assertJson} passed (`{}` for undefined); throws naming `what` if
 * it still cannot be serialised (nested too deeply for the stack, a getter that throws).
 */
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
