/**
 * The agent's sequences (reference §3.1–3.2) over real HTTP: the happy path with every optional
 * result field passed through, and the error paths after which the agent still calls stop (start
 * and status errors) or does not (prepare errors).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fixture, start, tempDir, type Running } from '../support/harness.js';

const BEHAVE = 'fixture.behave';
const PASS = 'fixture.passthrough';
const logs = tempDir('actionkit-lifecycle-');
let running: Running;
before(async () => {
  running = await start({ actions: [fixture('behave'), fixture('passthrough')] });
});
after(async () => {
  await running.close();
  logs.remove();
});

function stopLog(): { path: string; lines(): string[] } {
  const path = join(logs.path, `${randomUUID()}.log`);
  return { path, lines: () => (existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean) : []) };
}

test('messages, artifacts, metrics, summary and modifications pass through every phase unchanged', async () => {
  const id = randomUUID();
  const expectExtras = (body: Record<string, unknown>, phase: string): void => {
    const messages = body['messages'] as { message: string; level: string; type: string; fields: Record<string, string> }[];
    assert.deepEqual(messages[0], { message: `${phase} message`, level: 'warn', type: 'CUSTOM', fields: { phase }, timestamp: '2026-01-01T00:00:00Z' });
    assert.deepEqual(body['artifacts'], [{ label: `${phase}.txt`, data: Buffer.from(`${phase} artifact`).toString('base64') }]);
    assert.deepEqual(body['metrics'], [
      { name: `${phase}_metric`, metric: { phase }, value: 42.5, timestamp: '2026-01-01T00:00:00Z', timestampSource: 'external' },
    ]);
    if (phase === 'query') return;
    assert.deepEqual(body['summary'], { text: `${phase} summary`, level: 'warning' });
    assert.deepEqual(body['modifications'], [
      { type: 'set_property_value', propertyKey: `${phase}-key`, value: { nested: [1, 2] } },
      { type: 'add_value_to_list_property', propertyKey: 'phases', value: phase },
    ]);
  };
  const prepared = await running.agent.prepare(PASS, id, {});
  expectExtras(prepared.body, 'prepare');
  assert.match((prepared.body['messages'] as { message: string }[]).at(-1)!.message, /^OS information: sysname=Linux; release=/);
  const started = await running.agent.start(PASS, id, prepared.body['state']);
  expectExtras(started.body, 'start');
  assert.deepEqual(started.body['state'], { phase: 'started' });
  const status = await running.agent.status(PASS, id, started.body['state']);
  expectExtras(status.body, 'status');
  assert.equal(status.body['completed'], true);
  expectExtras((await running.agent.query(PASS, id, {})).body, 'query');
  const stopped = await running.agent.stop(PASS, id, status.body['state']);
  assert.equal(stopped.status, 200);
  expectExtras(stopped.body, 'stop');
  assert.equal(stopped.body['state'], undefined, 'a stop result has no state');
});

test('start fails: HTTP 200 with the error and the state, the heartbeat is armed, and the agent stop runs the author stop', async () => {
  const log = stopLog();
  const id = randomUUID();
  const prepared = await running.agent.prepare(BEHAVE, id, { start: 'throw', stopLog: log.path });
  const started = await running.agent.start(BEHAVE, id, prepared.body['state']);
  assert.equal(started.status, 200);
  assert.deepEqual(started.body['error'], { title: 'Failed to start action.', detail: 'start failed on purpose' });
  assert.deepEqual((started.body['state'] as { marks: string[] }).marks, ['prepare:ok', 'start:entered', 'start:throw']);
  const stopped = await running.agent.stop(BEHAVE, id, started.body['state']);
  assert.equal(stopped.status, 200);
  assert.deepEqual(log.lines(), [`${id} agent stop none`], 'no body after a failed start; the author stop ran once');
});

test('status fails: HTTP 200 with the error, completed false, and the agent stop still rolls back', async () => {
  const log = stopLog();
  const id = randomUUID();
  const state = await running.agent.run(BEHAVE, id, { status: 'extension-error', stopLog: log.path });
  const status = await running.agent.status(BEHAVE, id, state);
  assert.equal(status.status, 200);
  assert.deepEqual(status.body['error'], { title: 'status refused', detail: 'as configured', status: 'failed' });
  assert.equal(status.body['completed'], false);
  assert.equal((await running.agent.stop(BEHAVE, id, status.body['state'])).status, 200);
  assert.equal(log.lines().length, 1);
});

test('prepare fails: the agent will not call stop, so nothing stays behind', async () => {
  const log = stopLog();
  const id = randomUUID();
  const before = running.extension.stats().activeExecutions;
  const prepared = await running.agent.prepare(BEHAVE, id, { prepare: 'throw', stopLog: log.path });
  assert.deepEqual(prepared.body['error'], { title: 'Failed to prepare.', detail: 'prepare failed on purpose' });
  assert.deepEqual(prepared.body['state'], {});
  assert.equal(running.extension.stats().activeExecutions, before, 'the control block was released');
  assert.deepEqual(log.lines(), []);
  // The id is free again: the agent may retry the prepare with the same execution id.
  const retried = await running.agent.prepare(BEHAVE, id, { stopLog: log.path });
  assert.equal(retried.body['error'], undefined);
  await running.agent.stop(BEHAVE, id, retried.body['state']);
  assert.equal(running.extension.stats().activeExecutions, before);
});

test('an invalid config for the action schema answers prepare with an error naming the field', async () => {
  const before = running.extension.stats().activeExecutions;
  const prepared = await running.agent.prepare(BEHAVE, randomUUID(), { duration: 'ten seconds' });
  assert.equal(prepared.status, 200);
  const error = prepared.body['error'] as { title: string; detail: string };
  assert.match(error.title, /^Invalid configuration: duration: /);
  assert.equal(running.extension.stats().activeExecutions, before);
});

test('config values sent as null take the schema defaults', async () => {
  const id = randomUUID();
  const prepared = await running.agent.prepare(BEHAVE, id, { duration: null, body: null });
  assert.equal(prepared.body['error'], undefined);
  assert.deepEqual((prepared.body['state'] as { config: Record<string, unknown> }).config['duration'], 60_000);
  await running.agent.stop(BEHAVE, id, prepared.body['state']);
});
