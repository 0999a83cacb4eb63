/**
 * The consumer side of the stop-event queue, with its recovery rules. One instance lives on the
 * main thread (the stop queue loop, `src/runtime/stop-queue.ts`); the stress test of the table
 * drives this very class.
 *
 * Normal path: drain published events in order and take each stop (StopRequested → Stopping).
 *
 * Recovery, for producers that die inside `requestStop` (a body thread terminated or out of memory
 * at the wrong instant):
 * - died between reserving and publishing a cell: the head stays "reserved, unpublished". When the
 *   same head position has been pending for `stallMs`, it is skipped (a late publication can never
 *   match its lap tag again). The clock is tied to the position: a head that moved on starts a new
 *   wait, so a live producer that just reserved the next cell is never skipped for the stall of
 *   an earlier one.
 * - died between its CAS and reserving a cell (or its cell was skipped): the block sits in
 *   StopRequested with no event. The orphan sweep runs only while the queue is empty and takes a
 *   block that it found in StopRequested, with the same CONTROL word, in every sweep over at least
 *   `orphanAgeMs`. It uses no timestamp written by the producer (a producer can die before it
 *   stamps). A live producer stalled longer than that between its CAS and its enqueue loses
 *   nothing: its late event is stale (`take` fails on it) and the queue's spare half has room.
 */
import { clockMs, elapsedMs, type ControlTable } from './table.js';

/** Tuning of the recovery rules. */
export interface ConsumerTiming {
  /** A head cell reserved but unpublished for this long belongs to a dead producer. Default 1000. */
  stallMs: number;
  /** A StopRequested block without event for this long is an orphan. Default 1000. */
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
  /**
   * Events whose stop was no longer StopRequested (already taken by the sweep, or a late event of
   * a stalled producer): ignored. Without a recovery they cannot exist.
   */
  stale: number;
}

/** Where a taken stop came from. A stop from the sweep may have no STOP_AT_US stamp. */
export type TakeSource = 'queue' | 'sweep';

/** Takes every requested stop exactly once (single consumer). */
export class StopEventConsumer {
  /** Recovery timing; tests may change it between passes. */
  readonly timing: ConsumerTiming;
  private readonly table: ControlTable;
  /** The head position found pending, and since when. */
  private pending: { head: number; sinceMs: number } | undefined;
  private lastSweepMs: number | undefined;
  /** Blocks seen in StopRequested by every sweep since `sinceMs`, with the word they had. */
  private suspects = new Map<number, { control: number; sinceMs: number }>();

  constructor(table: ControlTable, timing: Partial<ConsumerTiming> = {}) {
    this.table = table;
    this.timing = { stallMs: 1000, orphanAgeMs: 1000, ...timing };
  }

  /**
   * Drain the queue and apply the recovery rules; `onTaken(slot, control, source)` receives every
   * stop taken (CONTROL now Stopping), exactly once per stop request that won.
   */
  pass(onTaken: (slot: number, control: number, source: TakeSource) => void): PassResult {
    const { table } = this;
    let taken = 0;
    let recovered = 0;
    let stale = 0;
    const take = (slot: number, source: TakeSource): boolean => {
      const control = table.take(slot);
      if (control === -1) return false; // stale or duplicate event: this stop was taken already
      onTaken(slot, control, source);
      return true;
    };
    const takeEvent = (slot: number): void => {
      if (take(slot, 'queue')) taken++;
      else stale++;
    };
    let drained = table.drainQueue(takeEvent);
    let skipped = false;
    if (!drained.headPending) {
      this.pending = undefined;
    } else if (this.pending?.head !== drained.head) {
      this.pending = { head: drained.head, sinceMs: clockMs() };
    } else if (elapsedMs(clockMs(), this.pending.sinceMs) >= this.timing.stallMs) {
      table.skipPendingHead();
      this.pending = undefined;
      skipped = true;
      drained = table.drainQueue(takeEvent);
    }
    // Sweep at most twice per orphan age, and only with an empty queue (see the module comment).
    const nowMs = clockMs();
    if (table.queueDepth() === 0 && (this.lastSweepMs === undefined || elapsedMs(nowMs, this.lastSweepMs) * 2 >= this.timing.orphanAgeMs)) {
      this.lastSweepMs = nowMs;
      const seen = new Map<number, { control: number; sinceMs: number }>();
      table.forEachStopRequested((slot, control) => {
        const suspect = this.suspects.get(slot);
        const sinceMs = suspect?.control === control ? suspect.sinceMs : nowMs;
        if (elapsedMs(nowMs, sinceMs) >= this.timing.orphanAgeMs && take(slot, 'sweep')) recovered++;
        else seen.set(slot, { control, sinceMs });
      });
      this.suspects = seen;
    }
    return { taken, recovered, headPending: drained.headPending, skipped, stale };
  }
}
