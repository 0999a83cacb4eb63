/**
 * A whole extension on one server: index contributions of the other kits and the author's own
 * express routers next to the actions, behind the runtime's envelope (Request-Id, access log,
 * metrics, Request-Timeout, gzip, JSON errors, shutdown). The example extension is run as
 * `npm start` runs it (a child process serving `dist/example/main.js`) and checked with the
 * conformance checker and the agent client; the envelope is probed on an in-process extension with
 * routers written for the test.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import * as http from 'node:http';
import * as os from 'node:os';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import express from 'express';
import { ConfigError, createExtension, ExtensionError, requestSignal, type IndexContributions } from 'actionkit-runtime';
import { AgentClient, checkExtension, schemaIssues } from 'actionkit-runtime/testing';
import { Agent, fixture, spawnListening, start, type Child, type Running } from '../support/harness.js';

const TEST_TIMEOUT_MS = 60_000;
const CPU = 'com.example.actionkit.cpu-stress';
const HOST_TYPE = 'com.example.actionkit.host';

describe('the example extension, served as npm start serves it', () => {
  let child: Child;
  let client: AgentClient;

  before(async () => {
    child = await spawnListening([fileURLToPath(new URL('../../example/main.js', import.meta.url))], { STEADYBIT_LOG_LEVEL: 'debug' });
    client = new AgentClient({ baseUrl: child.base });
  });
  after(async () => {
    child.process.kill('SIGTERM');
    assert.equal(await child.exited, 143);
  });

  test('the index lists the host discovery next to the actions; every kit part is valid', { timeout: TEST_TIMEOUT_MS }, async () => {
    const index = await client.index();
    assert.equal(index.actions.length, 4);
    assert.deepEqual(index.discoveries, [{ method: 'GET', path: '/discovery/host' }]);
    assert.deepEqual(index.targetTypes, [{ method: 'GET', path: '/discovery/host/target-type' }]);
    assert.deepEqual(index.targetAttributes, [{ method: 'GET', path: '/discovery/host/attributes' }]);
    // Not contributed, but DiscoveryList requires it once the DiscoveryKit part is used.
    assert.deepEqual(index.targetEnrichmentRules, []);
    assert.equal(index.advice, undefined);
  });

  test('the discovery answers on the same port: this host, of the type the CPU attack targets', { timeout: TEST_TIMEOUT_MS }, async () => {
    const discovery = await client.describeDiscovery('/discovery/host');
    const data = await client.discover(discovery);
    assert.equal(data.targets?.length, 1);
    const [host] = data.targets!;
    assert.equal(host!.id, os.hostname());
    assert.equal(host!.targetType, HOST_TYPE);
    assert.deepEqual(host!.attributes['example.host.cores'], [String(os.availableParallelism())]);
    const type = await client.describeTargetType('/discovery/host/target-type');
    assert.equal(type.id, HOST_TYPE);
    const described = (await client.describeTargetAttributes('/discovery/host/attributes')).attributes.map((a) => a.attribute);
    for (const attribute of Object.keys(host!.attributes)) assert.ok(described.includes(attribute), `${attribute} has a label`);
    const cpu = await client.findAction(CPU);
    assert.equal(cpu.targetSelection?.targetType, HOST_TYPE);

    // The attack takes the discovered host as its target, and refuses a host it does not run on.
    const endpoints = client.endpoints(cpu);
    const target = { name: host!.label, attributes: host!.attributes };
    const ours = await endpoints.prepare({ executionId: randomUUID(), config: { duration: 1000, cpuLoad: 10 }, target, properties: {} });
    assert.equal(ours.result.error, undefined);
    const elsewhere = await endpoints.prepare({
      executionId: randomUUID(),
      config: { duration: 1000, cpuLoad: 10 },
      target: { name: 'elsewhere', attributes: { ...host!.attributes, 'example.host.name': ['elsewhere'] } },
      properties: {},
    });
    assert.equal(elsewhere.result.error?.title, 'Target is another host');
  });

  test('actionkit check passes, discovery rows included', { timeout: TEST_TIMEOUT_MS }, async () => {
    const report = await checkExtension(child.base, { actionId: CPU, runDurationMs: 1000 });
    assert.ok(report.ok, JSON.stringify(report.rows.filter((row) => row.status === 'fail')));
    const passed = new Set(report.rows.filter((row) => row.status === 'pass').map((row) => row.name));
    for (const name of ['index', 'discovery com.example.actionkit.host-discovery', `target type ${HOST_TYPE}`, 'target attributes /discovery/host/attributes', `prepare ${CPU}`]) {
      assert.ok(passed.has(name), `${name} passed: ${[...passed].join(', ')}`);
    }
  });

  test('router requests get the envelope: Request-Id, access log line, metric by route template', { timeout: TEST_TIMEOUT_MS }, async () => {
    const answer = await client.exchange('GET', '/discovery/host/targets');
    const requestId = answer.headers.get('request-id');
    assert.ok(requestId !== null && requestId !== '');
    const line = await waitForLog(child, (entry) => entry['requestId'] === requestId);
    assert.equal(line['path'], '/discovery/host/targets');
    assert.equal(line['status'], 200);
    assert.ok((line['resBytes'] as number) > 0, JSON.stringify(line));
    const metrics = await (await fetch(`http://127.0.0.1:${child.healthPort}/metrics`)).text();
    assert.match(metrics, /actionkit_http_requests_total\{route="\/discovery\/host\/targets",method="GET",status="200"\} [1-9]/);
  });
});

/** GET with node:http: the headers and the body exactly as sent (fetch would decompress it). */
function rawGet(url: string, headers: Record<string, string>): Promise<{ headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk)).on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
      })
      .on('error', reject);
  });
}

/** The first JSON log line of `child` that `matches`, waiting for it to be written. */
async function waitForLog(child: Child, matches: (entry: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  for (let tries = 0; tries < 500; tries++) {
    for (const line of child.logs) {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (matches(entry)) return entry;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no such log line in:\n${child.logs.join('\n')}`);
}

describe('author routers behind the runtime envelope, index at /actions', () => {
  let running: Running;
  /** What the `/wait-for-abort` handler saw. */
  const seen: { aborted: Promise<string>; lateWrite?: string } = { aborted: Promise.resolve('') };
  let entered: () => void = () => undefined;

  const contributions: IndexContributions = {
    discoveries: [{ method: 'GET', path: '/d/description' }],
    advice: [{ method: 'GET', path: '/advice/one' }],
    preflights: [{ method: 'GET', path: '/preflight/one' }],
    eventListeners: [{ method: 'POST', path: '/events', listenTo: ['experiment.execution.completed'] }],
  };

  function routers(): express.Router[] {
    const discovery = express.Router();
    discovery.get('/d/description', (_req, res) => void res.json({ id: 'test.discovery', discover: { method: 'GET', path: '/d/targets', callInterval: '30s' } }));
    discovery.get('/d/targets', (_req, res) => void res.json({ targets: [{ id: 't1', label: 'T1', targetType: 'test.thing', attributes: { 'test.size': ['x'.repeat(4096)] } }] }));
    const rest = express.Router();
    rest.get('/advice/one', (_req, res) => void res.json({ id: 'advice' }));
    rest.get('/preflight/one', (_req, res) => void res.json({ id: 'preflight' }));
    rest.post('/events', express.json(), (req, res) => void res.json({ received: (req.body as { eventName?: string }).eventName }));
    rest.get('/things/:id', (req, res) => void res.json({ id: req.params.id }));
    rest.get('/client', (req, res) => void res.json({ ip: req.ip, protocol: req.protocol }));
    rest.get('/throws', () => {
      throw new Error('the discovery backend is down');
    });
    rest.get('/extension-error', () => {
      throw new ExtensionError('Inventory unavailable', { detail: 'the inventory API answered 502' });
    });
    rest.get('/teapot', (_req, _res, next) => next(Object.assign(new Error('short and stout'), { status: 418 })));
    rest.get('/wait-for-abort', (_req, res) => {
      const signal = requestSignal(res);
      seen.aborted = new Promise((resolve) => signal.addEventListener('abort', () => resolve(String((signal.reason as Error).message)), { once: true }));
      entered();
      // Answers only after the agent gave up: the late answer must go nowhere, and not throw.
      void seen.aborted.then(() => {
        try {
          res.status(200).json({ late: true });
          seen.lateWrite = 'discarded';
        } catch (error) {
          seen.lateWrite = `threw ${(error as Error).message}`;
        }
      });
    });
    return [discovery, rest];
  }

  before(async () => {
    running = await start({ actions: [fixture('passthrough')], indexPath: '/actions', index: contributions, routers: routers() });
  });
  after(() => running.close());

  test('the index is served at /actions only, with every contribution; / is a JSON 404 that names the index', async () => {
    const index = await running.agent.request('GET', '/actions');
    assert.equal(index.status, 200);
    assert.deepEqual(schemaIssues('ExtensionIndex', index.body), []);
    assert.deepEqual(index.body['actions'], [{ method: 'GET', path: '/fixture.passthrough' }]);
    for (const [field, entries] of Object.entries(contributions)) assert.deepEqual(index.body[field], entries, field);
    assert.deepEqual([index.body['targetTypes'], index.body['targetAttributes'], index.body['targetEnrichmentRules']], [[], [], []]);
    const cached = await running.agent.request('GET', '/actions', undefined, { 'if-none-match': index.headers.get('etag')! });
    assert.equal(cached.status, 304);
    const root = await running.agent.request('GET', '/');
    assert.equal(root.status, 404);
    assert.equal(root.body['title'], 'Not found: GET /');
    assert.match(String(root.body['detail']), /GET \/actions lists the endpoints/);
  });

  test('the agent client and the checker find the discovery and the other kits', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new AgentClient({ baseUrl: running.base, listPath: '/actions' });
    const data = await client.discover(await client.describeDiscovery('/d/description'));
    assert.equal(data.targets?.[0]?.id, 't1');
    const report = await checkExtension(running.base, { client: { listPath: '/actions' }, runDurationMs: 500 });
    const rows = new Map(report.rows.map((row) => [row.name, row]));
    assert.ok(report.ok, JSON.stringify(report.rows.filter((row) => row.status === 'fail')));
    assert.equal(rows.get('discovery test.discovery')?.status, 'pass');
    assert.equal(rows.get('advice /advice/one')?.status, 'pass');
    assert.equal(rows.get('preflight /preflight/one')?.status, 'pass');
    assert.equal(rows.get('event listener /events')?.status, 'skip');
  });

  test('router answers: Request-Id, gzip above 1 KiB, a bounded metric label, JSON bodies parsed by the router', async () => {
    const big = await rawGet(`${running.base}/d/targets`, { 'accept-encoding': 'gzip' });
    assert.ok(big.headers['request-id']);
    assert.equal(big.headers['content-encoding'], 'gzip');
    assert.equal((JSON.parse(gunzipSync(big.body).toString('utf8')) as { targets: unknown[] }).targets.length, 1);
    const event = await running.agent.request('POST', '/events', { eventName: 'experiment.execution.completed' });
    assert.deepEqual(event.body, { received: 'experiment.execution.completed' });
    for (const id of ['a', 'b', 'c']) assert.deepEqual((await running.agent.request('GET', `/things/${id}`)).body, { id });
    const metrics = await (await fetch(`http://127.0.0.1:${running.healthPort}/metrics`)).text();
    assert.match(metrics, /actionkit_http_requests_total\{route="\/things\/:id",method="GET",status="200"\} 3/);
    assert.doesNotMatch(metrics, /route="\/things\/a"/);
  });

  test('mounted in another express app under a prefix: the lifecycle, the index, the routers (with the outer app\'s settings) and the 404 answer there, with the envelope', { timeout: TEST_TIMEOUT_MS }, async () => {
    const outer = express();
    // A sub-app inherits its parent's settings: behind the outer app's proxy, the routers see the client.
    outer.set('trust proxy', true);
    outer.get('/outer-only', (_req, res) => void res.json({ outer: true }));
    outer.use('/ext', running.extension.app);
    const server = http.createServer(outer);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      const mounted = new Agent(`${base}/ext`);
      const id = randomUUID();
      const state = await mounted.run('fixture.passthrough', id, {});
      assert.equal((await mounted.status('fixture.passthrough', id, state)).status, 200);
      assert.equal((await mounted.stop('fixture.passthrough', id, state)).status, 200);
      assert.equal((await mounted.request('GET', '/actions')).status, 200);
      assert.deepEqual((await mounted.request('GET', '/things/x')).body, { id: 'x' });
      const client = await mounted.request('GET', '/client', undefined, { 'x-forwarded-for': '9.9.9.9', 'x-forwarded-proto': 'https' });
      assert.deepEqual(client.body, { ip: '9.9.9.9', protocol: 'https' });
      const missing = await mounted.request('GET', '/nowhere');
      assert.equal(missing.status, 404);
      assert.equal(missing.body['title'], 'Not found: GET /nowhere');
      assert.deepEqual(await (await fetch(`${base}/outer-only`)).json(), { outer: true });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test('request targets: a query string, the absolute form and HEAD reach the action routes; a method they do not serve is a 405 naming the allowed ones', async () => {
    const described = await running.agent.request('GET', '/fixture.passthrough?pretty=1');
    assert.equal(described.status, 200);
    assert.equal(described.body['id'], 'fixture.passthrough');
    const { port } = new URL(running.base);
    const raw = (target: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        http
          .request({ host: '127.0.0.1', port, method: 'GET', path: target }, (res) => {
            let body = '';
            res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk)).on('end', () => resolve({ status: res.statusCode!, body }));
          })
          .on('error', reject)
          .end();
      });
    // `GET http://host/path`, the form a proxy sends: the path is what counts; a fragment is no part of it.
    for (const target of [`http://127.0.0.1:${port}/fixture.passthrough?x=1`, '/fixture.passthrough#x']) {
      const answer = await raw(target);
      assert.equal(answer.status, 200, target);
      assert.equal((JSON.parse(answer.body) as { id: string }).id, 'fixture.passthrough', target);
    }
    // Dot segments are not resolved (as express does not): no path reaches an action by walking up.
    for (const target of [`http://127.0.0.1:${port}/zz/../fixture.passthrough`, '/zz/../fixture.passthrough', '/zz/%2e%2e/fixture.passthrough']) {
      assert.equal((await raw(target)).status, 404, target);
    }
    const head = await fetch(`${running.base}/fixture.passthrough`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.ok(head.headers.get('request-id'));
    assert.equal(await head.text(), '');
    const wrongMethod = await running.agent.request('DELETE', '/fixture.passthrough/status');
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get('allow'), 'POST');
    assert.equal(wrongMethod.body['title'], 'Method DELETE not allowed for /fixture.passthrough/status');
  });

  test('router errors are ActionKit JSON errors with the right status', async () => {
    const thrown = await running.agent.request('GET', '/throws');
    assert.equal(thrown.status, 500);
    assert.deepEqual(thrown.body, { title: 'Internal Server Error', detail: 'the discovery backend is down' });
    const extensionError = await running.agent.request('GET', '/extension-error');
    assert.equal(extensionError.status, 500);
    assert.deepEqual(extensionError.body, { title: 'Inventory unavailable', detail: 'the inventory API answered 502' });
    const teapot = await running.agent.request('GET', '/teapot');
    assert.equal(teapot.status, 418);
    assert.equal(teapot.body['title'], 'short and stout');
    const malformed = await running.agent.request('POST', '/events', '{"eventName":', { 'content-type': 'application/json' });
    assert.equal(malformed.status, 400);
    assert.equal(malformed.body['title'], 'Failed to parse request body.');
    const missing = await running.agent.request('POST', '/nowhere', {});
    assert.equal(missing.status, 404);
  });

  test('Request-Timeout: 503 Timeout, the router is told through requestSignal, its late answer is discarded', { timeout: TEST_TIMEOUT_MS }, async () => {
    const inHandler = new Promise<void>((resolve) => (entered = resolve));
    const answer = await running.agent.request('GET', '/wait-for-abort', undefined, { 'request-timeout': '0.2' });
    await inHandler;
    assert.equal(answer.status, 503);
    assert.equal(answer.body['title'], 'Timeout');
    assert.match(await seen.aborted, /Request-Timeout of 0\.2 s passed/);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(seen.lateWrite, 'discarded');
  });

  test('a client that goes away aborts the router request', { timeout: TEST_TIMEOUT_MS }, async () => {
    const inHandler = new Promise<void>((resolve) => (entered = resolve));
    const client = new AbortController();
    const request = fetch(`${running.base}/wait-for-abort`, { signal: client.signal }).catch((error: Error) => error.name);
    await inHandler;
    client.abort();
    assert.equal(await request, 'AbortError');
    assert.match(await seen.aborted, /client closed the connection/);
  });
});

describe('index and router configuration', () => {
  test('contributed entries are validated; paths that cannot reach their router are refused at start-up', async () => {
    const passthrough = [fixture('passthrough')];
    const cases: Array<[string, Parameters<typeof createExtension>[0], RegExp]> = [
      ['discovery with a POST method', { actions: passthrough, index: { discoveries: [{ method: 'POST' as 'GET', path: '/d' }] } }, /option "index\.discoveries\.0\.method"/],
      ['an unknown kit', { actions: passthrough, index: { gadgets: [] } as IndexContributions }, /index.*gadgets/],
      ['a router that is not a function', { actions: passthrough, routers: [42 as unknown as express.Router] }, /expected an express router or request handler/],
      ['an index path without a slash', { actions: passthrough, indexPath: 'actions' }, /option "indexPath"/],
      ['the index path on an action route', { actions: passthrough, indexPath: '/fixture.passthrough' }, /the index path .* is \/fixture\.passthrough, which is already the description of action fixture\.passthrough/],
      ['an entry on an action endpoint', { actions: passthrough, index: { advice: [{ method: 'GET', path: '/fixture.passthrough/prepare' }] } }, /index\.advice is \/fixture\.passthrough\/prepare, which is already the prepare endpoint of action fixture\.passthrough/],
      ['an entry on the index path', { actions: passthrough, index: { preflights: [{ method: 'GET', path: '/' }] } }, /already the index path/],
      ['two kits on one path', { actions: passthrough, index: { discoveries: [{ method: 'GET', path: '/x' }], targetTypes: [{ method: 'GET', path: '/x' }] } }, /index\.targetTypes is \/x, which is already an entry of option index\.discoveries/],
    ];
    for (const [what, options, message] of cases) {
      await assert.rejects(createExtension({ ...options, port: 0, healthPort: null, handleSignals: false, logLevel: 'fatal' }), (error: Error) => {
        assert.ok(error instanceof ConfigError, `${what}: ${error.name} ${error.message}`);
        assert.match(error.message, message, what);
        return true;
      });
    }
  });

  test('ACTIONKIT_INDEX_PATH moves the index; an extension of discoveries only serves an empty action list', { timeout: TEST_TIMEOUT_MS }, async () => {
    const router = express.Router();
    router.get('/only/discovery', (_req, res) => void res.json({ id: 'only', discover: { method: 'GET', path: '/only/targets' } }));
    router.get('/only/targets', (_req, res) => void res.json({ targets: [] }));
    process.env['ACTIONKIT_INDEX_PATH'] = '/kits';
    let running: Running;
    try {
      running = await start({ actions: [], index: { discoveries: [{ method: 'GET', path: '/only/discovery' }] }, routers: [router] });
    } finally {
      delete process.env['ACTIONKIT_INDEX_PATH'];
    }
    try {
      const report = await checkExtension(running.base, { client: { listPath: '/kits' } });
      assert.ok(report.ok, JSON.stringify(report.rows));
      assert.deepEqual(
        report.rows.map((row) => [row.name, row.status]),
        [
          ['list', 'pass'],
          ['index', 'pass'],
          ['discovery only', 'pass'],
        ],
      );
      const closed = running.extension.close();
      await closed;
      // Closed with the extension: the routers' port is the extension's port.
      await assert.rejects(fetch(`${running.base}/only/targets`));
    } finally {
      await running.close();
    }
  });
});
