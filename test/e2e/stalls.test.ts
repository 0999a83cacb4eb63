/**
 * The watchdog counts only silence the agent caused (`src/shm/watchdog-rule.ts`): a main thread
 * blocked, or a whole process frozen by SIGSTOP, for several heartbeat expiries while the agent's
 * status requests queue stops no execution; an execution whose agent really stays silent is still
 * stopped, after the stall.
 *
 * The agent runs on its own thread (`test/support/status-poller.ts`), so it keeps sending while the
 * extension's main thread is blocked. How long the stall lasts and that requests were sent during
 * it do not depend on timing: the poller releases the block (or the freeze) only once both hold.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { heartbeatExpiryMs, watchdogTickMs } from '../../src/config.js';
import { mainStallAfterMs } from '../../src/shm/watchdog-rule.js';
import { eventually, fixture, sleep, spawnExtension, start, type Agent } from '../support/harness.js';
import { PollerControl } from '../support/status-poller.js';

const ACTION = 'fixture.behave-io';
const MIN_INTERVAL_MS = 300;
/** The fixture's callInterval is 100 ms, under the minimum: 1,260 ms. */
const EXPIRY_MS = heartbeatExpiryMs(100, MIN_INTERVAL_MS);
const STALL_AFTER_MS = mainStallAfterMs(watchdogTickMs(MIN_INTERVAL_MS));
/** How long the main thread is blocked / the process frozen, at least. */
const STALL_MS = 4 * EXPIRY_MS;
const POLL_EVERY_MS = 100;
/** Executions the agent keeps polling, and the one whose agent falls silent before the stall. */
const KEPT = [0, 1, 2, 3];
const SILENT = 4;

const STOPPED_BY_HEARTBEAT = { completed: true, error: { title: 'Action was stopped by extension: heartbeat timeout', status: 'errored' } };

interface PollingAgent {
  executions: { id: string; state: unknown }[];
  worker: Worker;
  /** The poller's messages: an execution answered as ended, a failed request, a crash. */
  reports: unknown[];
}

/**
 * Start the kept and the silent executions, and the poller thread polling them all; resolves once
 * it polled each twice. `onWorker` gets the thread at once, so the caller can end it whatever fails.
 */
async function startPollingAgent(agent: Agent, base: string, control: PollerControl, onWorker: (worker: Worker) => void): Promise<PollingAgent> {
  // Side by side: the first one's heartbeat runs from its start, before the poller exists.
  const executions = await Promise.all(
    Array.from({ length: control.executions }, async () => {
      const id = randomUUID();
      return { id, state: (await agent.run(ACTION, id, { body: 'sleep' })) as unknown };
    }),
  );
  const reports: unknown[] = [];
  const worker = control.spawn({ base, actionId: ACTION, executions, intervalMs: POLL_EVERY_MS, blockMs: STALL_MS });
  onWorker(worker);
  worker.on('message', (message) => reports.push(message));
  worker.on('error', (error) => reports.push({ type: 'poller crashed', message: String(error) }));
  // Until the poller thread is up and has polled each twice, the test polls them itself: how long
  // the thread takes to boot on a busy machine does not count against their heartbeats.
  await eventually('the agent polls every execution', async () => {
    if (executions.every((_, i) => control.counts(i).answered >= 2)) return true;
    await Promise.all(executions.map(({ id, state }) => agent.status(ACTION, id, state)));
    return undefined;
  });
  return { executions, worker, reports };
}

/** Every request sent for `indexes` has been answered. */
function allAnswered(control: PollerControl, indexes: number[]): true | undefined {
  return indexes.every((i) => control.counts(i).answered === control.counts(i).sent) || undefined;
}

/** None of the kept executions was answered as ended, and nothing went wrong in the poller. */
function assertKeptRunning(control: PollerControl, reports: unknown[], when: string): void {
  assert.deepEqual(reports, [], `${when}: the agent saw an execution end or a request fail`);
  for (const i of KEPT) assert.equal(control.counts(i).stopped, false, `${when}: kept execution ${i} was stopped`);
}

/** Poll `status` of a stopped execution until its stop has finished; its answer. */
async function statusOnceStopped(agent: Agent, execution: { id: string; state: unknown }): Promise<Record<string, unknown>> {
  return eventually('the silent execution answered as stopped', async () => {
    const answer = await agent.status(ACTION, execution.id, execution.state);
    return answer.body['completed'] === true ? answer.body : undefined;
  });
}

test(`a main thread blocked for 4× the heartbeat expiry while the agent's status requests queue stops no execution; one whose agent stays silent is stopped after`, { timeout: 120_000 }, async (t: TestContext) => {
  const running = await start({ actions: [fixture('behave-io')], heartbeatMinIntervalMs: MIN_INTERVAL_MS });
  const control = new PollerControl(KEPT.length + 1);
  let worker: Worker | undefined;
  try {
    const poller = await startPollingAgent(running.agent, running.base, control, (started) => (worker = started));
    const { executions } = poller;
    control.setPolling(SILENT, false);
    await eventually('the silent execution has no request in flight', () => allAnswered(control, [SILENT]));

    const before = running.extension.stats().watchdog;
    const blockedAt = performance.now();
    // The extension's main thread is this one: nothing of it runs until the poller releases it.
    const released = control.blockUntilReleased(60_000);
    const resumedAt = performance.now();
    // Read before this thread's event loop turns again: what the watchdog did during the block.
    const atResume = running.extension.stats().watchdog;
    assert.ok(released, 'the poller never released the main thread');
    assert.equal(atResume.heartbeatTimeouts, 0, 'heartbeat timeouts fired while the main thread was blocked');
    assert.ok(atResume.deferredScans > before.deferredScans, 'the watchdog did not defer during the block');

    await eventually('the requests queued during the block are answered', () => allAnswered(control, KEPT), 30_000);
    for (const i of KEPT) assert.ok(control.counts(i).sentInBlock > 0, `no status request of execution ${i} was sent during the block`);
    assertKeptRunning(control, poller.reports, 'after the block');

    // The silent execution: its silence spans the block, whose excess is excused; stopped after it.
    const stoppedAt = await eventually('the silent execution stopped by the watchdog', () => (running.extension.stats().watchdog.heartbeatTimeouts > 0 ? performance.now() : undefined), 30_000);
    assert.deepEqual(await statusOnceStopped(running.agent, executions[SILENT]!), STOPPED_BY_HEARTBEAT);

    // The kept ones go on running: two more expiries of polling.
    await sleep(2 * EXPIRY_MS);
    assertKeptRunning(control, poller.reports, 'two expiries later');
    const after = running.extension.stats().watchdog;
    assert.equal(after.heartbeatTimeouts, 1, 'only the silent execution timed out');
    assert.ok(after.mainStalls > before.mainStalls, 'the stall was not accounted');
    t.diagnostic(
      `expiry ${EXPIRY_MS} ms, stall threshold ${STALL_AFTER_MS} ms; main thread blocked ${Math.round(resumedAt - blockedAt)} ms; ` +
        `silent execution stopped ${Math.round(stoppedAt - resumedAt)} ms after the main thread resumed; ` +
        `${after.deferredScans - before.deferredScans} scans deferred, ${after.mainStalls - before.mainStalls} stalls, ${after.mainExcusedMs - before.mainExcusedMs} ms excused`,
    );
  } finally {
    control.stop();
    await worker?.terminate();
    await running.close();
  }
});

/** The state letter of a process (`T` = stopped) from /proc, or undefined where there is none. */
function processState(pid: number): string | undefined {
  const path = `/proc/${pid}/stat`;
  if (!existsSync(path)) return undefined;
  const stat = readFileSync(path, 'utf8');
  // "pid (comm) S …": comm may contain spaces and parentheses, so look after the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).charAt(0);
}

async function metric(healthPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
  const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (match === null) throw new Error(`no ${name} in /metrics`);
  return Number(match[1]);
}

test(`SIGSTOP for 4× the heartbeat expiry with status requests sent during the freeze, then SIGCONT: no execution is stopped; one whose agent stays silent is stopped after`, { timeout: 120_000 }, async (t: TestContext) => {
  const child = await spawnExtension([fixture('behave-io')], { ACTIONKIT_HEARTBEAT_MIN_INTERVAL: `${MIN_INTERVAL_MS}ms` });
  const control = new PollerControl(KEPT.length + 1);
  let worker: Worker | undefined;
  try {
    const poller = await startPollingAgent(child.agent, child.base, control, (started) => (worker = started));
    const { executions } = poller;
    // Every request before the freeze answered, so the ones of the freeze are sent during it.
    for (let i = 0; i < executions.length; i++) control.setPolling(i, false);
    await eventually('no request in flight', () => allAnswered(control, [...KEPT, SILENT]));

    child.process.kill('SIGSTOP');
    await eventually('the child stopped', () => (processState(child.process.pid!) ?? 'T') === 'T' || undefined);
    const frozenAt = performance.now();
    for (const i of KEPT) control.setPolling(i, true);
    // This thread waits while the poller sends (its own thread) until the freeze lasted long enough.
    const released = control.blockUntilReleased(60_000);
    const frozeMs = performance.now() - frozenAt;
    child.process.kill('SIGCONT');
    const resumedAt = performance.now();
    assert.ok(released, 'the poller never ended the freeze');

    await eventually('the requests sent during the freeze are answered', () => allAnswered(control, KEPT), 30_000);
    for (const i of KEPT) assert.ok(control.counts(i).sentInBlock > 0, `no status request of execution ${i} was sent during the freeze`);
    assertKeptRunning(control, poller.reports, 'after SIGCONT');

    const stoppedAt = await eventually('the silent execution stopped by the watchdog', async () => ((await metric(child.healthPort, 'actionkit_heartbeat_timeouts_total')) > 0 ? performance.now() : undefined), 30_000);
    assert.deepEqual(await statusOnceStopped(child.agent, executions[SILENT]!), STOPPED_BY_HEARTBEAT);

    await sleep(2 * EXPIRY_MS);
    assertKeptRunning(control, poller.reports, 'two expiries later');
    assert.equal(await metric(child.healthPort, 'actionkit_heartbeat_timeouts_total'), 1, 'only the silent execution timed out');
    const stalls = await metric(child.healthPort, 'actionkit_main_thread_stalls_total');
    const excusedSeconds = await metric(child.healthPort, 'actionkit_main_thread_stalled_seconds_total');
    assert.ok(stalls >= 1, 'the freeze was not accounted as a stall');
    assert.ok(excusedSeconds * 1000 >= frozeMs - 1000, `excused ${excusedSeconds} s of a ${Math.round(frozeMs)} ms freeze`);
    t.diagnostic(
      `expiry ${EXPIRY_MS} ms, stall threshold ${STALL_AFTER_MS} ms; frozen ${Math.round(frozeMs)} ms; ` +
        `silent execution stopped ${Math.round(stoppedAt - resumedAt)} ms after SIGCONT (±1 scrape); ${stalls} stalls, ${excusedSeconds} s excused`,
    );
    child.process.kill('SIGTERM');
    assert.equal(await child.exited, 143);
  } finally {
    control.stop();
    await worker?.terminate();
    child.process.kill('SIGCONT');
    child.process.kill('SIGKILL');
  }
});
