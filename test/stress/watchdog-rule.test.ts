/**
 * Model test of the watchdog's rule (`src/shm/watchdog-rule.ts`): the real control table and the
 * real {@link WatchdogRule}, driven on a virtual clock through seeded random schedules of what the
 * process goes through — the main thread live, blocked (the watchdog keeps running), the whole
 * process frozen (SIGSTOP: both stop, either may run first after SIGCONT, and the watchdog may
 * judge with a clock it read before the freeze), the watchdog alone starved — while agents poll
 * status at their interval (requests wait while the main thread cannot read them) or fall silent.
 * The clock starts just below 2^32, so every schedule crosses the wrap of the shared clock.
 *
 * Checked at every pass, against a plain re-computation of the rule: exactly the executions whose
 * charged silence reached their expiry are stopped, only when the main thread is live or the
 * watched stall reached `W`. Checked per schedule, the guarantees the rule exists for:
 * - an agent that keeps polling is never stopped, however long the stalls and freezes, unless the
 *   watchdog judged through a wedged main thread;
 * - an agent that falls silent after a request read at `s` is stopped by
 *   `s + expiry + (time the main thread could not run) + (time the watchdog could not run) + 2 ticks`,
 *   and surely by the end of the schedule when that bound falls within it.
 *
 * Single-threaded and deterministic: a seed replays a schedule exactly. Replay:
 *   STRESS_SEED=<seed> STRESS_SCHEDULES=<n> node --test dist/test/stress/watchdog-rule.test.js
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { test } from 'node:test';
import { heartbeatExpiryMs, watchdogTickMs } from '../../src/config.js';
import { ControlTable, Reason, reasonOf, State, stateOf } from '../../src/shm/table.js';
import { MAIN_WEDGED_AFTER_MS, mainStallAfterMs, mainStampIntervalMs, WatchdogRule } from '../../src/shm/watchdog-rule.js';
import { deriveSeed, envInt, mulberry32, type Rng } from './stress-support.js';

const SCHEDULES = envInt('STRESS_SCHEDULES', 40);
const SEED = envInt('STRESS_SEED', randomInt(2 ** 31));
/** Virtual length of one schedule. */
const SCHEDULE_MS = 60_000;
/** Network latency of a status request, at most. */
const MAX_LATENCY_MS = 20;
/** From a request's arrival (main thread live) to its heartbeat stamp, at most. */
const MAX_READ_DELAY_MS = 2;
/** Lateness of a timer or of the watchdog's wake-up, at most. */
const MAX_JITTER_MS = 2;

/** What the process goes through for a while. */
type SegmentKind =
  /** Main thread and watchdog run. */
  | 'live'
  /** The main thread cannot run (a synchronous task, starvation); the watchdog runs. */
  | 'blocked'
  /** SIGSTOP: nothing runs. */
  | 'frozen'
  /** The watchdog alone does not run. */
  | 'watchdog-starved';

interface Segment {
  kind: SegmentKind;
  from: number;
  until: number;
}

interface Execution {
  slot: number;
  generation: number;
  intervalMs: number;
  expiryMs: number;
  /** The agent sends nothing from this virtual time on (Infinity: it keeps polling). */
  silentFrom: number;
  nextSendAt: number;
  /** Arrival times of requests waiting to be read. */
  waiting: number[];
  /** Virtual time of the last heartbeat stamp, and the model's excused time then. */
  stampedAt: number;
  excusedAtStamp: number;
  stoppedAt: number | undefined;
  stoppedWedged: boolean;
  /** When stopped: how long before the stop the main thread last took a reading. */
  stoppedGapMs?: number;
}

interface Figures {
  passes: number;
  deferred: number;
  wedgedPasses: number;
  stalls: number;
  staleClockPasses: number;
  keptAlive: number;
  silentStopped: number;
  maxDetectionOverExpiryMs: number;
}

function plan(rng: Rng, maxExpiryMs: number, stallAfterMs: number, wedgedAfterMs: number, tickMs: number): Segment[] {
  const segments: Segment[] = [];
  let at = 0;
  let live = true;
  while (at < SCHEDULE_MS) {
    let kind: SegmentKind = 'live';
    let length: number;
    if (live) {
      // Some live windows shorter than a tick: a stall may end and the next begin (a freeze, a
      // starved watchdog) without any watchdog pass in between.
      length = rng.chance(0.2) ? 1 + rng.int(tickMs) : 30 + rng.int(3_000);
    } else {
      kind = rng.pick(['blocked', 'blocked', 'frozen', 'frozen', 'watchdog-starved'] as const);
      const size = rng.next();
      if (size < 0.55) length = 1 + rng.int(3 * stallAfterMs);
      else if (size < 0.9 || wedgedAfterMs >= SCHEDULE_MS) length = maxExpiryMs + rng.int(5 * maxExpiryMs);
      else length = wedgedAfterMs + rng.int(3 * maxExpiryMs);
    }
    segments.push({ kind, from: at, until: Math.min(SCHEDULE_MS, at + length) });
    at += length;
    live = !live;
  }
  return segments;
}

/** Run one schedule; the violations found (empty: it held). */
function runSchedule(seed: number, figures: Figures): string[] {
  const rng = mulberry32(seed);
  const violations: string[] = [];
  const minIntervalMs = rng.pick([100, 200, 300, 1_000, 5_000]);
  const tickMs = watchdogTickMs(minIntervalMs);
  const stampEveryMs = mainStampIntervalMs(tickMs);
  const stallAfterMs = mainStallAfterMs(tickMs);
  const count = 2 + rng.int(12);
  const executions: Execution[] = [];
  const table = ControlTable.create(count + rng.int(4));
  const origin = (2 ** 32 - 1 - rng.int(SCHEDULE_MS)) >>> 0;
  const clock = (t: number): number => (origin + t) >>> 0;

  for (let i = 0; i < count; i++) {
    const intervalMs = Math.max(10, Math.round(minIntervalMs * (0.5 + rng.next() * 1.5)));
    executions.push({
      slot: i,
      generation: 0,
      intervalMs,
      expiryMs: heartbeatExpiryMs(intervalMs, minIntervalMs),
      silentFrom: rng.chance(0.4) ? rng.int(SCHEDULE_MS * 0.75) : Infinity,
      nextSendAt: rng.int(intervalMs),
      waiting: [],
      stampedAt: 0,
      excusedAtStamp: 0,
      stoppedAt: undefined,
      stoppedWedged: false,
    });
  }
  const maxExpiryMs = Math.max(...executions.map((e) => e.expiryMs));
  const wedgedAfterMs = rng.chance(0.5) ? MAIN_WEDGED_AFTER_MS : 2 * maxExpiryMs + rng.int(4 * maxExpiryMs);
  const segments = plan(rng, maxExpiryMs, stallAfterMs, wedgedAfterMs, tickMs);
  const context = `min interval ${minIntervalMs} ms, tick ${tickMs} ms, θ ${stallAfterMs} ms, W ${wedgedAfterMs} ms, expiries ${executions.map((e) => e.expiryMs).join('/')} ms, clock origin ${origin}`;

  // The model's own account of the main thread's readings (re-computed, not read from the table).
  let lastReading = 0;
  let modelExcused = 0;
  const reading = (t: number): void => {
    const gap = t - lastReading;
    if (gap > stallAfterMs) {
      modelExcused += gap - stallAfterMs;
      figures.stalls++;
    }
    lastReading = t;
  };

  table.setWatchdogTickMs(tickMs);
  table.setMainStallRule(stallAfterMs, wedgedAfterMs, clock(0));
  for (const e of executions) {
    e.generation = table.allocate(e.slot);
    if (!table.markRunning(e.slot, e.generation, e.expiryMs, clock(0))) violations.push(`slot ${e.slot} did not start`);
    reading(0);
  }
  const rule = new WatchdogRule(table, tickMs);
  let modelPrevious: number | undefined;
  let modelWatched = 0;
  /** The main-thread reading the model's watched stall time belongs to. */
  let modelWatchedSince: number | undefined;
  let nextStampAt = stampEveryMs;
  let nextPassAt = tickMs;
  /** Per virtual ms: could the main thread / the watchdog run (for the detection bound). */
  const mainDown = new Uint8Array(SCHEDULE_MS + 1);
  const watchdogDown = new Uint8Array(SCHEDULE_MS + 1);
  /** A clock the watchdog read just before a freeze, used by its first pass after it. */
  let staleClock: number | undefined;

  const pass = (nowT: number, at: number, stale: boolean): void => {
    const running = executions.filter((e) => e.stoppedAt === undefined);
    // The model: live, deferred or wedged; which executions must be stopped.
    const step = modelPrevious === undefined || nowT < modelPrevious ? 0 : nowT - modelPrevious;
    modelPrevious = nowT;
    let judge = true;
    let wedged = false;
    if (lastReading !== modelWatchedSince) {
      modelWatchedSince = lastReading;
      modelWatched = 0;
    }
    if (nowT - lastReading > stallAfterMs) {
      modelWatched += Math.min(step, 2 * tickMs);
      if (modelWatched < wedgedAfterMs) judge = false;
      else wedged = true;
    }
    const expected = new Set(judge ? running.filter((e) => nowT - e.stampedAt - (modelExcused - e.excusedAtStamp) >= e.expiryMs).map((e) => e.slot) : []);

    const outcome = rule.pass(clock(nowT));
    figures.passes++;
    if (!outcome.judged) figures.deferred++;
    if (outcome.wedged) figures.wedgedPasses++;
    if (stale) figures.staleClockPasses++;
    if (outcome.judged !== judge || outcome.wedged !== wedged) {
      violations.push(`t=${at}: pass(clock t=${nowT}) judged=${outcome.judged} wedged=${outcome.wedged}, the rule says judged=${judge} wedged=${wedged} (last main reading t=${lastReading})`);
    }
    for (const e of running) {
      const control = table.control(e.slot);
      const stopped = stateOf(control) === State.StopRequested;
      if (stopped && reasonOf(control) !== Reason.HeartbeatTimeout) violations.push(`t=${at}: slot ${e.slot} stopped with reason ${reasonOf(control)}`);
      if (stopped !== expected.has(e.slot)) {
        const charged = nowT - e.stampedAt - (modelExcused - e.excusedAtStamp);
        violations.push(`t=${at}: slot ${e.slot} ${stopped ? 'stopped' : 'not stopped'}; charged silence ${charged} ms, expiry ${e.expiryMs} ms, stamped t=${e.stampedAt}, last main reading t=${lastReading}, judged=${judge}`);
      }
      if (stopped) {
        e.stoppedAt = at;
        e.stoppedWedged = wedged;
        e.stoppedGapMs = at - lastReading;
      }
    }
  };

  let segmentIndex = 0;
  let previousKind: SegmentKind = 'live';
  let readSinceResume = true;
  for (let t = 1; t <= SCHEDULE_MS; t++) {
    while (segments[segmentIndex]!.until < t && segmentIndex < segments.length - 1) segmentIndex++;
    const kind = segments[segmentIndex]!.kind;
    const mainRuns = kind === 'live' || kind === 'watchdog-starved';
    const watchdogRuns = kind === 'live' || kind === 'blocked';
    mainDown[t] = mainRuns ? 0 : 1;
    watchdogDown[t] = watchdogRuns ? 0 : 1;
    if (kind === 'frozen' && previousKind !== 'frozen') {
      if (rng.chance(0.3)) staleClock = t - 1;
      readSinceResume = false;
    }
    previousKind = kind;

    // Agents send whatever the process does.
    for (const e of executions) {
      if (t >= e.silentFrom || t < e.nextSendAt) continue;
      e.waiting.push(t + rng.int(MAX_LATENCY_MS + 1));
      e.nextSendAt = t + e.intervalMs + rng.int(Math.floor(e.intervalMs / 10) + 1);
    }

    const mainTurn = (): void => {
      if (!mainRuns) return;
      if (t >= nextStampAt) {
        table.markMainAlive(clock(t));
        reading(t);
        readSinceResume = true;
        nextStampAt = t + stampEveryMs + rng.int(MAX_JITTER_MS + 1);
      }
      for (const e of executions) {
        if (e.waiting.length === 0 || e.waiting[0]! + rng.int(MAX_READ_DELAY_MS + 1) > t) continue;
        e.waiting = e.waiting.filter((arrival) => arrival > t);
        table.recordHeartbeat(e.slot, clock(t));
        reading(t);
        readSinceResume = true;
        if (e.stoppedAt === undefined) {
          e.stampedAt = t;
          e.excusedAtStamp = modelExcused;
        }
      }
    };
    const watchdogTurn = (): void => {
      if (!watchdogRuns) return;
      if (staleClock !== undefined && readSinceResume) {
        pass(staleClock, t, true);
        staleClock = undefined;
      }
      if (t >= nextPassAt) {
        pass(t, t, false);
        nextPassAt = t + tickMs + rng.int(MAX_JITTER_MS + 1);
      }
    };
    if (rng.chance(0.5)) {
      mainTurn();
      watchdogTurn();
    } else {
      watchdogTurn();
      mainTurn();
    }
  }

  // The guarantees, per execution: reported first (the pass-by-pass differences may be many).
  const guarantees: string[] = [];
  for (const e of executions) {
    if (e.silentFrom === Infinity) {
      figures.keptAlive++;
      // A stop while wedged is allowed only after one stall (between two main-thread readings) of at least W.
      if (e.stoppedAt !== undefined && (!e.stoppedWedged || (e.stoppedGapMs ?? 0) < wedgedAfterMs)) {
        guarantees.push(`slot ${e.slot}: its agent kept polling every ${e.intervalMs} ms, but it was stopped at t=${e.stoppedAt} (expiry ${e.expiryMs} ms, last stamp t=${e.stampedAt}) without a wedged main thread`);
      }
      continue;
    }
    // Silent: the bound counts from its last stamp.
    const end = e.stoppedAt ?? SCHEDULE_MS;
    let down = 0;
    for (let t = e.stampedAt + 1; t <= end; t++) down += mainDown[t]! + watchdogDown[t]!;
    const bound = e.stampedAt + e.expiryMs + down + 2 * tickMs + MAX_JITTER_MS;
    if (e.stoppedAt === undefined) {
      if (bound < SCHEDULE_MS) guarantees.push(`slot ${e.slot}: silent since its stamp at t=${e.stampedAt}, never stopped although the bound t=${bound} is within the schedule`);
    } else {
      figures.silentStopped++;
      if (e.stoppedAt > bound) guarantees.push(`slot ${e.slot}: silent since its stamp at t=${e.stampedAt}, stopped at t=${e.stoppedAt}, after the bound t=${bound}`);
      if (down === 0) figures.maxDetectionOverExpiryMs = Math.max(figures.maxDetectionOverExpiryMs, e.stoppedAt - e.stampedAt - e.expiryMs);
    }
  }
  return [...guarantees, ...violations].map((violation) => `${violation}\n    (${context})`);
}

test(`watchdog rule model: ${SCHEDULES} seeded schedules of main-thread stalls, process freezes and silent agents on a wrapping clock (seed ${SEED})`, { timeout: 120_000 }, (t) => {
  const figures: Figures = { passes: 0, deferred: 0, wedgedPasses: 0, stalls: 0, staleClockPasses: 0, keptAlive: 0, silentStopped: 0, maxDetectionOverExpiryMs: 0 };
  for (let schedule = 0; schedule < SCHEDULES; schedule++) {
    const violations = runSchedule(deriveSeed(SEED, schedule), figures);
    if (violations.length > 0) {
      assert.fail(
        [
          `schedule ${schedule} of run seed ${SEED} broke the rule (${violations.length}):`,
          ...violations.slice(0, 20).map((violation) => `  - ${violation}`),
          `replay: STRESS_SEED=${SEED} STRESS_SCHEDULES=${schedule + 1} node --test dist/test/stress/watchdog-rule.test.js`,
        ].join('\n'),
      );
    }
  }
  // The schedules must have exercised what they are about.
  assert.ok(figures.deferred > 0 && figures.stalls > 0 && figures.silentStopped > 0 && figures.keptAlive > 0, `schedules too tame: ${JSON.stringify(figures)}`);
  if (SCHEDULES >= 20) assert.ok(figures.wedgedPasses > 0 && figures.staleClockPasses > 0, `no wedged or stale-clock pass: ${JSON.stringify(figures)}`);
  t.diagnostic(`seed ${SEED}: ${JSON.stringify(figures)}`);
});
