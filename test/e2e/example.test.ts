/**
 * The example extension, end to end: every example action walked through its whole lifecycle the
 * way the agent drives it (list → describe → prepare → start → status polls → stop, metric query,
 * multipart upload), with real worker threads, a real HTTP target on 127.0.0.1 and real files.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as schemas from '../../src/api/schemas.js';
import { assertWire, eventually, sleep, start, type Answer, type Running } from '../support/harness.js';

const CPU = 'com.example.actionkit.cpu-stress';
const HTTP = 'com.example.actionkit.http-check';
const LOG = 'com.example.actionkit.log-pattern-check';
const HOOK = 'com.example.actionkit.webhook';
const TEST_TIMEOUT_MS = 20_000;

/** Compiled example action module (`<outDir>/example/actions/<name>.js`). */
function exampleAction(name: string): string {
  return fileURLToPath(new URL(`../../example/actions/${name}.js`, import.meta.url));
}

type Metric = schemas.Metric;
type Message = schemas.Message;

/** A request the target server received. */
interface Hit {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** The HTTP target of http-check and webhook: `/ok` 200, `/fail` 500, `/slow` 200 after 2 s, `/hook` 204, `/hook-reject` 503. */
function startTarget(): Promise<{ server: http.Server; url: string; hits: Hit[] }> {
  const hits: Hit[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = req.url ?? '/';
      hits.push({ method: req.method ?? '', path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      if (path === '/ok') res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
      else if (path === '/fail') res.writeHead(500).end('boom');
      else if (path === '/slow') setTimeout(() => res.writeHead(200).end('late'), 2000).unref();
      else if (path === '/hook') res.writeHead(204).end();
      else if (path === '/hook-reject') res.writeHead(503).end('maintenance window');
      else res.writeHead(404).end();
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits })),
  );
}

let running: Running;
let target: Awaited<ReturnType<typeof startTarget>>;

before(async () => {
  target = await startTarget();
  running = await start({ actions: ['cpu-stress', 'http-check', 'log-pattern-check', 'webhook'].map(exampleAction) });
});
after(async () => {
  await running.close();
  target.server.closeAllConnections();
  await new Promise((resolve) => target.server.close(resolve));
});

/**
 * Executions started and not yet stopped. Stopped after each test, so a test that fails midway
 * cannot leave bodies burning that would starve the next tests of body threads.
 */
const unstopped = new Map<string, { actionId: string; state: unknown }>();

async function startExecution(actionId: string, executionId: string, config: Record<string, unknown>): Promise<Record<string, unknown>> {
  const state = await running.agent.run(actionId, executionId, config);
  unstopped.set(executionId, { actionId, state });
  return state;
}

function stopExecution(actionId: string, executionId: string, state: unknown): Promise<Answer> {
  unstopped.delete(executionId);
  return running.agent.stop(actionId, executionId, state);
}

afterEach(async () => {
  for (const [executionId, { actionId, state }] of unstopped) await running.agent.stop(actionId, executionId, state);
  unstopped.clear();
});

function metricsOf(answer: Answer): Metric[] {
  return (answer.body['metrics'] as Metric[] | undefined) ?? [];
}
function messagesOf(answer: Answer): Message[] {
  return (answer.body['messages'] as Message[] | undefined) ?? [];
}

/** Poll status every `intervalMs` like the agent until `completed` (or an error); returns every answer. */
async function pollUntilCompleted(actionId: string, executionId: string, state: unknown, intervalMs = 200): Promise<{ answers: Answer[]; state: unknown }> {
  const answers: Answer[] = [];
  let current = state;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const answer = await running.agent.status(actionId, executionId, current);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    answers.push(answer);
    current = answer.body['state'] ?? current;
    if (answer.body['completed'] === true) return { answers, state: current };
    assert.ok(Date.now() < deadline, `${actionId} did not complete within 10 s`);
    await sleep(intervalMs);
  }
}

describe('example extension', () => {
  test('lists and describes the four actions; every description is valid', async () => {
    const list = await running.agent.request('GET', '/');
    assert.equal(list.status, 200);
    const ids = (assertWire(schemas.ActionListSchema, list.body, 'list').actions as { path: string }[]).map((a) => a.path);
    assert.deepEqual(ids, [`/${CPU}`, `/${HTTP}`, `/${LOG}`, `/${HOOK}`]);

    const described = new Map<string, schemas.ActionDescription>();
    for (const id of [CPU, HTTP, LOG, HOOK]) {
      const answer = await running.agent.request('GET', `/${id}`);
      assert.equal(answer.status, 200);
      described.set(id, assertWire(schemas.ActionDescriptionSchema, answer.body, `describe ${id}`));
    }
    const cpu = described.get(CPU)!;
    assert.equal(cpu.kind, 'attack');
    assert.equal(cpu.timeControl, 'external');
    assert.deepEqual(cpu.metrics?.query?.endpoint, { path: `/${CPU}/query`, method: 'POST', callInterval: '1s' });
    assert.equal(cpu.status?.callInterval, '15s', 'no status handler: the runtime adds the synthetic status');
    assert.ok(cpu.stop !== undefined);
    const httpCheck = described.get(HTTP)!;
    assert.equal(httpCheck.kind, 'check');
    assert.equal(httpCheck.timeControl, 'internal');
    assert.deepEqual(httpCheck.parameters.map((p) => p.name), ['duration', 'url', 'expectedStatusCodes', 'successRate', 'requestsPerSecond', 'timeout']);
    const logFile = described.get(LOG)!.parameters.find((p) => p.name === 'logFile');
    assert.equal(logFile?.type, 'file');
    assert.ok(described.get(LOG)!.stop !== undefined, 'file parameters need a stop');
    const hook = described.get(HOOK)!;
    assert.equal(hook.timeControl, 'instantaneous');
    assert.equal(hook.status, undefined);
    assert.equal(hook.stop, undefined);
    assert.deepEqual(hook.parameters.find((p) => p.name === 'method')?.options, ['GET', 'POST', 'PUT', 'DELETE'].map((m) => ({ label: m, value: m })));
  });

  // Load-independent on purpose: how much CPU the body gets depends on what else the machine runs
  // (bench/ measures that: `oversubscribed` compares the CPU bodies burn with what they should).
  // Here: the body runs its hot loop (its own busy ratio, wall-clock, is ~1 at 100% load), holds
  // a body thread while it runs, and no longer after the stop, which it observed itself.
  test('cpu-stress burns a worker thread, reports its busy ratio, answers metric queries and stops cooperatively', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const id = randomUUID();
    const state = await startExecution(CPU, id, { duration: 20_000, cpuLoad: 100 });
    assert.equal(typeof state['startedAtMs'], 'number');
    assert.equal(running.extension.stats().bodies.cpuBusy, 1, 'the body holds a cpu body thread');

    // The synthetic status carries the body's reports; the first one comes after ~1 s of burning.
    const ratio = await eventually('a cpu_stress_busy_ratio report', async () => {
      const status = await running.agent.status(CPU, id, state);
      assert.equal(status.body['completed'], false);
      return metricsOf(status).find((m) => m.name === 'cpu_stress_busy_ratio');
    });
    // Wall-clock time inside the hot loop over time since the last report: a thread the machine
    // preempts still counts as busy, so this is ~1 however loaded the machine is.
    assert.ok(ratio.value > 0.9, `busy ratio at 100% load: ${ratio.value}`);
    assert.deepEqual(ratio.metric, { target_load: '100' });

    const query = await running.agent.query(CPU, id, {});
    assert.equal(query.status, 200);
    const utilisation = metricsOf(query).find((m) => m.name === 'host_cpu_utilisation_percent');
    const load1 = metricsOf(query).find((m) => m.name === 'host_load1');
    assert.ok(utilisation !== undefined && load1 !== undefined, JSON.stringify(query.body));
    assert.equal(utilisation.metric['host'], os.hostname());
    // A figure of the whole host while one of its cores burns: other load only raises it.
    assert.ok(utilisation.value > 100 / os.cpus().length / 4 && utilisation.value <= 100, `host utilisation while one core burns: ${utilisation.value}`);
    assert.ok(load1.value >= 0);

    const stop = await stopExecution(CPU, id, state);
    assert.equal(stop.status, 200, JSON.stringify(stop.body));
    const latency = metricsOf(stop).find((m) => m.name === 'cpu_stress_stop_latency_ms');
    // "stopped", not "killed": the body saw the stop within the grace period and returned.
    assert.equal(latency?.metric['body_phase'], 'stopped');
    assert.ok(latency.value >= 0);
    const summary = stop.body['summary'] as schemas.Summary;
    assert.match(summary.text, /^Burned 100% of one CPU core for [\d.]+ s; the body stopped cooperatively [\d.]+ (µs|ms) after the stop request\.$/);
    assert.ok(messagesOf(stop).some((m) => m.message === summary.text));
    // The stop answers once the body's code has ended: its thread is free again.
    assert.equal(running.extension.stats().bodies.cpuBusy, 0, 'no body thread is busy after the stop');
    t.diagnostic(`busy ratio ${ratio.value}; host utilisation ${utilisation.value}%; cooperative stop ${latency.value.toFixed(3)} ms`);
  });

  test('cpu-stress at 30% load keeps the thread busy for about 30% of the time', { timeout: TEST_TIMEOUT_MS }, async () => {
    const id = randomUUID();
    const state = await startExecution(CPU, id, { duration: 20_000, cpuLoad: 30 });
    const ratio = await eventually('a cpu_stress_busy_ratio report', async () => {
      const status = await running.agent.status(CPU, id, state);
      return metricsOf(status).find((m) => m.name === 'cpu_stress_busy_ratio');
    });
    // A duty cycle that never sleeps reads ~1. On a busy machine a burst preempted at its end is
    // counted longer than 30 ms (and a late wake-up lengthens the rest), so the bounds are wide:
    // "it burns", and "it sleeps for a good part of each window".
    assert.ok(ratio.value > 0.02 && ratio.value < 0.8, `busy ratio at 30% load: ${ratio.value}`);
    const stop = await stopExecution(CPU, id, state);
    assert.equal(stop.status, 200);
    assert.match((stop.body['summary'] as schemas.Summary).text, /^Burned 30% /);
  });

  test('cpu-stress rejects a load outside 1..100 at prepare', async () => {
    const prepared = await running.agent.prepare(CPU, randomUUID(), { duration: 1000, cpuLoad: 150 });
    const error = prepared.body['error'] as schemas.ActionKitError;
    assert.match(error.title, /^Invalid configuration: cpuLoad: /);
  });

  test('http-check passes against a healthy endpoint', { timeout: TEST_TIMEOUT_MS }, async () => {
    const id = randomUUID();
    const hitsBefore = target.hits.length;
    const state = await startExecution(HTTP, id, { duration: 1500, url: `${target.url}/ok`, requestsPerSecond: 10, timeout: 1000, successRate: null });
    const { answers, state: final } = await pollUntilCompleted(HTTP, id, state);
    const last = answers.at(-1)!;
    assert.equal(last.body['error'], undefined, JSON.stringify(last.body));
    assert.match(messagesOf(last).at(-1)?.message ?? '', /^HTTP check passed: \d+\/15 requests, 100% ok/);
    assert.ok(answers.slice(0, -1).some((a) => messagesOf(a).some((m) => /^\d+\/15 requests, 100% ok, \d+(\.\d)?% of 1\.5 s elapsed$/.test(m.message))));

    const counts = final as { total: number; successes: number };
    const requests = answers.flatMap(metricsOf).filter((m) => m.name === 'http_check_response_time_ms');
    assert.equal(requests.length, counts.total, 'every request arrived as one metric in a status result');
    // At most 10/s (the body paces them); how many fit in 1.5 s depends on how busy the machine is.
    assert.ok(counts.total >= 1 && counts.total <= 16, `requests in 1.5 s at 10/s: ${counts.total}`);
    assert.equal(counts.successes, counts.total);
    for (const metric of requests) assert.deepEqual(metric.metric, { url: `${target.url}/ok`, status: '200', outcome: 'success' });
    assert.equal(target.hits.slice(hitsBefore).filter((h) => h.method === 'GET' && h.path === '/ok').length, counts.total);

    const stop = await stopExecution(HTTP, id, final);
    assert.equal(stop.status, 200);
    assert.deepEqual(stop.body['summary'], {
      text: `${target.url}/ok: ${counts.total}/${counts.total} requests answered as expected (100%, required 100%)`,
      level: 'info',
    });
  });

  test('http-check fails with status "failed" when the endpoint answers 500', { timeout: TEST_TIMEOUT_MS }, async () => {
    const id = randomUUID();
    const state = await startExecution(HTTP, id, { duration: 1000, url: `${target.url}/fail`, requestsPerSecond: 10, expectedStatusCodes: '200-299, 404' });
    const { answers, state: final } = await pollUntilCompleted(HTTP, id, state);
    const error = answers.at(-1)!.body['error'] as schemas.ActionKitError;
    assert.equal(error.status, 'failed');
    assert.match(error.title, /^HTTP check failed: 0% of \d+ requests succeeded, required 100%$/);
    assert.equal(error.detail, `${target.url}/fail: expected status 200-299, 404; last failure: status 500`);
    const failures = answers.flatMap(metricsOf).filter((m) => m.name === 'http_check_response_time_ms');
    assert.ok(failures.length >= 1);
    assert.ok(failures.every((m) => m.metric['status'] === '500' && m.metric['outcome'] === 'failure'));

    const stop = await stopExecution(HTTP, id, final);
    assert.equal((stop.body['summary'] as schemas.Summary).level, 'warning');
  });

  test('http-check stopped by the agent aborts its in-flight request at once and does not count it', { timeout: TEST_TIMEOUT_MS }, async () => {
    const id = randomUUID();
    const state = await startExecution(HTTP, id, { duration: 10_000, url: `${target.url}/slow`, timeout: 5000 });
    await eventually('the slow request to reach the target', () => (target.hits.some((h) => h.path === '/slow') ? true : undefined));
    const stop = await stopExecution(HTTP, id, state);
    assert.equal(stop.status, 200);
    // Cooperatively means within the 1 s grace period, so before the 2 s answer: the request was
    // aborted (a body waiting for it would have been killed). No wall-clock bound: that would
    // measure the machine's load, not the abort.
    assert.ok(messagesOf(stop).some((m) => /^Action body stopped cooperatively/.test(m.message)), JSON.stringify(stop.body));
    assert.equal(metricsOf(stop).length, 0, 'the aborted request is not reported');
  });

  test('http-check rejects malformed expected status codes at prepare', async () => {
    const prepared = await running.agent.prepare(HTTP, randomUUID(), { url: `${target.url}/ok`, expectedStatusCodes: '200-299, abc' });
    assert.match((prepared.body['error'] as schemas.ActionKitError).title, /expectedStatusCodes: "abc" is not a status code/);
  });

  describe('log-pattern-check with an uploaded log', () => {
    /** 20,000 lines (~1.3 MB, several read chunks) with 4 ERROR lines and 1 FATAL line; some multi-byte characters. */
    const log = Array.from({ length: 20_000 }, (_, i) => {
      const line = i + 1;
      if (line === 1000 || line === 5000 || line === 9000 || line === 15_000) return `2025-01-01T00:00:00Z ERROR payment ${line} declined`;
      if (line === 19_999) return `2025-01-01T00:00:00Z FATAL out of memory`;
      return `2025-01-01T00:00:00Z INFO request ${line} served in ${line % 97} µs`;
    }).join('\n');

    async function runScan(config: Record<string, unknown>): Promise<{ id: string; answers: Answer[]; state: Record<string, unknown> }> {
      const id = randomUUID();
      const form = new FormData();
      form.append('request', JSON.stringify({ executionId: id, config, properties: {} }));
      form.append('logFile', new Blob([log], { type: 'text/plain' }), 'app.log');
      const prepared = await running.agent.request('POST', `/${LOG}/prepare`, form);
      assertWire(schemas.PrepareActionResponseSchema, prepared.body, 'prepare');
      assert.equal(prepared.status, 200);
      assert.equal(prepared.body['error'], undefined, JSON.stringify(prepared.body));
      const state = prepared.body['state'] as Record<string, unknown>;
      const uploaded = join(running.uploadDir, id, 'app.log');
      assert.equal(state['logFile'], uploaded, 'the config value of a file parameter is the uploaded file under uploadDir/<executionId>');
      const started = await running.agent.start(LOG, id, state);
      assert.equal(started.body['error'], undefined);
      const { answers, state: final } = await pollUntilCompleted(LOG, id, started.body['state'], 100);
      assert.ok(existsSync(uploaded), 'the file stays until the stop');
      const stop = await running.agent.stop(LOG, id, final);
      assert.equal(stop.status, 200);
      assert.ok(!existsSync(join(running.uploadDir, id)), 'the upload folder is removed after stop');
      return { id, answers: [...answers, stop], state: final as Record<string, unknown> };
    }

    test('passes when the matches stay within the limit', { timeout: TEST_TIMEOUT_MS }, async () => {
      const { answers, state } = await runScan({ maxMatches: 5 });
      const completed = answers.at(-2)!;
      assert.equal(completed.body['error'], undefined, JSON.stringify(completed.body));
      assert.equal(state['matches'], 5);
      assert.equal(state['lines'], 20_000);
      const matches = answers.flatMap(metricsOf).filter((m) => m.name === 'log_pattern_matches');
      assert.deepEqual(
        matches.map((m) => [m.value, m.metric]),
        [[5, { file: 'app.log', pattern: 'ERROR|FATAL', scan: 'complete' }]],
      );
      const samples = answers.flatMap(messagesOf).filter((m) => m.level === 'warn').map((m) => m.message);
      assert.deepEqual(samples, [
        'line 1000: 2025-01-01T00:00:00Z ERROR payment 1000 declined',
        'line 5000: 2025-01-01T00:00:00Z ERROR payment 5000 declined',
        'line 9000: 2025-01-01T00:00:00Z ERROR payment 9000 declined',
        'line 15000: 2025-01-01T00:00:00Z ERROR payment 15000 declined',
        'line 19999: 2025-01-01T00:00:00Z FATAL out of memory',
      ]);
      assert.deepEqual(answers.at(-1)!.body['summary'], { text: 'app.log: 5 matching lines of 20000 (at most 5 allowed)', level: 'info' });
    });

    test('fails with status "failed" when more lines match than allowed', { timeout: TEST_TIMEOUT_MS }, async () => {
      const { answers } = await runScan({ maxMatches: 4, pattern: null });
      const error = answers.at(-2)!.body['error'] as schemas.ActionKitError;
      assert.equal(error.status, 'failed');
      assert.equal(error.title, 'Log pattern check failed: 5 of 20000 lines in app.log match /ERROR|FATAL/');
      assert.equal((answers.at(-1)!.body['summary'] as schemas.Summary).level, 'warning');
    });

    test('a custom pattern that matches nothing passes', { timeout: TEST_TIMEOUT_MS }, async () => {
      const { answers, state } = await runScan({ pattern: 'payment \\d+ refunded' });
      assert.equal(answers.at(-2)!.body['error'], undefined);
      assert.equal(state['matches'], 0);
    });
  });

  describe('webhook', () => {
    test('sends the configured request with method, body and headers', async () => {
      const id = randomUUID();
      const prepared = await running.agent.prepare(HOOK, id, {
        url: `${target.url}/hook`,
        method: 'PUT',
        body: '{"experiment":"checkout","phase":"start"}',
        headers: [{ key: 'X-Experiment', value: 'exp-42' }],
      });
      assert.equal(prepared.body['error'], undefined, JSON.stringify(prepared.body));
      const hitsBefore = target.hits.length;
      const started = await running.agent.start(HOOK, id, prepared.body['state']);
      assert.equal(started.status, 200);
      assert.equal(started.body['error'], undefined, JSON.stringify(started.body));
      assert.match(messagesOf(started)[0]?.message ?? '', new RegExp(`^PUT ${target.url}/hook answered 204 No Content in [\\d.]+ (µs|ms|s)$`));
      const hits = target.hits.slice(hitsBefore);
      assert.equal(hits.length, 1);
      assert.equal(hits[0]!.method, 'PUT');
      assert.equal(hits[0]!.path, '/hook');
      assert.equal(hits[0]!.body, '{"experiment":"checkout","phase":"start"}');
      assert.equal(hits[0]!.headers['x-experiment'], 'exp-42');
      assert.equal(hits[0]!.headers['content-type'], 'application/json');
      // Instantaneous: nothing to stop.
      const stop = await running.agent.request('POST', `/${HOOK}/stop`, { executionId: id, state: {} });
      assert.equal(stop.status, 404);
    });

    test('reports a non-2xx answer as a failed start', async () => {
      const id = randomUUID();
      const prepared = await running.agent.prepare(HOOK, id, { url: `${target.url}/hook-reject`, body: 'deploy paused', headers: null });
      const started = await running.agent.start(HOOK, id, prepared.body['state']);
      const error = started.body['error'] as schemas.ActionKitError;
      assert.equal(error.status, 'failed');
      assert.match(error.title, new RegExp(`^Webhook failed: POST ${target.url}/hook-reject answered 503 Service Unavailable in `));
      assert.equal(error.detail, 'maintenance window');
      const hit = target.hits.at(-1)!;
      assert.equal(hit.body, 'deploy paused');
      assert.equal(hit.headers['content-type'], 'text/plain; charset=utf-8');
    });

    test('reports an unreachable receiver as an errored start', async () => {
      const closed = http.createServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
      const port = (closed.address() as AddressInfo).port;
      await new Promise((resolve) => closed.close(resolve));
      const id = randomUUID();
      const prepared = await running.agent.prepare(HOOK, id, { url: `http://127.0.0.1:${port}/hook` });
      const started = await running.agent.start(HOOK, id, prepared.body['state']);
      const error = started.body['error'] as schemas.ActionKitError;
      assert.equal(error.status, 'errored');
      assert.equal(error.title, `Webhook POST http://127.0.0.1:${port}/hook could not be sent: ECONNREFUSED`);
    });

    test('refuses a GET with a body and invalid header names at prepare', async () => {
      const withBody = await running.agent.prepare(HOOK, randomUUID(), { url: `${target.url}/hook`, method: 'GET', body: 'x' });
      assert.match((withBody.body['error'] as schemas.ActionKitError).title, /a GET request cannot carry a body/);
      const badHeader = await running.agent.prepare(HOOK, randomUUID(), { url: `${target.url}/hook`, headers: [{ key: 'bad header', value: 'x' }] });
      assert.match((badHeader.body['error'] as schemas.ActionKitError).title, /"bad header" is not a valid HTTP header/);
    });
  });
});
