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
 */
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { ErrorCode, RuntimeError } from './errors.js';
import type { Logger } from './logging.js';
import type { HandlerReply, HandlerTask, HandlerThreadBootData, Phase } from './runtime/protocol.js';

/** Settings of the handler lane. */
export interface PoolSettings {
  boot: HandlerThreadBootData;
  handlerThreads: number;
  /** V8 old-space limit per worker, MiB; undefined = Node's default. */
  maxOldGenerationMb: number | undefined;
  logger: Logger;
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
}

const handlersFile = fileURLToPath(new URL('../workers/handlers.js', import.meta.url));

/** The handler lane's worker threads. */
export class WorkerPools {
  private readonly handlers: Piscina<HandlerTask, HandlerReply>;
  private readonly settings: PoolSettings;
  private replaced = 0;
  private closing = false;
  /** Threads terminated after a timeout that have not exited yet (piscina no longer lists them). */
  private readonly terminating = new Set<Worker>();
  /** Tasks submitted and not yet settled (queued or running). */
  private handlersInFlight = 0;

  constructor(settings: PoolSettings) {
    this.settings = settings;
    this.handlers = new Piscina({
      filename: handlersFile,
      name: 'default',
      workerData: settings.boot,
      minThreads: settings.handlerThreads,
      maxThreads: settings.handlerThreads,
      idleTimeout: Number.POSITIVE_INFINITY,
      concurrentTasksPerWorker: 1,
      atomics: 'async',
      ...(settings.maxOldGenerationMb === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: settings.maxOldGenerationMb } }),
    });
    // piscina emits 'error' for a worker failure with no task attached; unhandled it would kill the process.
    this.handlers.on('error', (error: unknown) => settings.logger.error({ lane: 'handlers', err: error }, 'worker thread failed outside a task'));
    this.handlers.on('workerDestroy', () => {
      if (!this.closing) this.replaced++;
    });
  }

  /**
   * Wait until every handler thread has loaded the action modules (a no-op `ping` task per
   * thread), so the first execution does not wait for a thread to boot and a module that fails to
   * load on a worker fails start-up instead of the first request.
   */
  async warmUp(): Promise<void> {
    await Promise.all(Array.from({ length: this.settings.handlerThreads }, () => this.handlers.run(null as unknown as HandlerTask, { name: 'ping' })));
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
    // After close() no handler may start: piscina would start a new thread for it that nobody ends.
    if (this.closing) throw new RuntimeError(ErrorCode.ShuttingDown, 503, 'Extension is shutting down', `the ${task.phase} handler was not run`);
    const signal = new KillSwitch();
    let threadExited: Promise<void> | undefined;
    const timer = setTimeout(() => (threadExited = this.pullAndWatch(signal, task, timeoutMs)), timeoutMs);
    const startedMs = performance.now();
    let outcome: HandlerOutcome = 'lost';
    this.handlersInFlight++;
    try {
      const reply = await this.handlers.run(task, { signal });
      outcome = reply.ok ? 'ok' : 'error';
      return reply;
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
      this.handlersInFlight--;
      this.settings.onHandlerSettled?.(task.phase, task.actionId, (performance.now() - startedMs) / 1000, outcome);
    }
  }

  /**
   * Pull a running task's kill switch and resolve once the thread piscina terminates for it has
   * exited. piscina removes that thread from its list synchronously when the switch is pulled: it
   * is the one missing afterwards. A thread blocked in a native call exits only when the call
   * returns: after another `timeoutMs` that is logged.
   */
  private async pullAndWatch(signal: KillSwitch, task: HandlerTask, timeoutMs: number): Promise<void> {
    const before = [...this.handlers.threads];
    signal.pull();
    const after = new Set(this.handlers.threads);
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

  /** Lane statistics. */
  stats(): PoolStats {
    return {
      handlerThreads: this.handlers.threads.length,
      handlerQueue: this.handlers.queueSize,
      handlerBusy: Math.max(0, this.handlersInFlight - this.handlers.queueSize),
      handlerUtilization: this.handlers.utilization,
      workersReplaced: this.replaced,
    };
  }

  /**
   * Terminate every worker — also those piscina already gave up after a timeout — and resolve when
   * all have exited. Running tasks are abandoned; call after executions were stopped.
   */
  async close(): Promise<void> {
    this.closing = true;
    const abandoned = [...this.terminating].map((thread) => new Promise<void>((resolve) => thread.once('exit', () => resolve())));
    await Promise.allSettled([this.handlers.destroy(), ...abandoned]);
  }
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
