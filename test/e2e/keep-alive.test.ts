/**
 * Idle worker threads keep their event loops running.
 *
 * The symptom, reproduced with the example's http-check: a body thread that made requests keeps
 * the connection in its pool; fetch's own timer should close it before the server's keep-alive
 * timeout. On a thread whose event loop is frozen while idle (piscina's `atomics: 'sync'` between
 * tasks), that does not happen, and the next check on that thread writes its first request into
 * the connection the server closed meanwhile: `HTTP check failed: 50% of 2 requests succeeded`
 * (`UND_ERR_SOCKET`, `EPIPE`) — what Steadybit's own Go test client saw. The cause, tested per kind
 * of thread: a timer left behind by a handler or an io body fires while its thread is idle. (A cpu
 * body's thread is ended with whatever its body left behind.)
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { eventually, fixture, sleep, start, tempDir, type Running } from '../support/harness.js';

const HTTP_CHECK = 'com.example.actionkit.http-check';
const logs = tempDir('actionkit-idle-loop-');
after(() => logs.remove());

test("the example http-check passes twice in a row with a pause longer than the target's keep-alive timeout", { timeout: 60_000 }, async () => {
  // The server keeps idle connections 3 s (and says so: `Keep-Alive: timeout=3`); fetch keeps them 1 s.
  const target: Server = createServer((_req, res) => res.end('ok'));
  target.keepAliveTimeout = 3_000;
  await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(target.address() as AddressInfo).port}/`;
  const running = await start({
    actions: [fileURLToPath(new URL('../../example/actions/http-check.js', import.meta.url))],
    ioBodyThreads: 1,
    heartbeatMinIntervalMs: 3_600_000,
  });
  try {
    const check = async (): Promise<unknown> => {
      const id = randomUUID();
      let state = await running.agent.run(HTTP_CHECK, id, { url, duration: 1_000, requestsPerSecond: 2 });
      for (;;) {
        const status = await running.agent.status(HTTP_CHECK, id, state);
        state = (status.body['state'] as Record<string, unknown> | undefined) ?? state;
        if (status.body['completed'] === true) {
          await running.agent.stop(HTTP_CHECK, id, state);
          return status.body['error'] ?? (status.body['messages'] as { message: string }[]).at(-1)?.message;
        }
        await sleep(200);
      }
    };
    assert.match(String(await check()), /^HTTP check passed: [12]\/2 requests/);
    await sleep(4_000); // longer than the server's keep-alive timeout
    assert.match(String(await check()), /^HTTP check passed: [12]\/2 requests/, 'the second check reused a connection the server had closed');
  } finally {
    await running.close();
    target.closeAllConnections();
    await new Promise((resolve) => target.close(resolve));
  }
});

function timerRan(log: string, id: string): true | undefined {
  return existsSync(log) && readFileSync(log, 'utf8').includes(`${id} timer`) ? true : undefined;
}

test('a timer left behind by a handler or an io body fires while its thread is idle', async () => {
  const running: Running = await start({ actions: [fixture('leftover-timer')], heartbeatMinIntervalMs: 3_600_000 });
  try {
    for (const kind of ['handler', 'io']) {
      const log = join(logs.path, `${kind}.log`);
      const id = randomUUID();
      const action = `fixture.timer-${kind}`;
      if (kind === 'handler') await running.agent.prepare(action, id, { log });
      else await running.agent.run(action, id, { log });
      // Nothing else is sent to the extension meanwhile: only the idle thread's own loop can run the timer.
      await eventually(`the timer left on the ${kind} thread to fire`, () => timerRan(log, id), 5_000);
    }
  } finally {
    await running.close();
  }
});
