/**
 * The consumer side of the stop-event queue, with its recovery rules. One instance lives on the
 * main thread (the stop coordinator); the stress tests run the very same code.
 *
 * Normal path: drain published events in order and take each stop (StopRequested → Stopping).
 *
 * Recovery, for producers that die inside `requestStop` (a body thread terminated or out of memory
 * at the wrong instant):
 * - died between reserving and publishing a cell: the head stays "reserved, unpublished"; after
 *   `stallMs` it is skipped (a late publication can never match its lap tag again);
 * - died between its CAS and reserving a cell (or its cell was skipped): the block sits in
 *   StopRequested with no event. When the queue is empty, an orphan sweep takes every block that
 *   has been in StopRequested for over `orphanAgeMs` — with an empty queue, no event for it can be
 *   waiting, unless its producer is alive but stalled longer than that (its late event is then
 *   stale: `take` fails on it, and the queue's spare half has room for it).
 */
import { clockMs, clockUs, elapsedMs, elapsedUs, type ControlTable } from './table.js';

/** Tuning of the recovery rules. */
export interface ConsumerTiming {
  /** A head cell reserved but unpublished for this long belongs to a dead producer. Default 1000. */
  stallMs: number;
  /** A StopRequested block without event older than this is an orphan. Default 1000. */
  orphanAgeMs: number;
}

/** What one {@link StopEventConsumer.pass} did. */
export interface PassResult {
  /** Stops taken from queue events. */
  taken: number;
  /** Stops taken by the orphan sweep. */
  recovered: number;
  /** The head cell is reserved but not yet published: wait briefly and pass again. */
  headPending: boolean;
  /** A stalled head cell was skipped in this pass. */
  skipped: boolean;
}

/** Takes every requested stop exactly once (single consumer). */
export class StopEventConsumer {
  private readonly table: ControlTable;
  private readonly timing: ConsumerTiming;
  private pendingSinceMs: number | undefined;
  private lastSweepMs: number | undefined;

  constructor(table: ControlTable, timing: Partial<ConsumerTiming> = {}) {
    this.table = table;
    this.timing = { stallMs: 1000, orphanAgeMs: 1000, ...timing };
  }

  /**
   * Drain the queue and apply the recovery rules; `onTaken(slot, control, source)` receives every
   * stop taken (CONTROL now Stopping), exactly once per stop request that won.
   */
  pass(onTaken: (slot: number, control: number, source: 'queue' | 'sweep') => void): PassResult {
    const { table } = this;
    let taken = 0;
    let recovered = 0;
    const take = (slot: number, source: 'queue' | 'sweep'): boolean => {
      const control = table.take(slot);
      if (control === -1) return false; // stale or duplicate event: this stop was taken already
      onTaken(slot, control, source);
      return true;
    };
    const takeEvent = (slot: number): void => void (take(slot, 'queue') && taken++);
    let drained = table.drainQueue(takeEvent);
    let skipped = false;
    if (!drained.headPending) {
      this.pendingSinceMs = undefined;
    } else {
      this.pendingSinceMs ??= clockMs();
      if (elapsedMs(clockMs(), this.pendingSinceMs) >= this.timing.stallMs) {
        table.skipPendingHead();
        this.pendingSinceMs = undefined;
        skipped = true;
        drained = table.drainQueue(takeEvent);
      }
    }
    // Sweep at most twice per orphan age, and only with an empty queue (see the module comment).
    const nowMs = clockMs();
    if (table.queueDepth() === 0 && (this.lastSweepMs === undefined || elapsedMs(nowMs, this.lastSweepMs) * 2 >= this.timing.orphanAgeMs)) {
      this.lastSweepMs = nowMs;
      const nowUs = clockUs();
      const orphanAgeUs = this.timing.orphanAgeMs * 1000;
      table.forEachStopRequested((slot, requestedAtUs) => {
        if (elapsedUs(nowUs, requestedAtUs) >= orphanAgeUs && take(slot, 'sweep')) recovered++;
      });
    }
    return { taken, recovered, headPending: drained.headPending, skipped };
  }
}
