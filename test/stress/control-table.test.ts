/**
 * Stress and unit tests of the shared-memory control table (`src/shm/table.ts`): the CONTROL
 * word state machine, the stop-event queue, and their behaviour under a seeded many-thread storm.
 *
 * Replay: every failure message carries the seed; run
 *   STRESS_SEED=<seed>[,<seed>…] [STRESS_SECONDS=<s>] node --test /tmp/stress-dist/test/stress/control-table.test.js
 * A seed fixes the table size, the thread count, every thread's random schedule (slots, generations,
 * reasons, bursts, naps) and main's decisions; the OS still decides the interleaving, so a replay
 * reproduces the workload, not the exact race.
 *
 * Every wait is bounded and every worker's 'error' and 'exit' are watched: a broken invariant or a
 * dead thread fails the test with the seed and a dump of the table; nothing can hang.
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { setImmediate as macrotask, setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import {
  clockMs,
  ControlTable,
  generationOf,
  packControl,
  Reason,
  reasonOf,
  State,
  stateOf,
  tableByteLength,
} from '../../src/shm/table.js';
import { StopEventConsumer } from '../../src/shm/consumer.js';
import {
  CATEGORY_NAMES,
  chooseGeneration,
  chooseSlot,
  Ctl,
  ctlWords,
  deriveSeed,
  describeControl,
  GEN_MASK,
  JOURNAL_ENTRIES,
  JOURNAL_ENTRY_WORDS,
  mulberry32,
  P,
  PRODUCER_REASONS,
  PRODUCER_WORDS,
  RAW_B_HB_LAST_MS,
  RAW_BLOCK_WORDS,
  RAW_HEADER_WORDS,
  RAW_QUEUE_HEAD,
  RAW_QUEUE_TAIL,
  rawCell,
  rawCellIndex,
  rawControlIndex,
  rawQueueCapacity,
  reasonName,
  type ProducerCounts,
  type WorkerData,
  type WorkerMessage,
} from './stress-support.js';

// ---- configuration ------------------------------------------------------------------------------

const STORM_SECONDS = envNumber('STRESS_SECONDS', 5);
const SEEDS = envSeeds();
const WORKER_URL = new URL('./producer-worker.js', import.meta.url);
const TEST_FILE = 'test/stress/control-table.test.js';
/** How long the storm's consumer waits on a reserved, unpublished head cell before skipping it (see its use). */
const STALL_MS = 2_000;

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, got ${raw}`);
  return value;
}

function envSeeds(): number[] {
  const raw = process.env['STRESS_SEED'];
  if (raw === undefined || raw === '') return [randomInt(2 ** 32), randomInt(2 ** 32), randomInt(2 ** 32)];
  return raw.split(',').map((part) => {
    const seed = Number(part.trim());
    if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new Error(`STRESS_SEED: ${part} is not a uint32`);
    return seed;
  });
}

function replay(seed: number, name: string): string {
  return `replay: STRESS_SEED=${seed} STRESS_SECONDS=${STORM_SECONDS} node --test --test-name-pattern='${name}' /tmp/stress-dist/${TEST_FILE}`;
}

// ---- small helpers ------------------------------------------------------------------------------

/** Spawn a test thread; collect its messages; remember how it ended. */
class TestThread {
  readonly worker: Worker;
  readonly messages: WorkerMessage[] = [];
  done: Extract<WorkerMessage, { type: 'done' }> | undefined;
  exitCode: number | undefined;
  error: Error | undefined;
  /** Terminated on purpose by the test. */
  killed = false;
  lastCounts: ProducerCounts | undefined;
  readonly exited: Promise<number>;
  private readonly listeners: ((message: WorkerMessage) => void)[] = [];

  constructor(readonly name: string, data: WorkerData, onFatal: (why: string) => void) {
    this.worker = new Worker(WORKER_URL, { workerData: data });
    this.worker.on('message', (message: WorkerMessage) => {
      if (message.type === 'done') this.done = message;
      if (message.type === 'progress') this.lastCounts = message.counts;
      if (message.type === 'done' && message.counts) this.lastCounts = message.counts;
      if (message.type !== 'progress') this.messages.push(message);
      for (const listener of this.listeners) listener(message);
    });
    this.worker.on('error', (error) => {
      this.error = error;
      onFatal(`thread ${name} threw: ${error.stack ?? String(error)}`);
    });
    this.exited = new Promise((resolve) => {
      this.worker.on('exit', (code) => {
        this.exitCode = code;
        if (!this.killed && code !== 0) onFatal(`thread ${name} exited with code ${code}`);
        else if (!this.killed && this.done === undefined && this.error === undefined) onFatal(`thread ${name} exited before reporting`);
        resolve(code);
      });
    });
  }

  onMessage(listener: (message: WorkerMessage) => void): void {
    this.listeners.push(listener);
  }

  async kill(): Promise<void> {
    this.killed = true;
    await this.worker.terminate();
  }
}

/** Wait until `words[index]` becomes `value` (Atomics.waitAsync, bounded). */
async function untilWord(words: Int32Array, index: number, value: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const current = Atomics.load(words, index);
    if (current === value) return true;
    const left = deadline - performance.now();
    if (left <= 0) return false;
    const result = Atomics.waitAsync(words, index, current, Math.min(left, 50));
    if (result.async) await result.value;
  }
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** One line per used slot plus the queue header: for failure messages. */
function dumpTable(table: ControlTable, extra?: (slot: number) => string): string {
  const words = new Int32Array(table.buffer);
  const head = Atomics.load(words, RAW_QUEUE_HEAD) >>> 0;
  const tail = Atomics.load(words, RAW_QUEUE_TAIL) >>> 0;
  const queueCapacity = rawQueueCapacity(table.capacity);
  const lines = [
    `table: capacity ${table.capacity}, queue capacity ${queueCapacity}, head ${head}, tail ${tail}, depth ${table.queueDepth()}, enqueued ${table.enqueuedTotal()}, doorbell ${table.doorbell()}, watchdog ${JSON.stringify(table.watchdogStats())}`,
  ];
  const cells: string[] = [];
  for (let i = 0; i < queueCapacity; i++) {
    const cell = Atomics.load(words, rawCellIndex(table.capacity, i));
    cells.push(`[${i}] tag ${cell >>> 24} slot ${(cell & 0xffffff) - 1}`);
  }
  lines.push(`cells: ${cells.slice(0, 64).join(', ')}${queueCapacity > 64 ? ' …' : ''}`);
  for (let slot = 0; slot < Math.min(table.capacity, 128); slot++) {
    lines.push(`  slot ${slot}: ${describeControl(table.control(slot))}${extra ? ` | ${extra(slot)}` : ''}`);
  }
  return lines.join('\n');
}

/**
 * Violations collected during a run, grouped by kind (the message with its numbers blanked), so a
 * frequent one cannot hide a rare one: each kind keeps its count and its first examples.
 */
class Violations {
  private readonly kinds = new Map<string, { count: number; examples: string[] }>();
  total = 0;
  add(message: string): void {
    this.total++;
    const kind = message.replace(/\d+(\.\d+)?/g, '#');
    let group = this.kinds.get(kind);
    if (group === undefined) this.kinds.set(kind, (group = { count: 0, examples: [] }));
    group.count++;
    if (group.examples.length < 4) group.examples.push(message);
  }
  get list(): string[] {
    return [...this.kinds.values()].map((group) => `${group.count}× ${group.examples.join('\n      ')}`);
  }
}

/** The fields of a drain result a test asserts (the head position is checked where it matters). */
function takenAndPending(result: { taken: number; headPending: boolean }): { taken: number; headPending: boolean } {
  return { taken: result.taken, headPending: result.headPending };
}

// ---- 0. the raw layout the fault injection relies on ---------------------------------------------

test('layout: the raw offsets used for fault injection match the table accessors', () => {
  for (const capacity of [1, 3, 4, 5, 64]) {
    const table = ControlTable.create(capacity);
    const words = new Int32Array(table.buffer);
    const queueCapacity = rawQueueCapacity(capacity);
    assert.equal(table.buffer.byteLength, (RAW_HEADER_WORDS + capacity * RAW_BLOCK_WORDS + queueCapacity) * 4);
    assert.equal(tableByteLength(capacity), table.buffer.byteLength);
    const slot = capacity - 1;
    const generation = table.allocate(slot);
    assert.equal(Atomics.load(words, rawControlIndex(slot)), table.control(slot), 'CONTROL word offset');
    const before = clockMs();
    assert.ok(table.markRunning(slot, generation, 1000));
    const stamped = Atomics.load(words, RAW_HEADER_WORDS + slot * RAW_BLOCK_WORDS + RAW_B_HB_LAST_MS) >>> 0;
    assert.ok(stamped >= before && stamped <= clockMs(), 'HB_LAST_MS offset');
    assert.ok(table.requestStop(slot, generation, Reason.Agent).won);
    assert.equal(Atomics.load(words, RAW_QUEUE_TAIL), 1, 'QUEUE_TAIL word');
    assert.equal(Atomics.load(words, rawCellIndex(capacity, 0)), rawCell(queueCapacity, 0, slot), 'cell encoding and queue base');
    assert.deepEqual(takenAndPending(table.drainQueue(() => {})), { taken: 1, headPending: false });
    assert.equal(Atomics.load(words, RAW_QUEUE_HEAD), 1, 'QUEUE_HEAD word');
  }
});

// ---- 1. CONTROL word packing -----------------------------------------------------------------------

test('packControl/stateOf/reasonOf/generationOf round-trip, generations wrap at 2^23', () => {
  const generations = [0, 1, 2, 1000, 2 ** 22 - 1, 2 ** 22, 2 ** 22 + 1, GEN_MASK - 1, GEN_MASK];
  const states = Object.values(State);
  for (const generation of generations) {
    for (let reason = 0; reason < 32; reason++) {
      for (const state of states) {
        const word = packControl(generation, reason as Reason, state);
        assert.equal(generationOf(word), generation, `gen ${generation} reason ${reason} state ${state}`);
        assert.equal(reasonOf(word), reason);
        assert.equal(stateOf(word), state);
        assert.equal(word, word | 0, 'a CONTROL word is an int32 (what Atomics returns)');
      }
    }
  }
  // Modulo 2^23: generation + 1 after the last one is 0; negative and oversized inputs are masked.
  assert.equal(generationOf(packControl(GEN_MASK + 1, Reason.None, State.Free)), 0);
  assert.equal(generationOf(packControl(2 ** 23 + 5, Reason.None, State.Free)), 5);
  assert.equal(generationOf(packControl(-1, Reason.None, State.Free)), GEN_MASK);
  assert.equal(packControl(2 ** 23 + 7, Reason.Agent, State.Running), packControl(7, Reason.Agent, State.Running));
  // Distinct (generation, reason, state) triples never collide.
  const seen = new Set<number>();
  for (const generation of [0, 1, GEN_MASK]) {
    for (let reason = 0; reason < 32; reason++) for (const state of states) seen.add(packControl(generation, reason as Reason, state));
  }
  assert.equal(seen.size, 3 * 32 * states.length);
});

// ---- 2. the state machine, one thread ---------------------------------------------------------------

/** Put `slot` of a fresh table into `state` at its current generation; returns the generation. */
function driveTo(table: ControlTable, slot: number, state: State): number {
  const generation = generationOf(table.control(slot));
  if (state === State.Free) return generation;
  assert.equal(table.allocate(slot), generation);
  if (state === State.Prepared) return generation;
  if (state === State.Running) {
    assert.ok(table.markRunning(slot, generation, 0));
    return generation;
  }
  assert.ok(table.markRunning(slot, generation, 0));
  assert.ok(table.requestStop(slot, generation, Reason.Agent).won);
  if (state === State.StopRequested) return generation;
  assert.deepEqual(takenAndPending(table.drainQueue((s) => assert.notEqual(table.take(s), -1))), { taken: 1, headPending: false });
  if (state === State.Stopping) return generation;
  assert.ok(table.finish(slot, generation, state === State.Stopped));
  return generation;
}

test('requestStop from each state: wins exactly from Prepared, Running and StopFailed', () => {
  const expectations: [State, boolean, boolean][] = [
    // state, wins, stale flag when it loses
    [State.Free, false, true],
    [State.Prepared, true, false],
    [State.Running, true, false],
    [State.StopRequested, false, false],
    [State.Stopping, false, false],
    [State.Stopped, false, false],
    [State.StopFailed, true, false],
  ];
  for (const [state, wins, staleWhenLost] of expectations) {
    const table = ControlTable.create(4);
    const slot = 2;
    const generation = driveTo(table, slot, state);
    const before = table.control(slot);
    const enqueuedBefore = table.enqueuedTotal();
    const first = table.requestStop(slot, generation, Reason.SignalUsr1);
    assert.equal(first.won, wins, `requestStop from ${state}`);
    if (wins) {
      assert.equal(first.control, packControl(generation, Reason.SignalUsr1, State.StopRequested));
      assert.equal(table.enqueuedTotal(), enqueuedBefore + 1, 'the winner enqueues');
      // A second request in the same round loses and sees the winner's word (first reason wins).
      const second = table.requestStop(slot, generation, Reason.Shutdown);
      assert.deepEqual(second, { won: false, control: first.control, stale: false });
      const taken: number[] = [];
      table.drainQueue((s) => taken.push(table.take(s)));
      assert.deepEqual(taken, [packControl(generation, Reason.SignalUsr1, State.Stopping)], 'one event, with the first reason');
    } else {
      assert.deepEqual(first, { won: false, control: before, stale: staleWhenLost });
      assert.equal(table.control(slot), before, 'a losing request changes nothing');
      assert.equal(table.enqueuedTotal(), enqueuedBefore, 'a loser never enqueues');
    }
  }
});

test('finish and release: only from their states, release bumps the generation, stale generations never win', () => {
  const table = ControlTable.create(2);
  const slot = 1;
  let generation = table.allocate(slot);
  assert.equal(generation, 0);
  assert.equal(table.allocate(slot), -1, 'allocate twice');
  assert.equal(table.finish(slot, generation, true), false, 'finish from Prepared');
  assert.ok(table.release(slot, generation), 'release from Prepared (abandoned prepare)');
  assert.equal(table.control(slot), packControl(1, Reason.None, State.Free));
  assert.equal(table.release(slot, generation), false, 'release twice');

  for (let round = 0; round < 50; round++) {
    const stale: number = generation;
    generation = table.allocate(slot);
    assert.equal(generation, stale + 1, 'each reuse owns the next generation');
    assert.ok(table.markRunning(slot, generation, 0));
    assert.equal(table.release(slot, generation), false, 'release from Running');
    // Every older generation, and the next ones, lose without touching the word.
    for (const old of [stale, stale - 1, generation + 1, generation + 2]) {
      const outcome = table.requestStop(slot, old & GEN_MASK, Reason.Agent);
      assert.deepEqual(outcome, { won: false, control: packControl(generation, Reason.None, State.Running), stale: true });
    }
    assert.ok(table.requestStop(slot, generation, Reason.Agent).won);
    table.drainQueue((s) => assert.notEqual(table.take(s), -1));
    assert.equal(table.release(slot, generation), false, 'release from Stopping');
    assert.ok(table.finish(slot, generation, false));
    assert.ok(table.requestStop(slot, generation, Reason.Shutdown).won, 'a later request retries a failed stop');
    table.drainQueue((s) => assert.equal(table.take(s), packControl(generation, Reason.Shutdown, State.Stopping)));
    assert.equal(table.finish(slot, generation + 1, true), false, 'finish with a wrong generation');
    assert.ok(table.finish(slot, generation, true));
    assert.equal(table.requestStop(slot, generation, Reason.Agent).won, false, 'Stopped is final');
    assert.ok(table.release(slot, generation));
    assert.equal(table.control(slot), packControl(generation + 1, Reason.None, State.Free));
  }
  // Giving a failed stop up: StopFailed → Free with the next generation; a retry of the old
  // generation then loses as stale, and the give-up loses to a retry that came first.
  generation = table.allocate(slot);
  assert.ok(table.markRunning(slot, generation, 0));
  assert.ok(table.requestStop(slot, generation, Reason.HeartbeatTimeout).won);
  table.drainQueue((s) => assert.notEqual(table.take(s), -1));
  assert.ok(table.finish(slot, generation, false));
  assert.ok(table.release(slot, generation), 'release from StopFailed (give-up)');
  assert.equal(table.control(slot), packControl(generation + 1, Reason.None, State.Free));
  assert.deepEqual(table.requestStop(slot, generation, Reason.Agent), { won: false, control: packControl(generation + 1, Reason.None, State.Free), stale: true });
  generation = table.allocate(slot);
  assert.ok(table.markRunning(slot, generation, 0));
  assert.ok(table.requestStop(slot, generation, Reason.HeartbeatTimeout).won);
  table.drainQueue((s) => assert.notEqual(table.take(s), -1));
  assert.ok(table.finish(slot, generation, false));
  assert.ok(table.requestStop(slot, generation, Reason.Agent).won, 'a retry before the give-up');
  assert.equal(table.release(slot, generation), false, 'the give-up loses to the retry');
  table.drainQueue((s) => assert.notEqual(table.take(s), -1));
  assert.ok(table.finish(slot, generation, true));
  assert.ok(table.release(slot, generation));
  assert.equal(table.queueDepth(), 0);
  assert.equal(table.control(0), 0, 'the other slot was never touched');
});

test('generation wrap: release of generation 2^23-1 frees generation 0, and the old one stays stale', () => {
  const table = ControlTable.create(1);
  const words = new Int32Array(table.buffer);
  // 2^23 real reuses would take seconds; start the slot one before the wrap instead.
  Atomics.store(words, rawControlIndex(0), packControl(GEN_MASK - 1, Reason.None, State.Free));
  const seen: number[] = [];
  for (let i = 0; i < 4; i++) {
    const generation = table.allocate(0);
    seen.push(generation);
    assert.ok(table.markRunning(0, generation, 0));
    assert.ok(table.isRunning(0, generation));
    const older = (generation - 1) & GEN_MASK;
    assert.equal(table.requestStop(0, older, Reason.Agent).won, false, `stale gen ${older} vs live ${generation}`);
    assert.ok(table.requestStop(0, generation, Reason.Agent).won);
    const taken: number[] = [];
    table.drainQueue((slot) => taken.push(table.take(slot)));
    assert.equal(taken.length, 1);
    assert.notEqual(taken[0], -1, 'take() succeeded');
    assert.equal(stateOf(table.control(0)), State.Stopping);
    assert.ok(table.finish(0, generation, true));
    assert.ok(table.release(0, generation));
  }
  assert.deepEqual(seen, [GEN_MASK - 1, GEN_MASK, 0, 1]);
});

test('a stop of a generation ≥ 2^22 (negative CONTROL word) is delivered by the consumer', () => {
  // A CONTROL word with generation ≥ 2^22 has bit 31 set: a successful take returns a negative
  // word, and only -1 means "not taken". A consumer testing "< 0" would drop every such stop.
  const table = ControlTable.create(1);
  const words = new Int32Array(table.buffer);
  const generation = 2 ** 22;
  Atomics.store(words, rawControlIndex(0), packControl(generation, Reason.None, State.Free));
  assert.equal(table.allocate(0), generation);
  assert.ok(table.markRunning(0, generation, 0));
  assert.ok(table.requestStop(0, generation, Reason.Agent).won);
  const taken: number[] = [];
  new StopEventConsumer(table).pass((slot, control) => taken.push(slot, control));
  assert.deepEqual(taken, [0, packControl(generation, Reason.Agent, State.Stopping)]);
  assert.ok(taken[1]! < 0, 'the CONTROL word is negative at this generation');
  assert.equal(stateOf(table.control(0)), State.Stopping);
});

// ---- 3. the queue, one thread -------------------------------------------------------------------------

test('lap tags: capacity 3 (8 cells) over 1,000+ laps, and across the 2^32 position wrap', () => {
  for (const startPosition of [0, 2 ** 32 - 37]) {
    const capacity = 3;
    const table = ControlTable.create(capacity);
    const words = new Int32Array(table.buffer);
    Atomics.store(words, RAW_QUEUE_TAIL, startPosition | 0);
    Atomics.store(words, RAW_QUEUE_HEAD, startPosition | 0);
    const rng = mulberry32(0xc0ffee ^ startPosition);
    const generations = [0, 0, 0].map((_, slot) => table.allocate(slot));
    for (let slot = 0; slot < capacity; slot++) assert.ok(table.markRunning(slot, generations[slot]!, 0));
    let published = 0;
    const laps = 1100;
    while (published < laps * 4) {
      // Stop a random subset (1..3 outstanding events), in a random order.
      const order = [0, 1, 2].sort(() => rng.next() - 0.5).slice(0, 1 + rng.int(3));
      for (const slot of order) {
        assert.ok(table.requestStop(slot, generations[slot]!, PRODUCER_REASONS[published % PRODUCER_REASONS.length]!).won);
        published++;
      }
      assert.equal(table.queueDepth(), order.length);
      const drained: number[] = [];
      const result = table.drainQueue((slot) => {
        drained.push(slot);
        assert.notEqual(table.take(slot), -1);
      });
      assert.deepEqual(drained, order, `FIFO order at position ${(Atomics.load(words, RAW_QUEUE_HEAD) >>> 0) - order.length}`);
      assert.deepEqual(takenAndPending(result), { taken: order.length, headPending: false });
      // Half of the stops fail (StopFailed → retried next round), half are released and reused.
      for (const slot of order) {
        const generation = generations[slot]!;
        if (rng.chance(0.5)) {
          assert.ok(table.finish(slot, generation, false));
        } else {
          assert.ok(table.finish(slot, generation, true));
          assert.ok(table.release(slot, generation));
          generations[slot] = table.allocate(slot);
          assert.equal(generations[slot], generation + 1);
          assert.ok(table.markRunning(slot, generations[slot]!, 0));
        }
      }
      // Nothing left behind: a second drain sees an empty queue (no stale cell matches its lap).
      assert.deepEqual(takenAndPending(table.drainQueue(() => assert.fail('phantom event'))), { taken: 0, headPending: false });
    }
    assert.equal(table.enqueuedTotal(), published);
    assert.equal(Atomics.load(words, RAW_QUEUE_TAIL) >>> 0, (startPosition + published) % 2 ** 32);
  }
});

test('queue bound: every slot can have its event in flight at once', () => {
  for (const capacity of [1, 2, 4, 8, 64]) {
    const table = ControlTable.create(capacity);
    const generations = Array.from({ length: capacity }, (_, slot) => table.allocate(slot));
    for (let round = 0; round < 5; round++) {
      for (let slot = capacity - 1; slot >= 0; slot--) assert.ok(table.requestStop(slot, generations[slot]!, Reason.Shutdown).won);
      assert.equal(table.queueDepth(), capacity);
      const drained: number[] = [];
      table.drainQueue((slot) => {
        drained.push(slot);
        assert.notEqual(table.take(slot), -1);
      });
      assert.deepEqual(drained, Array.from({ length: capacity }, (_, i) => capacity - 1 - i));
      for (let slot = 0; slot < capacity; slot++) assert.ok(table.finish(slot, generations[slot]!, false));
    }
  }
});

test('heartbeat scan does not time out an execution whose heartbeat is newer than the scan clock', () => {
  // The watchdog computes nowMs = clockMs() once, then loads each slot's HB_LAST_MS. A heartbeat
  // (or markRunning) stamped on the main thread after that read — same instant, next millisecond —
  // is "in the future" for the scan: elapsedMs(nowMs, last) = (nowMs - last) >>> 0 wraps to ~2^32
  // and the scan fires a heartbeat timeout on an execution that was heard from a moment ago.
  const table = ControlTable.create(2);
  const generation = table.allocate(0);
  assert.ok(table.markRunning(0, generation, 60_000)); // a one-minute expiry, stamped now
  const scanStartedAt = (clockMs() - 1) >>> 0; // the watchdog read its clock 1 ms earlier
  const fired = table.scanHeartbeats(scanStartedAt);
  assert.equal(
    fired,
    0,
    `scanHeartbeats(nowMs = stamp - 1 ms) fired a heartbeat timeout on an execution with a 60 s expiry stamped 0 ms ago (block now ${describeControl(table.control(0))})`,
  );
});

// ---- 4. waitWhileRunning wake-up latency, two threads --------------------------------------------

async function measureWake(t: TestContext, label: string, spinners: number): Promise<number[]> {
  const table = ControlTable.create(4);
  const ctl = new Int32Array(new SharedArrayBuffer(ctlWords(0) * 4));
  const fatal: string[] = [];
  const threads = [new TestThread('waiter', { role: 'waiter', table: table.buffer, ctl: ctl.buffer as SharedArrayBuffer }, (why) => fatal.push(why))];
  for (let i = 0; i < spinners; i++) {
    threads.push(new TestThread(`spinner ${i}`, { role: 'spinner', ctl: ctl.buffer as SharedArrayBuffer }, (why) => fatal.push(why)));
  }
  const latenciesUs: number[] = [];
  try {
    assert.ok(await untilWord(ctl, Ctl.READY, threads.length, 10_000), `threads did not start: ${fatal.join('; ')}`);
    const samples = 200;
    for (let k = 1; k <= samples && fatal.length === 0; k++) {
      const slot = k % table.capacity;
      const generation = table.allocate(slot);
      assert.ok(generation >= 0);
      assert.ok(table.markRunning(slot, generation, 0));
      Atomics.store(ctl, Ctl.MAIL_SLOT, slot);
      Atomics.store(ctl, Ctl.MAIL_GEN, generation);
      Atomics.store(ctl, Ctl.MAIL_SEQ, k);
      Atomics.notify(ctl, Ctl.MAIL_SEQ);
      assert.ok(await untilWord(ctl, Ctl.WAITING_SEQ, k, 5_000), `waiter did not pick up sample ${k}`);
      await sleep(1 + (k % 3)); // let it block in Atomics.wait
      assert.ok(table.requestStop(slot, generation, Reason.Agent).won);
      assert.ok(await untilWord(ctl, Ctl.RESULT_SEQ, k, 5_000), `waiter did not wake for sample ${k} within 5 s`);
      assert.equal(Atomics.load(ctl, Ctl.RESULT_WOKE), 1, `sample ${k}: waitWhileRunning timed out (2 s) instead of waking on the stop`);
      latenciesUs.push(Atomics.load(ctl, Ctl.RESULT_LAT_US) >>> 0);
      table.drainQueue((s) => assert.notEqual(table.take(s), -1));
      assert.ok(table.finish(slot, generation, true));
      assert.ok(table.release(slot, generation));
    }
    assert.deepEqual(fatal, []);
  } finally {
    Atomics.store(ctl, Ctl.STOP, 1);
    Atomics.notify(ctl, Ctl.MAIL_SEQ);
    await Promise.race([Promise.all(threads.map((thread) => thread.exited)), sleep(5_000)]);
    for (const thread of threads) if (thread.exitCode === undefined) await thread.kill();
  }
  latenciesUs.sort((a, b) => a - b);
  t.diagnostic(
    `${label}: waitWhileRunning wake after requestStop on another thread, ${latenciesUs.length} samples: p50 ${(percentile(latenciesUs, 50) / 1000).toFixed(3)} ms, p99 ${(percentile(latenciesUs, 99) / 1000).toFixed(3)} ms, max ${(latenciesUs.at(-1)! / 1000).toFixed(3)} ms`,
  );
  return latenciesUs;
}

// Correctness only: every sample wakes on the stop rather than at its 2 s timeout (measureWake
// asserts that per sample). How fast is a figure of the machine's load; the latencies are reported
// as diagnostics, and bench/ (stopLatency, oversubscribed) holds the bar.
test('waitWhileRunning wakes when another thread requests the stop, also with every core busy', { timeout: 60_000 }, async (t) => {
  const idle = await measureWake(t, 'idle', 0);
  assert.equal(idle.length, 200);
  // Under load (3 CPU-burning threads on this 2-core box) the wake-up competes for a core.
  const loaded = await measureWake(t, '3 spinning threads', 3);
  assert.equal(loaded.length, 200);
});

// ---- 5. recovery from a producer that died mid-enqueue (deterministic, real threads) ----------------

/** Run one fault-injection thread to completion; returns the control word it published. */
async function injectFault(role: 'die-after-reserve' | 'die-after-cas', table: ControlTable, slot: number, generation: number, reason: Reason): Promise<Extract<WorkerMessage, { type: 'fault-injected' }>> {
  const fatal: string[] = [];
  const thread = new TestThread(role, { role, table: table.buffer, slot, generation, reason }, (why) => fatal.push(why));
  const code = await Promise.race([thread.exited, sleep(10_000).then(() => 'timeout' as const)]);
  if (code === 'timeout') {
    await thread.kill();
    assert.fail(`${role} thread did not exit within 10 s`);
  }
  // Exiting after its message counts as "died before publishing": it never reported 'done'.
  const injected = thread.messages.find((m): m is Extract<WorkerMessage, { type: 'fault-injected' }> => m.type === 'fault-injected');
  assert.ok(injected, `${role} thread did not inject its fault: ${fatal.join('; ')}`);
  return injected;
}

/** Run the production consumer (`StopEventConsumer`, as the stop queue loop does) for a while; returns what it took, per path. */
async function consumeLikeStopQueue(table: ControlTable, durationMs: number, stallMs: number, maxStalls = Infinity): Promise<{ fromQueue: number[]; fromRecovery: number[]; stalls: number; sawPending: boolean }> {
  const consumer = new StopEventConsumer(table, { stallMs, orphanAgeMs: stallMs });
  const fromQueue: number[] = [];
  const fromRecovery: number[] = [];
  let stalls = 0;
  let sawPending = false;
  const end = performance.now() + durationMs;
  while (performance.now() < end) {
    const seen = table.doorbell();
    const pass = consumer.pass((slot, _control, source) => (source === 'queue' ? fromQueue : fromRecovery).push(slot));
    if (pass.headPending) sawPending = true;
    if (pass.skipped) {
      sawPending = true;
      if (++stalls >= maxStalls) break;
    }
    await table.waitDoorbell(seen, pass.headPending ? 5 : 20);
  }
  return { fromQueue, fromRecovery, stalls, sawPending };
}

test('recovery: a producer that dies between reserving and publishing its cell; skipPendingHead + forEachStopRequested', { timeout: 30_000 }, async (t) => {
  const capacity = 4;
  const table = ControlTable.create(capacity);
  const words = new Int32Array(table.buffer);
  const queueCapacity = rawQueueCapacity(capacity);
  const generations = Array.from({ length: capacity }, (_, slot) => table.allocate(slot));
  for (let slot = 0; slot < capacity; slot++) assert.ok(table.markRunning(slot, generations[slot]!, 0));

  // Slot 1's winner reserves position 0 and dies; slot 2's stop is published behind it.
  const injected = await injectFault('die-after-reserve', table, 1, generations[1]!, Reason.BodyFailed);
  assert.equal(injected.tail, 0, 'the dead producer reserved position 0');
  assert.ok(table.requestStop(2, generations[2]!, Reason.Agent).won);
  assert.deepEqual(takenAndPending(table.drainQueue(() => assert.fail('nothing may pass the unpublished head'))), { taken: 0, headPending: true });
  assert.equal(table.queueDepth(), 2);

  const consumed = await consumeLikeStopQueue(table, 300, 50);
  t.diagnostic(`consumer: ${JSON.stringify(consumed)}`);
  assert.ok(consumed.sawPending, 'the consumer saw the pending head');
  assert.equal(consumed.stalls, 1, 'one stall, one skip');
  assert.deepEqual(consumed.fromRecovery, [1, 2].filter((slot) => !consumed.fromQueue.includes(slot)), 'the recovery scan took what the queue could not deliver');
  assert.deepEqual([...consumed.fromQueue, ...consumed.fromRecovery].sort(), [1, 2], 'both stops taken, each exactly once');
  assert.equal(table.control(1), packControl(generations[1]!, Reason.BodyFailed, State.Stopping), 'the dead producer\'s stop, with its reason');
  assert.equal(table.control(2), packControl(generations[2]!, Reason.Agent, State.Stopping));
  assert.equal(table.queueDepth(), 0);

  // The dead producer's write arriving late (after the skip) is ignored: its lap tag is old.
  Atomics.store(words, rawCellIndex(capacity, 0), rawCell(queueCapacity, 0, 1));
  assert.deepEqual(takenAndPending(table.drainQueue(() => assert.fail('phantom event from a late publication'))), { taken: 0, headPending: false });
  // ... and the queue keeps working for several laps over that cell.
  for (const slot of [1, 2]) assert.ok(table.finish(slot, generations[slot]!, false));
  for (let i = 0; i < queueCapacity * 3; i++) {
    const slot = 1 + (i % 2);
    assert.ok(table.requestStop(slot, generations[slot]!, Reason.Shutdown).won);
    const taken: number[] = [];
    assert.deepEqual(takenAndPending(table.drainQueue((s) => taken.push(table.take(s)))), { taken: 1, headPending: false });
    assert.deepEqual(taken, [packControl(generations[slot]!, Reason.Shutdown, State.Stopping)]);
    assert.ok(table.finish(slot, generations[slot]!, false));
  }
  let stopRequested = 0;
  table.forEachStopRequested(() => stopRequested++);
  assert.equal(stopRequested, 0);
});

test('recovery: a late publication that lands after the next lap overwrote its cell stalls, and recovery still delivers the stop', { timeout: 30_000 }, async () => {
  const capacity = 2;
  const table = ControlTable.create(capacity);
  const words = new Int32Array(table.buffer);
  const queueCapacity = rawQueueCapacity(capacity);
  const g = [table.allocate(0), table.allocate(1)];
  for (let slot = 0; slot < capacity; slot++) assert.ok(table.markRunning(slot, g[slot]!, 0));
  // Slot 0's producer reserves position 0 and stalls (simulated: CAS + reserve on this thread).
  const at0 = rawControlIndex(0);
  assert.equal(Atomics.compareExchange(words, at0, packControl(g[0]!, Reason.None, State.Running), packControl(g[0]!, Reason.Agent, State.StopRequested)), packControl(g[0]!, Reason.None, State.Running));
  assert.equal(Atomics.add(words, RAW_QUEUE_TAIL, 1), 0);
  // The consumer gives up on it: skip + recovery scan takes slot 0.
  table.skipPendingHead();
  const recovered: number[] = [];
  table.forEachStopRequested((slot) => table.take(slot) !== -1 && recovered.push(slot));
  assert.deepEqual(recovered, [0]);
  // Slot 1 stops and fails over and over until its next stop lands on position queueCapacity = cell 0, next lap.
  while ((Atomics.load(words, RAW_QUEUE_TAIL) >>> 0) < queueCapacity) {
    assert.ok(table.requestStop(1, g[1]!, Reason.Shutdown).won);
    table.drainQueue((slot) => assert.notEqual(table.take(slot), -1));
    assert.ok(table.finish(1, g[1]!, false));
  }
  assert.ok(table.requestStop(1, g[1]!, Reason.SignalTerm).won);
  // Now the stalled producer of position 0 wakes and publishes into cell 0, over slot 1's event.
  Atomics.store(words, rawCellIndex(capacity, 0), rawCell(queueCapacity, 0, 0));
  const consumed = await consumeLikeStopQueue(table, 300, 50);
  assert.deepEqual(consumed.fromQueue, [], 'the overwritten event cannot be delivered by the queue');
  assert.deepEqual(consumed.fromRecovery, [1], 'the stall recovery delivers slot 1\'s stop');
  assert.equal(table.control(1), packControl(g[1]!, Reason.SignalTerm, State.Stopping));
});

test('recovery: a stop whose winner dies right after its CAS (before reserving a cell) is still delivered', { timeout: 30_000 }, async (t) => {
  // table.ts: "a thread that dies right after its CAS can never leave a half-written stop behind".
  // The CONTROL word is whole, but the event was never reserved: the queue shows nothing (no pending
  // head), so the consumer's only recovery trigger never fires and the block stays StopRequested;
  // every later requestStop loses against it.
  const table = ControlTable.create(4);
  const generation = table.allocate(3);
  assert.ok(table.markRunning(3, generation, 0));
  await injectFault('die-after-cas', table, 3, generation, Reason.BodyFailed);
  assert.equal(stateOf(table.control(3)), State.StopRequested);
  assert.equal(table.requestStop(3, generation, Reason.Agent).won, false, 'later requests lose against the orphan');
  const consumed = await consumeLikeStopQueue(table, 500, 50);
  t.diagnostic(`consumer over 500 ms: ${JSON.stringify(consumed)}; block ${describeControl(table.control(3))}, queue depth ${table.queueDepth()}`);
  assert.ok(
    consumed.fromQueue.includes(3) || consumed.fromRecovery.includes(3),
    `the stop of slot 3 was never delivered: drainQueue kept returning { taken: 0, headPending: false } for 500 ms while the block is ${describeControl(table.control(3))}; only an unconditional forEachStopRequested would find it`,
  );
});

/** A producer frozen between the steps of `requestStop`, played by the test on the raw words. */
function rawProducer(table: ControlTable, slot: number, generation: number, reason: Reason) {
  const words = new Int32Array(table.buffer);
  const queueCapacity = rawQueueCapacity(table.capacity);
  let position = -1;
  return {
    /** Its CAS won: the block is StopRequested; STOP_AT_US not stamped yet, no cell reserved. */
    cas(): void {
      const running = packControl(generation, Reason.None, State.Running);
      assert.equal(Atomics.compareExchange(words, rawControlIndex(slot), running, packControl(generation, reason, State.StopRequested)), running);
    },
    /** It reserved its queue cell (not published yet). */
    reserve(): void {
      position = Atomics.add(words, RAW_QUEUE_TAIL, 1) >>> 0;
    },
    /** It published the cell. */
    publish(): void {
      Atomics.store(words, rawCellIndex(table.capacity, position & (queueCapacity - 1)), rawCell(queueCapacity, position, slot));
    },
  };
}

/** Four running blocks and a production consumer with `timing`, recording what it takes and from where. */
function consumerBench(timing: { stallMs: number; orphanAgeMs: number }) {
  const table = ControlTable.create(4);
  const g = [0, 1, 2, 3].map((slot) => table.allocate(slot));
  for (let slot = 0; slot < 4; slot++) assert.ok(table.markRunning(slot, g[slot]!, 0));
  const taken: [number, string][] = [];
  const onTaken = (slot: number, _control: number, source: string): void => void taken.push([slot, source]);
  return { table, g, consumer: new StopEventConsumer(table, timing), taken, onTaken };
}

test('consumer: the stall clock follows the head position — a live producer that just reserved the next cell is not skipped for the stall of an earlier one', async () => {
  const { table, g, consumer, taken, onTaken } = consumerBench({ stallMs: 100, orphanAgeMs: 3_600_000 });
  // A slow producer reserved position 0 and has not published it yet.
  const slow = rawProducer(table, 1, g[1]!, Reason.Agent);
  slow.cas();
  slow.reserve();
  assert.equal(consumer.pass(onTaken).headPending, true);
  await sleep(150);
  // Longer than the stall bound later, it publishes; meanwhile another producer reserved position 1.
  slow.publish();
  const next = rawProducer(table, 2, g[2]!, Reason.HeartbeatTimeout);
  next.cas();
  next.reserve();
  const pass = consumer.pass(onTaken);
  assert.deepEqual(taken, [[1, 'queue']]);
  assert.equal(pass.skipped, false, 'position 1 just became the head: its stall clock starts now, not at the stall of position 0');
  assert.equal(pass.headPending, true);
  next.publish();
  consumer.pass(onTaken);
  assert.deepEqual(taken, [[1, 'queue'], [2, 'queue']], 'both stops delivered through the queue');
});

test('consumer: the orphan sweep takes a block only after finding it orphaned for the orphan age, never because its stop has no time stamp yet', async () => {
  const { table, g, consumer, taken, onTaken } = consumerBench({ stallMs: 3_600_000, orphanAgeMs: 200 });
  // A live producer between its CAS and its stamp (STOP_AT_US still 0), with an empty queue.
  const live = rawProducer(table, 1, g[1]!, Reason.Agent);
  live.cas();
  assert.equal(table.stopRequestedAtUs(1), 0);
  assert.equal(consumer.pass(onTaken).recovered, 0, 'a stop without a stamp is not ancient');
  live.reserve();
  live.publish();
  consumer.pass(onTaken);
  assert.deepEqual(taken, [[1, 'queue']], 'its own event delivered it');
  // A producer that died right after its CAS: found by sweeps at least the orphan age apart.
  const dead = rawProducer(table, 2, g[2]!, Reason.BodyFailed);
  dead.cas();
  await sleep(120); // the sweep runs at most twice per orphan age
  assert.equal(consumer.pass(onTaken).recovered, 0, 'first seen now');
  await sleep(250);
  assert.equal(consumer.pass(onTaken).recovered, 1);
  assert.deepEqual(taken, [[1, 'queue'], [2, 'sweep']]);
  assert.equal(table.control(2), packControl(g[2]!, Reason.BodyFailed, State.Stopping));
});

test('recovery keeps the queue bound: two producers die mid-enqueue, their stops fail and are retried', { timeout: 30_000 }, async (t) => {
  // The overflow check relies on "a slot leaves StopRequested only when the consumer took its
  // event". Recovery must not take blocks whose events are still queued (the sweep waits for an
  // empty queue), and the spare half of the queue absorbs stale events.
  const capacity = 2;
  const table = ControlTable.create(capacity);
  const g = [table.allocate(0), table.allocate(1)];
  for (let slot = 0; slot < capacity; slot++) assert.ok(table.markRunning(slot, g[slot]!, 0));
  // Both producers win their CAS, reserve positions 0 and 1, and die before publishing.
  await injectFault('die-after-reserve', table, 0, g[0]!, Reason.Agent);
  await injectFault('die-after-reserve', table, 1, g[1]!, Reason.Agent);
  // The consumer stalls on position 0 and skips it, then on position 1; with the queue empty the
  // orphan sweep takes both blocks (once it has seen them orphaned for the orphan age).
  const consumed = await consumeLikeStopQueue(table, 5_000, 50, 2);
  assert.equal(consumed.stalls, 2);
  const swept = await consumeLikeStopQueue(table, 300, 50);
  assert.deepEqual([...consumed.fromRecovery, ...swept.fromRecovery].sort(), [0, 1]);
  assert.equal(table.queueDepth(), 0, 'both dead reservations were skipped');
  // Both author stops fail; the agent retries both stops (what the reference agent does).
  assert.ok(table.finish(0, g[0]!, false));
  assert.ok(table.finish(1, g[1]!, false));
  assert.ok(table.requestStop(0, g[0]!, Reason.Agent).won);
  let retry: unknown;
  try {
    retry = table.requestStop(1, g[1]!, Reason.Agent);
  } catch (error) {
    t.diagnostic(`after the throw: ${dumpTable(table)}`);
    assert.fail(
      `requestStop threw "${(error as Error).message}" after a legitimate recovery; the stop of slot 1 won its CAS (block ${describeControl(table.control(1))}) but has no event, and the cell it reserved will never be published`,
    );
  }
  assert.equal((retry as { won: boolean }).won, true);
});

// ---- 6. the storm ---------------------------------------------------------------------------------------

interface StormConfig {
  seed: number;
  durationMs: number;
  /**
   * Slot layout: [0, producerSlots) take the request storm (producers and main's random requests);
   * then `ballast` slots that run untouched with a 1-hour expiry (they make every watchdog scan
   * long, like a table with thousands of executions); the rest, up to `capacity`, are watch-only:
   * main heartbeats and stops them while the watchdog scans them.
   */
  capacity: number;
  producerSlots: number;
  ballast: number;
  producers: number;
  hotSlots: number;
  burstMax: number;
  napMaxMs: number;
  /** Probability that an author stop fails (StopFailed, retried later). */
  pFail: number;
  /** Start every slot a few generations before the 2^23 wrap. */
  wrapStart: boolean;
  tickMs: number;
  /** Requests main itself makes per loop turn (expected). */
  mainRequests: number;
  /** Terminate one producer mid-storm. */
  kill: boolean;
}

function stormConfig(seed: number, durationMs: number, kill: boolean): StormConfig {
  const rng = mulberry32(deriveSeed(seed, 1_000_000));
  const base = rng.pick([1, 2, 3, 4, 5, 8, 8, 13, 16, 16, 31, 32, 48, 64]);
  const producerSlots = base >= 2 ? base - Math.max(1, Math.floor(base / 4)) : base;
  const ballast = base >= 2 ? rng.pick([0, 1_000, 4_000]) : 0;
  return {
    seed,
    durationMs,
    capacity: base + ballast,
    producerSlots,
    ballast,
    producers: 6 + rng.int(3),
    hotSlots: 1 + rng.int(4),
    burstMax: rng.pick([50, 500, 5_000]),
    napMaxMs: rng.pick([0.2, 1, 2]),
    pFail: rng.pick([0.1, 0.25, 0.4]),
    wrapStart: rng.chance(0.5),
    tickMs: rng.pick([1, 2]),
    mainRequests: rng.pick([0.2, 1]),
    kill,
  };
}

type Phase = 'free' | 'prepared' | 'running' | 'stopping' | 'stopped' | 'stopFailed';

interface SlotModel {
  gen: number;
  phase: Phase;
  dueAt: number;
  outcome: boolean;
  takeReason: number;
  failuresThisGen: number;
  expireMs: number;
  keepAlive: boolean;
  /** Only main and the watchdog touch this slot (heartbeat races, not request storms). */
  watchOnly: boolean;
  /** Runs untouched for the whole storm (makes scans long). */
  ballast: boolean;
  /** Watch-only, kept alive: when main stops it (an agent stop racing the watchdog). */
  stopAt: number;
  /** clockMs() just before the latest heartbeat stamp (lower bound of the stamp). */
  lastStampBefore: number;
  /** Upper bound of the longest silence between two stamps of this execution. */
  maxGapUpper: number;
}

interface LedgerEntry {
  wins: number[];
  takes: number[];
  hbTakes: number;
}

async function runStorm(t: TestContext, cfg: StormConfig): Promise<void> {
  const name = cfg.kill ? 'storm with a producer killed' : 'storm seed=';
  const rng = mulberry32(deriveSeed(cfg.seed, 999));
  const table = ControlTable.create(cfg.capacity);
  const words = new Int32Array(table.buffer);
  const startGen = cfg.wrapStart ? GEN_MASK - 20 - rng.int(20) : 0;
  for (let slot = 0; slot < cfg.capacity; slot++) Atomics.store(words, rawControlIndex(slot), packControl(startGen + slot, Reason.None, State.Free));
  table.setWatchdogTickMs(cfg.tickMs);
  const ctl = new Int32Array(new SharedArrayBuffer(ctlWords(cfg.producers) * 4));
  const journals = Array.from({ length: cfg.producers }, () => new Int32Array(new SharedArrayBuffer(JOURNAL_ENTRIES * JOURNAL_ENTRY_WORDS * 4)));
  const violations = new Violations();
  const fatal: string[] = [];
  const onFatal = (why: string): void => {
    fatal.push(why);
  };

  const producers = journals.map(
    (journal, index) =>
      new TestThread(
        `producer ${index}`,
        {
          role: 'producer',
          index,
          seed: deriveSeed(cfg.seed, index),
          table: table.buffer,
          ctl: ctl.buffer as SharedArrayBuffer,
          journal: journal.buffer as SharedArrayBuffer,
          slots: cfg.producerSlots,
          hotSlots: cfg.hotSlots,
          burstMax: cfg.burstMax,
          napMaxMs: cfg.napMaxMs,
        },
        onFatal,
      ),
  );
  const watchdog = new TestThread('watchdog', { role: 'watchdog', seed: deriveSeed(cfg.seed, 500), table: table.buffer, ctl: ctl.buffer as SharedArrayBuffer, tickMs: cfg.tickMs }, onFatal);
  const threads = [...producers, watchdog];
  for (const thread of threads) {
    thread.onMessage((message) => {
      if (message.type === 'violation') violations.add(message.message);
    });
  }

  // ---- main: registry + stop-run model
  const models: SlotModel[] = Array.from({ length: cfg.capacity }, (_, slot) => ({
    gen: generationOf(table.control(slot)),
    phase: 'free',
    dueAt: 0,
    outcome: true,
    takeReason: 0,
    failuresThisGen: 0,
    expireMs: 0,
    keepAlive: false,
    watchOnly: slot >= cfg.producerSlots + cfg.ballast,
    ballast: slot >= cfg.producerSlots && slot < cfg.producerSlots + cfg.ballast,
    stopAt: Infinity,
    lastStampBefore: 0,
    maxGapUpper: 0,
  }));
  const ledger = new Map<number, LedgerEntry>();
  const allocated = new Set<number>();
  const key = (slot: number, gen: number): number => slot * 2 ** 23 + (gen & GEN_MASK);
  const entry = (slot: number, gen: number): LedgerEntry => {
    const k = key(slot, gen);
    let e = ledger.get(k);
    if (e === undefined) ledger.set(k, (e = { wins: [], takes: [], hbTakes: 0 }));
    return e;
  };
  const stats = {
    loops: 0,
    events: 0,
    takes: 0,
    hbTakes: 0,
    retryRounds: 0,
    failures: 0,
    releases: 0,
    abandonedPrepares: 0,
    markRunningLost: 0,
    releaseLost: 0,
    heartbeats: 0,
    mainAttempts: 0,
    mainWins: 0,
    journalWins: 0,
    winsByCategory: [0, 0, 0, 0],
    maxDepth: 0,
    recoveries: 0,
    duplicateEvents: 0,
    orphans: 0,
    /** Heartbeat timeouts on executions main kept heartbeating. */
    hbTakesKeptAlive: 0,
    /** Smallest (longest possible silence − expiry) among those: negative beyond −2 ms is a violation. */
    minHbSlackMs: Infinity,
  };
  let settling = false;
  let killed: TestThread | undefined;
  let inDoubt: { slot: number; gen: number; reason: number } | undefined;
  // The production consumer. While producers run, no orphan sweep (a live producer is never an
  // orphan, and a lost event must stay visible to the final checks); a stalled head is skipped
  // after 2 s (100 ms once a producer was killed); in the settle phase, with every producer gone,
  // both rules apply at once.
  const consumer = new StopEventConsumer(table, { stallMs: STALL_MS, orphanAgeMs: 3_600_000 });
  const delay = (): number => (rng.chance(0.5) ? 0 : rng.next() * 3);
  const modelLine = (slot: number): string => {
    const m = models[slot]!;
    return `model gen ${m.gen} ${m.phase} due ${m.dueAt === Infinity ? '∞' : (m.dueAt - performance.now()).toFixed(1)} expire ${m.expireMs}`;
  };
  const fail = (why: string): never => {
    const lines = [
      `${cfg.kill ? name : 'storm'} seed=${cfg.seed}: ${why}`,
      replay(cfg.seed, name),
      `config: ${JSON.stringify(cfg)}`,
      `stats: ${JSON.stringify(stats)}`,
      `violations (${violations.total}):`,
      ...violations.list.map((v) => `  - ${v}`),
      `fatal: ${fatal.join(' | ') || 'none'}`,
      dumpTable(table, modelLine),
    ];
    throw new assert.AssertionError({ message: lines.join('\n') });
  };

  const onTaken = (slot: number, control: number, source: 'queue' | 'sweep'): void => {
    stats.events++;
    const m = models[slot];
    if (m === undefined) {
      violations.add(`event for slot ${slot} outside the table (capacity ${cfg.capacity})`);
      return;
    }
    if (source === 'sweep') {
      // Only a killed producer can leave a stop without an event (it won the CAS and died).
      if (inDoubt !== undefined && inDoubt.slot === slot && inDoubt.gen === generationOf(control)) {
        stats.orphans++;
        t.diagnostic(`orphan: slot ${slot} ${describeControl(control)} — the killed producer won the CAS and died before publishing; recovered by the orphan sweep`);
      } else {
        violations.add(`lost stop: slot ${slot} was taken by the orphan sweep (${describeControl(control)}): its event never arrived (${modelLine(slot)})`);
      }
    }
    stats.takes++;
    const gen = generationOf(control);
    const reason = reasonOf(control);
    if (stateOf(control) !== State.Stopping) violations.add(`take() returned ${describeControl(control)}`);
    if (gen !== m.gen || !(m.phase === 'prepared' || m.phase === 'running' || m.phase === 'stopFailed')) {
      violations.add(`took ${describeControl(control)} on slot ${slot} but main holds gen ${m.gen} in phase ${m.phase}: a stop hit a generation that is not live`);
    }
    const e = entry(slot, gen);
    if (reason === Reason.HeartbeatTimeout) {
      stats.hbTakes++;
      e.hbTakes++;
      const silenceUpper = Math.max(m.maxGapUpper, clockMs() - m.lastStampBefore);
      if (m.keepAlive) {
        stats.hbTakesKeptAlive++;
        stats.minHbSlackMs = Math.min(stats.minHbSlackMs, silenceUpper - m.expireMs);
      }
      if (m.expireMs <= 0) violations.add(`heartbeat timeout on slot ${slot} gen ${gen}, which was never watched (expiry 0)`);
      else if (silenceUpper + 2 < m.expireMs) {
        violations.add(
          `heartbeat timeout on slot ${slot} gen ${gen} with expiry ${m.expireMs} ms, but main's stamps prove it was never silent for more than ${silenceUpper} ms (cf. test "heartbeat scan does not time out an execution whose heartbeat is newer than the scan clock")`,
        );
      }
    } else if (reason === Reason.None) {
      violations.add(`took a stop with reason None on slot ${slot}`);
    } else {
      e.takes.push(reason);
    }
    if (m.phase === 'stopFailed') stats.retryRounds++;
    m.phase = 'stopping';
    m.takeReason = reason;
    m.outcome = settling || m.failuresThisGen >= 3 ? true : !rng.chance(cfg.pFail);
    m.dueAt = performance.now() + delay();
  };

  const expectWord = (slot: number, expected: number, what: string): void => {
    const actual = table.control(slot);
    if (actual !== expected) violations.add(`${what}: slot ${slot} is ${describeControl(actual)}, expected ${describeControl(expected)}`);
  };

  const act = (slot: number, now: number): void => {
    const m = models[slot]!;
    switch (m.phase) {
      case 'stopping': {
        if (!table.finish(slot, m.gen, m.outcome)) {
          violations.add(`finish(slot ${slot}, gen ${m.gen}) refused: ${describeControl(table.control(slot))}`);
          m.dueAt = Infinity;
          return;
        }
        if (m.outcome) {
          // Nobody but main moves a Stopped block.
          expectWord(slot, packControl(m.gen, m.takeReason as Reason, State.Stopped), 'after finish(true)');
        } else {
          // A producer may retry the failed stop at once: StopFailed with our reason, or its win.
          const word = table.control(slot);
          if (word !== packControl(m.gen, m.takeReason as Reason, State.StopFailed) && (generationOf(word) !== m.gen || stateOf(word) !== State.StopRequested)) {
            violations.add(`after finish(false): slot ${slot} is ${describeControl(word)}, expected gen ${m.gen} StopFailed/${reasonName(m.takeReason)} or a new StopRequested`);
          }
        }
        if (m.outcome) {
          m.phase = 'stopped';
          m.dueAt = now + delay();
        } else {
          stats.failures++;
          m.failuresThisGen++;
          m.phase = 'stopFailed';
          // Main (the agent) retries later unless a producer gets there first.
          m.dueAt = settling ? now : now + 2 + rng.next() * 10;
        }
        return;
      }
      case 'stopped': {
        if (!table.release(slot, m.gen)) {
          violations.add(`release(slot ${slot}, gen ${m.gen}) from Stopped refused: ${describeControl(table.control(slot))}`);
          m.dueAt = Infinity;
          return;
        }
        m.gen = (m.gen + 1) & GEN_MASK;
        expectWord(slot, packControl(m.gen, Reason.None, State.Free), 'after release');
        stats.releases++;
        m.phase = 'free';
        m.dueAt = now + delay();
        return;
      }
      case 'stopFailed': {
        stats.mainAttempts++;
        const outcome = table.requestStop(slot, m.gen, Reason.Agent);
        if (outcome.won) {
          stats.mainWins++;
          entry(slot, m.gen).wins.push(Reason.Agent);
        } else if (settling && killed === undefined && stateOf(outcome.control) !== State.StopRequested) {
          violations.add(`settle: retry of a StopFailed slot ${slot} lost against ${describeControl(outcome.control)}`);
        }
        m.dueAt = Infinity; // the event (ours or a producer's) moves it on
        return;
      }
      case 'free': {
        if (settling) {
          m.dueAt = Infinity;
          return;
        }
        const gen = table.allocate(slot);
        if (gen !== m.gen) {
          violations.add(`allocate(slot ${slot}) returned ${gen}, main expected gen ${m.gen}; word ${describeControl(table.control(slot))}`);
          m.dueAt = Infinity;
          return;
        }
        allocated.add(key(slot, gen));
        m.failuresThisGen = 0;
        m.phase = 'prepared';
        m.dueAt = now + delay();
        return;
      }
      case 'prepared': {
        if (settling) {
          m.dueAt = Infinity;
          return;
        }
        if (rng.chance(0.1)) {
          // Abandoned prepare: release straight from Prepared, racing the producers.
          if (table.release(slot, m.gen)) {
            stats.abandonedPrepares++;
            m.gen = (m.gen + 1) & GEN_MASK;
            expectWord(slot, packControl(m.gen, Reason.None, State.Free), 'after releasing a prepared slot');
            m.phase = 'free';
            m.dueAt = now + delay();
          } else {
            stats.releaseLost++;
            const word = table.control(slot);
            if (generationOf(word) !== m.gen || stateOf(word) !== State.StopRequested) {
              violations.add(`release of prepared slot ${slot} refused but the word is ${describeControl(word)} (expected a won stop of gen ${m.gen})`);
            }
            m.dueAt = Infinity;
          }
          return;
        }
        if (m.watchOnly) {
          m.keepAlive = rng.chance(0.6);
          m.expireMs = m.keepAlive ? 20 + rng.int(100) : 1 + rng.int(10);
          m.stopAt = m.keepAlive ? now + 5 + rng.next() * 55 : Infinity;
        } else {
          const roll = rng.next();
          m.expireMs = roll < 0.4 ? 0 : roll < 0.7 ? 1 + rng.int(8) : 50 + rng.int(250);
          m.keepAlive = m.expireMs > 0 && rng.chance(0.6);
          m.stopAt = Infinity;
        }
        const before = clockMs();
        if (table.markRunning(slot, m.gen, m.expireMs)) {
          m.phase = 'running';
          m.lastStampBefore = before;
          m.maxGapUpper = 0;
          m.dueAt = m.keepAlive ? now + rng.next() * 2 : Infinity;
        } else {
          stats.markRunningLost++;
          const word = table.control(slot);
          if (generationOf(word) !== m.gen || stateOf(word) !== State.StopRequested) {
            violations.add(`markRunning(slot ${slot}, gen ${m.gen}) refused but the word is ${describeControl(word)}`);
          }
          m.dueAt = Infinity;
        }
        return;
      }
      case 'running': {
        if (!m.keepAlive || settling) {
          m.dueAt = Infinity;
          return;
        }
        if (now >= m.stopAt) {
          // The agent stops it while main keeps heartbeating it: the watchdog must not win unless it was silent.
          stats.mainAttempts++;
          const outcome = table.requestStop(slot, m.gen, Reason.Agent);
          if (outcome.won) {
            stats.mainWins++;
            entry(slot, m.gen).wins.push(Reason.Agent);
          }
          m.dueAt = Infinity;
          return;
        }
        const before = clockMs();
        table.recordHeartbeat(slot);
        const after = clockMs();
        stats.heartbeats++;
        m.maxGapUpper = Math.max(m.maxGapUpper, after - m.lastStampBefore);
        m.lastStampBefore = before;
        m.dueAt = now + rng.next() * 2;
        return;
      }
    }
  };

  const mainRequest = (): void => {
    const slot = chooseSlot(rng, cfg.producerSlots, cfg.hotSlots);
    const m = models[slot]!;
    const observed = generationOf(table.control(slot));
    const { generation, category } = chooseGeneration(rng, observed);
    const reason = rng.pick(PRODUCER_REASONS);
    stats.mainAttempts++;
    let outcome;
    try {
      outcome = table.requestStop(slot, generation, reason);
    } catch (error) {
      violations.add(`main: requestStop(slot ${slot}, gen ${generation}) threw: ${(error as Error).message}`);
      return;
    }
    if (!outcome.won) return;
    stats.mainWins++;
    stats.winsByCategory[category]! += 1;
    entry(slot, generation).wins.push(reason);
    // Main owns the generations: it knows exactly whether this request was for the live one.
    if (generation !== m.gen || !(m.phase === 'prepared' || m.phase === 'running' || m.phase === 'stopFailed')) {
      violations.add(`main's request for slot ${slot} gen ${generation} (${CATEGORY_NAMES[category]}) won while main holds gen ${m.gen} in phase ${m.phase}`);
    }
  };

  const drainJournals = (): void => {
    for (let index = 0; index < cfg.producers; index++) {
      const base = Ctl.PRODUCERS + index * PRODUCER_WORDS;
      const journal = journals[index]!;
      const w = Atomics.load(ctl, base + P.J_WRITE);
      let r = Atomics.load(ctl, base + P.J_READ);
      if (r === w) continue;
      for (; r < w; r++) {
        const at = (r % JOURNAL_ENTRIES) * JOURNAL_ENTRY_WORDS;
        const w0 = journal[at]!;
        const w1 = journal[at + 1]!;
        const slot = w0 & 0xffffff;
        const category = w0 >>> 24;
        const gen = w1 >>> 5;
        const reason = w1 & 31;
        stats.journalWins++;
        stats.winsByCategory[category]! += 1;
        entry(slot, gen).wins.push(reason);
      }
      Atomics.store(ctl, base + P.J_READ, r);
      Atomics.notify(ctl, base + P.J_READ);
    }
  };

  /** One pass of the production consumer; true if it moved anything. */
  const consume = (stallMs: number): boolean => {
    consumer.timing.stallMs = stallMs;
    const pass = consumer.pass(onTaken);
    const depth = table.queueDepth();
    stats.maxDepth = Math.max(stats.maxDepth, depth);
    if (stats.recoveries === 0 && depth > cfg.capacity) {
      violations.add(`queue depth ${depth} exceeds capacity ${cfg.capacity}: more events in flight than slots`);
    }
    if (pass.skipped) {
      stats.recoveries++;
      if (killed === undefined) violations.add(`the consumer skipped a head cell that stayed reserved but unpublished for ${stallMs} ms while every producer was alive`);
    }
    if (pass.stale > 0) {
      if (stats.recoveries === 0 && stats.orphans === 0) violations.add(`${pass.stale} phantom or duplicate events without any recovery`);
      stats.duplicateEvents += pass.stale;
    }
    return pass.taken + pass.recovered > 0 || pass.headPending;
  };

  const workersLine = (): string =>
    threads
      .map((thread) => `${thread.name}: exit ${thread.exitCode ?? '-'} done ${thread.done ? 'y' : 'n'}${thread.killed ? ' killed' : ''} attempts ${thread.lastCounts?.attempts ?? '?'}`)
      .join('; ');

  // ---- run
  const hardDeadline = performance.now() + cfg.durationMs + 40_000;
  let deadlineTimer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    deadlineTimer = setTimeout(() => reject(new Error('deadline')), cfg.durationMs + 45_000);
  });
  deadline.catch(() => {});
  let aborted = false;

  const body = async (): Promise<void> => {
    if (!(await untilWord(ctl, Ctl.READY, threads.length, 15_000))) fail(`threads did not start within 15 s: ${workersLine()}`);
    const start = performance.now();
    const end = start + cfg.durationMs;
    const killAt = cfg.kill ? start + cfg.durationMs * (0.2 + 0.5 * rng.next()) : Infinity;
    for (let slot = cfg.producerSlots; slot < cfg.producerSlots + cfg.ballast; slot++) {
      const m = models[slot]!;
      if (table.allocate(slot) !== m.gen) fail(`ballast slot ${slot} did not allocate gen ${m.gen}`);
      allocated.add(key(slot, m.gen));
      m.lastStampBefore = clockMs();
      if (!table.markRunning(slot, m.gen, 3_600_000)) fail(`ballast slot ${slot} did not start`);
      Object.assign(m, { phase: 'running', expireMs: 3_600_000, keepAlive: false, maxGapUpper: 0, dueAt: Infinity });
    }
    Atomics.store(ctl, Ctl.GO, 1);
    Atomics.notify(ctl, Ctl.GO);

    // Phase 1: the storm.
    while (performance.now() < end && !aborted) {
      stats.loops++;
      if (fatal.length > 0) fail('a thread failed');
      const seen = table.doorbell();
      drainJournals();
      const now = performance.now();
      // 2 s before a reserved, unpublished head cell counts as a dead producer's, after the kill
      // too: a live producer preempted between reserve and publish on a busy machine must not be
      // skipped (its stop would reach the orphan sweep, which this oracle calls lost unless it is
      // the killed producer's). The dead producer's cell is skipped 2 s later all the same.
      consume(STALL_MS);
      for (let slot = 0; slot < cfg.capacity; slot++) if (models[slot]!.dueAt <= now) act(slot, now);
      let requests = cfg.mainRequests;
      while (requests > 0 && rng.chance(Math.min(1, requests))) {
        mainRequest();
        requests--;
      }
      if (now >= killAt && killed === undefined) {
        const index = rng.int(producers.length);
        const victim = producers[index]!;
        const base = Ctl.PRODUCERS + index * PRODUCER_WORDS;
        killed = victim;
        // Prefer a moment when it is inside requestStop (the interrupt still lands a bit later).
        for (let spins = 0; spins < 100_000 && Atomics.load(ctl, base + P.IN_FLIGHT) === 0; spins++);
        t.diagnostic(`killing ${victim.name} at ${((performance.now() - start) / 1000).toFixed(2)} s`);
        await victim.kill();
        if (Atomics.load(ctl, base + P.IN_FLIGHT) === 1) {
          inDoubt = { slot: Atomics.load(ctl, base + P.INTENT_SLOT), gen: Atomics.load(ctl, base + P.INTENT_GEN), reason: Atomics.load(ctl, base + P.INTENT_REASON) };
          t.diagnostic(`killed in the middle of requestStop(slot ${inDoubt.slot}, gen ${inDoubt.gen}, ${reasonName(inDoubt.reason)})`);
        }
      }
      const result = Atomics.waitAsync(words, 4 /* QUEUE_DOORBELL */, seen, 1);
      if (result.async) await result.value;
      else await macrotask(); // the doorbell moved: still give timers and worker messages a turn
    }

    // Phase 2: stop the producers and the watchdog, keep consuming until every thread reported.
    settling = true;
    table.stopWatchdog();
    Atomics.store(ctl, Ctl.STOP, 1);
    const quiesceEnd = performance.now() + 15_000;
    while (threads.some((thread) => thread.exitCode === undefined) && !aborted) {
      if (performance.now() > quiesceEnd) fail(`threads did not finish within 15 s of STOP: ${workersLine()}`);
      if (fatal.length > 0) fail('a thread failed');
      drainJournals();
      const now = performance.now();
      consume(STALL_MS);
      for (let slot = 0; slot < cfg.capacity; slot++) if (models[slot]!.dueAt <= now) act(slot, now);
      await sleep(1);
    }
    if (fatal.length > 0) fail('a thread failed');
    drainJournals();

    // Phase 3: settle — every stop in progress ends, failed ones are retried until they succeed.
    const settle = async (): Promise<void> => {
      const settleEnd = performance.now() + 10_000;
      for (;;) {
        if (performance.now() > settleEnd) fail('settle phase did not converge within 10 s');
        const now = performance.now();
        consumer.timing.orphanAgeMs = 0;
        const moved = consume(0);
        let busy = moved;
        for (let slot = 0; slot < cfg.capacity; slot++) {
          const m = models[slot]!;
          if (m.phase === 'stopping' || m.phase === 'stopped' || (m.phase === 'stopFailed' && m.dueAt !== Infinity)) {
            act(slot, now);
            busy = true;
          }
        }
        if (!busy && table.queueDepth() === 0) return;
        await macrotask();
      }
    };
    await settle();
    // A stop whose event is gone (only the killed producer may leave one: it won the CAS and died)
    // was taken by the orphan sweep during the settle phase, and checked in onTaken.

    // ---- final checks
    const check = (condition: boolean, message: string): void => {
      if (!condition) violations.add(message);
    };
    check(table.queueDepth() === 0, `queue depth ${table.queueDepth()} at the end`);
    const last = table.drainQueue((slot) => violations.add(`event for slot ${slot} after the settle phase`));
    check(last.taken === 0 && !last.headPending, `final drain: ${JSON.stringify(last)}`);
    let leftRequested = 0;
    table.forEachStopRequested(() => leftRequested++);
    check(leftRequested === 0, `${leftRequested} slots still StopRequested at the end`);
    for (let slot = 0; slot < cfg.capacity; slot++) {
      const m = models[slot]!;
      const state = m.phase === 'free' ? State.Free : m.phase === 'prepared' ? State.Prepared : m.phase === 'running' ? State.Running : -1;
      check(state !== -1, `slot ${slot} ended in phase ${m.phase}`);
      if (state !== -1) expectWord(slot, packControl(m.gen, Reason.None, state as State), 'final word');
    }
    // Every win is one event, every event one take; HB wins are only counted by the watchdog.
    const watchdogFired = watchdog.done?.fired ?? -1;
    const tableHeartbeatTimeouts = table.watchdogStats().heartbeatTimeouts;
    check(watchdogFired === stats.hbTakes && tableHeartbeatTimeouts === stats.hbTakes, `heartbeat timeouts: watchdog won ${watchdogFired}, table counted ${tableHeartbeatTimeouts}, consumer took ${stats.hbTakes}`);
    const knownWins = stats.journalWins + stats.mainWins + Math.max(0, watchdogFired);
    const enqueued = table.enqueuedTotal();
    if (killed === undefined) {
      check(enqueued === knownWins, `enqueued ${enqueued} events but threads reported ${knownWins} wins`);
      check(stats.takes === knownWins, `took ${stats.takes} events but threads reported ${knownWins} wins`);
    } else {
      const slack = inDoubt ? 1 : 0;
      check(enqueued >= knownWins - 0 && enqueued <= knownWins + slack, `enqueued ${enqueued}, known wins ${knownWins}, in doubt ${slack}`);
      check(stats.takes >= knownWins && stats.takes <= knownWins + slack, `took ${stats.takes}, known wins ${knownWins}, in doubt ${slack}`);
    }
    let mismatches = 0;
    let multiRound = 0;
    let inDoubtUsed = false;
    for (const [k, e] of ledger) {
      const slot = Math.floor(k / 2 ** 23);
      const gen = k % 2 ** 23;
      if (e.wins.length + e.hbTakes > 1) multiRound++;
      if (e.wins.length > 0 && !allocated.has(k)) violations.add(`wins for slot ${slot} gen ${gen}, a generation main never allocated`);
      const wins = [...e.wins].sort((a, b) => a - b);
      const takes = [...e.takes].sort((a, b) => a - b);
      if (wins.join() === takes.join()) continue;
      if (!inDoubtUsed && inDoubt && inDoubt.slot === slot && inDoubt.gen === gen) {
        const withDoubt = [...wins, inDoubt.reason].sort((a, b) => a - b);
        if (withDoubt.join() === takes.join()) {
          inDoubtUsed = true;
          continue;
        }
      }
      if (mismatches++ < 10) {
        violations.add(
          `slot ${slot} gen ${gen}: wins [${wins.map(reasonName).join(', ')}] but takes [${takes.map(reasonName).join(', ')}] (${e.hbTakes} heartbeat takes) — a lost, duplicated or re-labelled stop`,
        );
      }
    }
    for (const thread of threads) {
      if (thread.killed) continue;
      check(thread.done !== undefined && thread.exitCode === 0, `${thread.name} did not finish cleanly (exit ${thread.exitCode}, done ${thread.done !== undefined})`);
    }

    const attempts = producers.reduce((sum, thread) => sum + (thread.lastCounts?.attempts ?? 0), 0);
    const losses = producers.reduce((sum, thread) => {
      const counts = thread.lastCounts;
      return counts ? counts.lossesBy.map((n, i) => n + (sum[i] ?? 0)) : sum;
    }, [0, 0, 0, 0]);
    const seconds = cfg.durationMs / 1000;
    t.diagnostic(`${cfg.kill ? name : 'storm'} seed=${cfg.seed} config ${JSON.stringify({ ...cfg, seed: undefined })}`);
    t.diagnostic(
      `requestStop calls: ${attempts} by producers (${(attempts / seconds).toFixed(0)}/s) + ${stats.mainAttempts} by main; wins by generation choice ${CATEGORY_NAMES.map((n, i) => `${n} ${stats.winsByCategory[i]}`).join(', ')}; losses ${CATEGORY_NAMES.map((n, i) => `${n} ${losses[i]}`).join(', ')}`,
    );
    t.diagnostic(
      `consumer: ${stats.takes} takes (${(stats.takes / seconds).toFixed(0)}/s) of ${stats.events} events, ${stats.hbTakes} heartbeat timeouts (${stats.hbTakesKeptAlive} on kept-alive executions, min silence−expiry ${stats.minHbSlackMs} ms; watchdog scans ${watchdog.done?.scans ?? '?'}, last scan ${table.watchdogStats().lastScanMicros} µs), ${stats.retryRounds} retry rounds after ${stats.failures} failed stops, ${multiRound} executions with >1 round, ${stats.releases} releases + ${stats.abandonedPrepares} abandoned prepares (max generation advance ${Math.max(...models.map((m, slot) => (m.gen - (startGen + slot) + 2 ** 23) % 2 ** 23))}), ${stats.markRunningLost} markRunning and ${stats.releaseLost} release lost to a stop`,
    );
    t.diagnostic(`queue: max depth ${stats.maxDepth}/${cfg.capacity}, recoveries ${stats.recoveries}, stale events after recovery ${stats.duplicateEvents}, orphans ${stats.orphans}; ${stats.loops} main loop turns, ${stats.heartbeats} heartbeats`);
    if (violations.total > 0) fail(`${violations.total} invariant violation(s)`);
  };

  const running = body();
  running.catch(() => {}); // after a deadline the body's own late failure must not become unhandled
  try {
    await Promise.race([running, deadline]);
  } catch (error) {
    aborted = true;
    if ((error as Error).message === 'deadline' || performance.now() > hardDeadline) fail(`deadline: the run did not finish within ${cfg.durationMs + 45_000} ms`);
    throw error;
  } finally {
    aborted = true;
    clearTimeout(deadlineTimer);
    table.stopWatchdog();
    Atomics.store(ctl, Ctl.STOP, 1);
    for (const thread of threads) {
      if (thread.exitCode === undefined) {
        thread.killed = true;
        await thread.worker.terminate();
      }
    }
  }
}

for (const seed of SEEDS) {
  const durationMs = STORM_SECONDS * 1000;
  test(`storm seed=${seed}: state machine and queue under ${STORM_SECONDS}s of many-thread stop requests`, { timeout: durationMs + 60_000 }, async (t) => {
    await runStorm(t, stormConfig(seed, durationMs, false));
  });
}

test(`storm with a producer killed seed=${SEEDS[0]}: invariants hold for every published event, no hang`, { timeout: STORM_SECONDS * 1000 + 60_000 }, async (t) => {
  await runStorm(t, stormConfig(SEEDS[0]!, STORM_SECONDS * 1000, true));
});
