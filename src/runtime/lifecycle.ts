/**
 * The execution lifecycle: every operation on an execution — prepare, start, status, stop from the
 * agent, stops from anywhere else, retries, expiry — and who may run what when. The HTTP layer
 * hands validated wire bodies in and gets the HTTP status and body to answer with (or a thrown
 * {@link RuntimeError}). Handler failures of prepare/start/status are HTTP 200 with `error` and
 * the latest state; stop and query failures are HTTP 500 (reference §1.5, §1.6). A state too
 * large for the agent to send back is refused on the handler thread (`State too large`, reply
 * without state): the answer then carries the state the request brought (prepare: `{}`), and so
 * does the execution — a failed prepare is discarded, a failed start is stopped by the agent with
 * the state it still holds, a failed status leaves the state as it was.
 *
 * ```
 *                 prepare ok                    start ok: markRunning, body dispatched, began
 *   (none) ──create──▶ Prepared ─────────────────────────────────────────────▶ Running
 *                        │  prepare failed: release (nothing to roll back)        │ status: heartbeat
 *                        ▼                                                        │
 *                      Free ◀──release── Stopped ◀──ok── Stopping ◀──take── StopRequested
 *                        ▲                                  │               ▲   ▲   ▲
 *                        │                              failed            stop  │   │
 *                        │                                  ▼           (any    │   │
 *                        └────release (given up)──────── StopFailed ──retry─────┘   │
 *                                                                      trigger)─────┘
 *                                                     from Prepared, Running, StopFailed
 * ```
 *
 * The CONTROL word in the shared table (`src/shm/table.ts`) is the authority on where an
 * execution is; it changes only by CAS, so every race between triggers (agent stops, heartbeat
 * timeout, signals, a failing body, expiry, retries) has exactly one winner. On top of it, each
 * execution has a lock that serialises its author handlers (`prepare`, `start`, `status`, `stop`)
 * — never its body, and never a stop's body ladder.
 *
 * | step | runs when | under the lock | what it does |
 * |---|---|---|---|
 * | prepare | id unknown, not shutting down, a block free | yes | author prepare; ok → `prepared`; failed → uploads removed, block released unless a stop took it (that stop then calls no author stop) |
 * | start | block Prepared, same generation, after taking the lock | yes | a body seat is reserved first (full → start fails, nothing ran); author start; `markRunning`; lost to a stop → answer "stopped"; else the body is dispatched and start answers once it runs |
 * | status | block Running (else the stopped answer) | yes (handler) | heartbeat; author status with the body's phase and reports |
 * | stop trigger | any thread, any time | no | `requestStop` CAS; only the winner enqueues |
 * | stop run | the queue loop took the event (Stopping) | author stop only | body ended (cooperative → grace → kill), author stop (skipped if nothing was prepared), uploads removed, Stopped + release, or StopFailed + retry timer |
 * | retry | timer after a failed stop | — | `requestStop` with the same reason; after `stopRetryAttempts` the block is released and the failure remembered (given up, logged as an error) |
 * | expiry | Prepared longer than `preparedTtlMs` | — | `requestStop(prepared but not started in time)` |
 *
 * Invariants and where they are kept:
 * - the author's stop runs at most once at a time and exactly once successfully: the CAS lets one
 *   stop be taken per StopRequested episode, a taken block leaves the stoppable states until it
 *   failed, and a Stopped block is released at once;
 * - no author start after the author's stop: start re-checks its block (generation and state)
 *   after taking the lock, and the author's stop runs under the same lock;
 * - an agent's start answered without error means its body runs: the seat is reserved before, and
 *   the answer waits for the body's `began`;
 * - a block is released only after its body no longer runs (`BodyLane.end`), so nothing of an old
 *   execution reaches a reused block;
 * - every stop is answered: every StopRequested block is taken (queue or orphan sweep), every stop
 *   run settles its waiters, failed ones retry and are finally given up.
 */
import * as os from 'node:os';
import type { Message } from '../action.js';
import type { JsonObject, PrepareActionRequestBody, QueryMetricsRequestBody } from '../api/schemas.js';
import { ErrorCode, handlerErrorToWire, RuntimeError, type ActionKitErrorBody, type ErrorData } from '../errors.js';
import { LogBudget } from '../log-budget.js';
import type { Logger } from '../logging.js';
import { HandlerTimedOut, type WorkerPools } from '../pool.js';
import { clockMs, clockUs, elapsedMs, generationOf, Reason, reasonOf, reasonText, State, stateOf, type ControlTable } from '../shm/table.js';
import type { BodyEnd, BodyLane, BodyRun } from './bodies.js';
import { settlesWithin } from './waits.js';
import type { BodySeat } from './body-threads.js';
import { assertFileParametersUploaded, filledFileParameters, uploadFolderOf, UploadLocations, uploadNotKept, uploadViolation } from './file-state.js';
import { prependReports, type Execution, type ExecutionStore, type StopOutcome } from './executions.js';
import type { DecodedBody, HandlerReply, HandlerTask, Phase } from './protocol.js';
import { SealedJson, type StateValue } from './sealed.js';
import type { RegisteredAction } from './registry.js';
import { testPoint, type TestPoint } from './test-points.js';

/** An answer: HTTP status and JSON body. */
export interface Reply {
  status: number;
  body: JsonObject;
}

/** Per-request context supplied by the HTTP layer. */
export interface RequestScope {
  /** `Date.now()` ms when the agent stops waiting (`Request-Timeout`), if it said. */
  deadlineMs: number | undefined;
  /** True once the agent has given up on this request (timed out or disconnected). */
  abandoned(): boolean;
}

/** A start, status or stop request: the execution and the state the agent sent (sealed when large, `./sealed.ts`). */
export interface StateRequest {
  executionId: string;
  state: StateValue;
}

/**
 * A prepare or query request whose body was decoded on the large-request lane (`./sealed.ts`):
 * validated there, and sealed when still large. A class, so that no JSON body can pass for one.
 */
export class DecodedRequest {
  constructor(
    readonly executionId: string,
    readonly body: JsonObject | SealedJson,
    /** prepare: the file parameters whose config value is set (`./file-state.ts`, rule 1). */
    readonly filledFileParameters: readonly string[],
  ) {}

  /** From a successful decode. */
  static from(reply: DecodedBody): DecodedRequest {
    const body = reply.sealedRequest === undefined ? (reply.request ?? {}) : SealedJson.received(reply.sealedRequest);
    return new DecodedRequest(reply.executionId, body, reply.filledFileParameters ?? []);
  }
}

/** Files saved for a multipart prepare. */
export interface UploadedFiles {
  folder: string | undefined;
  /** parameter name → absolute path */
  files: Map<string, string>;
}

/** Automatic retries of a failed stop. */
export interface StopRetrySettings {
  /** Delay before the first retry; each further one waits four times longer. */
  baseMs: number;
  /** Retries before the stop is given up. */
  attempts: number;
}

/** What the lifecycle needs. */
export interface LifecycleDeps {
  table: ControlTable;
  store: ExecutionStore;
  bodies: BodyLane;
  pools: WorkerPools;
  logger: Logger;
  handlerTimeoutMs: number;
  stopGraceMs: number;
  stopRetry: StopRetrySettings;
  /** Prepared executions never started are stopped after this long. */
  preparedTtlMs: number;
  /** Where uploads go: `<uploadDir>/<executionId>/<file>`. */
  uploadDir: string;
  /** Remove `<uploadDir>/<executionId>` if it exists (never throws). */
  removeUploads(executionId: string): Promise<void>;
  /** Told when a stop attempt finished, before its waiters are answered (metrics; must be cheap). */
  onStopFinished?: (execution: Execution, reason: Reason, bodyEnd: BodyEnd, succeeded: boolean) => void;
  /** Told when a failed stop is given up (metrics). */
  onStopGivenUp?: (execution: Execution, reason: Reason) => void;
}

/** Result of {@link Lifecycle.stopAll}. */
export interface StopAllResult {
  requested: number;
  succeeded: number;
  failed: number;
  /** Stops still running when the deadline passed. */
  unfinished: number;
}

/** Counters for metrics and benchmarks. */
export interface StopStats {
  /** Author stop handler invocations (successful or not). */
  stopHandlerCalls: number;
  succeeded: number;
  failed: number;
  /** Failed stops whose retries were all used up: their rollback did not happen. */
  givenUp: number;
  bodiesCooperative: number;
  bodiesKilled: number;
}

/**
 * The reference appends `OS information: sysname=…; release=…; version=…; machine=…` to every
 * prepare result on Linux (platform diagnostics); elsewhere nothing.
 */
const UNAME_MESSAGE: Message | undefined =
  os.type() === 'Linux'
    ? { level: 'info', message: `OS information: sysname=${os.type()}; release=${os.release()}; version=${os.version()}; machine=${os.machine()}` }
    : undefined;

/**
 * Author stops in flight at once, per handler thread. A stop storm (SIGUSR1 with thousands of
 * executions) would otherwise put every author stop into the handler lane's FIFO queue at once,
 * and each status request — the agent's heartbeat — would wait behind all of them. Bounded, the
 * queue holds a few stops at a time and status requests interleave; the lane stays just as busy.
 */
const STOPS_IN_FLIGHT_PER_HANDLER_THREAD = 2;

/** Bound on waiting for the error of a body that failed (it follows its stop request at once). */
const BODY_ERROR_WAIT_MS = 1_000;

/** Each retry of a failed stop waits this many times longer than the one before. */
const STOP_RETRY_FACTOR = 4;

/** Unknown executions remembered as already logged by the synthetic status, before the set starts over. */
const UNKNOWN_REPORTED_MAX = 1_024;

/** Prepared executions of non-stoppable actions with file parameters whose upload locations are kept (oldest forgotten first). */
const UNTRACKED_UPLOAD_RECORDS_MAX = 10_000;

/** Log lines per minute about requests for executions this process does not know (anyone can send those). */
const UNKNOWN_LOG_LINES_PER_MINUTE = 20;

/** The expiry sweep of prepared executions runs at least this often (and at a quarter of the TTL when shorter). */
const EXPIRY_SWEEP_MAX_MS = 60_000;

/** FIFO admission: at most `limit` callers inside {@link Admission.run} at once. */
class Admission {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      return await task();
    } finally {
      // Hand the place straight to the next waiter (active stays the same), or free it.
      const next = this.waiting.shift();
      if (next === undefined) this.active--;
      else next();
    }
  }
}

/** Wait at a test point if a test holds it (production: nothing, not even an await). */
async function hold(point: TestPoint, executionId: string): Promise<void> {
  const held = testPoint(point, executionId);
  if (held !== undefined) await held;
}

/** The lifecycle of every execution of this extension. */
export class Lifecycle {
  readonly stats: StopStats = { stopHandlerCalls: 0, succeeded: 0, failed: 0, givenUp: 0, bodiesCooperative: 0, bodiesKilled: 0 };
  private readonly deps: LifecycleDeps;
  /** Set on shutdown: no new executions. */
  private closed = false;
  /** Set by {@link drain}: no more timers (retries, expiry). */
  private drained = false;
  /** Stops of executions this process does not know, de-duplicated while they run. */
  private readonly statelessStops = new Map<string, { actionId: string; outcome: Promise<StopOutcome> }>();
  /** Unknown executions whose synthetic status was already logged (see {@link unknownStatus}). */
  private readonly reportedUnknown = new Set<string>();
  private readonly unknownLog = new LogBudget(UNKNOWN_LOG_LINES_PER_MINUTE);
  /**
   * Upload locations (`./file-state.ts`) of prepared executions of actions with file parameters
   * that keep no execution record (not stoppable), by id; bounded, oldest forgotten first.
   */
  private readonly untrackedUploads = new Map<string, UploadLocations>();
  /** Stop runs in progress (taken from the queue, not yet settled). */
  private readonly stopRuns = new Set<Promise<void>>();
  private readonly authorStops: Admission;
  private readonly expirySweep: NodeJS.Timeout;

  constructor(deps: LifecycleDeps) {
    this.deps = deps;
    this.authorStops = new Admission(Math.max(1, deps.pools.handlerThreads) * STOPS_IN_FLIGHT_PER_HANDLER_THREAD);
    this.expirySweep = setInterval(() => this.expirePrepared(), Math.max(10, Math.min(EXPIRY_SWEEP_MAX_MS, deps.preparedTtlMs / 4)));
    this.expirySweep.unref();
  }

  /** Refuse new executions from now on (shutdown). Idempotent. */
  close(): void {
    this.closed = true;
  }

  /**
   * Wait for the stop runs in progress, until `deadlineMs` (`Date.now()` scale); then stop the
   * timers (retries, expiry). Returns how many stop runs were still going at the deadline.
   */
  async drain(deadlineMs: number): Promise<number> {
    clearInterval(this.expirySweep);
    this.drained = true;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, deadlineMs - Date.now()))));
    await Promise.race([Promise.allSettled([...this.stopRuns]), deadline]);
    clearTimeout(timer);
    for (const execution of this.deps.store.all()) clearTimeout(execution.retryTimer);
    return this.stopRuns.size;
  }

  // ---- the agent's operations ---------------------------------------------------------------

  /** `POST prepare`. */
  async prepare(action: RegisteredAction, request: PrepareActionRequestBody | DecodedRequest, upload: UploadedFiles | undefined, scope: RequestScope): Promise<Reply> {
    const id = request.executionId.toLowerCase();
    let execution: Execution | undefined;
    try {
      if (this.closed) throw shuttingDown();
      if (this.statelessStops.has(id)) throw stopRunning(id);
      // Only stoppable actions are tracked; the agent carries the state of the others.
      if (action.stoppable) execution = this.deps.store.create(id, action);
      if (action.fileParameters.size > 0) {
        const filled = request instanceof DecodedRequest ? request.filledFileParameters : filledFileParameters(action.fileParameters, request.config as JsonObject);
        assertFileParametersUploaded(filled, upload?.files);
      }
    } catch (error) {
      if (execution !== undefined) this.deps.store.release(execution);
      if (upload?.folder !== undefined) await this.deps.removeUploads(id);
      throw error;
    }
    const locations = action.fileParameters.size > 0 ? new UploadLocations(uploadFolderOf(this.deps.uploadDir, id)) : undefined;
    const task = this.task('prepare', action, id, scope, {
      request: request instanceof DecodedRequest ? request.body : (request as JsonObject),
      // Written into the config by the handler thread: the request may be sealed here.
      ...(upload === undefined || upload.files.size === 0 ? {} : { uploadedFiles: Object.fromEntries(upload.files) }),
      ...(locations === undefined ? {} : { uploadFolder: locations.folder }),
    });
    if (execution === undefined) {
      const reply = await this.runHandler(task);
      if (locations !== undefined && reply.ok && reply.result.error === undefined) this.rememberUntrackedUploads(id, locations, reply);
      return prepareReply(reply);
    }

    const owned = execution;
    owned.uploadFolder = upload?.folder;
    owned.uploadLocations = locations;
    // Book-keeping happens under the execution's lock, so a stop queued behind this prepare sees its outcome.
    return owned.lock.run(async () => {
      const reply = await this.runHandler(task);
      await hold('prepare.settled', id);
      if (!reply.ok || reply.result.error !== undefined) {
        await this.discardFailedPrepare(owned);
      } else {
        handOut(owned, reply.state ?? {}, reply);
        owned.prepared = true;
        if (scope.abandoned()) {
          // The agent gave up waiting and will never start or stop it: roll back what prepare did.
          this.deps.logger.warn({ executionId: id }, 'prepare finished after the agent gave up; stopping the execution');
          void this.request(owned, Reason.PrepareAbandoned);
        }
      }
      return prepareReply(reply);
    });
  }

  /** `POST start`. */
  async start(action: RegisteredAction, request: StateRequest, scope: RequestScope): Promise<Reply> {
    const id = request.executionId.toLowerCase();
    const { state } = request;
    this.assertOwnedBy(action, id);
    if (!action.stoppable) {
      const locations = await this.untrackedLocations(action, id, state);
      if (locations === null) return uploadsNotHere(state);
      const reply = await this.runHandler(this.task('start', action, id, scope, { state, ...uploadFolderOfTask(locations) }));
      if (reply.ok) locations?.add(reply.uploadLocations);
      return stateReply(reply, state, 'Failed to start action.');
    }

    let execution = this.deps.store.get(id);
    if (execution === undefined) {
      // The agent's stop of this id (unknown here, e.g. after a restart) is running: it ends first,
      // and this start then finds it stopped — never an author start beside or after that stop.
      const statelessStop = this.statelessStops.get(id);
      if (statelessStop !== undefined) await statelessStop.outcome;
      const recent = this.deps.store.recentStop(id);
      if (recent !== undefined) return { status: 200, body: { state, error: stoppedByExtensionForStatus(recent.outcome.reason) } };
      execution = this.deps.store.get(id);
    }
    if (execution === undefined) {
      if (this.closed) throw shuttingDown();
      // Its uploads were never on this instance, or went with the process that received them.
      if (action.fileParameters.size > 0) return uploadsNotHere(state);
      // Prepared by a previous process of this extension (restart): adopt it with the agent's state.
      execution = this.deps.store.create(id, action);
      execution.state = state;
      execution.prepared = true;
    }
    const owned = execution;
    await hold('start.before-lock', id);
    return owned.lock.run(() => this.startLocked(owned, state, scope));
  }

  /** `POST status`. Every status request is a heartbeat. */
  async status(action: RegisteredAction, request: StateRequest, scope: RequestScope): Promise<Reply> {
    const id = request.executionId.toLowerCase();
    const { state } = request;
    this.assertOwnedBy(action, id);
    const execution = action.stoppable ? this.deps.store.get(id) : undefined;
    if (execution === undefined) {
      const recent = action.stoppable ? this.deps.store.recentStop(id) : undefined;
      if (recent !== undefined) return stoppedStatus(recent.outcome.reason, recent.outcome.bodyError);
      if (!action.hasStatusHandler) return this.unknownStatus(action, id);
      const locations = action.stoppable ? undefined : await this.untrackedLocations(action, id, state);
      // An action with file parameters that this process did not prepare: its uploads are not here.
      if (locations === null || (action.stoppable && action.fileParameters.size > 0)) return this.unknownStatus(action, id);
      const reply = await this.runHandler(this.task('status', action, id, scope, { state, ...uploadFolderOfTask(locations) }));
      if (reply.ok) locations?.add(reply.uploadLocations);
      return statusReply(reply, state, undefined);
    }
    this.deps.table.recordHeartbeat(execution.slot);
    const stopped = this.stoppedStatusOf(execution);
    if (stopped !== undefined) return stopped;
    if (!action.hasStatusHandler) return { status: 200, body: prependReports({ completed: false }, execution.reports.drain()) };
    return execution.lock.run(async () => {
      // Re-check: a stop may have been requested while this request waited for the lock.
      const stoppedMeanwhile = this.stoppedStatusOf(execution);
      if (stoppedMeanwhile !== undefined) return stoppedMeanwhile;
      // Under the lock: a start or status before this one may have handed out more upload locations.
      await this.assertUploadsKept(execution.uploadLocations, state, id);
      const reports = execution.reports.drain();
      const body = { ...this.deps.bodies.info(execution), reports };
      const reply = await this.runHandler(this.task('status', action, id, scope, { state, body, ...uploadFolderOfTask(execution.uploadLocations) }));
      const newState = reply.state ?? state;
      handOut(execution, newState, reply);
      return statusReply(reply, newState, reports);
    });
  }

  /**
   * A large start, status or stop body for `executionId` began to arrive (the id read from its
   * first bytes, unverified). True when this process holds that execution for this action: its
   * body then goes before anonymous large bodies. A status counts its heartbeat now, as a small
   * one does when it arrives — even should the rest of the body turn out broken: what a poll from
   * the agent would stamp, and a client that knows a live execution's id could stamp it with a
   * small status anyway.
   */
  largeRequestArrived(action: RegisteredAction, executionId: string, phase: 'start' | 'status' | 'stop'): boolean {
    const execution = this.deps.store.get(executionId.toLowerCase());
    if (execution === undefined || execution.action !== action) return false;
    if (phase === 'status') this.deps.table.recordHeartbeat(execution.slot);
    return true;
  }

  /**
   * `POST stop` from the agent. A stop already under way (or finished) is shared: a duplicate
   * agent stop gets the same answer, a stop the extension initiated answers
   * `Action was stopped by extension <reason>` and the author's stop is not called again.
   */
  async stop(action: RegisteredAction, request: StateRequest): Promise<Reply> {
    const id = request.executionId.toLowerCase();
    const { state } = request;
    this.assertOwnedBy(action, id);
    // Two rounds at most: an extension-initiated stop that failed is retried once as the agent's.
    for (let round = 0; round < 2; round++) {
      const execution = this.deps.store.get(id);
      if (execution === undefined) break;
      await this.assertUploadsKept(execution.uploadLocations, state, id);
      const outcome = await this.request(execution, Reason.Agent, state);
      if (outcome.reason === Reason.Agent || outcome.givenUp === true) return stopReplyFor(outcome);
      if (outcome.succeeded) return stoppedByExtensionForStop(outcome.reason);
    }
    const recent = this.deps.store.recentStop(id);
    // A stateless stop that failed is retried by the next agent stop (its id stays taken meanwhile).
    if (recent !== undefined && (recent.outcome.succeeded || recent.outcome.stateless !== true)) return stopReplyFor(recent.outcome);
    const live = this.deps.store.get(id);
    if (live !== undefined) return stoppedByExtensionForStop(this.stopReasonOf(live) ?? Reason.Agent);
    // Unchecked (file-state.ts, rule 3): the rollback must run, and nothing records the state's uploads.
    return this.statelessStop(action, id, state);
  }

  /** `POST query` (metric query): stateless. */
  async query(action: RegisteredAction, request: QueryMetricsRequestBody | DecodedRequest, scope: RequestScope): Promise<Reply> {
    const id = request.executionId.toLowerCase();
    this.assertOwnedBy(action, id);
    const reply = await this.runHandler(this.task('query', action, id, scope, { request: request instanceof DecodedRequest ? request.body : (request as JsonObject) }));
    if (!reply.ok) return { status: 500, body: { ...handlerErrorToWire(reply.error, 'Failed to query metrics.') } };
    return { status: 200, body: reply.result as JsonObject };
  }

  // ---- stops ---------------------------------------------------------------------------------

  /**
   * Request the stop of an execution (main thread) and wait for the outcome that applies to this
   * request: the one of this stop if it won, else the one of the stop already under way, else how
   * it already ended. `agentState` is the state the agent sent (used when the agent's request wins).
   */
  request(execution: Execution, reason: Reason, agentState?: StateValue): Promise<StopOutcome> {
    const { won, stale } = this.deps.table.requestStop(execution.slot, execution.generation, reason);
    if (stale) {
      // Its block was released: by a stop (outcome kept) or by a failed prepare (nothing to stop).
      return Promise.resolve(execution.outcome ?? { reason, succeeded: true, httpStatus: 200, body: {}, finishedAtMs: clockMs() });
    }
    if (won && reason === Reason.Agent) execution.agentStopState = agentState;
    if (execution.pendingStop === undefined) {
      let resolve!: (outcome: StopOutcome) => void;
      const promise = new Promise<StopOutcome>((r) => (resolve = r));
      execution.pendingStop = { promise, resolve };
    }
    return execution.pendingStop.promise;
  }

  /** Stop every active execution in parallel, bounded by `timeoutMs`. */
  async stopAll(reason: Reason, timeoutMs: number): Promise<StopAllResult> {
    const executions = this.deps.store.all();
    const result: StopAllResult = { requested: executions.length, succeeded: 0, failed: 0, unfinished: executions.length };
    if (executions.length === 0) return result;
    this.deps.logger.warn({ count: executions.length, reason: reasonText(reason) }, 'stopping active executions');
    const outcomes = executions.map((execution) =>
      this.request(execution, reason).then((outcome) => {
        result.unfinished--;
        if (outcome.succeeded) result.succeeded++;
        else result.failed++;
      }),
    );
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(outcomes), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    if (result.unfinished > 0) this.deps.logger.error({ ...result, timeoutMs }, 'stop-all deadline passed with stops still running');
    return { ...result };
  }

  /**
   * The stop queue loop took the stop of `slot` (CONTROL now Stopping): run it in the background.
   * `fromSweep`: taken by the orphan sweep, whose stops may carry no request time.
   */
  onStopTaken(slot: number, control: number, fromSweep: boolean): void {
    const execution = this.deps.store.atSlot(slot);
    if (execution === undefined || execution.generation !== generationOf(control)) {
      this.deps.logger.error({ slot, control }, 'stop event for a control block without its execution');
      return;
    }
    const stopAtUs = fromSweep ? undefined : this.deps.table.stopRequestedAtUs(slot);
    const run = this.runStop(execution, reasonOf(control), stopAtUs).catch((error: unknown) => {
      this.deps.logger.fatal({ err: error, executionId: execution.id }, 'stop run failed: runtime bug');
    });
    this.stopRuns.add(run);
    void run.finally(() => this.stopRuns.delete(run));
  }

  // ---- internals -------------------------------------------------------------------------------

  /** The part of start that runs under the execution's lock. */
  private async startLocked(execution: Execution, agentState: StateValue, scope: RequestScope): Promise<Reply> {
    const { table, bodies } = this.deps;
    const { action, slot, generation } = execution;
    // Under the lock: what handlers before this one handed out is recorded (`./file-state.ts`).
    await this.assertUploadsKept(execution.uploadLocations, agentState, execution.id);
    // While this request waited for the lock, a stop (or a failed prepare) may have ended the
    // execution and even handed its block to another: look again, by generation.
    const control = table.control(slot);
    const ended = generationOf(control) !== generation || !execution.prepared;
    if (!ended && stateOf(control) === State.Running) throw new RuntimeError(ErrorCode.Conflict, 409, `Execution ${execution.id} was already started`);
    if (ended || stateOf(control) !== State.Prepared) {
      const reason = this.stopReasonOf(execution);
      if (reason === undefined) return { status: 200, body: { state: agentState, error: { title: 'Failed to start action.', detail: 'its prepare failed' } } };
      return { status: 200, body: { state: agentState, error: stoppedByExtensionForStatus(reason) } };
    }
    let seat: BodySeat | undefined;
    if (action.bodyKind !== undefined) {
      try {
        seat = await bodies.reserve(action.bodyKind);
      } catch (error) {
        // No thread for the body: fail before the author's start changed anything. Like any failed
        // start, the heartbeat is armed and the agent will stop it.
        const failure = error instanceof RuntimeError ? error : new RuntimeError(ErrorCode.Internal, 500, 'Body thread could not start', String(error));
        table.markRunning(slot, generation, action.heartbeatExpiryMs);
        this.deps.logger.error({ executionId: execution.id, detail: failure.detail }, failure.message);
        return { status: 200, body: { state: agentState, error: failure.toWire() } };
      }
      // Waiting for a thread to boot took a while: if a stop came meanwhile, do not start at all.
      const stopped = this.stopReasonOf(execution);
      if (stopped !== undefined) {
        seat.release();
        return { status: 200, body: { state: agentState, error: stoppedByExtensionForStatus(stopped) } };
      }
    }
    const reply = await this.runHandler(this.task('start', action, execution.id, scope, { state: agentState, ...uploadFolderOfTask(execution.uploadLocations) }));
    await hold('start.settled', execution.id);
    const newState = reply.state ?? agentState;
    handOut(execution, newState, reply);
    const dispatching = seat !== undefined && reply.ok && reply.result.error === undefined;
    // Like the reference, the heartbeat is armed even when start failed: the agent will call stop.
    // With a body to dispatch, it is armed once this start answers: the agent cannot poll before.
    if (!table.markRunning(slot, generation, dispatching ? 0 : action.heartbeatExpiryMs)) {
      // A stop won while the author's start ran: the body never starts; the stop runs after us.
      seat?.release();
      return { status: 200, body: { state: newState, error: stoppedByExtensionForStatus(this.stopReasonOf(execution) ?? Reason.None) } };
    }
    if (!dispatching) {
      seat?.release();
      return stateReply(reply, newState, 'Failed to start action.');
    }
    // markRunning and dispatch in one synchronous step: a stop run that starts after this sees the body.
    const run = bodies.dispatch(execution, seat!, newState);
    try {
      return await this.answerWhenBegun(execution, run, reply, newState, scope);
    } finally {
      // The lock is still ours, so the block is still this execution's.
      table.watchHeartbeat(slot, action.heartbeatExpiryMs);
    }
  }

  /** A start's answer once its body began (or could not). */
  private async answerWhenBegun(execution: Execution, run: BodyRun, reply: HandlerReply, newState: StateValue, scope: RequestScope): Promise<Reply> {
    const { action } = execution;
    // A body begins within microseconds on its seat — unless an io thread is blocked by another
    // body (which its stop will kill). Bounded by the request's deadline.
    const beginWithinMs = Math.max(0, this.task('start', action, execution.id, scope, {}).deadlineMs - Date.now());
    if (!(await settlesWithin(run.began, beginWithinMs))) {
      return {
        status: 200,
        body: {
          state: newState,
          error: { title: 'Failed to start action.', detail: `the body did not begin within ${beginWithinMs} ms: its shared io body thread is blocked (by a body that does not await?)` },
        },
      };
    }
    // The extension stopped it before its body could begin: say so rather than "started".
    const reason = this.stopReasonOf(execution);
    if (!run.hasBegun && reason !== undefined && reason !== Reason.Agent) {
      return { status: 200, body: { state: newState, error: stoppedByExtensionForStatus(reason) } };
    }
    return stateReply(reply, newState, 'Failed to start action.');
  }

  /**
   * A failed prepare: nothing was prepared, so nothing is rolled back and the agent will never
   * stop it. Remove its uploads and release its block — unless a stop took the block meanwhile;
   * that stop sees `prepared` false, calls no author stop and releases it.
   */
  private async discardFailedPrepare(execution: Execution): Promise<void> {
    if (execution.uploadFolder !== undefined) {
      await hold('prepare.removing-uploads', execution.id);
      await this.deps.removeUploads(execution.id);
    }
    this.deps.store.release(execution);
  }

  private async runStop(execution: Execution, reason: Reason, stopAtUs: number | undefined): Promise<void> {
    const { table, store, bodies } = this.deps;
    execution.stopAttempts++;
    clearTimeout(execution.retryTimer);
    let outcome: StopOutcome;
    try {
      await hold('stop.taken', execution.id);
      if (execution.bodyEnd === undefined) {
        const bodyEnd = await bodies.end(execution, this.deps.stopGraceMs, stopAtUs ?? clockUs());
        execution.bodyEnd = bodyEnd;
        if (bodyEnd.phase === 'killed') this.stats.bodiesKilled++;
        if (bodyEnd.phase === 'stopped') this.stats.bodiesCooperative++;
      }
      const bodyEnd = execution.bodyEnd;
      await hold('stop.body-ended', execution.id);
      outcome = await execution.lock.run(() => this.invokeStop(execution, reason, bodyEnd));
      if (outcome.succeeded && execution.uploadFolder !== undefined) await this.deps.removeUploads(execution.id);
    } catch (error) {
      // A stop is never lost: whatever unexpected throws here (the known failures — a lost handler
      // thread, a state that cannot be checked — are answers or fallbacks already) is a failed
      // attempt, retried like any and finally given up, so the block is finished and every waiter
      // answered below.
      const detail = error instanceof RuntimeError ? (error.detail ?? error.message) : error instanceof Error ? error.message : String(error);
      this.deps.logger.error({ err: error, executionId: execution.id, reason: reasonText(reason) }, 'stop attempt failed before its outcome was known');
      outcome = { reason, succeeded: false, httpStatus: 500, body: { title: 'Failed to stop action.', detail }, finishedAtMs: clockMs() };
    }
    await hold('stop.decided', execution.id);
    // Publish the end, release the block and answer every waiter in one synchronous step, so no
    // request can observe a finished stop whose execution is still registered.
    table.finish(execution.slot, execution.generation, outcome.succeeded);
    this.deps.onStopFinished?.(execution, reason, execution.bodyEnd ?? { phase: 'none' }, outcome.succeeded);
    if (outcome.succeeded) {
      this.stats.succeeded++;
      if (!store.release(execution, outcome)) throw new Error(`control block ${execution.slot} of execution ${execution.id} could not be released after its stop`);
    } else {
      this.stats.failed++;
      outcome = this.afterFailedStop(execution, reason, outcome);
      // Given up: the block is free and the id remembered (no prepare can take it); its files go
      // before the waiters are answered, as after a successful stop.
      if (outcome.givenUp === true && execution.uploadFolder !== undefined) await this.deps.removeUploads(execution.id);
    }
    const pending = execution.pendingStop;
    execution.pendingStop = undefined;
    pending?.resolve(outcome);
  }

  private async invokeStop(execution: Execution, reason: Reason, bodyEnd: BodyEnd): Promise<StopOutcome> {
    const { action } = execution;
    const requestedBy = reason === Reason.Agent ? 'agent' : 'extension';
    // Nothing was prepared (the prepare failed while this stop waited for it): nothing to roll back.
    const callsStop = action.hasStopHandler && execution.prepared;
    const state = callsStop ? await this.stopState(execution, requestedBy) : undefined;
    const reports = execution.reports.drain();
    const bodyError = reason === Reason.BodyFailed ? execution.body?.error : undefined;
    let answer: AuthorStopAnswer = { succeeded: true, httpStatus: 200, body: {} };
    if (state !== undefined) {
      this.stats.stopHandlerCalls++;
      const stop = (): Promise<AuthorStopAnswer> =>
        runAuthorStop(this.deps.pools, this.deps.handlerTimeoutMs, this.deps.logger, {
          actionId: action.id,
          executionId: execution.id,
          state,
          body: {
            ...this.deps.bodies.info(execution),
            ...(bodyEnd.stopMs === undefined ? {} : { stopMs: bodyEnd.stopMs }),
            reports,
          },
          stop: { reason: reasonText(reason), requestedBy },
        });
      // A sealed state's stop runs on the large-request lane, one at a time in its turn: it takes
      // no place among the author stops in flight, which are there to share the handler lane.
      answer = state instanceof SealedJson ? await stop() : await this.authorStops.run(stop);
      // A timed-out author stop may still run (blocked in a native call): its admission place is
      // free again, but this execution's next handler — a retry — waits, under the lock, until its
      // thread is gone.
      await answer.threadExited;
    }
    // A failed stop delivered nothing to the agent: its retry gets the reports again.
    if (!answer.succeeded) execution.reports.putBack(reports);
    const notes = { messages: [...reports.messages, ...bodyEndMessages(bodyEnd, execution, this.deps.stopGraceMs)], metrics: reports.metrics };
    return {
      reason,
      succeeded: answer.succeeded,
      httpStatus: answer.httpStatus,
      body: answer.succeeded ? prependReports(answer.body, notes) : answer.body,
      finishedAtMs: clockMs(),
      ...(bodyError === undefined ? {} : { bodyError }),
    };
  }

  /**
   * A stop failed (its block is StopFailed): retry it later with the same reason, or give it up
   * once the retries are used up. The agent may retry sooner; the CAS decides who runs it.
   * Returns the outcome to answer the stop's waiters with.
   */
  private afterFailedStop(execution: Execution, reason: Reason, outcome: StopOutcome): StopOutcome {
    const { logger, stopRetry } = this.deps;
    const retriesSoFar = execution.stopAttempts - 1;
    if (retriesSoFar >= stopRetry.attempts) return this.giveUp(execution, reason, outcome);
    if (this.drained) return outcome; // shutting down: nothing retries any more
    const delayMs = stopRetry.baseMs * STOP_RETRY_FACTOR ** retriesSoFar;
    logger.warn(
      { executionId: execution.id, reason: reasonText(reason), error: outcome.body['title'], retryInMs: delayMs, attempt: execution.stopAttempts },
      'stop failed; retrying it later',
    );
    execution.retryTimer = setTimeout(() => {
      execution.retryTimer = undefined;
      void this.request(execution, reason, execution.agentStopState);
    }, delayMs);
    execution.retryTimer.unref();
    return outcome;
  }

  /** Every attempt failed: free the block and the uploads, remember the failure, say so loudly. */
  private giveUp(execution: Execution, reason: Reason, outcome: StopOutcome): StopOutcome {
    const givenUp: StopOutcome = { ...outcome, givenUp: true };
    // Called synchronously after finish(StopFailed); should another thread's stop request have
    // won the block in between (StopFailed → StopRequested), that retry runs and decides again.
    if (!this.deps.store.release(execution, givenUp)) return outcome;
    this.stats.givenUp++;
    this.deps.onStopGivenUp?.(execution, reason);
    this.deps.logger.error(
      { executionId: execution.id, action: execution.action.id, reason: reasonText(reason), attempts: execution.stopAttempts, error: outcome.body['title'] },
      'gave up stopping an execution: every attempt of its stop failed, so its rollback did not happen',
    );
    return givenUp;
  }

  /** Stop every prepared execution that was never started within the TTL. */
  private expirePrepared(): void {
    const nowMs = clockMs();
    for (const execution of this.deps.store.all()) {
      if (!execution.prepared || elapsedMs(nowMs, execution.createdAtMs) < this.deps.preparedTtlMs) continue;
      const control = this.deps.table.control(execution.slot);
      if (stateOf(control) !== State.Prepared || generationOf(control) !== execution.generation) continue;
      this.deps.logger.warn({ executionId: execution.id, preparedTtlMs: this.deps.preparedTtlMs }, 'prepared execution was never started; rolling it back');
      void this.request(execution, Reason.PreparedExpired);
    }
  }

  /**
   * The synthetic status of an execution this process does not know and remembers no stop of —
   * typically after a restart or a move to another pod, while the agent goes on polling. The
   * reference answers `{"completed": false}` here (its synthetic status never looks at
   * executions), and so do we: a 404 would make the agent fail the experiment on a status poll,
   * whereas "not completed" lets it go on until its stop, which rolls back what can be rolled back
   * (the author's stop runs with the agent's state). Whatever body the execution had does not run
   * in this process; the operator is told once per execution.
   */
  private unknownStatus(action: RegisteredAction, id: string): Reply {
    if (!this.reportedUnknown.has(id)) {
      // Bounded: forgetting them all only means one more log line per execution still polled.
      if (this.reportedUnknown.size >= UNKNOWN_REPORTED_MAX) this.reportedUnknown.clear();
      this.reportedUnknown.add(id);
      this.unknownLog.warn(
        this.deps.logger,
        { executionId: id, action: action.id },
        'status of an execution this process does not know (restarted?): answering not completed, as the reference; nothing of it runs here, and the agent\'s stop will end it',
      );
    }
    return { status: 200, body: { completed: false } };
  }

  /**
   * Stop of an execution this process does not know (e.g. the extension restarted mid-attack):
   * run the author's stop with the agent's state so the rollback still happens, as the reference.
   * Concurrent duplicates share one run.
   *
   * An action stoppable only through its body (no author stop) has nothing to roll back here: its
   * body ran on a thread of the process that knew the execution, and no thread of this process runs
   * it. The reference has no such action (its stop endpoint always calls an author's Stop, which
   * answers 200 after a restart); the answer the agent can act on is the same 200 — a 404 would
   * make it report a failed rollback that is not one — with a message saying that nothing was
   * stopped here. The outcome is remembered like any stop, so duplicates get the same answer and
   * the id can be neither prepared nor started afterwards.
   */
  private async statelessStop(action: RegisteredAction, id: string, state: StateValue): Promise<Reply> {
    if (!action.hasStopHandler) return this.nothingToStop(action, id);
    let running = this.statelessStops.get(id)?.outcome;
    if (running === undefined) {
      running = runAuthorStop(this.deps.pools, this.deps.handlerTimeoutMs, this.deps.logger, {
        actionId: action.id,
        executionId: id,
        state,
        body: { phase: 'none', progress: 0 },
        stop: { reason: reasonText(Reason.Agent), requestedBy: 'agent' },
      }).then(async ({ threadExited, ...answer }): Promise<StopOutcome> => {
        await threadExited;
        return { ...answer, reason: Reason.Agent, finishedAtMs: clockMs(), stateless: true };
      });
      this.statelessStops.set(id, { actionId: action.id, outcome: running });
      void running.then((outcome) => {
        this.statelessStops.delete(id);
        // Remembered also when it failed: the id is taken (a start must not adopt it), and the
        // next agent stop retries it.
        this.deps.store.remember(id, action.id, outcome);
      });
    }
    return stopReplyFor(await running);
  }

  /** The stateless stop of a body-only action (see {@link statelessStop}): nothing runs here, so nothing is stopped. */
  private nothingToStop(action: RegisteredAction, id: string): Reply {
    this.unknownLog.warn(
      this.deps.logger,
      { executionId: id, action: action.id },
      'stop of an execution this process does not know (restarted?): the action has no author stop and no body of it runs here; nothing to stop',
    );
    const outcome: StopOutcome = {
      reason: Reason.Agent,
      succeeded: true,
      httpStatus: 200,
      body: {
        messages: [
          {
            level: 'info',
            message: `Nothing to stop: this extension process has no record of execution ${id} (it was restarted since, or the execution ran on another instance); no body of it runs here`,
          },
        ],
      },
      finishedAtMs: clockMs(),
      stateless: true,
    };
    this.deps.store.remember(id, action.id, outcome);
    return stopReplyFor(outcome);
  }

  /**
   * The state the author's stop gets: the agent's when the agent's stop won (checked against the
   * upload locations when it was requested, and again here, under the lock: a handler in between
   * may have handed out more), else — or when the agent's no longer passes — the latest handed out.
   */
  private async stopState(execution: Execution, requestedBy: 'agent' | 'extension'): Promise<StateValue> {
    const agentState = requestedBy === 'agent' ? execution.agentStopState : undefined;
    if (agentState === undefined) return execution.state;
    try {
      await this.assertUploadsKept(execution.uploadLocations, agentState, execution.id);
      return agentState;
    } catch (error) {
      // Refused, or not checkable (the large-request lane lost, shutdown): the state handed out
      // last is the extension's own, always safe to stop with.
      const refused = error instanceof RuntimeError && error.httpStatus === 400;
      this.deps.logger.warn(
        { executionId: execution.id, ...(refused ? {} : { err: error }) },
        refused
          ? "the agent's stop state names no upload where a later handler put one; stopping with the state handed out last"
          : "the agent's stop state could not be checked; stopping with the state handed out last",
      );
      return execution.state;
    }
  }

  /** Keep the upload locations of a prepared execution of a non-stoppable file action (bounded). */
  private rememberUntrackedUploads(id: string, locations: UploadLocations, reply: HandlerReply): void {
    locations.add(reply.uploadLocations);
    this.untrackedUploads.set(id, locations);
    if (this.untrackedUploads.size > UNTRACKED_UPLOAD_RECORDS_MAX) {
      const oldest = this.untrackedUploads.keys().next().value;
      if (oldest !== undefined) this.untrackedUploads.delete(oldest);
    }
  }

  /**
   * For a non-stoppable action: its upload locations, checked against `state` (`./file-state.ts`
   * rule 2); `undefined` for an action without file parameters; `null` when it has some but this
   * process prepared no such execution (rule 3: its uploads are not here).
   */
  private async untrackedLocations(action: RegisteredAction, id: string, state: StateValue): Promise<UploadLocations | undefined | null> {
    if (action.fileParameters.size === 0) return undefined;
    const locations = this.untrackedUploads.get(id);
    if (locations === undefined) return null;
    await this.assertUploadsKept(locations, state, id);
    return locations;
  }

  /**
   * Rule 2 of `./file-state.ts`: 400 unless every recorded location of `state` still names an
   * upload of the execution. An object is checked here; a sealed state on the large-request lane.
   */
  private async assertUploadsKept(locations: UploadLocations | undefined, state: StateValue, executionId: string): Promise<void> {
    if (locations === undefined) return;
    const recorded = locations.list();
    if (recorded.length === 0) return;
    const violation =
      state instanceof SealedJson ? await this.deps.pools.uploadViolation(state, locations.folder, recorded) : uploadViolation(state, locations.folder, recorded);
    if (violation !== undefined) throw uploadNotKept(violation, executionId);
  }

  /**
   * An execution is operated through the endpoints of the action that prepared it: another
   * action's handlers, heartbeat expiry and state types do not apply to it. 409 naming the owner
   * when this process knows the id as another action's (active, stopped, or stopping statelessly).
   */
  private assertOwnedBy(action: RegisteredAction, id: string): void {
    const owner = this.deps.store.get(id)?.action.id ?? this.deps.store.recentStopActionOf(id) ?? this.statelessStops.get(id)?.actionId;
    if (owner === undefined || owner === action.id) return;
    throw new RuntimeError(
      ErrorCode.Conflict,
      409,
      `Execution ${id} belongs to action ${owner}`,
      `it was prepared (or stopped) through the endpoints of ${owner}; use that action's endpoints, not those of ${action.id}`,
    );
  }

  /**
   * Why the execution is no longer running: undefined while it is Prepared or Running; the reason
   * of the stop requested or done (from its block while it holds it, else from how it ended).
   */
  private stopReasonOf(execution: Execution): Reason | undefined {
    const control = this.deps.table.control(execution.slot);
    if (generationOf(control) === execution.generation) {
      const state = stateOf(control);
      return state === State.Prepared || state === State.Running ? undefined : reasonOf(control);
    }
    return execution.outcome?.reason;
  }

  /**
   * The status answer for an execution whose stop was requested, or undefined if it runs. A body
   * that failed requests its stop a moment before its error reaches this thread: the answer waits
   * for it (microseconds), so the agent is told why.
   */
  private stoppedStatusOf(execution: Execution): Reply | Promise<Reply> | undefined {
    const reason = this.stopReasonOf(execution);
    if (reason === undefined) return undefined;
    const body = execution.body;
    if (reason !== Reason.BodyFailed || body === undefined || body.settled) return stoppedStatus(reason, body?.error);
    return settlesWithin(body.done, BODY_ERROR_WAIT_MS).then(() => stoppedStatus(reason, body.error));
  }

  private task(phase: HandlerTask['phase'], action: RegisteredAction, executionId: string, scope: RequestScope, extra: Partial<HandlerTask>): HandlerTask {
    const handlerDeadline = Date.now() + this.deps.handlerTimeoutMs;
    return {
      phase,
      actionId: action.id,
      executionId,
      deadlineMs: scope.deadlineMs === undefined ? handlerDeadline : Math.min(scope.deadlineMs, handlerDeadline),
      ...(scope.deadlineMs === undefined ? {} : { requestDeadlineMs: scope.deadlineMs }),
      ...extra,
    };
  }

  /**
   * Run a handler; a lost worker becomes a failed reply (HTTP 200 + error for prepare/start/status).
   * A timed-out one is answered once its thread has exited: the caller holds the execution's lock,
   * and its next handler must not run beside one still blocked in a native call.
   */
  private async runHandler(task: HandlerTask): Promise<HandlerReply> {
    try {
      const reply = await this.deps.pools.runHandler(task, this.deps.handlerTimeoutMs);
      if (!reply.ok) logHandlerFailure(this.deps.logger, task, reply.error);
      return reply;
    } catch (error) {
      if (!(error instanceof RuntimeError)) throw error;
      if (error instanceof HandlerTimedOut) await error.threadExited;
      this.deps.logger.error({ action: task.actionId, executionId: task.executionId, phase: task.phase, detail: error.detail }, error.message);
      const state = task.phase === 'prepare' ? {} : task.state;
      return { ok: false, error: { code: error.code, message: error.detail ?? error.message, details: {} }, ...(state === undefined ? {} : { state }) };
    }
  }
}

/** The answer to a stop request, decided by the author's stop handler. */
export interface AuthorStopAnswer {
  succeeded: boolean;
  httpStatus: number;
  body: JsonObject;
  /** When the handler timed out: settles once its thread has exited. */
  threadExited?: Promise<void>;
}

/**
 * Run the author's stop on a handler thread. Success → 200 with its result; a handler error or a
 * lost worker → 500 `Failed to stop action.` (an ExtensionError passes through), as the reference.
 */
export async function runAuthorStop(
  pools: WorkerPools,
  handlerTimeoutMs: number,
  logger: Logger,
  task: Omit<HandlerTask, 'phase' | 'deadlineMs'>,
): Promise<AuthorStopAnswer> {
  try {
    const reply = await pools.runHandler({ ...task, phase: 'stop', deadlineMs: Date.now() + handlerTimeoutMs }, handlerTimeoutMs);
    if (reply.ok) return { succeeded: true, httpStatus: 200, body: reply.result as JsonObject };
    logHandlerFailure(logger, { ...task, phase: 'stop' }, reply.error);
    return { succeeded: false, httpStatus: 500, body: { ...handlerErrorToWire(reply.error, 'Failed to stop action.') } };
  } catch (error) {
    const detail = error instanceof RuntimeError ? (error.detail ?? error.message) : String(error);
    const threadExited = error instanceof HandlerTimedOut ? error.threadExited : undefined;
    logger.error({ action: task.actionId, executionId: task.executionId, phase: 'stop', detail }, error instanceof Error ? error.message : 'stop handler failed');
    return { succeeded: false, httpStatus: 500, body: { title: 'Failed to stop action.', detail }, ...(threadExited === undefined ? {} : { threadExited }) };
  }
}

/** The wire title of a failed handler of each phase that throws anything but an ExtensionError (reference §1.6). */
const FAILURE_TITLES: Readonly<Record<Phase, string>> = {
  prepare: 'Failed to prepare.',
  start: 'Failed to start action.',
  status: 'Failed to read status.',
  stop: 'Failed to stop action.',
  query: 'Failed to query metrics.',
};

/**
 * Log a handler that failed on its thread (threw, or returned what the runtime refused), once:
 * here, on the main thread, where its answer is made — the handler thread does not log it. At
 * `warn`, so the default level shows it. Fields: the action, execution and phase, the title and
 * detail the agent got, the thrown error's message and stack. Never the request, config or state:
 * they may hold credentials.
 */
function logHandlerFailure(logger: Logger, task: Pick<HandlerTask, 'actionId' | 'executionId' | 'phase'>, error: ErrorData): void {
  const wire = handlerErrorToWire(error, FAILURE_TITLES[task.phase]);
  const { detail, stack } = error.details;
  logger.warn(
    {
      action: task.actionId,
      executionId: task.executionId,
      phase: task.phase,
      error: {
        code: error.code,
        title: wire.title,
        message: error.message,
        ...(detail === undefined ? {} : { detail }),
        ...(stack === undefined ? {} : { stack }),
      },
    },
    'action handler failed',
  );
}

/** The stop result says how the body ended. */
function bodyEndMessages(end: BodyEnd, execution: Execution, graceMs: number): Message[] {
  switch (end.phase) {
    case 'stopped':
      return [{ level: 'info', message: `Action body stopped cooperatively ${formatMs(end.stopMs ?? 0)} after the stop request` }];
    case 'killed':
      return [
        {
          level: 'warn',
          message: `Action body did not stop within the ${graceMs} ms grace period; its thread was terminated ${formatMs(end.stopMs ?? graceMs)} after the stop request`,
        },
      ];
    case 'skipped':
      return [{ level: 'info', message: 'Action body had not begun yet; it never ran' }];
    case 'failed':
      return [{ level: 'error', message: `Action body failed: ${execution.body?.error ?? 'unknown error'}` }];
    default:
      return [];
  }
}

/**
 * Record `state` as the execution's latest, handed out to the agent, and where the handler's
 * `reply` says it names uploads (`./file-state.ts`).
 */
function handOut(execution: Execution, state: StateValue, reply: HandlerReply): void {
  execution.state = state;
  execution.uploadLocations?.add(reply.uploadLocations);
}

/** The task field that makes a handler thread report where the state it hands out names uploads. */
function uploadFolderOfTask(locations: UploadLocations | null | undefined): { uploadFolder?: string } {
  return locations === undefined || locations === null ? {} : { uploadFolder: locations.folder };
}

/**
 * The start of an execution of an action with file parameters that this process did not prepare:
 * its uploads are not here, so its author code cannot run; the agent stops it (`./file-state.ts`).
 */
function uploadsNotHere(state: StateValue): Reply {
  return {
    status: 200,
    body: {
      state,
      error: {
        title: 'Failed to start action.',
        detail: 'this extension process did not prepare this execution, so the files uploaded for it are not here (it was restarted since, or the prepare went to another instance); prepare it again',
      },
    },
  };
}

/** 0.042 ms → "42 µs"; 12.3456 → "12.3 ms". */
function formatMs(ms: number): string {
  return ms < 1 ? `${Math.round(ms * 1000)} µs` : `${Number(ms.toFixed(1))} ms`;
}

function prepareReply(reply: HandlerReply): Reply {
  const body = stateReply(reply, reply.state ?? {}, 'Failed to prepare.').body;
  if (UNAME_MESSAGE !== undefined) body['messages'] = [...((body['messages'] as Message[] | undefined) ?? []), UNAME_MESSAGE];
  return { status: 200, body };
}

/** HTTP 200 with the handler's result and state; on failure the wrapped error and the latest state. */
function stateReply(reply: HandlerReply, state: StateValue, phaseTitle: string): Reply {
  if (reply.ok) return { status: 200, body: { ...reply.result, state: reply.state ?? state } };
  return { status: 200, body: { state: reply.state ?? state, error: handlerErrorToWire(reply.error, phaseTitle) } };
}

function statusReply(reply: HandlerReply, state: StateValue, reports: Reports | undefined): Reply {
  const base = stateReply(reply, state, 'Failed to read status.').body;
  // A failed status handler leaves `completed` to the agent's default handling of `error`.
  if (!reply.ok) base['completed'] = false;
  return { status: 200, body: reports === undefined ? base : prependReports(base, reports) };
}

type Reports = { messages: Message[]; metrics: unknown[] };

/** Status of a stopped execution (reference §1.5.3 step 3). */
function stoppedStatus(reason: Reason, bodyError: string | undefined): Reply {
  if (reason === Reason.Agent) return { status: 200, body: { completed: true } };
  const error: ActionKitErrorBody = stoppedByExtensionForStatus(reason);
  if (reason === Reason.BodyFailed && bodyError !== undefined) error.detail = bodyError;
  return { status: 200, body: { completed: true, error } };
}

function stoppedByExtensionForStatus(reason: Reason): ActionKitErrorBody {
  return { title: `Action was stopped by extension: ${reasonText(reason)}`, status: 'errored' };
}

/** Agent stop after an extension-initiated stop (reference §1.5.4 step 3: no colon, no status). */
function stoppedByExtensionForStop(reason: Reason): Reply {
  return { status: 200, body: { error: { title: `Action was stopped by extension ${reasonText(reason)}` } } };
}

/**
 * The answer to an agent's stop from a finished outcome: the agent's own stop gets the author's
 * answer; a stop the extension gave up says that the rollback failed; another extension-initiated
 * stop gets the reference's "stopped by extension".
 */
function stopReplyFor(outcome: StopOutcome): Reply {
  if (outcome.givenUp === true) {
    const cause = [outcome.body['title'], outcome.body['detail']].filter((part) => typeof part === 'string').join(': ');
    return {
      status: 500,
      body: {
        title: 'Failed to stop action.',
        detail: `the stop (${reasonText(outcome.reason)}) failed on every attempt and was given up, so the action was not rolled back; last error: ${cause}`,
      },
    };
  }
  if (outcome.reason === Reason.Agent) return { status: outcome.httpStatus, body: outcome.body };
  return stoppedByExtensionForStop(outcome.reason);
}

function stopRunning(id: string): RuntimeError {
  return new RuntimeError(ErrorCode.Conflict, 409, `Execution ${id} was stopped by the agent`, 'the agent stopped this execution id, which this process did not know; a new execution needs a new executionId');
}

function shuttingDown(): RuntimeError {
  return new RuntimeError(ErrorCode.ShuttingDown, 503, 'Extension is shutting down', 'no new executions are accepted');
}
