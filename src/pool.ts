/**
 * The two lanes of worker threads that run the author's prepare, start, status, stop and query
 * handlers — short tasks. (Bodies run on their own threads, `src/runtime/body-threads.ts`, so a
 * long-running body can never starve a lifecycle call.)
 *
 * The **handler lane** (`src/runtime/handler-threads.ts`) runs every handler whose state and
 * request are small: plain `worker_threads` Workers with a dispatcher of our own, one task per
 * thread, a FIFO queue on the main thread, a hung handler's thread terminated and replaced. It is
 * the hot path — a task per status request — and piscina's per-task cost there was measured (that
 * module says how much).
 *
 * The **large-request lane** (one thread, a piscina pool; the only importer of piscina) takes
 * everything about large JSON (`src/runtime/sealed.ts`): decoding request bodies above
 * `LARGE_JSON_BYTES`, checking sealed states, and running the handlers whose state or request is
 * sealed. A flood of large bodies then queues there, while the agent's small requests keep the
 * handler lane to themselves. The lane has a queue of its own in front of its thread
 * ({@link LaneQueue}): bounded, blind to nobody, and work for executions first. Its tasks are rare
 * and heavy, so piscina's cost per task does not matter there.
 *
 * `atomics: 'async'` on the large lane: an idle piscina thread waits for its next task with
 * `Atomics.waitAsync`, so its event loop keeps turning between tasks. With piscina's default
 * (`'sync'`, `Atomics.wait`) an idle thread is frozen: a keep-alive socket the server closed
 * meanwhile is not noticed, and the next handler's `fetch` writes into it and fails
 * (`UND_ERR_SOCKET`, `EPIPE`). The handler lane's threads wait for messages, which keeps their
 * event loops turning the same way.
 *
 * Every task of the large lane carries a kill switch; pulling it on a running task makes piscina
 * terminate its worker and start a replacement — the cure for a hung handler.
 */
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { ErrorCode, RuntimeError } from './errors.js';
import type { Logger } from './logging.js';
import type { JsonLocation } from './runtime/file-state.js';
import { HandlerThreads, HandlerTimedOut, workerLost } from './runtime/handler-threads.js';
import type {
  DecodedBody,
  DecodeReply,
  DecodeTask,
  HandlerReply,
  HandlerTask,
  HandlerThreadBootData,
  Phase,
  UploadCheckTask,
  WireHandlerReply,
  WireHandlerTask,
} from './runtime/protocol.js';
import { LARGE_JSON_BYTES, SealedJson, stateFromWire, wireState } from './runtime/sealed.js';

/** Settings of the two lanes. */
export interface PoolSettings {
  boot: HandlerThreadBootData;
  handlerThreads: number;
  /** V8 old-space limit per worker, MiB; undefined = Node's default. */
  maxOldGenerationMb: number | undefined;
  logger: Logger;
  /** Time a decode or upload check may take on the large-request lane before its thread is replaced (the handler timeout). */
  laneTaskTimeoutMs: number;
  /** Told when a handler task settles (metrics); runs on the main thread, must be cheap. */
  onHandlerSettled?: (phase: Phase, actionId: string, seconds: number, outcome: HandlerOutcome) => void;
}

/**
 * How a handler task ended: the handler returned (`ok`), threw or rejected (`error`), or its
 * worker was lost — crash, exit, out of memory, or terminated after overrunning its timeout (`lost`).
 */
export type HandlerOutcome = 'ok' | 'error' | 'lost';

/** Counters of the handler lane (for metrics and benchmarks). */
export interface PoolStats {
  handlerThreads: number;
  handlerQueue: number;
  /** Tasks running on a thread now (submitted, not settled, not queued). */
  handlerBusy: number;
  /** Run time of the tasks that ran relative to the lane's capacity (threads × time since start), 0..1. */
  handlerUtilization: number;
  /** Threads of either lane replaced after a loss or a timeout (not at close). */
  workersReplaced: number;
  /** Tasks waiting for the large-request lane (decodes, checks, handlers of sealed values). */
  largeRequestQueue: number;
  /** Tasks the large-request lane completed since start. */
  largeRequestTasks: number;
}

const handlersFile = fileURLToPath(new URL('../workers/handlers.js', import.meta.url));

/** Threads of the large-request lane: one, so that large requests use at most one core between them. */
const LARGE_REQUEST_THREADS = 1;

/**
 * Nice value of the large-request lane (Linux: per thread). Anyone can send large bodies; when the
 * cores are busy, the lane yields to the HTTP thread, the handler lane and the watchdog, which
 * serve the agent. On an idle machine it runs at full speed all the same.
 */
export const LARGE_REQUEST_NICE = 10;

/** Decodes waiting for the large-request lane at most; a further large body is answered 503 at once. */
export const MAX_QUEUED_DECODES = 16;

/**
 * The large-request lane's own queue in front of its one thread (piscina's would be unbounded,
 * first come first served, and blind to clients that left). One task on the thread at a time, so
 * a task's handler timeout counts from when it runs, not from when it was queued. Work for
 * executions — handlers and upload checks of sealed values — goes before decodes: a flood of
 * bodies from anyone cannot delay a stop the agent is waiting for by more than one decode. At most
 * {@link MAX_QUEUED_DECODES} decodes wait (a refused one is a 503, not memory held), and a decode
 * whose client went away before its turn is dropped.
 */
class LaneQueue {
  private busy = false;
  private readonly executionWork: (() => void)[] = [];
  private readonly decodes: { go: () => void; drop: (error: RuntimeError) => void; abandoned: () => boolean }[] = [];

  /** Wait for the lane's thread; call {@link done} when the task on it settled. */
  turn(kind: 'execution' | 'decode', abandoned: () => boolean = () => false): Promise<void> {
    if (!this.busy) {
      this.busy = true;
      return Promise.resolve();
    }
    if (kind === 'execution') return new Promise((resolve) => this.executionWork.push(resolve));
    if (this.decodes.length >= MAX_QUEUED_DECODES) this.dropAbandoned();
    if (this.decodes.length >= MAX_QUEUED_DECODES) {
      return Promise.reject(
        new RuntimeError(
          ErrorCode.CapacityExhausted,
          503,
          'Too many large requests',
          `${MAX_QUEUED_DECODES} request bodies larger than ${LARGE_JSON_BYTES} bytes are already waiting to be decoded; retry later`,
        ),
      );
    }
    return new Promise((go, drop) => this.decodes.push({ go, drop, abandoned }));
  }

  /** The task on the thread settled: the next one goes. */
  done(): void {
    const next = this.executionWork.shift();
    if (next !== undefined) return next();
    this.dropAbandoned();
    const decode = this.decodes.shift();
    if (decode !== undefined) return decode.go();
    this.busy = false;
  }

  /** Drop the decodes whose client went away: they never run, and hold no place. */
  private dropAbandoned(): void {
    const kept = this.decodes.filter((decode) => !decode.abandoned());
    if (kept.length === this.decodes.length) return;
    for (const decode of this.decodes) {
      if (!kept.includes(decode)) decode.drop(new RuntimeError(ErrorCode.Timeout, 503, 'Request abandoned', 'the client went away before its body was decoded'));
    }
    this.decodes.splice(0, this.decodes.length, ...kept);
  }

  /** Tasks waiting now (decodes and work for executions). */
  get waiting(): number {
    return this.executionWork.length + this.decodes.length;
  }
}

/** The handler lane's and the large-request lane's worker threads. */
export class WorkerPools {
  /** The handler lane (see the module comment). */
  private readonly handlers: HandlerThreads;
  /** The large-request lane (see the module comment) and its queue. */
  private readonly large: Piscina;
  private readonly laneQueue = new LaneQueue();
  private readonly settings: PoolSettings;
  /** Threads of the large-request lane replaced (the handler lane counts its own). */
  private largeReplaced = 0;
  private closing = false;
  /** Large-lane threads terminated after a timeout that have not exited yet (piscina no longer lists them). */
  private readonly terminating = new Set<Worker>();

  constructor(settings: PoolSettings) {
    this.settings = settings;
    this.handlers = new HandlerThreads({
      boot: { ...settings.boot, nice: 0 },
      threads: settings.handlerThreads,
      maxOldGenerationMb: settings.maxOldGenerationMb,
      logger: settings.logger,
    });
    this.large = this.largeLane();
  }

  private largeLane(): Piscina {
    const { settings } = this;
    const boot: HandlerThreadBootData = { ...settings.boot, nice: LARGE_REQUEST_NICE };
    const pool = new Piscina({
      filename: handlersFile,
      name: 'default',
      workerData: boot,
      minThreads: LARGE_REQUEST_THREADS,
      maxThreads: LARGE_REQUEST_THREADS,
      idleTimeout: Number.POSITIVE_INFINITY,
      concurrentTasksPerWorker: 1,
      atomics: 'async',
      ...(settings.maxOldGenerationMb === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: settings.maxOldGenerationMb } }),
    });
    // piscina emits 'error' for a worker failure with no task attached; unhandled it would kill the process.
    pool.on('error', (error: unknown) => settings.logger.error({ lane: 'large-requests', err: error }, 'worker thread failed outside a task'));
    pool.on('workerDestroy', () => {
      if (!this.closing) this.largeReplaced++;
    });
    return pool;
  }

  /**
   * Wait until every thread of both lanes has loaded the action modules (the handler lane's
   * threads say `ready`; the large lane gets a no-op `ping` task), so the first execution does not
   * wait for a thread to boot and a module that fails to load on a worker fails start-up instead
   * of the first request.
   */
  async warmUp(): Promise<void> {
    const pings = Array.from({ length: LARGE_REQUEST_THREADS }, () => this.large.run(null, { name: 'ping' }));
    await Promise.all([this.handlers.warmUp(), ...pings]);
  }

  /** Threads of the handler lane. */
  get handlerThreads(): number {
    return this.settings.handlerThreads;
  }

  /**
   * Run a handler. Resolves with the handler's reply; rejects with a {@link RuntimeError}
   * (`WORKER_LOST`) when its worker crashed, exited, ran out of memory, or was terminated because
   * the handler overran `timeoutMs` ({@link HandlerTimedOut}) — on either lane counted from when
   * the handler starts on its thread, not while it waits for one.
   */
  async runHandler(task: HandlerTask, timeoutMs: number): Promise<HandlerReply> {
    // After close() no handler may start: a thread started for it would be one nobody ends.
    if (this.closing) throw new RuntimeError(ErrorCode.ShuttingDown, 503, 'Extension is shutting down', `the ${task.phase} handler was not run`);
    const { state, request, ...fields } = task;
    const wire: WireHandlerTask = { ...fields, ...wireState(state), ...(request instanceof SealedJson ? { sealedRequest: request.bytes } : request === undefined ? {} : { request }) };
    // Anything sealed is large: its handler runs on the large-request lane, in its turn.
    if (wire.sealedState === undefined && wire.sealedRequest === undefined) return this.runOnHandlerLane(wire, task, timeoutMs);
    await this.laneQueue.turn('execution');
    try {
      if (this.closing) throw new RuntimeError(ErrorCode.ShuttingDown, 503, 'Extension is shutting down', `the ${task.phase} handler was not run`);
      // Its time counts from now, not from when it joined the queue (`ctx.signal` as the kill timer).
      const deadlineMs = Math.min(task.requestDeadlineMs ?? Number.POSITIVE_INFINITY, Date.now() + timeoutMs);
      return await this.runOnLargeLane({ ...wire, deadlineMs }, task, timeoutMs);
    } finally {
      this.laneQueue.done();
    }
  }

  /**
   * Run a handler on the handler lane: its dispatcher keeps the timer (counted from when the task
   * starts on a thread) and replaces a thread that timed out or was lost. This runs on every status
   * request: nothing here but the await and the metrics call.
   */
  private async runOnHandlerLane(wire: WireHandlerTask, task: HandlerTask, timeoutMs: number): Promise<HandlerReply> {
    const startedMs = performance.now();
    let outcome: HandlerOutcome = 'lost';
    try {
      const reply = await this.handlers.run(wire, timeoutMs);
      outcome = reply.ok ? 'ok' : 'error';
      return fromWire(reply);
    } finally {
      this.settings.onHandlerSettled?.(task.phase, task.actionId, (performance.now() - startedMs) / 1000, outcome);
    }
  }

  /** Run a handler on the large-request lane under its timeout (see {@link runHandler}). */
  private async runOnLargeLane(wire: WireHandlerTask, task: HandlerTask, timeoutMs: number): Promise<HandlerReply> {
    // A kill switch and a plain timer, not `AbortSignal.timeout()` (~20 µs per call: weak
    // references, finalization) nor an AbortController (an EventTarget per task).
    const pool = this.large;
    const signal = new KillSwitch();
    let threadExited: Promise<void> | undefined;
    const timer = setTimeout(() => (threadExited = this.pullAndWatch(pool, signal, task, timeoutMs)), timeoutMs);
    const startedMs = performance.now();
    let outcome: HandlerOutcome = 'lost';
    try {
      const reply = (await pool.run(wire, { signal })) as WireHandlerReply;
      outcome = reply.ok ? 'ok' : 'error';
      return fromWire(reply);
    } catch (error) {
      if (signal.aborted) {
        throw new HandlerTimedOut(
          `the ${task.phase} handler did not finish within ${timeoutMs} ms; its worker thread was terminated and replaced`,
          threadExited ?? Promise.resolve(),
        );
      }
      throw workerLost(`the ${task.phase} handler`, error);
    } finally {
      clearTimeout(timer);
      this.settings.onHandlerSettled?.(task.phase, task.actionId, (performance.now() - startedMs) / 1000, outcome);
    }
  }

  /**
   * Pull a running task's kill switch and resolve once the thread piscina terminates for it has
   * exited. piscina removes that thread from its list synchronously when the switch is pulled: it
   * is the one missing afterwards. A thread blocked in a native call exits only when the call
   * returns: after another `timeoutMs` that is logged.
   */
  private async pullAndWatch(pool: Piscina, signal: KillSwitch, task: HandlerTask, timeoutMs: number): Promise<void> {
    const before = [...pool.threads];
    signal.pull();
    const after = new Set(pool.threads);
    const gone = before.filter((thread) => !after.has(thread));
    const exited = Promise.all(
      gone.map((thread) => {
        // piscina forgot it; close() must still wait for it (process.exit() would join it).
        this.terminating.add(thread);
        return new Promise<void>((resolve) =>
          thread.once('exit', () => {
            this.terminating.delete(thread);
            resolve();
          }),
        );
      }),
    );
    const slow = setTimeout(() => {
      this.settings.logger.error(
        { phase: task.phase, action: task.actionId, executionId: task.executionId, timeoutMs },
        'the thread of a timed-out handler has not exited (blocked in a native call?); the next handler of its execution waits for it',
      );
    }, timeoutMs);
    await exited;
    clearTimeout(slow);
  }

  /**
   * Decode a large request body on the large-request lane (its bytes are transferred, not
   * copied), in its turn ({@link LaneQueue}: 503 when too many wait; dropped when `abandoned()`
   * by then; `ofExecution`: a body of an execution this process holds, before anonymous ones).
   * Rejects with the {@link RuntimeError} the main thread would have answered for the same body
   * (400), with the queue's 503, or when the lane's thread was lost.
   */
  async decode(task: DecodeTask, abandoned?: () => boolean, ofExecution = false): Promise<DecodedBody> {
    const transferList = task.bytes === undefined ? [] : [task.bytes.buffer as ArrayBuffer];
    // The body of an execution this process holds (the agent's) is work for an execution.
    const reply = await this.onLane(ofExecution ? 'execution' : 'decode', 'the decoding of a large request body', abandoned, (signal) => this.large.run(task, { name: 'decode', transferList, signal }) as Promise<DecodeReply>);
    if (!reply.ok) throw new RuntimeError(reply.error.code as ErrorCode, reply.error.httpStatus, reply.error.title, reply.error.detail);
    return reply;
  }

  /** Rule 2 of `src/runtime/file-state.ts` for a sealed state, on the large-request lane: the first location not kept, or undefined. */
  async uploadViolation(state: SealedJson, folder: string, locations: JsonLocation[]): Promise<JsonLocation | undefined> {
    const task: UploadCheckTask = { sealedState: state.bytes, folder, locations };
    return this.onLane('execution', 'the upload check of a large state', undefined, (signal) => this.large.run(task, { name: 'uploadViolation', signal }) as Promise<JsonLocation | undefined>);
  }

  /**
   * Run `job` on the large-request lane in its turn, under the lane's task timeout (its kill
   * switch: past it, piscina replaces the thread, and the queue goes on); a lost thread is a
   * WORKER_LOST error naming `what`.
   */
  private async onLane<T>(kind: 'execution' | 'decode', what: string, abandoned: (() => boolean) | undefined, job: (signal: KillSwitch) => Promise<T>): Promise<T> {
    if (this.closing) throw new RuntimeError(ErrorCode.ShuttingDown, 503, 'Extension is shutting down', `${what} did not run`);
    await this.laneQueue.turn(kind, abandoned);
    const signal = new KillSwitch();
    const timeoutMs = this.settings.laneTaskTimeoutMs;
    const timer = setTimeout(() => signal.pull(), timeoutMs);
    try {
      if (this.closing) throw new RuntimeError(ErrorCode.ShuttingDown, 503, 'Extension is shutting down', `${what} did not run`);
      return await job(signal);
    } catch (error) {
      if (error instanceof RuntimeError) throw error;
      if (signal.aborted) throw new RuntimeError(ErrorCode.WorkerLost, 500, 'Worker thread lost', `${what} did not finish within ${timeoutMs} ms; the large-request lane's thread was replaced`);
      throw workerLost(what, error);
    } finally {
      clearTimeout(timer);
      this.laneQueue.done();
    }
  }

  /** Lane statistics. */
  stats(): PoolStats {
    const handlers = this.handlers.stats();
    return {
      handlerThreads: handlers.threads,
      handlerQueue: handlers.queued,
      handlerBusy: handlers.busy,
      handlerUtilization: handlers.utilization,
      workersReplaced: handlers.replaced + this.largeReplaced,
      largeRequestQueue: this.laneQueue.waiting,
      largeRequestTasks: this.large.completed,
    };
  }

  /**
   * Terminate every worker — also those already given up after a timeout — and resolve when all
   * have exited. Queued handlers fail with the shutdown error, running ones are abandoned; call
   * after executions were stopped.
   */
  async close(): Promise<void> {
    this.closing = true;
    const abandoned = [...this.terminating].map((thread) => new Promise<void>((resolve) => thread.once('exit', () => resolve())));
    await Promise.allSettled([this.handlers.close(), this.large.destroy(), ...abandoned]);
  }
}

/** A handler's reply as the main thread hands it on: a sealed state as its `SealedJson`. */
function fromWire(wire: WireHandlerReply): HandlerReply {
  const { state, sealedState, ...reply } = wire;
  const handedOut = stateFromWire({ state, sealedState });
  return handedOut === undefined ? reply : { ...reply, state: handedOut };
}

/**
 * piscina's cancellation hook for one task in its event-emitter form (`once`/`off`): the cheapest
 * object piscina accepts as a task's signal. {@link KillSwitch.pull} makes piscina reject the task
 * and, if it is running, terminate and replace its worker.
 */
class KillSwitch {
  aborted = false;
  private listener: (() => void) | undefined;

  once(_event: 'abort', listener: () => void): void {
    this.listener = listener;
  }

  off(_event: 'abort', _listener: () => void): void {
    this.listener = undefined;
  }

  /** piscina calls this name (the EventEmitter one) to detach. */
  removeListener(event: 'abort', listener: () => void): void {
    this.off(event, listener);
  }

  pull(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.listener?.();
  }
}

/** Where the lifecycle has always found it. */
export { HandlerTimedOut };
