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
import { z } from 'zod';
import type { ActionKitError, Artifact, ExecutionContext, ExecutionModification, Message, Metric, Summary, Target } from './api/schemas.js';
import type { ActionDescriptionInput } from './api/description.js';
import type { Logger } from './logging.js';

export { z };
export { ExtensionError, type ExtensionErrorOptions } from './errors.js';
export type { Logger } from './logging.js';
export type { ActionKitError, Artifact, ExecutionContext, ExecutionModification, Message, Metric, Summary, Target };
export type { ActionDescription } from './api/schemas.js';

/** Any JSON object: the shape of `config` and `state` on the wire. */
export type JsonObject = { [key: string]: unknown };

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

/** The body's progress as status and stop see it. */
export interface BodyInfo {
  phase: BodyPhase;
  /** Last value the body passed to `ctx.progress()`. */
  progress: number;
  /** Message of the error the body threw, when `phase` is `failed`. */
  error?: string;
}

/**
 * What the body reported since the previous status call. They are also sent to the agent with
 * this result; a handler can fold them into its state (counts, totals).
 */
export interface BodyReports {
  messages: Message[];
  metrics: Metric[];
}

/** Context of `status`. */
export interface StatusContext extends HandlerContext {
  body: BodyInfo & { reports: BodyReports };
}

/** Context of `stop`. */
export interface StopContext extends HandlerContext {
  /** `agent stop`, `heartbeat timeout`, `received signal SIGTERM`, `action body failed`, … */
  reason: string;
  /** Whether the agent asked for this stop or the extension decided it. */
  requestedBy: 'agent' | 'extension';
  /** How the body ended — `stopped` (cooperatively), `killed` (after the grace period), … — and what it reported since the last status. */
  body: BodyInfo & { stopMs?: number; reports: BodyReports };
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
 * Context of an execution's body, running on its own worker thread.
 *
 * Cooperative stop costs nanoseconds: `shouldStop()` is one `Atomics.load` of the execution's
 * control word. Check it every few thousand iterations of a hot loop.
 */
export interface BodyContext {
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
  /** Send messages/metrics to the agent with the next status or stop result. */
  report(report: BodyReport): void;
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
export interface ActionDefinition<C = JsonObject, S extends object = JsonObject> {
  description: ActionDescriptionInput;
  /** Parses and types the prepare `config` (defaults, coercion). Invalid config answers prepare with an error. */
  config?: z.ZodType<C, unknown>;
  prepare(input: PrepareInput<C>, ctx: HandlerContext): Awaitable<ResultExtras & { state: S }>;
  start?(state: S, ctx: HandlerContext): Awaitable<(ResultExtras & { state?: S }) | void>;
  status?(state: S, ctx: StatusContext): Awaitable<ResultExtras & { completed: boolean; state?: S }>;
  stop?(state: S, ctx: StopContext): Awaitable<ResultExtras | void>;
  query?(input: QueryInput, ctx: HandlerContext): Awaitable<Pick<ResultExtras, 'messages' | 'artifacts' | 'metrics'> | void>;
  /**
   * Long-running work started after a successful start, on a body thread, until it returns, throws
   * or is stopped. A start answered without error means the body is running: it never waits for a
   * thread (at the thread cap the start fails instead).
   */
  body?(state: Readonly<S>, ctx: BodyContext): Awaitable<void>;
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

/** An action definition checked and branded by {@link defineAction}. */
export type DefinedAction<C = JsonObject, S extends object = JsonObject> = Readonly<ActionDefinition<C, S>> & {
  readonly [ACTION_BRAND]: true;
};

/** Define an action; export the result as the module's default export. Types of config and state are inferred. */
export function defineAction<C = JsonObject, S extends object = JsonObject>(definition: ActionDefinition<C, S>): DefinedAction<C, S> {
  if (typeof definition !== 'object' || definition === null) throw new TypeError('defineAction expects an object');
  if (typeof definition.prepare !== 'function') throw new TypeError('defineAction: prepare must be a function');
  for (const name of ['start', 'status', 'stop', 'query', 'body'] as const) {
    const handler = definition[name];
    if (handler !== undefined && typeof handler !== 'function') throw new TypeError(`defineAction: ${name} must be a function`);
  }
  const { bodyKind } = definition;
  if (bodyKind !== undefined && bodyKind !== 'cpu' && bodyKind !== 'io') throw new TypeError(`defineAction: bodyKind must be 'cpu' or 'io', got ${JSON.stringify(bodyKind)}`);
  if (bodyKind !== undefined && definition.body === undefined) throw new TypeError('defineAction: bodyKind is set but there is no body');
  return Object.freeze({ ...definition, [ACTION_BRAND]: true as const });
}

/** True for values made by {@link defineAction} (also across module copies). */
export function isDefinedAction(value: unknown): value is DefinedAction {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[ACTION_BRAND] === true;
}
