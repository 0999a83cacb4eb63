/**
 * Large JSON never passes through the main thread as objects (`src/runtime/sealed.ts`): request
 * bodies above `LARGE_JSON_BYTES` are decoded on the large-request lane, states above it stay
 * sealed on the main thread and are spliced into answers unread. What must hold:
 *
 * - a large state round-trips exactly: every handler receives what the answer before carried;
 * - a large body is refused exactly as a small one with the same fault;
 * - the main thread keeps answering while the lane holds a large body (forced with a hold point on
 *   the lane, not hoped for from timing);
 * - a large state of a file action is still confined to its uploads; a large multipart `request`
 *   field is decoded off the main thread.
 *
 * Real HTTP, real worker threads, an in-process extension.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { after, afterEach, test } from 'node:test';
import { MAX_JSON_DEPTH } from '../../src/api/json-depth.js';
import { MAX_LARGE_BODIES_READ } from '../../src/http/app.js';
import type { RuntimeError } from '../../src/errors.js';
import { MAX_QUEUED_DECODES, type PoolStats, type WorkerPools } from '../../src/pool.js';
import { LARGE_JSON_BYTES } from '../../src/runtime/sealed.js';
import { GatePoint } from '../../src/shm/test-gates.js';
import { eventually, fixture, sleep, start, tempDir, type Answer, type Running } from '../support/harness.js';
import { Holds } from '../support/holds.js';

const STATE = 'fixture.http.state';
const LOG_CHECK = 'com.example.actionkit.log-pattern-check';
const LOG_CHECK_MODULE = fileURLToPath(new URL('../../example/actions/log-pattern-check.js', import.meta.url));
/** A file every Linux host has, with content no test upload has. */
const HOST_FILE = '/etc/passwd';

type Json = Record<string, unknown>;

const logs = tempDir('actionkit-large-');
after(() => logs.remove());

let holds: Holds | undefined;
let running: Running | undefined;
afterEach(async () => {
  holds?.dispose();
  await running?.close();
  holds = undefined;
  running = undefined;
});

/** Twice the threshold of padding, in several kinds of JSON: strings with escapes and non-ASCII, nested arrays, numbers. */
function bulk(): Json {
  return {
    text: 'ü€😀 "quoted" \\ <tag> & \u2028 '.repeat(2_000),
    nested: Array.from({ length: 4_000 }, (_, i) => [[i, i / 7, -i - 1], { key: `k${i}`, none: null, yes: true }]),
  };
}

/** The state a fixture handler reported receiving (its first message, as JSON). */
function received(answer: Answer): Json {
  const messages = answer.body['messages'] as { message: string }[] | undefined;
  assert.ok(messages?.[0] !== undefined, `no message in ${JSON.stringify(answer.body).slice(0, 300)}`);
  return JSON.parse(messages[0].message) as Json;
}

test('a state larger than LARGE_JSON_BYTES goes through prepare, start, status and stop exactly: each handler receives the state the answer before carried', async () => {
  running = await start({ actions: [fixture('http-state')] });
  const { agent } = running;
  const id = randomUUID();
  const stopLog = join(logs.path, `${id}.log`);
  const initial = { ...bulk(), stopLog };
  const initialBytes = Buffer.byteLength(JSON.stringify(initial));
  assert.ok(initialBytes > 2 * LARGE_JSON_BYTES, `the state is ${initialBytes} bytes`);

  const laneTasksBefore = running.extension.stats().pools.largeRequestTasks;
  const prepared = await agent.prepare(STATE, id, { initial });
  assert.equal(prepared.status, 200, JSON.stringify(prepared.body).slice(0, 300));
  assert.deepEqual(prepared.body['state'], initial, 'prepare hands out the state it was given');

  const started = await agent.start(STATE, id, prepared.body['state']);
  assert.equal(started.status, 200);
  assert.deepEqual(received(started), initial, 'start received the prepared state');
  const afterStart = started.body['state'] as Json;
  assert.equal(afterStart['starts'], 1);

  let state = afterStart;
  for (let poll = 1; poll <= 3; poll++) {
    const status = await agent.status(STATE, id, state);
    assert.equal(status.status, 200);
    assert.deepEqual(received(status), state, `status ${poll} received the state of the answer before`);
    state = status.body['state'] as Json;
    assert.equal(state['polls'], poll);
  }
  const stopped = await agent.stop(STATE, id, state);
  assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
  assert.deepEqual(JSON.parse(readFileSync(stopLog, 'utf8').trim()), state, 'stop received the state of the last status');
  // Every request was large: six decodes and six handlers ran on the large-request lane.
  assert.equal(running.extension.stats().pools.largeRequestTasks - laneTasksBefore, 12);
});

test('a large body is refused exactly as a small one with the same fault', async () => {
  running = await start({ actions: [fixture('http-state')] });
  const { agent } = running;
  const id = randomUUID();
  /** The same fault, once small and once padded beyond the threshold (trailing whitespace keeps it the same JSON). */
  const cases: [string, string][] = [
    ['truncated JSON', `{"executionId":"${id}","state":{"a":[1,2`],
    ['nested too deeply', `{"executionId":"${id}","state":{"a":${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}}}`],
    ['an executionId that is no UUID', `{"executionId":"not-a-uuid","state":{}}`],
    ['a state that is an array', `{"executionId":"${id}","state":[1,2,3]}`],
    ['a body that is a string', JSON.stringify('text')],
  ];
  for (const [fault, small] of cases) {
    const large = `${small}${' '.repeat(2 * LARGE_JSON_BYTES)}`;
    for (const phase of ['start', 'status', 'stop'] as const) {
      const smallAnswer = await agent.request('POST', `/${STATE}/${phase}`, small, { 'Content-Type': 'application/json' });
      const largeAnswer = await agent.request('POST', `/${STATE}/${phase}`, large, { 'Content-Type': 'application/json' });
      assert.equal(smallAnswer.status, 400, `${phase}, ${fault}, small: ${JSON.stringify(smallAnswer.body)}`);
      assert.equal(largeAnswer.status, smallAnswer.status, `${phase}, ${fault}: large as small`);
      assert.equal(largeAnswer.body['title'], smallAnswer.body['title'], `${phase}, ${fault}: large as small`);
    }
  }
  // Nothing of it was taken for an execution: the id is still free.
  const prepared = await agent.prepare(STATE, id, { initial: {} });
  assert.equal(prepared.status, 200);
  assert.equal((await agent.stop(STATE, id, prepared.body['state'])).status, 200);
});

test('while the large-request lane holds a large body, the main thread answers status, prepare and the probes; the large request is answered once the lane lets it go', async () => {
  holds = new Holds();
  running = await start({ actions: [fixture('http-state')], heartbeatMinIntervalMs: 60 * 60_000 });
  const { agent } = running;
  const healthy = randomUUID();
  const prepared = await agent.prepare(STATE, healthy, { initial: {} });
  const started = await agent.start(STATE, healthy, prepared.body['state']);
  assert.equal(started.status, 200);

  holds.gates.arm(GatePoint.LargeRequestDecode);
  const unknown = randomUUID();
  const largeStop = agent.stop(STATE, unknown, bulk());
  let largeAnswered = false;
  void largeStop.then(() => (largeAnswered = true));
  await holds.gates.arrived(GatePoint.LargeRequestDecode);

  // The lane is held inside the decode of the large stop: everything small still goes.
  const status = await agent.status(STATE, healthy, started.body['state']);
  assert.equal(status.status, 200);
  assert.equal(status.body['completed'], false);
  const other = randomUUID();
  const otherPrepared = await agent.prepare(STATE, other, { initial: {} });
  assert.equal(otherPrepared.status, 200);
  const liveness = await fetch(`http://127.0.0.1:${running.healthPort}/health/liveness`);
  assert.equal(liveness.status, 200);
  assert.equal(largeAnswered, false, 'the large stop waits for the lane');

  holds.gates.open(GatePoint.LargeRequestDecode);
  const stopped = await largeStop;
  assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
  for (const [id, state] of [
    [healthy, status.body['state']],
    [other, otherPrepared.body['state']],
  ] as const) {
    assert.equal((await agent.stop(STATE, id, state)).status, 200);
  }
});

test('a large state of a file action is confined to its uploads like a small one; a large multipart request field is decoded off the main thread', async () => {
  running = await start({ actions: [LOG_CHECK_MODULE], heartbeatMinIntervalMs: 60 * 60_000 });
  const { agent, uploadDir } = running;
  const id = randomUUID();
  // The agent's request field, made large by what the agent may carry (a target with many attributes).
  const attributes = Object.fromEntries(Array.from({ length: 3_000 }, (_, i) => [`k8s.label.key-${i}`, [`value-${i}-${'v'.repeat(20)}`]]));
  const request = { executionId: id, config: { logFile: 'file::1', pattern: 'ERROR', maxMatches: 100 }, target: { name: 'host', attributes }, properties: {} };
  assert.ok(JSON.stringify(request).length > LARGE_JSON_BYTES);
  const form = new FormData();
  form.append('request', JSON.stringify(request));
  form.append('logFile', new Blob(['ERROR one\nok\n']), 'app.log');
  const prepared = await agent.request('POST', `/${LOG_CHECK}/prepare`, form);
  assert.equal(prepared.status, 200, JSON.stringify(prepared.body));
  const state = prepared.body['state'] as Json;
  assert.equal(state['logFile'], join(uploadDir, id, 'app.log'));

  // A broken large field is refused as a broken small one.
  const broken = new FormData();
  broken.append('request', `${JSON.stringify(request).slice(0, -1)}`);
  broken.append('logFile', new Blob(['x\n']), 'app.log');
  const refused = await agent.request('POST', `/${LOG_CHECK}/prepare`, broken);
  assert.equal(refused.status, 400, JSON.stringify(refused.body));
  assert.equal(refused.body['title'], 'Failed to parse request body.');

  // The state made large by the client: its upload location is checked on the lane.
  const padding = 'p'.repeat(2 * LARGE_JSON_BYTES);
  for (const phase of ['start', 'status', 'stop'] as const) {
    const answer = await agent.request('POST', `/${LOG_CHECK}/${phase}`, { executionId: id, state: { ...state, logFile: HOST_FILE, padding } });
    assert.equal(answer.status, 400, `${phase}: ${JSON.stringify(answer.body).slice(0, 300)}`);
    assert.equal(answer.body['title'], `Invalid request body: state.logFile names no upload of execution ${id}`);
    assert.doesNotMatch(JSON.stringify(answer.body), /root:/);
  }
  // The same large state with the execution's own upload passes, and the execution runs.
  const started = await agent.start(LOG_CHECK, id, { ...state, padding });
  assert.equal(started.body['error'], undefined, JSON.stringify(started.body).slice(0, 300));
  let polled = started.body['state'] as Json;
  assert.equal(polled['padding'], padding, 'the large state came back whole');
  let status: Answer;
  do {
    status = await agent.status(LOG_CHECK, id, polled);
    polled = (status.body['state'] as Json | undefined) ?? polled;
  } while (status.body['completed'] !== true);
  assert.match(JSON.stringify(status.body), /1 of 2 lines in app\.log match/);
  assert.equal((await agent.stop(LOG_CHECK, id, polled)).status, 200);
});

test('a compressed body that inflates beyond LARGE_JSON_BYTES is refused with 413 naming the rule; a small one is read', async () => {
  running = await start({ actions: [fixture('http-state')] });
  const id = randomUUID();
  const port = Number(new URL(running.base).port);
  const post = (body: Buffer): Promise<{ status: number; json: Json }> =>
    new Promise((resolve, reject) => {
      const req = httpRequest(
        { host: '127.0.0.1', port, method: 'POST', path: `/${STATE}/status`, headers: { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip', 'Content-Length': body.length } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Json }));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const large = await post(gzipSync(JSON.stringify({ executionId: id, state: { padding: 'x'.repeat(2 * LARGE_JSON_BYTES) } })));
  assert.equal(large.status, 413, JSON.stringify(large.json));
  assert.match(String(large.json['detail']), /compressed body, or one in another charset than UTF-8, may hold at most 16384 bytes/);
  const small = await post(gzipSync(JSON.stringify({ executionId: id, state: {} })));
  assert.equal(small.status, 200, JSON.stringify(small.json));
});

/** A stop for an execution nobody prepared, with a state above the threshold: a decode, then a stateless author stop, on the lane. */
function junkStop(agent: Running['agent']): Promise<Answer> {
  return agent.stop(STATE, randomUUID(), { padding: 'j'.repeat(2 * LARGE_JSON_BYTES) });
}

/** A large stop of an unknown execution whose state is small (the body is padded after it): decoded on the lane, its handler runs on the handler lane. */
function paddedStop(agent: Running['agent']): Promise<Answer> {
  const body = `${JSON.stringify({ executionId: randomUUID(), state: {} })}${' '.repeat(2 * LARGE_JSON_BYTES)}`;
  return agent.request('POST', `/${STATE}/stop`, body, { 'Content-Type': 'application/json' });
}

/** POST `body` to `path` whole, then leave without waiting for the answer. */
function sendAndLeave(port: number, path: string, body: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } });
    req.on('error', () => undefined);
    req.end(body, () => {
      req.destroy();
      resolve();
    });
    req.on('close', resolve);
    setTimeout(() => reject(new Error('could not send the body')), 10_000).unref();
  });
}

/** Prepare an execution of the state fixture whose prepare hands out a state above the threshold (sealed); its stop logs to `stopLog`. */
async function prepareSealed(agent: Running['agent'], initial: Json = {}): Promise<{ id: string; stopLog: string; prepared: Answer }> {
  const id = randomUUID();
  const stopLog = join(logs.path, `${id}.log`);
  const prepared = await agent.prepare(STATE, id, { initial: { ...initial, stopLog, padTo: { prepare: 3 * LARGE_JSON_BYTES } } });
  assert.equal(prepared.status, 200, JSON.stringify(prepared.body).slice(0, 300));
  return { id, stopLog, prepared };
}

/** Hold the large-request lane: a junk stop (or `send`'s) held in its decode (the gate stays armed); `held` is its answer once the gate opens. */
async function holdLane(holds: Holds, agent: Running['agent'], send = junkStop): Promise<{ held: Promise<Answer> }> {
  holds.gates.arm(GatePoint.LargeRequestDecode);
  const held = send(agent);
  await holds.gates.arrived(GatePoint.LargeRequestDecode);
  return { held };
}

test('at most MAX_LARGE_BODIES_READ large bodies are read at once: the others wait unread in their sockets and are answered in turn', async () => {
  holds = new Holds();
  running = await start({ actions: [fixture('http-state')] });
  const { agent } = running;
  const { held } = await holdLane(holds, agent);
  const more = Array.from({ length: MAX_LARGE_BODIES_READ + 4 }, () => junkStop(agent));
  // One body held in its decode, the others of its turns read and queued for the lane; the rest unread.
  await eventually('the read bodies to queue', () => (running!.extension.stats().pools.largeRequestQueue === MAX_LARGE_BODIES_READ - 1 ? true : undefined));
  await sleep(300);
  assert.equal(running.extension.stats().pools.largeRequestQueue, MAX_LARGE_BODIES_READ - 1, 'no more bodies were read');
  holds.gates.open(GatePoint.LargeRequestDecode);
  for (const answer of await Promise.all([held, ...more])) assert.equal(answer.status, 200, JSON.stringify(answer.body));
});

test('multipart request fields wait for the lane at most MAX_QUEUED_DECODES at once: one more is a 503 at once', async () => {
  holds = new Holds();
  running = await start({ actions: [LOG_CHECK_MODULE] });
  const { agent } = running;
  const prepare = (): Promise<Answer> => {
    const form = new FormData();
    const request = { executionId: randomUUID(), config: { logFile: 'file::1', pattern: 'x', maxMatches: 1 }, properties: { padding: 'm'.repeat(2 * LARGE_JSON_BYTES) } };
    form.append('request', JSON.stringify(request));
    form.append('logFile', new Blob(['x\n']), 'app.log');
    return agent.request('POST', `/${LOG_CHECK}/prepare`, form);
  };
  holds.gates.arm(GatePoint.LargeRequestDecode);
  const held = prepare();
  await holds.gates.arrived(GatePoint.LargeRequestDecode);
  const queued = Array.from({ length: MAX_QUEUED_DECODES }, prepare);
  await eventually('the fields to queue', () => (running!.extension.stats().pools.largeRequestQueue === MAX_QUEUED_DECODES ? true : undefined));
  const refused = await prepare();
  assert.equal(refused.status, 503, JSON.stringify(refused.body));
  assert.equal(refused.body['title'], 'Too many large requests');
  holds.gates.open(GatePoint.LargeRequestDecode);
  const answers = await Promise.all([held, ...queued]);
  for (const answer of answers) assert.equal(answer.status, 200, JSON.stringify(answer.body).slice(0, 300));
  for (const answer of answers) {
    const id = String((answer.body['state'] as Json)['logFile']).split('/').at(-2)!;
    assert.equal((await agent.stop(LOG_CHECK, id, answer.body['state'])).status, 200);
  }
});

test('a large body whose client went away before its turn is never decoded', async () => {
  holds = new Holds();
  running = await start({ actions: [fixture('http-state')] });
  const { agent } = running;
  const port = Number(new URL(running.base).port);
  const { held } = await holdLane(holds, agent);
  const tasksBefore = running.extension.stats().pools.largeRequestTasks;
  // A whole large body, then the client leaves without waiting for the answer.
  await sendAndLeave(port, `/${STATE}/stop`, JSON.stringify({ executionId: randomUUID(), state: { padding: 'g'.repeat(2 * LARGE_JSON_BYTES) } }));
  await eventually('the body to be queued', () => (running!.extension.stats().pools.largeRequestQueue === 1 ? true : undefined));
  // The server saw the client leave (its access metric: 499) before the lane is free.
  const abandonedStop = `actionkit_http_requests_total{route="/${STATE}/stop",method="POST",status="499"} 1`;
  await eventually('the server to see the client leave', async () => ((await (await fetch(`http://127.0.0.1:${running!.healthPort}/metrics`)).text()).includes(abandonedStop) ? true : undefined));
  holds.gates.open(GatePoint.LargeRequestDecode);
  assert.equal((await held).status, 200);
  const after = await junkStop(agent);
  assert.equal(after.status, 200);
  // The held stop (decode + handler) and the one after (decode + handler): the abandoned body ran nothing.
  assert.equal(running.extension.stats().pools.largeRequestTasks - tasksBefore, 4);
});

test('the agent\'s large bodies whose client went away are dropped too: they hold no place and are never decoded', async () => {
  holds = new Holds();
  running = await start({ actions: [fixture('http-state')], heartbeatMinIntervalMs: 3_600_000 });
  const { agent } = running;
  const port = Number(new URL(running.base).port);
  const { id, prepared } = await prepareSealed(agent);
  const started = await agent.start(STATE, id, prepared.body['state']);
  assert.equal(started.status, 200);
  const { held } = await holdLane(holds, agent);
  const tasksBefore = running.extension.stats().pools.largeRequestTasks;
  // More large statuses of the live execution than it has read turns, each client leaving once its body is sent.
  const body = JSON.stringify({ executionId: id, state: started.body['state'] });
  const leaving = MAX_LARGE_BODIES_READ + 4;
  for (let i = 0; i < leaving; i++) await sendAndLeave(port, `/${STATE}/status`, body);
  const abandonedStatuses = `actionkit_http_requests_total{route="/${STATE}/status",method="POST",status="499"} ${leaving}`;
  await eventually('the server to see every client leave', async () => ((await (await fetch(`http://127.0.0.1:${running!.healthPort}/metrics`)).text()).includes(abandonedStatuses) ? true : undefined));
  // An anonymous body joins the queue: the abandoned ones are gone before it is in.
  const anonymous = paddedStop(agent);
  await eventually('the anonymous body to wait for the lane', () => (running!.extension.stats().pools.largeRequestQueue === 1 ? true : undefined));
  assert.equal(running.extension.stats().pools.largeRequestQueueForExecutions, 0, 'no abandoned status of the execution holds a place');
  // The agent's next status waits as the only work for an execution.
  const status = agent.status(STATE, id, started.body['state']);
  await eventually('the live status to wait for the lane', () => (running!.extension.stats().pools.largeRequestQueueForExecutions === 1 ? true : undefined));
  holds.gates.open(GatePoint.LargeRequestDecode);
  assert.equal((await held).status, 200);
  assert.equal((await anonymous).status, 200);
  const answered = await status;
  assert.equal(answered.status, 200, JSON.stringify(answered.body).slice(0, 300));
  assert.equal(answered.body['completed'], false);
  // The held stop (decode + handler), the anonymous body (decode; its handler is not on the lane)
  // and the live status (decode + handler): nothing of the abandoned ones ran.
  assert.equal(running.extension.stats().pools.largeRequestTasks - tasksBefore, 5);
  assert.equal((await agent.stop(STATE, id, answered.body['state'])).status, 200);
});

test('the agent\'s large stop whose client went away still runs, once: it is never dropped, and keeps its read turn until it ran', async () => {
  holds = new Holds();
  running = await start({ actions: [fixture('http-state')], heartbeatMinIntervalMs: 3_600_000 });
  const { agent } = running;
  const port = Number(new URL(running.base).port);
  const { id, stopLog, prepared } = await prepareSealed(agent);
  const started = await agent.start(STATE, id, prepared.body['state']);
  assert.equal(started.status, 200);
  const { held } = await holdLane(holds, agent);
  await sendAndLeave(port, `/${STATE}/stop`, JSON.stringify({ executionId: id, state: started.body['state'] }));
  const abandonedStop = `actionkit_http_requests_total{route="/${STATE}/stop",method="POST",status="499"} 1`;
  await eventually('the server to see the client leave', async () => ((await (await fetch(`http://127.0.0.1:${running!.healthPort}/metrics`)).text()).includes(abandonedStop) ? true : undefined));
  // Another body joins the queue (what sweeps abandoned tasks out): the stop keeps its place.
  const anonymous = paddedStop(agent);
  await eventually('the anonymous body to wait for the lane', () => (running!.extension.stats().pools.largeRequestQueue === 2 ? true : undefined));
  assert.equal(running.extension.stats().pools.largeRequestQueueForExecutions, 1, 'the agent\'s stop still waits');
  holds.gates.open(GatePoint.LargeRequestDecode);
  for (const answer of await Promise.all([held, anonymous])) assert.equal(answer.status, 200);
  await eventually('the author stop to run', () => (existsSync(stopLog) ? true : undefined));
  // The stop was the agent's, and a later one shares its answer: the author stop ran once.
  const again = await agent.stop(STATE, id, started.body['state']);
  assert.equal(again.status, 200, JSON.stringify(again.body).slice(0, 300));
  assert.equal(again.body['error'], undefined);
  assert.equal(readFileSync(stopLog, 'utf8').trim().split('\n').length, 1);
  assert.equal(running.extension.stats().activeExecutions, 0);
});

/**
 * POST the agent's stop `body` with a `Request-Timeout`: its first `firstBytes` at once, the rest
 * once the timeout's 503 came (a client still sending when its deadline passes). Resolves with the
 * status of the answer.
 */
function stopWithTimeout(port: number, body: string, timeout: string, firstBytes: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const bytes = Buffer.from(body);
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: `/${STATE}/stop`,
      headers: { 'Content-Type': 'application/json', 'Content-Length': bytes.length, 'Request-Timeout': timeout },
    });
    req.on('error', () => undefined);
    req.on('response', (res) => {
      res.resume();
      req.end(bytes.subarray(firstBytes));
      resolve(res.statusCode ?? 0);
    });
    req.write(bytes.subarray(0, firstBytes));
    setTimeout(() => reject(new Error('no answer')), 10_000).unref();
  });
}

test('the agent\'s large stop whose Request-Timeout passes while its body still arrives is read whole and runs, as a small one does', async () => {
  running = await start({ actions: [fixture('http-state')], heartbeatMinIntervalMs: 3_600_000 });
  const { agent } = running;
  const port = Number(new URL(running.base).port);
  const runStarted = async (initial: Json): Promise<{ id: string; stopLog: string; state: unknown }> => {
    const id = randomUUID();
    const stopLog = join(logs.path, `${id}.log`);
    const prepared = await agent.prepare(STATE, id, { initial: { ...initial, stopLog } });
    const started = await agent.start(STATE, id, prepared.body['state']);
    assert.equal(started.status, 200, JSON.stringify(started.body).slice(0, 300));
    return { id, stopLog, state: started.body['state'] };
  };
  const small = await runStarted({});
  const large = await runStarted({ padTo: { prepare: 3 * LARGE_JSON_BYTES } });
  const smallBody = JSON.stringify({ executionId: small.id, state: small.state });
  const largeBody = JSON.stringify({ executionId: large.id, state: large.state });
  assert.ok(largeBody.length > 2 * LARGE_JSON_BYTES);
  // Each sends part of its body, gets the timeout's 503, then sends the rest.
  assert.equal(await stopWithTimeout(port, smallBody, '0.3', Math.floor(smallBody.length / 2)), 503);
  // Its first bytes name the execution: the agent's, read in a turn of the agent's.
  assert.equal(await stopWithTimeout(port, largeBody, '0.3', 2 * LARGE_JSON_BYTES), 503);
  await eventually('the small stop to run', () => (existsSync(small.stopLog) ? true : undefined));
  await eventually('the large stop to run', () => (existsSync(large.stopLog) ? true : undefined));
  await eventually('both executions to end', () => (running!.extension.stats().activeExecutions === 0 ? true : undefined));
  assert.equal(readFileSync(large.stopLog, 'utf8').trim().split('\n').length, 1);
});

test('the agent\'s large stops answered by their Request-Timeout whose clients then leave mid-body give their read turns back', async () => {
  running = await start({ actions: [fixture('http-state')], heartbeatMinIntervalMs: 3_600_000 });
  const { agent } = running;
  const port = Number(new URL(running.base).port);
  const { id, stopLog, prepared } = await prepareSealed(agent);
  const started = await agent.start(STATE, id, prepared.body['state']);
  assert.equal(started.status, 200);
  const body = Buffer.from(JSON.stringify({ executionId: id, state: started.body['state'] }));
  // More than there are turns: each takes one, gets the 503, and its client leaves before the rest.
  for (let i = 0; i < MAX_LARGE_BODIES_READ + 2; i++) {
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: `/${STATE}/stop`, headers: { 'Content-Type': 'application/json', 'Content-Length': body.length, 'Request-Timeout': '0.2' } });
      req.on('error', () => undefined);
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => {
          req.destroy();
          resolve(res.statusCode ?? 0);
        });
      });
      req.write(body.subarray(0, 2 * LARGE_JSON_BYTES));
      setTimeout(() => reject(new Error('no answer')), 10_000).unref();
    });
    assert.equal(status, 503);
  }
  // Every turn came back: the agent's next large stop is read, and runs.
  const stopped = await agent.stop(STATE, id, started.body['state']);
  assert.equal(stopped.status, 200, JSON.stringify(stopped.body).slice(0, 300));
  assert.equal(stopped.body['error'], undefined);
  assert.equal(readFileSync(stopLog, 'utf8').trim().split('\n').length, 1);
});

test('the agent\'s large stop whose Request-Timeout passes while it waits for a read turn still runs in its turn', { timeout: 60_000 }, async () => {
  holds = new Holds();
  running = await start({ actions: [fixture('http-state')], heartbeatMinIntervalMs: 3_600_000 });
  const { agent } = running;
  const port = Number(new URL(running.base).port);
  const executions: { id: string; stopLog: string; state: unknown }[] = [];
  for (let i = 0; i <= MAX_LARGE_BODIES_READ; i++) {
    const { id, stopLog, prepared } = await prepareSealed(agent);
    const started = await agent.start(STATE, id, prepared.body['state']);
    assert.equal(started.status, 200);
    executions.push({ id, stopLog, state: started.body['state'] });
  }
  const last = executions.pop()!;
  // The lane holds an anonymous decode; the agent's stops of the others are read and wait for it, keeping every agent read turn.
  const { held } = await holdLane(holds, agent);
  const stops = executions.map((e) => agent.stop(STATE, e.id, e.state));
  await eventually('the stops to wait for the lane', () => (running!.extension.stats().pools.largeRequestQueueForExecutions === MAX_LARGE_BODIES_READ ? true : undefined));
  // The last one is sent whole; its Request-Timeout passes while it waits for a read turn.
  const body = JSON.stringify({ executionId: last.id, state: last.state });
  assert.equal(await stopWithTimeout(port, body, '0.5', Buffer.byteLength(body)), 503);
  holds.gates.open(GatePoint.LargeRequestDecode);
  assert.equal((await held).status, 200);
  for (const answer of await Promise.all(stops)) assert.equal(answer.status, 200, JSON.stringify(answer.body).slice(0, 300));
  await eventually('the last stop to run', () => (existsSync(last.stopLog) ? true : undefined));
  await eventually('every execution to end', () => (running!.extension.stats().activeExecutions === 0 ? true : undefined));
  for (const e of [...executions, last]) assert.equal(readFileSync(e.stopLog, 'utf8').trim().split('\n').length, 1, e.id);
});

test('a decode whose request is abandoned by the time the idle lane takes it never runs', async () => {
  running = await start({ actions: [fixture('http-state')] });
  const { pools } = running.extension as unknown as { pools: WorkerPools };
  const tasksBefore = running.extension.stats().pools.largeRequestTasks;
  const bytes = new TextEncoder().encode(JSON.stringify({ executionId: randomUUID(), state: { padding: 'h'.repeat(2 * LARGE_JSON_BYTES) } }));
  await assert.rejects(pools.decode({ kind: 'stop', bytes }, () => true), (error: RuntimeError) => error.httpStatus === 503 && error.message === 'Request abandoned');
  assert.equal(running.extension.stats().pools.largeRequestTasks, tasksBefore);
  // The lane's turn was given back: the next decode runs.
  const decoded = await pools.decode({ kind: 'stop', bytes: new TextEncoder().encode(JSON.stringify({ executionId: randomUUID(), state: {} })) }, () => false);
  assert.equal(typeof decoded.executionId, 'string');
});

test('work for executions goes before queued decodes: an extension-initiated stop of a sealed state waits for one decode at most', async () => {
  holds = new Holds();
  running = await start({ actions: [fixture('http-state')] });
  const { agent } = running;
  const { stopLog } = await prepareSealed(agent);
  const { held } = await holdLane(holds, agent);
  const queued = [junkStop(agent), junkStop(agent)];
  await eventually('the decodes to queue', () => (running!.extension.stats().pools.largeRequestQueue === 2 ? true : undefined));
  // The stop of the prepared execution hands its sealed state to the author's stop: lane work.
  const stoppingAll = running.extension.stopAll();
  await eventually('the stop to wait for the lane', () => (running!.extension.stats().pools.largeRequestQueue === 3 ? true : undefined));
  // Let the held decode go and hold the next decode again: the stop must not be behind it.
  holds.gates.open(GatePoint.LargeRequestDecode);
  holds.gates.arm(GatePoint.LargeRequestDecode);
  const stopped = await Promise.race([stoppingAll.then(() => true), sleep(20_000).then(() => false)]);
  assert.ok(stopped, 'the stop ran while the next decode was held: it went before the queued decodes');
  assert.equal(readFileSync(stopLog, 'utf8').trim().split('\n').length, 1, 'the author stop ran once');
  await holds.gates.arrived(GatePoint.LargeRequestDecode);
  holds.gates.open(GatePoint.LargeRequestDecode);
  for (const answer of await Promise.all([held, ...queued])) assert.equal(answer.status, 200);
});

test('a large status counts its heartbeat when it arrives, not when the lane decodes it: a held lane stops no polled execution', async () => {
  holds = new Holds();
  // fixture.behave polls every 100 ms; with a 500 ms minimum its heartbeat expires after 2 s.
  running = await start({ actions: [fixture('http-state'), fixture('behave')], heartbeatMinIntervalMs: 500 });
  const { agent } = running;
  const id = randomUUID();
  const state = { ...(await agent.run('fixture.behave', id, { body: 'sleep' })), padding: 'p'.repeat(2 * LARGE_JSON_BYTES) };
  const { held } = await holdLane(holds, agent);
  // Large polls every 500 ms for 4 s, twice the heartbeat expiry: each waits for the held lane.
  const polls: Promise<Answer>[] = [];
  for (let i = 0; i < 8; i++) {
    polls.push(agent.status('fixture.behave', id, state));
    await sleep(500);
  }
  holds.gates.open(GatePoint.LargeRequestDecode);
  await held;
  for (const poll of await Promise.all(polls)) {
    assert.equal(poll.status, 200);
    assert.equal(poll.body['error'], undefined, `a poll answered ${JSON.stringify(poll.body).slice(0, 200)}`);
  }
  assert.equal(running.extension.stats().watchdog.heartbeatTimeouts, 0);
  assert.equal((await agent.stop('fixture.behave', id, state)).status, 200);
});

test('a multipart request field above the threshold is refused exactly as a small one with the same fault', async () => {
  running = await start({ actions: [LOG_CHECK_MODULE] });
  const { agent } = running;
  const valid = JSON.stringify({ executionId: randomUUID(), config: { logFile: 'file::1', pattern: 'x', maxMatches: 1 }, properties: {} });
  const faults: [string, string][] = [
    ['not JSON', valid.slice(0, -1)],
    ['an array', '[1]'],
    ['null', 'null'],
    ['an executionId that is no UUID', JSON.stringify({ executionId: 'nope', config: {} })],
    ['a byte-order mark before valid JSON', `\uFEFF${valid}`],
    ['a config that is no object', JSON.stringify({ executionId: randomUUID(), config: [1] })],
  ];
  const send = async (field: string): Promise<Answer> => {
    const form = new FormData();
    form.append('request', field);
    form.append('logFile', new Blob(['x\n']), 'app.log');
    return agent.request('POST', `/${LOG_CHECK}/prepare`, form);
  };
  for (const [fault, field] of faults) {
    const small = await send(field);
    const large = await send(`${field}${' '.repeat(2 * LARGE_JSON_BYTES)}`);
    assert.equal(small.status, 400, `${fault}, small: ${JSON.stringify(small.body)}`);
    assert.equal(large.status, small.status, `${fault}: large as small`);
    assert.equal(large.body['title'], small.body['title'], `${fault}: large as small`);
  }
});

test('a handler that waited for the large-request lane gets its whole handler timeout from when it runs: its ctx.signal has not fired', async () => {
  holds = new Holds();
  // 3 s for the lane's thread (nice 10) to take the task and reach the check 100 ms in, on a busy machine.
  running = await start({ actions: [fixture('http-state')], handlerTimeoutMs: 3_000 });
  const { agent } = running;
  const { stopLog } = await prepareSealed(agent, { signalCheckAfterMs: 100 });
  const { held } = await holdLane(holds, agent);
  const stoppingAll = running.extension.stopAll();
  // The stop of the sealed state waits for the lane longer than the handler timeout.
  await sleep(3_500);
  holds.gates.open(GatePoint.LargeRequestDecode);
  await Promise.all([held, stoppingAll]);
  assert.match(readFileSync(stopLog, 'utf8'), / signal-ok\n$/);
  assert.equal(running.extension.stats().stops.succeeded, 1);
});

test('the agent\'s large request for an execution this process holds has read turns of its own and goes before anonymous large bodies: each of its lane tasks waits for one decode at most', async () => {
  holds = new Holds();
  running = await start({ actions: [fixture('http-state')] });
  const { agent } = running;
  const { gates } = holds;
  const lane = (): PoolStats => running!.extension.stats().pools;
  const { id, stopLog, prepared } = await prepareSealed(agent);
  const started = await agent.start(STATE, id, prepared.body['state']);
  assert.equal(started.status, 200);
  // Anonymous bodies whose handlers run on the handler lane: the agent's stop is the only work
  // for executions the large-request lane sees.
  const { held } = await holdLane(holds, agent, paddedStop);
  const anonymous = Array.from({ length: MAX_LARGE_BODIES_READ + 4 }, () => paddedStop(agent));
  await eventually('every anonymous turn to be taken', () => (lane().largeRequestQueue === MAX_LARGE_BODIES_READ - 1 ? true : undefined));
  let stopped: Answer | undefined;
  const stopping = agent.stop(STATE, id, started.body['state']).then((answer) => (stopped = answer));
  await eventually('the agent\'s body to be read on a turn of its own and wait as work for an execution', () => (lane().largeRequestQueueForExecutions === 1 ? true : undefined));

  // The held decode goes; the lane takes the agent's decode before the anonymous ones queued earlier.
  gates.open(GatePoint.LargeRequestDecode);
  gates.arm(GatePoint.LargeRequestDecode);
  await gates.arrived(GatePoint.LargeRequestDecode);
  assert.equal(lane().largeRequestQueueForExecutions, 0, 'the decode on the lane is the agent\'s');
  assert.ok(lane().largeRequestQueue >= MAX_LARGE_BODIES_READ - 1, 'the anonymous decodes still wait');

  // The agent's decode goes. Its handler joins the queue when the lifecycle gets to it: before the
  // lane takes the next anonymous decode, or while that one is held — then it goes right after it.
  gates.open(GatePoint.LargeRequestDecode);
  gates.arm(GatePoint.LargeRequestDecode);
  await eventually('the agent\'s stop to be answered, or its handler to wait behind one held decode', () =>
    stopped !== undefined || (gates.arrivals(GatePoint.LargeRequestDecode) === 1 && lane().largeRequestQueueForExecutions === 1) ? true : undefined,
  );
  if (stopped === undefined) {
    gates.open(GatePoint.LargeRequestDecode);
    gates.arm(GatePoint.LargeRequestDecode);
  }
  // Nothing opens the gate again until the stop is answered: it waited for no second anonymous decode.
  await eventually('the agent\'s stop to be answered while the next anonymous decode is held', () => stopped, 20_000);
  assert.equal(stopped!.status, 200, JSON.stringify(stopped!.body));
  assert.equal(readFileSync(stopLog, 'utf8').trim().split('\n').length, 1);
  await stopping;
  await gates.arrived(GatePoint.LargeRequestDecode);
  gates.open(GatePoint.LargeRequestDecode);
  for (const answer of await Promise.all([held, ...anonymous])) assert.equal(answer.status, 200, JSON.stringify(answer.body));
});

test('a large body answered before it was read (its Request-Timeout passed) takes no read turn: more of them than there are turns leave the next large body read', { timeout: 60_000 }, async () => {
  running = await start({ actions: [fixture('http-state')] });
  const { agent } = running;
  const port = Number(new URL(running.base).port);
  const body = JSON.stringify({ executionId: randomUUID(), state: { padding: 't'.repeat(2 * LARGE_JSON_BYTES) } });
  for (let i = 0; i < MAX_LARGE_BODIES_READ + 2; i++) {
    // Headers first; the body only once the 503 for the timeout has come.
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: `/${STATE}/status`,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Request-Timeout': '0.001' },
      });
      req.on('response', (res) => {
        assert.equal(res.statusCode, 503);
        res.resume();
        req.write(body, () => setTimeout(resolve, 50));
      });
      req.on('error', () => resolve());
      req.flushHeaders();
      setTimeout(() => reject(new Error('no timeout answer')), 10_000).unref();
    });
  }
  const answer = await Promise.race([junkStop(agent), sleep(20_000).then(() => undefined)]);
  assert.ok(answer !== undefined, 'a large body is still read and answered');
  assert.equal(answer.status, 200);
});
