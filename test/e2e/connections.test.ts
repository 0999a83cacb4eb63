/**
 * The connection cap (ACTIONKIT_MAX_CONNECTIONS, issue 11): a crowd of slow clients cannot lock
 * the agent or the probes out. At the cap the slowest connection is shed — the oldest with an
 * incomplete request, then the longest idle — and only when every connection is busy with a complete
 * request is the new one refused. Real sockets (TCP, TLS, unix), a small cap so each test takes
 * seconds; verdicts depend on the order connections were made, never on timings.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import type { RequestHandler } from 'express';
import { issue, makeCa, type Issued } from '../support/certs.js';
import { eventually, fixture, spawnExtension, start, tempDir, type Running } from '../support/harness.js';

const CAP = 50;

/** Where a test connects: TCP or a unix socket. */
type Target = { port: number; host: string } | { path: string };

/** A client connection whose closing by the server is recorded. */
interface Tracked {
  socket: Socket;
  readonly closed: boolean;
}

function track(socket: Socket): Tracked {
  const tracked = { socket, closed: false };
  socket.on('error', () => undefined);
  // Flowing: a socket whose answer is never read would not report the server's close.
  socket.resume();
  socket.once('close', () => (tracked.closed = true));
  return tracked;
}

function open(target: Target): Promise<Tracked> {
  return new Promise((resolve, reject) => {
    const socket = 'path' in target ? connect(target.path) : connect(target.port, target.host);
    socket.once('connect', () => resolve(track(socket)));
    socket.once('error', reject);
  });
}

/** How a slow client behaves: silent, a request head it never finishes, or a body it never finishes. */
type Slowness = 'silent' | 'partial head' | 'partial body';
const SLOWNESS: readonly Slowness[] = ['silent', 'partial head', 'partial body'];

async function openSlow(target: Target, slowness: Slowness): Promise<Tracked> {
  const tracked = await open(target);
  if (slowness === 'partial head') tracked.socket.write('POST /fixture.passthrough/status HTTP/1.1\r\nHost: localhost\r\nContent-Ty');
  if (slowness === 'partial body') {
    tracked.socket.write('POST /fixture.passthrough/status HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"executionId"');
  }
  return tracked;
}

/**
 * Open `count` slow connections one after the other (so the server accepts them in this order),
 * taking turns through `kinds`.
 */
async function openCrowd(target: Target, count: number, kinds: readonly Slowness[] = SLOWNESS): Promise<Tracked[]> {
  const crowd: Tracked[] = [];
  for (let i = 0; i < count; i++) crowd.push(await openSlow(target, kinds[i % kinds.length]!));
  return crowd;
}

/** Wait until exactly the `count` oldest of `crowd` are closed, and the rest still open. */
async function oldestShed(crowd: readonly Tracked[], count: number): Promise<void> {
  await eventually(`${count} connections shed`, () => (crowd.filter((c) => c.closed).length >= count ? true : undefined));
  const closed = crowd.flatMap((c, index) => (c.closed ? [index] : []));
  assert.deepEqual(closed, [...Array(count).keys()], 'the oldest connections are shed, in order');
}

/** Send `GET path` on an open connection (keep-alive) and read the answer. */
function getOn(connection: Tracked, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = received.subarray(0, end).toString('latin1');
      const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
      if (received.length < end + 4 + length) return;
      connection.socket.off('data', onData);
      connection.socket.off('close', onClose);
      resolve({ status: Number(head.split(' ')[1]), body: received.subarray(end + 4, end + 4 + length).toString('utf8') });
    };
    const onClose = (): void => reject(new Error(`connection closed before the answer to GET ${path}`));
    connection.socket.on('data', onData);
    connection.socket.once('close', onClose);
    connection.socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  });
}

/** `GET path` on a new connection (TCP port or unix socket). */
function get(target: { port: number } | { socketPath: string }, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ ...('port' in target ? { host: '127.0.0.1', port: target.port } : target), path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The value of one series in a Prometheus scrape. */
function sample(metrics: string, series: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line !== undefined, `no ${series} in the scrape`);
  return Number(line.slice(series.length + 1));
}

function closeAll(connections: readonly Tracked[]): void {
  for (const connection of connections) connection.socket.destroy();
}

describe('connection cap', () => {
  test('TCP: the oldest incomplete connections are shed first, an older idle agent connection is kept; new requests, the probes and metrics answer', async () => {
    const running = await start({ actions: [fixture('passthrough')], maxConnections: CAP });
    const target = { port: Number(new URL(running.base).port), host: '127.0.0.1' };
    const connections: Tracked[] = [];
    try {
      const agent = await open(target);
      connections.push(agent);
      assert.equal((await getOn(agent, '/')).status, 200);
      const crowd = await openCrowd(target, CAP + 10);
      connections.push(...crowd);
      // CAP + 11 connections: the 11 oldest incomplete ones go; the idle agent connection, older, stays.
      await oldestShed(crowd, 11);
      assert.equal(agent.closed, false, 'the idle agent connection was shed before incomplete ones');
      // A new connection makes room by shedding the next oldest.
      assert.equal((await get(target, '/')).status, 200);
      await oldestShed(crowd, 12);
      assert.equal((await getOn(agent, '/fixture.passthrough')).status, 200);
      assert.equal((await get({ port: running.healthPort! }, '/health/liveness')).status, 200);
      const metrics = (await get({ port: running.healthPort! }, '/metrics')).body;
      assert.equal(sample(metrics, 'actionkit_http_connections_shed_total{server="api",reason="incomplete_request"}'), 12);
      assert.equal(sample(metrics, 'actionkit_http_connections_shed_total{server="api",reason="idle"}'), 0);
      assert.equal(sample(metrics, 'actionkit_http_connections_shed_total{server="api",reason="refused"}'), 0);
      assert.ok(sample(metrics, 'actionkit_http_open_connections{server="api"}') <= CAP);
    } finally {
      closeAll(connections);
      await running.close();
    }
  });

  test('every connection busy with a complete request: the new one is refused, the busy ones are all answered', async () => {
    let held = 0;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const hold: RequestHandler = (req, res, next) => {
      if (req.path !== '/hold') return next();
      held++;
      void released.then(() => res.json({ held: true }));
    };
    const running = await start({ actions: [fixture('passthrough')], maxConnections: CAP, routers: [hold] });
    const target = { port: Number(new URL(running.base).port), host: '127.0.0.1' };
    const busy: Tracked[] = [];
    try {
      for (let i = 0; i < CAP; i++) busy.push(await open(target));
      const answers = busy.map((connection) => getOn(connection, '/hold'));
      await eventually('every request held', () => (held === CAP ? true : undefined));
      const newcomer = await open(target);
      await eventually('the new connection closed', () => (newcomer.closed ? true : undefined));
      assert.ok(busy.every((connection) => !connection.closed), 'a busy connection was shed');
      release();
      for (const answer of await Promise.all(answers)) assert.equal(answer.status, 200);
      const metrics = (await get({ port: running.healthPort! }, '/metrics')).body;
      assert.equal(sample(metrics, 'actionkit_http_connections_shed_total{server="api",reason="refused"}'), 1);
      assert.equal(sample(metrics, 'actionkit_http_connections_shed_total{server="api",reason="incomplete_request"}'), 0);
    } finally {
      release();
      closeAll(busy);
      await running.close();
    }
  });

  test('clients that never read their (large) answers are shed as stalled readers; the agent is answered', async () => {
    const cap = 5;
    // An answer far larger than socket buffers: unread, it stays half-written, its request busy.
    let answering = 0;
    const big: RequestHandler = (req, res, next) => {
      if (req.path !== '/big') return next();
      answering++;
      res.type('text/plain').send('x'.repeat(16 * 1024 * 1024));
    };
    const running = await start({ actions: [fixture('passthrough')], maxConnections: cap, routers: [big] });
    const port = Number(new URL(running.base).port);
    const readers: Socket[] = [];
    try {
      for (let i = 0; i < cap; i++) {
        const socket = connect(port, '127.0.0.1');
        socket.on('error', () => undefined);
        await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
        socket.pause(); // never reads
        socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
        readers.push(socket);
      }
      await eventually('every reader is being answered', () => (answering === cap ? true : undefined));
      // Every connection is busy with a complete request, none slow or idle: without shedding a
      // stalled reader, the agent's connection would be refused for as long as the readers like.
      const answered = await eventually('the agent answered', () => get({ port }, '/').then((answer) => (answer.status === 200 ? answer : undefined), () => undefined), 30_000);
      assert.equal(answered.status, 200);
      const metrics = (await get({ port: running.healthPort! }, '/metrics')).body;
      assert.ok(sample(metrics, 'actionkit_http_connections_shed_total{server="api",reason="stalled_reader"}') >= 1);
    } finally {
      for (const socket of readers) socket.destroy();
      await running.close();
    }
  });

  test('unix socket: the probes on the socket answer while a crowd holds the cap', async (t) => {
    const dir = tempDir('actionkit-sock-');
    t.after(() => dir.remove());
    const socketPath = join(dir.path, 'ext.sock');
    const running = await start({ actions: [fixture('passthrough')], maxConnections: CAP, unixSocket: socketPath });
    let crowd: Tracked[] = [];
    try {
      crowd = await openCrowd({ path: socketPath }, CAP + 10);
      await oldestShed(crowd, 10);
      assert.equal((await get({ socketPath }, '/health/liveness')).status, 200);
      assert.equal((await get({ socketPath }, '/health/readiness')).status, 200);
      assert.equal((await get({ socketPath }, '/')).status, 200);
      // Each of those connections closed after its answer: only the first needed room.
      await oldestShed(crowd, 11);
    } finally {
      closeAll(crowd);
      await running.close();
    }
  });

  test('the probe port has a cap of its own: a crowd there does not stop liveness', async () => {
    const running = await start({ actions: [fixture('passthrough')] });
    let crowd: Tracked[] = [];
    try {
      const probeCap = 256;
      crowd = await openCrowd({ port: running.healthPort!, host: '127.0.0.1' }, probeCap + 10);
      await oldestShed(crowd, 10);
      assert.equal((await get({ port: running.healthPort! }, '/health/liveness')).status, 200);
      await oldestShed(crowd, 11);
      const metrics = (await get({ port: running.healthPort! }, '/metrics')).body;
      // The liveness connection closed after its answer: the scrape needed no room.
      assert.equal(sample(metrics, 'actionkit_http_connections_shed_total{server="probes",reason="incomplete_request"}'), 11);
    } finally {
      closeAll(crowd);
      await running.close();
    }
  });
});

describe('connection cap over TLS', () => {
  let pki: { path: string; remove(): void };
  let server: Issued;
  let ca: Issued;
  before(() => {
    pki = tempDir('actionkit-pki-');
    ca = makeCa(pki.path, 'cap-ca');
    server = issue(ca, pki.path, 'cap-server', 'server');
  });
  after(() => pki.remove());

  test('connections stuck before the handshake are shed oldest first; an established idle TLS connection is kept and serves', async () => {
    const running = await start({ actions: [fixture('passthrough')], maxConnections: CAP, tlsServerCert: server.certFile, tlsServerKey: server.keyFile });
    const port = Number(new URL(running.base).port);
    const connections: Tracked[] = [];
    try {
      const tlsSocket = tlsConnect({ host: '127.0.0.1', port, ca: ca.cert });
      await new Promise<void>((resolve, reject) => tlsSocket.once('secureConnect', resolve).once('error', reject));
      const agent = track(tlsSocket);
      connections.push(agent);
      assert.equal((await getOn(agent, '/')).status, 200);
      // Silent: anything else is not a TLS handshake and the server closes it at once.
      const crowd = await openCrowd({ port, host: '127.0.0.1' }, CAP + 10, ['silent']);
      connections.push(...crowd);
      await oldestShed(crowd, 11);
      assert.equal(agent.closed, false, 'the idle TLS connection was shed before incomplete ones');
      assert.equal((await getOn(agent, '/fixture.passthrough')).status, 200);
    } finally {
      closeAll(connections);
      await running.close();
    }
  });

  test('close() ends within its bound while a TCP connection on the TLS port never starts its handshake', async () => {
    const running = await start({ actions: [fixture('passthrough')], stopAllTimeoutMs: 1_000, tlsServerCert: server.certFile, tlsServerKey: server.keyFile });
    const silent = await open({ port: Number(new URL(running.base).port), host: '127.0.0.1' });
    try {
      // The shutdown bound is stopAllTimeoutMs + 5 s; TLS's own handshake timeout is 120 s.
      const outcome = await Promise.race([running.close().then(() => 'closed'), new Promise((resolve) => setTimeout(() => resolve('still closing after 30 s'), 30_000))]);
      assert.equal(outcome, 'closed');
    } finally {
      silent.socket.destroy();
    }
  });
});

describe('connection cap from the environment', () => {
  test('ACTIONKIT_MAX_CONNECTIONS caps a deployed extension; shedding is logged as a warning at most once per 10 s', async () => {
    const cap = 20;
    const child = await spawnExtension([fixture('passthrough')], { ACTIONKIT_MAX_CONNECTIONS: String(cap) });
    let crowd: Tracked[] = [];
    try {
      const startedMs = performance.now();
      crowd = await openCrowd({ port: child.port, host: '127.0.0.1' }, 2 * cap);
      await oldestShed(crowd, cap);
      const elapsedMs = performance.now() - startedMs;
      assert.equal((await get({ port: child.port }, '/')).status, 200);
      const warnings = child.logs
        .map((line) => JSON.parse(line) as { message?: string; shed?: Record<string, number>; maxConnections?: number; server?: string; setting?: string })
        .filter((entry) => entry.message?.startsWith('connection cap reached') === true);
      assert.ok(warnings.length >= 1 && warnings.length <= 1 + Math.floor(elapsedMs / 10_000), `${warnings.length} warnings in ${elapsedMs.toFixed(0)} ms`);
      assert.deepEqual(warnings[0]!.shed, { incomplete_request: 1, idle: 0, stalled_reader: 0, refused: 0 });
      assert.equal(warnings[0]!.maxConnections, cap);
      assert.equal(warnings[0]!.server, 'api');
      assert.equal(warnings[0]!.setting, 'ACTIONKIT_MAX_CONNECTIONS');
    } finally {
      closeAll(crowd);
      child.process.kill('SIGKILL');
      await child.exited;
    }
  });
});
