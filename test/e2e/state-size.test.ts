/**
 * A state we hand out is one we take back: a prepare, start or status whose state would not fit
 * into the agent's next request (ACTIONKIT_MAX_BODY_BYTES) fails with `State too large`, the agent
 * keeps the state it had, and that state still goes through start, status and stop — the author's
 * stop runs. A state exactly at the limit comes back in a request exactly as large as the limit,
 * encoded the way the reference (Go) client encodes it. Real HTTP, real worker threads, a small
 * limit to keep the states small.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { goJson, goRequest } from '../support/go-json.js';
import { fixture, start, tempDir, type Answer, type Running } from '../support/harness.js';
import { ok, stateOf, stopLogLines } from '../support/http-state.js';

const STATE = 'fixture.http.state';
const MAX_BODY_BYTES = 16 * 1024;

type Json = Record<string, unknown>;

const bytes = (text: string): number => Buffer.byteLength(text, 'utf8');

/** The largest state the agent can send back: the limit less a request around an empty state `{}` (minus its 2 bytes). */
const MAX_STATE_BYTES = MAX_BODY_BYTES - (bytes(goRequest(randomUUID(), {})) - 2);

/**
 * Characters the Go encoder writes longer than JSON.stringify: every state below carries them, so
 * a state judged by its JSON.stringify size alone would be misjudged by `GROWTH_BYTES`.
 */
const GROWTH = `${'<>&'.repeat(20)}${'\u2028\u2029'.repeat(5)}`;
const GROWTH_BYTES = bytes(goJson(GROWTH)) - bytes(JSON.stringify(GROWTH));

/** The `padTo` target (JSON.stringify bytes) that makes a state carrying {@link GROWTH} exactly `agentBytes` as Go sends it. */
const padFor = (agentBytes: number): number => agentBytes - GROWTH_BYTES;

let running: Running;
let logs: { path: string; remove(): void };

before(async () => {
  logs = tempDir('actionkit-state-size-');
  running = await start({ actions: [fixture('http-state')], maxBodyBytes: MAX_BODY_BYTES, heartbeatMinIntervalMs: 10_000 });
});
after(async () => {
  await running.close();
  logs.remove();
});

/** `State too large`, naming the state's size, the limit it missed and the setting. */
function assertTooLarge(answer: Answer, phase: string, stateBytes: number): void {
  assert.equal(answer.status, 200, JSON.stringify(answer.body).slice(0, 500));
  const error = answer.body['error'] as { title?: string; detail?: string } | undefined;
  assert.equal(error?.title, 'State too large', JSON.stringify(error));
  const detail = String(error?.detail);
  assert.match(detail, new RegExp(`^the ${phase} handler left a state of ${stateBytes} bytes `));
  assert.match(detail, new RegExp(`more than the ${MAX_STATE_BYTES} bytes the agent can send back`));
  assert.match(detail, new RegExp(`ACTIONKIT_MAX_BODY_BYTES is ${MAX_BODY_BYTES} bytes`));
}

/** Send the agent's request the way the Go client encodes it. */
function sendAsGo(phase: 'start' | 'status' | 'stop', executionId: string, state: Json): Promise<Answer> {
  return running.agent.request('POST', `/${STATE}/${phase}`, goRequest(executionId, state), { 'content-type': 'application/json' });
}

describe('state size (a state we hand out is one we take back)', () => {
  test('the derived limit: request limit less 64 bytes around the state', () => {
    assert.equal(MAX_STATE_BYTES, MAX_BODY_BYTES - 64);
  });

  test('states exactly at the limit go round prepare → start → status → stop in requests exactly ACTIONKIT_MAX_BODY_BYTES long', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `at-limit-${id}.log`);
    const target = padFor(MAX_STATE_BYTES);
    const prepared = await running.agent.prepare(STATE, id, { initial: { stopLog, growth: GROWTH, padTo: { prepare: target, start: target, status: target } } });
    ok(prepared, 'prepare');
    let state = stateOf(prepared);
    assert.equal(bytes(goJson(state)), MAX_STATE_BYTES, 'the prepared state is exactly at the limit');

    for (const phase of ['start', 'status'] as const) {
      const request = goRequest(id, state);
      assert.equal(bytes(request), MAX_BODY_BYTES);
      const answer = await sendAsGo(phase, id, state);
      ok(answer, phase);
      state = stateOf(answer);
      assert.equal(bytes(goJson(state)), MAX_STATE_BYTES, `the ${phase} state is exactly at the limit`);
    }
    // One byte more and the request is refused: the limit leaves no slack.
    const oneByteMore = await running.agent.request('POST', `/${STATE}/status`, `${goRequest(id, state)} `, { 'content-type': 'application/json' });
    assert.equal(oneByteMore.status, 413, JSON.stringify(oneByteMore.body));

    const stopped = await sendAsGo('stop', id, state);
    ok(stopped, 'stop');
    assert.deepEqual(stopLogLines(stopLog), [state], "the author's stop received the state at the limit");
  });

  test('prepare one byte over: State too large, state {}, the execution is discarded', async () => {
    const id = randomUUID();
    const before = running.extension.stats().activeExecutions;
    // By JSON.stringify alone it would fit: only the Go encoding's escapes take it over.
    const initial = { growth: GROWTH, padTo: { prepare: padFor(MAX_STATE_BYTES + 1) } };
    const prepared = await running.agent.prepare(STATE, id, { initial });
    assertTooLarge(prepared, 'prepare', MAX_STATE_BYTES + 1);
    assert.deepEqual(prepared.body['state'], {});
    assert.equal(running.extension.stats().activeExecutions, before, 'a failed prepare leaves no execution');
  });

  test('start one byte over: State too large with the prepared state; stop with it runs the author stop', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `start-over-${id}.log`);
    const prepared = await running.agent.prepare(STATE, id, { initial: { stopLog, growth: GROWTH, padTo: { start: padFor(MAX_STATE_BYTES + 1) } } });
    ok(prepared, 'prepare');
    const held = stateOf(prepared);
    const started = await running.agent.start(STATE, id, held);
    assertTooLarge(started, 'start', MAX_STATE_BYTES + 1);
    assert.deepEqual(stateOf(started), held, 'the agent keeps the state it sent');
    ok(await sendAsGo('stop', id, stateOf(started)), 'stop');
    assert.deepEqual(stopLogLines(stopLog), [held], "the author's stop received the state the agent held");
  });

  test('status one byte over: State too large with the state the agent sent; a later status and the stop take it', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `status-over-${id}.log`);
    const prepared = await running.agent.prepare(STATE, id, { initial: { stopLog, growth: GROWTH } });
    const started = await running.agent.start(STATE, id, stateOf(prepared));
    ok(started, 'start');
    const sent = { ...stateOf(started), padTo: { status: padFor(MAX_STATE_BYTES + 1) } };
    const status = await running.agent.status(STATE, id, sent);
    assertTooLarge(status, 'status', MAX_STATE_BYTES + 1);
    assert.equal(status.body['completed'], false);
    assert.deepEqual(stateOf(status), sent, 'the agent keeps the state it sent');
    // The execution still runs with that state: a status that fits is answered as usual.
    const fitting = { ...stateOf(status), padTo: {} };
    const next = await sendAsGo('status', id, fitting);
    ok(next, 'status after the refused one');
    assert.equal(stateOf(next)['polls'], 1, 'the refused status left no trace in the state');
    ok(await sendAsGo('stop', id, stateOf(next)), 'stop');
    assert.deepEqual(stopLogLines(stopLog), [stateOf(next)]);
  });

  test('start that throws with a state over the limit: State too large naming its error, the prepared state kept', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `start-throws-${id}.log`);
    const prepared = await running.agent.prepare(STATE, id, { initial: { stopLog, throwIn: ['start'], padTo: { start: MAX_STATE_BYTES + 1 } } });
    ok(prepared, 'prepare');
    const started = await running.agent.start(STATE, id, stateOf(prepared));
    assertTooLarge(started, 'start', MAX_STATE_BYTES + 1);
    assert.match(String((started.body['error'] as Json)['detail']), /The start handler had also failed: start failed on purpose$/);
    assert.deepEqual(stateOf(started), stateOf(prepared));
    ok(await running.agent.stop(STATE, id, stateOf(started)), 'stop');
    assert.deepEqual(stopLogLines(stopLog), [stateOf(prepared)]);
  });

  test('afterwards no execution is left', () => {
    assert.equal(running.extension.stats().activeExecutions, 0);
  });
});
