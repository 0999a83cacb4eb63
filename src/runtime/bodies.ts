/**
 * The body lane: admission of execution bodies onto body threads, their reports, and the
 * escalation ladder when a stop arrives.
 *
 * At most `bodyThreads` bodies run at once; the others wait here in FIFO order. A body stopped
 * while waiting is marked Skipped (CAS on its BODY word) and never reaches a thread — in a stop
 * storm of thousands of queued bodies nothing is dispatched just to be cancelled.
 *
 * Escalation: the stop request already flipped the CONTROL word the body polls (cooperative
 * stop, microseconds). {@link BodyLane.stop} waits `graceMs` for the body to end; if it has not,
 * it terminates the body's worker through piscina's abort (hard kill) and piscina starts a
 * replacement thread.
 */
import { MessageChannel } from 'node:worker_threads';
import type { BodyInfo, BodyPhase, JsonObject } from '../action.js';
import { describeThrown, RuntimeError } from '../errors.js';
import type { Logger } from '../logging.js';
import type { WorkerPools } from '../pool.js';
import { BodyState, Reason, clockUs, type ControlTable } from '../shm/table.js';
import type { Execution } from './executions.js';
import type { BodyEndMarker, CheckedBodyReport } from './protocol.js';

/** A body as the main thread tracks it. */
export class BodyRun {
  /** Settles when the body ended (any way) and its last reports were delivered. */
  readonly done: Promise<void>;
  /** Message of the error the body threw, once known. */
  error: string | undefined;
  /** Shared-clock µs at which the body's code ended (from its end marker). */
  endedAtUs: number | undefined;
  /** Terminates the body's worker (hard kill); set when the body is dispatched. */
  kill: () => void = () => undefined;
  /** The state the body receives. */
  readonly state: JsonObject;
  private resolveDone!: () => void;

  constructor(state: JsonObject) {
    this.state = state;
    this.done = new Promise<void>((resolve) => (this.resolveDone = resolve));
  }

  /** True once {@link done} resolved: the body ended and all its reports were delivered. */
  settled = false;

  /** Mark the body as ended. */
  settle(): void {
    this.settled = true;
    this.resolveDone();
  }
}

/** How a body ended when its execution was stopped. */
export interface BodyEnd {
  phase: BodyPhase;
  /** ms (fractional, µs resolution) from the stop request to the body's end (cooperative) or to its worker's termination (killed). */
  stopMs?: number;
}

const PHASES: Record<BodyState, BodyPhase> = {
  [BodyState.None]: 'none',
  [BodyState.Queued]: 'queued',
  [BodyState.Running]: 'running',
  [BodyState.Returned]: 'returned',
  [BodyState.Failed]: 'failed',
  [BodyState.Stopped]: 'stopped',
  [BodyState.Killed]: 'killed',
  [BodyState.Skipped]: 'skipped',
};

/** Bound on waiting for a finished body's end marker (it is normally there already). */
const END_MARKER_WAIT_MS = 250;

/** Runs bodies on the body threads. */
export class BodyLane {
  private readonly waiting = new Set<Execution>();
  private running = 0;
  private readonly table: ControlTable;
  private readonly pools: WorkerPools;
  private readonly logger: Logger;

  constructor(table: ControlTable, pools: WorkerPools, logger: Logger) {
    this.table = table;
    this.pools = pools;
    this.logger = logger;
  }

  /** Bodies waiting for a thread. */
  get queued(): number {
    return this.waiting.size;
  }

  /** Queue the body of a just-started execution; it receives `state` (the state after start). */
  enqueue(execution: Execution, state: JsonObject): void {
    if (!this.table.transitionBody(execution.slot, BodyState.None, BodyState.Queued)) return;
    execution.body = new BodyRun(state);
    this.waiting.add(execution);
    this.pump();
  }

  /**
   * What status and stop report about the body. A body whose thread already ended but whose last
   * reports are still in flight counts as running, so a status that sees `returned` has seen every
   * report the body sent.
   */
  info(execution: Execution): BodyInfo {
    const word = this.table.bodyState(execution.slot);
    const ended = word !== BodyState.Queued && word !== BodyState.Running && word !== BodyState.None;
    const phase = ended && execution.body?.settled === false ? 'running' : PHASES[word];
    const info: BodyInfo = { phase, progress: this.table.progress(execution.slot) };
    if (execution.body?.error !== undefined) info.error = execution.body.error;
    return info;
  }

  /**
   * End the body of a stopping execution: nothing to do if it never started or was still queued
   * (Skipped); otherwise wait up to `graceMs` for it to observe the stop, then kill its worker.
   */
  async stop(execution: Execution, graceMs: number): Promise<BodyEnd> {
    const body = execution.body;
    if (body === undefined) return { phase: 'none' };
    if (this.table.transitionBody(execution.slot, BodyState.Queued, BodyState.Skipped)) {
      this.waiting.delete(execution);
      body.settle();
      return { phase: 'skipped' };
    }
    const stopAtUs = this.table.stopRequestedAtUs(execution.slot);
    // The stop's winner stamps STOP_AT_US just after its CAS, so a fast body can end before the
    // stamp: the signed difference is then ≤ 0 and the body stopped "at once".
    const sinceStopMs = (nowUs: number): number => Math.max(0, (nowUs - stopAtUs) | 0) / 1000;
    const remainingMs = Math.max(0, graceMs - sinceStopMs(clockUs()));
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'grace over'>((resolve) => (timer = setTimeout(resolve, remainingMs, 'grace over')));
    const first = await Promise.race([body.done.then(() => 'ended' as const), graceOver]);
    clearTimeout(timer);
    if (first === 'grace over' && this.table.transitionBody(execution.slot, BodyState.Running, BodyState.Killed)) {
      const killedAfterMs = sinceStopMs(clockUs());
      body.kill();
      await body.done;
      return { phase: 'killed', stopMs: killedAfterMs };
    }
    await body.done;
    return { phase: PHASES[this.table.bodyState(execution.slot)], stopMs: sinceStopMs(body.endedAtUs ?? clockUs()) };
  }

  private pump(): void {
    while (this.running < this.pools.bodyThreads && this.waiting.size > 0) {
      const next = this.waiting.values().next().value as Execution;
      this.waiting.delete(next);
      if (this.table.bodyState(next.slot) !== BodyState.Queued) continue;
      this.dispatch(next);
    }
  }

  private dispatch(execution: Execution): void {
    const body = execution.body!;
    const { port1, port2 } = new MessageChannel();
    let markerSeen!: () => void;
    const marker = new Promise<void>((resolve) => (markerSeen = resolve));
    port1.on('message', (message: CheckedBodyReport | BodyEndMarker) => {
      if ('endedAtUs' in message) {
        body.endedAtUs = message.endedAtUs;
        markerSeen();
      } else {
        execution.reports.add(message.messages, message.metrics);
      }
    });
    const killSwitch = new AbortController();
    body.kill = () => killSwitch.abort();
    this.running++;
    this.pools
      .runBody(
        {
          actionId: execution.action.id,
          executionId: execution.id,
          slot: execution.slot,
          generation: execution.generation,
          state: body.state,
          reports: port2,
        },
        killSwitch.signal,
      )
      .then(
        (reply) => {
          if (reply.error !== undefined) body.error = reply.error.message;
          if (reply.phase === 'failed') this.logger.warn({ executionId: execution.id, err: reply.error }, 'action body failed');
          return true;
        },
        (error: unknown) => {
          // The worker died (crash, exit, OOM) or was killed; a body that was still running fails its execution.
          body.error ??= error instanceof RuntimeError ? (error.detail ?? error.message) : describeThrown(error);
          const wasRunning =
            this.table.transitionBody(execution.slot, BodyState.Running, BodyState.Failed) ||
            this.table.transitionBody(execution.slot, BodyState.Queued, BodyState.Failed);
          if (wasRunning) {
            // The body could not request its own stop: do it for it, through the one entry point.
            this.logger.error({ executionId: execution.id, err: error }, 'body worker thread lost');
            this.table.requestStop(execution.slot, execution.generation, Reason.BodyFailed);
          }
          return false;
        },
      )
      .then(async (workerAlive) => {
        // piscina's reply and the body's reports travel on different ports: wait for the end
        // marker, after which every report is in. A dead worker sends nothing more.
        if (workerAlive) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([marker, new Promise((resolve) => (timer = setTimeout(resolve, END_MARKER_WAIT_MS)))]);
          clearTimeout(timer);
        }
        port1.close();
        this.running--;
        body.settle();
        this.pump();
      });
  }
}
