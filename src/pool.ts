/**
 * The handler lane: a piscina pool running the author's prepare, start, status, stop and query
 * handlers — short tasks. The only module that imports piscina. (Bodies run on their own threads,
 * `src/runtime/body-threads.ts`, so a long-running body can never starve a lifecycle call.)
 *
 * `atomics: 'async'`: an idle handler thread waits for its next task with `Atomics.waitAsync`, so
 * its event loop keeps turning between tasks. With piscina's default (`'sync'`, `Atomics.wait`)
 * an idle thread is frozen: a keep-alive socket the server closed meanwhile is not noticed, and the
 * next handler's `fetch` writes into it and fails (`UND_ERR_SOCKET`, `EPIPE`).
 *
 * Every task carries a kill switch; pulling it on a running task makes piscina terminate its
 * worker and start a replacement — the cure for a hung handler.
 *
 * A second pool of the same worker, the **large-request lane** (one thread), takes everything about
 * large JSON (`src/runtime/sealed.ts`): decoding request bodies above `LARGE_JSON_BYTES`, checking
 * sealed states, and running the handlers whose state or request is sealed. A flood of large
 * bodies then queues there, while the agent's small requests keep the handler lane to themselves.
 * The lane has a queue of its own in front of its thread ({@link LaneQueue}): bounded, blind to
 * nobody, and work for executions first.
 */
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { ErrorCode, RuntimeError } from './errors.js';
import type { Logger } from './logging.js';
import type { JsonLocation } from './runtime/file-state.js';
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

/** Settings of the handler lane. */
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
  /** piscina's `utilization`: mean run time of completed tasks relative to the lane's capacity since start. */
  handlerUtilization: number;
  workersReplaced: number;
  /** Tasks waiting for the large-request lane (decodes, checks, handlers of sealed values). */
  largeRequestQueue: number;
  /** Of those, the work for executions (handlers and upload checks of sealed values, the agent's decodes): it goes before the other decodes. */
  largeRequestQueueForExecutions: number;
  /** Tasks the large-request lane completed since start. */
  largeRequestTasks: number;
}

/** The task module of both lanes: the handlers' CommonJS entry (see there why not `handlers.js` itself). */
export const HANDLERS_TASK_MODULE = fileURLToPath(new URL('../workers/handlers-entry.cjs', import.meta.url));

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
 * executions — handlers and upload checks of sealed values, decodes of the agent's bodies — goes
 * before the other decodes, first come first served among itself: a flood of bodies from anyone
 * delays each such task by one anonymous decode at most (the one on the thread when it joined).
 * An agent's large stop is up to four such tasks (decode, an upload check before and one under
 * its execution's lock for a file action, handler), each joining when the lifecycle gets to it,
 * so it may wait for one anonymous decode before each — never for the flood. At most
 * {@link MAX_QUEUED_DECODES} anonymous decodes wait (a refused one is a 503, not memory held);
 * the agent's decodes are bounded by their read turns (`MAX_LARGE_BODIES_READ`). A decode of
 * either kind whose client went away before its turn is dropped: it never runs, and its bytes
 * are not held (the app gives the agent's stops no such test: a stop the agent sent always runs).
 */
class LaneQueue {
  private busy = false;
  private readonly executionWork: Waiting[] = [];
  private readonly decodes: Waiting[] = [];

  /**
   * Wait for the lane's thread; call {@link done} when the task on it settled. `abandoned`: the
   * request of a decode whose client may leave (the task is then dropped, never run).
   */
  turn(kind: 'execution' | 'decode', abandoned: () => boolean = () => false): Promise<void> {
    if (!this.busy) {
      this.busy = true;
      return Promise.resolve();
    }
    // Before anything joins: what nobody waits for any more holds no place (and no bytes).
    this.dropAbandoned();
    if (kind === 'decode' && this.decodes.length >= MAX_QUEUED_DECODES) {
      return Promise.reject(
        new RuntimeError(
          ErrorCode.CapacityExhausted,
          503,
          'Too many large requests',
          `${MAX_QUEUED_DECODES} request bodies larger than ${LARGE_JSON_BYTES} bytes are already waiting to be decoded; retry later`,
        ),
      );
    }
    return new Promise((go, drop) => (kind === 'execution' ? this.executionWork : this.decodes).push({ go, drop, abandoned }));
  }

  /** The task on the thread settled: the next one goes. */
  done(): void {
    this.dropAbandoned();
    const next = this.executionWork.shift() ?? this.decodes.shift();
    if (next !== undefined) return next.go();
    this.busy = false;
  }

  /** Drop the tasks whose client went away: they never run, and hold no place. */
  private dropAbandoned(): void {
    for (const queue of [this.executionWork, this.decodes]) {
      const kept = queue.filter((waiting) => !waiting.abandoned());
      if (kept.length === queue.length) continue;
      for (const waiting of queue) {
        if (!kept.includes(waiting)) waiting.drop(abandonedDecode());
      }
      queue.splice(0, queue.length, ...kept);
    }
  }

  /** Tasks waiting now (decodes and work for executions). */
  get waiting(): number {
    return this.executionWork.length + this.decodes.length;
  }

  /** Work for executions waiting now. */
  get waitingForExecutions(): number {
    return this.executionWork.length;
  }
}

/** A task waiting for the lane: `go` gives it the thread, `drop` refuses it once `abandoned()`. */
interface Waiting {
  go: () => void;
  drop: (error: RuntimeError) => void;
  abandoned: () => boolean;
}

type LoadBalancer = NonNullable<NonNullable<ConstructorParameters<typeof Piscina>[0]>['loadBalancer']>;

/**
 * piscina's task placement, restricted to threads that have reported ready (loaded the handlers).
 *
 * Why: when a thread frees and tasks wait, piscina offers them to every thread, the ones still
 * booting first, and its default balancer takes the first idle one. A replacement thread that is
 * still loading would get the task and run it only once loaded, while the task's kill timer
 * (`runOn`) runs from its submission: the load counted against a handler timeout, the kill switch
 * terminated the loading thread, its replacement got the next task — one overrun became a cascade
 * of failed calls, with a ready thread free all along. A task offered only to booting threads
 * waits in piscina's queue; piscina offers the queue again when a thread becomes ready.
 *
 * Ready threads are the ones piscina announced with `workerCreate`: for a replacement, piscina
 * 5.3 emits it on the thread's ready message, just before it offers the queue to the thread (a
 * timing its docs do not promise: `test/e2e/handler-lane.test.ts` holds a replacement while it
 * loads and would see a change); the first threads are announced at once (start-up's warm-up waits
 * for them to load). One task per thread (`concurrentTasksPerWorker: 1`): an idle thread is one with
 * no task.
 */
class ReadyThreads {
  private readonly ids = new Set<number>();

  /** Follow `pool`'s announcements: call right after constructing it (its first threads are announced a microtask later). */
  watch(pool: Piscina): void {
    pool.on('workerCreate', (worker: { id: number }) => this.ids.add(worker.id));
  }

  /** The balancer to construct the pool with: the first ready thread without a task, or none (the task waits). */
  readonly balancer: LoadBalancer = (_task, workers) => {
    // Ids of threads gone stay behind (a destroyed thread's id may already read -1): drop them now and then.
    if (this.ids.size > 2 * workers.length + 8) {
      const live = new Set(workers.map((worker) => worker.id));
      for (const id of this.ids) if (!live.has(id)) this.ids.delete(id);
    }
    for (const worker of workers) {
      if (worker.currentUsage === 0 && this.ids.has(worker.id)) return worker;
    }
    return null;
  };
}

/** The handler lane's worker threads. */
export class WorkerPools {
  private readonly handlers: Piscina;
  /** The large-request lane (see the module comment) and its queue. */
  private readonly large: Piscina;
  private readonly laneQueue = new LaneQueue();
  private readonly settings: PoolSettings;
  private replaced = 0;
  private closing = false;
  /** Threads terminated after a timeout that have not exited yet (piscina no longer lists them). */
  private readonly terminating = new Set<Worker>();
  /** Tasks submitted and not yet settled (queued or running). */
  private handlersInFlight = 0;

  constructor(settings: PoolSettings) {
    this.settings = settings;
    this.handlers = this.lane('default', settings.handlerThreads, 0);
    this.large = this.lane('large-requests', LARGE_REQUEST_THREADS, LARGE_REQUEST_NICE);
  }

  private lane(name: string, threads: number, nice: number): Piscina {
    const { settings } = this;
    const boot: HandlerThreadBootData = { ...settings.boot, nice };
    const ready = new ReadyThreads();
    const pool = new Piscina({
      filename: HANDLERS_TASK_MODULE,
      name: 'default',
      workerData: boot,
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: Number.POSITIVE_INFINITY,
      concurrentTasksPerWorker: 1,
      loadBalancer: ready.balancer,
      atomics: 'async',
      ...(settings.maxOldGenerationMb === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: settings.maxOldGenerationMb } }),
    });
    ready.watch(pool);
    // piscina emits 'error' for a worker failure with no task attached; unhandled it would kill the process.
    pool.on('error', (error: unknown) => settings.logger.error({ lane: name, err: error }, 'worker thread failed outside a task'));
    pool.on('workerDestroy', () => {
      if (!this.closing) this.replaced++;
    });
    return pool;
  }

  /**
   * Wait until every handler thread has loaded the action modules (a no-op `ping` task per
   * thread), so the first execution does not wait for a thread to boot and a module that fails to
   * load on a worker fails start-up instead of the first request.
   */
  async warmUp(): Promise<void> {
    const ping = (pool: Piscina, threads: number): Promise<unknown>[] => Array.from({ length: threads }, () => pool.run(null, { name: 'ping' }));
    await Promise.all([...ping(this.handlers, this.settings.handlerThreads), ...ping(this.large, LARGE_REQUEST_THREADS)]);
  }

  /** Threads of the handler lane. */
  get handlerThreads(): number {
    return this.settings.handlerThreads;
  }

  /**
   * Run a handler. Resolves with the handler's reply; rejects with a {@link RuntimeError}
   * (`WORKER_LOST`) when its worker crashed, exited, ran out of memory, or was terminated because
   * the handler overran `timeoutMs`.
   */
  async runHandler(task: HandlerTask, timeoutMs: number): Promise<HandlerReply> {
    // A kill switch and a plain timer, not `AbortSignal.timeout()` (~20 µs per call: weak
    // references, finalization) nor an AbortController (an EventTarget per task): this runs on
    // every status request.
    this.assertOpen(`the ${task.phase} handler was not run`);
    const { state, request, ...fields } = task;
    const wire: WireHandlerTask = { ...fields, ...wireState(state), ...(request instanceof SealedJson ? { sealedRequest: request.bytes } : request === undefined ? {} : { request }) };
    // Anything sealed is large: its handler runs on the large-request lane, in its turn.
    if (wire.sealedState === undefined && wire.sealedRequest === undefined) return this.runOn(this.handlers, wire, task, timeoutMs);
    await this.laneQueue.turn('execution');
    try {
      this.assertOpen(`the ${task.phase} handler was not run`);
      // Its time counts from now, not from when it joined the queue (`ctx.signal` as the kill timer).
      const deadlineMs = Math.min(task.requestDeadlineMs ?? Number.POSITIVE_INFINITY, Date.now() + timeoutMs);
      return await this.runOn(this.large, { ...wire, deadlineMs }, task, timeoutMs);
    } finally {
      this.laneQueue.done();
    }
  }

  /** Run a handler on `pool` under its timeout (see {@link runHandler}). */
  private async runOn(pool: Piscina, wire: WireHandlerTask, task: HandlerTask, timeoutMs: number): Promise<HandlerReply> {
    const signal = new KillSwitch();
    let threadExited: Promise<void> | undefined;
    const timer = setTimeout(() => (threadExited = this.pullAndWatch(pool, signal, task, timeoutMs)), timeoutMs);
    const startedMs = performance.now();
    let outcome: HandlerOutcome = 'lost';
    // The handler lane's counters (stats()) count its own tasks only.
    const counted = pool === this.handlers;
    if (counted) this.handlersInFlight++;
    try {
      const { state: replyState, sealedState, ...reply } = (await pool.run(wire, { signal })) as WireHandlerReply;
      outcome = reply.ok ? 'ok' : 'error';
      const handedOut = stateFromWire({ state: replyState, sealedState });
      return handedOut === undefined ? reply : { ...reply, state: handedOut };
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
      if (counted) this.handlersInFlight--;
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
    this.assertOpen(`${what} did not run`);
    await this.laneQueue.turn(kind, abandoned);
    const signal = new KillSwitch();
    const timeoutMs = this.settings.laneTaskTimeoutMs;
    const timer = setTimeout(() => signal.pull(), timeoutMs);
    try {
      this.assertOpen(`${what} did not run`);
      // Its turn came at once, or as it was given up: a decode nobody waits for any more never runs.
      if (abandoned?.() === true) throw abandonedDecode();
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

  /** After close() nothing may start on a lane (piscina would start a thread for it that nobody ends): `notRun` says what. */
  private assertOpen(notRun: string): void {
    if (this.closing) throw new RuntimeError(ErrorCode.ShuttingDown, 503, 'Extension is shutting down', notRun);
  }

  /** Lane statistics. */
  stats(): PoolStats {
    return {
      handlerThreads: this.handlers.threads.length,
      handlerQueue: this.handlers.queueSize,
      handlerBusy: Math.max(0, this.handlersInFlight - this.handlers.queueSize),
      handlerUtilization: this.handlers.utilization,
      workersReplaced: this.replaced,
      largeRequestQueue: this.laneQueue.waiting,
      largeRequestQueueForExecutions: this.laneQueue.waitingForExecutions,
      largeRequestTasks: this.large.completed,
    };
  }

  /**
   * Terminate every worker — also those piscina already gave up after a timeout — and resolve when
   * all have exited. Running tasks are abandoned; call after executions were stopped.
   */
  async close(): Promise<void> {
    this.closing = true;
    const abandoned = [...this.terminating].map((thread) => new Promise<void>((resolve) => thread.once('exit', () => resolve())));
    await Promise.allSettled([this.handlers.destroy(), this.large.destroy(), ...abandoned]);
  }
}

/** A decode dropped because its answer can no longer matter. */
function abandonedDecode(): RuntimeError {
  return new RuntimeError(ErrorCode.Timeout, 503, 'Request abandoned', 'the request was answered (its Request-Timeout passed) or its client went away before its body was decoded');
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

/**
 * A handler overran its timeout: its thread was terminated. `threadExited` settles once that
 * thread is really gone — a thread blocked in a native call (a synchronous child process) outlives
 * the rejection. Whoever serialises an execution's handlers waits for it before running the next.
 */
export class HandlerTimedOut extends RuntimeError {
  readonly threadExited: Promise<void>;

  constructor(detail: string, threadExited: Promise<void>) {
    super(ErrorCode.WorkerLost, 500, 'Handler timed out', detail);
    this.threadExited = threadExited;
  }
}

/** Explain a worker's death in words an operator can act on. */
function workerLost(what: string, error: unknown): RuntimeError {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  let detail: string;
  if (code === 'ERR_WORKER_OUT_OF_MEMORY') {
    detail = `${what} ran out of memory (worker resource limit); its worker thread was replaced`;
  } else if (/^worker exited with code/.test(message)) {
    const exitCode = /code: (-?\d+)/.exec(message)?.[1] ?? '?';
    detail = `the worker thread running ${what} exited with code ${exitCode} (process.exit() in author code?); it was replaced`;
  } else {
    detail = `the worker thread running ${what} crashed: ${message}; it was replaced`;
  }
  return new RuntimeError(ErrorCode.WorkerLost, 500, 'Worker thread lost', detail);
}
