/**
 * The stop coordinator: the single consumer of the shared-memory stop-event queue.
 *
 * Every stop trigger — agent stop, duplicate agent stops, heartbeat timeout (watchdog thread),
 * SIGINT/SIGTERM/SIGUSR1, a failing body (body thread) — calls `ControlTable.requestStop`. The one
 * winner of its CAS enqueues the slot; this coordinator takes each event once (CAS StopRequested →
 * Stopping), so the author's `stop` runs at most once at a time and, on success, exactly once: the
 * block then leaves the stoppable states for good. Losers wait for the winner's outcome, which is
 * kept per execution while it runs and in the store's recent stops afterwards.
 *
 * Sequence of one stop: body (cooperative → grace → kill) → wait for the execution's in-flight
 * handler → author `stop` on a handler thread → remove uploaded files → Stopped and release
 * (generation + 1), or StopFailed (a later request retries).
 */
import type { JsonObject, Message } from '../action.js';
import { handlerErrorToWire, RuntimeError } from '../errors.js';
import type { Logger } from '../logging.js';
import type { WorkerPools } from '../pool.js';
import { StopEventConsumer } from '../shm/consumer.js';
import { clockMs, generationOf, Reason, reasonOf, reasonText, type ControlTable } from '../shm/table.js';
import type { BodyEnd, BodyLane } from './bodies.js';
import { prependReports, type Execution, type ExecutionStore, type StopOutcome } from './executions.js';
import type { HandlerTask } from './protocol.js';

/** What the coordinator needs from the rest of the runtime. */
export interface StopCoordinatorDeps {
  table: ControlTable;
  store: ExecutionStore;
  bodies: BodyLane;
  pools: WorkerPools;
  logger: Logger;
  stopGraceMs: number;
  handlerTimeoutMs: number;
  /** Remove an execution's upload folder (never throws). */
  removeUploads(execution: Execution): Promise<void>;
  /** Told when a stop attempt finished, before its waiters are answered (metrics; must be cheap). */
  onStopFinished?: (execution: Execution, reason: Reason, bodyEnd: BodyEnd, succeeded: boolean) => void;
}

/** Result of {@link StopCoordinator.stopAll}. */
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
  bodiesCooperative: number;
  bodiesKilled: number;
  /** Queue cells skipped because their producer died before publishing (should stay 0). */
  queueStalls: number;
}

/** Safety net: drain the queue at least this often even if a doorbell wake-up were missed. */
const IDLE_DRAIN_MS = 1000;

/**
 * Author stops in flight at once, per handler thread. A stop storm (SIGUSR1 with thousands of
 * executions) would otherwise put every author stop into the handler lane's FIFO queue at once,
 * and each status request — the agent's heartbeat — would wait behind all of them. Bounded, the
 * queue holds a few stops at a time and status requests interleave; the lane stays just as busy.
 */
const STOPS_IN_FLIGHT_PER_HANDLER_THREAD = 2;

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

/** Consumes stop events and runs each stop exactly once. */
export class StopCoordinator {
  readonly stats: StopStats = { stopHandlerCalls: 0, succeeded: 0, failed: 0, bodiesCooperative: 0, bodiesKilled: 0, queueStalls: 0 };
  private readonly deps: StopCoordinatorDeps;
  private running = false;
  private loop: Promise<void> | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly authorStops: Admission;

  constructor(deps: StopCoordinatorDeps) {
    this.deps = deps;
    this.authorStops = new Admission(Math.max(1, deps.pools.handlerThreads) * STOPS_IN_FLIGHT_PER_HANDLER_THREAD);
  }

  /** Start consuming the queue. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.consume();
  }

  /** Stop consuming after the stops in progress have finished. */
  async close(): Promise<void> {
    this.running = false;
    this.deps.table.ringDoorbell();
    await this.loop;
    await Promise.allSettled([...this.inFlight]);
  }

  /**
   * Request the stop of an active execution (main thread) and wait for the outcome that applies to
   * this request: the one of this stop if it won, else the one of the stop already under way.
   * `agentState` is the state the agent sent (used when the agent's request wins).
   */
  request(execution: Execution, reason: Reason, agentState?: JsonObject): Promise<StopOutcome> {
    const { won } = this.deps.table.requestStop(execution.slot, execution.generation, reason);
    if (won && reason === Reason.Agent) execution.agentStopState = agentState;
    return this.outcomeOf(execution);
  }

  /** Wait for the stop of `execution` under way (requested by any thread). */
  outcomeOf(execution: Execution): Promise<StopOutcome> {
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

  private async consume(): Promise<void> {
    const { table } = this.deps;
    const consumer = new StopEventConsumer(table);
    while (this.running) {
      // Read the doorbell before draining: a publication after this read changes it, so the wait
      // below returns at once instead of missing the event.
      const seen = table.doorbell();
      const pass = consumer.pass((slot, control) => this.onTaken(slot, control));
      if (pass.skipped || pass.recovered > 0) {
        this.stats.queueStalls += pass.skipped ? 1 : 0;
        this.deps.logger.error({ recovered: pass.recovered, skippedCell: pass.skipped }, 'stop queue: recovered stops whose producer died inside requestStop');
      }
      await table.waitDoorbell(seen, pass.headPending ? 5 : IDLE_DRAIN_MS);
    }
  }

  /** A stop taken by the consumer (CONTROL now Stopping): run it in the background. */
  private onTaken(slot: number, control: number): void {
    const execution = this.deps.store.atSlot(slot);
    if (execution === undefined || execution.generation !== generationOf(control)) {
      this.deps.logger.error({ slot, control }, 'stop event for a control block without its execution');
      return;
    }
    const run = this.runStop(execution, reasonOf(control)).catch((error: unknown) => {
      this.deps.logger.fatal({ err: error, executionId: execution.id }, 'stop coordinator bug');
    });
    this.inFlight.add(run);
    void run.finally(() => this.inFlight.delete(run));
  }

  private async runStop(execution: Execution, reason: Reason): Promise<void> {
    const { table, store, bodies, logger } = this.deps;
    const bodyEnd = await bodies.stop(execution, this.deps.stopGraceMs);
    if (bodyEnd.phase === 'killed') this.stats.bodiesKilled++;
    if (bodyEnd.phase === 'stopped') this.stats.bodiesCooperative++;
    const outcome = await execution.lock.run(() => this.invokeStop(execution, reason, bodyEnd));
    if (outcome.succeeded) await this.deps.removeUploads(execution);
    // Publish the end, release the block and answer every waiter in one synchronous step, so no
    // request can observe a finished stop whose execution is still registered.
    table.finish(execution.slot, execution.generation, outcome.succeeded);
    this.deps.onStopFinished?.(execution, reason, bodyEnd, outcome.succeeded);
    if (outcome.succeeded) {
      this.stats.succeeded++;
      store.release(execution, outcome);
    } else {
      this.stats.failed++;
      logger.warn({ executionId: execution.id, reason: reasonText(reason), error: outcome.body['title'] }, 'stop failed; a later stop request retries it');
    }
    execution.agentStopState = undefined;
    const pending = execution.pendingStop;
    execution.pendingStop = undefined;
    pending?.resolve(outcome);
  }

  private async invokeStop(execution: Execution, reason: Reason, bodyEnd: BodyEnd): Promise<StopOutcome> {
    const { action } = execution;
    const requestedBy = reason === Reason.Agent ? 'agent' : 'extension';
    const reports = execution.reports.drain();
    const bodyError = reason === Reason.BodyFailed ? execution.body?.error : undefined;
    let answer: AuthorStopAnswer = { succeeded: true, httpStatus: 200, body: {} };
    if (action.hasStopHandler) {
      this.stats.stopHandlerCalls++;
      answer = await this.authorStops.run(() => runAuthorStop(this.deps.pools, this.deps.handlerTimeoutMs, {
        actionId: action.id,
        executionId: execution.id,
        state: (requestedBy === 'agent' ? execution.agentStopState : undefined) ?? execution.state,
        body: {
          ...this.deps.bodies.info(execution),
          ...(bodyEnd.stopMs === undefined ? {} : { stopMs: bodyEnd.stopMs }),
          reports,
        },
        stop: { reason: reasonText(reason), requestedBy },
      }));
    }
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
}

/** The answer to a stop request, decided by the author's stop handler. */
export interface AuthorStopAnswer {
  succeeded: boolean;
  httpStatus: number;
  body: JsonObject;
}

/**
 * Run the author's stop on a handler thread. Success → 200 with its result; a handler error or a
 * lost worker → 500 `Failed to stop action.` (an ExtensionError passes through), as the reference.
 */
export async function runAuthorStop(
  pools: WorkerPools,
  handlerTimeoutMs: number,
  task: Omit<HandlerTask, 'phase' | 'deadlineMs'>,
): Promise<AuthorStopAnswer> {
  try {
    const reply = await pools.runHandler({ ...task, phase: 'stop', deadlineMs: Date.now() + handlerTimeoutMs }, handlerTimeoutMs);
    if (reply.ok) return { succeeded: true, httpStatus: 200, body: reply.result as JsonObject };
    return { succeeded: false, httpStatus: 500, body: { ...handlerErrorToWire(reply.error, 'Failed to stop action.') } };
  } catch (error) {
    const detail = error instanceof RuntimeError ? (error.detail ?? error.message) : String(error);
    return { succeeded: false, httpStatus: 500, body: { title: 'Failed to stop action.', detail } };
  }
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
          message: `Action body did not stop within the ${graceMs} ms grace period; its worker thread was terminated ${formatMs(end.stopMs ?? graceMs)} after the stop request`,
        },
      ];
    case 'skipped':
      return [{ level: 'info', message: 'Action body had not started yet; it was skipped' }];
    case 'failed':
      return [{ level: 'error', message: `Action body failed: ${execution.body?.error ?? 'unknown error'}` }];
    default:
      return [];
  }
}

/** 0.042 ms → "42 µs"; 12.3456 → "12.3 ms". */
function formatMs(ms: number): string {
  return ms < 1 ? `${Math.round(ms * 1000)} µs` : `${Number(ms.toFixed(1))} ms`;
}
