/**
 * The handler lane's threads: where the author's prepare, start, status, stop and query handlers
 * run — short tasks, one per status request, so what a task costs the main thread counts.
 *
 * Plain `worker_threads` Workers with a dispatcher of our own, not a piscina pool (piscina runs
 * the rare, heavy large-request lane, `src/pool.ts`). A piscina round trip measured ~63 µs of
 * process CPU per task against ~23 µs for a bare port round trip: its task wrapping, bookkeeping
 * and `Atomics.waitAsync` wake-ups, on the main thread and on the worker, were ~17% of the main
 * thread's time per status request. Here a task is one message each way on the worker's own port
 * (`workers/handler-thread.ts`), one timer, and a FIFO queue on the main thread while every thread
 * is busy.
 *
 * One task per thread at a time. An idle thread waits for a message with its event loop turning,
 * so a timer or a keep-alive connection a handler left behind is serviced meanwhile (a `fetch`
 * after a pause would otherwise write into a connection the server closed).
 *
 * A handler that overruns its timeout — counted from when it starts on a thread, not while it
 * waits in the queue — has its thread terminated: a replacement starts at once and the task fails
 * with {@link HandlerTimedOut}. A thread that dies (an uncaught exception, `process.exit()`, out
 * of memory) fails only the task it ran and is replaced; one that dies idle is replaced and
 * logged. Queued tasks are never lost: they wait for the next free thread, the replacement too.
 *
 * Lifecycle of a thread: booting → idle ⇄ busy → ending (terminated after a timeout, or at close)
 * → exited; or, lost, idle/busy → exited → replaced. Every task settles exactly once.
 */
import { Worker } from 'node:worker_threads';
import { ErrorCode, RuntimeError } from '../errors.js';
import type { Logger } from '../logging.js';
import type { HandlerThreadBootData, HandlerThreadCommand, HandlerThreadEvent, Phase, WireHandlerReply, WireHandlerTask } from './protocol.js';

/** Settings of the handler lane's threads. */
export interface HandlerThreadSettings {
  boot: HandlerThreadBootData;
  threads: number;
  /** V8 old-space limit per thread, MiB; undefined = Node's default. */
  maxOldGenerationMb: number | undefined;
  logger: Logger;
}

/** Counters of the handler lane. */
export interface HandlerThreadStats {
  /** Threads of the lane (booting, idle, busy; not those terminated after a timeout). */
  threads: number;
  /** Tasks waiting for a thread. */
  queued: number;
  /** Tasks running on a thread now. */
  busy: number;
  /** Run time of the tasks that ran relative to the lane's capacity (threads × time since start), 0..1. */
  utilization: number;
  /** Threads replaced after a loss or a timeout (not at close). */
  replaced: number;
}

interface Thread {
  readonly worker: Worker;
  /** Settles when the thread loaded the action modules (rejects if it could not). */
  readonly ready: Promise<void>;
  booted: boolean;
  /** The task running on it. */
  job: Job | undefined;
  /** Terminated by us (a timeout, close): its tasks were settled then, its exit is expected. */
  ending: boolean;
  /** The first error it reported: what killed it. */
  error: unknown;
  readonly exited: Promise<void>;
}

/** One task, from {@link HandlerThreads.run} until it settles. */
interface Job {
  readonly id: number;
  readonly task: WireHandlerTask;
  readonly timeoutMs: number;
  readonly resolve: (reply: WireHandlerReply) => void;
  readonly reject: (error: RuntimeError) => void;
  /** It waited in the queue: its `ctx.signal` deadline is counted again when it starts. */
  queued: boolean;
  /** `performance.now()` when it started on its thread. */
  startedMs: number;
  timer: NodeJS.Timeout | undefined;
}

const threadFile = new URL('../../workers/handler-thread.js', import.meta.url);

/** The handler lane of one extension. */
export class HandlerThreads {
  private readonly settings: HandlerThreadSettings;
  /** The lane's threads: booting, idle or busy — not those terminated after a timeout. */
  private readonly threads = new Set<Thread>();
  /** Every thread that has not exited yet (what {@link close} waits for). */
  private readonly alive = new Set<Thread>();
  /** Booted threads without a task, the most recently used last. */
  private readonly idle: Thread[] = [];
  /** Tasks waiting for a thread, oldest first. */
  private readonly queue: Job[] = [];
  /** The threads started with the lane ({@link warmUp} waits for them). */
  private readonly first: Thread[] = [];
  private busy = 0;
  private nextJobId = 1;
  private closed = false;
  private replaced = 0;
  /** Run time of the tasks that ran (ms), since the lane started (`performance.now()`). */
  private runMs = 0;
  private readonly sinceMs = performance.now();
  /** Why a thread could not start, once one could not: with no thread left, tasks fail with it. */
  private bootFailure: unknown;

  constructor(settings: HandlerThreadSettings) {
    this.settings = settings;
    for (let i = 0; i < settings.threads; i++) this.first.push(this.spawn());
  }

  /** Resolves when every thread of the lane loaded the action modules; rejects if one could not. */
  async warmUp(): Promise<void> {
    await Promise.all(this.first.map((thread) => thread.ready));
  }

  /**
   * Run a handler task on the next free thread. Resolves with its reply; rejects with a
   * {@link RuntimeError}: {@link HandlerTimedOut} when it overran `timeoutMs` (counted from when it
   * starts on a thread), `WORKER_LOST` when its thread died, `SHUTTING_DOWN` after {@link close}.
   * A task that waited in the queue gets its `deadlineMs` counted again from its start (it is
   * modified in place: the caller made it for this call).
   */
  run(task: WireHandlerTask, timeoutMs: number): Promise<WireHandlerReply> {
    if (this.closed) return Promise.reject(notRun(task.phase));
    if (this.threads.size === 0) return Promise.reject(noThread(task.phase, this.bootFailure));
    return new Promise((resolve, reject) => {
      const job: Job = { id: this.nextJobId++, task, timeoutMs, resolve, reject, queued: false, startedMs: 0, timer: undefined };
      const thread = this.idle.pop();
      if (thread !== undefined) return this.begin(thread, job);
      job.queued = true;
      this.queue.push(job);
    });
  }

  /** Counters. */
  stats(): HandlerThreadStats {
    const capacityMs = (performance.now() - this.sinceMs) * this.settings.threads;
    return {
      threads: this.threads.size,
      queued: this.queue.length,
      busy: this.busy,
      utilization: capacityMs > 0 ? Math.min(1, this.runMs / capacityMs) : 0,
      replaced: this.replaced,
    };
  }

  /**
   * Start no more tasks: queued ones fail with the shutdown error, running ones are abandoned (they
   * fail as lost). Terminates every thread; resolves when all have exited — also those terminated
   * earlier after a timeout and still blocked in a native call.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) job.reject(notRun(job.task.phase));
    for (const thread of [...this.threads]) {
      const job = this.detach(thread);
      this.retire(thread);
      job?.reject(new RuntimeError(ErrorCode.WorkerLost, 500, 'Worker thread lost', `the ${job.task.phase} handler was abandoned: the extension is shutting down`));
    }
    await Promise.all([...this.alive].map((thread) => thread.exited));
  }

  /** Hand `job` to `thread` (idle, booted) under its timeout. */
  private begin(thread: Thread, job: Job): void {
    thread.job = job;
    this.busy++;
    if (job.queued) job.task.deadlineMs = Math.min(job.task.requestDeadlineMs ?? Number.POSITIVE_INFINITY, Date.now() + job.timeoutMs);
    job.startedMs = performance.now();
    job.timer = setTimeout(this.overran, job.timeoutMs, thread);
    const command: HandlerThreadCommand = { id: job.id, task: job.task };
    thread.worker.postMessage(command);
  }

  /** `thread` is free: the oldest queued task goes to it, or it waits — unless it is ending or dying. */
  private next(thread: Thread): void {
    if (thread.ending || thread.error !== undefined) return;
    const job = this.queue.shift();
    if (job !== undefined) this.begin(thread, job);
    else this.idle.push(thread);
  }

  /** Take the running task off `thread` (its timer cleared, its run time counted); undefined if none. */
  private detach(thread: Thread): Job | undefined {
    const job = thread.job;
    if (job === undefined) return undefined;
    thread.job = undefined;
    this.busy--;
    clearTimeout(job.timer);
    this.runMs += performance.now() - job.startedMs;
    return job;
  }

  /** A task overran its timeout: terminate its thread, start a replacement, fail the task. */
  private readonly overran = (thread: Thread): void => {
    const job = this.detach(thread);
    if (job === undefined) return;
    this.retire(thread);
    const { phase, actionId, executionId } = job.task;
    const { timeoutMs } = job;
    // A thread blocked in a native call exits only when the call returns.
    const slow = setTimeout(() => {
      this.settings.logger.error(
        { phase, action: actionId, executionId, timeoutMs },
        'the thread of a timed-out handler has not exited (blocked in a native call?); the next handler of its execution waits for it',
      );
    }, timeoutMs);
    void thread.exited.then(() => clearTimeout(slow));
    this.replace();
    job.reject(new HandlerTimedOut(`the ${phase} handler did not finish within ${timeoutMs} ms; its worker thread was terminated and replaced`, thread.exited));
  };

  /** Take `thread` out of the lane and terminate it; {@link close} still waits for its exit. */
  private retire(thread: Thread): void {
    if (thread.ending) return;
    thread.ending = true;
    this.threads.delete(thread);
    const at = this.idle.indexOf(thread);
    if (at >= 0) this.idle.splice(at, 1);
    void thread.worker.terminate();
  }

  /** A thread was lost or retired after a timeout: start another (not after close). */
  private replace(): void {
    if (this.closed) return;
    this.replaced++;
    this.spawn();
  }

  private spawn(): Thread {
    const { settings } = this;
    const worker = new Worker(threadFile, {
      workerData: settings.boot,
      ...(settings.maxOldGenerationMb === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: settings.maxOldGenerationMb } }),
    });
    let markReady!: () => void;
    let failBoot!: (error: unknown) => void;
    const ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failBoot = reject;
    });
    ready.catch(() => undefined); // a replacement nobody waits for may fail to boot: logged at its exit
    let markExited!: () => void;
    const exited = new Promise<void>((resolve) => (markExited = resolve));
    const thread: Thread = { worker, ready, booted: false, job: undefined, ending: false, error: undefined, exited };
    this.threads.add(thread);
    this.alive.add(thread);

    worker.on('message', (event: HandlerThreadEvent) => {
      if (event.id === undefined) {
        thread.booted = true;
        // Like an idle piscina thread, a booted one does not keep the process alive; a running
        // task's timer does, and a booting thread (it stays referenced until here).
        worker.unref();
        markReady();
        this.next(thread);
        return;
      }
      // A late answer of a task given up (it timed out, or close() abandoned it) finds another or none.
      if (thread.job?.id !== event.id) return;
      const job = this.detach(thread)!;
      this.next(thread);
      if (event.failure === undefined) job.resolve(event.reply);
      else job.reject(new RuntimeError(ErrorCode.Internal, 500, 'Internal Server Error', `the ${job.task.phase} handler's thread failed to answer: ${event.failure}`));
    });
    worker.on('error', (error) => {
      // It is dying: no task goes to it any more (its exit follows, and replaces it).
      thread.error ??= error;
      const at = this.idle.indexOf(thread);
      if (at >= 0) this.idle.splice(at, 1);
    });
    worker.on('exit', (code) => {
      this.threads.delete(thread);
      this.alive.delete(thread);
      const at = this.idle.indexOf(thread);
      if (at >= 0) this.idle.splice(at, 1);
      markExited();
      if (!thread.booted) {
        const error = thread.error ?? new Error(`handler thread exited with code ${code} while loading the actions`);
        failBoot(error);
        if (thread.ending) return; // terminated while booting (close)
        thread.ending = true;
        settings.logger.error({ err: error, code }, 'a handler thread failed to start');
        // Not replaced: it would fail again. With no thread left, nothing would take the queue.
        this.bootFailure = error;
        if (this.threads.size === 0) for (const job of this.queue.splice(0)) job.reject(noThread(job.task.phase, error));
        return;
      }
      if (thread.ending) return; // terminated by us: its task was settled then
      thread.ending = true;
      const job = this.detach(thread);
      if (job === undefined && !this.closed) settings.logger.error({ err: thread.error, code }, 'an idle handler thread exited; it was replaced');
      this.replace();
      job?.reject(workerLost(`the ${job.task.phase} handler`, thread.error ?? code));
    });
    return thread;
  }
}

/** The error of a task that did not run because the extension is shutting down. */
function notRun(phase: Phase): RuntimeError {
  return new RuntimeError(ErrorCode.ShuttingDown, 503, 'Extension is shutting down', `the ${phase} handler was not run`);
}

/** The error of a task for which no thread is left: none could start. */
function noThread(phase: Phase, cause: unknown): RuntimeError {
  const message = cause instanceof Error ? cause.message : String(cause);
  return new RuntimeError(ErrorCode.WorkerLost, 500, 'Worker thread lost', `the ${phase} handler was not run: no handler thread could start (${message})`);
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

/**
 * Explain a worker's death in words an operator can act on. `cause`: the error its thread reported
 * (a Worker's `error` event, or piscina's rejection), or the exit code of a thread that exited
 * without one (`process.exit()`).
 */
export function workerLost(what: string, cause: unknown): RuntimeError {
  const message = cause instanceof Error ? cause.message : String(cause);
  const code = (cause as { code?: unknown } | null)?.code;
  // piscina reports an exit as "worker exited with code: N".
  const exitCode = typeof cause === 'number' ? String(cause) : /^worker exited with code/.test(message) ? (/code: (-?\d+)/.exec(message)?.[1] ?? '?') : undefined;
  let detail: string;
  if (code === 'ERR_WORKER_OUT_OF_MEMORY') {
    detail = `${what} ran out of memory (worker resource limit); its worker thread was replaced`;
  } else if (exitCode !== undefined) {
    detail = `the worker thread running ${what} exited with code ${exitCode} (process.exit() in author code?); it was replaced`;
  } else {
    detail = `the worker thread running ${what} crashed: ${message}; it was replaced`;
  }
  return new RuntimeError(ErrorCode.WorkerLost, 500, 'Worker thread lost', detail);
}
