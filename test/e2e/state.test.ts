/**
 * DESIGN.md invariant 5: state round-trips exactly. What prepare returned is what start receives
 * when the agent sends it back; what start/status mutated is returned; when a handler throws the
 * response still carries the state as the handler left it; JSON edge values survive. Real HTTP, real
 * worker threads.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { eventually, fixture, sleep, spawnExtension, start, tempDir, type Answer, type Running } from '../support/harness.js';
import { ok, stateOf, stopLogLines } from '../support/http-state.js';

const STATE = 'fixture.http.state';
const BEHAVE = 'fixture.behave';

let running: Running;
let logs: { path: string; remove(): void };

before(async () => {
  logs = tempDir('actionkit-state-logs-');
  running = await start({
    actions: [fixture('behave'), fixture('http-state')],
    heartbeatMinIntervalMs: 10_000,
    handlerTimeoutMs: 1500,
  });
});
after(async () => {
  await running.close();
  logs.remove();
});

type Json = Record<string, unknown>;

/** What the agent would hold after the value went over the wire once. */
function wire<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

/** The state a handler of fixture.http.state received, from its first message. */
function received(answer: Answer): Json {
  const messages = answer.body['messages'] as Array<{ message: string }> | undefined;
  assert.ok(messages !== undefined && messages.length > 0, `no messages in ${JSON.stringify(answer.body).slice(0, 300)}`);
  return JSON.parse(messages[0]!.message) as Json;
}

/**
 * JSON edge values. `__proto__` must be an own key (as JSON.parse makes it), so this is built from
 * JSON text rather than an object literal (where `__proto__:` would set the prototype).
 */
function edgeValues(): Json {
  let deep: unknown = 'bottom';
  for (let i = 0; i < 200; i++) deep = i % 2 === 0 ? [deep] : { d: deep };
  const text = JSON.stringify({
    unicode: 'Grüße, 日本語, עברית, 😀, 👩‍👩‍👧, \u2028\u2029, "quoted", back\\slash, tab\t, nul\u0000, del\u007f',
    loneSurrogate: '\ud800',
    emptyString: '',
    emptyObject: {},
    emptyArray: [],
    nested: [[[]], [[1, [2, [3, [4, [5]]]]]], { a: [{ b: [{ c: null }] }] }],
    numbers: [0, -1, 1.5, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, 12345678901234567890, 1e308, -1e308, 5e-324, 0.1 + 0.2],
    literals: [true, false, null],
    keys: { '': 'empty key', 'a.b': 'dot', 'with space': 1, ключ: 'cyrillic', '😀': 'emoji', '1': 'integer-like', constructor: { prototype: { x: 1 } }, toString: 'not a function', hasOwnProperty: 0 },
    deep,
    long: 'x'.repeat(200_000),
  });
  // Own `__proto__` keys, at the top and nested.
  return JSON.parse(text.replace(/^\{/, '{"__proto__":{"polluted":"top"},').replace('"emptyObject":{}', '"emptyObject":{},"inner":{"__proto__":{"polluted":"inner"},"kept":true}')) as Json;
}

function assertOwnProtoKeys(state: Json, where: string): void {
  assert.ok(Object.prototype.hasOwnProperty.call(state, '__proto__'), `${where}: top-level "__proto__" key lost: ${Object.keys(state).join(',')}`);
  assert.equal(Object.getPrototypeOf(state), Object.prototype, `${where}: prototype was replaced`);
  assert.deepEqual(Object.getOwnPropertyDescriptor(state, '__proto__')?.value, wire({ polluted: 'top' }));
  const inner = state['inner'] as Json;
  assert.ok(Object.prototype.hasOwnProperty.call(inner, '__proto__'), `${where}: nested "__proto__" key lost`);
  assert.equal(inner['kept'], true);
}

describe('state round trip (invariant 5)', () => {
  test('prepare → start → status → status → stop: each call receives exactly what the previous one left', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `lifecycle-${id}.log`);
    const initial: Json = { stopLog, counter: 7, list: ['a', { b: 'c' }], flag: false };

    const prepared = await running.agent.prepare(STATE, id, { initial });
    ok(prepared, 'prepare');
    assert.deepEqual(stateOf(prepared), initial, 'prepare returns its state unchanged');

    const started = await running.agent.start(STATE, id, stateOf(prepared));
    ok(started, 'start');
    assert.deepEqual(received(started), initial, 'start receives what prepare returned');
    const afterStart = { ...initial, starts: 1, touched: ['start'] };
    assert.deepEqual(stateOf(started), afterStart, 'start returns its mutations');

    const first = await running.agent.status(STATE, id, stateOf(started));
    ok(first, 'status 1');
    assert.deepEqual(received(first), afterStart, 'status receives what start left');
    const afterFirst = { ...afterStart, polls: 1, touched: ['start', 'status'] };
    assert.deepEqual(stateOf(first), afterFirst);

    const second = await running.agent.status(STATE, id, stateOf(first));
    ok(second, 'status 2');
    assert.deepEqual(received(second), afterFirst);
    const afterSecond = { ...afterStart, polls: 2, touched: ['start', 'status', 'status'] };
    assert.deepEqual(stateOf(second), afterSecond);

    const stopped = await running.agent.stop(STATE, id, stateOf(second));
    ok(stopped, 'stop');
    assert.equal(stopped.body['state'], undefined, 'stop results carry no state');
    assert.deepEqual(stopLogLines(stopLog), [afterSecond], 'stop receives what status left');
  });

  test('the state the agent sends wins over anything the extension saw before', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `agent-wins-${id}.log`);
    const prepared = await running.agent.prepare(STATE, id, { initial: { stopLog, origin: 'prepare' } });
    const edited = { ...stateOf(prepared), origin: 'agent edit', extra: [1, 2, 3] };
    const started = await running.agent.start(STATE, id, edited);
    ok(started, 'start');
    assert.deepEqual(received(started), edited);
    const status = await running.agent.status(STATE, id, { ...stateOf(started), origin: 'second edit' });
    assert.equal(received(status)['origin'], 'second edit');
    const forStop = { ...stateOf(status), origin: 'stop edit' };
    ok(await running.agent.stop(STATE, id, forStop), 'stop');
    assert.deepEqual(stopLogLines(stopLog), [forStop]);
  });

  test('a state returned by status replaces the old one', async () => {
    const id = randomUUID();
    const prepared = await running.agent.prepare(STATE, id, { initial: { polls: 3 } });
    const started = await running.agent.start(STATE, id, stateOf(prepared));
    const replaced = await running.agent.status(STATE, id, { ...stateOf(started), replace: true });
    ok(replaced, 'status');
    assert.deepEqual(stateOf(replaced), { replaced: true, previousPolls: 3 });
    ok(await running.agent.stop(STATE, id, stateOf(replaced)), 'stop');
  });

  test('JSON edge values (unicode, lone surrogate, deep nesting, large numbers, own __proto__ keys) survive every hop', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `edge-${id}.log`);
    const initial = edgeValues();
    initial['stopLog'] = stopLog;
    assertOwnProtoKeys(initial, 'test input');
    const expected = wire(initial);

    const prepared = await running.agent.prepare(STATE, id, { initial });
    ok(prepared, 'prepare');
    const preparedState = stateOf(prepared);
    assertOwnProtoKeys(preparedState, 'prepare result');
    assert.deepEqual(preparedState, expected);

    const started = await running.agent.start(STATE, id, preparedState);
    ok(started, 'start');
    const seenByStart = received(started);
    assertOwnProtoKeys(seenByStart, 'what start received');
    assert.deepEqual(seenByStart, expected);
    const startedState = stateOf(started);
    assertOwnProtoKeys(startedState, 'start result');
    assert.deepEqual(startedState, { ...expected, starts: 1, touched: ['start'] });

    const status = await running.agent.status(STATE, id, startedState);
    ok(status, 'status');
    const seenByStatus = received(status);
    assertOwnProtoKeys(seenByStatus, 'what status received');
    assert.deepEqual(seenByStatus, startedState);
    const statusState = stateOf(status);
    assertOwnProtoKeys(statusState, 'status result');

    ok(await running.agent.stop(STATE, id, statusState), 'stop');
    const [seenByStop] = stopLogLines(stopLog);
    assert.ok(seenByStop !== undefined);
    assertOwnProtoKeys(seenByStop, 'what stop received');
    assert.deepEqual(seenByStop, statusState);

    // Nothing leaked into the prototype chain of this (main) process.
    assert.equal((Object.prototype as Json)['polluted'], undefined);
    assert.equal(({} as Json)['polluted'], undefined);
  });
});

describe('state when a handler fails (invariant 5)', () => {
  for (const failure of ['throw', 'extension-error'] as const) {
    test(`start ${failure}s: the response carries the state as start left it`, async () => {
      const id = randomUUID();
      const prepared = await running.agent.prepare(BEHAVE, id, { duration: 1000, start: failure });
      ok(prepared, 'prepare');
      assert.deepEqual(stateOf(prepared)['marks'], ['prepare:ok']);
      const started = await running.agent.start(BEHAVE, id, stateOf(prepared));
      assert.equal(started.status, 200);
      assert.ok(started.body['error'] !== undefined, 'start must report its error');
      assert.deepEqual(stateOf(started), { ...stateOf(prepared), marks: ['prepare:ok', 'start:entered', `start:${failure}`] });
      ok(await running.agent.stop(BEHAVE, id, stateOf(started)), 'stop');
    });

    test(`status ${failure}s: the response carries the state as status left it, and the next status gets it`, async () => {
      const id = randomUUID();
      const prepared = await running.agent.prepare(BEHAVE, id, { duration: 1000, status: failure });
      const started = await running.agent.start(BEHAVE, id, stateOf(prepared));
      ok(started, 'start');
      const first = await running.agent.status(BEHAVE, id, stateOf(started));
      assert.equal(first.status, 200);
      assert.ok(first.body['error'] !== undefined);
      const marksAfterStart = ['prepare:ok', 'start:entered', 'start:ok'];
      assert.deepEqual(stateOf(first), { ...stateOf(started), polls: 1, marks: [...marksAfterStart, `status:${failure}`] });
      // The agent sends that state back: the failed handler's mutations are not lost.
      const second = await running.agent.status(BEHAVE, id, stateOf(first));
      assert.deepEqual(stateOf(second), { ...stateOf(started), polls: 2, marks: [...marksAfterStart, `status:${failure}`, `status:${failure}`] });
      ok(await running.agent.stop(BEHAVE, id, stateOf(second)), 'stop');
    });
  }

  test('stop receives the state a failed status left', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `failed-status-${id}.log`);
    const prepared = await running.agent.prepare(STATE, id, { initial: { stopLog, throwIn: ['status'] } });
    const started = await running.agent.start(STATE, id, stateOf(prepared));
    ok(started, 'start');
    const failed = await running.agent.status(STATE, id, stateOf(started));
    assert.equal(failed.status, 200);
    assert.deepEqual(failed.body['error'], { title: 'Failed to read status.', detail: 'status failed on purpose' });
    const left = { stopLog, throwIn: ['status'], starts: 1, polls: 1, touched: ['start', 'status'] };
    assert.deepEqual(stateOf(failed), left);
    ok(await running.agent.stop(STATE, id, stateOf(failed)), 'stop');
    assert.deepEqual(stopLogLines(stopLog), [left]);
  });

  test('start that throws after mutating, via fixture.http.state: the mutation is returned', async () => {
    const id = randomUUID();
    const prepared = await running.agent.prepare(STATE, id, { initial: { throwIn: ['start'], keep: 'me' } });
    const started = await running.agent.start(STATE, id, stateOf(prepared));
    assert.deepEqual(started.body['error'], { title: 'Failed to start action.', detail: 'start failed on purpose' });
    assert.deepEqual(stateOf(started), { throwIn: ['start'], keep: 'me', starts: 1, touched: ['start'] });
    ok(await running.agent.stop(STATE, id, stateOf(started)), 'stop');
  });

  for (const failure of ['exit', 'hang'] as const) {
    test(`start whose worker dies (${failure}): the response carries the state the agent sent, nothing is lost`, async () => {
      const id = randomUUID();
      const prepared = await running.agent.prepare(BEHAVE, id, { duration: 1000, start: failure });
      ok(prepared, 'prepare');
      const sent = stateOf(prepared);
      const started = await running.agent.start(BEHAVE, id, sent);
      assert.equal(started.status, 200, JSON.stringify(started.body));
      assert.ok(started.body['error'] !== undefined, 'start must report the lost worker');
      // The handler's own mutations died with its thread; the last good state is the one sent.
      assert.deepEqual(stateOf(started), sent);
      ok(await running.agent.stop(BEHAVE, id, stateOf(started)), 'stop');
    });
  }

  test('afterwards no execution is left', async () => {
    await eventually('no active executions', () => (running.extension.stats().activeExecutions === 0 ? true : undefined));
  });
});

describe('deeply nested state (invariant 6: bad input never crashes anything)', () => {
  // Run in a child process: if this input brings the extension down, it must not take the test
  // runner with it. 3000 nested arrays are a 6 KB body, far below the 5 MiB body limit.
  test('a state nested 3000 levels deep is answered (round trip or 4xx/5xx JSON) and the process keeps serving', async () => {
    const child = await spawnExtension([fixture('behave'), fixture('http-state')], { ACTIONKIT_HEARTBEAT_MIN_INTERVAL: '10s', ACTIONKIT_UPLOAD_DIR: logs.path });
    try {
      const depth = 3000;
      const deep = `${'['.repeat(depth)}${']'.repeat(depth)}`;
      const id = randomUUID();
      const prepared = await child.agent.prepare(STATE, id, { initial: { depth } });
      assert.equal(prepared.status, 200);
      const cases: Array<[string, string]> = [
        ['stateless status', `{"executionId":"${randomUUID()}","state":{"config":{"status":"ok"},"polls":0,"marks":[],"deep":${deep}}}`],
        ['start', `{"executionId":"${id}","state":{"depth":${depth},"deep":${deep}}}`],
        ['prepare', `{"executionId":"${randomUUID()}","config":{"initial":{"deep":${deep}}},"properties":{}}`],
      ];
      for (const [what, body] of cases) {
        const path = what === 'stateless status' ? `/${BEHAVE}/status` : `/${STATE}/${what}`;
        let answer: Answer;
        try {
          answer = await child.agent.request('POST', path, body, { 'content-type': 'application/json' });
        } catch (error) {
          const exit = await Promise.race([child.exited, sleep(500).then(() => 'still running')]);
          const crash = child.logs.filter((line) => /Maximum call stack|RangeError|at /.test(line)).slice(0, 6).join('\n');
          assert.fail(`${what}: no answer (${(error as { cause?: { code?: string } }).cause?.code ?? String(error)}); extension process: ${exit}\n${crash}`);
        }
        assert.ok(answer.status === 200 || (answer.status >= 400 && answer.status < 600), `${what}: ${answer.status}`);
        if (answer.status === 200 && answer.body['error'] === undefined) {
          assert.equal(JSON.stringify((answer.body['state'] as Json)['deep']), deep, `${what}: the nested value did not round-trip`);
        }
        const index = await child.agent.request('GET', '/');
        assert.equal(index.status, 200, `${what}: the extension stopped serving`);
      }
    } finally {
      if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
      await child.exited;
    }
  });
});
