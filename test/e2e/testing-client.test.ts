/**
 * `actionkit-runtime/testing`, imported by its package name as an author's test would: the agent
 * client against an in-process extension (real HTTP on port 0, real worker threads) and against a
 * hand-written server that breaks the contract; the handler harness without HTTP.
 */
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  AgentClient,
  createActionHarness,
  ErrorAnswer,
  ProtocolError,
  runAction,
  SchemaViolation,
  type RunResult,
} from 'actionkit-runtime/testing';
import { Agent as UndiciAgent } from 'undici';
import { createExtension } from 'actionkit-runtime';
import { defineAction } from 'actionkit-runtime/action';
import primeCount from '../fixtures/prime-count.js';
import { eventually, fixture, start, tempDir, type Running } from '../support/harness.js';
import { jsonOf, rawServer, type RawServer } from '../support/raw-server.js';

const TEST_TIMEOUT_MS = 20_000;

function labels(run: RunResult): string[] {
  return run.artifacts.map((artifact) => artifact.label);
}

test('as in an author\'s repo: createExtension on port 0 plus the agent client', { timeout: TEST_TIMEOUT_MS }, async () => {
  const uploads = tempDir();
  const extension = await createExtension({
    actions: [fixture('passthrough')],
    port: 0,
    host: '127.0.0.1',
    healthPort: null,
    handleSignals: false,
    logLevel: 'fatal',
    uploadDir: uploads.path,
    // In the test runner's process: leave its OOM-killer standing alone.
    oomScoreAdj: null,
  });
  try {
    const { port } = await extension.listen();
    const client = new AgentClient({ baseUrl: `http://127.0.0.1:${port}` });
    const run = await client.run('fixture.passthrough', { timeScale: 0.05 });
    assert.deepEqual(run.errors, []);
    assert.equal(run.ended, 'completed');
    assert.ok(run.messages.some((m) => m.message === 'stop message'));
  } finally {
    await extension.close();
    uploads.remove();
  }
});

test('the client runs an action given its definition, typed by it', { timeout: TEST_TIMEOUT_MS }, async () => {
  const running = await start({ actions: [fixture('prime-count')] });
  try {
    const client = new AgentClient({ baseUrl: running.base });
    const run = await client.run(primeCount, { config: { limit: 1000, minPrimes: 168 }, statusIntervalMs: 20 });
    assert.deepEqual(run.errors, []);
    assert.equal(run.ended, 'completed');
    const limit: number | undefined = run.state?.limit;
    assert.equal(limit, 1000);
    const endpoints = await client.endpointsOf(primeCount);
    const executionId = randomUUID();
    const prepared = await endpoints.prepare({ executionId, config: { limit: 10, hold: null } });
    assert.equal(prepared.result.state.hold, false, 'null is an empty parameter: the default applies');
    await endpoints.stop({ executionId, state: prepared.result.state });
  } finally {
    await running.close();
  }
});

test('a dispatcher carries the requests (here: HTTP over a unix socket)', { timeout: TEST_TIMEOUT_MS }, async () => {
  const dir = tempDir();
  const socketPath = join(dir.path, 'extension.sock');
  const server = http.createServer((req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ actions: [], seen: req.headers['request-timeout'] })));
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  const dispatcher = new UndiciAgent({ connect: { socketPath } });
  try {
    const client = new AgentClient({ baseUrl: 'http://extension.local', dispatcher, requestTimeoutMs: 1_000 });
    assert.deepEqual((await client.list()).actions, []);
    const raw = await client.exchange('GET', '/');
    assert.equal((raw.json as { seen?: string }).seen, '1');
  } finally {
    await dispatcher.close();
    await new Promise((resolve) => server.close(resolve));
    dir.remove();
  }
});

describe('agent client against an in-process extension', { timeout: TEST_TIMEOUT_MS }, () => {
  let running: Running;
  let client: AgentClient;
  before(async () => {
    running = await start({ actions: [fixture('passthrough'), fixture('behave'), fixture('http-files')] });
    client = new AgentClient({ baseUrl: running.base });
  });
  after(() => running.close());

  test('lists and describes every action, each answer validated', async () => {
    const descriptions = await client.describeAll();
    assert.deepEqual(descriptions.map((d) => d.id).sort(), ['fixture.behave', 'fixture.http.files', 'fixture.passthrough']);
    const behave = await client.findAction('fixture.behave');
    assert.equal(behave.status?.callInterval, '100ms');
    await assert.rejects(client.findAction('fixture.nope'), /action with id "fixture.nope" not found/);
  });

  test('a run returns messages, metrics and artifacts of every phase, metric queries included', async () => {
    const run = await client.run('fixture.passthrough', { statusIntervalMs: 60, queryIntervalMs: 20 });
    assert.deepEqual(run.errors, []);
    assert.equal(run.ended, 'completed');
    assert.equal(run.prepare?.result.state['phase'], 'prepared');
    assert.equal(run.start?.result.state?.['phase'], 'started');
    assert.equal(run.status.length, 1);
    assert.ok(run.query.length >= 1, `queries ran while the execution ran: ${run.query.length}`);
    assert.ok(run.stop !== undefined);
    for (const phase of ['prepare', 'start', 'status', 'stop', 'query']) {
      assert.ok(labels(run).includes(`${phase}.txt`), `artifact of ${phase} in ${labels(run).join(', ')}`);
      assert.ok(run.messages.some((m) => m.message === `${phase} message`), `message of ${phase}`);
      assert.ok(run.metrics.some((m) => m.name === `${phase}_metric`), `metric of ${phase}`);
    }
    // Order is the agent's: prepare first, stop last.
    assert.equal(run.messages[0]?.message, 'prepare message');
    assert.equal(run.messages.at(-1)?.message, 'stop message');
    assert.ok(run.durationMs > 0);
  });

  test('status is polled at the (scaled) callInterval until completed, then stopped with the latest state', async () => {
    const run = await client.run('fixture.behave', { config: { completeAfterPolls: 3 }, timeScale: 0.5 });
    assert.deepEqual(run.errors, []);
    assert.equal(run.ended, 'completed');
    assert.equal(run.status.length, 3);
    assert.deepEqual(run.metrics.filter((m) => m.name === 'polls').map((m) => m.value), [1, 2, 3]);
    assert.equal(run.state?.['polls'], 3, 'the state of the last status is what stop got');
    // Scaled interval 50 ms: the 3rd poll cannot come before 150 ms after start.
    assert.ok(run.status[2]!.sentAtMs - run.start!.sentAtMs >= 140, `3rd poll at ${run.status[2]!.sentAtMs - run.start!.sentAtMs} ms`);
    assert.match(run.stop?.result.messages?.[0]?.message ?? '', /^stopped \(agent/);
  });

  test('an external action ends after config.duration (capped by durationMs) and is stopped', async () => {
    const run = await client.run('fixture.behave', { config: { duration: 60_000 }, durationMs: 350 });
    assert.deepEqual(run.errors, []);
    assert.equal(run.ended, 'duration');
    assert.ok(run.durationMs >= 350 && run.durationMs < 5_000, `ran ${run.durationMs} ms`);
    // At most one poll per 100 ms (timers never fire early); how many fit depends on how busy the machine is.
    assert.ok(run.status.length <= 4, `${run.status.length} polls of 100 ms in 350 ms`);
    assert.ok(run.stop !== undefined);
  });

  test('failures are collected per phase: start error → stop still called; prepare error → no stop', async () => {
    const failedStart = await client.run('fixture.behave', { config: { start: 'throw' } });
    assert.equal(failedStart.ended, 'error');
    assert.deepEqual(failedStart.errors.map((e) => e.phase), ['start']);
    assert.match(failedStart.errors[0]!.message, /^\[errored\] Failed to start action\.: start failed on purpose/);
    assert.ok(failedStart.stop !== undefined, 'the agent stops after a failed start');

    const failedPrepare = await client.run('fixture.behave', { config: { prepare: 'extension-error' } });
    assert.deepEqual(failedPrepare.errors.map((e) => e.phase), ['prepare']);
    assert.equal(failedPrepare.errors[0]!.error?.status, 'failed');
    assert.equal(failedPrepare.start, undefined);
    assert.equal(failedPrepare.stop, undefined, 'no stop after a failed prepare');
  });

  test('aborting the run stops the execution', async () => {
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 250);
    const run = await client.run('fixture.behave', { signal: abort.signal });
    assert.equal(run.ended, 'aborted');
    assert.deepEqual(run.errors, []);
    assert.ok(run.stop !== undefined);
  });

  test('file parameters are sent as multipart, from a path or from memory', async () => {
    const dir = tempDir();
    try {
      const content = Buffer.from('line one\nline two\n');
      const path = join(dir.path, 'payload.txt');
      writeFileSync(path, content);
      const sha256 = createHash('sha256').update(content).digest('hex');
      for (const payload of [path, { filename: 'memory.bin', content: new Uint8Array(content) }]) {
        const run = await client.run('fixture.http.files', { config: { duration: 100 }, files: { payload } });
        assert.deepEqual(run.errors, []);
        assert.equal(run.prepare?.result.state['sha256'], sha256);
        assert.ok(run.messages.some((m) => m.message === `received ${content.length} bytes, sha256 ${sha256}`));
        assert.ok(!existsSync(String(run.prepare?.result.state['path'])), 'the uploaded file is removed after stop');
      }
    } finally {
      dir.remove();
    }
  });
});

describe('agent client against a hand-written server', { timeout: TEST_TIMEOUT_MS }, () => {
  const description = {
    id: 'raw.probe',
    label: 'Raw probe',
    version: '1.0.0',
    description: 'Hand-written server.',
    kind: 'check',
    timeControl: 'external',
    parameters: [{ name: 'duration', label: 'Duration', type: 'duration', defaultValue: '1s' }],
    prepare: { method: 'POST', path: '/raw/prepare' },
    start: { method: 'POST', path: '/raw/start' },
    status: { method: 'POST', path: '/raw/status', callInterval: '50ms' },
    stop: { method: 'POST', path: '/raw/stop' },
    metrics: { query: { endpoint: { method: 'POST', path: '/raw/query', callInterval: '30ms' }, parameters: [] } },
  };
  let statusBody: unknown = { completed: false };
  let prepareReply: { status?: number; body: unknown; contentType?: string } = { body: { state: { step: 'prepared' } } };
  let server: RawServer;
  before(async () => {
    server = await rawServer({
      'GET /': () => ({ body: { actions: [{ method: 'GET', path: '/raw.probe' }] } }),
      'GET /raw.probe': () => ({ body: description }),
      'POST /raw/prepare': () => prepareReply,
      'POST /raw/start': () => ({ body: { state: { step: 'started' } } }),
      'POST /raw/status': () => ({ body: statusBody }),
      'POST /raw/stop': () => ({ body: { messages: [{ message: 'raw stopped' }] } }),
      'POST /raw/query': (request) => ({ body: { metrics: [{ name: 'q', metric: {}, value: 1, timestamp: jsonOf(request)['timestamp'] }] } }),
    });
  });
  after(() => server.close());

  test('sends Request-Timeout, polls status and queries in parallel at their intervals, stops with the latest state', async () => {
    server.requests.length = 0;
    statusBody = { completed: false, state: { step: 'polled' } };
    const client = new AgentClient({ baseUrl: server.url, requestTimeoutMs: 2_500 });
    const run = await client.run('raw.probe', { config: { duration: 400 } });
    assert.deepEqual(run.errors, []);
    assert.equal(run.ended, 'duration');
    for (const request of server.requests) assert.equal(request.headers['request-timeout'], '2.5', `${request.method} ${request.path}`);
    const paths = server.requests.map((r) => r.path);
    const stopAt = paths.indexOf('/raw/stop');
    assert.equal(stopAt, paths.length - 1, 'stop is the last call');
    const statuses = paths.filter((p) => p === '/raw/status').length;
    const queries = paths.filter((p) => p === '/raw/query').length;
    // Both loops ran, each at most once per interval (timers never fire early); how many calls fit
    // in 400 ms depends on how busy the machine is.
    assert.ok(statuses >= 1 && statuses <= 8, `${statuses} status calls of 50 ms in 400 ms`);
    assert.ok(queries >= 1 && queries <= 14, `${queries} queries of 30 ms in 400 ms`);
    const query = jsonOf(server.requests.find((r) => r.path === '/raw/query')!);
    assert.equal(query['executionId'], run.executionId);
    assert.deepEqual(query['config'], { duration: 400 });
    assert.deepEqual(jsonOf(server.requests[stopAt]!)['state'], { step: 'polled' });
    assert.equal(run.metrics.length, queries);
    assert.deepEqual(jsonOf(server.requests.find((r) => r.path === '/raw/prepare')!)['properties'], {});
  });

  test('a schema violation is an error naming the path and the offending value; stop still runs', async () => {
    statusBody = { completed: 'yes', messages: [{ message: 42 }] };
    const client = new AgentClient({ baseUrl: server.url });
    const run = await client.run('raw.probe', { config: { duration: 1_000 }, statusIntervalMs: 20 });
    assert.equal(run.ended, 'error');
    const failure = run.errors.find((e) => e.phase === 'status');
    assert.ok(failure?.cause instanceof SchemaViolation, `status failure: ${failure?.message}`);
    assert.equal(failure.cause.schema, 'StatusResult');
    assert.deepEqual(
      failure.cause.issues.map((issue) => [issue.path, issue.value]),
      [
        ['completed', 'yes'],
        ['messages[0].message', 42],
      ],
    );
    assert.match(failure.message, /POST \/raw\/status: answer \(200\) violates StatusResult: completed: .*expected boolean.* \(found "yes"\)/);
    assert.ok(run.stop !== undefined, 'the agent stops after a failed status');
  });

  test('an HTML error page is a protocol error and an ActionKitError answer an ErrorAnswer', async () => {
    const client = new AgentClient({ baseUrl: server.url });
    prepareReply = { status: 500, body: '<html><body>Internal error</body></html>', contentType: 'text/html' };
    const html = await client.run('raw.probe');
    assert.ok(html.errors[0]?.cause instanceof ProtocolError);
    assert.equal(html.errors[0].cause.httpStatus, 500);
    assert.match(html.errors[0].message, /answered 500 with text\/html, not JSON/);
    assert.equal(html.stop, undefined);

    prepareReply = { status: 503, body: { title: 'Busy', detail: 'try later' } };
    const busy = await client.run('raw.probe');
    assert.ok(busy.errors[0]?.cause instanceof ErrorAnswer);
    assert.equal(busy.errors[0].error?.title, 'Busy');
    assert.match(busy.errors[0].message, /answered 503: \[errored\] Busy: try later/);
    prepareReply = { body: { state: { step: 'prepared' } } };
  });
});

describe('handler harness: real worker threads, no HTTP', { timeout: TEST_TIMEOUT_MS }, () => {
  test('prepare, start, status and stop go through the runtime lifecycle, state round-trips', async () => {
    const harness = await createActionHarness(fixture('behave'), { extension: { heartbeatMinIntervalMs: 200, stopGraceMs: 1_000 } });
    try {
      assert.equal(harness.description.id, 'fixture.behave');
      assert.equal(harness.description.stop?.path, '/fixture.behave/stop', 'the description has the runtime defaults');
      const executionId = randomUUID();
      const prepared = await harness.prepare({ executionId, config: { body: 'spin' } });
      assert.deepEqual(prepared.result.state['marks'], ['prepare:ok']);
      const started = await harness.start({ executionId, state: prepared.result.state });
      assert.deepEqual(started.result.state?.['marks'], ['prepare:ok', 'start:entered', 'start:ok']);
      // The body goes from queued to running on a body thread.
      const status = await eventually('the body to run', async () => {
        const answer = await harness.status({ executionId, state: started.result.state! });
        return answer.result.metrics?.[0]?.metric['body'] === 'running' ? answer : undefined;
      });
      assert.equal(status.result.completed, false);
      assert.equal(harness.extension.stats().activeExecutions, 1);
      const stopped = await harness.stop({ executionId, state: status.result.state! });
      const stopMessages = (stopped.result.messages ?? []).map((m) => m.message);
      assert.ok(stopMessages.some((m) => /^Action body stopped cooperatively/.test(m)), stopMessages.join(' | '));
      assert.ok(stopMessages.some((m) => /^stopped \(agent stop; body stopped\)/.test(m)), stopMessages.join(' | '));
      assert.equal(harness.extension.stats().activeExecutions, 0);
      // Answers are read like HTTP answers: the author's stop failing on an empty state is a 500 ActionKitError.
      const unknown = await harness.stop({ executionId: randomUUID(), state: {} }).catch((error: unknown) => error);
      assert.ok(unknown instanceof ErrorAnswer, String(unknown));
      assert.equal(unknown.httpStatus, 500);
      assert.equal(unknown.error.title, 'Failed to stop action.');
      // Request bodies are validated like HTTP ones.
      const invalid = await harness.prepare({ executionId: 'not-a-uuid', config: {} }).catch((error: unknown) => error);
      assert.ok(invalid instanceof ErrorAnswer && invalid.httpStatus === 400, String(invalid));
    } finally {
      await harness.close();
    }
  });

  test('runAction drives a whole execution like the agent', async () => {
    const run = await runAction(fixture('passthrough'), { statusIntervalMs: 30, queryIntervalMs: 10 });
    assert.deepEqual(run.errors, []);
    assert.equal(run.ended, 'completed');
    assert.ok(labels(run).includes('stop.txt'));
    assert.ok(run.query.length >= 1);
  });

  test('files are saved where an upload would be and removed after stop', async () => {
    const harness = await createActionHarness(fixture('http-files'));
    try {
      const run = await harness.run({ config: { duration: 50 }, files: { payload: { filename: '../escape.txt', content: 'hello' } } });
      assert.deepEqual(run.errors, []);
      const path = String(run.prepare?.result.state['path']);
      assert.match(path, new RegExp(`${run.executionId}/escape\\.txt$`), 'basename only, in the execution folder');
      assert.equal(run.prepare?.result.state['size'], 5);
      assert.ok(!existsSync(path));
      const stray = await harness.prepare({ executionId: randomUUID(), config: {}, files: { duration: 'x' } }).catch((error: unknown) => error);
      assert.ok(stray instanceof ErrorAnswer && stray.httpStatus === 400, String(stray));
    } finally {
      await harness.close();
    }
  });

  test('given the definition, the harness finds its module, and runs are typed by it', async () => {
    const harness = await createActionHarness(primeCount);
    try {
      assert.equal(harness.description.id, 'fixture.prime-count');
      const run = await harness.run({ config: { limit: 1000, minPrimes: 100 }, statusIntervalMs: 20 });
      assert.deepEqual(run.errors, []);
      assert.equal(run.ended, 'completed');
      // Typed: `run.state` is the action's state, not a JSON object.
      const polls: number | undefined = run.state?.polls;
      assert.ok(polls !== undefined && polls >= 1);
      const primes = run.metrics.filter((metric) => metric.name === 'primes_found').map((metric) => metric.value);
      assert.equal(primes.at(-1), 168, 'π(1000)');
    } finally {
      await harness.close();
    }
    const ran = await runAction(primeCount, { config: { limit: 100 }, statusIntervalMs: 20 });
    assert.deepEqual(ran.errors, []);
    assert.equal(ran.state?.limit, 100);
  });

  test('a definition whose module does not export it needs the module named', async () => {
    const local = defineAction({ ...primeCount, description: { ...primeCount.description, id: 'fixture.prime-count.local' } });
    await assert.rejects(createActionHarness(local), /action fixture\.prime-count\.local was defined by a call in file:.*testing-client\.test\.js, whose default export is not this action; pass the module that exports it/);
    // Named, the module must define an action with the definition's id.
    await assert.rejects(createActionHarness(local, { module: fixture('prime-count') }), /no action "fixture\.prime-count\.local" in the modules/);
    const harness = await createActionHarness(primeCount, { module: fixture('prime-count') });
    await harness.close();
  });

  test('a module with several actions needs actionId', async () => {
    await assert.rejects(createActionHarness(fixture('http-query')), /define 4 actions .*pass actionId/);
    const harness = await createActionHarness(fixture('http-query'), { actionId: 'fixture.http.query' });
    try {
      const answer = await harness.query({ executionId: randomUUID(), timestamp: new Date().toISOString(), config: { count: 2 } });
      assert.equal(answer.result.metrics?.length, 2);
    } finally {
      await harness.close();
    }
  });
});
