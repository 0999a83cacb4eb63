/**
 * Where the extension listens (sdk-behaviour.md §2.1.3, §2.2): HTTPS, mutual TLS, certificate
 * rotation without restart, start-up errors naming the setting or file, and the unix socket with the
 * probes on it. Real sockets, real TLS handshakes against a PKI made at test time with openssl.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { ConfigError, createExtension, type Extension, type ExtensionOptions } from '../../src/index.js';
import { resolveOptions } from '../../src/config.js';
import { issue, makeCa, type Issued } from '../support/certs.js';
import { eventually, fixture, sleep, spawnExtension, tempDir, type Child } from '../support/harness.js';

const ACTION = 'fixture.passthrough';

let pki: { path: string; remove(): void };
let ca: Issued;
let wrongCa: Issued;
let server1: Issued;
let server2: Issued;
let client: Issued;
let wrongClient: Issued;

before(() => {
  pki = tempDir('actionkit-pki-');
  ca = makeCa(pki.path, 'test-ca');
  wrongCa = makeCa(pki.path, 'wrong-ca');
  server1 = issue(ca, pki.path, 'server-1', 'server');
  server2 = issue(ca, pki.path, 'server-2', 'server');
  client = issue(ca, pki.path, 'client', 'client');
  wrongClient = issue(wrongCa, pki.path, 'wrong-client', 'client');
});
after(() => pki.remove());

/** Test defaults: one thread per lane, quiet, no signal handlers. */
function options(extra: Partial<ExtensionOptions>): ExtensionOptions {
  return {
    actions: [fixture('passthrough')],
    port: 0,
    host: '127.0.0.1',
    healthPort: 0,
    handleSignals: false,
    logLevel: 'fatal',
    handlerThreads: 1,
    // In the test runner's process: leave its OOM-killer standing alone.
    oomScoreAdj: null,
    ...extra,
  };
}

interface Reply {
  status: number;
  body: string;
  /** Serial of the server certificate (HTTPS only). */
  serialNumber?: string;
}

interface Trust {
  ca: string;
  cert?: string;
  key?: string;
}

/** One HTTPS request on a fresh connection (no agent: no reused connection or TLS session). */
function httpsGet(port: number, path: string, trust: Trust, method = 'GET', body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      { host: '127.0.0.1', port, path, method, agent: false, ...trust, headers: body === undefined ? {} : { 'content-type': 'application/json' } },
      (res) => {
        const serialNumber = (res.socket as import('node:tls').TLSSocket).getPeerCertificate().serialNumber;
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), serialNumber }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** One plain HTTP request, on TCP or on a unix socket. */
function httpGet(target: { port: number } | { socketPath: string }, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const where = 'port' in target ? { host: '127.0.0.1', port: target.port } : { socketPath: target.socketPath };
    const req = httpRequest({ ...where, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The serial of the certificate a fresh TLS connection is served, trusting `trust.ca`. */
function servedSerial(port: number, trust: Trust): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ...trust }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.end();
      resolve(serial);
    });
    socket.on('error', reject);
  });
}

/** Assert that the request fails at the connection level: no HTTP status ever arrives. */
async function assertNoAnswer(attempt: Promise<Reply>, what: string): Promise<string> {
  try {
    const reply = await attempt;
    assert.fail(`${what}: expected no HTTP answer, got ${reply.status} ${reply.body.slice(0, 100)}`);
  } catch (error) {
    if (error instanceof assert.AssertionError) throw error;
    return (error as NodeJS.ErrnoException).code ?? (error as Error).message;
  }
}

/** Copy a certificate and key to `dir` as `server.crt`/`server.key` (the files the extension is pointed at). */
function install(pair: Issued, dir: string): { certFile: string; keyFile: string } {
  const certFile = join(dir, 'server.crt');
  const keyFile = join(dir, 'server.key');
  writeFileSync(certFile, pair.cert);
  writeFileSync(keyFile, pair.key);
  return { certFile, keyFile };
}

describe('HTTPS (options)', () => {
  let extension: Extension;
  let port: number;
  let healthPort: number;
  let live: { path: string; remove(): void };

  before(async () => {
    live = tempDir('actionkit-tls-');
    const files = install(server1, live.path);
    extension = await createExtension(options({ tlsServerCert: files.certFile, tlsServerKey: files.keyFile }));
    const info = await extension.listen();
    assert.deepEqual({ tls: info.tls, mutualTls: info.mutualTls, socketPath: info.socketPath }, { tls: true, mutualTls: false, socketPath: undefined });
    port = info.port!;
    healthPort = info.healthPort!;
  });
  after(async () => {
    await extension.close();
    live.remove();
  });

  test('serves the action list and a prepare over HTTPS to a client trusting the CA', async () => {
    const list = await httpsGet(port, '/', { ca: ca.cert });
    assert.equal(list.status, 200);
    assert.equal(list.serialNumber, server1.serialNumber);
    assert.match(list.body, /fixture\.passthrough/);
    const prepared = await httpsGet(port, `/${ACTION}/prepare`, { ca: ca.cert }, 'POST', JSON.stringify({ executionId: randomUUID(), config: {}, properties: {} }));
    assert.equal(prepared.status, 200, prepared.body);
    assert.match(prepared.body, /prepare message/);
  });

  test('a client not trusting the CA refuses the server', async () => {
    const code = await assertNoAnswer(httpsGet(port, '/', { ca: wrongCa.cert }), 'client trusting another CA');
    assert.match(code, /UNABLE_TO_VERIFY|SELF_SIGNED|CERT/);
  });

  test('plain HTTP on the TLS port gets no HTTP answer', async () => {
    await assertNoAnswer(httpGet({ port }, '/'), 'plain HTTP to the HTTPS port');
    // The server is unharmed by it.
    assert.equal((await httpsGet(port, '/', { ca: ca.cert })).status, 200);
  });

  test('probes stay plain HTTP on the health port', async () => {
    assert.equal((await httpGet({ port: healthPort }, '/health/readiness')).status, 200);
    assert.equal((await httpGet({ port: healthPort }, '/health/liveness')).status, 200);
  });
});

describe('TLS start-up errors', () => {
  test('only the certificate, only the key, or client CAs without both: ConfigError naming what is missing', async () => {
    await assert.rejects(createExtension(options({ tlsServerCert: server1.certFile })), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /TLS server key missing: STEADYBIT_EXTENSION_TLS_SERVER_KEY \(option tlsServerKey\) is not set/);
      return true;
    });
    await assert.rejects(createExtension(options({ tlsServerKey: server1.keyFile })), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /TLS server certificate missing: STEADYBIT_EXTENSION_TLS_SERVER_CERT \(option tlsServerCert\) is not set/);
      return true;
    });
    assert.throws(
      () => resolveOptions({ actions: [] }, { STEADYBIT_EXTENSION_TLS_CLIENT_CAS: ca.certFile }),
      /STEADYBIT_EXTENSION_TLS_CLIENT_CAS \(option tlsClientCas\) is set, but mutual TLS needs HTTPS/,
    );
    const env = resolveOptions({ actions: [] }, { STEADYBIT_EXTENSION_TLS_CLIENT_CAS: ` ${ca.certFile} , ${pki.path},`, STEADYBIT_EXTENSION_TLS_SERVER_CERT: 'c', STEADYBIT_EXTENSION_TLS_SERVER_KEY: 'k' });
    assert.deepEqual(env.tlsClientCas, [ca.certFile, pki.path]);
    assert.throws(() => resolveOptions({ actions: [] }, { ACTIONKIT_TLS_RELOAD_CHECK: '1ms' }), /ACTIONKIT_TLS_RELOAD_CHECK="1ms": expected at least 10ms/);
  });

  test('from the environment: the process exits 1 naming the missing variable', async () => {
    await assert.rejects(spawnExtension([fixture('passthrough')], { STEADYBIT_EXTENSION_TLS_SERVER_CERT: server1.certFile }), (error: Error) => {
      assert.match(error.message, /extension exited \(1\) before listening/);
      assert.match(error.message, /ConfigError: Invalid configuration: TLS server key missing: STEADYBIT_EXTENSION_TLS_SERVER_KEY/);
      return true;
    });
  });

  test('missing, unparsable or mismatched files: listen() rejects naming the file; the fixed files then serve', async () => {
    const dir = tempDir('actionkit-tls-bad-');
    const certFile = join(dir.path, 'server.crt');
    const keyFile = join(dir.path, 'server.key');
    const caFile = join(dir.path, 'clients.pem');
    const extension = await createExtension(options({ tlsServerCert: certFile, tlsServerKey: keyFile, tlsClientCas: [caFile] }));
    const rejectsWith = (pattern: RegExp): Promise<void> =>
      assert.rejects(extension.listen(), (error: unknown) => {
        assert.ok(error instanceof ConfigError, String(error));
        assert.match(error.message, pattern);
        return true;
      });
    try {
      await rejectsWith(new RegExp(`STEADYBIT_EXTENSION_TLS_CLIENT_CAS\\) ${caFile}: cannot read it \\(ENOENT\\)`));
      writeFileSync(caFile, 'not a certificate\n');
      await rejectsWith(new RegExp(`STEADYBIT_EXTENSION_TLS_SERVER_CERT\\) ${certFile}: cannot read it \\(ENOENT\\)`));
      writeFileSync(certFile, server1.cert.slice(0, 200));
      writeFileSync(keyFile, server1.key);
      await rejectsWith(new RegExp(`STEADYBIT_EXTENSION_TLS_SERVER_CERT\\) ${certFile}: not a PEM certificate`));
      writeFileSync(certFile, server1.cert);
      writeFileSync(keyFile, 'garbage');
      await rejectsWith(new RegExp(`STEADYBIT_EXTENSION_TLS_SERVER_KEY\\) ${keyFile}: not an unencrypted PEM private key`));
      writeFileSync(keyFile, server2.key);
      await rejectsWith(new RegExp(`STEADYBIT_EXTENSION_TLS_SERVER_KEY\\) ${keyFile} does not belong to the certificate in ${certFile}`));
      writeFileSync(keyFile, server1.key);
      await rejectsWith(new RegExp(`STEADYBIT_EXTENSION_TLS_CLIENT_CAS\\) ${caFile}: no PEM certificate in it`));
      copyFileSync(ca.certFile, caFile);
      const info = await extension.listen();
      assert.equal(info.mutualTls, true);
      assert.equal((await httpsGet(info.port!, '/', { ca: ca.cert, cert: client.cert, key: client.key })).status, 200);
    } finally {
      await extension.close();
      dir.remove();
    }
  });
});

describe('mutual TLS and rotation (environment, child process)', () => {
  let child: Child;
  let live: { path: string; remove(): void };
  let files: { certFile: string; keyFile: string };
  const trusted = (): Trust => ({ ca: ca.cert, cert: client.cert, key: client.key });

  before(async () => {
    live = tempDir('actionkit-mtls-');
    files = install(server1, live.path);
    // CAs as the reference takes them: a comma list of files and folders. The test CA is only in
    // a nested folder (walked recursively, next to a file without certificates, which is skipped).
    const otherCa = makeCa(live.path, 'other-ca');
    const folder = join(live.path, 'cas', 'nested');
    mkdirSync(folder, { recursive: true });
    copyFileSync(ca.certFile, join(folder, 'ca.pem'));
    writeFileSync(join(live.path, 'cas', 'README'), 'client CAs live here\n');
    child = await spawnExtension([fixture('passthrough')], {
      STEADYBIT_EXTENSION_TLS_SERVER_CERT: files.certFile,
      STEADYBIT_EXTENSION_TLS_SERVER_KEY: files.keyFile,
      STEADYBIT_EXTENSION_TLS_CLIENT_CAS: `${otherCa.certFile}, ${join(live.path, 'cas')}`,
      ACTIONKIT_TLS_RELOAD_CHECK: '50ms',
      ACTIONKIT_HANDLER_THREADS: '1',
    });
  });
  after(async () => {
    child.process.kill('SIGTERM');
    await child.exited;
    live.remove();
  });

  test('a client with a certificate from a configured CA is served', async () => {
    const reply = await httpsGet(child.port, '/', trusted());
    assert.equal(reply.status, 200);
    assert.match(reply.body, /fixture\.passthrough/);
  });

  test('no client certificate, or one from another CA: the handshake fails, no HTTP answer', async () => {
    await assertNoAnswer(httpsGet(child.port, '/', { ca: ca.cert }), 'client without a certificate');
    await assertNoAnswer(httpsGet(child.port, '/', { ca: ca.cert, cert: wrongClient.cert, key: wrongClient.key }), 'client with a wrong-CA certificate');
    // Refused handshakes are debug noise, not errors (the child logs at info).
    assert.ok(!child.logs.some((line) => /handshake/i.test(line)), child.logs.join('\n'));
  });

  test('rotation: a new certificate and key are served to new connections without restart', async () => {
    assert.equal(await servedSerial(child.port, trusted()), server1.serialNumber);
    // An open connection from before the rotation keeps working on its own context.
    const held = await new Promise<import('node:tls').TLSSocket>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: child.port, servername: 'localhost', ...trusted() }, () => resolve(socket));
      socket.on('error', reject);
    });
    const mark = child.logs.length;
    install(server2, live.path);
    const serial = await eventually('the rotated certificate on a new connection', async () => {
      const seen = await servedSerial(child.port, trusted());
      return seen === server2.serialNumber ? seen : undefined;
    }, 5_000);
    assert.equal(serial, server2.serialNumber);
    assert.equal(held.getPeerCertificate().serialNumber, server1.serialNumber);
    held.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    const raw = await new Promise<string>((resolve) => {
      let text = '';
      held.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
      held.on('end', () => resolve(text));
    });
    assert.match(raw, /^HTTP\/1\.1 200 OK/);
    assert.ok(child.logs.slice(mark).some((line) => line.includes('TLS files changed: new connections use the new certificate') && line.includes(server2.serialNumber)));
  });

  test('an invalid replacement (mismatched pair, then a half-written certificate) keeps the previous certificate serving', async () => {
    assert.equal(await servedSerial(child.port, trusted()), server2.serialNumber);
    const warnings = (since: number, reason: string): string[] =>
      child.logs.slice(since).filter((line) => line.includes('still serving the previous certificate') && line.includes(reason));
    // Every intermediate state below is invalid, whenever a check happens to look.
    let mark = child.logs.length;
    writeFileSync(files.certFile, server1.cert); // the key is still server2's: mismatched
    await eventually('a warning about the mismatched pair', () => (warnings(mark, 'does not belong').length > 0 ? true : undefined), 5_000);
    assert.equal(await servedSerial(child.port, trusted()), server2.serialNumber);
    mark = child.logs.length;
    writeFileSync(files.certFile, server1.cert.slice(0, server1.cert.length / 2)); // half-written
    writeFileSync(files.keyFile, server1.key);
    await eventually('a warning about the unparsable certificate', () => (warnings(mark, 'not a PEM certificate').length > 0 ? true : undefined), 5_000);
    await sleep(150); // let a check of the final state (if the first warning was about the one before) happen
    const warned = warnings(mark, 'not a PEM certificate').length;
    // Many check periods later: still the old certificate, and no repeated warning for the same files.
    await sleep(400);
    assert.equal(warnings(mark, 'not a PEM certificate').length, warned);
    assert.ok(warned <= 2, `one warning per file state, got ${warned}`);
    assert.equal(await servedSerial(child.port, trusted()), server2.serialNumber);
    assert.equal((await httpsGet(child.port, '/', trusted())).status, 200);
    // Finishing the write completes the rotation.
    writeFileSync(files.certFile, server1.cert);
    await eventually('the completed rotation', async () => ((await servedSerial(child.port, trusted())) === server1.serialNumber ? true : undefined), 5_000);
  });
});

describe('ports that cannot be used', () => {
  /** A port some other server holds for the duration of `use`. */
  async function withTakenPort<T>(use: (port: number) => Promise<T>): Promise<T> {
    const holder = createNetServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    try {
      return await use((holder.address() as { port: number }).port);
    } finally {
      holder.close();
    }
  }

  test('a taken API or probe port: listen() rejects with a ConfigError naming the port and its variable; nothing stays open', async () => {
    await withTakenPort(async (taken) => {
      const api = await createExtension(options({ port: taken }));
      try {
        await assert.rejects(api.listen(), (error: Error) => error instanceof ConfigError && error.message.startsWith(`Cannot listen on port ${taken} (STEADYBIT_EXTENSION_PORT): listen EADDRINUSE`));
      } finally {
        await api.close();
      }
      // The probe port taken: the API port it opened first is closed again.
      const free = createNetServer();
      await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', resolve));
      const apiPort = (free.address() as { port: number }).port;
      await new Promise<void>((resolve) => free.close(() => resolve()));
      const probes = await createExtension(options({ port: apiPort, healthPort: taken }));
      try {
        await assert.rejects(probes.listen(), (error: Error) => error instanceof ConfigError && error.message.startsWith(`Cannot listen on port ${taken} (STEADYBIT_EXTENSION_HEALTH_PORT)`));
        const reuse = createNetServer();
        await new Promise<void>((resolve, reject) => reuse.once('error', reject).listen(apiPort, '127.0.0.1', resolve));
        reuse.close();
      } finally {
        await probes.close();
      }
    });
  });

  test('npm start on a taken port: one line naming it, exit 1, no stack trace', async () => {
    await withTakenPort(async (taken) => {
      const child = spawn(process.execPath, [fileURLToPath(new URL('../../example/main.js', import.meta.url))], {
        env: { PATH: process.env['PATH'] ?? '', STEADYBIT_EXTENSION_PORT: String(taken), STEADYBIT_EXTENSION_HEALTH_PORT: '0', STEADYBIT_EXTENSION_OOM_SCORE_ADJ: 'off' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      assert.equal(code, 1, stderr);
      assert.match(stderr, new RegExp(`^Cannot listen on port ${taken} \\(STEADYBIT_EXTENSION_PORT\\): listen EADDRINUSE`, 'm'));
      assert.doesNotMatch(stderr, /^\s+at /m, 'a stack trace');
    });
  });
});

describe('unix socket', () => {
  test('missing parent folder created (0755), probes and actions on the socket, TLS ignored, socket removed on close', async (t) => {
    const dir = tempDir('actionkit-sock-');
    const socketPath = join(dir.path, 'run', 'steadybit', 'ext.sock');
    t.after(() => dir.remove());
    const extension = await createExtension(options({ unixSocket: socketPath, tlsServerCert: server1.certFile, tlsServerKey: server1.keyFile }));
    try {
      const info = await extension.listen();
      assert.deepEqual(info, { port: undefined, socketPath, tls: false, mutualTls: false, healthPort: undefined });
      // 0755 as the reference's MkdirAll, less what the umask takes away.
      const folderMode = 0o755 & ~process.umask();
      assert.equal(statSync(join(dir.path, 'run')).mode & 0o777, folderMode);
      assert.equal(statSync(join(dir.path, 'run', 'steadybit')).mode & 0o777, folderMode);
      assert.ok(statSync(socketPath).isSocket());
      const list = await httpGet({ socketPath }, '/');
      assert.equal(list.status, 200);
      assert.match(list.body, /fixture\.passthrough/);
      assert.equal((await httpGet({ socketPath }, '/health/readiness')).status, 200);
      assert.equal((await httpGet({ socketPath }, '/health/liveness')).status, 200);
      // Anything else is still the extension's (its JSON 404), not the probes'.
      const missing = await httpGet({ socketPath }, '/health/other');
      assert.equal(missing.status, 404);
      assert.match(missing.body, /nothing is served at this path/);
    } finally {
      await extension.close();
    }
    assert.equal(existsSync(socketPath), false, 'the socket file is removed on close');
  });

  test('a stale socket file is removed; a live socket or a non-socket path is refused', async (t) => {
    const dir = tempDir('actionkit-sock-');
    t.after(() => dir.remove());
    const socketPath = join(dir.path, 'ext.sock');
    // A live socket: another server accepts on it.
    const other = createNetServer((socket) => socket.end());
    await new Promise<void>((resolve) => other.listen(socketPath, resolve));
    const extension = await createExtension(options({ unixSocket: socketPath }));
    try {
      await assert.rejects(extension.listen(), new RegExp(`STEADYBIT_EXTENSION_UNIX_SOCKET=${socketPath}: another process is listening on this socket`));
      await new Promise<void>((resolve) => other.close(() => resolve()));
      // A stale socket: left behind by a process that was killed.
      const killed = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => killed.stdout.once('data', () => resolve()));
      killed.kill('SIGKILL');
      await new Promise((resolve) => killed.once('exit', resolve));
      assert.ok(statSync(socketPath).isSocket(), 'the killed process left its socket file');
      const info = await extension.listen();
      assert.equal(info.socketPath, socketPath);
      assert.equal((await httpGet({ socketPath }, '/health/readiness')).status, 200);
    } finally {
      await extension.close();
    }
    writeFileSync(socketPath, 'not a socket');
    const refused = await createExtension(options({ unixSocket: socketPath }));
    try {
      await assert.rejects(refused.listen(), /the path exists and is not a socket; not removing it/);
      assert.equal(readFileSync(socketPath, 'utf8'), 'not a socket');
    } finally {
      await refused.close();
    }
  });
});
