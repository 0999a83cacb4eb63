/**
 * Worker threads: the only module that imports piscina.
 *
 * Two lanes, two pools, so a long-running body can never starve a lifecycle call:
 * - **handlers**: prepare, start, status, stop and query handlers — short tasks;
 * - **bodies**: execution bodies — long, often CPU-bound tasks. At most `bodyThreads` run at once;
 *   the body lane's admission queue (`src/runtime/bodies.ts`) holds the rest, so piscina's own queue
 *   for bodies stays empty and a body stopped while waiting never reaches a thread.
 *
 * Both pools use piscina's default `atomics: 'sync'`: an idle worker sleeps in `Atomics.wait` and
 * wakes on the next task with no event-loop turn (the cheapest hand-off). The price — an idle
 * worker's event loop is frozen, so work a handler leaves running after it resolved waits for the
 * thread's next task — is acceptable because handlers must be complete when they resolve, and a
 * body's own async work (its AbortSignal, `sleepAsync`) only runs while its task runs, when the
 * loop is live. Every task carries an `AbortSignal`; aborting a running task makes piscina
 * terminate its worker and start a replacement. That is the hard-kill step of the escalation
 * ladder and the cure for a hung handler.
 */
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { ErrorCode, RuntimeError } from './errors.js';
import type { Logger } from './logging.js';
import type { BodyReply, BodyTask, HandlerReply, HandlerTask, Phase, WorkerBootData } from './runtime/protocol.js';

/** Settings of both lanes. */
export interface PoolSettings {
  boot: WorkerBootData;
  handlerThreads: number;
  bodyThreads: number;
  /** V8 old-space limit per worker, MiB; undefined = Node's default. */
  maxOldGenerationMb: number | undefined;
  bodyNice: number;
  logger: Logger;
  /** Told when a handler task settles (metrics); runs on the main thread, must be cheap. */
  onHandlerSettled?: (phase: Phase, actionId: string, seconds: number, outcome: HandlerOutcome) => void;
}

/**
 * How a handler task ended: the handler returned (`ok`), threw or rejected (`error`), or its
 * worker was lost — crash, exit, out of memory, or terminated after overrunning its timeout (`lost`).
 */
export type HandlerOutcome = 'ok' | 'error' | 'lost';

/** Counters of both lanes (for metrics and benchmarks). */
export interface PoolStats {
  handlerThreads: number;
  bodyThreads: number;
  handlerQueue: number;
  /** Tasks in piscina's queue of the body lane (the lane's own admission queue is `BodyLane.queued`). */
  bodyQueue: number;
  /** Tasks running on a thread now (submitted, not settled, not queued). */
  handlerBusy: number;
  bodyBusy: number;
  /** piscina's `utilization`: mean run time of completed tasks relative to the lane's capacity since start. */
  handlerUtilization: number;
  bodyUtilization: number;
  workersReplaced: number;
}

const handlersFile = fileURLToPath(new URL('../workers/handlers.js', import.meta.url));
const bodiesFile = fileURLToPath(new URL('../workers/bodies.js', import.meta.url));

/** The two lanes of worker threads. */
export class WorkerPools {
  private readonly handlers: Piscina<HandlerTask, HandlerReply>;
  private readonly bodies: Piscina<BodyTask, BodyReply>;
  private readonly settings: PoolSettings;
  private replaced = 0;
  private closing = false;
  /** Tasks submitted and not yet settled, per lane (queued or running). */
  private handlersInFlight = 0;
  private bodiesInFlight = 0;

  constructor(settings: PoolSettings) {
    this.settings = settings;
    const resourceLimits = settings.maxOldGenerationMb === undefined ? undefined : { maxOldGenerationSizeMb: settings.maxOldGenerationMb };
    const common = {
      workerData: settings.boot,
      idleTimeout: Number.POSITIVE_INFINITY,
      concurrentTasksPerWorker: 1,
      ...(resourceLimits === undefined ? {} : { resourceLimits }),
    };
    this.handlers = new Piscina({ ...common, filename: handlersFile, name: 'default', minThreads: settings.handlerThreads, maxThreads: settings.handlerThreads });
    this.bodies = new Piscina({
      ...common,
      filename: bodiesFile,
      name: 'default',
      minThreads: settings.bodyThreads,
      maxThreads: settings.bodyThreads,
      niceIncrement: settings.bodyNice,
    });
    for (const [lane, pool] of [['handlers', this.handlers], ['bodies', this.bodies]] as const) {
      // piscina emits 'error' for a worker failure with no task attached; unhandled it would kill the process.
      pool.on('error', (error: unknown) => settings.logger.error({ lane, err: error }, 'worker thread failed outside a task'));
      pool.on('workerDestroy', () => {
        if (!this.closing) this.replaced++;
      });
    }
  }

  /**
   * Wait until every thread of both lanes has loaded the action modules (a no-op `ping` task per
   * thread), so the first execution does not wait for a thread to boot and a module that fails to
   * load on a worker fails start-up instead of the first request.
   */
  async warmUp(): Promise<void> {
    const ping = (pool: Piscina, threads: number): Promise<unknown>[] => Array.from({ length: threads }, () => pool.run(null, { name: 'ping' }));
    await Promise.all([...ping(this.handlers, this.settings.handlerThreads), ...ping(this.bodies, this.settings.bodyThreads)]);
  }

  /** Threads of the handler lane. */
  get handlerThreads(): number {
    return this.settings.handlerThreads;
  }

  /** Threads of the body lane. */
  get bodyThreads(): number {
    return this.settings.bodyThreads;
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
    const signal = new KillSwitch();
    const timer = setTimeout(() => signal.pull(), timeoutMs);
    const startedMs = performance.now();
    let outcome: HandlerOutcome = 'lost';
    this.handlersInFlight++;
    try {
      const reply = await this.handlers.run(task, { signal });
      outcome = reply.ok ? 'ok' : 'error';
      return reply;
    } catch (error) {
      if (signal.aborted) {
        throw new RuntimeError(
          ErrorCode.WorkerLost,
          500,
          'Handler timed out',
          `the ${task.phase} handler did not finish within ${timeoutMs} ms; its worker thread was terminated and replaced`,
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
   * Run a body; `signal` is the hard-kill switch (aborting terminates the body's worker).
   * Rejects with a {@link RuntimeError} when the worker died or was killed.
   */
  async runBody(task: BodyTask, signal: AbortSignal): Promise<BodyReply> {
    this.bodiesInFlight++;
    try {
      return await this.bodies.run(task, { signal, transferList: [task.reports] });
    } catch (error) {
      if (signal.aborted) throw new RuntimeError(ErrorCode.WorkerLost, 500, 'Body killed', 'the body did not stop within the grace period; its worker thread was terminated');
      throw workerLost('the body', error);
    } finally {
      this.bodiesInFlight--;
    }
  }

  /** Lane statistics. */
  stats(): PoolStats {
    return {
      handlerThreads: this.handlers.threads.length,
      bodyThreads: this.bodies.threads.length,
      handlerQueue: this.handlers.queueSize,
      bodyQueue: this.bodies.queueSize,
      handlerBusy: Math.max(0, this.handlersInFlight - this.handlers.queueSize),
      bodyBusy: Math.max(0, this.bodiesInFlight - this.bodies.queueSize),
      handlerUtilization: this.handlers.utilization,
      bodyUtilization: this.bodies.utilization,
      workersReplaced: this.replaced,
    };
  }

  /** Terminate every worker. Running tasks are abandoned; call after executions were stopped. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([this.handlers.destroy(), this.bodies.destroy()]);
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
