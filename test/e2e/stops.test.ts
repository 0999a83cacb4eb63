/**
 * Stop, heartbeat and escalation invariants (DESIGN §2: 1–4) over real HTTP with real worker
 * threads. Author stop calls are counted through the fixture's stop log file, written by whichever
 * worker thread ran the stop.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { eventually, fixture, sleep, start, tempDir, type Running } from '../support/harness.js';

const ACTION = 'fixture.behave';
const logs = tempDir('actionkit-stoplog-');
after(() => logs.remove());

/** Lines `<executionId> <reason…> <bodyPhase>` written by the fixture's stop handler. */
function stopCalls(log: string): Map<string, string[]> {
  const calls = new Map<string, string[]>();
  if (!existsSync(log)) return calls;
  for (const line of readFileSync(log, 'utf8').split('\n').filter(Boolean)) {
    const id = line.slice(0, line.indexOf(' '));
    calls.set(id, [...(calls.get(id) ?? []), line.slice(id.length + 1)]);
  }
  return calls;
}

/** Poll status until the fixture reports its body in `phase` (the fixture puts ctx.body.phase in a metric label). */
async function bodyPhase(running: Running, id: string, state: unknown, phase: string): Promise<void> {
  await eventually(`the body to be ${phase}`, async () => {
    const metrics = (await running.agent.status(ACTION, id, state)).body['metrics'] as { metric: { body: string } }[] | undefined;
    return metrics?.[0]?.metric.body === phase || undefined;
  });
}

function newLog(): string {
  return join(logs.path, `${randomUUID()}.log`);
}

describe('exactly-once stop', () => {
  let running: Running;
  before(async () => {
    running = await start({ actions: [fixture('behave')], stopGraceMs: 2000 });
  });
  after(() => running.close());

  test('duplicate concurrent agent stops run the author stop once and share its answer', async () => {
    const log = newLog();
    const id = randomUUID();
    const state = await running.agent.run(ACTION, id, { body: 'spin', stopLog: log });
    await bodyPhase(running, id, state, 'running');
    const answers = await Promise.all(Array.from({ length: 8 }, () => running.agent.stop(ACTION, id, state)));
    for (const answer of answers) {
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.body, answers[0]!.body, 'every duplicate gets the same stop result');
    }
    assert.match(JSON.stringify(answers[0]!.body), /Action body stopped cooperatively/);
    assert.deepEqual(stopCalls(log).get(id), ['agent stop stopped']);
    // A late duplicate after the stop finished is answered from the remembered outcome.
    const late = await running.agent.stop(ACTION, id, state);
    assert.deepEqual(late.body, answers[0]!.body);
    assert.equal(stopCalls(log).get(id)?.length, 1);
  });

  test('a stop for a finished execution never hits the next execution in the same control block', async () => {
    const log = newLog();
    const first = randomUUID();
    const firstState = await running.agent.run(ACTION, first, { body: 'sleep', stopLog: log });
    await running.agent.stop(ACTION, first, firstState);
    // The freed block is the first to be reused (LIFO free list), so the next execution takes it.
    const second = randomUUID();
    const secondState = await running.agent.run(ACTION, second, { body: 'sleep', stopLog: log });
    const again = await Promise.all([1, 2, 3].map(() => running.agent.stop(ACTION, first, firstState)));
    for (const answer of again) assert.equal(answer.status, 200);
    const status = await running.agent.status(ACTION, second, secondState);
    assert.equal(status.body['completed'], false, 'the second execution still runs');
    assert.equal(stopCalls(log).get(second), undefined, 'the second execution was never stopped');
    assert.equal(stopCalls(log).get(first)?.length, 1);
    await running.agent.stop(ACTION, second, secondState);
  });

  test('a prepared execution that is never started is stopped by a stop-all', async () => {
    const log = newLog();
    const id = randomUUID();
    const prepared = await running.agent.prepare(ACTION, id, { stopLog: log });
    assert.equal(prepared.status, 200);
    const result = await running.extension.stopAll();
    assert.equal(result.failed, 0);
    assert.deepEqual(stopCalls(log).get(id), ['extension shutdown none']);
    const stop = await running.agent.stop(ACTION, id, prepared.body['state']);
    assert.deepEqual(stop.body, { error: { title: 'Action was stopped by extension extension shutdown' } });
  });

  test('a failed author stop keeps the execution and a later stop retries it', async () => {
    const log = newLog();
    const id = randomUUID();
    const state = (await running.agent.run(ACTION, id, { stop: 'throw', stopLog: log })) as { config: Record<string, unknown> };
    const failed = await running.agent.stop(ACTION, id, state);
    assert.equal(failed.status, 500);
    assert.equal(failed.body['title'], 'Failed to stop action.');
    assert.equal(failed.body['detail'], 'stop failed on purpose');
    assert.equal(running.extension.stats().activeExecutions > 0, true);
    // The agent retries with a state whose stop now succeeds: the author stop runs again, once.
    const retried = await running.agent.stop(ACTION, id, { ...state, config: { ...state.config, stop: 'ok' } });
    assert.equal(retried.status, 200);
    assert.equal(stopCalls(log).get(id)?.length, 2);
    const third = await running.agent.stop(ACTION, id, state);
    assert.deepEqual(third.body, retried.body);
    assert.equal(stopCalls(log).get(id)?.length, 2);
  });
});

describe('heartbeat', () => {
  let running: Running;
  before(async () => {
    // callInterval 100ms, minimum 200ms → I = 200, E = 210, T = 800: expiry (⌊800/210⌋+1)·210 = 840 ms.
    running = await start({ actions: [fixture('behave')], heartbeatMinIntervalMs: 200 });
  });
  after(() => running.close());

  test('status polls keep an execution alive; silence stops it with "heartbeat timeout"', async () => {
    const log = newLog();
    const id = randomUUID();
    let state = await running.agent.run(ACTION, id, { body: 'spin', stopLog: log });
    const aliveUntil = Date.now() + 2000;
    let lastHeartbeatAt = Date.now();
    while (Date.now() < aliveUntil) {
      lastHeartbeatAt = Date.now();
      const status = await running.agent.status(ACTION, id, state);
      assert.equal(status.body['completed'], false, 'polled every 100 ms, it must stay alive');
      state = status.body['state'] as Record<string, unknown>;
      await sleep(100);
    }
    const calls = await eventually('the heartbeat stop', () => stopCalls(log).get(id), 5000);
    const silenceMs = Date.now() - lastHeartbeatAt;
    assert.deepEqual(calls, ['heartbeat timeout stopped']);
    assert.ok(silenceMs >= 800, `stopped after ${silenceMs} ms of silence, expected about 840 ms`);
    const status = await running.agent.status(ACTION, id, state);
    assert.deepEqual(status.body, { completed: true, error: { title: 'Action was stopped by extension: heartbeat timeout', status: 'errored' } });
    const stop = await running.agent.stop(ACTION, id, state);
    assert.deepEqual(stop.body, { error: { title: 'Action was stopped by extension heartbeat timeout' } });
    assert.equal(stopCalls(log).get(id)?.length, 1, 'the agent stop did not call stop again');
  });
});

describe('bodies and worker failures', () => {
  let running: Running;
  before(async () => {
    running = await start({
      actions: [fixture('behave')],
      handlerThreads: 2,
      // A cooperative body must see its stop and end within the grace on a busy machine too.
      stopGraceMs: 2_000,
      handlerTimeoutMs: 1500,
      workerMaxOldGenerationMb: 48,
      // No heartbeat expiry: these executions are not polled while a test waits for a body to end.
      heartbeatMinIntervalMs: 3_600_000,
    });
  });
  after(() => running.close());

  test('a body deaf to stops is killed after the grace period and the author stop still runs', async () => {
    const log = newLog();
    const id = randomUUID();
    const state = await running.agent.run(ACTION, id, { body: 'ignore-stop', stopLog: log });
    await bodyPhase(running, id, state, 'running');
    const lostBefore = running.extension.stats().bodies.threadsLost;
    const stop = await running.agent.stop(ACTION, id, state);
    assert.equal(stop.status, 200);
    assert.match(JSON.stringify(stop.body), /did not stop within the 2000 ms grace period; its thread was terminated/);
    assert.deepEqual(stopCalls(log).get(id), ['agent stop killed']);
    assert.equal(running.extension.stats().stops.bodiesKilled >= 1, true);
    assert.equal(running.extension.stats().bodies.threadsLost, lostBefore + 1, 'its thread was terminated');
    // The lane recovered: a new body runs and stops cooperatively.
    const next = randomUUID();
    const nextState = await running.agent.run(ACTION, next, { body: 'spin' });
    await bodyPhase(running, next, nextState, 'running');
    const nextStop = await running.agent.stop(ACTION, next, nextState);
    assert.match(JSON.stringify(nextStop.body), /stopped cooperatively/);
  });

  for (const [body, detail] of [
    ['throw', /body failed on purpose/],
    ['exit', /exited/],
  ] as const) {
    test(`a body that ${body === 'throw' ? 'throws' : 'calls process.exit()'} stops its execution with reason "action body failed"`, async () => {
      const log = newLog();
      const id = randomUUID();
      const state = await running.agent.run(ACTION, id, { body, stopLog: log });
      await eventually('the body-failure stop', () => stopCalls(log).get(id));
      const status = await running.agent.status(ACTION, id, state);
      assert.equal(status.body['completed'], true);
      const error = status.body['error'] as { title: string; status: string; detail: string };
      assert.equal(error.title, 'Action was stopped by extension: action body failed');
      assert.equal(error.status, 'errored');
      assert.match(error.detail, detail);
      const stop = await running.agent.stop(ACTION, id, state);
      assert.deepEqual(stop.body, { error: { title: 'Action was stopped by extension action body failed' } });
      assert.equal(stopCalls(log).get(id)?.length, 1);
    });
  }

  for (const [behaviour, detail] of [
    ['exit', /exited with code 3/],
    ['hang', /did not finish within 1500 ms; its worker thread was terminated/],
    ['oom', /ran out of memory/],
    ['async-crash', /crashed: uncaught in a timer/],
  ] as const) {
    test(`a handler that ${behaviour === 'hang' ? 'hangs' : behaviour === 'oom' ? 'runs out of memory' : behaviour === 'exit' ? 'calls process.exit()' : 'crashes asynchronously'} fails only its execution`, async () => {
      const id = randomUUID();
      const prepared = await running.agent.prepare(ACTION, id, { prepare: behaviour });
      assert.equal(prepared.status, 200);
      const error = prepared.body['error'] as { title: string; detail: string };
      assert.equal(error.title, 'Failed to prepare.');
      assert.match(error.detail, detail);
      assert.deepEqual(prepared.body['state'], {});
      // The failed prepare released its control block, and the pool serves the next execution.
      assert.equal(running.extension.stats().activeExecutions, 0);
      const other = randomUUID();
      const state = await running.agent.run(ACTION, other, {});
      assert.equal((await running.agent.stop(ACTION, other, state)).status, 200);
    });
  }

  test('status and stop get a thread while every body thread burns CPU', async () => {
    const spinning = await Promise.all([0, 1].map(async () => {
      const id = randomUUID();
      return { id, state: await running.agent.run(ACTION, id, { body: 'spin' }) };
    }));
    const probe = randomUUID();
    const probeState = await running.agent.run(ACTION, probe, {});
    const startedAt = Date.now();
    for (let i = 0; i < 20; i++) assert.equal((await running.agent.status(ACTION, probe, probeState)).status, 200);
    // Hang detection only: were a body on a handler thread, its spin would never give the thread
    // back (bench/ measures the latency).
    assert.ok(Date.now() - startedAt < 60_000, `20 status calls took ${Date.now() - startedAt} ms`);
    for (const { id, state } of [...spinning, { id: probe, state: probeState }]) await running.agent.stop(ACTION, id, state);
  });

  test('body reports reach status (and the status handler) in order', async () => {
    const id = randomUUID();
    let state = await running.agent.run(ACTION, id, { body: 'report' });
    // Each answer carries the reports made since the one before: collect them until there are two.
    const ticks: string[] = [];
    let tickMetrics = 0;
    await eventually('two body reports', async () => {
      const status = await running.agent.status(ACTION, id, state);
      state = status.body['state'] as Record<string, unknown>;
      const messages = ((status.body['messages'] as { message: string }[] | undefined) ?? []).map((m) => m.message);
      const these = messages.filter((m) => m.startsWith('tick '));
      if (these.length > 0) assert.ok(messages.includes(`saw ${these.length} body reports`), `the status handler received the same reports: ${JSON.stringify(messages)}`);
      tickMetrics += ((status.body['metrics'] as { name: string }[] | undefined) ?? []).filter((m) => m.name === 'ticks').length;
      ticks.push(...these);
      return ticks.length >= 2 ? true : undefined;
    });
    assert.deepEqual(ticks, ticks.map((_, i) => `tick ${i}`), 'reports arrive complete and in order');
    assert.equal(tickMetrics, ticks.length, 'every report\'s metric arrived with its message');
    await running.agent.stop(ACTION, id, state);
  });
});
