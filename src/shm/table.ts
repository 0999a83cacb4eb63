/**
 * The shared-memory control table: one SharedArrayBuffer holding a control block per active
 * execution and the stop-event queue. This module owns the layout; it is the only place in the
 * project that calls `Atomics`. It is loaded on the main thread, on the watchdog thread and on every
 * worker thread (it needs nothing but the language and `process.hrtime`).
 *
 * ```
 *  Int32 words
 *  ┌──────────────────────────── header (32 words) ───────────────────────────────┐
 *  │ 0 MAGIC │ 1 CAPACITY │ 2 QUEUE_CAPACITY │ 3 QUEUE_TAIL │ 4 QUEUE_DOORBELL     │
 *  │ 5 QUEUE_HEAD │ 6 WATCHDOG_WAKE │ 7 WATCHDOG_RUN │ 8 WATCHDOG_SCANS            │
 *  │ 9 WATCHDOG_SCAN_US │ 10 WATCHDOG_TICK_MS │ 11 HIGH_WATER │ 12 ENQUEUED        │
 *  │ 13 HEARTBEAT_TIMEOUTS │ 14 WATCHDOG_SCAN_NS_TOTAL │ 15 MAIN_ALIVE_MS          │
 *  │ 16 MAIN_EXCUSED_MS │ 17 MAIN_STALLS │ 18 MAIN_STALL_AFTER_MS                  │
 *  │ 19 MAIN_WEDGED_AFTER_MS │ 20 WATCHDOG_DEFERRED │ 21..31 reserved             │
 *  ├──────────── control blocks: CAPACITY × 16 words (64 bytes, one cache line) ───┤
 *  │ +0 CONTROL = generation:23 | reason:5 | state:4   (changed only by CAS)       │
 *  │ +1 BODY    = generation:23 | 0:5 | body state:4   (changed only by CAS)       │
 *  │ +2 PROGRESS       body progress, author-defined integer                       │
 *  │ +3 reserved                                                                   │
 *  │ +4 HB_LAST_MS     heartbeat clock (uint32 ms) of the last heartbeat           │
 *  │ +5 HB_EXPIRE_MS   silence after which the watchdog stops it (0 = unwatched)   │
 *  │ +6 STOP_AT_US     shared clock (uint32 µs) when the stop was requested        │
 *  │ +7..15 reserved                                                               │
 *  ├──────────── stop-event queue: QUEUE_CAPACITY cells (power of two) ────────────┤
 *  │ cell = lapTag:8 | (slot + 1):24      written by producers, read by the consumer│
 *  └───────────────────────────────────────────────────────────────────────────────┘
 * ```
 *
 * Writers and readers of every word:
 *
 * | word | written by | read by |
 * |---|---|---|
 * | CONTROL | main (allocate, start, take, finish, release); any thread via {@link ControlTable.requestStop} | everyone |
 * | BODY | main (None at allocate; Queued at dispatch; Killed, Failed when a body thread is lost); body thread (Running, Returned, Failed, Stopped, Skipped) — CAS only, generation in the word | main (status, stop) |
 * | PROGRESS | body thread (after checking the BODY word's generation) | main (status) |
 * | HB_LAST_MS | main (status request, start), on the heartbeat clock ({@link ControlTable.markMainAlive}) | watchdog |
 * | HB_EXPIRE_MS | main (start: before publishing Running, or once the start answers) | watchdog |
 * | STOP_AT_US | the thread that won the stop CAS, right after it and before enqueueing | main (escalation, metrics) — only for stops taken from the queue: a stop the orphan sweep took may never have been stamped |
 * | QUEUE_TAIL | producers (`Atomics.add` reserves a cell) | consumer |
 * | QUEUE_DOORBELL | producers (`add` + `notify` after publishing) | consumer (`waitAsync`) |
 * | QUEUE_HEAD | consumer (main) | producers (overflow check), metrics |
 * | WATCHDOG_* | main (RUN, WAKE, TICK_MS); watchdog (SCANS, SCAN_US, SCAN_NS_TOTAL, DEFERRED) | the other side |
 * | MAIN_ALIVE_MS, MAIN_EXCUSED_MS, MAIN_STALLS | main only ({@link ControlTable.markMainAlive}: EXCUSED and STALLS first, ALIVE last) | watchdog (ALIVE first, then EXCUSED), stats |
 * | MAIN_STALL_AFTER_MS, MAIN_WEDGED_AFTER_MS | main, before the watchdog starts | main, watchdog |
 * | HIGH_WATER | main (allocate) | watchdog (scan bound) |
 *
 * The heartbeat clock and the main thread's liveness words implement the watchdog's rule "a
 * heartbeat is due only for time in which the main thread could read requests"; the rule, its
 * ordering argument and its bounds are stated in `src/shm/watchdog-rule.ts`.
 *
 * Ordering rule: write the payload words first, then publish with one atomic store or CAS of the
 * word readers test first (CONTROL for a block, the cell for the queue, DOORBELL for the consumer),
 * then `Atomics.notify`. Readers load that word first, then the payload. All `Atomics` operations
 * are sequentially consistent, so a reader that sees the published word sees the payload.
 *
 * Why the generation and the reason live in the CONTROL word: one CAS then checks "same execution"
 * (a slot is reused; a late stop for the old execution must not hit the new one) and "still
 * running", and publishes the winning reason in the same step — a thread that dies right after its
 * CAS can never leave a half-written stop behind. 23 generation bits wrap after 8,388,608 reuses
 * of one slot, far beyond the lifetime of a stale reference.
 *
 * The BODY word carries the generation too, for the same reason: a body task that reaches its
 * thread late (its execution already stopped, its slot released and reused) must not move the new
 * execution's body. Every BODY transition is a CAS from "this generation, that state".
 *
 * PROGRESS has no room for a generation (the author owns all 32 bits). Its guard is an ordering
 * rule instead: a body thread writes PROGRESS only after seeing its generation in the BODY word,
 * and only while the body's context is open; the context closes (on the body's thread) before the
 * body reports its end, and the main thread releases a slot only after its body reported its end or
 * its thread exited. So no write of an old body can follow the next `allocate` of the slot.
 */

/** Counters of the heartbeat watchdog thread. */
export interface WatchdogStats {
  /** Scans made so far (passes that judged; the deferred ones are {@link deferredScans}). */
  scans: number;
  /** Cost of the last scan (µs). */
  lastScanMicros: number;
  /**
   * Total cost of all scans in ns, modulo 2^32: the cost between two readings taken less than
   * 4 s of scanning apart is `(later - earlier) >>> 0`.
   */
  scanNanosWrapping: number;
  /** Heartbeat timeouts fired so far. */
  heartbeatTimeouts: number;
  /** Scans the watchdog skipped because the main thread was stalled (see `src/shm/watchdog-rule.ts`). */
  deferredScans: number;
  /** Main-thread stalls detected so far: gaps between its liveness readings longer than the stall threshold. */
  mainStalls: number;
  /** Stall time excused from heartbeats so far (ms, modulo 2^32): each stall's length beyond the threshold. */
  mainExcusedMs: number;
}

/** The main thread's liveness as the watchdog reads it ({@link ControlTable.mainLiveness}). */
export interface MainLiveness {
  /** Shared clock of the main thread's last liveness reading. */
  aliveMs: number;
  /** Total stall time excused so far (ms, modulo 2^32): the heartbeat clock is the shared clock minus this. */
  excusedMs: number;
  /** A gap between two liveness readings longer than this is a stall; 0 = stalls are not accounted. */
  stallAfterMs: number;
  /** Stall time the watchdog itself watched after which it judges anyway (wedged main thread). */
  wedgedAfterMs: number;
}

/** Lifecycle of a control block. Transitions are listed on {@link ControlTable}. */
export const State = {
  /** Slot unused. */
  Free: 0,
  /** Prepared, not started. */
  Prepared: 1,
  /** Started; a body may be running. */
  Running: 2,
  /** A stop was requested; its event is in (or on its way into) the queue. */
  StopRequested: 3,
  /** The consumer took the event; the body is being stopped and the author's stop runs. */
  Stopping: 4,
  /** The author's stop succeeded (or there was none); the slot awaits release. */
  Stopped: 5,
  /** The author's stop failed; a later stop request may retry it. */
  StopFailed: 6,
} as const;
export type State = (typeof State)[keyof typeof State];

/** Why a stop was requested. The first reason wins and is kept in the CONTROL word. */
export const Reason = {
  None: 0,
  /** The agent called the stop endpoint. */
  Agent: 1,
  HeartbeatTimeout: 2,
  SignalInt: 3,
  SignalTerm: 4,
  SignalUsr1: 5,
  /** The execution's body threw. */
  BodyFailed: 6,
  /** A prepare request timed out on the agent's side but the handler succeeded later. */
  PrepareAbandoned: 7,
  /** `Extension.close()` or `Extension.stopAll()` called by the embedding program. */
  Shutdown: 8,
  /** Prepared and never started within `ACTIONKIT_PREPARED_TTL`: rolled back by the extension. */
  PreparedExpired: 9,
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

const REASON_TEXT: Record<Reason, string> = {
  [Reason.None]: 'none',
  [Reason.Agent]: 'agent stop',
  [Reason.HeartbeatTimeout]: 'heartbeat timeout',
  [Reason.SignalInt]: 'received signal SIGINT',
  [Reason.SignalTerm]: 'received signal SIGTERM',
  [Reason.SignalUsr1]: 'received signal SIGUSR1',
  [Reason.BodyFailed]: 'action body failed',
  [Reason.PrepareAbandoned]: 'prepare request timed out',
  [Reason.Shutdown]: 'extension shutdown',
  [Reason.PreparedExpired]: 'prepared but not started in time',
};

/** The reason as the agent sees it, e.g. `heartbeat timeout` or `received signal SIGUSR1`. */
export function reasonText(reason: Reason): string {
  return REASON_TEXT[reason];
}

/** Lifecycle of an execution's body, kept in the BODY word (with the execution's generation). */
export const BodyState = {
  /** The action has no body, or it was not started (start failed). */
  None: 0,
  /** Handed to its body thread, which has not begun it yet (microseconds, or a thread's boot). */
  Queued: 1,
  Running: 2,
  /** Returned while the execution was still running. */
  Returned: 3,
  /** Threw while the execution was still running. */
  Failed: 4,
  /** Ended (returned or threw) after the stop was requested: a cooperative stop. */
  Stopped: 5,
  /** Did not end within the grace period; its worker was terminated. */
  Killed: 6,
  /** Its execution was stopped before the body began; it never ran. */
  Skipped: 7,
} as const;
export type BodyState = (typeof BodyState)[keyof typeof BodyState];

const MAGIC = 0x41_4b_52_31; // "AKR1"

const H_MAGIC = 0;
const H_CAPACITY = 1;
const H_QUEUE_CAPACITY = 2;
const H_QUEUE_TAIL = 3;
const H_QUEUE_DOORBELL = 4;
const H_QUEUE_HEAD = 5;
const H_WATCHDOG_WAKE = 6;
const H_WATCHDOG_RUN = 7;
const H_WATCHDOG_SCANS = 8;
const H_WATCHDOG_SCAN_US = 9;
const H_WATCHDOG_TICK_MS = 10;
const H_HIGH_WATER = 11;
const H_ENQUEUED = 12;
const H_HEARTBEAT_TIMEOUTS = 13;
const H_WATCHDOG_SCAN_NS_TOTAL = 14;
const H_MAIN_ALIVE_MS = 15;
const H_MAIN_EXCUSED_MS = 16;
const H_MAIN_STALLS = 17;
const H_MAIN_STALL_AFTER_MS = 18;
const H_MAIN_WEDGED_AFTER_MS = 19;
const H_WATCHDOG_DEFERRED = 20;
const HEADER_WORDS = 32;

const B_CONTROL = 0;
const B_BODY = 1;
const B_PROGRESS = 2;
const B_HB_LAST_MS = 4;
const B_HB_EXPIRE_MS = 5;
const B_STOP_AT_US = 6;
const BLOCK_WORDS = 16;

const STATE_BITS = 4;
const REASON_BITS = 5;
const STATE_MASK = (1 << STATE_BITS) - 1;
const REASON_MASK = (1 << REASON_BITS) - 1;
const GEN_SHIFT = STATE_BITS + REASON_BITS;
/** Generations wrap modulo 2^23. */
const GEN_MASK = (1 << (32 - GEN_SHIFT)) - 1;

const CELL_SLOT_BITS = 24;
const CELL_SLOT_MASK = (1 << CELL_SLOT_BITS) - 1;
/** Largest capacity a queue cell can address (slot + 1 must fit in 24 bits). */
export const MAX_CAPACITY = CELL_SLOT_MASK - 1;

/** Pack a CONTROL word. */
export function packControl(generation: number, reason: Reason, state: State): number {
  return ((generation & GEN_MASK) << GEN_SHIFT) | (reason << STATE_BITS) | state;
}
/** The state part of a CONTROL word. */
export function stateOf(control: number): State {
  return (control & STATE_MASK) as State;
}
/** The reason part of a CONTROL word. */
export function reasonOf(control: number): Reason {
  return ((control >>> STATE_BITS) & REASON_MASK) as Reason;
}
/** The generation part of a CONTROL or BODY word. */
export function generationOf(control: number): number {
  return (control >>> GEN_SHIFT) & GEN_MASK;
}
/** Pack a BODY word: the body state of one generation of a slot. */
export function packBody(generation: number, state: BodyState): number {
  return ((generation & GEN_MASK) << GEN_SHIFT) | state;
}
/** The body state part of a BODY word. */
export function bodyStateOf(body: number): BodyState {
  return (body & STATE_MASK) as BodyState;
}

/**
 * The shared clock: the process-wide monotonic clock (`process.hrtime`, CLOCK_MONOTONIC) in
 * milliseconds modulo 2^32. Every thread of the process reads the same clock — unlike
 * `performance.now()`, whose origin is per thread — so a heartbeat stamped on the main thread can
 * be aged on the watchdog thread, and wall-clock jumps (NTP) never fire or delay a timeout.
 * Differences are taken modulo 2^32 ({@link elapsedMs}): valid for spans under 24 days.
 */
export function clockMs(): number {
  const [seconds, nanos] = process.hrtime();
  return (seconds * 1000 + Math.floor(nanos / 1e6)) >>> 0;
}
/** Milliseconds from `sinceMs` to `nowMs`, both {@link clockMs} values. */
export function elapsedMs(nowMs: number, sinceMs: number): number {
  return (nowMs - sinceMs) >>> 0;
}

/**
 * The same shared clock in microseconds modulo 2^32 (wraps every 71 minutes): for measuring how
 * fast a stop reaches a body, where milliseconds are too coarse. Spans must stay under 71 minutes.
 */
export function clockUs(): number {
  const [seconds, nanos] = process.hrtime();
  return (seconds * 1_000_000 + Math.floor(nanos / 1000)) % 4_294_967_296;
}
/** Microseconds from `sinceUs` to `nowUs`, both {@link clockUs} values. */
export function elapsedUs(nowUs: number, sinceUs: number): number {
  return (nowUs - sinceUs) >>> 0;
}

/** Outcome of {@link ControlTable.requestStop}. */
export interface StopRequestOutcome {
  /** True for exactly one caller per stop: the one whose CAS published the stop. */
  won: boolean;
  /** The CONTROL word after the attempt (the winner's word, or what the loser found). */
  control: number;
  /** The slot now belongs to another execution (or is free): the request was ignored. */
  stale: boolean;
}

/** Result of one {@link ControlTable.drainQueue} pass. */
export interface DrainResult {
  /** Events handed to the consumer in this pass. */
  taken: number;
  /** A producer reserved the head cell but has not published it yet. */
  headPending: boolean;
  /** Queue position of the head after the pass (wraps at 2^32): which cell `headPending` is about. */
  head: number;
}

/** Sizes of the buffer for a capacity. */
export function tableByteLength(capacity: number): number {
  return (HEADER_WORDS + capacity * BLOCK_WORDS + queueCapacityFor(capacity)) * 4;
}

/**
 * Queue cells: a power of two (cheap index masking) of at least twice the capacity. Capacity cells
 * would suffice for the invariant "one event in flight per slot"; the second half absorbs stale
 * events of a producer that stalled for over a second between its CAS and its enqueue while the
 * consumer's orphan sweep already took its stop (see `StopEventConsumer`).
 */
function queueCapacityFor(capacity: number): number {
  let size = 2;
  while (size < 2 * capacity) size *= 2;
  return size;
}

/**
 * Typed accessors over the shared buffer. Construct with {@link ControlTable.create} on the main
 * thread and {@link ControlTable.attach} on any other thread.
 *
 * Transitions of CONTROL (all by CAS; "main" = the main thread's store and lifecycle):
 * ```
 * Free ──allocate(main)──▶ Prepared ──markRunning(main)──▶ Running
 * Prepared | Running | StopFailed ──requestStop(any thread)──▶ StopRequested   (winner enqueues)
 * StopRequested ──take(consumer)──▶ Stopping ──finish(main)──▶ Stopped | StopFailed
 * Stopped | Prepared | StopFailed ──release(main)──▶ Free with generation + 1
 * ```
 * (Release from StopFailed is the give-up of a stop whose retries all failed.)
 */
export class ControlTable {
  /** The shared buffer; pass it to other threads with `workerData` or `postMessage`. */
  readonly buffer: SharedArrayBuffer;
  /** Number of control blocks. */
  readonly capacity: number;
  private readonly words: Int32Array;
  private readonly queueCapacity: number;
  private readonly queueMask: number;
  private readonly lapShift: number;
  private readonly queueBase: number;

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.words = new Int32Array(buffer);
    if (Atomics.load(this.words, H_MAGIC) !== MAGIC) throw new Error('not an actionkit control table');
    this.capacity = Atomics.load(this.words, H_CAPACITY);
    this.queueCapacity = Atomics.load(this.words, H_QUEUE_CAPACITY);
    this.queueMask = this.queueCapacity - 1;
    this.lapShift = Math.log2(this.queueCapacity);
    this.queueBase = HEADER_WORDS + this.capacity * BLOCK_WORDS;
  }

  /** Allocate a table with `capacity` control blocks (main thread). */
  static create(capacity: number): ControlTable {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_CAPACITY) {
      throw new RangeError(`capacity must be an integer in [1, ${MAX_CAPACITY}], got ${capacity}`);
    }
    const buffer = new SharedArrayBuffer(tableByteLength(capacity));
    const words = new Int32Array(buffer);
    words[H_CAPACITY] = capacity;
    words[H_QUEUE_CAPACITY] = queueCapacityFor(capacity);
    words[H_WATCHDOG_RUN] = 1;
    words[H_MAIN_ALIVE_MS] = clockMs();
    // Published last: attach() refuses a buffer without it.
    Atomics.store(words, H_MAGIC, MAGIC);
    return new ControlTable(buffer);
  }

  /** View a table created on another thread. */
  static attach(buffer: SharedArrayBuffer): ControlTable {
    return new ControlTable(buffer);
  }

  private base(slot: number): number {
    return HEADER_WORDS + slot * BLOCK_WORDS;
  }

  /** The CONTROL word of `slot`. */
  control(slot: number): number {
    return Atomics.load(this.words, this.base(slot) + B_CONTROL);
  }

  /**
   * Free → Prepared (main thread only). Resets the payload words before publishing. Returns the
   * generation the execution owns, or -1 when the slot is not free.
   */
  allocate(slot: number): number {
    const at = this.base(slot);
    const current = Atomics.load(this.words, at + B_CONTROL);
    if (stateOf(current) !== State.Free) return -1;
    const generation = generationOf(current);
    Atomics.store(this.words, at + B_BODY, packBody(generation, BodyState.None));
    Atomics.store(this.words, at + B_PROGRESS, 0);
    Atomics.store(this.words, at + B_HB_EXPIRE_MS, 0);
    Atomics.store(this.words, at + B_STOP_AT_US, 0);
    const prepared = packControl(generation, Reason.None, State.Prepared);
    if (Atomics.compareExchange(this.words, at + B_CONTROL, current, prepared) !== current) return -1;
    if (slot + 1 > Atomics.load(this.words, H_HIGH_WATER)) Atomics.store(this.words, H_HIGH_WATER, slot + 1);
    return generation;
  }

  /**
   * Prepared → Running (main thread, after a start). Arms the heartbeat first (payload before
   * publish) so the watchdog never sees a Running block with a stale heartbeat. `expireAfterMs` 0
   * leaves the execution unwatched. Returns false if a stop was requested meanwhile. `nowMs` (the
   * shared clock) is for tests that drive the clock themselves.
   */
  markRunning(slot: number, generation: number, expireAfterMs: number, nowMs = clockMs()): boolean {
    const at = this.base(slot);
    Atomics.store(this.words, at + B_HB_LAST_MS, this.markMainAlive(nowMs));
    Atomics.store(this.words, at + B_HB_EXPIRE_MS, expireAfterMs);
    const from = packControl(generation, Reason.None, State.Prepared);
    const to = packControl(generation, Reason.None, State.Running);
    return Atomics.compareExchange(this.words, at + B_CONTROL, from, to) === from;
  }

  /**
   * The one entry point for every stop trigger, callable from any thread: agent stop, duplicate
   * agent stops, heartbeat timeout, signals, a failed body.
   *
   * CAS Prepared | Running | StopFailed → StopRequested with `reason`, for this `generation` only.
   * Exactly one caller wins; the winner stamps the request time, enqueues the slot and wakes a
   * body sleeping on the CONTROL word. Losers get the word they found and share the winner's
   * outcome (the main thread keeps it per execution).
   */
  requestStop(slot: number, generation: number, reason: Reason): StopRequestOutcome {
    const at = this.base(slot) + B_CONTROL;
    for (;;) {
      const current = Atomics.load(this.words, at);
      if (generationOf(current) !== (generation & GEN_MASK)) return { won: false, control: current, stale: true };
      const state = stateOf(current);
      if (state !== State.Prepared && state !== State.Running && state !== State.StopFailed) {
        return { won: false, control: current, stale: state === State.Free };
      }
      const next = packControl(generation, reason, State.StopRequested);
      if (Atomics.compareExchange(this.words, at, current, next) === current) {
        Atomics.store(this.words, this.base(slot) + B_STOP_AT_US, clockUs());
        Atomics.notify(this.words, at);
        this.enqueue(slot);
        return { won: true, control: next, stale: false };
      }
      // Lost a race with another transition of the same generation: look again.
    }
  }

  /**
   * StopRequested → Stopping (the consumer, once per stop). Returns the new CONTROL word, or -1 if
   * the block was not in StopRequested. A CONTROL word is never -1 (state 15 does not exist); it
   * is negative for generations ≥ 2^22, so compare with -1, never with 0.
   */
  take(slot: number): number {
    const at = this.base(slot) + B_CONTROL;
    const current = Atomics.load(this.words, at);
    if (stateOf(current) !== State.StopRequested) return -1;
    const next = packControl(generationOf(current), reasonOf(current), State.Stopping);
    return Atomics.compareExchange(this.words, at, current, next) === current ? next : -1;
  }

  /** Stopping → Stopped (`succeeded`) or StopFailed, keeping generation and reason (main thread). */
  finish(slot: number, generation: number, succeeded: boolean): boolean {
    const at = this.base(slot) + B_CONTROL;
    const current = Atomics.load(this.words, at);
    if (generationOf(current) !== (generation & GEN_MASK) || stateOf(current) !== State.Stopping) return false;
    const next = packControl(generation, reasonOf(current), succeeded ? State.Stopped : State.StopFailed);
    return Atomics.compareExchange(this.words, at, current, next) === current;
  }

  /**
   * Stopped | Prepared | StopFailed → Free with the next generation (main thread). After this,
   * every stale reference to the old execution fails its generation check. From StopFailed it is
   * the give-up of a failed stop; a concurrent retry (`requestStop`) and the release race by CAS,
   * and exactly one of them wins.
   */
  release(slot: number, generation: number): boolean {
    const at = this.base(slot) + B_CONTROL;
    const current = Atomics.load(this.words, at);
    const state = stateOf(current);
    if (generationOf(current) !== (generation & GEN_MASK) || (state !== State.Stopped && state !== State.Prepared && state !== State.StopFailed)) {
      return false;
    }
    const next = packControl(generation + 1, Reason.None, State.Free);
    if (Atomics.compareExchange(this.words, at, current, next) !== current) return false;
    Atomics.notify(this.words, at);
    return true;
  }

  /**
   * True while `slot` still runs `generation` and no stop was requested — the body's stop check.
   * One `Atomics.load` and a compare: a few nanoseconds.
   */
  isRunning(slot: number, generation: number): boolean {
    return Atomics.load(this.words, this.base(slot) + B_CONTROL) === packControl(generation, Reason.None, State.Running);
  }

  /**
   * Block the calling thread for up to `timeoutMs` or until the CONTROL word of `slot` leaves
   * "Running, this generation". Returns true if the execution is no longer running. Never call it
   * on the main thread: it blocks the event loop.
   */
  waitWhileRunning(slot: number, generation: number, timeoutMs: number): boolean {
    const running = packControl(generation, Reason.None, State.Running);
    const at = this.base(slot) + B_CONTROL;
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (Atomics.load(this.words, at) !== running) return true;
      const left = deadline - performance.now();
      if (left <= 0) return false;
      // Spurious or unrelated wake-ups are possible (tc39 note: always loop on the condition).
      Atomics.wait(this.words, at, running, left);
    }
  }

  /**
   * {@link waitWhileRunning} without blocking the thread (`Atomics.waitAsync`): resolves true as
   * soon as the execution is no longer running, false after `timeoutMs`.
   */
  async waitWhileRunningAsync(slot: number, generation: number, timeoutMs: number): Promise<boolean> {
    const running = packControl(generation, Reason.None, State.Running);
    const at = this.base(slot) + B_CONTROL;
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (Atomics.load(this.words, at) !== running) return true;
      const left = deadline - performance.now();
      if (left <= 0) return false;
      const result = Atomics.waitAsync(this.words, at, running, left);
      if (result.async) await result.value;
    }
  }

  /** The body state of `generation` in `slot`; None if the slot holds another generation. */
  bodyState(slot: number, generation: number): BodyState {
    const word = Atomics.load(this.words, this.base(slot) + B_BODY);
    return generationOf(word) === (generation & GEN_MASK) ? bodyStateOf(word) : BodyState.None;
  }

  /** CAS the BODY word from (`generation`, `from`) to (`generation`, `to`); false if it was anything else. */
  transitionBody(slot: number, generation: number, from: BodyState, to: BodyState): boolean {
    const expected = packBody(generation, from);
    return Atomics.compareExchange(this.words, this.base(slot) + B_BODY, expected, packBody(generation, to)) === expected;
  }

  /** Body progress (written by the body, read by status). */
  progress(slot: number): number {
    return Atomics.load(this.words, this.base(slot) + B_PROGRESS);
  }

  /**
   * Store the progress of the body of `generation` (body thread); false, and nothing written, if
   * the slot's BODY word holds another generation. See the module comment for why this check and
   * the body context's closing together keep an old body from writing a reused slot.
   */
  setProgress(slot: number, generation: number, value: number): boolean {
    const at = this.base(slot);
    if (generationOf(Atomics.load(this.words, at + B_BODY)) !== (generation & GEN_MASK)) return false;
    Atomics.store(this.words, at + B_PROGRESS, value);
    return true;
  }

  /** A status request arrived: stamp the heartbeat on the heartbeat clock (main thread). */
  recordHeartbeat(slot: number, nowMs = clockMs()): void {
    Atomics.store(this.words, this.base(slot) + B_HB_LAST_MS, this.markMainAlive(nowMs));
  }

  /**
   * Watch the heartbeat of a block its owner holds Running, from now on: stamp it, then publish the
   * expiry (payload before publish, as in {@link markRunning}). For an execution marked Running
   * unwatched (expiry 0) while its start was still under way (main thread).
   */
  watchHeartbeat(slot: number, expireAfterMs: number): void {
    const at = this.base(slot);
    Atomics.store(this.words, at + B_HB_LAST_MS, this.markMainAlive());
    Atomics.store(this.words, at + B_HB_EXPIRE_MS, expireAfterMs);
  }

  /** When the stop of `slot` was requested ({@link clockUs}). */
  stopRequestedAtUs(slot: number): number {
    return Atomics.load(this.words, this.base(slot) + B_STOP_AT_US) >>> 0;
  }

  /**
   * The main thread is running now (main thread only: it is the single writer of the liveness
   * words, so this read-modify-write needs no CAS). If the gap since its previous reading is longer
   * than the stall threshold, the part beyond the threshold is excused: added to MAIN_EXCUSED_MS
   * (and MAIN_STALLS counts it) before MAIN_ALIVE_MS publishes the new reading. Returns the
   * heartbeat clock now — the shared clock minus all excused time — on which heartbeats are
   * stamped. Called by every heartbeat stamp and by the main thread's liveness timer, so the
   * first reading after a stall or a freeze accounts for it before any heartbeat is stamped.
   */
  markMainAlive(nowMs = clockMs()): number {
    const stallAfterMs = Atomics.load(this.words, H_MAIN_STALL_AFTER_MS);
    const gapMs = (nowMs - Atomics.load(this.words, H_MAIN_ALIVE_MS)) | 0;
    if (stallAfterMs > 0 && gapMs > stallAfterMs) {
      Atomics.add(this.words, H_MAIN_EXCUSED_MS, gapMs - stallAfterMs);
      Atomics.add(this.words, H_MAIN_STALLS, 1);
    }
    Atomics.store(this.words, H_MAIN_ALIVE_MS, nowMs);
    return (nowMs - Atomics.load(this.words, H_MAIN_EXCUSED_MS)) >>> 0;
  }

  /**
   * Enable stall accounting (main thread, before the watchdog starts): a gap longer than
   * `stallAfterMs` between two liveness readings of the main thread is a stall; the watchdog judges
   * anyway once it watched a stall for `wedgedAfterMs`. Also stamps the main thread alive at `nowMs`.
   */
  setMainStallRule(stallAfterMs: number, wedgedAfterMs: number, nowMs = clockMs()): void {
    Atomics.store(this.words, H_MAIN_ALIVE_MS, nowMs);
    Atomics.store(this.words, H_MAIN_WEDGED_AFTER_MS, wedgedAfterMs);
    Atomics.store(this.words, H_MAIN_STALL_AFTER_MS, stallAfterMs);
  }

  /**
   * The main thread's liveness words (watchdog). Loads MAIN_ALIVE_MS before MAIN_EXCUSED_MS: the
   * main thread adds a stall's excuse before it publishes the reading that ends the stall, so a
   * reader that sees that reading also sees the excuse.
   */
  mainLiveness(): MainLiveness {
    const aliveMs = Atomics.load(this.words, H_MAIN_ALIVE_MS) >>> 0;
    const excusedMs = Atomics.load(this.words, H_MAIN_EXCUSED_MS) >>> 0;
    return {
      aliveMs,
      excusedMs,
      stallAfterMs: Atomics.load(this.words, H_MAIN_STALL_AFTER_MS),
      wedgedAfterMs: Atomics.load(this.words, H_MAIN_WEDGED_AFTER_MS),
    };
  }

  /** Count a scan the watchdog skipped because the main thread was stalled (watchdog thread). */
  recordDeferredScan(): void {
    Atomics.add(this.words, H_WATCHDOG_DEFERRED, 1);
  }

  /**
   * One watchdog pass over every slot ever used: request a `heartbeat timeout` stop for each
   * Running execution whose last heartbeat is older than its expiry, both on the heartbeat clock
   * (`nowMs` is that clock; see `src/shm/watchdog-rule.ts` for when the watchdog may call this).
   * Cost is one load per slot (two more for running ones): O(slots), no timer per execution.
   * Returns the stops it won.
   */
  scanHeartbeats(nowMs: number): number {
    const highWater = Atomics.load(this.words, H_HIGH_WATER);
    let fired = 0;
    for (let slot = 0; slot < highWater; slot++) {
      const at = this.base(slot);
      const control = Atomics.load(this.words, at + B_CONTROL);
      if (stateOf(control) !== State.Running) continue;
      const expireAfterMs = Atomics.load(this.words, at + B_HB_EXPIRE_MS);
      if (expireAfterMs <= 0) continue;
      // Signed difference: a heartbeat stamped after `nowMs` was read (a few µs ago, on another
      // thread) is "in the future" and must count as fresh, not as 49 days old.
      if (((nowMs - Atomics.load(this.words, at + B_HB_LAST_MS)) | 0) < expireAfterMs) continue;
      if (this.requestStop(slot, generationOf(control), Reason.HeartbeatTimeout).won) fired++;
    }
    if (fired > 0) Atomics.add(this.words, H_HEARTBEAT_TIMEOUTS, fired);
    return fired;
  }

  // ---- stop-event queue: multi-producer, single consumer (the main thread) -------------------

  private lapTag(position: number): number {
    // 1..128: never 0 (an untouched cell), and consecutive laps of a cell always differ.
    return ((position >>> this.lapShift) & 0x7f) + 1;
  }

  /**
   * Publish `slot` (called only by the winner of a stop CAS). Each slot has at most one event in
   * flight — it leaves StopRequested only when the consumer took its event — so at most
   * `capacity` events are outstanding and the queue (≥ capacity cells) cannot overflow. The check
   * below makes a violation of that invariant loud instead of silently overwriting an event.
   */
  private enqueue(slot: number): void {
    const position = Atomics.add(this.words, H_QUEUE_TAIL, 1) >>> 0;
    const head = Atomics.load(this.words, H_QUEUE_HEAD) >>> 0;
    if (((position - head) >>> 0) >= this.queueCapacity) {
      throw new Error(`stop queue overflow at position ${position} (head ${head}): invariant violated`);
    }
    const cell = ((this.lapTag(position) << CELL_SLOT_BITS) | (slot + 1)) | 0;
    Atomics.store(this.words, this.queueBase + (position & this.queueMask), cell);
    Atomics.add(this.words, H_ENQUEUED, 1);
    Atomics.add(this.words, H_QUEUE_DOORBELL, 1);
    Atomics.notify(this.words, H_QUEUE_DOORBELL);
  }

  /** The doorbell value; read it before {@link drainQueue}, then wait for it to change. */
  doorbell(): number {
    return Atomics.load(this.words, H_QUEUE_DOORBELL);
  }

  /** Resolve when the doorbell differs from `seen` or after `timeoutMs` (consumer side, never blocks). */
  async waitDoorbell(seen: number, timeoutMs: number): Promise<void> {
    const result = Atomics.waitAsync(this.words, H_QUEUE_DOORBELL, seen, timeoutMs);
    if (result.async) await result.value;
  }

  /** Wake a consumer waiting in {@link waitDoorbell} (used to shut it down). */
  ringDoorbell(): void {
    Atomics.add(this.words, H_QUEUE_DOORBELL, 1);
    Atomics.notify(this.words, H_QUEUE_DOORBELL);
  }

  /**
   * Hand every published event, in order, to `consume` (single consumer only). Stops at the first
   * cell that is reserved but not yet published; the caller waits for the doorbell and drains
   * again. A cell whose producer died between reserving and publishing would block the queue:
   * {@link skipPendingHead} is the caller's escape after a timeout.
   */
  drainQueue(consume: (slot: number) => void): DrainResult {
    let head = Atomics.load(this.words, H_QUEUE_HEAD) >>> 0;
    let taken = 0;
    for (;;) {
      const tail = Atomics.load(this.words, H_QUEUE_TAIL) >>> 0;
      if (head === tail) return { taken, headPending: false, head };
      const cell = Atomics.load(this.words, this.queueBase + (head & this.queueMask));
      if (cell >>> CELL_SLOT_BITS !== this.lapTag(head)) return { taken, headPending: true, head };
      head = (head + 1) >>> 0;
      Atomics.store(this.words, H_QUEUE_HEAD, head | 0);
      taken++;
      consume((cell & CELL_SLOT_MASK) - 1);
    }
  }

  /**
   * Skip a head cell that stayed reserved-but-unpublished (its producer died mid-enqueue). Its
   * lap tag can never match again, so a late publication is ignored; the orphan sweep
   * ({@link forEachStopRequested}) then finds the stop whose event was lost.
   */
  skipPendingHead(): void {
    const head = Atomics.load(this.words, H_QUEUE_HEAD) >>> 0;
    if (head !== Atomics.load(this.words, H_QUEUE_TAIL) >>> 0) Atomics.store(this.words, H_QUEUE_HEAD, (head + 1) | 0);
  }

  /** Visit every slot in StopRequested with its CONTROL word (orphan sweep). */
  forEachStopRequested(visit: (slot: number, control: number) => void): void {
    const highWater = Atomics.load(this.words, H_HIGH_WATER);
    for (let slot = 0; slot < highWater; slot++) {
      const control = this.control(slot);
      if (stateOf(control) === State.StopRequested) visit(slot, control);
    }
  }

  /** Events published but not yet consumed (approximate while producers run). */
  queueDepth(): number {
    return ((Atomics.load(this.words, H_QUEUE_TAIL) >>> 0) - (Atomics.load(this.words, H_QUEUE_HEAD) >>> 0)) >>> 0;
  }

  /** Total events ever enqueued. */
  enqueuedTotal(): number {
    return Atomics.load(this.words, H_ENQUEUED) >>> 0;
  }

  // ---- watchdog control ----------------------------------------------------------------------

  /** Set the watchdog's scan period (main, before starting it). */
  setWatchdogTickMs(tickMs: number): void {
    Atomics.store(this.words, H_WATCHDOG_TICK_MS, tickMs);
  }

  /** The watchdog's scan period. */
  watchdogTickMs(): number {
    return Atomics.load(this.words, H_WATCHDOG_TICK_MS);
  }

  /** Ask the watchdog thread to exit and wake it. */
  stopWatchdog(): void {
    Atomics.store(this.words, H_WATCHDOG_RUN, 0);
    Atomics.add(this.words, H_WATCHDOG_WAKE, 1);
    Atomics.notify(this.words, H_WATCHDOG_WAKE);
  }

  /** True until {@link stopWatchdog}. */
  watchdogShouldRun(): boolean {
    return Atomics.load(this.words, H_WATCHDOG_RUN) === 1;
  }

  /** Sleep the watchdog thread for one tick (or until woken). Watchdog thread only. */
  watchdogSleep(tickMs: number): void {
    Atomics.wait(this.words, H_WATCHDOG_WAKE, Atomics.load(this.words, H_WATCHDOG_WAKE), tickMs);
  }

  /** Record one finished scan and its cost (watchdog thread). */
  recordScan(nanos: number): void {
    Atomics.store(this.words, H_WATCHDOG_SCAN_US, Math.round(nanos / 1000));
    // Wraps at 2^32 ns (4.3 s of scanning): readers subtract two readings (`>>> 0`), never read it alone.
    Atomics.add(this.words, H_WATCHDOG_SCAN_NS_TOTAL, Math.round(nanos));
    Atomics.add(this.words, H_WATCHDOG_SCANS, 1);
  }

  /** Watchdog statistics: scans so far, cost of the last scan and of all scans (wrapping), heartbeat timeouts fired, scans deferred and main-thread stalls excused. */
  watchdogStats(): WatchdogStats {
    return {
      scans: Atomics.load(this.words, H_WATCHDOG_SCANS) >>> 0,
      lastScanMicros: Atomics.load(this.words, H_WATCHDOG_SCAN_US),
      scanNanosWrapping: Atomics.load(this.words, H_WATCHDOG_SCAN_NS_TOTAL) >>> 0,
      heartbeatTimeouts: Atomics.load(this.words, H_HEARTBEAT_TIMEOUTS) >>> 0,
      deferredScans: Atomics.load(this.words, H_WATCHDOG_DEFERRED) >>> 0,
      mainStalls: Atomics.load(this.words, H_MAIN_STALLS) >>> 0,
      mainExcusedMs: Atomics.load(this.words, H_MAIN_EXCUSED_MS) >>> 0,
    };
  }
}
