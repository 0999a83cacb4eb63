/**
 * The `actionkit` command line, as child processes: `serve` serving action modules (real signals,
 * exit 143), `check` against the example extension (every check passes) and against a deliberately
 * broken extension written here on plain `node:http` (the failing rows are named).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AgentClient, type CheckReport } from 'actionkit-runtime/testing';
import { issue, makeCa } from '../support/certs.js';
import { fixture, spawnListening, tempDir, type Child } from '../support/harness.js';
import { rawServer, type RawReply, type RawServer, type RecordedRequest } from '../support/raw-server.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const TEST_TIMEOUT_MS = 60_000;

function exampleAction(name: string): string {
  return fileURLToPath(new URL(`../../example/actions/${name}.js`, import.meta.url));
}

/** Run `actionkit <args>` to completion. */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** `actionkit check --json …`, parsed. */
async function check(args: string[]): Promise<{ code: number | null; report: CheckReport; stderr: string }> {
  const result = await cli(['check', '--json', ...args]);
  let report: CheckReport;
  try {
    report = JSON.parse(result.stdout) as CheckReport;
  } catch {
    throw new Error(`check printed no JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
  return { code: result.code, report, stderr: result.stderr };
}

function row(report: CheckReport, name: string): CheckReport['rows'][number] {
  const found = report.rows.find((r) => r.name === name);
  assert.ok(found !== undefined, `no row ${name} in ${report.rows.map((r) => r.name).join(', ')}`);
  return found;
}

async function terminate(child: Child): Promise<number | string> {
  child.process.kill('SIGTERM');
  return child.exited;
}

describe('actionkit (usage)', () => {
  test('--help lists the commands; a wrong command or missing argument is exit 2 with the usage', async () => {
    const help = await cli(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /serve <module\.\.\.>/);
    assert.match(help.stdout, /check <url>/);
    const checkHelp = await cli(['check', '--help']);
    assert.equal(checkHelp.code, 0);
    assert.match(checkHelp.stdout, /--heartbeat-timeout <d>/);
    const unknown = await cli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
    const noUrl = await cli(['check']);
    assert.equal(noUrl.code, 2);
    assert.match(noUrl.stderr, /check needs the URL/);
    const badDuration = await cli(['check', 'http://127.0.0.1:1', '--duration', 'soon']);
    assert.equal(badDuration.code, 2);
    assert.match(badDuration.stderr, /--duration "soon": expected a duration/);
    const noModules = await cli(['serve']);
    assert.equal(noModules.code, 2);
  });
});

describe('actionkit serve', { timeout: TEST_TIMEOUT_MS }, () => {
  test('serves the modules, runs an execution, and exits 143 on SIGTERM', async () => {
    const child = await spawnListening([CLI, 'serve', fixture('passthrough'), fixture('http-query')]);
    try {
      const client = new AgentClient({ baseUrl: child.base });
      const ids = (await client.describeAll()).map((d) => d.id);
      assert.deepEqual(ids, ['fixture.passthrough', 'fixture.http.query', 'fixture.http.instant', 'fixture.http.external', 'fixture.http.stoppable']);
      const run = await client.run('fixture.passthrough', { statusIntervalMs: 20 });
      assert.deepEqual(run.errors, []);
      assert.equal(run.ended, 'completed');
    } finally {
      assert.equal(await terminate(child), 143);
    }
  });

  test('a registration or configuration error is one clear line and exit 1', async () => {
    const rules = await cli(['serve', fixture('invalid-rules')], { STEADYBIT_EXTENSION_PORT: '0', STEADYBIT_EXTENSION_HEALTH_PORT: '0' });
    assert.equal(rules.code, 1);
    assert.match(rules.stderr, /^actionkit serve: Action "fixture\.invalid-rules": timeControl "instantaneous" must not have a stop handler/);
    assert.doesNotMatch(rules.stderr, /\n\s+at /, 'no stack trace');
    const config = await cli(['serve', fixture('passthrough')], { STEADYBIT_EXTENSION_PORT: 'eighty' });
    assert.equal(config.code, 1);
    assert.match(config.stderr, /^actionkit serve: Invalid configuration: STEADYBIT_EXTENSION_PORT="eighty": expected an integer/);
    const missing = await cli(['serve', join(tmpdir(), `actionkit-missing-${randomUUID()}.js`)], { STEADYBIT_EXTENSION_PORT: '0' });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^actionkit serve: cannot load action module/);
  });
});

describe('actionkit serve: an action module compiled to the wrong module system', { timeout: TEST_TIMEOUT_MS }, () => {
  const project = tempDir('actionkit-cjs-');
  const env = { STEADYBIT_EXTENSION_PORT: '0', STEADYBIT_EXTENSION_HEALTH_PORT: '0' };
  // What tsc emits for `export default defineAction({...})` under "module": "NodeNext" when
  // package.json has no "type": "module" (here requiring the runtime by path instead of by name).
  const commonJsAction = `"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
const action_1 = require(${JSON.stringify(fileURLToPath(new URL('../../src/action.js', import.meta.url)))});
exports.default = (0, action_1.defineAction)({
  description: { id: 'fixture.cjs', label: 'CJS', version: '1.0.0', description: 'compiled to CommonJS', kind: 'other', timeControl: 'instantaneous', parameters: [] },
  prepare: () => ({ state: {} }),
});
`;
  after(() => project.remove());

  test('CommonJS output in a package without "type": "module" names the cause and the fix, not the default export', async () => {
    const dir = join(project.path, 'commonjs');
    mkdirSync(dir);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'commonjs-extension', version: '1.0.0' }));
    writeFileSync(join(dir, 'action.js'), commonJsAction);
    const result = await cli(['serve', join(dir, 'action.js')], env);
    assert.equal(result.code, 1);
    assert.doesNotMatch(result.stderr, /must export default defineAction/);
    assert.match(result.stderr, /CommonJS/);
    assert.match(result.stderr, /set "type": "module" in the package\.json of the project, compile with "module": "NodeNext"/);
    if (process.features.require_module === true) {
      // With require(esm) the module loads, and its action arrives as module.exports.default.
      assert.match(result.stderr, /exports its action as module\.exports\.default, not as an ES module default export: it was loaded as CommonJS because \S+package\.json has no "type" field/);
    }
  });

  test('CommonJS output in a package with "type": "module", and ES module output in one without, say so too', async () => {
    const esmPackage = join(project.path, 'esm-package');
    mkdirSync(esmPackage);
    writeFileSync(join(esmPackage, 'package.json'), JSON.stringify({ name: 'esm-extension', version: '1.0.0', type: 'module' }));
    writeFileSync(join(esmPackage, 'action.js'), commonJsAction);
    const commonJsOutput = await cli(['serve', join(esmPackage, 'action.js')], env);
    assert.equal(commonJsOutput.code, 1);
    assert.match(commonJsOutput.stderr, /^actionkit serve: cannot load action module \S+: exports is not defined in ES module scope/);
    assert.match(commonJsOutput.stderr, /the file is CommonJS but its package\.json makes it an ES module\. Action modules must be ES modules/);

    const cjsPackage = join(project.path, 'cjs-package');
    mkdirSync(cjsPackage);
    writeFileSync(join(cjsPackage, 'package.json'), JSON.stringify({ name: 'cjs-extension', version: '1.0.0', type: 'commonjs' }));
    writeFileSync(join(cjsPackage, 'action.js'), `import { defineAction } from ${JSON.stringify(new URL('../../src/action.js', import.meta.url).href)};\nexport default defineAction({});\n`);
    const esmOutput = await cli(['serve', join(cjsPackage, 'action.js')], env);
    assert.equal(esmOutput.code, 1);
    assert.match(esmOutput.stderr, /the file is an ES module but Node loaded it as CommonJS\. Action modules must be ES modules: set "type": "module"/);
  });
});

describe('actionkit check against the example extension', { timeout: TEST_TIMEOUT_MS }, () => {
  let child: Child;
  let target: http.Server;
  let targetUrl: string;
  const logs = tempDir();
  before(async () => {
    target = http.createServer((req, res) => res.writeHead(req.url === '/hook' ? 204 : 200).end());
    await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
    targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}`;
    child = await spawnListening([CLI, 'serve', ...['cpu-stress', 'http-check', 'log-pattern-check', 'webhook'].map(exampleAction)]);
  });
  after(async () => {
    assert.equal(await terminate(child), 143);
    target.closeAllConnections();
    await new Promise((resolve) => target.close(resolve));
    logs.remove();
  });

  test('with defaults: what can run passes, actions needing a value are skipped, exit 0', async () => {
    const { code, report } = await check([child.base, '--duration', '1s', '--max-interval', '300ms']);
    assert.equal(code, 0, JSON.stringify(report.rows.filter((r) => r.status === 'fail')));
    assert.equal(report.ok, true);
    for (const name of ['list', 'routes', 'prepare com.example.actionkit.cpu-stress', 'status com.example.actionkit.cpu-stress', 'stop com.example.actionkit.cpu-stress', 'query com.example.actionkit.cpu-stress']) {
      assert.equal(row(report, name).status, 'pass', name);
    }
    assert.equal(row(report, 'run com.example.actionkit.http-check').status, 'skip');
    assert.match(row(report, 'run com.example.actionkit.http-check').detail, /required parameter\(s\) without default: url/);
    assert.match(row(report, 'run com.example.actionkit.log-pattern-check').detail, /without default: logFile \(give --file logFile=<path>\)/);
  });

  test('with --config and --file every action runs and every applicable check passes', async () => {
    const logFile = join(logs.path, 'app.log');
    writeFileSync(logFile, 'INFO started\nINFO ready\n');
    const { code, report } = await check([child.base, '--duration', '1s', '--max-interval', '300ms', '--config', JSON.stringify({ url: `${targetUrl}/hook` }), '--file', `logFile=${logFile}`]);
    assert.equal(code, 0, JSON.stringify(report.rows.filter((r) => r.status !== 'pass')));
    const actions = ['cpu-stress', 'http-check', 'log-pattern-check', 'webhook'].map((name) => `com.example.actionkit.${name}`);
    for (const id of actions) {
      for (const name of [`describe ${id}`, `rules ${id}`, `prepare ${id}`, `start ${id}`, `malformed json ${id}`]) assert.equal(row(report, name).status, 'pass', name);
    }
    // Every skip is a check that does not apply: an endpoint the action does not describe.
    const skips = report.rows.filter((r) => r.status === 'skip');
    for (const skipped of skips) assert.match(skipped.detail, /^no (status|stop|metrics\.query|status or stop) endpoint described$|^no metrics\.query described$/, skipped.name);
    assert.equal(report.counts.fail, 0);
    assert.ok(report.counts.pass >= 25, `${report.counts.pass} passes`);
  });

  test('the table is readable', async () => {
    const { code, stdout } = await cli(['check', child.base, '--action', 'com.example.actionkit.cpu-stress', '--duration', '500ms']);
    assert.equal(code, 0);
    assert.match(stdout, /^RESULT\s+CHECK\s+DETAIL$/m);
    assert.match(stdout, /^PASS\s+stop com\.example\.actionkit\.cpu-stress\s+200 in \d+ ms/m);
    assert.match(stdout, /\d+ checks: \d+ passed, 0 failed, \d+ skipped\n$/);
  });
});

describe('actionkit check --heartbeat', { timeout: TEST_TIMEOUT_MS }, () => {
  test('passes when the extension stops a silent execution on its own', async () => {
    // behave's status interval is 100 ms; with a 200 ms minimum the runtime gives up after ~0.85 s
    // of silence the agent caused; 6 s leaves room for a busy machine.
    const child = await spawnListening([CLI, 'serve', fixture('behave')], { ACTIONKIT_HEARTBEAT_MIN_INTERVAL: '200ms' });
    try {
      const { code, report } = await check([child.base, '--heartbeat', '--heartbeat-timeout', '6s', '--duration', '500ms']);
      assert.equal(code, 0, JSON.stringify(report.rows.filter((r) => r.status === 'fail')));
      const heartbeat = row(report, 'heartbeat fixture.behave');
      assert.equal(heartbeat.status, 'pass');
      assert.match(heartbeat.detail, /Action was stopped by extension: heartbeat timeout/);
    } finally {
      assert.equal(await terminate(child), 143);
    }
  });
});

describe('actionkit check over a unix socket and mutual TLS', { timeout: TEST_TIMEOUT_MS }, () => {
  test('--unix-socket reaches an extension listening on a socket', async () => {
    const dir = tempDir();
    const socketPath = join(dir.path, 'ext.sock');
    const child = await spawnListening([CLI, 'serve', fixture('passthrough')], { STEADYBIT_EXTENSION_UNIX_SOCKET: socketPath });
    try {
      const { code, report } = await check(['http://localhost', '--unix-socket', socketPath, '--duration', '500ms', '--max-interval', '100ms']);
      assert.equal(code, 0, JSON.stringify(report.rows.filter((r) => r.status === 'fail')));
      for (const name of ['list', 'prepare fixture.passthrough', 'status fixture.passthrough', 'stop fixture.passthrough']) assert.equal(row(report, name).status, 'pass', name);
    } finally {
      assert.equal(await terminate(child), 143);
      dir.remove();
    }
  });

  test('--ca, --cert and --key reach an extension that requires client certificates', async () => {
    const dir = tempDir();
    const ca = makeCa(dir.path, 'ca');
    const server = issue(ca, dir.path, 'server', 'server');
    const client = issue(ca, dir.path, 'client', 'client');
    const child = await spawnListening([CLI, 'serve', fixture('passthrough')], {
      STEADYBIT_EXTENSION_TLS_SERVER_CERT: server.certFile,
      STEADYBIT_EXTENSION_TLS_SERVER_KEY: server.keyFile,
      STEADYBIT_EXTENSION_TLS_CLIENT_CAS: ca.certFile,
    });
    try {
      const url = `https://127.0.0.1:${child.port}`;
      const trusted = await check([url, '--ca', ca.certFile, '--cert', client.certFile, '--key', client.keyFile, '--duration', '500ms', '--max-interval', '100ms']);
      assert.equal(trusted.code, 0, JSON.stringify(trusted.report.rows.filter((r) => r.status === 'fail')));
      assert.equal(row(trusted.report, 'stop fixture.passthrough').status, 'pass');
      // Without a client certificate the handshake is refused: nothing can be listed.
      const anonymous = await check([url, '--ca', ca.certFile]);
      assert.equal(anonymous.code, 1);
      assert.deepEqual(anonymous.report.rows.map((r) => [r.name, r.status]), [['list', 'fail']]);
      assert.match(row(anonymous.report, 'list').detail, /request failed/);
      const halfPair = await cli(['check', url, '--cert', client.certFile]);
      assert.equal(halfPair.code, 2);
      assert.match(halfPair.stderr, /--cert and --key go together/);
    } finally {
      assert.equal(await terminate(child), 143);
      dir.remove();
    }
  });
});

describe('actionkit check against a broken extension', { timeout: TEST_TIMEOUT_MS }, () => {
  /** A description of `id` whose endpoints live under `/<prefix>/`; stoppable ones get status (100 ms) and stop. */
  const describeAs = (id: string, prefix: string, stoppable: boolean, changes: Record<string, unknown> = {}): RawReply => ({
    body: {
      id,
      label: 'Broken',
      version: '1.0.0',
      description: 'Hand-written, broken on purpose.',
      kind: 'attack',
      timeControl: 'external',
      parameters: [{ name: 'duration', label: 'Duration', type: 'duration', defaultValue: '1s', required: true }],
      prepare: { method: 'POST', path: `/${prefix}/prepare` },
      start: { method: 'POST', path: `/${prefix}/start` },
      ...(stoppable ? { status: { method: 'POST', path: `/${prefix}/status`, callInterval: '100ms' }, stop: { method: 'POST', path: `/${prefix}/stop` } } : {}),
      ...changes,
    },
  });
  /** A prepare answering `state`, or `onBadJson` when the body is not JSON. */
  const prepareWith =
    (state: object, onBadJson: RawReply = { status: 400, body: { title: 'Failed to parse request body.' } }) =>
    (request: RecordedRequest): RawReply => {
      try {
        JSON.parse(request.body);
      } catch {
        return onBadJson;
      }
      return { body: { state } };
    };
  let server: RawServer;
  before(async () => {
    server = await rawServer({
      // The last entry's path does not start with "/".
      'GET /': () => ({ body: { actions: ['/broken.status', '/broken.rules', '/broken.noversion', '/broken.noheartbeat', 'broken-href'].map((path) => ({ method: 'GET', path })) } }),
      // Status with wrong types, and a framework's HTML error page for malformed JSON.
      'GET /broken.status': () => describeAs('broken.status', 's', true),
      'POST /s/prepare': prepareWith({ ok: true }, { status: 500, body: '<html><h1>500 Internal Server Error</h1></html>', contentType: 'text/html' }),
      'POST /s/start': () => ({ body: { state: { ok: true } } }),
      'POST /s/status': () => ({ body: { completed: 'no', metrics: [{ metric: {}, value: '7' }] } }),
      'POST /s/stop': () => ({ body: {} }),
      // External, but no duration parameter: a registration rule.
      'GET /broken.rules': () => describeAs('broken.rules', 'r', false, { parameters: [] }),
      'POST /r/prepare': prepareWith({}),
      'POST /r/start': () => ({ body: {} }),
      'GET /broken.noversion': () => describeAs('broken.noversion', 'n', false, { version: undefined }),
      // Correct answers, but a silent agent never makes it stop the execution.
      'GET /broken.noheartbeat': () => describeAs('broken.noheartbeat', 'h', true),
      'POST /h/prepare': prepareWith({}),
      'POST /h/start': () => ({ body: {} }),
      'POST /h/status': () => ({ body: { completed: false } }),
      'POST /h/stop': () => ({ body: {} }),
    });
  });
  after(() => server.close());

  test('exits 1 and names the failing rows', async () => {
    const { code, report } = await check([server.url, '--duration', '400ms', '--heartbeat', '--heartbeat-timeout', '300ms']);
    assert.equal(code, 1);
    assert.equal(report.ok, false);
    const failed = report.rows.filter((r) => r.status === 'fail').map((r) => r.name);
    assert.deepEqual(failed.sort(), [
      'describe broken.noversion',
      'heartbeat broken.noheartbeat',
      'heartbeat broken.status',
      'list',
      'malformed json broken.status',
      'rules broken.rules',
      'status broken.status',
      'unknown execution broken.status',
    ]);
    assert.match(row(report, 'list').detail, /actions\[4\]\.path: Invalid path: must start with "\/".*\(found "broken-href"\)/);
    assert.match(row(report, 'describe broken.noversion').detail, /version: .*\(found missing\)/);
    assert.match(row(report, 'rules broken.rules').detail, /timeControl "external" requires a parameter named "duration"/);
    assert.match(row(report, 'malformed json broken.status').detail, /answered 500 with text\/html, not an ActionKitError JSON/);
    assert.match(row(report, 'status broken.status').detail, /completed: .*expected boolean.*\(found "no"\).*metrics\[0\]\.timestamp.*\(found missing\).*metrics\[0\]\.value.*\(found "7"\)/);
    assert.match(row(report, 'heartbeat broken.noheartbeat').detail, /after 300 ms without status calls the execution was not stopped for the heartbeat \(status: completed false\)/);
    assert.match(row(report, 'heartbeat broken.status').detail, /violates StatusResult/);
    // What works is still reported as working.
    for (const name of ['prepare broken.status', 'start broken.status', 'stop broken.status', 'describe broken.status', 'prepare broken.rules', 'status broken.noheartbeat', 'unknown execution broken.noheartbeat']) {
      assert.equal(row(report, name).status, 'pass', name);
    }
  });

  test('an unreachable extension fails the list row', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const { code, report } = await check([`http://127.0.0.1:${port}`]);
    assert.equal(code, 1);
    assert.deepEqual(report.rows.map((r) => [r.name, r.status]), [['list', 'fail']]);
    assert.match(row(report, 'list').detail, /request failed: ECONNREFUSED/);
  });
});
