/**
 * The JSON rule (`src/json.ts`): a state or result that would not come back from the agent
 * unchanged — a Date, Set, Map, NaN, Buffer, function, class instance, bigint, undefined in an
 * array, a cycle — fails the call with the reference's wrapped error naming its path, and the
 * execution keeps the state the request brought (prepare: none, `{}`): the next calls and the
 * author's stop get that one. Body reports are held to the same rule. Real HTTP, real threads.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { eventually, fixture, start, tempDir, type Answer, type Running } from '../support/harness.js';
import { ok, stateOf, stopLogLines } from '../support/http-state.js';

const ACTION = 'fixture.not-json';

let running: Running;
let logs: { path: string; remove(): void };

before(async () => {
  logs = tempDir('actionkit-state-json-');
  running = await start({ actions: [fixture('not-json')], heartbeatMinIntervalMs: 10_000 });
});
after(async () => {
  await running.close();
  logs.remove();
});

/** What each kind of value is reported as, where the fixture puts it in the state. */
const EXPECTED: Record<string, string> = {
  date: 'state.when: Date is not JSON; store an ISO string',
  set: 'state.ids: Set is not JSON; store an array',
  map: 'state.byId: Map is not JSON; store an object or an array of entries',
  nan: 'state.ratio: NaN is not JSON',
  infinity: 'state.ratio: Infinity is not JSON',
  buffer: 'state.buf: Buffer is not JSON; store base64',
  function: 'state.fn: a function is not JSON',
  class: 'state.obj: class Foo is not JSON; store its fields',
  bigint: 'state.big: a bigint is not JSON; store a string',
  'undefined-in-array': 'state.list[1]: undefined in an array is not JSON (it would come back as null)',
  cycle: 'state.loop.self: a circular reference is not JSON',
  'nested-date': 'state.deep.items[1]["a key"]: Date is not JSON; store an ISO string',
};

function errorOf(answer: Answer): { title?: string; detail?: string } {
  assert.equal(answer.status, 200, JSON.stringify(answer.body).slice(0, 500));
  const error = answer.body['error'] as { title?: string; detail?: string } | undefined;
  assert.ok(error !== undefined, `expected an error in ${JSON.stringify(answer.body).slice(0, 500)}`);
  return error;
}

describe('a state that is not JSON fails the call, naming its path', () => {
  for (const [kind, detail] of Object.entries(EXPECTED)) {
    test(`prepare: ${kind}`, async () => {
      const answer = await running.agent.prepare(ACTION, randomUUID(), { kind, where: 'prepare' });
      assert.deepEqual(errorOf(answer), { title: 'Failed to prepare.', detail });
      assert.deepEqual(stateOf(answer), {}, 'no state was taken');
    });
  }

  test('start that mutates the state into something not JSON: the execution keeps the state start was sent, and stop gets it', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `start-${id}.log`);
    const prepared = await running.agent.prepare(ACTION, id, { kind: 'set', where: 'start', stopLog });
    ok(prepared, 'prepare');
    const sent = stateOf(prepared);
    const started = await running.agent.start(ACTION, id, sent);
    assert.deepEqual(errorOf(started), { title: 'Failed to start action.', detail: EXPECTED['set'] });
    assert.deepEqual(stateOf(started), sent);
    const status = await running.agent.status(ACTION, id, stateOf(started));
    ok(status, 'status');
    ok(await running.agent.stop(ACTION, id, stateOf(status)), 'stop');
    assert.deepEqual(stopLogLines(stopLog), [sent]);
  });

  test('start that leaves a Date and throws: the error names both, the state start was sent is kept', async () => {
    const id = randomUUID();
    const prepared = await running.agent.prepare(ACTION, id, { kind: 'date', where: 'start', alsoThrow: true });
    ok(prepared, 'prepare');
    const started = await running.agent.start(ACTION, id, stateOf(prepared));
    assert.deepEqual(errorOf(started), {
      title: 'Failed to start action.',
      detail: `${EXPECTED['date']}. The start handler had also failed: start failed on purpose`,
    });
    assert.deepEqual(stateOf(started), stateOf(prepared));
    ok(await running.agent.stop(ACTION, id, stateOf(started)), 'stop');
  });

  test('status that returns a state with NaN: the state status was sent is kept, the next status gets it', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `status-${id}.log`);
    const prepared = await running.agent.prepare(ACTION, id, { kind: 'nan', where: 'status', stopLog });
    const started = await running.agent.start(ACTION, id, stateOf(prepared));
    ok(started, 'start');
    const sent = stateOf(started);
    for (let poll = 1; poll <= 2; poll++) {
      const status = await running.agent.status(ACTION, id, sent);
      assert.deepEqual(errorOf(status), { title: 'Failed to read status.', detail: EXPECTED['nan'] });
      assert.equal(status.body['completed'], false);
      assert.deepEqual(stateOf(status), sent, `poll ${poll}`);
    }
    ok(await running.agent.stop(ACTION, id, sent), 'stop');
    assert.deepEqual(stopLogLines(stopLog), [sent]);
  });

  test('an object member that is undefined is dropped, as JSON drops it', async () => {
    const id = randomUUID();
    const answer = await running.agent.prepare(ACTION, id, { where: 'undefined-member' });
    ok(answer, 'prepare');
    assert.equal(Object.hasOwn(stateOf(answer), 'optional'), false);
    ok(await running.agent.stop(ACTION, id, stateOf(answer)), 'stop');
  });
});

describe('result fields and body reports are held to the same rule', () => {
  const cases: Array<[string, string, string]> = [
    ['status-metric', 'nan', 'metrics[0].value: NaN is not JSON'],
    ['status-metric', 'infinity', 'metrics[0].value: Infinity is not JSON'],
    ['status-message', 'date', 'messages[0].extra: Date is not JSON; store an ISO string'],
    ['status-message', 'map', 'messages[0].extra: Map is not JSON; store an object or an array of entries'],
  ];
  for (const [where, kind, detail] of cases) {
    test(`${where} (${kind}): status fails naming the field, the state is kept`, async () => {
      const id = randomUUID();
      const prepared = await running.agent.prepare(ACTION, id, { kind, where });
      const started = await running.agent.start(ACTION, id, stateOf(prepared));
      ok(started, 'start');
      const status = await running.agent.status(ACTION, id, stateOf(started));
      assert.deepEqual(errorOf(status), { title: 'Failed to read status.', detail });
      assert.deepEqual(stateOf(status), stateOf(started));
      ok(await running.agent.stop(ACTION, id, stateOf(started)), 'stop');
    });
  }

  test('a body report holding a Date fails the body, and status says why', async () => {
    const id = randomUUID();
    const prepared = await running.agent.prepare(ACTION, id, { where: 'report' });
    const started = await running.agent.start(ACTION, id, stateOf(prepared));
    ok(started, 'start');
    const status = await eventually('the body failed', async () => {
      const answer = await running.agent.status(ACTION, id, stateOf(started));
      return answer.body['completed'] === true ? answer : undefined;
    });
    assert.deepEqual(errorOf(status), {
      title: 'Action was stopped by extension: action body failed',
      status: 'errored',
      detail: 'ctx.report: messages[0].when: Date is not JSON; store an ISO string',
    });
  });

  test('afterwards no execution is left', async () => {
    await eventually('no active executions', () => (running.extension.stats().activeExecutions === 0 ? true : undefined));
  });
});
