/**
 * Signals and the stop storm, against an extension in a child process that receives real
 * SIGINT/SIGTERM/SIGUSR1 (invariants 1, 2 and 7). Author stop calls are counted through the
 * fixture's stop log, which the child's worker threads append to.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fixture, sleep, spawnExtension, tempDir, type Answer, type Child } from '../support/harness.js';

const ACTION = 'fixture.behave';
const logs = tempDir('actionkit-signals-');
after(() => logs.remove());

function stopLines(log: string): string[] {
  return existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean) : [];
}

async function startMany(child: Child, count: number, config: Record<string, unknown>): Promise<{ id: string; state: Record<string, unknown> }[]> {
  const started: { id: string; state: Record<string, unknown> }[] = [];
  for (let i = 0; i < count; i += 20) {
    const batch = Array.from({ length: Math.min(20, count - i) }, async () => {
      const id = randomUUID();
      return { id, state: await child.agent.run(ACTION, id, config) };
    });
    started.push(...(await Promise.all(batch)));
  }
  return started;
}

async function probe(child: Child, path: string): Promise<number> {
  return (await fetch(`http://127.0.0.1:${child.healthPort}${path}`)).status;
}

for (const [signal, exitCode] of [
  ['SIGTERM', 143],
  ['SIGINT', 130],
] as const) {
  test(`${signal} stops every active execution, then exits with ${exitCode}`, async () => {
    const log = join(logs.path, `${signal}.log`);
    const child = await spawnExtension([fixture('behave')]);
    try {
      assert.equal(await probe(child, '/health/readiness'), 200);
      assert.equal(await probe(child, '/health/liveness'), 200);
      const running = await startMany(child, 6, { body: 'spin', stopLog: log, stop: 'slow', slowMs: 200 });
      child.process.kill(signal);
      assert.equal(await child.exited, exitCode);
      const lines = stopLines(log);
      assert.equal(lines.length, running.length, `one stop per execution:\n${lines.join('\n')}`);
      for (const { id } of running) {
        assert.equal(lines.filter((line) => line.startsWith(id)).length, 1);
      }
      for (const line of lines) assert.match(line, new RegExp(` received signal ${signal} (stopped|skipped)$`));
    } finally {
      child.process.kill('SIGKILL');
    }
  });
}

test('SIGUSR1 stops every execution and the extension keeps serving', async () => {
  const log = join(logs.path, 'usr1.log');
  const child = await spawnExtension([fixture('behave')]);
  try {
    const running = await startMany(child, 4, { body: 'sleep', stopLog: log });
    child.process.kill('SIGUSR1');
    for (const { id, state } of running) {
      let status: Answer;
      do status = await child.agent.status(ACTION, id, state);
      while (status.body['completed'] !== true);
      assert.deepEqual(status.body, { completed: true, error: { title: 'Action was stopped by extension: received signal SIGUSR1', status: 'errored' } });
      const stop = await child.agent.stop(ACTION, id, state);
      assert.deepEqual(stop.body, { error: { title: 'Action was stopped by extension received signal SIGUSR1' } });
    }
    assert.equal(stopLines(log).length, running.length);
    // Still serving, and ready again.
    const id = randomUUID();
    const state = await child.agent.run(ACTION, id, { body: 'sleep', stopLog: log });
    assert.equal((await child.agent.stop(ACTION, id, state)).status, 200);
    assert.equal(await probe(child, '/health/readiness'), 200);
    child.process.kill('SIGTERM');
    assert.equal(await child.exited, 143);
  } finally {
    child.process.kill('SIGKILL');
  }
});

test('stop storm: 200 executions × 3 concurrent agent stops + SIGUSR1 + heartbeat expiry run each author stop exactly once', async (t) => {
  const log = join(logs.path, 'storm.log');
  // Heartbeat: callInterval 100ms, minimum 1s → I = 1000, E = 1050, T = 4000: expiry after 4200 ms of silence.
  const child = await spawnExtension([fixture('behave')], {
    ACTIONKIT_STOP_GRACE: '2s',
    ACTIONKIT_HEARTBEAT_MIN_INTERVAL: '1s',
  });
  try {
    // Poll every started execution (the agent would) while the rest start.
    const executions: { id: string; state: Record<string, unknown> }[] = [];
    const statusAnswers: Answer[] = [];
    let polling = true;
    let pollFrom = 0;
    const poller = (async () => {
      while (polling) {
        const batch = executions.slice(pollFrom);
        statusAnswers.push(...(await Promise.all(batch.map(({ id, state }) => child.agent.status(ACTION, id, state)))));
        await sleep(200);
      }
    })();
    for (let i = 0; i < 200; i += 20) executions.push(...(await startMany(child, 20, { body: 'spin', stopLog: log })));
    // From now on the first 50 are silent: their heartbeats lapse 4.2 s later; the others stay polled.
    pollFrom = 50;
    const silentSince = Date.now();
    const silent = executions.slice(0, 50);
    const polled = executions.slice(50);
    const at = (ms: number): Promise<void> => sleep(Math.max(0, silentSince + ms - Date.now()));
    const stops = (group: typeof executions): Promise<Answer>[] =>
      group.flatMap(({ id, state }) => [1, 2, 3].map(() => child.agent.stop(ACTION, id, state)));

    await at(4100);
    polling = false;
    const polledStops = stops(polled);
    const statusStorm = executions.map(({ id, state }) => child.agent.status(ACTION, id, state));
    const silentStops: Promise<Answer>[] = [];
    for (let wave = 0; wave < 5; wave++) {
      await at(4300 + wave * 60);
      silentStops.push(...stops(silent.slice(wave * 10, wave * 10 + 10)));
      if (wave === 1) child.process.kill('SIGUSR1');
    }
    const answers = await Promise.all([...polledStops, ...silentStops, ...statusStorm]);
    await poller;

    const all = [...statusAnswers, ...answers];
    assert.equal(all.filter((a) => a.status >= 500).length, 0, 'no 5xx');
    const lines = stopLines(log);
    const reasons = new Map<string, number>();
    for (const { id } of executions) {
      const calls = lines.filter((line) => line.startsWith(id));
      assert.equal(calls.length, 1, `execution ${id}: ${calls.length} author stop calls`);
      const reason = calls[0]!.slice(id.length + 1).replace(/ \w+$/, '');
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    }
    assert.equal(lines.length, executions.length, 'no stop for anything else');
    // Every stop answer is either the agent's own stop result or the reference's extension-stop answer.
    const stopAnswers = answers.slice(0, polledStops.length + silentStops.length);
    for (const answer of stopAnswers) {
      const error = answer.body['error'] as { title: string } | undefined;
      if (error !== undefined) assert.match(error.title, /^Action was stopped by extension (received signal SIGUSR1|heartbeat timeout)$/);
      else assert.ok(Array.isArray(answer.body['messages']));
    }
    // The three concurrent agent stops of one execution all got the same answer.
    for (let i = 0; i < stopAnswers.length; i += 3) {
      assert.deepEqual(stopAnswers[i + 1]!.body, stopAnswers[i]!.body);
      assert.deepEqual(stopAnswers[i + 2]!.body, stopAnswers[i]!.body);
    }
    // Afterwards every execution reports completed.
    for (const { id, state } of executions) assert.equal((await child.agent.status(ACTION, id, state)).body['completed'], true);
    t.diagnostic(`winning reasons: ${JSON.stringify(Object.fromEntries(reasons))}`);
    for (const reason of ['agent stop', 'heartbeat timeout']) assert.ok((reasons.get(reason) ?? 0) > 0, `${reason} won some stops: ${JSON.stringify([...reasons])}`);
    child.process.kill('SIGTERM');
    assert.equal(await child.exited, 143);
  } finally {
    child.process.kill('SIGKILL');
  }
});
