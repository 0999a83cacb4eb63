/**
 * The watched time that makes the watchdog judge through a wedged main thread belongs to one
 * stall. Found by review: when no watchdog pass ran in the short live window between two stalls
 * (the process frozen right after the main thread read, or the watchdog starved alone), the next
 * stall inherited the first one's watched time, and an execution whose agent kept polling was
 * stopped after watching the second stall for far less than `W`. Deterministic schedules on a
 * virtual clock (crossing the 32-bit wrap), with the real control table and rule.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { heartbeatExpiryMs, watchdogTickMs } from '../../src/config.js';
import { ControlTable, State, stateOf } from '../../src/shm/table.js';
import { MAIN_WEDGED_AFTER_MS, mainStallAfterMs, mainStampIntervalMs, WatchdogRule } from '../../src/shm/watchdog-rule.js';

/** What runs at a virtual ms: both threads, only the watchdog (main blocked), only the main thread, or nothing. */
type Phase = 'live' | 'blocked' | 'watchdog-starved' | 'frozen';

interface Outcome {
  stoppedAt: number | undefined;
  wedgedAt: number | undefined;
  lastReadAt: number;
}

/** One execution polled every 5 s by its agent, under the default heartbeat settings, for `untilMs`. */
function run(phaseAt: (t: number) => Phase, untilMs: number): Outcome {
  const minIntervalMs = 5_000;
  const intervalMs = 5_000;
  const tickMs = watchdogTickMs(minIntervalMs);
  const expiryMs = heartbeatExpiryMs(intervalMs, minIntervalMs);
  const origin = 2 ** 32 - 70_000;
  const clock = (t: number): number => (origin + t) >>> 0;
  const table = ControlTable.create(4);
  table.setWatchdogTickMs(tickMs);
  table.setMainStallRule(mainStallAfterMs(tickMs), MAIN_WEDGED_AFTER_MS, clock(0));
  const generation = table.allocate(0);
  assert.ok(table.markRunning(0, generation, expiryMs, clock(0)));
  const rule = new WatchdogRule(table, tickMs);
  let nextStampAt = mainStampIntervalMs(tickMs);
  let nextPassAt = tickMs;
  let nextSendAt = intervalMs;
  let waiting = 0;
  const out: Outcome = { stoppedAt: undefined, wedgedAt: undefined, lastReadAt: 0 };
  for (let t = 1; t <= untilMs && out.stoppedAt === undefined; t++) {
    const phase = phaseAt(t);
    // The agent keeps polling; its requests wait in the socket until the main thread runs.
    if (t >= nextSendAt) {
      waiting++;
      nextSendAt += intervalMs;
    }
    if (phase === 'live' || phase === 'watchdog-starved') {
      if (t >= nextStampAt) {
        table.markMainAlive(clock(t));
        nextStampAt = t + mainStampIntervalMs(tickMs);
      }
      if (waiting > 0) {
        waiting = 0;
        table.recordHeartbeat(0, clock(t));
        out.lastReadAt = t;
      }
    }
    if ((phase === 'live' || phase === 'blocked') && t >= nextPassAt) {
      const outcome = rule.pass(clock(t));
      if (outcome.wedged && out.wedgedAt === undefined) out.wedgedAt = t;
      nextPassAt = t + tickMs;
      if (stateOf(table.control(0)) === State.StopRequested) out.stoppedAt = t;
    }
  }
  return out;
}

function explain(outcome: Outcome, stallFrom: number): string {
  return `the agent kept polling (last read t=${outcome.lastReadAt}); wedged at t=${outcome.wedgedAt}, stopped at t=${outcome.stoppedAt}; the stall in progress began at t=${stallFrom}, W=${MAIN_WEDGED_AFTER_MS}`;
}

test('a process frozen right after a long stall ended: the next stall is watched from 0', () => {
  const phaseAt = (t: number): Phase =>
    t < 10_000 ? 'live' : t < 60_100 ? 'blocked' : t === 60_100 ? 'live' : t < 60_110 ? 'blocked' : t < 80_110 ? 'frozen' : t < 95_000 ? 'blocked' : 'live';
  const outcome = run(phaseAt, 120_000);
  assert.equal(outcome.stoppedAt, undefined, explain(outcome, 60_100));
});

test('the watchdog alone starved right after a long stall ended: the next stall is watched from 0', () => {
  const phaseAt = (t: number): Phase =>
    t < 10_000 ? 'live' : t < 60_000 ? 'blocked' : t < 60_100 ? 'frozen' : t === 60_100 ? 'watchdog-starved' : t < 61_200 ? 'frozen' : t < 90_100 ? 'blocked' : 'live';
  const outcome = run(phaseAt, 120_000);
  assert.equal(outcome.stoppedAt, undefined, explain(outcome, 60_100));
});

test('control: the watchdog sees the main thread live between the stalls; nothing is stopped', () => {
  const phaseAt = (t: number): Phase => (t < 10_000 ? 'live' : t < 60_100 ? 'blocked' : t < 60_400 ? 'live' : t < 95_000 ? 'blocked' : 'live');
  assert.equal(run(phaseAt, 120_000).stoppedAt, undefined);
});

test('a single stall longer than W is still judged through: the wedged main thread stops its executions', () => {
  const phaseAt = (t: number): Phase => (t < 10_000 ? 'live' : 'blocked');
  const outcome = run(phaseAt, 10_000 + MAIN_WEDGED_AFTER_MS + 5_000);
  assert.ok(outcome.wedgedAt !== undefined && outcome.wedgedAt >= 10_000 + MAIN_WEDGED_AFTER_MS, explain(outcome, 10_000));
  assert.ok(outcome.stoppedAt !== undefined, explain(outcome, 10_000));
});
