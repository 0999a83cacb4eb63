/**
 * Shared pieces of the control-table stress test: the seeded PRNG, the raw layout offsets the
 * fault-injection helpers need, the side buffer through which the test threads coordinate, and the
 * messages the producer threads post. Loaded by the test (main thread) and by `producer-worker.ts`.
 *
 * Nothing here touches `src/`: the raw offsets mirror the layout documented at the top of
 * `src/shm/table.ts`, and the test file checks them against the real accessors before any test
 * relies on them (so a layout change fails loudly instead of corrupting a simulation).
 */
import { generationOf, Reason, reasonOf, State, stateOf } from '../../src/shm/table.js';

// ---- seeded PRNG ---------------------------------------------------------------------------

/** A seeded random source (mulberry32): deterministic for a seed, fast, good enough for schedules. */
export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** True with probability `p`. */
  chance(p: number): boolean;
  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T;
}

/** mulberry32 over a 32-bit seed. */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    chance: (p) => next() < p,
    pick: <T>(items: readonly T[]): T => {
      const item = items[Math.floor(next() * items.length)];
      if (item === undefined) throw new Error('pick from an empty array');
      return item;
    },
  };
}

/** A non-negative integer from the environment variable `name` (replay knobs), or `fallback` when unset. */
export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name} must be a non-negative integer, got ${raw}`);
  return value;
}

/** A per-thread seed derived from the run seed (splitmix-style mixing, so streams do not overlap). */
export function deriveSeed(seed: number, stream: number): number {
  let z = (seed ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

// ---- raw layout (mirrors the diagram in src/shm/table.ts; verified by the layout test) -------

/** Int32 words of the header. */
export const RAW_HEADER_WORDS = 32;
/** Int32 words per control block. */
export const RAW_BLOCK_WORDS = 16;
/** Header word: the queue tail (producers reserve a cell with `Atomics.add`). */
export const RAW_QUEUE_TAIL = 3;
/** Header word: the queue head (consumer). */
export const RAW_QUEUE_HEAD = 5;
/** Block word: CONTROL. */
export const RAW_B_CONTROL = 0;
/** Block word: HB_LAST_MS. */
export const RAW_B_HB_LAST_MS = 4;
/** Generation bits of the CONTROL word. */
export const GEN_MASK = (1 << 23) - 1;

/** Word index of the CONTROL word of `slot`. */
export function rawControlIndex(slot: number): number {
  return RAW_HEADER_WORDS + slot * RAW_BLOCK_WORDS + RAW_B_CONTROL;
}
/** Word index of queue cell `index` for a table of `capacity` blocks. */
export function rawCellIndex(capacity: number, index: number): number {
  return RAW_HEADER_WORDS + capacity * RAW_BLOCK_WORDS + index;
}
/** The queue capacity the table derives from `capacity` (next power of two, at least 2). */
export function rawQueueCapacity(capacity: number): number {
  let size = 2;
  while (size < 2 * capacity) size *= 2;
  return size;
}
/** The lap tag of a queue position (1..128), as the producer writes it. */
export function rawLapTag(queueCapacity: number, position: number): number {
  return ((position >>> Math.log2(queueCapacity)) & 0x7f) + 1;
}
/** A published cell value for `slot` at `position`. */
export function rawCell(queueCapacity: number, position: number, slot: number): number {
  return ((rawLapTag(queueCapacity, position) << 24) | (slot + 1)) | 0;
}

// ---- side buffer: how the test's threads coordinate (not part of the table) -----------------

/** Side buffer words shared by every test thread. */
export const Ctl = {
  /** Set to 1 by main: producers finish their burst, report and exit. */
  STOP: 0,
  /** A word nobody notifies: threads nap on it with a timeout. */
  NAP: 1,
  /** Workers increment it once attached; main waits for all of them before the storm. */
  READY: 2,
  /** Main sets it to 1 to start the storm (all producers start together). */
  GO: 3,
  /** Watchdog: heartbeat-timeout stops won so far (running total, survives a crash). */
  WD_FIRED: 4,
  /** Watchdog: scans so far. */
  WD_SCANS: 5,
  // waiter role (waitWhileRunning latency)
  MAIL_SEQ: 8,
  MAIL_SLOT: 9,
  MAIL_GEN: 10,
  WAITING_SEQ: 11,
  RESULT_SEQ: 12,
  RESULT_LAT_US: 13,
  RESULT_WOKE: 14,
  /** First per-producer block. */
  PRODUCERS: 32,
} as const;

/** Words per producer block in the side buffer. */
export const PRODUCER_WORDS = 16;
/** Offsets inside a producer block. */
export const P = {
  /** 1 while a requestStop is in flight (intent below is valid), 0 otherwise. */
  IN_FLIGHT: 0,
  INTENT_SLOT: 1,
  INTENT_GEN: 2,
  INTENT_REASON: 3,
  /** Journal entries published (producer) / consumed (main). */
  J_WRITE: 4,
  J_READ: 5,
  /** requestStop calls so far (progress, readable after a kill). */
  ATTEMPTS: 6,
  WINS: 7,
} as const;

/** Side buffer size for `producers` producer blocks. */
export function ctlWords(producers: number): number {
  return Ctl.PRODUCERS + producers * PRODUCER_WORDS;
}

/** Journal entries per producer (ring; the producer waits when main is behind). */
export const JOURNAL_ENTRIES = 1 << 15;
/** Int32 words per journal entry: [slot | category << 24, generation << 5 | reason]. */
export const JOURNAL_ENTRY_WORDS = 2;

/** How a producer chose the generation of a request, relative to the word it had just read. */
export const Category = {
  /** The generation it read. */
  Current: 0,
  /** Older than the one it read: must never win. */
  Stale: 1,
  /** Newer than the one it read: may win if the slot was reused in between. */
  Future: 2,
  /** A random generation: practically never wins. */
  Wild: 3,
} as const;
export type Category = (typeof Category)[keyof typeof Category];
export const CATEGORY_NAMES = ['current', 'stale', 'future', 'wild'] as const;

/** Reasons producers (and main) use. HeartbeatTimeout is reserved to the watchdog thread. */
export const PRODUCER_REASONS: readonly Reason[] = [
  Reason.Agent,
  Reason.SignalInt,
  Reason.SignalTerm,
  Reason.SignalUsr1,
  Reason.BodyFailed,
  Reason.PrepareAbandoned,
  Reason.Shutdown,
];

/** Choose the generation of one request from the word just read. */
export function chooseGeneration(rng: Rng, observed: number): { generation: number; category: Category } {
  const roll = rng.next();
  if (roll < 0.62) return { generation: observed, category: Category.Current };
  if (roll < 0.8) return { generation: (observed - 1 - rng.int(3)) & GEN_MASK, category: Category.Stale };
  if (roll < 0.96) return { generation: (observed + 1 + rng.int(2)) & GEN_MASK, category: Category.Future };
  return { generation: rng.int(GEN_MASK + 1), category: Category.Wild };
}

/** Pick a slot, skewed towards a few hot slots so requests really collide. */
export function chooseSlot(rng: Rng, capacity: number, hot: number): number {
  return rng.chance(0.6) ? rng.int(Math.max(1, Math.min(hot, capacity))) : rng.int(capacity);
}

// ---- worker data and messages ---------------------------------------------------------------

/** What a producer-worker thread gets. */
export type WorkerData =
  | { role: 'producer'; index: number; seed: number; table: SharedArrayBuffer; ctl: SharedArrayBuffer; journal: SharedArrayBuffer; slots: number; hotSlots: number; burstMax: number; napMaxMs: number }
  | { role: 'watchdog'; seed: number; table: SharedArrayBuffer; ctl: SharedArrayBuffer; tickMs: number }
  | { role: 'waiter'; table: SharedArrayBuffer; ctl: SharedArrayBuffer }
  | { role: 'spinner'; ctl: SharedArrayBuffer }
  /** Fault injection: win the CAS of `slot` like requestStop, reserve a queue cell, die before publishing. */
  | { role: 'die-after-reserve'; table: SharedArrayBuffer; slot: number; generation: number; reason: Reason }
  /** Fault injection: win the CAS of `slot` like requestStop and die before reserving a cell. */
  | { role: 'die-after-cas'; table: SharedArrayBuffer; slot: number; generation: number; reason: Reason };

/** Counters a producer reports. */
export interface ProducerCounts {
  attempts: number;
  wins: number;
  /** Wins per category (index = Category). */
  winsBy: number[];
  /** Losses per category. */
  lossesBy: number[];
  /** Losses flagged `stale` by the table. */
  staleFlagged: number;
  naps: number;
}

/** Messages from test threads to main. */
export type WorkerMessage =
  | { type: 'progress'; counts: ProducerCounts }
  | { type: 'violation'; message: string }
  | { type: 'done'; counts?: ProducerCounts; fired?: number; scans?: number }
  | { type: 'fault-injected'; control: number; tail: number };

// ---- decoding for failure dumps -------------------------------------------------------------

const STATE_NAMES = ['Free', 'Prepared', 'Running', 'StopRequested', 'Stopping', 'Stopped', 'StopFailed'];
const REASON_NAMES = ['None', 'Agent', 'HeartbeatTimeout', 'SignalInt', 'SignalTerm', 'SignalUsr1', 'BodyFailed', 'PrepareAbandoned', 'Shutdown'];

/** `gen 12 StopRequested/Agent` for a CONTROL word. */
export function describeControl(control: number): string {
  const state = stateOf(control);
  const reason = reasonOf(control);
  return `gen ${generationOf(control)} ${STATE_NAMES[state] ?? `state${state}`}/${REASON_NAMES[reason] ?? `reason${reason}`}`;
}
/** Name of a state. */
export function stateName(state: number): string {
  return STATE_NAMES[state] ?? `state${state}`;
}
/** Name of a reason. */
export function reasonName(reason: number): string {
  return REASON_NAMES[reason] ?? `reason${reason}`;
}

/** States from which requestStop may win. */
export function isStoppable(state: number): boolean {
  return state === State.Prepared || state === State.Running || state === State.StopFailed;
}
