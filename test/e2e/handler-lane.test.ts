/**
 * The handler lane (`src/pool.ts`, a piscina pool) over real HTTP with real threads: more calls
 * than threads wait in its queue and all complete; a handler that overruns its timeout, one that
 * calls `process.exit()` and a thread that dies while idle each cost only their own call, and the
 * calls after them run on the replacement thread — or on a ready thread while the replacement is
 * still loading.
 *
 * The queue is filled deterministically: handlers that wait for a trigger file (or block) hold
 * every thread, the test watches the lane's counters until the others are queued, then lets go.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { eventually, fixture, start, tempDir, type Answer, type Running } from '../support/harness.js';
import { Holds } from '../support/holds.js';
import { GatePoint } from '../../src/shm/test-gates.js';

const ACTION = 'fixture.behave';
const files = tempDir('actionkit-handler-lane-');
after(() => files.remove());

let running: Running | undefined;
afterEach(async () => {
  await running?.close();
  running = undefined;
});

/** A trigger file not yet there, and how to create it. */
function trigger(): { path: string; pull(): void } {
  const path = join(files.path, randomUUID());
  return { path, pull: () => writeFileSync(path, '') };
}

/** Wait until the handler lane's counters say `what`. */
async function lane(what: string, check: (pools: ReturnType<Running['extension']['stats']>['pools']) => boolean): Promise<void> {
  await eventually(what, () => (check(running!.extension.stats().pools) ? true : undefined));
}

/** A prepare that succeeded: its state holds the marks of the handler that ran. */
function assertPrepared(answer: Answer, marks: string[]): void {
  assert.equal(answer.status, 200);
  assert.equal(answer.body['error'], undefined, JSON.stringify(answer.body));
  assert.deepEqual((answer.body['state'] as { marks: string[] }).marks, marks);
}

/** A prepare whose handler failed with a detail matching `detail`. */
function assertFailed(answer: Answer, detail: RegExp): void {
  assert.equal(answer.status, 200);
  const error = answer.body['error'] as { title: string; detail: string };
  assert.equal(error.title, 'Failed to prepare.');
  assert.match(error.detail, detail);
  assert.deepEqual(answer.body['state'], {});
}

/** Stop the executions the successful prepares left (their control blocks). */
async function stopAll(prepared: { id: string; answer: Answer }[]): Promise<void> {
  for (const { id, answer } of prepared) {
    if (answer.body['error'] === undefined) assert.equal((await running!.agent.stop(ACTION, id, answer.body['state'])).status, 200);
  }
}

describe('more handler calls than threads', () => {
  test('with both threads held, 30 further prepares wait in the queue; all complete once the threads are free', async () => {
    running = await start({ actions: [fixture('behave')], handlerThreads: 2 });
    const { agent } = running;
    const gate = trigger();
    const holders = [randomUUID(), randomUUID()].map((id) => ({ id, answer: agent.prepare(ACTION, id, { prepare: 'wait-trigger', trigger: gate.path }) }));
    await lane('both handler threads to run a held prepare', (pools) => pools.handlerBusy === 2);
    const queued = Array.from({ length: 30 }, () => randomUUID()).map((id) => ({ id, answer: agent.prepare(ACTION, id, {}) }));
    await lane('30 prepares to wait for a thread', (pools) => pools.handlerQueue === 30);
    assert.equal(running.extension.stats().pools.handlerBusy, 2, 'a queued task is not counted as running');
    gate.pull();
    const held = await Promise.all(holders.map(async ({ id, answer }) => ({ id, answer: await answer })));
    const rest = await Promise.all(queued.map(async ({ id, answer }) => ({ id, answer: await answer })));
    for (const { answer } of held) assertPrepared(answer, ['prepare:wait-trigger']);
    for (const { answer } of rest) assertPrepared(answer, ['prepare:ok']);
    const pools = running.extension.stats().pools;
    assert.deepEqual(
      { threads: pools.handlerThreads, queued: pools.handlerQueue, busy: pools.handlerBusy, replaced: pools.workersReplaced },
      { threads: 2, queued: 0, busy: 0, replaced: 0 },
    );
    assert.ok(pools.handlerUtilization > 0 && pools.handlerUtilization <= 1, `utilization ${pools.handlerUtilization}`);
    await stopAll([...held, ...rest]);
  });
});

describe('a lost handler thread costs only its own call', () => {
  test('a handler that overruns its timeout fails alone; the prepares after it run on the replacement thread', async () => {
    running = await start({ actions: [fixture('behave')], handlerThreads: 1, handlerTimeoutMs: 10_000 });
    const { agent } = running;
    const hung = agent.prepare(ACTION, randomUUID(), { prepare: 'block' });
    await lane('the blocking prepare to run', (pools) => pools.handlerBusy === 1);
    assertFailed(await hung, /did not finish within 10000 ms; its worker thread was terminated and replaced/);
    // (A call queued behind a hung one has its own timeout counted from when it was submitted: it
    // is answered within it, run or not — the agent never waits longer than the handler timeout.
    // These wait for the replacement thread to load: 10 s leaves that to a busy machine.)
    const rest = await Promise.all(
      Array.from({ length: 4 }, () => randomUUID()).map(async (id) => ({ id, answer: await agent.prepare(ACTION, id, {}) })),
    );
    for (const { answer } of rest) assertPrepared(answer, ['prepare:ok']);
    const pools = running.extension.stats().pools;
    assert.equal(pools.workersReplaced, 1);
    assert.equal(pools.handlerThreads, 1);
    await stopAll(rest);
  });

  test('a handler that calls process.exit() fails alone; the prepares queued behind it run on the replacement thread', async () => {
    running = await start({ actions: [fixture('behave')], handlerThreads: 1 });
    const { agent } = running;
    const gate = trigger();
    const holderId = randomUUID();
    const holder = agent.prepare(ACTION, holderId, { prepare: 'wait-trigger', trigger: gate.path });
    await lane('the held prepare to run', (pools) => pools.handlerBusy === 1);
    const exiting = agent.prepare(ACTION, randomUUID(), { prepare: 'exit' });
    await lane('the exiting prepare to wait', (pools) => pools.handlerQueue === 1);
    const queued = Array.from({ length: 3 }, () => randomUUID()).map((id) => ({ id, answer: agent.prepare(ACTION, id, {}) }));
    await lane('3 more prepares to wait behind it', (pools) => pools.handlerQueue === 4);
    gate.pull();
    const held = { id: holderId, answer: await holder };
    assertPrepared(held.answer, ['prepare:wait-trigger']);
    assertFailed(await exiting, /the worker thread running the prepare handler exited with code 3 \(process\.exit\(\) in author code\?\); it was replaced/);
    const rest = await Promise.all(queued.map(async ({ id, answer }) => ({ id, answer: await answer })));
    for (const { answer } of rest) assertPrepared(answer, ['prepare:ok']);
    assert.equal(running.extension.stats().pools.workersReplaced, 1);
    await stopAll([held, ...rest]);
  });

  test('a replacement thread still loading gets no call while a ready thread is free: a call queued behind a busy thread runs there once it frees', async () => {
    const holds = new Holds();
    try {
      running = await start({ actions: [fixture('behave')], handlerThreads: 2 });
      const { agent } = running;
      // One thread exits; its replacement is held while it loads the action modules.
      holds.gates.arm(GatePoint.HandlerThreadLoad);
      assertFailed(await agent.prepare(ACTION, randomUUID(), { prepare: 'exit' }), /exited with code 3/);
      await holds.gates.arrived(GatePoint.HandlerThreadLoad);
      // The ready thread holds a prepare; a second one waits for a thread.
      const gate = trigger();
      const holderId = randomUUID();
      const holder = agent.prepare(ACTION, holderId, { prepare: 'wait-trigger', trigger: gate.path });
      await lane('the held prepare to be submitted', (pools) => pools.handlerBusy === 1);
      const waitingId = randomUUID();
      const waiting = agent.prepare(ACTION, waitingId, {});
      await lane('the second prepare to be submitted', (pools) => pools.handlerBusy + pools.handlerQueue === 2);
      // The ready thread frees: the waiting prepare runs on it, not on the thread still loading.
      gate.pull();
      assertPrepared(await holder, ['prepare:wait-trigger']);
      const answered = await Promise.race([waiting, new Promise<string>((resolve) => setTimeout(resolve, 20_000, 'no answer within 20 s while the replacement loads'))]);
      assert.notEqual(typeof answered, 'string', String(answered));
      assertPrepared(answered as Answer, ['prepare:ok']);
      // Let the replacement load: with a prepare held on one thread, another runs on the other.
      holds.gates.open(GatePoint.HandlerThreadLoad);
      const gate2 = trigger();
      const secondHolderId = randomUUID();
      const secondHolder = agent.prepare(ACTION, secondHolderId, { prepare: 'wait-trigger', trigger: gate2.path });
      const alongsideId = randomUUID();
      const alongside = await agent.prepare(ACTION, alongsideId, {});
      assertPrepared(alongside, ['prepare:ok']);
      gate2.pull();
      assertPrepared(await secondHolder, ['prepare:wait-trigger']);
      assert.equal(running.extension.stats().pools.workersReplaced, 1, 'only the thread that exited was replaced');
      await stopAll([
        { id: holderId, answer: await holder },
        { id: waitingId, answer: answered as Answer },
        { id: secondHolderId, answer: await secondHolder },
        { id: alongsideId, answer: alongside },
      ]);
    } finally {
      holds.dispose();
    }
  });

  test('a thread that ends while idle (a timer the last handler left calls process.exit()) is replaced; the next call runs', async () => {
    running = await start({ actions: [fixture('behave')], handlerThreads: 1 });
    const { agent } = running;
    assertPrepared(await agent.prepare(ACTION, randomUUID(), { prepare: 'exit-after' }), ['prepare:exit-after']);
    await lane('the idle thread to be replaced', (pools) => pools.workersReplaced === 1 && pools.handlerThreads === 1);
    assertPrepared(await agent.prepare(ACTION, randomUUID(), {}), ['prepare:ok']);
  });
});
