/**
 * `actionkit-runtime/action` — what an action author imports.
 *
 * An action module is loaded twice: on the main thread (only its description and config schema are
 * read; no handler runs there) and on every worker thread (where its handlers and body run). Keep
 * module top-level code free of side effects beyond defining the action.
 *
 * @example
 * ```ts
 * import { defineAction, z } from 'actionkit-runtime/action';
 * export default defineAction({
 *   description: { id: 'com.example.noop', label: 'No-op', version: '1.0.0', description: 'Does nothing',
 *     kind: 'other', timeControl: 'instantaneous', parameters: [] },
 *   prepare: () => ({ state: {} }),
 * });
 * ```
 */
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import type { ActionKitError, Artifact, ExecutionContext, ExecutionModification, Message, Metric, Summary, Target } from './api/schemas.js';
import type { ActionDescriptionInput } from './api/description.js';
import type { Json, JsonChecked, JsonObject } from './json.js';
import type { Logger } from './logging.js';

export { z };
export type { Json, JsonChecked, JsonObject, NotJson } from './json.js';
export { ExtensionError, type ExtensionErrorOptions } from './errors.js';
export type { Logger } from './logging.js';
export type { ActionKitError, Artifact, ExecutionContext, ExecutionModification, Message, Metric, Summary, Target };
export type { ActionDescription } from './api/schemas.js';

type Awaitable<T> = T | Promise<T>;

/**
 * An action description as an author writes it: the endpoints (`prepare`, `start`, `status`,
 * `stop`, `metrics.query.endpoint`) may be omitted and get the reference defaults
 * (`POST /<id>/prepare`, …; status `callInterval` 5s; a synthetic status every 15s for stoppable
 * actions without a status handler).
 */
export type { ActionDescriptionInput };

/** Fields every result may carry besides state; all pass through to the agent unchanged. */
export interface ResultExtras {
  messages?: Message[];
  artifacts?: Artifact[];
  metrics?: Metric[];
  modifications?: ExecutionModification[];
  summary?: Summary;
  /** Report an error with the latest state (HTTP 200, like the reference) instead of throwing. */
  error?: ActionKitError;
}

/** What `prepare` receives. */
export interface PrepareInput<C> {
  executionId: string;
  /** The agent's config, parsed with the action's `config` schema when there is one. File parameters hold the uploaded file's absolute path. */
  config: C;
  target?: Target;
  executionContext?: ExecutionContext;
  /** Experiment execution properties. */
  properties: JsonObject;
}

/** Context of every lifecycle handler. */
export interface HandlerContext {
  executionId: string;
  actionId: string;
  /** Aborted when the request's `Request-Timeout` elapses or the handler timeout is reached. */
  signal: AbortSignal;
  /** Logger bound to the action and execution. */
  logger: Logger;
}

/** Lifecycle of the execution's body as seen by status and stop. */
export type BodyPhase = 'none' | 'queued' | 'running' | 'returned' | 'failed' | 'stopped' | 'killed' | 'skipped';

/** The body's progress as status and stop see it; `R` is the type of what it publishes. */
export interface BodyInfo<R = Json> {
  phase: BodyPhase;
  /** Last value the body passed to `ctx.progress()`. */
  progress: number;
  /** Message of the error the body threw, when `phase` is `failed`. */
  error?: string;
  /**
   * The latest value the body passed to `ctx.publish()` (a copy: it is JSON), or absent when it
   * published nothing. Reading it does not consume it: every status and the stop see the latest.
   */
  result?: R;
}

/**
 * Largest body result (`ctx.publish()`), in UTF-8 bytes of its JSON text: 64 KiB. A result is a
 * figure or a small summary for status and stop to read; it is copied to the handler thread for
 * every status call. Bulk data belongs in a file or an artifact.
 */
export const BODY_RESULT_MAX_BYTES = 64 * 1024;

/**
 * What the body reported since the previous status call. They are also sent to the agent with
 * this result; a handler can fold them into its state (counts, totals).
 */
export interface BodyReports {
  messages: Message[];
  metrics: Metric[];
}

/** Context of `status`; `R` is the type of the body's result. */
export interface StatusContext<R = Json> extends HandlerContext {
  body: BodyInfo<R> & { reports: BodyReports };
}

/** Context of `stop`; `R` is the type of the body's result. */
export interface StopContext<R = Json> extends HandlerContext {
  /** `agent stop`, `heartbeat timeout`, `received signal SIGTERM`, `action body failed`, … */
  reason: string;
  /** Whether the agent asked for this stop or the extension decided it. */
  requestedBy: 'agent' | 'extension';
  /** How the body ended — `stopped` (cooperatively), `killed` (after the grace period), … — and what it reported since the last status. */
  body: BodyInfo<R> & { stopMs?: number; reports: BodyReports };
}

/** What a metric query receives. */
export interface QueryInput {
  executionId: string;
  timestamp: string;
  config: JsonObject;
  target?: Target;
}

/** Messages and metrics a body reports; they appear in the next status or stop result. */
export interface BodyReport {
  messages?: Message[];
  /** `timestamp` defaults to the time of the report. */
  metrics?: (KnownFields<Metric, 'timestamp'> & { timestamp?: string })[];
}

/**
 * `Omit` for the wire types: they allow additional properties (an index signature), and the
 * built-in `Omit` would keep only that signature and lose every named field.
 */
type KnownFields<T, K extends PropertyKey> = { [P in keyof T as string extends P ? never : P extends K ? never : P]: T[P] };

/**
 * Context of an execution's body, running on its own worker thread; `R` is the type of what it
 * publishes ({@link BodyContext.publish}).
 *
 * Cooperative stop costs nanoseconds: `shouldStop()` is one `Atomics.load` of the execution's
 * control word. Check it every few thousand iterations of a hot loop.
 */
export interface BodyContext<R = Json> {
  executionId: string;
  actionId: string;
  /** True once a stop was requested (agent, heartbeat timeout, signal). */
  shouldStop(): boolean;
  /** Throws a {@link StopRequested} once a stop was requested. */
  throwIfStopped(): void;
  /** Sleep up to `ms`, waking within microseconds on stop (`Atomics.wait`). Returns true if stopped. Blocks this body's thread: for CPU-bound bodies. */
  sleep(ms: number): boolean;
  /** Like {@link sleep} without blocking the thread (`Atomics.waitAsync`): for async bodies. Resolves true if stopped. */
  sleepAsync(ms: number): Promise<boolean>;
  /** Aborted when a stop is requested — for `fetch`, timers and other async APIs. */
  signal: AbortSignal;
  /** Publish an integer progress value, read by `status` as `ctx.body.progress` (lock-free). */
  progress(value: number): void;
  /**
   * Send messages/metrics to the agent with the next status or stop result (each exactly once).
   * Throws a TypeError naming the path of anything that is not JSON.
   */
  report(report: BodyReport): void;
  /**
   * Publish the body's result for `status` and `stop`, which read the latest one as
   * `ctx.body.result`. Nothing is sent to the agent by itself: the handlers decide what to make of
   * it (a metric, a message, `completed`, an error). Each call replaces the previous value and
   * costs one message to the main thread: publish when the value changed, not on every iteration.
   *
   * Type it by annotating the body's context (`body(state, ctx: BodyContext<Tally>)`): status and
   * stop then see `ctx.body.result` as `Tally | undefined`.
   *
   * @throws TypeError naming the path of anything that is not JSON (`ctx.publish: result.when:
   *   Date is not JSON; store an ISO string`); RangeError when its JSON text is larger than
   *   {@link BODY_RESULT_MAX_BYTES}. Uncaught, either fails the body (and stops the execution).
   */
  publish(value: JsonChecked<R>): void;
  logger: Logger;
}

/** Thrown by {@link BodyContext.throwIfStopped}; a body that ends with it ended cooperatively. */
export class StopRequested extends Error {
  constructor() {
    super('stop requested');
    this.name = 'StopRequested';
  }
}

/**
 * An action: its description, an optional config schema and its handlers.
 *
 * State: `prepare` returns the initial state; `start`, `status` and `stop` receive the state the
 * agent sent and may mutate it in place or return a new one as `state`. Whatever the handler left is
 * returned to the agent — also when it throws.
 *
 * Which handlers decide the endpoints: `status` ⇒ status endpoint; `stop` or `body` ⇒ stop endpoint
 * (an action with a body is always stoppable); `query` ⇒ metric query endpoint.
 */
export interface ActionDefinition<C = JsonObject, S extends object = JsonObject, R = Json, I = C> {
  description: ActionDescriptionInput;
  /**
   * Parses and types the prepare `config` (defaults, coercion): `C` is what the handlers get, `I`
   * what the agent sends (the schema's input). Invalid config answers prepare with an error.
   */
  config?: z.ZodType<C, I>;
  /**
   * Returns the initial state, whose type `S` the other handlers get. The state must be JSON
   * ({@link Json}): a member that is not (a `Date`, `Map`, `Set`, class instance, function,
   * `bigint`, …) is a compile error naming it, and what the compiler cannot see (`NaN`, a class
   * instance with data only) fails the call at run time with its path (`state.when: Date is not
   * JSON; store an ISO string`) — the agent keeps the state it had.
   */
  prepare(input: PrepareInput<C>, ctx: HandlerContext): Awaitable<ResultExtras & { state: S & JsonChecked<S> }>;
  start?(state: S, ctx: HandlerContext): Awaitable<(ResultExtras & { state?: S }) | void>;
  status?(state: S, ctx: StatusContext<R>): Awaitable<ResultExtras & { completed: boolean; state?: S }>;
  stop?(state: S, ctx: StopContext<R>): Awaitable<ResultExtras | void>;
  query?(input: QueryInput, ctx: HandlerContext): Awaitable<Pick<ResultExtras, 'messages' | 'artifacts' | 'metrics'> | void>;
  /**
   * Long-running work started after a successful start, on a body thread, until it returns, throws
   * or is stopped. A start answered without error means the body is running: it never waits for a
   * thread (at the thread cap the start fails instead).
   */
  body?(state: Readonly<S>, ctx: BodyContext<R>): Awaitable<void>;
  /**
   * Where the body runs. Default `'cpu'`.
   * - `'cpu'`: a thread of its own. For bodies that compute, loop or block (`ctx.sleep()`): they
   *   run side by side with every other body, and one that ignores its stop is ended by
   *   terminating its own thread. Costs a thread (about 20 MiB) per running body, up to
   *   `ACTIONKIT_MAX_BODY_THREADS`.
   * - `'io'`: shares a thread with other io bodies. For bodies that mostly await (fetch, timers,
   *   `ctx.sleepAsync()`): thousands fit on one thread. They must never block — `ctx.sleep()`
   *   throws in them — and must honour `ctx.signal` or `ctx.shouldStop()`: one still running after
   *   the stop grace period is ended by terminating its shared thread, which ends the other bodies
   *   on it too (their executions are stopped with the reason).
   */
  bodyKind?: 'cpu' | 'io';
}

/** Marks objects made by {@link defineAction}. */
export const ACTION_BRAND: unique symbol = Symbol.for('actionkit-runtime.action');

/**
 * Key of the `file:` URL of the module that called {@link defineAction} (a non-enumerable
 * property), so a test can pass the definition itself where the runtime needs its module
 * (`createActionHarness(action)`): worker threads load actions by module.
 */
export const ACTION_MODULE: unique symbol = Symbol.for('actionkit-runtime.action-module');

/**
 * An action definition checked and branded by {@link defineAction}. Its type carries the action's
 * types — config `C` (as handlers get it) and `I` (as the agent sends it), state `S`, body result
 * `R` — for the typed testing API (`createActionHarness(action)`, `client.run(action)`).
 */
export type DefinedAction<C = JsonObject, S extends object = JsonObject, R = Json, I = C> = Readonly<ActionDefinition<C, S, R, I>> & {
  readonly [ACTION_BRAND]: true;
};

/**
 * Define an action; export the result as the module's default export. Types of config, state and
 * body result are inferred (the body result's from the body's `ctx` annotation, see
 * {@link BodyContext.publish}).
 */
export function defineAction<C = JsonObject, S extends object = JsonObject, R = Json, I = C>(
  definition: ActionDefinition<C, S, R, I>,
): DefinedAction<C, S, R, I> {
  if (typeof definition !== 'object' || definition === null) throw new TypeError('defineAction expects an object');
  if (typeof definition.prepare !== 'function') throw new TypeError('defineAction: prepare must be a function');
  for (const name of ['start', 'status', 'stop', 'query', 'body'] as const) {
    const handler = definition[name];
    if (handler !== undefined && typeof handler !== 'function') throw new TypeError(`defineAction: ${name} must be a function`);
  }
  const { bodyKind } = definition;
  if (bodyKind !== undefined && bodyKind !== 'cpu' && bodyKind !== 'io') throw new TypeError(`defineAction: bodyKind must be 'cpu' or 'io', got ${JSON.stringify(bodyKind)}`);
  if (bodyKind !== undefined && definition.body === undefined) throw new TypeError('defineAction: bodyKind is set but there is no body');
  const defined = { ...definition, [ACTION_BRAND]: true as const };
  const module = callerModule();
  if (module !== undefined) Object.defineProperty(defined, ACTION_MODULE, { value: module });
  return Object.freeze(defined);
}

/**
 * The `file:` URL of the module whose code called {@link defineAction} (V8's call sites, one
 * frame), or undefined when it cannot be told. It is the action's module when the module calls
 * `defineAction` itself; a helper in another module that calls it for the action is found instead,
 * which is why a user of this URL checks that the module exports the action.
 */
function callerModule(): string | undefined {
  const { prepareStackTrace, stackTraceLimit } = Error;
  try {
    Error.stackTraceLimit = 1;
    Error.prepareStackTrace = (_error, callSites) => callSites;
    const holder: { stack?: unknown } = {};
    Error.captureStackTrace(holder, defineAction);
    const file = (holder.stack as NodeJS.CallSite[] | undefined)?.[0]?.getFileName();
    if (file === undefined || file === null) return undefined;
    if (file.startsWith('file:')) return file;
    return isAbsolute(file) ? pathToFileURL(file).href : undefined;
  } catch {
    return undefined;
  } finally {
    Error.prepareStackTrace = prepareStackTrace;
    Error.stackTraceLimit = stackTraceLimit;
  }
}

/** True for values made by {@link defineAction} (also across module copies). */
export function isDefinedAction(value: unknown): value is DefinedAction {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[ACTION_BRAND] === true;
}
