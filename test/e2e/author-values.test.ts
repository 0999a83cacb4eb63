/**
 * Author values at the edges, over real HTTP with real handler and body threads
 * (`test/fixtures/author-values.ts`): a body publishing results in a tight loop while the main
 * thread is busy, states that cannot be read or are nested deeper than any stack, a RegExp match,
 * and an io body throwing a value nothing can render beside another io body. Found by review.
 */
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { eventually, fixture, sleep, start, tempDir, type Running } from '../support/harness.js';
import { ok, stateOf, stopLogLines } from '../support/http-state.js';

const CPU = 'fixture.author-values';
const IO = 'fixture.author-values-io';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

let running: Running;
const dir = tempDir('author-values-');
const stopLog = join(dir.path, 'stops.jsonl');

before(async () => {
  running = await start({ actions: [fixture('author-values')], heartbeatMinIntervalMs: 10_000, ioBodyThreads: 1 });
});
after(async () => {
  await running.close();
  dir.remove();
});

async function prepare(action: string, config: Record<string, unknown>): Promise<{ id: string; state: Record<string, unknown> }> {
  const id = randomUUID();
  const prepared = await running.agent.prepare(action, id, { stopLog, ...config });
  ok(prepared, 'prepare');
  return { id, state: stateOf(prepared) };
}

function stopsOf(id: string): Record<string, unknown>[] {
  return existsSync(stopLog) ? stopLogLines(stopLog).filter((line) => line['id'] === id) : [];
}

describe('author values at the edges', () => {
  /** Start a flood body, stall the main thread for 1 s, return the rss growth and what the next status saw. */
  async function floodAndStall(payloadBytes: number): Promise<{ grownMiB: number; progress: number; published: number }> {
    const { id, state } = await prepare(CPU, { mode: 'flood', payloadBytes });
    const started = await running.agent.start(CPU, id, state);
    ok(started, 'start');
    await sleep(200); // the body publishes
    gc();
    const before = process.memoryUsage().rss;
    // The main thread is busy for 1 s (a large request body parsed, a long GC, many status calls…).
    const until = Date.now() + 1000;
    while (Date.now() < until);
    const grownMiB = (process.memoryUsage().rss - before) / 2 ** 20;
    const status = await running.agent.status(CPU, id, stateOf(started));
    ok(status, 'status');
    const message = (status.body['messages'] as Array<{ message: string }>)[0]!.message;
    const seen = JSON.parse(message.slice('flood '.length)) as { progress: number; published: number };
    ok(await running.agent.stop(CPU, id, stateOf(started)), 'stop');
    return { grownMiB, ...seen };
  }

  test('a body publishing in a tight loop while the main thread is busy for 1 s: no backlog grows', async () => {
    const { grownMiB } = await floodAndStall(60_000);
    // The latest result is at most 64 KiB: a bounded design keeps a few of them, not the backlog.
    assert.ok(grownMiB < 64, `rss grew by ${grownMiB.toFixed(0)} MiB while the main thread was busy for 1 s`);
  });

  test('… and status then reads a recent result, not one from the start of the stall', async () => {
    // The body publishes {i} and then sets progress to i + 1: the latest result is i = progress - 1.
    // Results go out at most every 10 ms: the one read lags by that much publishing, not by the stall.
    const { progress, published } = await floodAndStall(10);
    assert.ok(progress - 1 - published < 0.1 * progress, `status read result #${published} while the body had published #${progress - 1}`);
  });

  test('a state nested deeper than any stack is refused as not JSON, not as a worker crash; stop still runs', async () => {
    const { id, state } = await prepare(CPU, { mode: 'deep-start' });
    const started = await running.agent.start(CPU, id, state);
    assert.equal(started.status, 200);
    const error = started.body['error'] as { title: string; detail?: string };
    assert.ok(error !== undefined, 'start must fail');
    const stopped = await running.agent.stop(CPU, id, stateOf(started));
    ok(stopped, 'stop');
    assert.equal(stopsOf(id).length, 1, 'stop ran once');
    assert.match(`${error.title} ${error.detail ?? ''}`, /nesting deeper than 1024 levels is not JSON/, JSON.stringify(error));
  });

  test('a getter that throws in the state is the start handler\'s failure, not a worker crash', async () => {
    const { id, state } = await prepare(CPU, { mode: 'getter-start' });
    const started = await running.agent.start(CPU, id, state);
    const error = started.body['error'] as { title: string; detail?: string };
    assert.ok(error !== undefined, 'start must fail');
    const stopped = await running.agent.stop(CPU, id, stateOf(started));
    ok(stopped, 'stop');
    assert.equal(stopsOf(id).length, 1, 'stop ran once');
    assert.doesNotMatch(`${error.title} ${error.detail ?? ''}`, /worker thread|crashed|replaced/i, JSON.stringify(error));
  });

  test('a RegExp match in the state (an array with index, input, groups) is refused, not silently changed', async () => {
    const { id, state } = await prepare(CPU, { mode: 'match' });
    const started = await running.agent.start(CPU, id, state);
    assert.match(String((started.body['error'] as { detail?: string } | undefined)?.detail), /an array with properties besides its elements is not JSON/);
    if (started.body['error'] === undefined) {
      const status = await running.agent.status(CPU, id, stateOf(started));
      ok(status, 'status');
      const message = (status.body['messages'] as Array<{ message: string }>).find((m) => m.message.startsWith('match '));
      assert.ok(message !== undefined);
      // What start left: an array with index 6. What status got back after the JSON check passed it:
      assert.deepEqual(JSON.parse(message.message.slice(6)), { isArray: true, index: 6 }, 'the check passed a value JSON changes');
    }
    ok(await running.agent.stop(CPU, id, stateOf(started)), 'stop');
  });

  test('an io body throwing a value nothing can render fails alone; the other body on its thread runs on', async () => {
    const victim = await prepare(IO, { mode: 'idle' });
    const victimStarted = await running.agent.start(IO, victim.id, victim.state);
    ok(victimStarted, 'start victim');
    const poison = await prepare(IO, { mode: 'poison' });
    const poisonStarted = await running.agent.start(IO, poison.id, poison.state);
    ok(poisonStarted, 'start poison');
    // The poison body fails: its own execution is stopped by the extension.
    await eventually('the poison body failed', async () => {
      const answer = await running.agent.status(IO, poison.id, stateOf(poisonStarted));
      return answer.body['completed'] === true ? answer : undefined;
    });
    await sleep(300);
    const victimStatus = await running.agent.status(IO, victim.id, stateOf(victimStarted));
    ok(victimStatus, 'victim status');
    assert.equal(victimStatus.body['completed'], false, `the victim was ended by another execution's body: ${JSON.stringify(victimStatus.body)}`);
    ok(await running.agent.stop(IO, victim.id, stateOf(victimStarted)), 'stop victim');
  });
});
