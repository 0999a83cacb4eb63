/**
 * Meets a real agent: the request bodies a Steadybit agent and Steadybit's Go test client send
 * (`test/fixtures/agent-requests/*.json`, `null` in optional places, missing objects, IPv6 and host
 * CIDRs, unknown fields, hundreds of restricted endpoints) are accepted over real HTTP, answered
 * within the spec, and reach the author's handlers normalised the way the reference's Go decoding
 * does (`src/api/schemas.ts`, "Request bodies"). What cannot be processed stays a 400 naming the
 * field. And the answers for executions this process never saw (a restart, a pod move), as the
 * reference gives them: status `{"completed": false}`, stop 200 — unless a remembered stop outcome
 * says otherwise.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { GO_ZERO_TIME } from '../../src/api/schemas.js';
import { validateWire, type AnswerSchemaName } from '../../src/testing/index.js';
import { fixture, start, type Answer, type Running } from '../support/harness.js';

const ECHO = 'fixture.agent.echo';
const BODY_ONLY = 'fixture.agent.body-only';

/** The fixture files live beside the sources; tests run from the build output. */
const FIXTURE_DIR = fileURLToPath(new URL('../../../test/fixtures/agent-requests/', import.meta.url));

type Endpoint = 'prepare' | 'start' | 'status' | 'stop' | 'query';
const RESULT_SCHEMA: Record<Endpoint, AnswerSchemaName> = {
  prepare: 'PrepareResult',
  start: 'StartResult',
  status: 'StatusResult',
  stop: 'StopResult',
  query: 'QueryMetricsResult',
};

let running: Running;

before(async () => {
  running = await start({
    actions: [fixture('agent-echo')],
    // Nothing here polls status on a schedule; no execution may end by heartbeat while a test looks.
    heartbeatMinIntervalMs: 600_000,
  });
});
after(async () => {
  await running.close();
});

/** POST `text` verbatim (exactly the bytes of the fixture) to an endpoint of `actionId`. */
function post(actionId: string, endpoint: Endpoint, text: string): Promise<Answer> {
  return running.agent.request('POST', `/${actionId}/${endpoint}`, text, { 'content-type': 'application/json' });
}

/** A 200 whose body validates as the endpoint's result and carries no error. */
function assertResult(endpoint: Endpoint, answer: Answer, what: string): void {
  assert.equal(answer.status, 200, `${what}: ${JSON.stringify(answer.body)}`);
  validateWire(RESULT_SCHEMA[endpoint], answer.body, what, answer.status);
  assert.equal(answer.body['error'], undefined, `${what}: ${JSON.stringify(answer.body['error'])}`);
}

/** The messages of an answer that are JSON objects: what the echo handlers received, in order. */
function echoes(answer: Answer): unknown[] {
  const messages = (answer.body['messages'] as { message: string }[] | undefined) ?? [];
  return messages.filter((m) => m.message.startsWith('{')).map((m) => JSON.parse(m.message) as unknown);
}

/** prepare + start of a fresh echo execution (not from a fixture); returns its state. */
async function startedEcho(executionId: string): Promise<Record<string, unknown>> {
  return running.agent.run(ECHO, executionId, { duration: 1000 });
}

/** The zero value of a restricted endpoint, as Go decodes `null` or `{}`. */
const ZERO_ENDPOINT = { name: '', url: '', cidr: '', portMin: 0, portMax: 0 };

/** `typeof` of each prepare input field, as the echo reports it, when target and context are absent. */
const NO_TARGET_NO_CONTEXT = { config: 'object', target: 'undefined', executionContext: 'undefined', properties: 'object' };

interface Expectation {
  /** What the handler received: prepare and query their input without executionId; start, status and stop the state. */
  received: (fixture: Record<string, unknown>) => unknown;
  /** prepare only: `typeof` of each input field. */
  types?: Record<string, string>;
}

/** Every fixture file and what its handler must receive. A file without an entry fails the suite. */
const EXPECTED: Record<string, Expectation> = {
  'prepare-go-test-client.json': { received: () => ({ config: { duration: 1000 }, properties: {} }), types: NO_TARGET_NO_CONTEXT },
  'prepare-nulls-everywhere.json': { received: () => ({ config: {}, properties: {} }), types: NO_TARGET_NO_CONTEXT },
  'prepare-nulls-inside.json': {
    received: () => ({
      // Values inside config and properties belong to the author: a null parameter stays null.
      config: { duration: 1000, note: null },
      target: { name: '', attributes: { 'k8s.pod.name': [], 'host.hostname': ['node-1', ''] } },
      executionContext: { restrictedEndpoints: [ZERO_ENDPOINT, ZERO_ENDPOINT] },
      properties: { team: null },
    }),
    types: { config: 'object', target: 'object', executionContext: 'object', properties: 'object' },
  },
  'prepare-agent-restricted-endpoints.json': {
    received: (sent) => {
      const { agentAwsAccountId, ...context } = sent['executionContext'] as Record<string, unknown>;
      assert.equal(agentAwsAccountId, null, 'the fixture sends a null pointer field');
      return { config: sent['config'], target: sent['target'], executionContext: context, properties: sent['properties'] };
    },
  },
  'prepare-unknown-fields.json': {
    // Unknown nested fields reach the author; unknown top-level fields are not part of its input.
    received: (sent) => ({ config: sent['config'], target: sent['target'], executionContext: sent['executionContext'], properties: {} }),
  },
  'prepare-large-execution-context.json': {
    received: (sent) => ({ config: sent['config'], executionContext: sent['executionContext'], properties: {} }),
    types: { config: 'object', target: 'undefined', executionContext: 'object', properties: 'object' },
  },
  'prepare-missing-execution-context.json': {
    received: (sent) => ({ config: sent['config'], target: sent['target'], properties: {} }),
    types: { config: 'object', target: 'object', executionContext: 'undefined', properties: 'object' },
  },
  'start-state-null.json': { received: () => ({}) },
  'start-unknown-fields.json': { received: () => ({ prepared: true }) },
  'status-state-null.json': { received: () => ({}) },
  'status-state-missing.json': { received: () => ({}) },
  'stop-state-null.json': { received: () => ({}) },
  'stop-state-missing.json': { received: () => ({}) },
  'query-no-timestamp.json': { received: () => ({ timestamp: GO_ZERO_TIME, config: { duration: 1000 } }) },
  'query-nulls.json': { received: () => ({ timestamp: GO_ZERO_TIME, config: {} }) },
  'query-target-null-lists.json': {
    received: () => ({ timestamp: '2026-03-01T12:00:00.123456789+01:00', config: {}, target: { name: 'node-1', attributes: { 'host.hostname': [] } }, window: '5m' }),
  },
};

const FILES = readdirSync(FIXTURE_DIR).filter((name) => name.endsWith('.json')).sort();

describe('agent request fixtures', () => {
  test('every fixture has an expectation, every expectation a fixture', () => {
    assert.deepEqual(FILES, Object.keys(EXPECTED).sort());
  });

  test('the fixtures are in the shapes the task is about', () => {
    const all = FILES.map((name) => readFileSync(FIXTURE_DIR + name, 'utf8')).join('\n');
    for (const shape of ['"::/0"', '"10.0.0.0/8"', '"target": null', '"config": null', '"state": null', '"portMin": 0', '"portMax": 65535', '.internal"']) {
      assert.ok(all.includes(shape), `no fixture contains ${shape}`);
    }
    const large = JSON.parse(readFileSync(FIXTURE_DIR + 'prepare-large-execution-context.json', 'utf8')) as { executionContext: { restrictedEndpoints: unknown[] } };
    assert.ok(large.executionContext.restrictedEndpoints.length >= 200);
  });

  for (const name of FILES) {
    const endpoint = name.slice(0, name.indexOf('-')) as Endpoint;
    test(`${name} → ${endpoint}: accepted, valid answer, the handler sees the normalised request`, async () => {
      const expectation = EXPECTED[name];
      assert.ok(expectation !== undefined, `no expectation for ${name}`);
      const text = readFileSync(FIXTURE_DIR + name, 'utf8');
      const sent = JSON.parse(text) as Record<string, unknown>;
      const executionId = sent['executionId'] as string;
      // start, status and stop belong to an execution the agent prepared (and started) first.
      let state: Record<string, unknown> | undefined;
      if (endpoint === 'start') state = (await running.agent.prepare(ECHO, executionId, { duration: 1000 })).body['state'] as Record<string, unknown>;
      if (endpoint === 'status' || endpoint === 'stop') state = await startedEcho(executionId);

      const answer = await post(ECHO, endpoint, text);
      assertResult(endpoint, answer, name);
      const [received, types] = echoes(answer);
      assert.deepEqual(received, expectation.received(sent));
      if (expectation.types !== undefined) assert.deepEqual(types, expectation.types);
      if (endpoint === 'status') assert.equal(answer.body['completed'], false);

      // Leave nothing running: stop what the agent would stop next.
      if (endpoint === 'prepare' || endpoint === 'start' || endpoint === 'status') {
        const stopped = await running.agent.stop(ECHO, executionId, answer.body['state'] ?? state);
        assertResult('stop', stopped, `stop after ${name}`);
      }
    });
  }

  test('a multipart prepare with nulls everywhere is accepted the same way', async () => {
    const executionId = randomUUID();
    const text = readFileSync(FIXTURE_DIR + 'prepare-nulls-everywhere.json', 'utf8');
    const form = new FormData();
    form.append('request', JSON.stringify({ ...(JSON.parse(text) as object), executionId }));
    const answer = await running.agent.request('POST', `/${ECHO}/prepare`, form);
    assertResult('prepare', answer, 'multipart prepare');
    assert.deepEqual(echoes(answer), [{ config: {}, properties: {} }, NO_TARGET_NO_CONTEXT]);
    assertResult('stop', await running.agent.stop(ECHO, executionId, answer.body['state']), 'stop after the multipart prepare');
  });

  test('what cannot be processed stays a 400 naming the field, and creates no execution', async () => {
    const executionId = randomUUID();
    const cases: { what: string; endpoint: Endpoint; body: string; title: string }[] = [
      {
        what: 'missing executionId',
        endpoint: 'prepare',
        body: JSON.stringify({ config: {}, properties: null }),
        title: 'Invalid request body: executionId: Invalid input: expected UUID, received undefined',
      },
      {
        what: 'executionId null',
        endpoint: 'status',
        body: JSON.stringify({ executionId: null, state: null }),
        title: 'Invalid request body: executionId: Invalid input: expected UUID, received null',
      },
      {
        what: 'config a string',
        endpoint: 'prepare',
        body: JSON.stringify({ executionId, config: 'x' }),
        title: 'Invalid request body: config: Invalid input: expected object, received string',
      },
      {
        what: 'cidr a number',
        endpoint: 'prepare',
        body: JSON.stringify({ executionId, config: {}, executionContext: { restrictedEndpoints: [{ name: 'x', url: '', cidr: 5, portMin: 0, portMax: 0 }] } }),
        title: 'Invalid request body: executionContext.restrictedEndpoints[0].cidr: Invalid input: expected string, received number',
      },
      {
        what: 'portMin not an integer',
        endpoint: 'prepare',
        body: JSON.stringify({ executionId, config: {}, executionContext: { restrictedEndpoints: [{ name: 'x', url: '', cidr: '::/0', portMin: 1.5, portMax: 2 }] } }),
        title: 'Invalid request body: executionContext.restrictedEndpoints[0].portMin: Invalid input: expected int, received number',
      },
      {
        what: 'timestamp a number',
        endpoint: 'query',
        body: JSON.stringify({ executionId, timestamp: 1_700_000_000, config: null }),
        title: 'Invalid request body: timestamp: Invalid input: expected string, received number',
      },
      { what: 'malformed JSON', endpoint: 'prepare', body: `{"executionId":"${executionId}","config":{}`, title: 'Failed to parse request body.' },
      { what: 'malformed JSON (a trailing comma after null)', endpoint: 'stop', body: `{"executionId":"${executionId}","state":null,}`, title: 'Failed to parse request body.' },
    ];
    const activeBefore = running.extension.stats().activeExecutions;
    for (const { what, endpoint, body, title } of cases) {
      const answer = await post(ECHO, endpoint, body);
      assert.equal(answer.status, 400, `${what}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body['title'], title, what);
    }
    assert.equal(running.extension.stats().activeExecutions, activeBefore);
    // The id is still free: none of the refused requests took it.
    const prepared = await running.agent.prepare(ECHO, executionId, { duration: 1000 });
    assertResult('prepare', prepared, 'prepare after the refused requests');
    assertResult('stop', await running.agent.stop(ECHO, executionId, prepared.body['state']), 'stop after the refused requests');
  });
});

describe('executions this process never saw (after a restart or a pod move)', () => {
  test('status without a status handler: 200 {"completed": false}, as the reference, however often polled', async () => {
    const executionId = randomUUID();
    for (let poll = 0; poll < 3; poll++) {
      const answer = await running.agent.status(BODY_ONLY, executionId, { from: 'the agent' });
      assertResult('status', answer, `poll ${poll}`);
      assert.deepEqual(answer.body, { completed: false });
    }
    // It stays unknown: the synthetic answer creates nothing.
    assert.equal(running.extension.stats().activeExecutions, 0);
  });

  test('stop of a body-only action: 200 with nothing to do, remembered like any stop', async () => {
    const executionId = randomUUID();
    const stopped = await running.agent.stop(BODY_ONLY, executionId, {});
    assertResult('stop', stopped, 'stop');
    const messages = stopped.body['messages'] as { level: string; message: string }[];
    assert.equal(messages.length, 1);
    assert.equal(messages[0]!.level, 'info');
    assert.match(messages[0]!.message, new RegExp(`^Nothing to stop: this extension process has no record of execution ${executionId} `));
    // A duplicate stop gets the same answer.
    assert.deepEqual((await running.agent.stop(BODY_ONLY, executionId, {})).body, stopped.body);
    // The remembered stop wins over the synthetic status: the agent is told it is over.
    assert.deepEqual((await running.agent.status(BODY_ONLY, executionId, {})).body, { completed: true });
    // And the id cannot come back to life here.
    const started = await running.agent.start(BODY_ONLY, executionId, {});
    assert.equal((started.body['error'] as { title: string } | undefined)?.title, 'Action was stopped by extension: agent stop');
    const prepared = await running.agent.prepare(BODY_ONLY, executionId, { duration: 1000 });
    assert.equal(prepared.status, 409, JSON.stringify(prepared.body));
    assert.equal(running.extension.stats().activeExecutions, 0);
  });

  test('a remembered agent stop wins over the synthetic answers', async () => {
    const executionId = randomUUID();
    const state = await running.agent.run(BODY_ONLY, executionId, { duration: 1000 });
    const stopped = await running.agent.stop(BODY_ONLY, executionId, state);
    assertResult('stop', stopped, 'stop of a running body');
    const stopMessages = (stopped.body['messages'] as { message: string }[]).map((m) => m.message);
    assert.match(stopMessages.join('\n'), /^Action body stopped cooperatively /m);
    assert.doesNotMatch(stopMessages.join('\n'), /Nothing to stop/);
    assert.deepEqual((await running.agent.status(BODY_ONLY, executionId, state)).body, { completed: true });
    assert.deepEqual((await running.agent.stop(BODY_ONLY, executionId, state)).body, stopped.body);
  });

  test('a remembered extension-initiated stop wins over the synthetic answers', async () => {
    const executionId = randomUUID();
    const state = await running.agent.run(BODY_ONLY, executionId, { duration: 1000 });
    const result = await running.extension.stopAll();
    assert.equal(result.succeeded, 1);
    const status = await running.agent.status(BODY_ONLY, executionId, state);
    assert.equal(status.status, 200);
    validateWire('StatusResult', status.body, 'status after the extension stopped it', status.status);
    assert.deepEqual(status.body, { completed: true, error: { title: 'Action was stopped by extension: extension shutdown', status: 'errored' } });
    const stop = await running.agent.stop(BODY_ONLY, executionId, state);
    assert.equal(stop.status, 200);
    validateWire('StopResult', stop.body, 'stop after the extension stopped it', stop.status);
    assert.deepEqual(stop.body, { error: { title: 'Action was stopped by extension extension shutdown' } });
  });
});
