/**
 * The body lane: a start answered without error means the body runs — never waiting for a thread —
 * for cpu bodies (a thread each) and io bodies (sharing threads); the cap fails a start instead of
 * queueing it; an io body that must be killed takes its thread's other bodies with it, and says so;
 * cpu body threads run at the configured nice value, the rest of the process does not.
 * Real HTTP, real worker threads.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, test } from 'node:test';
import type { ExtensionOptions } from '../../src/index.js';
import { LARGE_REQUEST_NICE } from '../../src/pool.js';
import { fixture, logLines, start, tempDir, type Answer, type Running } from '../support/harness.js';

const CPU = 'fixture.behave';
const IO = 'fixture.behave-io';
const logs = tempDir('actionkit-bodies-');
after(() => logs.remove());

let running: Running | undefined;
afterEach(async () => {
  await running?.close();
  running = undefined;
});

/** An extension with both fixture actions; nobody polls status here, so heartbeats never expire. */
async function setUp(options: Partial<ExtensionOptions> = {}): Promise<Running> {
  running = await start({ actions: [fixture('behave'), fixture('behave-io')], heartbeatMinIntervalMs: 3_600_000, ...options });
  return running;
}

/** The body phase the fixture's status handler reports. */
function phaseOf(status: Answer): string {
  const metrics = status.body['metrics'] as { metric: { body: string } }[] | undefined;
  const phase = metrics?.[0]?.metric.body;
  assert.ok(phase !== undefined, `no body phase in ${JSON.stringify(status.body)}`);
  return phase;
}


test('three times as many cpu bodies as cores: each is running when its start answers', async () => {
  const count = 3 * availableParallelism();
  const running = await setUp();
  const started: { id: string; state: unknown }[] = [];
  for (let i = 0; i < count; i++) {
    const id = randomUUID();
    const state = await running.agent.run(CPU, id, { body: 'spin' });
    // No waiting, no polling: the answer to start means the body runs.
    assert.equal(phaseOf(await running.agent.status(CPU, id, state)), 'running', `body ${i + 1} of ${count}`);
    started.push({ id, state });
  }
  assert.equal(running.extension.stats().bodies.cpuBusy, count);
  for (const { id, state } of started) assert.equal((await running.agent.stop(CPU, id, state)).status, 200);
  assert.equal(running.extension.stats().bodies.cpuBusy, 0);
});

test('two hundred io bodies share the io threads, each running when its start answers', async () => {
  const running = await setUp({ maxExecutions: 300 });
  const started = await Promise.all(
    Array.from({ length: 200 }, async () => {
      const id = randomUUID();
      const state = await running.agent.run(IO, id, { body: 'async' });
      assert.equal(phaseOf(await running.agent.status(IO, id, state)), 'running');
      return { id, state };
    }),
  );
  const { bodies } = running.extension.stats();
  assert.equal(bodies.ioBodies, 200);
  assert.equal(bodies.ioThreads, 2);
  assert.equal(bodies.cpuBusy, 0);
  await Promise.all(started.map(({ id, state }) => running.agent.stop(IO, id, state)));
  assert.equal(running.extension.stats().bodies.ioBodies, 0);
});

test('at ACTIONKIT_MAX_BODY_THREADS a start fails before the author start runs, naming the cap; no body waits', async () => {
  const running = await setUp({ maxBodyThreads: 2, spareBodyThreads: 0 });
  const callLog = join(logs.path, `${randomUUID()}.log`);
  const first = { id: randomUUID(), state: {} as unknown };
  first.state = await running.agent.run(CPU, first.id, { body: 'sleep', callLog });
  const second = await running.agent.run(CPU, randomUUID(), { body: 'sleep', callLog });
  void second;
  const third = randomUUID();
  const prepared = await running.agent.prepare(CPU, third, { body: 'sleep', callLog });
  const refused = await running.agent.start(CPU, third, prepared.body['state']);
  assert.equal(refused.status, 200);
  const error = refused.body['error'] as { title: string; detail: string };
  assert.equal(error.title, 'Too many running bodies');
  assert.match(error.detail, /all 2 cpu body threads are running bodies \(ACTIONKIT_MAX_BODY_THREADS\)/);
  assert.deepEqual(logLines(callLog, third), [], 'the author start did not run');
  // Like any failed start, the agent stops it; the author stop rolls back what prepare did.
  assert.equal((await running.agent.stop(CPU, third, prepared.body['state'])).status, 200);
  assert.deepEqual(logLines(callLog, third), ['stop-begin', 'stop-ok']);
  // A stopped body frees its thread for the next start.
  await running.agent.stop(CPU, first.id, first.state);
  const fourth = randomUUID();
  const fourthState = await running.agent.run(CPU, fourth, { body: 'sleep' });
  assert.equal(phaseOf(await running.agent.status(CPU, fourth, fourthState)), 'running');
});

test('with no spare thread a start waits for a thread to boot, and its body runs when it answers', async () => {
  const running = await setUp({ spareBodyThreads: 0 });
  assert.equal(running.extension.stats().bodies.cpuThreads, 0);
  const id = randomUUID();
  const state = await running.agent.run(CPU, id, { body: 'spin' });
  assert.equal(phaseOf(await running.agent.status(CPU, id, state)), 'running');
  await running.agent.stop(CPU, id, state);
});

for (const misbehaviour of ['ignore-stop', 'block'] as const) {
  test(`an io body that ${misbehaviour === 'block' ? 'blocks its shared thread' : 'ignores its stop'} is killed with its thread after the grace period; its neighbours are stopped with the reason`, async () => {
    const running = await setUp({ ioBodyThreads: 1, stopGraceMs: 300 });
    const neighbour = randomUUID();
    const neighbourState = await running.agent.run(IO, neighbour, { body: 'async' });
    const bad = randomUUID();
    const badState = await running.agent.run(IO, bad, { body: misbehaviour });
    const stopped = await running.agent.stop(IO, bad, badState);
    assert.equal(stopped.status, 200);
    assert.match(JSON.stringify(stopped.body), /did not stop within the 300 ms grace period; its thread was terminated/);
    // The neighbour shared the thread: its execution is stopped by the extension, with the reason.
    const status = await running.agent.status(IO, neighbour, neighbourState);
    assert.equal(status.body['completed'], true);
    const error = status.body['error'] as { title: string; detail: string };
    assert.equal(error.title, 'Action was stopped by extension: action body failed');
    assert.match(error.detail, new RegExp(`terminated to end the body of execution ${bad}, which did not stop within the 300 ms grace period`));
    // The io lane recovers: a new io body runs on a new thread.
    const next = randomUUID();
    const nextState = await running.agent.run(IO, next, { body: 'async' });
    assert.equal(phaseOf(await running.agent.status(IO, next, nextState)), 'running');
    await running.agent.stop(IO, next, nextState);
    assert.equal(running.extension.stats().bodies.threadsLost, 1);
  });
}

test('a start whose io thread is blocked by another body fails at its deadline instead of hanging; stopping it kills that thread', async () => {
  const running = await setUp({ ioBodyThreads: 1, stopGraceMs: 300, handlerTimeoutMs: 1_000 });
  const blocker = randomUUID();
  const blockerState = await running.agent.run(IO, blocker, { body: 'block' });
  const late = randomUUID();
  const prepared = await running.agent.prepare(IO, late, { body: 'async' });
  const started = await running.agent.start(IO, late, prepared.body['state']);
  const error = started.body['error'] as { title: string; detail: string };
  assert.equal(error.title, 'Failed to start action.');
  assert.match(error.detail, /the body did not begin within \d+ ms: its shared io body thread is blocked/);
  // The agent stops the failed start: its body never began, and the blocked thread is ended.
  const stopped = await running.agent.stop(IO, late, started.body['state']);
  assert.equal(stopped.status, 200);
  const blockerStatus = await running.agent.status(IO, blocker, blockerState);
  assert.equal(blockerStatus.body['completed'], true, 'the blocking body went with its thread');
});

test('ctx.sleep() in an io body fails the body with a message that says what to use instead', async () => {
  const running = await setUp();
  const id = randomUUID();
  const state = await running.agent.run(IO, id, { body: 'sync-sleep' });
  let status: Answer;
  do status = await running.agent.status(IO, id, state);
  while (status.body['completed'] !== true);
  const error = status.body['error'] as { title: string; detail: string };
  assert.equal(error.title, 'Action was stopped by extension: action body failed');
  assert.match(error.detail, /ctx\.sleep\(\) blocks the thread, and an 'io' body shares its thread with other bodies: use await ctx\.sleepAsync\(ms\)/);
});

/** Nice values of this process's threads (Linux `/proc`), keyed by thread id. */
function threadNices(): Map<string, number> {
  const nices = new Map<string, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    // Fields after the command name (in parentheses): state is field 3, nice is field 19.
    nices.set(tid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]));
  }
  return nices;
}

test('cpu bodies beyond ACTIONKIT_FULL_PRIORITY_BODIES run at ACTIONKIT_BODY_NICE; the first ones, the main thread, handlers and io threads do not; the large-request lane runs at its own nice', { skip: process.platform !== 'linux' && 'Linux only (/proc)' }, async () => {
  const before = threadNices();
  const running = await setUp({ bodyNice: 7, fullPriorityBodies: 1, spareBodyThreads: 0 });
  const started: { id: string; state: unknown }[] = [];
  const newThreads = (): [string, number][] => [...threadNices()].filter(([tid]) => !before.has(tid));
  const threadsBefore = newThreads().length;
  for (let i = 0; i < 3; i++) {
    const id = randomUUID();
    started.push({ id, state: await running.agent.run(CPU, id, { body: 'sleep' }) });
  }
  const bodyThreads = newThreads().slice(threadsBefore);
  assert.deepEqual(bodyThreads.map(([, nice]) => nice).sort(), [0, 7, 7], `the first body at normal priority, the two beyond it at 7: ${JSON.stringify(bodyThreads)}`);
  assert.equal(threadNices().get(String(process.pid)), before.get(String(process.pid)), 'the main thread keeps its priority');
  assert.equal(newThreads().filter(([, nice]) => nice === LARGE_REQUEST_NICE).length, 1, 'the large-request lane, one thread');
  assert.equal(newThreads().filter(([, nice]) => nice !== 0 && nice !== 7 && nice !== LARGE_REQUEST_NICE).length, 0);
  for (const { id, state } of started) await running.agent.stop(CPU, id, state);
});
