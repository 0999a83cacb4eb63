/**
 * The body threads: where execution bodies run. This module owns the threads — spawning, spares,
 * the cap, routing messages, terminating — and knows nothing of executions; `./bodies.ts` drives
 * it per execution.
 *
 * Two kinds of thread, chosen by the action (`bodyKind`):
 * - **cpu**: one body per thread, so a body that never yields still runs at once and is stopped
 *   by terminating its own thread without touching anyone else. Threads are created on demand up
 *   to `maxThreads`; `spares` idle threads are kept booted so a burst's first bodies do not wait for
 *   a boot (~30–100 ms, and ~200 ms of CPU with the thread's teardown). A thread whose body ended
 *   stays idle for the next one — the most recently used first, its caches warm — and only idle
 *   threads beyond `spares` that were not needed for {@link IDLE_TTL_MS} are ended. So start/stop
 *   cycles reuse threads instead of booting and tearing one down each time. At the cap,
 *   {@link BodyThreads.reserve} fails: nothing ever waits in a queue, so a started body is a
 *   running body. A thread takes another body only if the last one left nothing running on it
 *   (timers, sockets); otherwise it is terminated with what it left.
 * - **io**: `ioThreads` threads shared by every async body, round the least loaded. Thousands of
 *   bodies that mostly await fit on one thread. Terminating one (a body that ignored its stop for
 *   the whole grace period) ends every body on it; those are reported lost, with the reason.
 *
 * Body threads are plain `worker_threads` Workers, not a piscina pool: a pool queues tasks it
 * cannot place (the silent queueing this replaces), and its idle workers sleep in `Atomics.wait`
 * with their event loops frozen. Ours wait for messages, so an idle thread's timers and sockets
 * keep being serviced.
 *
 * Lifecycle of a thread: booting → idle (cpu spares) ⇄ seated (a reserved or running body) →
 * exiting (terminate) → gone. Every run ends with exactly one call of its listener's `ended`,
 * `killed` or `lost`, also when its thread dies.
 */
import { Worker } from 'node:worker_threads';
import { ErrorCode, RuntimeError, type ErrorData } from '../errors.js';
import type { Logger } from '../logging.js';
import type { BodyKind, BodyTask, BodyThreadBootData, BodyThreadCommand, BodyThreadEvent, CheckedBodyReport, WorkerBootData } from './protocol.js';
import { wireState } from './sealed.js';
import type { TestGates } from '../shm/test-gates.js';

/** What happens to one run, told by its thread. Exactly one of `ended`, `killed`, `lost` is called. */
export interface BodyRunListener {
  began(): void;
  report(report: CheckedBodyReport): void;
  /** The body published a result (`ctx.publish()`): its JSON text. */
  result(json: string): void;
  /** The body ended on its own terms (`returned`, `stopped`, `failed`, `skipped`). */
  ended(phase: 'returned' | 'stopped' | 'failed' | 'skipped', error: ErrorData | undefined, endedAtUs: number): void;
  /** Its thread was terminated by {@link BodySeat.kill} for this run. */
  killed(): void;
  /** Its thread died under it: crashed, exited, ran out of memory, or was terminated to kill another body. */
  lost(reason: string): void;
}

/** A reserved place on a body thread, for one run. */
export interface BodySeat {
  readonly kind: BodyKind;
  /** Hand the body to the thread. At most once per seat. */
  run(task: BodyTask, listener: BodyRunListener): void;
  /** Give the seat back without running anything. */
  release(): void;
  /**
   * Terminate the thread to end this seat's run; resolves once the thread has exited (its code no
   * longer runs). Other runs on an io thread are lost with the reason.
   */
  kill(reason: string): Promise<void>;
}

/** Settings of the body threads. */
export interface BodyThreadSettings {
  boot: WorkerBootData;
  /** Cap of cpu threads (busy, idle and booting). */
  maxThreads: number;
  /** Idle cpu threads kept booted. */
  spares: number;
  /** Threads shared by io bodies. */
  ioThreads: number;
  /** cpu bodies running at once at normal priority; further ones get threads at `nice`. */
  fullPriorityBodies: number;
  /** Nice value of cpu threads beyond `fullPriorityBodies` (0: never lowered). */
  nice: number;
  maxOldGenerationMb: number | undefined;
  gates: TestGates | undefined;
  logger: Logger;
}

/** Counters of the body threads. */
export interface BodyThreadStats {
  /** cpu threads alive (running a body, idle spares, booting). */
  cpuThreads: number;
  /** cpu threads running (or reserved for) a body. */
  cpuBusy: number;
  /** Booted idle cpu threads. */
  cpuSpares: number;
  ioThreads: number;
  /** Bodies running (or reserved) on io threads. */
  ioBodies: number;
  /** Threads that ended while carrying bodies — crashed, exited, out of memory, or terminated to kill one — since start. */
  threadsLost: number;
}

interface Thread {
  readonly id: number;
  readonly kind: BodyKind;
  /** The nice value it set on itself at boot (fixed for its life: a thread cannot raise its priority again). */
  readonly nice: number;
  readonly worker: Worker;
  /** Settles when the thread loaded the action modules (rejects if it failed to). */
  readonly ready: Promise<void>;
  booted: boolean;
  /** `performance.now()` when it last became idle (cpu). */
  idleSinceMs: number;
  /** Seats handed out and not yet released or ended (cpu: 0 or 1). */
  seats: number;
  readonly runs: Map<number, BodyRunListener>;
  /** Why it is being terminated, for the runs it carries; undefined while healthy. */
  ending: { reason: string; killedRunId: number | undefined } | undefined;
  /** The error that killed it, if one was reported before its exit. */
  error: unknown;
  readonly exited: Promise<void>;
}

const threadsFile = new URL('../../workers/bodies.js', import.meta.url);

/** Idle cpu threads beyond the spares are ended after this long without a body. */
export const IDLE_TTL_MS = 30_000;

/** The body threads of one extension. */
export class BodyThreads {
  private readonly settings: BodyThreadSettings;
  /** Every thread that has not exited yet (what `close()` waits for). */
  private readonly alive = new Set<Thread>();
  /** cpu threads that count against the cap: booting, idle or seated — not those being terminated. */
  private readonly cpu = new Set<Thread>();
  /** Booted idle cpu threads, most recently used last. */
  private readonly idle: Thread[] = [];
  /** cpu threads booting as spares, not yet claimed by a reservation. */
  private readonly bootingSpares: Thread[] = [];
  private readonly io: Thread[] = [];
  private nextThreadId = 1;
  private idleReaper: NodeJS.Timeout | undefined;
  private nextRunId = 1;
  private threadsLost = 0;
  private closed = false;

  constructor(settings: BodyThreadSettings) {
    this.settings = settings;
  }

  /**
   * Boot the spare cpu threads (when some action has a cpu body) and the io threads (when some
   * has an io body), and wait until they loaded the actions: a module that fails on a thread fails
   * start-up, not the first start.
   */
  async warmUp(kinds: ReadonlySet<BodyKind>): Promise<void> {
    const booting: Promise<void>[] = [];
    if (kinds.has('cpu')) {
      this.topUpSpares();
      booting.push(...this.bootingSpares.map((thread) => thread.ready));
    }
    if (kinds.has('io')) {
      while (this.io.length < this.settings.ioThreads) booting.push(this.spawn('io', 0).ready);
    }
    await Promise.all(booting);
  }

  /**
   * A seat for one body: a cpu thread of its own (a spare, or a new one once it booted), or a
   * place on the least loaded io thread. Rejects with a 503-class {@link RuntimeError} naming
   * `ACTIONKIT_MAX_BODY_THREADS` when every cpu thread is taken, and with a `WORKER_LOST` one when
   * a thread could not boot.
   */
  async reserve(kind: BodyKind): Promise<BodySeat> {
    if (this.closed) throw new RuntimeError(ErrorCode.ShuttingDown, 503, 'Extension is shutting down', 'no new bodies are started');
    const thread = kind === 'cpu' ? this.cpuThreadFor(this.niceForNextCpuBody()) : this.ioThreadFor();
    thread.seats++;
    try {
      await thread.ready;
    } catch (error) {
      thread.seats--;
      throw new RuntimeError(ErrorCode.WorkerLost, 500, 'Body thread could not start', describeLoss(error));
    }
    if (thread.ending !== undefined) {
      // It died (or was terminated) between booting and now.
      thread.seats--;
      throw new RuntimeError(ErrorCode.WorkerLost, 500, 'Body thread lost', thread.ending.reason);
    }
    if (kind === 'cpu') this.topUpSpares();
    return this.seatOn(thread);
  }

  /** Counters. */
  stats(): BodyThreadStats {
    let cpuBusy = 0;
    for (const thread of this.cpu) if (thread.seats > 0) cpuBusy++;
    return {
      cpuThreads: this.cpu.size,
      cpuBusy,
      cpuSpares: this.idle.length,
      ioThreads: this.io.length,
      ioBodies: this.io.reduce((sum, thread) => sum + thread.seats, 0),
      threadsLost: this.threadsLost,
    };
  }

  /** Terminate every thread (runs still on them are lost); resolves when all have exited. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.idleReaper);
    const all = [...this.alive];
    for (const thread of all) this.terminate(thread, 'the extension is shutting down', undefined);
    await Promise.all(all.map((thread) => thread.exited));
  }

  /**
   * Up to `fullPriorityBodies` cpu bodies run at normal priority — a CPU attack on a host with
   * that many cores competes with everything else as an equal. Beyond that, cores are
   * oversubscribed: further bodies get threads at `nice`, so the HTTP thread, the handlers and the
   * watchdog keep coming first.
   */
  private niceForNextCpuBody(): number {
    let seated = 0;
    for (const thread of this.cpu) if (thread.seats > 0) seated++;
    return seated >= this.settings.fullPriorityBodies ? this.settings.nice : 0;
  }

  private cpuThreadFor(nice: number): Thread {
    // The most recently used idle thread of that priority (warm caches); spares are at normal priority.
    let spare: Thread | undefined;
    for (let i = this.idle.length - 1; i >= 0 && spare === undefined; i--) if (this.idle[i]!.nice === nice) spare = this.idle.splice(i, 1)[0];
    spare ??= nice === 0 ? this.bootingSpares.shift() : undefined;
    if (spare !== undefined) return spare;
    if (this.cpu.size >= this.settings.maxThreads) {
      throw new RuntimeError(
        ErrorCode.CapacityExhausted,
        503,
        'Too many running bodies',
        `all ${this.settings.maxThreads} cpu body threads are running bodies (ACTIONKIT_MAX_BODY_THREADS); stop executions or raise the limit`,
      );
    }
    return this.spawn('cpu', nice);
  }

  private ioThreadFor(): Thread {
    let least: Thread | undefined;
    for (const thread of this.io) if (least === undefined || thread.seats < least.seats) least = thread;
    // Spread over the configured number of threads before doubling up.
    if (least === undefined || (least.seats > 0 && this.io.length < this.settings.ioThreads)) return this.spawn('io', 0);
    return least;
  }

  /** Keep `spares` idle (or booting) cpu threads at normal priority, within the cap. */
  private topUpSpares(): void {
    while (!this.closed && this.spareCount() + this.bootingSpares.length < this.settings.spares && this.cpu.size < this.settings.maxThreads) {
      this.bootingSpares.push(this.spawn('cpu', 0));
    }
  }

  private spawn(kind: BodyKind, nice: number): Thread {
    const { settings } = this;
    const boot: BodyThreadBootData = {
      ...settings.boot,
      kind,
      nice,
      ...(settings.gates === undefined ? {} : { gates: settings.gates.buffer }),
    };
    const worker = new Worker(threadsFile, {
      workerData: boot,
      ...(settings.maxOldGenerationMb === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: settings.maxOldGenerationMb } }),
    });
    let markReady!: () => void;
    let failBoot!: (error: unknown) => void;
    const ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failBoot = reject;
    });
    ready.catch(() => undefined); // a spare nobody claimed may fail to boot: logged in 'error'
    let markExited!: () => void;
    const exited = new Promise<void>((resolve) => (markExited = resolve));
    const thread: Thread = { id: this.nextThreadId++, kind, nice, worker, ready, booted: false, idleSinceMs: 0, seats: 0, runs: new Map(), ending: undefined, error: undefined, exited };
    this.alive.add(thread);
    if (kind === 'cpu') this.cpu.add(thread);
    else this.io.push(thread);

    worker.on('message', (event: BodyThreadEvent) => {
      if (event.type === 'ready') {
        thread.booted = true;
        markReady();
        const booting = this.bootingSpares.indexOf(thread);
        if (booting >= 0) {
          // A fresh spare goes to the cold end: threads that ran a body are handed out first.
          this.bootingSpares.splice(booting, 1);
          thread.idleSinceMs = performance.now();
          this.idle.unshift(thread);
        }
        return;
      }
      const listener = thread.runs.get(event.runId);
      if (listener === undefined) return;
      switch (event.type) {
        case 'began':
          listener.began();
          return;
        case 'report':
          listener.report(event);
          return;
        case 'result':
          listener.result(event.json);
          return;
        case 'ended':
          thread.runs.delete(event.runId);
          thread.seats--;
          listener.ended(event.phase, event.error, event.endedAtUs);
          // A cpu body that left work behind (a timer, a socket) would share its thread with the
          // next body: the thread goes, and what it left with it.
          if (kind === 'cpu' && !event.clean) this.terminate(thread, 'its last body left work behind', undefined);
          else this.afterRun(thread);
      }
    });
    worker.on('error', (error) => {
      thread.error ??= error;
      if (!thread.booted) {
        settings.logger.error({ kind, err: error }, 'a body thread failed to start');
        failBoot(error);
      }
    });
    worker.on('exit', (code) => {
      if (!thread.booted) failBoot(thread.error ?? new Error(`body thread exited with code ${code} while loading the actions`));
      this.forget(thread);
      this.alive.delete(thread);
      const unexpected = thread.ending === undefined;
      // From now on a seat still held on it (reserved, not yet run) learns why when it runs.
      thread.ending ??= { reason: describeLoss(thread.error ?? new Error(`worker exited with code ${code}`)), killedRunId: undefined };
      const { reason, killedRunId } = thread.ending;
      if (thread.runs.size > 0 && !this.closed) this.threadsLost++;
      if (unexpected && thread.runs.size === 0 && thread.booted && !this.closed) {
        settings.logger.error({ kind, err: thread.error, code }, 'an idle body thread exited');
      }
      for (const [runId, listener] of thread.runs) {
        if (runId === killedRunId) listener.killed();
        else listener.lost(reason);
      }
      thread.runs.clear();
      markExited();
      // Replace a spare that ended; not a thread that could not even boot (it would fail again).
      if (kind === 'cpu' && thread.booted) this.topUpSpares();
    });
    return thread;
  }

  private seatOn(thread: Thread): BodySeat {
    let runId: number | undefined;
    let released = false;
    return {
      kind: thread.kind,
      run: (task, listener) => {
        if (runId !== undefined || released) throw new Error('a body seat runs one body');
        runId = this.nextRunId++;
        if (thread.ending !== undefined) {
          // The thread died (or is being terminated) after the reservation: the run is lost before it started.
          thread.seats--;
          listener.lost(thread.ending.reason);
          return;
        }
        thread.runs.set(runId, listener);
        const { state, ...fields } = task;
        const command: BodyThreadCommand = { type: 'run', runId, task: { ...fields, ...wireState(state) } };
        thread.worker.postMessage(command);
      },
      release: () => {
        if (runId !== undefined || released) return;
        released = true;
        if (thread.ending !== undefined) return;
        thread.seats--;
        this.afterRun(thread);
      },
      kill: (reason) => {
        // A run that already ended (or never started) has nothing left to kill.
        if (runId === undefined || !thread.runs.has(runId)) return Promise.resolve();
        this.terminate(thread, reason, runId);
        return thread.exited;
      },
    };
  }

  /** A run ended or a seat was released: an idle cpu thread waits for the next body (see {@link reapIdle}). */
  private afterRun(thread: Thread): void {
    if (thread.kind !== 'cpu' || thread.seats > 0 || thread.ending !== undefined) return;
    if (this.closed) return this.terminate(thread, 'the extension is shutting down', undefined);
    thread.idleSinceMs = performance.now();
    this.idle.push(thread);
    this.idleReaper ??= setInterval(() => this.reapIdle(), IDLE_TTL_MS / 2).unref();
  }

  /** Idle cpu threads at normal priority: the spares. */
  private spareCount(): number {
    let spares = 0;
    for (const thread of this.idle) if (thread.nice === 0) spares++;
    return spares;
  }

  /**
   * End the idle cpu threads that waited longer than {@link IDLE_TTL_MS} for a body, the
   * longest-idle first — all but `spares` threads at normal priority.
   */
  private reapIdle(): void {
    const nowMs = performance.now();
    let spares = this.spareCount();
    for (const thread of [...this.idle]) {
      if (nowMs - thread.idleSinceMs <= IDLE_TTL_MS) break; // the rest waited less (the list is oldest first)
      if (thread.nice === 0 && spares <= this.settings.spares) continue;
      if (thread.nice === 0) spares--;
      this.terminate(thread, 'idle too long', undefined);
    }
    if (this.idle.length <= this.settings.spares) {
      clearInterval(this.idleReaper);
      this.idleReaper = undefined;
    }
  }

  private terminate(thread: Thread, reason: string, killedRunId: number | undefined): void {
    if (thread.ending !== undefined) return;
    thread.ending = { reason, killedRunId };
    this.forget(thread);
    void thread.worker.terminate();
  }

  /** Take a thread out of the lists seats come from and out of the cap (it is ending). */
  private forget(thread: Thread): void {
    for (const list of [this.idle, this.bootingSpares, this.io]) {
      const at = list.indexOf(thread);
      if (at >= 0) list.splice(at, 1);
    }
    this.cpu.delete(thread);
  }
}

/** Explain a body thread's death in words an operator can act on. */
function describeLoss(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ERR_WORKER_OUT_OF_MEMORY') return 'the body thread ran out of memory (ACTIONKIT_WORKER_MAX_OLD_GENERATION_MB)';
  const exit = /exited with code (-?\d+)/.exec(message);
  if (exit !== null) return `the body thread exited with code ${exit[1]} (process.exit() in author code?)`;
  return `the body thread crashed: ${message}`;
}
