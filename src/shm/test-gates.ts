/**
 * Test-only hold points for worker threads: a test arms a named point, a worker thread that
 * reaches it blocks there until the test opens it. This is how a test forces an interleaving
 * between a worker and the main thread ("the body thread received its task but has not begun it")
 * instead of hoping a storm hits it. Production never creates the buffer: a worker's check is one
 * `undefined` comparison.
 *
 * ```
 *  Int32 words, 4 per point
 *  ┌───────────────── point p ─────────────────┐
 *  │ 4p+0 ARMED    1 while armed               │  written by the test (main), read by workers
 *  │ 4p+1 ARRIVED  threads that reached it     │  Atomics.add by workers, read by the test
 *  │ 4p+2 OPENED   epoch, bumped to release    │  written by the test, waited on by workers
 *  │ 4p+3 reserved                             │
 *  └───────────────────────────────────────────┘
 * ```
 *
 * Ordering: a worker reads OPENED first, then ARMED, then announces itself (ARRIVED + notify) and
 * waits while OPENED is unchanged. The test clears ARMED, then bumps OPENED and notifies: a worker
 * that read ARMED = 1 before that waits on the old epoch and is woken; one that comes later sees
 * ARMED = 0 and passes.
 */

/** The worker-side hold points. */
export const GatePoint = {
  /** A body thread received a run and has not yet moved the BODY word to Running. */
  BodyBeforeBegin: 0,
  /** A body thread is about to post the end of a run (its context is closed). */
  BodyBeforeEnded: 1,
  /** The large-request lane received a body to decode and has not begun (`src/runtime/sealed.ts`). */
  LargeRequestDecode: 2,
  /** A handler thread is booting and has not loaded the action modules (`workers/handlers.ts`). */
  HandlerThreadLoad: 3,
} as const;
export type GatePoint = (typeof GatePoint)[keyof typeof GatePoint];

const POINTS = 4;
const WORDS_PER_POINT = 4;
const ARMED = 0;
const ARRIVED = 1;
const OPENED = 2;

/** How long a held worker waits before giving up (a test that forgot to open must fail, not hang). */
const HOLD_LIMIT_MS = 60_000;

/** Hold points in one SharedArrayBuffer, shared by the test and the worker threads. */
export class TestGates {
  readonly buffer: SharedArrayBuffer;
  private readonly words: Int32Array;

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.words = new Int32Array(buffer);
  }

  /** New gates, all open (test, main thread). */
  static create(): TestGates {
    return new TestGates(new SharedArrayBuffer(POINTS * WORDS_PER_POINT * 4));
  }

  /** View gates created on another thread. */
  static attach(buffer: SharedArrayBuffer): TestGates {
    return new TestGates(buffer);
  }

  /** Make threads that reach `point` from now on wait there (test). */
  arm(point: GatePoint): void {
    Atomics.store(this.words, point * WORDS_PER_POINT + ARRIVED, 0);
    Atomics.store(this.words, point * WORDS_PER_POINT + ARMED, 1);
  }

  /** Threads that reached `point` since it was last armed (test). */
  arrivals(point: GatePoint): number {
    return Atomics.load(this.words, point * WORDS_PER_POINT + ARRIVED);
  }

  /** Resolve once `count` threads are held at `point`; reject after `timeoutMs` naming the point (test). */
  async arrived(point: GatePoint, count = 1, timeoutMs = 20_000): Promise<void> {
    const at = point * WORDS_PER_POINT + ARRIVED;
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const seen = Atomics.load(this.words, at);
      if (seen >= count) return;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no thread reached hold point ${pointName(point)} within ${timeoutMs} ms (${seen} of ${count})`);
      const result = Atomics.waitAsync(this.words, at, seen, left);
      if (result.async) await result.value;
    }
  }

  /** Disarm `point` and release every thread held there (test). */
  open(point: GatePoint): void {
    Atomics.store(this.words, point * WORDS_PER_POINT + ARMED, 0);
    Atomics.add(this.words, point * WORDS_PER_POINT + OPENED, 1);
    Atomics.notify(this.words, point * WORDS_PER_POINT + OPENED);
  }

  /** A worker thread reached `point`: wait there while it is armed (blocks the calling thread). */
  pass(point: GatePoint): void {
    const base = point * WORDS_PER_POINT;
    const epoch = Atomics.load(this.words, base + OPENED);
    if (Atomics.load(this.words, base + ARMED) === 0) return;
    Atomics.add(this.words, base + ARRIVED, 1);
    Atomics.notify(this.words, base + ARRIVED);
    const deadline = performance.now() + HOLD_LIMIT_MS;
    while (Atomics.load(this.words, base + OPENED) === epoch) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`hold point ${pointName(point)} was never opened`);
      Atomics.wait(this.words, base + OPENED, epoch, left);
    }
  }
}

function pointName(point: GatePoint): string {
  return Object.entries(GatePoint).find(([, value]) => value === point)?.[0] ?? String(point);
}
