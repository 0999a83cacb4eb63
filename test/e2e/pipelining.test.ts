/**
 * What reaches the server below the level of a well-formed, one-at-a-time request: a request target
 * Node's HTTP parser takes but `url.parse` refuses, and requests pipelined on one keep-alive
 * connection behind one not yet answered, whose client then leaves. Node never emits `close` for
 * such a queued response; everything the app holds per request must end with the connection
 * instead (`src/http/exchange.ts`): the access line, the large body's read turn.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { eventually, fixture, spawnExtension, start, tempDir, type Child, type Running } from '../support/harness.js';

const TEST_TIMEOUT_MS = 120_000;

/** Write `text` on a fresh connection; resolves with what came back once the server closed it, or after `closeAfterMs` when this side closes it. */
function raw(port: number, text: string, closeAfterMs: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
    socket.on('error', () => resolve(received));
    socket.on('close', () => resolve(received));
    socket.write(text);
    setTimeout(() => socket.destroy(), closeAfterMs);
  });
}

/** A raw POST of `body` as JSON. */
function post(path: string, body: unknown): string {
  const text = JSON.stringify(body);
  return `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`;
}

describe('a request target that url.parse refuses', () => {
  test('is a JSON 400 with the envelope, and the extension keeps running', { timeout: TEST_TIMEOUT_MS }, async () => {
    const child = await spawnExtension([fixture('behave')]);
    try {
      for (const target of ['http://[/fixture.behave', 'https://a]b/']) {
        const answer = await raw(child.port, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, 10_000);
        assert.match(answer, /^HTTP\/1\.1 400 /, target);
        assert.match(answer, /\r\nrequest-id: /i, target);
        assert.match(answer, /"title":"Invalid request target"/, target);
      }
      assert.equal((await child.agent.request('GET', '/')).status, 200, 'still serving');
    } finally {
      child.process.kill('SIGKILL');
    }
  });

  test('served by http.createServer(extension.app): no uncaught exception', { timeout: TEST_TIMEOUT_MS }, async () => {
    const running = await start({ actions: [fixture('passthrough')] });
    const server = http.createServer(running.extension.app);
    const uncaught: unknown[] = [];
    const collect = (error: unknown): void => void uncaught.push(error);
    process.prependListener('uncaughtException', collect);
    try {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const answer = await raw((server.address() as net.AddressInfo).port, 'GET https://a]b/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 10_000);
      assert.match(answer, /^HTTP\/1\.1 400 /);
      assert.deepEqual(uncaught, []);
    } finally {
      process.off('uncaughtException', collect);
      await new Promise((resolve) => server.close(resolve));
      await running.close();
    }
  });
});

describe('requests pipelined behind an unanswered one, their client gone', () => {
  let child: Child;
  before(async () => (child = await spawnExtension([fixture('behave')])));
  after(() => child.process.kill('SIGKILL'));

  test('each still gets its access line, and their large bodies give back their read turns', { timeout: TEST_TIMEOUT_MS }, async () => {
    // More connections than large bodies are read at once (8): each holds a prepare that waits for
    // a trigger and, queued behind it, a status with a body above 16 KiB; the client leaves once
    // the server has both, before either is answered.
    const connections = 9;
    const files = tempDir('actionkit-pipelining-');
    const trigger = join(files.path, 'go');
    const linesBefore = child.logs.length;
    const sockets = Array.from({ length: connections }, () => {
      const socket = net.connect(child.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.write(
        post('/fixture.behave/prepare', { executionId: randomUUID(), config: { prepare: 'wait-trigger', trigger }, properties: {} }) +
          post('/fixture.behave/status', { executionId: randomUUID(), state: { pad: 'x'.repeat(20_000) } }),
      );
      return socket;
    });
    try {
      // Every status was decoded, so every connection's two requests reached the server.
      await eventually('the large statuses to be decoded', async () => ((await largeRequestTasks(child)) >= connections ? true : undefined), 30_000);
      for (const socket of sockets) socket.destroy();
      // Every prepare and every queued status is logged, as abandoned: 499, nothing of any answer
      // reached the client (a status answered while queued behind its prepare was never sent either).
      const abandoned = await eventually(
        `${2 * connections} access lines`,
        () => {
          const lines = child.logs.slice(linesBefore).filter((line) => line.includes('request abandoned by the client'));
          return lines.length >= 2 * connections ? lines.map((line) => JSON.parse(line) as { status: number; path: string }) : undefined;
        },
        30_000,
      );
      assert.equal(abandoned.length, 2 * connections);
      assert.deepEqual(new Set(abandoned.map((line) => line.status)), new Set([499]));
      assert.equal(abandoned.filter((line) => line.path === '/fixture.behave/status').length, connections);
    } finally {
      writeFileSync(trigger, '');
    }
    // And a large body from anyone is read and answered again (an execution this process does not
    // hold: the anonymous turns, the ones the queued statuses took).
    const fresh = await child.agent.request('POST', '/fixture.behave/status', { executionId: randomUUID(), state: { pad: 'x'.repeat(20_000) } });
    assert.equal(fresh.status, 200);
    files.remove();
  });
});

/** Tasks the child's large-request lane completed, from its metrics. */
async function largeRequestTasks(child: Child): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${child.healthPort}/metrics`)).text();
  const line = text.split('\n').find((candidate) => candidate.startsWith('actionkit_large_request_tasks_total '));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

/** Another client's large status (an anonymous read turn): its status code, or a note that none came within `withinMs`. */
function freshLargeStatus(running: Running, withinMs: number): Promise<number | string> {
  const fresh = running.agent.request('POST', '/fixture.behave/status', { executionId: randomUUID(), state: { pad: 'y'.repeat(20_000) } });
  return Promise.race([fresh.then((answer) => answer.status), new Promise<string>((resolve) => setTimeout(resolve, withinMs, `no answer within ${withinMs / 1000} s`))]);
}

describe('requests pipelined behind an unanswered one, their client still there', () => {
  test('a large body answered while its answer waits behind a held request gives back its read turn at once', { timeout: TEST_TIMEOUT_MS }, async () => {
    const files = tempDir('actionkit-pipelining-');
    const trigger = join(files.path, 'go');
    const running = await start({ actions: [fixture('behave')] });
    const sockets: net.Socket[] = [];
    try {
      // As many connections as large bodies are read at once (8): each holds a prepare that waits
      // for the trigger and, pipelined behind it, a status with a body above 16 KiB (an execution
      // this process does not hold: an anonymous read turn). The statuses are answered; their
      // answers wait behind the held prepares.
      for (let i = 0; i < 8; i++) {
        const socket = net.connect(Number(new URL(running.base).port), '127.0.0.1');
        socket.on('error', () => undefined);
        socket.write(
          post('/fixture.behave/prepare', { executionId: randomUUID(), config: { prepare: 'wait-trigger', trigger }, properties: {} }) +
            post('/fixture.behave/status', { executionId: randomUUID(), state: { pad: 'x'.repeat(20_000) } }),
        );
        sockets.push(socket);
      }
      await eventually('the 8 large statuses to be answered', () => (running.extension.stats().pools.largeRequestTasks >= 8 && running.extension.stats().pools.largeRequestQueue === 0 ? true : undefined), 30_000);
      // Another client's large body is read and answered while those prepares are still held.
      assert.equal(await freshLargeStatus(running, 45_000), 200);
    } finally {
      writeFileSync(trigger, '');
      for (const socket of sockets) socket.destroy();
      await running.close();
      files.remove();
    }
  });

  test('a large body answered while it waited for a read turn, its answer queued behind a held request, takes no turn when one frees', { timeout: TEST_TIMEOUT_MS }, async () => {
    const files = tempDir('actionkit-pipelining-');
    const trigger = join(files.path, 'go');
    const running = await start({ actions: [fixture('behave')] });
    const port = Number(new URL(running.base).port);
    const sockets: net.Socket[] = [];
    const connect = (): net.Socket => {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      sockets.push(socket);
      return socket;
    };
    /** The head and first bytes of a status whose body is declared large (an anonymous read turn) and never finishes. */
    const stalledStatus = (requestTimeoutS?: number): string =>
      `POST /fixture.behave/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40000\r\n` +
      `${requestTimeoutS === undefined ? '' : `Request-Timeout: ${requestTimeoutS}\r\n`}\r\n{"executionId":"${randomUUID()}","state":{"pad":"`;
    /** A whole large status on its own connection with a Request-Timeout: its status code. */
    const probe = async (requestTimeoutS: number): Promise<number> => {
      const answer = await running.agent.request('POST', '/fixture.behave/status', { executionId: randomUUID(), state: { pad: 'p'.repeat(20_000) } }, { 'Request-Timeout': String(requestTimeoutS) });
      return answer.status;
    };
    try {
      // Every anonymous read turn (8) taken by a body that stalls; a probe that times out waiting
      // proves it (one that came before the holders took a turn and was answered: probe again).
      const holders = Array.from({ length: 8 }, () => connect());
      for (const holder of holders) holder.write(stalledStatus());
      await eventually('every read turn to be held', async () => ((await probe(0.3)) === 503 ? true : undefined), 30_000);
      // Connection X: a prepare held until the trigger, and pipelined behind it a stalled large
      // status whose Request-Timeout passes while it waits for a turn. It is answered 503, and
      // that answer waits behind the prepare: its exchange does not end.
      connect().write(post('/fixture.behave/prepare', { executionId: randomUUID(), config: { prepare: 'wait-trigger', trigger }, properties: {} }) + stalledStatus(0.2));
      // A later, much longer timeout: when it has passed, X's has too.
      assert.equal(await probe(5), 503);
      // One holder finishes its body: its turn frees. X, answered, must not take it (it would hold
      // it for as long as its connection lives), so another client's large body is read.
      holders[0]!.end('x'.repeat(40_000 - Buffer.byteLength(stalledStatus().split('\r\n\r\n')[1]!) - 3) + '"}}');
      assert.equal(await freshLargeStatus(running, 20_000), 200);
    } finally {
      writeFileSync(trigger, '');
      for (const socket of sockets) socket.destroy();
      await running.close();
      files.remove();
    }
  });
});
