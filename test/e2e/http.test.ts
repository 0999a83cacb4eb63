/**
 * The HTTP surface of an extension against the reference (sdk-behaviour.md §1.4-1.9, §2.1) and
 * DESIGN.md invariant 6: bad input on every endpoint, the exthttp envelope (Request-Id, Date, JSON,
 * ETag/304, gzip, Request-Timeout), describe defaults, error-title parity, duplicate and concurrent
 * requests. Real HTTP on 127.0.0.1, real worker threads.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import * as os from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { deflateSync, gunzipSync, gzipSync } from 'node:zlib';
import { eventually, fixture, start, tempDir, type Answer, type Running } from '../support/harness.js';

const BEHAVE = 'fixture.behave';
const QUERY = 'fixture.http.query';
const INSTANT = 'fixture.http.instant';
const EXTERNAL = 'fixture.http.external';
const STOPPABLE = 'fixture.http.stoppable';
const ALL_ACTIONS = [BEHAVE, QUERY, INSTANT, EXTERNAL, STOPPABLE];

let running: Running;
let logs: { path: string; remove(): void };

before(async () => {
  logs = tempDir('actionkit-http-logs-');
  running = await start({
    actions: [fixture('behave'), fixture('http-query')],
    maxBodyBytes: 1024,
    // Long heartbeat expiry: nothing here polls status regularly, and no test wants a heartbeat stop.
    heartbeatMinIntervalMs: 10_000,
  });
});
after(async () => {
  await running.close();
  logs.remove();
});

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/** A raw answer from node:http (no transparent decompression, unlike fetch). */
interface Raw {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A request with a body is sent as JSON unless `headers` say otherwise (see {@link post} for exactly the headers given). */
function raw(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Raw> {
  return exactly(method, path, body === undefined ? headers : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers }, body);
}

/** A request with exactly these headers. */
function exactly(method: string, path: string, headers: Record<string, string>, body?: string): Promise<Raw> {
  const url = new URL(path, running.base);
  return new Promise<Raw>((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, path: url.pathname, method, headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function title(answer: Answer): string {
  const error = answer.body as { title?: unknown };
  assert.equal(typeof error.title, 'string', `no error title in ${JSON.stringify(answer.body)}`);
  return error.title as string;
}

function errorOf(answer: Answer): Record<string, unknown> {
  const error = answer.body['error'];
  assert.ok(error !== undefined && error !== null && typeof error === 'object', `expected result.error in ${JSON.stringify(answer.body)}`);
  return error as Record<string, unknown>;
}

/** Behave config with the given overrides. */
function behave(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { duration: 1000, ...overrides };
}

/** A state shaped like the one behave's prepare returns (for stateless calls). */
function behaveState(config: Record<string, unknown>): Record<string, unknown> {
  return {
    config: { duration: 1000, prepare: 'ok', start: 'ok', status: 'ok', stop: 'ok', body: 'none', slowMs: 300, completeAfterPolls: 0, ...config },
    polls: 0,
    marks: [],
  };
}

function readLines(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter((line) => line !== '');
  } catch {
    return [];
  }
}

async function noActiveExecutions(): Promise<void> {
  await eventually('no active executions', () => (running.extension.stats().activeExecutions === 0 ? true : undefined), 10_000);
}

const UNAME = /^OS information: sysname=Linux; release=[^;]+; version=[^;]+; machine=\S+$/;

// ---------------------------------------------------------------------------------------------
// bad input on every endpoint (invariant 6)
// ---------------------------------------------------------------------------------------------

interface Endpoint {
  name: string;
  path: string;
  valid(executionId: string): Record<string, unknown>;
  /** Bodies with a wrong or missing field, and the field the title must name. */
  wrongTypes(executionId: string): Array<{ what: string; body: Record<string, unknown>; field: string }>;
}

const ENDPOINTS: Endpoint[] = [
  {
    name: 'prepare',
    path: `/${BEHAVE}/prepare`,
    valid: (executionId) => ({ executionId, config: behave(), properties: {} }),
    wrongTypes: (executionId) => [
      { what: 'config as array', body: { executionId, config: [1, 2], properties: {} }, field: 'config' },
      { what: 'config as string', body: { executionId, config: 'x', properties: {} }, field: 'config' },
      { what: 'properties as string', body: { executionId, config: behave(), properties: 'x' }, field: 'properties' },
      { what: 'target as string', body: { executionId, config: behave(), target: 'x' }, field: 'target' },
      { what: 'a CIDR as number', body: { executionId, config: behave(), executionContext: { restrictedEndpoints: [{ cidr: 5 }] } }, field: 'cidr' },
    ],
  },
  ...(['start', 'status', 'stop'] as const).map(
    (name): Endpoint => ({
      name,
      path: `/${BEHAVE}/${name}`,
      valid: (executionId) => ({ executionId, state: behaveState({}) }),
      wrongTypes: (executionId) => [
        { what: 'state as string', body: { executionId, state: 'x' }, field: 'state' },
        { what: 'state as array', body: { executionId, state: [] }, field: 'state' },
        { what: 'state as number', body: { executionId, state: 1 }, field: 'state' },
      ],
    }),
  ),
  {
    name: 'query',
    path: `/${QUERY}/query`,
    valid: (executionId) => ({ executionId, timestamp: new Date().toISOString(), config: {} }),
    wrongTypes: (executionId) => [
      { what: 'config as array', body: { executionId, timestamp: new Date().toISOString(), config: [] }, field: 'config' },
      { what: 'timestamp not a date', body: { executionId, timestamp: 'yesterday', config: {} }, field: 'timestamp' },
      { what: 'timestamp as number', body: { executionId, timestamp: 1_700_000_000, config: {} }, field: 'timestamp' },
      { what: 'target as array', body: { executionId, timestamp: new Date().toISOString(), config: {}, target: [] }, field: 'target' },
    ],
  },
];

/** One execution id used by every bad request; it must still be free afterwards. */
const SHARED_ID = randomUUID();

describe('bad input on every endpoint', () => {
  for (const endpoint of ENDPOINTS) {
    describe(endpoint.name, () => {
      test('malformed JSON → 400 "Failed to parse request body."', async () => {
        for (const body of ['{"executionId": ', '{executionId: 1}', `{"executionId":"${SHARED_ID}",}`, '\u0000']) {
          const answer = await running.agent.request('POST', endpoint.path, body, { 'content-type': 'application/json' });
          assert.equal(answer.status, 400, `${JSON.stringify(body)}: ${JSON.stringify(answer.body)}`);
          assert.equal(title(answer), 'Failed to parse request body.');
        }
      });

      test('JSON that is not an object → 400 "Invalid request body: …"', async () => {
        for (const body of ['[]', `[{"executionId":"${SHARED_ID}"}]`, '42', 'null', '"a string"', 'true']) {
          const answer = await running.agent.request('POST', endpoint.path, body, { 'content-type': 'application/json' });
          assert.equal(answer.status, 400, `${body}: ${JSON.stringify(answer.body)}`);
          assert.match(title(answer), /^Invalid request body: /, body);
        }
      });

      test('empty body → 400, with a JSON content type or none', async () => {
        const answer = await running.agent.request('POST', endpoint.path, '', { 'content-type': 'application/json' });
        assert.equal(answer.status, 400, JSON.stringify(answer.body));
        title(answer);
        // fetch labels a string body text/plain; node:http sends no content type at all.
        const bare = await raw('POST', endpoint.path, { 'content-length': '0' });
        assert.equal(bare.status, 400, bare.body.toString('utf8'));
        assert.equal(typeof (JSON.parse(bare.body.toString('utf8')) as { title?: unknown }).title, 'string');
      });

      test('missing or malformed executionId → 400 naming executionId', async () => {
        const { executionId: _, ...withoutId } = endpoint.valid(SHARED_ID);
        const bad: unknown[] = ['abc', '../../etc', '../../etc/passwd', `${SHARED_ID}0`, `${SHARED_ID}/../x`, ` ${SHARED_ID}`, `{${SHARED_ID}}`, SHARED_ID.replaceAll('-', ''), '', 42, null, [SHARED_ID], { id: SHARED_ID }];
        const answer = await running.agent.request('POST', endpoint.path, withoutId);
        assert.equal(answer.status, 400, JSON.stringify(answer.body));
        assert.match(title(answer), /executionId/);
        for (const executionId of bad) {
          const wrong = await running.agent.request('POST', endpoint.path, { ...endpoint.valid(SHARED_ID), executionId });
          assert.equal(wrong.status, 400, `${JSON.stringify(executionId)}: ${JSON.stringify(wrong.body)}`);
          assert.match(title(wrong), /executionId/, JSON.stringify(executionId));
        }
      });

      test('wrong types → 400 naming the field', async () => {
        for (const { what, body, field } of endpoint.wrongTypes(SHARED_ID)) {
          const answer = await running.agent.request('POST', endpoint.path, body);
          assert.equal(answer.status, 400, `${what}: ${JSON.stringify(answer.body)}`);
          assert.match(title(answer), new RegExp(`^Invalid request body: .*\\b${field}\\b`), what);
        }
      });

      test('body over maxBodyBytes (64 KiB vs 1 KiB) → 413', async () => {
        const body = JSON.stringify({ ...endpoint.valid(SHARED_ID), padding: 'x'.repeat(64 * 1024) });
        const answer = await running.agent.request('POST', endpoint.path, body, { 'content-type': 'application/json' });
        assert.equal(answer.status, 413, JSON.stringify(answer.body));
        title(answer);
        // Also without a Content-Length (chunked): the limit must hold while streaming.
        const chunked = await new Promise<number>((resolve, reject) => {
          const url = new URL(endpoint.path, running.base);
          const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on('error', reject);
          req.write(body.slice(0, 32 * 1024));
          req.end(body.slice(32 * 1024));
        });
        assert.equal(chunked, 413);
        // A compressed body is limited by its inflated size: 64 KiB gzipped to ~150 bytes.
        const bomb = await new Promise<number>((resolve, reject) => {
          const url = new URL(endpoint.path, running.base);
          const compressed = gzipSync(Buffer.from(body));
          const req = httpRequest(
            { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(compressed.length) } },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          );
          req.on('error', reject);
          req.end(compressed);
        });
        assert.equal(bomb, 413);
      });
    });
  }

  test('unknown action or endpoint path → 404 JSON', async () => {
    const cases: Array<[string, string]> = [
      ['GET', '/nope'],
      ['POST', '/nope/prepare'],
      ['POST', `/${BEHAVE}/prepare/extra`],
      ['POST', `/${BEHAVE}/query`], // behave has no metric query
      ['POST', `/${INSTANT}/status`], // instantaneous: no status
      ['POST', `/${INSTANT}/stop`], // instantaneous: no stop
      ['POST', `/${EXTERNAL}/stop`], // not stoppable
      ['GET', `/${BEHAVE.toUpperCase()}x`],
    ];
    for (const [method, path] of cases) {
      const answer = await running.agent.request(method, path, method === 'POST' ? { executionId: SHARED_ID, state: {} } : undefined);
      assert.equal(answer.status, 404, `${method} ${path}: ${JSON.stringify(answer.body)}`);
      title(answer);
    }
  });

  test('known path, wrong method → 405 with Allow', async () => {
    const cases: Array<[string, string, string]> = [
      ['GET', `/${BEHAVE}/prepare`, 'POST'],
      ['PUT', `/${BEHAVE}/start`, 'POST'],
      ['GET', `/${BEHAVE}/stop`, 'POST'],
      ['DELETE', '/', 'GET'],
      ['POST', '/', 'GET'],
      ['POST', `/${BEHAVE}`, 'GET'],
      ['GET', `/${QUERY}/query`, 'POST'],
    ];
    for (const [method, path, allowed] of cases) {
      const answer = await running.agent.request(method, path);
      assert.equal(answer.status, 405, `${method} ${path}: ${JSON.stringify(answer.body)}`);
      title(answer);
      const allow = answer.headers.get('allow');
      assert.ok(allow !== null, `${method} ${path}: no Allow header`);
      assert.deepEqual(
        allow.split(',').map((m) => m.trim()),
        [allowed],
        `${method} ${path}: Allow ${allow}`,
      );
    }
  });

  test('an empty body is reported as empty (or unparseable), not as a missing field', async () => {
    // The runtime means to answer `Invalid request body: the body is empty` (src/http/app.ts); the
    // reference answers `Failed to parse request body.` (json.Unmarshal of nothing fails).
    for (const endpoint of ENDPOINTS) {
      const answer = await running.agent.request('POST', endpoint.path, '', { 'content-type': 'application/json' });
      assert.equal(answer.status, 400);
      assert.match(title(answer), /empty|^Failed to parse request body\.$/, `${endpoint.name}: ${JSON.stringify(answer.body)}`);
    }
  });

  test('after all of it: nothing leaked, and the extension serves a full lifecycle with the same executionId', async () => {
    assert.equal(running.extension.stats().activeExecutions, 0);
    const stopLog = join(logs.path, 'after-bad-input.log');
    const prepared = await running.agent.prepare(BEHAVE, SHARED_ID, behave({ stopLog }));
    assert.equal(prepared.status, 200, JSON.stringify(prepared.body));
    assert.equal(prepared.body['error'], undefined);
    const started = await running.agent.start(BEHAVE, SHARED_ID, prepared.body['state']);
    assert.equal(started.status, 200);
    assert.equal(started.body['error'], undefined);
    const status = await running.agent.status(BEHAVE, SHARED_ID, started.body['state']);
    assert.equal(status.status, 200);
    assert.equal(status.body['completed'], false);
    assert.equal(running.extension.stats().activeExecutions, 1);
    const stopped = await running.agent.stop(BEHAVE, SHARED_ID, status.body['state']);
    assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
    assert.equal(stopped.body['error'], undefined);
    // The body (none) returns at once; the stop may still reach it first.
    assert.match(readLines(stopLog).join('\n'), new RegExp(`^${SHARED_ID} agent stop (returned|stopped)$`));
    await noActiveExecutions();
  });
});

// ---------------------------------------------------------------------------------------------
// envelope
// ---------------------------------------------------------------------------------------------

describe('envelope', () => {
  test('every answer has a unique Request-Id and a current Date', async () => {
    const id = randomUUID();
    const requests: Array<Promise<Answer>> = [
      running.agent.request('GET', '/'),
      running.agent.request('GET', `/${BEHAVE}`),
      running.agent.request('GET', '/nope'),
      running.agent.request('GET', `/${BEHAVE}/prepare`),
      running.agent.request('POST', `/${BEHAVE}/prepare`, '{', { 'content-type': 'application/json' }),
      running.agent.prepare(BEHAVE, id, behave()),
      running.agent.query(QUERY, id, {}),
      running.agent.query(QUERY, id, { fail: 'throw' }),
    ];
    for (let i = 0; i < 12; i++) requests.push(running.agent.request('GET', '/'));
    const answers = await Promise.all(requests);
    const ids = answers.map((answer) => answer.headers.get('request-id'));
    for (const requestId of ids) assert.ok(requestId !== null && requestId.length > 0);
    assert.equal(new Set(ids).size, ids.length, `Request-Ids not unique: ${ids.join(' ')}`);
    for (const answer of answers) {
      const date = Date.parse(answer.headers.get('date') ?? '');
      assert.ok(Math.abs(date - Date.now()) < 10_000, `Date ${answer.headers.get('date')}`);
      assert.match(answer.headers.get('content-type') ?? '', /^application\/json/);
    }
    // A Request-Id sent by the client is not echoed (the reference generates its own).
    const echoed = await running.agent.request('GET', '/', undefined, { 'request-id': 'client-chosen' });
    assert.notEqual(echoed.headers.get('request-id'), 'client-chosen');
    await running.agent.stop(BEHAVE, id, answers[5]!.body['state']);
  });

  test('GET / lists every action as GET /<id>, with an ETag; If-None-Match → 304 without body', async () => {
    const index = await running.agent.request('GET', '/');
    assert.equal(index.status, 200);
    const actions = index.body['actions'] as Array<{ method: string; path: string }>;
    assert.deepEqual(
      [...actions].sort((a, b) => a.path.localeCompare(b.path)),
      [...ALL_ACTIONS].sort().map((id) => ({ method: 'GET', path: `/${id}` })),
    );
    const etag = index.headers.get('etag');
    assert.ok(etag !== null && etag.length > 0, 'no ETag');

    const again = await running.agent.request('GET', '/');
    assert.equal(again.headers.get('etag'), etag, 'ETag must be stable while nothing is registered');

    const notModified = await raw('GET', '/', { 'if-none-match': etag });
    assert.equal(notModified.status, 304);
    assert.equal(notModified.body.length, 0);
    assert.ok(notModified.headers['request-id'] !== undefined, '304 without Request-Id');
    assert.ok(notModified.headers['date'] !== undefined, '304 without Date');
    // Through the validating agent as well.
    assert.equal((await running.agent.request('GET', '/', undefined, { 'if-none-match': etag })).status, 304);

    for (const other of ['"something-else"', 'W/"x-1"', '']) {
      const changed = await running.agent.request('GET', '/', undefined, other === '' ? {} : { 'if-none-match': other });
      assert.equal(changed.status, 200, `If-None-Match ${other}`);
      assert.ok(Array.isArray(changed.body['actions']));
    }
  });

  test('request bodies: plain UTF-8 (with a byte-order mark, or without a content type), gzip and deflate bodies all parse; another charset is 415; a bad one is 400', async () => {
    const body = JSON.stringify({ executionId: randomUUID(), timestamp: new Date().toISOString(), config: { count: 2 } });
    const send = (headers: Record<string, string>, payload: Buffer): Promise<Raw> => {
      const url = new URL(`/${QUERY}/query`, running.base);
      return new Promise<Raw>((resolve, reject) => {
        const req = httpRequest(
          { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-length': String(payload.length), ...headers } },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (chunk: Buffer) => chunks.push(chunk));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
          },
        );
        req.on('error', reject);
        req.end(payload);
      });
    };
    const metricsOf = (answer: Raw): number => (JSON.parse(answer.body.toString('utf8')) as { metrics: unknown[] }).metrics.length;
    const utf8 = Buffer.from(body);
    const withBom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), utf8]);
    for (const [headers, payload] of [
      [{ 'content-type': 'application/json' }, utf8],
      [{ 'content-type': 'application/json; charset=UTF-8' }, withBom],
      [{}, utf8],
      [{ 'content-type': 'application/json', 'content-encoding': 'identity' }, utf8],
      [{ 'content-type': 'application/json', 'content-encoding': 'gzip' }, gzipSync(utf8)],
      [{ 'content-type': 'application/json', 'content-encoding': 'deflate' }, deflateSync(utf8)],
    ] as const) {
      const answer = await send(headers, payload);
      assert.equal(answer.status, 200, `${JSON.stringify(headers)}: ${answer.body.toString('utf8')}`);
      assert.equal(metricsOf(answer), 2);
    }
    const latin1 = await send({ 'content-type': 'application/json; charset=latin1' }, utf8);
    assert.equal(latin1.status, 415);
    const broken = await send({ 'content-type': 'application/json' }, Buffer.from('{"executionId": '));
    assert.equal(broken.status, 400);
    assert.equal((JSON.parse(broken.body.toString('utf8')) as { title: string }).title, 'Failed to parse request body.');
    const brokenGzip = await send({ 'content-type': 'application/json', 'content-encoding': 'gzip' }, gzipSync('{"executionId": '));
    assert.equal(brokenGzip.status, 400);
  });

  test('answers above 1 KiB are gzip-encoded when the client accepts gzip, small ones are not', async () => {
    const id = randomUUID();
    const query = (count: number): string => JSON.stringify({ executionId: id, timestamp: new Date().toISOString(), config: { count } });
    const big = await raw('POST', `/${QUERY}/query`, { 'accept-encoding': 'gzip' }, query(40));
    assert.equal(big.status, 200);
    assert.equal(big.headers['content-encoding'], 'gzip');
    assert.match(String(big.headers['vary']), /accept-encoding/i);
    assert.match(String(big.headers['content-type']), /^application\/json/);
    const decoded = JSON.parse(gunzipSync(big.body).toString('utf8')) as { metrics: unknown[] };
    assert.equal(decoded.metrics.length, 40);
    assert.ok(gunzipSync(big.body).length > 1024);

    const small = await raw('POST', `/${QUERY}/query`, { 'accept-encoding': 'gzip' }, query(1));
    assert.equal(small.status, 200);
    assert.ok(small.body.length < 1024);
    assert.equal(small.headers['content-encoding'], undefined);
    assert.equal((JSON.parse(small.body.toString('utf8')) as { metrics: unknown[] }).metrics.length, 1);

    const identity = await raw('POST', `/${QUERY}/query`, {}, query(40));
    assert.equal(identity.headers['content-encoding'], undefined);
    assert.equal((JSON.parse(identity.body.toString('utf8')) as { metrics: unknown[] }).metrics.length, 40);
  });

  for (const header of ['Request-Timeout', 'X-Request-Timeout']) {
    test(`${header}: 0.2 on a slow status → 503 "Timeout" after ~0.2 s`, async () => {
      const id = randomUUID();
      const prepared = await running.agent.prepare(BEHAVE, id, behave({ status: 'slow', slowMs: 1500 }));
      const started = await running.agent.start(BEHAVE, id, prepared.body['state']);
      assert.equal(started.body['error'], undefined);
      const t0 = performance.now();
      const answer = await running.agent.status(BEHAVE, id, started.body['state'], { [header]: '0.2' });
      const elapsed = performance.now() - t0;
      assert.equal(answer.status, 503, JSON.stringify(answer.body));
      assert.equal(title(answer), 'Timeout');
      // Not before the timeout; and before the slow handler (1.5 s) had answered — how much
      // before depends on the machine's load, so that is the only upper bound.
      assert.ok(elapsed >= 180 && elapsed < 1500, `answered after ${elapsed.toFixed(0)} ms`);
      // The execution is intact: stop waits for the slow status, then succeeds.
      const stopped = await running.agent.stop(BEHAVE, id, started.body['state']);
      assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
      assert.equal(stopped.body['error'], undefined);
    });
  }

  test('invalid timeout values (abc, -1, 0, empty) are ignored', async () => {
    const values: Array<[string, string]> = [
      ['Request-Timeout', 'abc'],
      ['Request-Timeout', '-1'],
      ['Request-Timeout', '0'],
      ['X-Request-Timeout', 'abc'],
      ['X-Request-Timeout', '-0.5'],
    ];
    await Promise.all(
      values.map(async ([header, value]) => {
        const id = randomUUID();
        const state = behaveState({ status: 'slow', slowMs: 500 });
        // Unknown executionId: behave's status handler runs statelessly with the sent state.
        const t0 = performance.now();
        const answer = await running.agent.status(BEHAVE, id, state, { [header]: value });
        const elapsed = performance.now() - t0;
        assert.equal(answer.status, 200, `${header}: ${value} → ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body['error'], undefined, `${header}: ${value}`);
        assert.ok(elapsed >= 450, `${header}: ${value} answered after ${elapsed.toFixed(0)} ms`);
      }),
    );
  });
});

describe('Request-Timeout parsing like the reference (Go strconv.ParseFloat, Header.Get)', () => {
  test('values with trailing garbage (0.2s, 0.2abc, 0.2 s) are invalid and ignored', async () => {
    await Promise.all(
      ['0.2s', '0.2abc', '0.2 s'].map(async (value) => {
        const t0 = performance.now();
        const answer = await running.agent.status(BEHAVE, randomUUID(), behaveState({ status: 'slow', slowMs: 500 }), { 'Request-Timeout': value });
        const elapsed = performance.now() - t0;
        assert.equal(answer.status, 200, `Request-Timeout: ${value} → ${answer.status} ${JSON.stringify(answer.body)} after ${elapsed.toFixed(0)} ms`);
      }),
    );
  });

  test('an empty Request-Timeout falls back to X-Request-Timeout', async () => {
    const t0 = performance.now();
    const answer = await running.agent.status(BEHAVE, randomUUID(), behaveState({ status: 'slow', slowMs: 1000 }), { 'Request-Timeout': '', 'X-Request-Timeout': '0.2' });
    const elapsed = performance.now() - t0;
    assert.equal(answer.status, 503, `${answer.status} ${JSON.stringify(answer.body).slice(0, 200)} after ${elapsed.toFixed(0)} ms`);
    // Before the slow handler (1 s) had answered: the timeout of X-Request-Timeout cut it short.
    assert.ok(elapsed < 1000, `answered after ${elapsed.toFixed(0)} ms`);
  });
});

// ---------------------------------------------------------------------------------------------
// describe
// ---------------------------------------------------------------------------------------------

describe('describe', () => {
  async function describeAction(id: string): Promise<Record<string, unknown>> {
    const answer = await running.agent.request('GET', `/${id}`);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body['id'], id);
    return answer.body;
  }
  const endpoint = (id: string, name: string): { path: string; method: string } => ({ path: `/${id}/${name}`, method: 'POST' });

  test('stoppable action with status handler: defaults filled in, author callInterval kept', async () => {
    const d = await describeAction(BEHAVE);
    assert.deepEqual(d['prepare'], endpoint(BEHAVE, 'prepare'));
    assert.deepEqual(d['start'], endpoint(BEHAVE, 'start'));
    assert.deepEqual(d['stop'], endpoint(BEHAVE, 'stop'));
    assert.deepEqual(d['status'], { ...endpoint(BEHAVE, 'status'), callInterval: '100ms' });
    assert.equal(d['metrics'], undefined);
  });

  test('status handler without callInterval → 5s; not stoppable → no stop', async () => {
    const d = await describeAction(EXTERNAL);
    assert.deepEqual(d['status'], { ...endpoint(EXTERNAL, 'status'), callInterval: '5s' });
    assert.equal(d['stop'], undefined);
    assert.deepEqual(d['prepare'], endpoint(EXTERNAL, 'prepare'));
    assert.deepEqual(d['start'], endpoint(EXTERNAL, 'start'));
  });

  test('stoppable without status handler → synthetic status every 15s', async () => {
    const d = await describeAction(STOPPABLE);
    assert.deepEqual(d['status'], { ...endpoint(STOPPABLE, 'status'), callInterval: '15s' });
    assert.deepEqual(d['stop'], endpoint(STOPPABLE, 'stop'));
  });

  test('instantaneous → neither status nor stop; metric query endpoint defaulted without callInterval', async () => {
    const instant = await describeAction(INSTANT);
    assert.equal(instant['status'], undefined);
    assert.equal(instant['stop'], undefined);
    const query = await describeAction(QUERY);
    assert.equal(query['status'], undefined);
    assert.equal(query['stop'], undefined);
    assert.deepEqual(query['metrics'], { query: { endpoint: endpoint(QUERY, 'query'), parameters: [] } });
  });
});

// ---------------------------------------------------------------------------------------------
// parity of results and error titles (reference §1.5, §1.6, §1.9)
// ---------------------------------------------------------------------------------------------

describe('parity', () => {
  test('prepare always ends its messages with the uname message, also when prepare throws', async () => {
    const okId = randomUUID();
    const ok = await running.agent.prepare(BEHAVE, okId, behave());
    const okMessages = ok.body['messages'] as Array<{ level?: string; message: string }>;
    assert.equal(okMessages.length, 2);
    assert.equal(okMessages[0]!.message, 'prepared');
    assert.deepEqual(okMessages.at(-1), {
      level: 'info',
      message: `OS information: sysname=Linux; release=${os.release()}; version=${os.version()}; machine=${os.machine()}`,
    });
    assert.match(okMessages.at(-1)!.message, UNAME);
    assert.equal((await running.agent.stop(BEHAVE, okId, ok.body['state'])).status, 200);

    for (const [action, config] of [
      [BEHAVE, behave({ prepare: 'throw' })],
      [BEHAVE, behave({ prepare: 'extension-error' })],
      [INSTANT, { prepare: 'throw' }],
      [INSTANT, {}],
    ] as const) {
      const answer = await running.agent.prepare(action, randomUUID(), config);
      assert.equal(answer.status, 200);
      const messages = answer.body['messages'] as Array<{ level?: string; message: string }>;
      assert.ok(Array.isArray(messages) && messages.length >= 1, JSON.stringify(answer.body));
      assert.match(messages.at(-1)!.message, UNAME, `${action} ${JSON.stringify(config)}`);
      assert.equal(messages.at(-1)!.level, 'info');
      assert.ok(answer.body['state'] !== undefined, 'prepare result without state');
    }
  });

  test('generic errors of prepare/start/status → HTTP 200 with the reference titles', async () => {
    const prepareFails = await running.agent.prepare(BEHAVE, randomUUID(), behave({ prepare: 'throw' }));
    assert.equal(prepareFails.status, 200);
    assert.deepEqual(errorOf(prepareFails), { title: 'Failed to prepare.', detail: 'prepare failed on purpose' });
    assert.deepEqual(prepareFails.body['state'], {});

    const id = randomUUID();
    const prepared = await running.agent.prepare(BEHAVE, id, behave({ start: 'throw' }));
    const startFails = await running.agent.start(BEHAVE, id, prepared.body['state']);
    assert.equal(startFails.status, 200);
    assert.deepEqual(errorOf(startFails), { title: 'Failed to start action.', detail: 'start failed on purpose' });
    // The agent calls stop after a failed start.
    const stopped = await running.agent.stop(BEHAVE, id, startFails.body['state']);
    assert.equal(stopped.status, 200, JSON.stringify(stopped.body));

    const id2 = randomUUID();
    const state2 = await running.agent.run(BEHAVE, id2, behave({ status: 'throw' }));
    const statusFails = await running.agent.status(BEHAVE, id2, state2);
    assert.equal(statusFails.status, 200);
    assert.deepEqual(errorOf(statusFails), { title: 'Failed to read status.', detail: 'status failed on purpose' });
    assert.equal((await running.agent.stop(BEHAVE, id2, statusFails.body['state'])).status, 200);

    // Stateless actions: the same titles.
    const instantId = randomUUID();
    const instantPrepared = await running.agent.prepare(INSTANT, instantId, { start: 'throw' });
    const instantStart = await running.agent.start(INSTANT, instantId, instantPrepared.body['state']);
    assert.equal(instantStart.status, 200);
    assert.deepEqual(errorOf(instantStart), { title: 'Failed to start action.', detail: 'start failed on purpose' });
    const externalStatus = await running.agent.status(EXTERNAL, randomUUID(), { config: { status: 'throw' }, polls: 0 });
    assert.equal(externalStatus.status, 200);
    assert.deepEqual(errorOf(externalStatus), { title: 'Failed to read status.', detail: 'status failed on purpose' });
  });

  test('an ExtensionError passes title, detail and status through (prepare, start, status: HTTP 200)', async () => {
    const prepare = await running.agent.prepare(BEHAVE, randomUUID(), behave({ prepare: 'extension-error' }));
    assert.equal(prepare.status, 200);
    assert.deepEqual(errorOf(prepare), { title: 'prepare refused', detail: 'as configured', status: 'failed' });

    const id = randomUUID();
    const prepared = await running.agent.prepare(BEHAVE, id, behave({ start: 'extension-error' }));
    const started = await running.agent.start(BEHAVE, id, prepared.body['state']);
    assert.equal(started.status, 200);
    assert.deepEqual(errorOf(started), { title: 'start refused', detail: 'as configured', status: 'failed' });
    await running.agent.stop(BEHAVE, id, started.body['state']);

    const id2 = randomUUID();
    const state2 = await running.agent.run(BEHAVE, id2, behave({ status: 'extension-error' }));
    const status = await running.agent.status(BEHAVE, id2, state2);
    assert.equal(status.status, 200);
    assert.deepEqual(errorOf(status), { title: 'status refused', detail: 'as configured', status: 'failed' });
    await running.agent.stop(BEHAVE, id2, status.body['state']);

    const instant = await running.agent.prepare(INSTANT, randomUUID(), { prepare: 'extension-error' });
    assert.deepEqual(errorOf(instant), { title: 'prepare refused', detail: 'as configured', status: 'failed', type: 'urn:fixture', instance: 'urn:fixture:1' });
  });

  test('stop throwing → HTTP 500 "Failed to stop action."; a later stop retries with the state it is sent', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `stop-fails-${id}.log`);
    const state = await running.agent.run(BEHAVE, id, behave({ stop: 'throw', stopLog }));
    const failed = await running.agent.stop(BEHAVE, id, state);
    assert.equal(failed.status, 500, JSON.stringify(failed.body));
    assert.deepEqual(failed.body, { title: 'Failed to stop action.', detail: 'stop failed on purpose' });
    assert.equal(readLines(stopLog).length, 1);
    assert.equal(running.extension.stats().activeExecutions >= 1, true, 'a failed stop must keep the execution');

    const fixed = structuredClone(state) as { config: Record<string, unknown> };
    fixed.config['stop'] = 'ok';
    const retried = await running.agent.stop(BEHAVE, id, fixed);
    assert.equal(retried.status, 200, JSON.stringify(retried.body));
    assert.equal(retried.body['error'], undefined);
    assert.equal(readLines(stopLog).length, 2);

    const stateless = await running.agent.stop(STOPPABLE, randomUUID(), { stopFail: true });
    assert.equal(stateless.status, 500);
    assert.deepEqual(stateless.body, { title: 'Failed to stop action.', detail: 'stop failed on purpose' });
  });

  test('stop throwing an ExtensionError → HTTP 500 with its fields', async () => {
    const id = randomUUID();
    const state = await running.agent.run(BEHAVE, id, behave({ stop: 'extension-error' }));
    const failed = await running.agent.stop(BEHAVE, id, state);
    assert.equal(failed.status, 500, JSON.stringify(failed.body));
    assert.deepEqual(failed.body, { title: 'stop refused', detail: 'as configured', status: 'failed' });
    const fixed = structuredClone(state) as { config: Record<string, unknown> };
    fixed.config['stop'] = 'ok';
    assert.equal((await running.agent.stop(BEHAVE, id, fixed)).status, 200);
  });

  test('query: result passes through; throwing → HTTP 500 "Failed to query metrics."; ExtensionError verbatim', async () => {
    const id = randomUUID();
    const ok = await running.agent.query(QUERY, id, { count: 2 });
    assert.equal(ok.status, 200);
    assert.equal((ok.body['metrics'] as unknown[]).length, 2);

    const failed = await running.agent.query(QUERY, id, { fail: 'throw' });
    assert.equal(failed.status, 500, JSON.stringify(failed.body));
    assert.deepEqual(failed.body, { title: 'Failed to query metrics.', detail: 'query failed on purpose' });

    const refused = await running.agent.query(QUERY, id, { fail: 'extension-error' });
    assert.equal(refused.status, 500, JSON.stringify(refused.body));
    assert.deepEqual(refused.body, { title: 'query refused', detail: 'as configured', status: 'failed', type: 'urn:fixture', instance: 'urn:fixture:1' });
  });
});

// ---------------------------------------------------------------------------------------------
// duplicate and concurrent requests
// ---------------------------------------------------------------------------------------------

describe('duplicates and concurrency', () => {
  test('the same prepare twice → the second is 409', async () => {
    const id = randomUUID();
    const first = await running.agent.prepare(BEHAVE, id, behave());
    assert.equal(first.status, 200);
    const second = await running.agent.prepare(BEHAVE, id, behave());
    assert.equal(second.status, 409, JSON.stringify(second.body));
    title(second);
    // Upper-case spelling of the same UUID is the same execution.
    const upper = await running.agent.prepare(BEHAVE, id.toUpperCase(), behave());
    assert.equal(upper.status, 409, JSON.stringify(upper.body));
    assert.equal((await running.agent.stop(BEHAVE, id, first.body['state'])).status, 200);
  });

  test('20 concurrent prepares with the same executionId → exactly one 200, the rest 409', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `concurrent-${id}.log`);
    const answers = await Promise.all(Array.from({ length: 20 }, () => running.agent.prepare(BEHAVE, id, behave({ stopLog, prepare: 'slow', slowMs: 100 }))));
    const statuses = answers.map((answer) => answer.status);
    assert.equal(statuses.filter((s) => s === 200).length, 1, statuses.join(','));
    assert.equal(statuses.filter((s) => s === 409).length, 19, statuses.join(','));
    const winner = answers.find((answer) => answer.status === 200)!;
    assert.equal(winner.body['error'], undefined);
    assert.equal(running.extension.stats().activeExecutions, 1);
    assert.equal((await running.agent.stop(BEHAVE, id, winner.body['state'])).status, 200);
    assert.equal(readLines(stopLog).length, 1);
    await noActiveExecutions();
  });

  test('start twice → 409', async () => {
    const id = randomUUID();
    const prepared = await running.agent.prepare(BEHAVE, id, behave());
    const started = await running.agent.start(BEHAVE, id, prepared.body['state']);
    assert.equal(started.status, 200);
    assert.equal(started.body['error'], undefined);
    const again = await running.agent.start(BEHAVE, id, prepared.body['state']);
    assert.equal(again.status, 409, JSON.stringify(again.body));
    title(again);
    assert.equal((await running.agent.stop(BEHAVE, id, started.body['state'])).status, 200);
  });

  test('stop of an unknown executionId runs the author stop with the sent state (stateless rollback), once', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `stateless-${id}.log`);
    const state = behaveState({ stopLog });
    const stopped = await running.agent.stop(BEHAVE, id, state);
    assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
    assert.equal(stopped.body['error'], undefined);
    assert.deepEqual(readLines(stopLog), [`${id} agent stop none`]);
    // A duplicate stop is answered from the remembered outcome: stop does not run again.
    const duplicate = await running.agent.stop(BEHAVE, id, state);
    assert.equal(duplicate.status, 200);
    assert.deepEqual(readLines(stopLog), [`${id} agent stop none`]);

    const id2 = randomUUID();
    const stopLog2 = join(logs.path, `stateless-${id2}.log`);
    const sent = { stopLog: stopLog2, marker: 'from the agent', nested: { list: [1, 'two', null] } };
    const answer = await running.agent.stop(STOPPABLE, id2, sent);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const lines = readLines(stopLog2);
    assert.equal(lines.length, 1);
    assert.equal(lines[0], `${id2} agent stop ${JSON.stringify(sent)}`);
    assert.equal(running.extension.stats().activeExecutions, 0);
  });

  test('status of an unknown executionId: without status handler → the synthetic "not completed"; with one → the handler runs', async () => {
    const synthetic = await running.agent.status(STOPPABLE, randomUUID(), {});
    assert.equal(synthetic.status, 200, JSON.stringify(synthetic.body));
    assert.deepEqual(synthetic.body, { completed: false });

    const external = await running.agent.status(EXTERNAL, randomUUID(), { config: {}, polls: 41 });
    assert.equal(external.status, 200);
    assert.deepEqual(external.body['state'], { config: {}, polls: 42 });
    assert.equal(external.body['completed'], false);
  });

  test('everything above left no execution behind', async () => {
    await noActiveExecutions();
  });
});

// ---------------------------------------------------------------------------------------------
// hostile requests (issue 11): content types, declared lengths, unbounded Request-Timeout
// ---------------------------------------------------------------------------------------------

/** A POST with exactly these headers (plus Content-Length): no content type unless given. */
function post(path: string, headers: Record<string, string>, body: string): Promise<Raw> {
  return exactly('POST', path, { 'content-length': String(Buffer.byteLength(body)), ...headers }, body);
}

/** One answer read off a raw socket, and whether the server then closed the connection. */
interface SocketAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
  closedByServer: boolean;
}

/**
 * Write `bytes` on a fresh TCP connection — typically a request the client never finishes — and
 * read one answer. Rejects when no answer arrives within `withinMs` (generous: the answer is
 * expected at once, its absence is the failure). After the answer, waits up to `withinMs` for the
 * server to close the connection.
 */
function socketAnswer(base: string, bytes: Buffer | string, withinMs = 10_000): Promise<SocketAnswer> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    let received = Buffer.alloc(0);
    let answer: Omit<SocketAnswer, 'closedByServer'> | undefined;
    const noAnswer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${withinMs} ms; received ${JSON.stringify(received.toString('latin1').slice(0, 200))}`));
    }, withinMs);
    let notClosed: NodeJS.Timeout | undefined;
    const finish = (closedByServer: boolean): void => {
      clearTimeout(noAnswer);
      clearTimeout(notClosed);
      socket.destroy();
      if (answer === undefined) reject(new Error(`connection closed without an answer; received ${JSON.stringify(received.toString('latin1').slice(0, 200))}`));
      else resolve({ ...answer, closedByServer });
    };
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (answer !== undefined) return;
      const end = received.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [statusLine, ...lines] = received.subarray(0, end).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines) headers[line.slice(0, line.indexOf(':')).toLowerCase()] = line.slice(line.indexOf(':') + 1).trim();
      const length = Number(headers['content-length'] ?? 0);
      if (received.length < end + 4 + length) return;
      answer = { status: Number(statusLine!.split(' ')[1]), headers, body: received.subarray(end + 4, end + 4 + length).toString('utf8') };
      clearTimeout(noAnswer);
      notClosed = setTimeout(() => finish(false), withinMs);
    });
    // The server may reset the connection while we still had unsent bytes; what counts is the answer.
    socket.on('error', () => undefined);
    socket.on('close', () => finish(true));
    socket.write(bytes);
  });
}

function titleOf(answer: { body: string }): string {
  return (JSON.parse(answer.body) as { title: string }).title;
}

describe('hostile requests: content types', () => {
  const REFUSED = ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'text/json', 'application/xml', 'application/jsonx'];

  test('every JSON endpoint refuses a non-JSON content type with 415 naming it', async () => {
    for (const endpoint of ENDPOINTS) {
      for (const type of REFUSED) {
        const answer = await running.agent.request('POST', endpoint.path, JSON.stringify(endpoint.valid(randomUUID())), { 'content-type': type });
        assert.equal(answer.status, 415, `${endpoint.name} ${type}: ${JSON.stringify(answer.body)}`);
        assert.equal(title(answer), `Unsupported content type: ${type.split(';')[0]!.toLowerCase()}`);
        assert.match(String(answer.body['detail']), /application\/json/);
        assert.equal(answer.headers.get('connection'), 'close');
      }
    }
  });

  test('multipart is refused by start, status, stop and query (only a prepare takes files)', async () => {
    for (const endpoint of ENDPOINTS.filter((e) => e.name !== 'prepare')) {
      const form = new FormData();
      form.set('request', JSON.stringify(endpoint.valid(randomUUID())));
      const answer = await running.agent.request('POST', endpoint.path, form);
      assert.equal(answer.status, 415, `${endpoint.name}: ${JSON.stringify(answer.body)}`);
      assert.equal(title(answer), 'Unsupported content type: multipart/form-data');
    }
  });

  test('a refused prepare prepared nothing: the same executionId then prepares with JSON', async () => {
    const id = randomUUID();
    const body = JSON.stringify({ executionId: id, config: behave(), properties: {} });
    const refused = await running.agent.request('POST', `/${BEHAVE}/prepare`, body, { 'content-type': 'text/plain' });
    assert.equal(refused.status, 415);
    const prepared = await running.agent.prepare(BEHAVE, id, behave());
    assert.equal(prepared.status, 200, JSON.stringify(prepared.body));
    assert.equal(prepared.body['error'], undefined);
    assert.equal((await running.agent.stop(BEHAVE, id, prepared.body['state'])).status, 200);
  });

  test("a page's request without a preflight is refused: text/plain, or no content type with an Origin header", async () => {
    const body = JSON.stringify({ executionId: randomUUID(), timestamp: new Date().toISOString(), config: { count: 1 } });
    const plain = await post(`/${QUERY}/query`, { origin: 'https://attacker.example', 'content-type': 'text/plain;charset=UTF-8' }, body);
    assert.equal(plain.status, 415, plain.body.toString('utf8'));
    const untyped = await post(`/${QUERY}/query`, { origin: 'null' }, body);
    assert.equal(untyped.status, 415, untyped.body.toString('utf8'));
    assert.equal(titleOf({ body: untyped.body.toString('utf8') }), 'Missing content type');
  });

  test('accepted: application/json with parameters and in any case, application/*+json, and no content type from a non-browser client', async () => {
    const body = JSON.stringify({ executionId: randomUUID(), timestamp: new Date().toISOString(), config: { count: 2 } });
    const accepted: Array<Record<string, string>> = [
      { 'content-type': 'application/json' },
      { 'content-type': 'application/json; charset=utf-8' },
      { 'content-type': 'Application/JSON' },
      { 'content-type': 'application/vnd.steadybit.actionkit+json' },
      {},
    ];
    for (const headers of accepted) {
      const answer = await post(`/${QUERY}/query`, headers, body);
      assert.equal(answer.status, 200, `${JSON.stringify(headers)}: ${answer.body.toString('utf8')}`);
      assert.equal((JSON.parse(answer.body.toString('utf8')) as { metrics: unknown[] }).metrics.length, 2);
    }
  });
});

describe('hostile requests: declared and streamed body sizes', () => {
  const head = (path: string, headers: string[]): string => [`POST ${path} HTTP/1.1`, 'Host: localhost', ...headers, '', ''].join('\r\n');

  test('a Content-Length over ACTIONKIT_MAX_BODY_BYTES → 413 at once, without a byte of the body, and the connection closed', async () => {
    for (const endpoint of ENDPOINTS) {
      for (const length of ['1025', '1000000000000', '9007199254740993']) {
        const answer = await socketAnswer(running.base, head(endpoint.path, ['Content-Type: application/json', `Content-Length: ${length}`]));
        assert.equal(answer.status, 413, `${endpoint.name} ${length}: ${answer.body}`);
        assert.equal(titleOf(answer), 'Request body too large');
        assert.match((JSON.parse(answer.body) as { detail: string }).detail, new RegExp(`Content-Length ${length} exceeds the limit of 1024 bytes`));
        assert.equal(answer.headers['connection'], 'close');
        assert.ok(answer.closedByServer, `${endpoint.name} ${length}: the connection stayed open`);
      }
    }
  });

  test('a chunked body is counted as it streams: past the limit → 413 at once, without waiting for the rest, and closed', async () => {
    const chunk = `${'x'.repeat(2048)}`;
    const answer = await socketAnswer(running.base, `${head(`/${BEHAVE}/status`, ['Content-Type: application/json', 'Transfer-Encoding: chunked'])}${(2048).toString(16)}\r\n${chunk}\r\n`);
    assert.equal(answer.status, 413, answer.body);
    assert.equal(titleOf(answer), 'Request body too large');
    assert.ok(answer.closedByServer, 'the connection stayed open');
  });

  test('a multipart prepare declaring more than its files and request field can hold → 413 at once, closed', async () => {
    const files = await start({ actions: [fixture('http-files')], maxBodyBytes: 1024, uploadMaxBytes: 4096 });
    try {
      const answer = await socketAnswer(files.base, head('/fixture.http.files/prepare', ['Content-Type: multipart/form-data; boundary=xyz', 'Content-Length: 1000000000000']));
      assert.equal(answer.status, 413, answer.body);
      assert.equal(titleOf(answer), 'Request body too large');
      assert.match((JSON.parse(answer.body) as { detail: string }).detail, new RegExp(`exceeds the limit of ${4096 + 1024 + 1024 * 1024} bytes`));
      assert.ok(answer.closedByServer, 'the connection stayed open');
    } finally {
      await files.close();
    }
  });
});

describe('hostile requests: Request-Timeout beyond what a timer holds', () => {
  test('≥ 2,147,484 s (Request-Timeout or X-Request-Timeout) counts as no deadline: no 503, no rollback, no TimeoutOverflowWarning', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning);
    process.on('warning', onWarning);
    try {
      for (const header of ['Request-Timeout', 'X-Request-Timeout']) {
        for (const value of ['2147484', '1e300']) {
          const answer = await running.agent.status(BEHAVE, randomUUID(), behaveState({ status: 'slow', slowMs: 300 }), { [header]: value });
          assert.equal(answer.status, 200, `${header}: ${value} → ${answer.status} ${JSON.stringify(answer.body)}`);
          assert.equal(answer.body['error'], undefined);
        }
        // A prepare is not rolled back: the execution starts and stops as usual.
        const id = randomUUID();
        const timeout = { [header]: '2147484' };
        const prepared = await running.agent.prepare(BEHAVE, id, behave(), timeout);
        assert.equal(prepared.status, 200, JSON.stringify(prepared.body));
        assert.equal(prepared.body['error'], undefined);
        const started = await running.agent.start(BEHAVE, id, prepared.body['state'], timeout);
        assert.equal(started.status, 200, JSON.stringify(started.body));
        assert.equal(started.body['error'], undefined, JSON.stringify(started.body));
        const stopped = await running.agent.stop(BEHAVE, id, started.body['state'], timeout);
        assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
        assert.equal(stopped.body['error'], undefined);
      }
      // The largest timeout a timer holds is still a deadline the request ends well within.
      const largest = await running.agent.status(BEHAVE, randomUUID(), behaveState({}), { 'Request-Timeout': '2147483' });
      assert.equal(largest.status, 200);
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(warnings.map((warning) => `${warning.name}: ${warning.message}`).filter((text) => /Timeout/.test(text)), []);
    await noActiveExecutions();
  });
});
