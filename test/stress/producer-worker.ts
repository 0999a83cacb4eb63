/**
 * The threads of the control-table stress test (`control-table.test.ts`), one role per thread:
 *
 * - `producer`: a seeded random storm of `requestStop` calls (current, stale, future and random
 *   generations, random reasons) against one shared table. Every win is appended to the thread's
 *   journal (a ring in shared memory that main drains), so main learns every win even if this
 *   thread is terminated; the request in flight is kept as an "intent" for the same reason.
 * - `watchdog`: the production watchdog loop (`scanHeartbeats(clockMs())` every tick) on its own
 *   thread, until main calls `stopWatchdog()`.
 * - `waiter`: blocks in `waitWhileRunning` and measures how long the wake-up took.
 * - `spinner`: burns CPU (load for latency measurements).
 * - `die-after-reserve`, `die-after-cas`: fault injection — perform the first steps of a winning
 *   `requestStop` with raw atomics (layout in `stress-support.ts`) and exit, like a producer
 *   terminated at that instruction.
 *
 * Results travel back with `postMessage` (plain data only) and through the side buffer.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { clockMs, clockUs, ControlTable, elapsedUs, generationOf, packControl, State, stateOf } from '../../src/shm/table.js';
import {
  Category,
  chooseGeneration,
  chooseSlot,
  Ctl,
  describeControl,
  isStoppable,
  JOURNAL_ENTRIES,
  JOURNAL_ENTRY_WORDS,
  GEN_MASK,
  mulberry32,
  P,
  PRODUCER_REASONS,
  PRODUCER_WORDS,
  RAW_QUEUE_TAIL,
  rawControlIndex,
  type ProducerCounts,
  type WorkerData,
  type WorkerMessage,
} from './stress-support.js';

const data = workerData as WorkerData;
const port = parentPort;
if (port === null) throw new Error('producer-worker must run on a worker thread');

function post(message: WorkerMessage): void {
  port!.postMessage(message);
}

function runProducer(d: Extract<WorkerData, { role: 'producer' }>): void {
  const table = ControlTable.attach(d.table);
  const ctl = new Int32Array(d.ctl);
  const journal = new Int32Array(d.journal);
  const base = Ctl.PRODUCERS + d.index * PRODUCER_WORDS;
  const rng = mulberry32(d.seed);
  const counts: ProducerCounts = { attempts: 0, wins: 0, winsBy: [0, 0, 0, 0], lossesBy: [0, 0, 0, 0], staleFlagged: 0, naps: 0 };
  let violations = 0;
  const violation = (message: string): void => {
    // Bounded: one broken invariant in a hot loop must not flood the port.
    if (violations++ < 20) post({ type: 'violation', message: `producer ${d.index}: ${message}` });
  };

  Atomics.add(ctl, Ctl.READY, 1);
  Atomics.notify(ctl, Ctl.READY);
  while (Atomics.load(ctl, Ctl.GO) === 0) Atomics.wait(ctl, Ctl.GO, 0, 50);

  let lastProgress = performance.now();
  while (Atomics.load(ctl, Ctl.STOP) === 0) {
    const burst = 1 + rng.int(d.burstMax);
    for (let i = 0; i < burst; i++) {
      const slot = chooseSlot(rng, d.slots, d.hotSlots);
      const observed = generationOf(table.control(slot));
      const { generation, category } = chooseGeneration(rng, observed);
      const reason = rng.pick(PRODUCER_REASONS);
      // Intent first, flag last: main reads the flag first after a kill.
      Atomics.store(ctl, base + P.INTENT_SLOT, slot);
      Atomics.store(ctl, base + P.INTENT_GEN, generation);
      Atomics.store(ctl, base + P.INTENT_REASON, reason);
      Atomics.store(ctl, base + P.IN_FLIGHT, 1);
      let outcome;
      try {
        outcome = table.requestStop(slot, generation, reason);
      } catch (error) {
        // The overflow check (capacity invariant) is the only throw in requestStop.
        violation(`requestStop(slot ${slot}, gen ${generation}) threw: ${(error as Error).message}`);
        Atomics.store(ctl, base + P.IN_FLIGHT, 0);
        continue;
      }
      counts.attempts++;
      Atomics.add(ctl, base + P.ATTEMPTS, 1);
      if (outcome.won) {
        counts.wins++;
        counts.winsBy[category]! += 1;
        if (category === Category.Stale) {
          violation(`stale request won: slot ${slot} gen ${generation} (read gen ${observed} just before) → ${describeControl(outcome.control)}`);
        }
        if (outcome.control !== packControl(generation, reason, State.StopRequested) || outcome.stale) {
          violation(`winner's outcome is ${describeControl(outcome.control)} stale=${outcome.stale}, expected gen ${generation} StopRequested with its own reason`);
        }
        // Journal: wait while the ring is full (main drains it every loop turn).
        const w = Atomics.load(ctl, base + P.J_WRITE);
        for (;;) {
          const r = Atomics.load(ctl, base + P.J_READ);
          if (w - r < JOURNAL_ENTRIES) break;
          Atomics.wait(ctl, base + P.J_READ, r, 10);
        }
        const at = (w % JOURNAL_ENTRIES) * JOURNAL_ENTRY_WORDS;
        journal[at] = slot | (category << 24);
        journal[at + 1] = ((generation & GEN_MASK) << 5) | reason;
        Atomics.store(ctl, base + P.J_WRITE, w + 1);
        Atomics.add(ctl, base + P.WINS, 1);
      } else {
        counts.lossesBy[category]! += 1;
        if (outcome.stale) counts.staleFlagged++;
        // requestStop retries until the word is no longer stoppable for this generation, so a
        // loser must have found either another generation or a non-stoppable state.
        const found = outcome.control;
        if (generationOf(found) === (generation & GEN_MASK) && isStoppable(stateOf(found))) {
          violation(`lost although it found a stoppable word of its generation: ${describeControl(found)}`);
        }
        const expectStale = generationOf(found) !== (generation & GEN_MASK) || stateOf(found) === State.Free;
        if (outcome.stale !== expectStale) violation(`stale=${outcome.stale} for found word ${describeControl(found)} (gen asked ${generation})`);
      }
      Atomics.store(ctl, base + P.IN_FLIGHT, 0);
    }
    if (d.napMaxMs > 0 && rng.chance(0.5)) {
      counts.naps++;
      Atomics.wait(ctl, Ctl.NAP, 0, rng.next() * d.napMaxMs);
    }
    const now = performance.now();
    if (now - lastProgress > 200) {
      lastProgress = now;
      post({ type: 'progress', counts });
    }
  }
  post({ type: 'done', counts });
}

function runWatchdog(d: Extract<WorkerData, { role: 'watchdog' }>): void {
  const table = ControlTable.attach(d.table);
  const ctl = new Int32Array(d.ctl);
  Atomics.add(ctl, Ctl.READY, 1);
  Atomics.notify(ctl, Ctl.READY);
  let fired = 0;
  let scans = 0;
  // The loop of workers/watchdog.ts, with a tiny tick.
  while (table.watchdogShouldRun()) {
    const startedAt = performance.now();
    fired += table.scanHeartbeats(clockMs());
    table.recordScan((performance.now() - startedAt) * 1_000_000);
    scans++;
    Atomics.store(ctl, Ctl.WD_FIRED, fired);
    Atomics.store(ctl, Ctl.WD_SCANS, scans);
    table.watchdogSleep(d.tickMs);
  }
  post({ type: 'done', fired, scans });
}

function runWaiter(d: Extract<WorkerData, { role: 'waiter' }>): void {
  const table = ControlTable.attach(d.table);
  const ctl = new Int32Array(d.ctl);
  Atomics.add(ctl, Ctl.READY, 1);
  Atomics.notify(ctl, Ctl.READY);
  let seen = 0;
  while (Atomics.load(ctl, Ctl.STOP) === 0) {
    if (Atomics.load(ctl, Ctl.MAIL_SEQ) === seen) {
      Atomics.wait(ctl, Ctl.MAIL_SEQ, seen, 100);
      continue;
    }
    seen = Atomics.load(ctl, Ctl.MAIL_SEQ);
    const slot = Atomics.load(ctl, Ctl.MAIL_SLOT);
    const generation = Atomics.load(ctl, Ctl.MAIL_GEN);
    Atomics.store(ctl, Ctl.WAITING_SEQ, seen);
    Atomics.notify(ctl, Ctl.WAITING_SEQ);
    const woke = table.waitWhileRunning(slot, generation, 2000);
    const latencyUs = elapsedUs(clockUs(), table.stopRequestedAtUs(slot));
    Atomics.store(ctl, Ctl.RESULT_LAT_US, latencyUs | 0);
    Atomics.store(ctl, Ctl.RESULT_WOKE, woke ? 1 : 0);
    Atomics.store(ctl, Ctl.RESULT_SEQ, seen);
    Atomics.notify(ctl, Ctl.RESULT_SEQ);
  }
  post({ type: 'done' });
}

function runSpinner(d: Extract<WorkerData, { role: 'spinner' }>): void {
  const ctl = new Int32Array(d.ctl);
  Atomics.add(ctl, Ctl.READY, 1);
  Atomics.notify(ctl, Ctl.READY);
  let x = 0;
  while (Atomics.load(ctl, Ctl.STOP) === 0) {
    for (let i = 0; i < 100_000; i++) x = (x * 31 + i) | 0;
  }
  post({ type: 'done', scans: x & 1 });
}

/** The first steps of a winning requestStop, done by hand: CAS the CONTROL word (and reserve). */
function injectFault(d: Extract<WorkerData, { role: 'die-after-reserve' | 'die-after-cas' }>): void {
  const words = new Int32Array(d.table);
  const at = rawControlIndex(d.slot);
  const current = Atomics.load(words, at);
  if (generationOf(current) !== d.generation || !isStoppable(stateOf(current))) {
    throw new Error(`fault injection: slot ${d.slot} is ${describeControl(current)}, not stoppable at gen ${d.generation}`);
  }
  const next = packControl(d.generation, d.reason, State.StopRequested);
  if (Atomics.compareExchange(words, at, current, next) !== current) throw new Error('fault injection: CAS lost');
  let tail = Atomics.load(words, RAW_QUEUE_TAIL);
  if (d.role === 'die-after-reserve') tail = Atomics.add(words, RAW_QUEUE_TAIL, 1);
  post({ type: 'fault-injected', control: next, tail });
  // ...and the thread ends here: no publication, no doorbell.
}

switch (data.role) {
  case 'producer':
    runProducer(data);
    break;
  case 'watchdog':
    runWatchdog(data);
    break;
  case 'waiter':
    runWaiter(data);
    break;
  case 'spinner':
    runSpinner(data);
    break;
  case 'die-after-reserve':
  case 'die-after-cas':
    injectFault(data);
    break;
}
