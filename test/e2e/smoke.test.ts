import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { fixture, start, type Running } from '../support/harness.js';

let running: Running;
before(async () => {
  running = await start({ actions: [fixture('behave')] });
});
after(() => running.close());

test('prepare → start → status → stop walks the whole lifecycle', async () => {
  const id = randomUUID();
  const state = await running.agent.run('fixture.behave', id, { duration: 1000, body: 'spin' });
  const status = await running.agent.status('fixture.behave', id, state);
  assert.equal(status.body['completed'], false);
  const stop = await running.agent.stop('fixture.behave', id, status.body['state']);
  assert.equal(stop.status, 200);
  assert.match(JSON.stringify(stop.body), /stopped cooperatively/);
});
