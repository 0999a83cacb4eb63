/**
 * Body results (`ctx.publish()` → `ctx.body.result`): status and stop read the latest value the
 * body published, as often as they like (it is not consumed), and it is not sent to the agent
 * unless a handler puts it in its result; a result that is not JSON or too large fails the body
 * with the reason. Real HTTP, real body and handler threads, `test/fixtures/prime-count.ts`.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { eventually, fixture, start, type Answer, type Running } from '../support/harness.js';
import { ok, stateOf } from '../support/http-state.js';
import type { Tally } from '../fixtures/prime-count.js';

const ACTION = 'fixture.prime-count';
/** π(100 000). */
const PRIMES_TO_100K = 9592;

let running: Running;

before(async () => {
  running = await start({ actions: [fixture('prime-count')], heartbeatMinIntervalMs: 10_000 });
});
after(() => running.close());

/** What the fixture's status (`tally`) or stop (`stop`) handler reported: the JSON after the prefix of its message. */
function reported(answer: Answer, prefix: 'tally' | 'stop'): unknown {
  const messages = (answer.body['messages'] as Array<{ message: string }> | undefined) ?? [];
  const message = messages.find((m) => m.message.startsWith(`${prefix} `));
  assert.ok(message !== undefined, `no "${prefix}" message in ${JSON.stringify(answer.body).slice(0, 300)}`);
  return JSON.parse(message.message.slice(prefix.length + 1)) as unknown;
}

async function prepareAndStart(config: Record<string, unknown>): Promise<{ id: string; state: Record<string, unknown> }> {
  const id = randomUUID();
  const prepared = await running.agent.prepare(ACTION, id, config);
  ok(prepared, 'prepare');
  const started = await running.agent.start(ACTION, id, stateOf(prepared));
  ok(started, 'start');
  return { id, state: stateOf(started) };
}

describe('a body result (ctx.publish → ctx.body.result)', () => {
  test('status reads the latest tally, again and again; stop reads it too; the agent sees only what the handlers made of it', async () => {
    const { id, state } = await prepareAndStart({ limit: 100_000, hold: true });
    let current = state;
    const final = await eventually('the final tally', async () => {
      const answer = await running.agent.status(ACTION, id, current);
      ok(answer, 'status');
      current = stateOf(answer);
      const tally = reported(answer, 'tally') as Tally | null;
      return tally?.done === true ? { answer, tally } : undefined;
    });
    assert.deepEqual(final.tally, { limit: 100_000, checked: 99_999, primes: PRIMES_TO_100K, largest: 99_991, done: true });
    assert.equal(final.answer.body['result'], undefined, 'the result is not a field of the answer');
    const metrics = final.answer.body['metrics'] as Array<{ name: string; value: number }>;
    assert.deepEqual(
      metrics.map((m) => [m.name, m.value]),
      [['primes_found', PRIMES_TO_100K]],
    );
    // Not consumed: every later status sees the same value.
    for (let poll = 0; poll < 3; poll++) {
      const again = await running.agent.status(ACTION, id, current);
      ok(again, `status again ${poll}`);
      current = stateOf(again);
      assert.deepEqual(reported(again, 'tally'), final.tally);
    }
    const stopped = await running.agent.stop(ACTION, id, current);
    ok(stopped, 'stop');
    assert.deepEqual(reported(stopped, 'stop'), { result: final.tally, phase: 'stopped' });
  });

  test('status sees the tally grow while the body runs, then completes with the last one', async () => {
    const { id, state } = await prepareAndStart({ limit: 2_000_000, minPrimes: 1 });
    let current = state;
    const seen: Tally[] = [];
    const done = await eventually(
      'completed',
      async () => {
        const answer = await running.agent.status(ACTION, id, current);
        ok(answer, 'status');
        current = stateOf(answer);
        const tally = reported(answer, 'tally') as Tally | null;
        if (tally !== null) seen.push(tally);
        return answer.body['completed'] === true ? answer : undefined;
      },
      60_000,
    );
    const last = reported(done, 'tally') as Tally;
    assert.equal(last.done, true);
    assert.equal(last.primes, 148_933, 'π(2 000 000)');
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]!.checked >= seen[i - 1]!.checked, 'tallies only grow');
    ok(await running.agent.stop(ACTION, id, current), 'stop');
  });

  test('a check that finds too few primes fails with the tally', async () => {
    const { id, state } = await prepareAndStart({ limit: 1000, minPrimes: 1000 });
    const failed = await eventually('failed', async () => {
      const answer = await running.agent.status(ACTION, id, state);
      return answer.body['error'] !== undefined ? answer : undefined;
    });
    assert.deepEqual(failed.body['error'], { title: 'Too few primes', status: 'failed', detail: 'found 168 primes up to 1000, expected at least 1000' });
    ok(await running.agent.stop(ACTION, id, state), 'stop');
  });

  test('what was published is a copy: the body changing its object afterwards changes nothing', async () => {
    const { id, state } = await prepareAndStart({ limit: 10, publish: 'stale-read' });
    const answer = await eventually('a tally', async () => {
      const status = await running.agent.status(ACTION, id, state);
      return reported(status, 'tally') !== null ? status : undefined;
    });
    assert.deepEqual(reported(answer, 'tally'), { limit: 10, checked: 0, primes: 0, largest: null, done: false });
    ok(await running.agent.stop(ACTION, id, state), 'stop');
  });

  const failures: Array<[string, RegExp]> = [
    ['date', /^ctx\.publish: result\.at: Date is not JSON; store an ISO string$/],
    ['huge', /^ctx\.publish: the result is \d+ bytes of JSON, more than 65536; publish a summary/],
  ];
  for (const [publish, detail] of failures) {
    test(`a result that cannot be published (${publish}) fails the body, and status says why`, async () => {
      const { id, state } = await prepareAndStart({ publish });
      const status = await eventually('the body failed', async () => {
        const answer = await running.agent.status(ACTION, id, state);
        return answer.body['completed'] === true ? answer : undefined;
      });
      const error = status.body['error'] as { title: string; detail: string };
      assert.equal(error.title, 'Action was stopped by extension: action body failed');
      assert.match(error.detail, detail);
    });
  }

  test('afterwards no execution is left', async () => {
    await eventually('no active executions', () => (running.extension.stats().activeExecutions === 0 ? true : undefined));
  });
});
