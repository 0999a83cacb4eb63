/**
 * One execution driven the way the agent drives it (reference §3.1/§3.2): prepare → start →
 * status every `callInterval` until `completed`, an error or the run window ends → stop, with metric
 * queries every `metrics.query.endpoint.callInterval` in parallel while it runs.
 *
 * The sequence is written once, against {@link ExecutionEndpoints}: the HTTP client and the
 * in-process handler harness both implement that interface, so a test over HTTP and a test without
 * it exercise the same agent behaviour.
 */
import { randomUUID } from 'node:crypto';
import type { DefinedAction } from '../action.js';
import { parseDurationMs } from '../api/description.js';
import type {
  ActionDescription,
  ActionKitError,
  Artifact,
  ExecutionContext,
  JsonObject,
  Message,
  Metric,
  PrepareResult,
  QueryMetricsResult,
  StartResult,
  StatusResult,
  StopResult,
  Target,
} from '../api/schemas.js';
import { describeActionKitError } from './errors.js';

/** A file for a `file` parameter: a path to read, or a name and the content. */
export type FileSource = string | { filename: string; content: string | Uint8Array };

/** Any action definition (the value `defineAction` returned), whatever its types. */
export type AnyDefinedAction = DefinedAction<any, any, any, any>;

/**
 * The config of action `A` (the value `defineAction` returned) as the agent sends it: the input
 * of its config schema (durations in ms, defaults optional), where an optional parameter may also
 * be `null` (a parameter the user left empty). Without a schema, any JSON object.
 */
export type ConfigOf<A> = A extends DefinedAction<any, any, any, infer I> ? AgentConfig<I> : JsonObject;

/** The state type of action `A` (the value `defineAction` returned). */
export type StateOf<A> = A extends DefinedAction<any, infer S, any, any> ? S : JsonObject;

/** A schema input as the agent sends it: optional members may be `null`. */
type AgentConfig<I> = I extends object ? { [K in keyof I]: undefined extends I[K] ? I[K] | null : I[K] } : I;

/** A prepare answer whose `state` has the action's state type `S`. */
export type PreparedWith<S> = Without<PrepareResult, 'state'> & { state: S };

/** A start or status answer whose `state`, when there is one, has the action's state type `S`. */
export type AnsweredWith<R extends StartResult | StatusResult, S> = Without<R, 'state'> & { state?: S };

/**
 * `T` without the fields `K`, keeping its index signature (the wire types allow additional
 * properties): the built-in `Omit` would keep only the index signature and lose every named field.
 */
type Without<T, K extends PropertyKey> = { [P in keyof T as P extends K ? never : P]: T[P] };

/** A prepare call; `C` is the action's config as the agent sends it ({@link ConfigOf}). */
export interface PrepareRequest<C = JsonObject> {
  /** The execution's UUID. */
  executionId: string;
  /** Parameter values by name. */
  config: C;
  /** The target the execution acts on (actions with target selection). */
  target?: Target;
  /** What the agent knows about the experiment run. */
  executionContext?: ExecutionContext;
  /** Sent as `properties` (the spec requires it; `{}` when not given). */
  properties?: JsonObject;
  /** Files by parameter name; when given (or the action has `file` parameters) prepare is multipart. */
  files?: Readonly<Record<string, FileSource>>;
}

/** A start, status or stop call; `S` is the action's state ({@link StateOf}). */
export interface StateRequest<S = JsonObject> {
  /** The execution's UUID. */
  executionId: string;
  /** The latest state the extension returned. */
  state: S;
}

/** A metric query call. */
export interface QueryRequest<C = JsonObject> {
  executionId: string;
  /** ISO 8601 date-time of the query. */
  timestamp: string;
  /** The execution's config. */
  config: C;
  /** The execution's target, if any. */
  target?: Target;
}

/** A successful (2xx, schema-valid) answer. */
export interface Exchange<T> {
  /** HTTP status (200 in-process). */
  httpStatus: number;
  /** The validated body. */
  result: T;
  /** How long the call took. */
  durationMs: number;
}

/**
 * The lifecycle endpoints of one action. Each call resolves with a schema-valid 2xx answer (which
 * may still carry `error`) or rejects with an {@link AgentClientError} (non-2xx ActionKitError,
 * schema violation, no JSON, no answer).
 *
 * Typed for one action (`createActionHarness(action)`, `client.endpointsOf(action)`), `C` is its
 * config as the agent sends it and `S` its state; the answers are validated against the wire
 * schemas, not against these types (the action's own handlers made them).
 */
export interface ExecutionEndpoints<C = JsonObject, S = JsonObject> {
  /** The (validated) description of the action. */
  readonly description: ActionDescription;
  /** `prepare`: JSON, or multipart when files are given or the action has `file` parameters. */
  prepare(request: PrepareRequest<C>): Promise<Exchange<PreparedWith<S>>>;
  /** `start` with the state prepare returned. */
  start(request: StateRequest<S>): Promise<Exchange<AnsweredWith<StartResult, S>>>;
  /** `status` (also the heartbeat); rejects when the action describes no status endpoint. */
  status(request: StateRequest<S>): Promise<Exchange<AnsweredWith<StatusResult, S>>>;
  /** `stop` with the latest state; rejects when the action describes no stop endpoint. */
  stop(request: StateRequest<S>): Promise<Exchange<StopResult>>;
  /** The metric query; rejects when the action describes no `metrics.query`. */
  query(request: QueryRequest<C>): Promise<Exchange<QueryMetricsResult>>;
}

/** How to run an execution. Every field is optional; `C` is the action's config as the agent sends it ({@link ConfigOf}). */
export interface RunOptions<C = JsonObject> {
  /** `config` of prepare (parameter values by name; durations in milliseconds). Default `{}`. */
  config?: C;
  /** `target` of prepare and of metric queries. */
  target?: Target;
  /** `executionContext` of prepare. */
  executionContext?: ExecutionContext;
  /** `properties` of prepare. Default `{}`. */
  properties?: JsonObject;
  /** Files by `file` parameter name (see {@link FileSource}). */
  files?: Readonly<Record<string, FileSource>>;
  /** Execution id (UUID). Default: a random v4 UUID. */
  executionId?: string;
  /**
   * Stop after this long (from start), even if the action is not completed. For `external`
   * actions the run also ends after `config.duration` ms (the smaller wins). Without either, an
   * action with status runs until completed or an error; one without status ends right after start.
   */
  durationMs?: number;
  /** Factor applied to every described `callInterval` (`0.1` polls ten times as often). Default 1. */
  timeScale?: number;
  /** Status interval in ms, overriding the described one (and `timeScale`). */
  statusIntervalMs?: number;
  /** Metric query interval in ms, overriding the described one (and `timeScale`). */
  queryIntervalMs?: number;
  /** Ends the run early (as if the duration elapsed): status polling and queries stop, stop is called. */
  signal?: AbortSignal;
}

/** Lifecycle phases. */
export type Phase = 'prepare' | 'start' | 'status' | 'stop' | 'query';

/** One failure during a run. */
export interface RunError {
  /** The phase whose call failed or reported the error. */
  phase: Phase;
  /** Readable: `[errored] Failed to prepare.: …` for result errors, the client error message otherwise. */
  message: string;
  /** The ActionKitError, when the extension reported one (in `result.error` or a non-2xx body). */
  error?: ActionKitError;
  /** The thrown client error, when the call itself failed. */
  cause?: unknown;
}

/** One answered call. */
export interface PhaseRecord<T> extends Exchange<T> {
  /** When the call was sent, ms after prepare was sent. */
  sentAtMs: number;
}

/** Why the run ended. */
export type RunEnd = 'completed' | 'duration' | 'error' | 'instantaneous' | 'aborted';

/** Everything a run observed; `S` is the action's state ({@link StateOf}). */
export interface RunResult<S = JsonObject> {
  /** The action's id. */
  actionId: string;
  /** The execution's UUID. */
  executionId: string;
  /** The description the run followed. */
  description: ActionDescription;
  /** Why the run ended. */
  ended: RunEnd;
  /** Start sent → stop answered (or the last call answered when there is no stop); 0 if never started. */
  durationMs: number;
  /** Messages of every answer, in order. */
  messages: Message[];
  /** Metrics of every answer (status, stop, metric queries…), in order. */
  metrics: Metric[];
  /** Artifacts of every answer, in order. */
  artifacts: Artifact[];
  /** Every failure; empty for a clean run. */
  errors: RunError[];
  /** The prepare answer (absent when the call failed). */
  prepare?: PhaseRecord<PreparedWith<S>>;
  /** The start answer (absent when not reached or the call failed). */
  start?: PhaseRecord<AnsweredWith<StartResult, S>>;
  /** Every status answer, in order. */
  status: PhaseRecord<AnsweredWith<StatusResult, S>>[];
  /** The stop answer (absent when not described, not reached or the call failed). */
  stop?: PhaseRecord<StopResult>;
  /** Every metric query answer, in order. */
  query: PhaseRecord<QueryMetricsResult>[];
  /** The last state the extension returned (what stop was, or would have been, sent). */
  state: S | undefined;
}

/** Interval used when a described `callInterval` cannot be parsed (as the Go test client). */
const FALLBACK_INTERVAL_MS = 1_000;
/**
 * Query interval when the description gives none: the reference does not default it (the agent
 * applies its own); we poll once a second, the interval the platform's examples use.
 */
const DEFAULT_QUERY_INTERVAL_MS = 1_000;

/** setTimeout fires at once for delays beyond this (2^31 - 1 ms); longer waits are cut to it. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Run one execution of `endpoints.description` (see the module documentation). Never throws for extension misbehaviour: it is in `errors`. */
export function runExecution<C = JsonObject, S = JsonObject>(endpoints: ExecutionEndpoints<C, S>, options?: RunOptions<C>): Promise<RunResult<S>>;
export async function runExecution(endpoints: ExecutionEndpoints, options: RunOptions = {}): Promise<RunResult> {
  const description = endpoints.description;
  const config = options.config ?? {};
  const executionId = options.executionId ?? randomUUID();
  const t0 = performance.now();
  const result: RunResult = {
    actionId: description.id,
    executionId,
    description,
    ended: 'error',
    durationMs: 0,
    messages: [],
    metrics: [],
    artifacts: [],
    errors: [],
    status: [],
    query: [],
    state: undefined,
  };
  /** Call one endpoint; record its answer (and a result error) or its failure. */
  const call = async <T extends Reports>(phase: Phase, send: () => Promise<Exchange<T>>): Promise<PhaseRecord<T> | undefined> => {
    const sentAtMs = performance.now() - t0;
    try {
      const exchange = await send();
      const record: PhaseRecord<T> = { ...exchange, sentAtMs };
      result.messages.push(...(exchange.result.messages ?? []));
      result.metrics.push(...(exchange.result.metrics ?? []));
      result.artifacts.push(...(exchange.result.artifacts ?? []));
      if (exchange.result.state !== undefined) result.state = exchange.result.state;
      const error = exchange.result.error;
      if (error !== undefined) result.errors.push({ phase, message: describeActionKitError(error), error });
      return record;
    } catch (cause) {
      const error = (cause as { error?: ActionKitError }).error;
      result.errors.push({ phase, message: cause instanceof Error ? cause.message : String(cause), cause, ...(error === undefined ? {} : { error }) });
      return undefined;
    }
  };
  const failed = (record: { result: { error?: unknown } } | undefined): boolean => record === undefined || record.result.error !== undefined;

  result.prepare = await call('prepare', () =>
    endpoints.prepare({
      executionId,
      config,
      ...(options.target === undefined ? {} : { target: options.target }),
      ...(options.executionContext === undefined ? {} : { executionContext: options.executionContext }),
      properties: options.properties ?? {},
      ...(options.files === undefined ? {} : { files: options.files }),
    }),
  );
  // The agent never stops an execution whose prepare failed.
  if (failed(result.prepare)) return result;

  const startedAt = performance.now();
  const finish = async (ended: RunEnd): Promise<RunResult> => {
    // Stop is called after start and status errors too, with the latest state (reference §3.2).
    if (description.stop !== undefined) {
      result.stop = await call('stop', () => endpoints.stop({ executionId, state: result.state ?? {} }));
    }
    result.ended = ended;
    result.durationMs = performance.now() - startedAt;
    return result;
  };
  result.start = await call('start', () => endpoints.start({ executionId, state: result.state ?? {} }));
  if (failed(result.start)) return finish('error');

  const windowMs = runWindowMs(description, config, options.durationMs);
  const deadline = windowMs === undefined ? undefined : startedAt + windowMs;
  const halt = new AbortController();
  const onAbort = (): void => halt.abort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted === true) halt.abort();

  const queryEndpoint = description.metrics?.query?.endpoint;
  const queries =
    queryEndpoint === undefined
      ? Promise.resolve()
      : (async () => {
          const intervalMs = options.queryIntervalMs ?? scaled(queryEndpoint.callInterval, DEFAULT_QUERY_INTERVAL_MS, options.timeScale);
          while (!(await pause(intervalMs, deadline, halt.signal))) {
            const record = await call('query', () =>
              endpoints.query({ executionId, timestamp: new Date().toISOString(), config, ...(options.target === undefined ? {} : { target: options.target }) }),
            );
            if (record !== undefined) result.query.push(record);
          }
        })();

  let ended: RunEnd;
  const statusEndpoint = description.status;
  if (statusEndpoint !== undefined) {
    const intervalMs = options.statusIntervalMs ?? scaled(statusEndpoint.callInterval, FALLBACK_INTERVAL_MS, options.timeScale);
    for (;;) {
      // The first poll comes one interval after start, as the agent's.
      if (await pause(intervalMs, deadline, halt.signal)) {
        ended = halt.signal.aborted ? 'aborted' : 'duration';
        break;
      }
      const record = await call('status', () => endpoints.status({ executionId, state: result.state ?? {} }));
      if (record !== undefined) result.status.push(record);
      if (failed(record)) {
        ended = 'error';
        break;
      }
      if (record!.result.completed) {
        ended = 'completed';
        break;
      }
    }
  } else if (deadline !== undefined) {
    ended = (await pause(Number.POSITIVE_INFINITY, deadline, halt.signal)) && halt.signal.aborted ? 'aborted' : 'duration';
  } else {
    ended = 'instantaneous';
  }
  halt.abort();
  options.signal?.removeEventListener('abort', onAbort);
  await queries;
  return finish(ended);
}

type Reports = { messages?: Message[]; metrics?: Metric[]; artifacts?: Artifact[]; state?: JsonObject; error?: ActionKitError };

/**
 * How long the run may last after start: `config.duration` (ms) for `external` actions, capped by
 * the caller's `durationMs`; undefined = until completed.
 */
function runWindowMs(description: ActionDescription, config: JsonObject, callerMs: number | undefined): number | undefined {
  const duration = config['duration'];
  const configured = description.timeControl === 'external' && typeof duration === 'number' && Number.isFinite(duration) ? duration : undefined;
  if (configured === undefined) return callerMs;
  return callerMs === undefined ? configured : Math.min(configured, callerMs);
}

/** A described interval in ms, scaled; unparsable or missing → `fallbackMs` (scaled too). */
function scaled(callInterval: string | undefined, fallbackMs: number, timeScale = 1): number {
  let ms = fallbackMs;
  if (callInterval !== undefined) {
    try {
      ms = parseDurationMs(callInterval);
    } catch {
      ms = fallbackMs;
    }
  }
  return Math.max(1, Math.round(ms * timeScale));
}

/**
 * Wait `ms`, but no later than `deadline` (a `performance.now()` value) and not past an abort.
 * @returns true when the run must end (deadline reached or aborted), false after a full wait.
 */
function pause(ms: number, deadline: number | undefined, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  const untilDeadline = deadline === undefined ? Number.POSITIVE_INFINITY : deadline - performance.now();
  if (untilDeadline <= 0) return Promise.resolve(true);
  const waitMs = Math.min(ms, untilDeadline, MAX_TIMER_MS);
  const endsRun = waitMs === untilDeadline;
  return new Promise((resolve) => {
    const done = (value: boolean): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      resolve(value);
    };
    const onAbort = (): void => done(true);
    const timer = setTimeout(() => done(endsRun), waitMs);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
