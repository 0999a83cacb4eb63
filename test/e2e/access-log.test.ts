/**
 * The access log of a deployed extension: a child process logging JSON to stderr, read line by
 * line. One line per request with its fields; levels by route and status; credentials, request
 * bodies and error details never at info; a request the client abandons is logged once.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { eventually, fixture, sleep, spawnExtension, type Answer, type Child } from '../support/harness.js';

const ACTION = 'fixture.behave';
const SECRET = 'Bearer s3cret-7f1c';
const BODY_MARKER = 'body-marker-51d9';

interface Line {
  level: string;
  message: string;
  requestId?: string;
  method?: string;
  path?: string;
  status?: number;
  durationMs?: number;
  reqBytes?: number;
  resBytes?: number;
  aborted?: boolean;
  body?: unknown;
}

function lines(child: Child): Line[] {
  return child.logs.flatMap((raw) => {
    try {
      return [JSON.parse(raw) as Line];
    } catch {
      return [];
    }
  });
}

const accessLines = (child: Child, requestId: string): Line[] => lines(child).filter((line) => line.requestId === requestId && line.message.startsWith('request') && line.message !== 'request body');

/** The access lines of `answer`, once written; waits a little longer to catch a duplicate. */
async function accessLinesOf(child: Child, answer: Answer): Promise<Line[]> {
  const requestId = answer.headers.get('request-id')!;
  await eventually(`the access line of ${requestId}`, () => (accessLines(child, requestId).length > 0 ? true : undefined), 5000);
  await sleep(100);
  return accessLines(child, requestId);
}

async function stopChild(child: Child): Promise<void> {
  child.process.kill('SIGTERM');
  await child.exited;
}

/** prepare (with a secret header and a body marker), start, two status polls, stop, GET /, a 404, a failing stop. */
async function exercise(child: Child): Promise<Record<string, Answer>> {
  const id = randomUUID();
  const headers = { authorization: SECRET, cookie: `session=${SECRET}` };
  const prepare = await child.agent.prepare(ACTION, id, { body: 'sleep', marker: BODY_MARKER }, headers);
  const state = prepare.body['state'];
  const start = await child.agent.start(ACTION, id, state, headers);
  const status = await child.agent.status(ACTION, id, state, headers);
  await child.agent.status(ACTION, id, state, headers);
  const stop = await child.agent.stop(ACTION, id, state, headers);
  const index = await child.agent.request('GET', '/?token=query-secret-9', undefined, headers);
  const notFound = await child.agent.request('GET', `/nothing/here`, undefined, headers);
  const failing = randomUUID();
  const failingState = (await child.agent.prepare(ACTION, failing, { stop: 'throw' })).body['state'];
  await child.agent.start(ACTION, failing, failingState);
  const failedStop = await child.agent.stop(ACTION, failing, failingState, headers);
  assert.equal(failedStop.status, 500);
  return { prepare, start, status, stop, index, notFound, failedStop };
}

describe('access log at info', () => {
  let child: Child;
  let answers: Record<string, Answer>;
  before(async () => {
    child = await spawnExtension([fixture('behave')], { STEADYBIT_LOG_LEVEL: 'info' });
    answers = await exercise(child);
  });
  after(() => stopChild(child));

  test('lifecycle calls are logged once at info with every field', async () => {
    for (const [name, path] of [['prepare', `/${ACTION}/prepare`], ['start', `/${ACTION}/start`], ['stop', `/${ACTION}/stop`]] as const) {
      const answer = answers[name]!;
      const found = await accessLinesOf(child, answer);
      assert.equal(found.length, 1, `${name}: exactly one access line`);
      const line = found[0]!;
      assert.equal(line.level, 'info', name);
      assert.equal(line.message, 'request');
      assert.equal(line.method, 'POST');
      assert.equal(line.path, path);
      assert.equal(line.status, 200);
      assert.ok(typeof line.durationMs === 'number' && line.durationMs >= 0 && line.durationMs < 10_000, `${name} durationMs ${line.durationMs}`);
      assert.ok(typeof line.reqBytes === 'number' && line.reqBytes > 0, `${name} reqBytes ${line.reqBytes}`);
      assert.ok(typeof line.resBytes === 'number' && line.resBytes > 0, `${name} resBytes ${line.resBytes}`);
      assert.equal(line.aborted, undefined);
    }
  });

  test('request and response sizes are the body bytes on the wire', async () => {
    const id = randomUUID();
    const body = JSON.stringify({ executionId: id, config: { body: 'none' }, properties: {} });
    const response = await fetch(`${child.base}/${ACTION}/prepare`, { method: 'POST', body, headers: { 'content-type': 'application/json', 'accept-encoding': 'identity' } });
    const text = await response.text();
    const [line] = await accessLinesOf(child, { status: response.status, body: {}, headers: response.headers });
    assert.equal(line?.reqBytes, Buffer.byteLength(body));
    assert.equal(line?.resBytes, Buffer.byteLength(text));
  });

  test('status polls and successful GETs stay below info', async () => {
    await accessLinesOf(child, answers['stop']!); // written after both polls and the index
    assert.equal(accessLines(child, answers['status']!.headers.get('request-id')!).length, 0);
    assert.equal(accessLines(child, answers['index']!.headers.get('request-id')!).length, 0);
  });

  test('a 404 is logged at info, a 500 at warn', async () => {
    const [notFound] = await accessLinesOf(child, answers['notFound']!);
    assert.equal(notFound?.level, 'info');
    assert.equal(notFound?.status, 404);
    assert.equal(notFound?.path, '/nothing/here');
    const [failed] = await accessLinesOf(child, answers['failedStop']!);
    assert.equal(failed?.level, 'warn');
    assert.equal(failed?.status, 500);
  });

  test('no credential, request body, query string or error response body is logged at info', async () => {
    await accessLinesOf(child, answers['failedStop']!);
    const all = child.logs.join('\n');
    assert.doesNotMatch(all, /s3cret-7f1c/, 'the Authorization and Cookie values');
    assert.doesNotMatch(all, new RegExp(BODY_MARKER), 'the request body');
    assert.doesNotMatch(all, /query-secret-9/, 'the query string');
    // The author's error is logged once, on purpose, on its own failure line (README "Failures");
    // no other line — the access log included — copies the 500's response body.
    const failure = (line: string): boolean => line.includes('"message":"action handler failed"');
    // (each retry of that stop, one every second or so, fails and is logged again)
    assert.ok(child.logs.some((line) => failure(line) && line.includes('stop failed on purpose')), 'the failure line of the stop');
    assert.doesNotMatch(child.logs.filter((line) => !failure(line)).join('\n'), /stop failed on purpose/, "the failing stop's error detail (it is in the 500 response body)");
    assert.equal(lines(child).filter((line) => line.message === 'request body').length, 0);
  });

  test('a request the client abandons is logged once, at warn', async () => {
    const id = randomUUID();
    const abort = new AbortController();
    const request = fetch(`${child.base}/${ACTION}/prepare`, {
      method: 'POST',
      body: JSON.stringify({ executionId: id, config: { prepare: 'slow', slowMs: 800 }, properties: {} }),
      headers: { 'content-type': 'application/json' },
      signal: abort.signal,
    });
    await sleep(200);
    abort.abort();
    await assert.rejects(request);
    const abandoned = (): Line[] => lines(child).filter((line) => line.message === 'request abandoned by the client' && line.path === `/${ACTION}/prepare`);
    await eventually('the abandoned request line', () => (abandoned().length > 0 ? true : undefined), 20_000);
    await sleep(1200); // the handler finishes meanwhile and its answer goes nowhere
    const found = abandoned();
    assert.equal(found.length, 1);
    assert.equal(found[0]?.level, 'warn');
    assert.equal(found[0]?.aborted, true);
    assert.equal(found[0]?.status, 499);
    // Timed from when the child took the request to when it saw the client leave (how much of the
    // 200 ms that is depends on how busy the machine is).
    assert.ok((found[0]?.durationMs ?? 0) > 0);
    const requestId = found[0]?.requestId;
    assert.ok(typeof requestId === 'string' && requestId.length > 0);
    assert.equal(accessLines(child, requestId).length, 1, 'no second line when the late answer is dropped');
  });
});

describe('access log at debug', () => {
  let child: Child;
  let answers: Record<string, Answer>;
  before(async () => {
    child = await spawnExtension([fixture('behave')], { STEADYBIT_LOG_LEVEL: 'debug' });
    answers = await exercise(child);
  });
  after(() => stopChild(child));

  test('every request is logged once; polls and GETs at debug', async () => {
    for (const [name, answer] of Object.entries(answers)) assert.equal((await accessLinesOf(child, answer)).length, 1, name);
    assert.equal((await accessLinesOf(child, answers['status']!))[0]?.level, 'debug');
    const [index] = await accessLinesOf(child, answers['index']!);
    assert.equal(index?.level, 'debug');
    assert.equal(index?.path, '/', 'the path without its query');
  });

  test('a compressed answer is counted in compressed bytes', async () => {
    // A status answer echoes the state: a large one is compressed (threshold 1 KiB).
    const state = { config: { status: 'ok' }, polls: 0, marks: [], padding: 'p'.repeat(4000) };
    const body = JSON.stringify({ executionId: randomUUID(), state });
    const { requestId, wireBytes } = await new Promise<{ requestId: string; wireBytes: number }>((resolve, reject) => {
      // node:http, not fetch: fetch would decompress and hide the size on the wire.
      const req = request(`${child.base}/${ACTION}/status`, { method: 'POST', headers: { 'accept-encoding': 'gzip', 'content-type': 'application/json' } }, (response) => {
        let bytes = 0;
        response.on('data', (chunk: Buffer) => (bytes += chunk.length));
        response.on('end', () =>
          response.headers['content-encoding'] === 'gzip'
            ? resolve({ requestId: String(response.headers['request-id']), wireBytes: bytes })
            : reject(new Error(`not compressed: ${response.statusCode} ${bytes} bytes`)),
        );
      });
      req.on('error', reject);
      req.end(body);
    });
    assert.ok(wireBytes < 1000, `gzip shrinks the padding (${wireBytes} bytes)`);
    await eventually('the access line', () => (accessLines(child, requestId).length > 0 ? true : undefined), 5000);
    assert.equal(accessLines(child, requestId)[0]?.resBytes, wireBytes);
  });

  test('request bodies appear only at debug, in their own line; credentials never', async () => {
    await accessLinesOf(child, answers['failedStop']!);
    const bodies = lines(child).filter((line) => line.message === 'request body');
    assert.ok(bodies.length > 0);
    for (const line of bodies) assert.equal(line.level, 'debug');
    const prepareBody = bodies.find((line) => line.requestId === answers['prepare']!.headers.get('request-id'));
    assert.match(JSON.stringify(prepareBody?.body), new RegExp(BODY_MARKER));
    for (const line of lines(child).filter((l) => JSON.stringify(l).includes(BODY_MARKER))) assert.equal(line.level, 'debug', `${line.message} carries the body`);
    assert.doesNotMatch(child.logs.join('\n'), /s3cret-7f1c/);
    assert.doesNotMatch(child.logs.join('\n'), /query-secret-9/);
  });
});
