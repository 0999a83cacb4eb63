/**
 * The reference's process-level settings, on an extension in a child process configured only by
 * its environment: `STEADYBIT_EXTENSION_OOM_SCORE_ADJ` read back from `/proc/<pid>/oom_score_adj`,
 * `STEADYBIT_LOG_COLOR` on the stderr of the main and the handler threads, `STEADYBIT_LOG_LEVEL=panic`.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Agent as UndiciAgent } from 'undici';
import { AgentClient } from '../../src/testing/index.js';
import { HANDLER_LOG_MESSAGE } from '../fixtures/logs-info.js';
import { eventually, fixture, SERVE_ENTRY, spawnExtension, spawnNode, tempDir, untilLogged, type Spawned } from '../support/harness.js';

const ACTION = 'fixture.logs-info';
const TEST_TIMEOUT_MS = 30_000;
/** The start of every ANSI colour sequence (ESC [). */
const ANSI = '\u001b[';
const onLinux = process.platform === 'linux';

function oomScoreAdjOf(pid: number | 'self'): number {
  return Number(readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim());
}

/** SIGTERM, then the exit code; the extension's own shutdown runs. */
async function terminate(child: Spawned): Promise<number | string> {
  child.process.kill('SIGTERM');
  return child.exited;
}

/** What this test process has, and so what a child inherits unless it changes it. */
const inherited = onLinux ? oomScoreAdjOf('self') : 0;

test('STEADYBIT_EXTENSION_OOM_SCORE_ADJ=500: the listening child\'s oom_score_adj is 500', { timeout: TEST_TIMEOUT_MS, skip: !onLinux ? 'Linux only' : inherited > 500 ? `this process already has ${inherited}: 500 would need privileges` : false }, async () => {
  // Raising is allowed without privileges: this runs on any Linux CI.
  const child = await spawnExtension([fixture('passthrough')], { STEADYBIT_EXTENSION_OOM_SCORE_ADJ: '500' });
  try {
    assert.equal(oomScoreAdjOf(child.process.pid!), 500);
    assert.ok(child.logs.some((line) => /"oomScoreAdj":500/.test(line) && /"level":"info"/.test(line)), child.logs.join('\n'));
  } finally {
    assert.equal(await terminate(child), 143);
  }
});

test('STEADYBIT_EXTENSION_OOM_SCORE_ADJ=off: the inherited value is left alone, nothing logged about it', { timeout: TEST_TIMEOUT_MS, skip: !onLinux && 'Linux only' }, async () => {
  const child = await spawnExtension([fixture('passthrough')], { STEADYBIT_EXTENSION_OOM_SCORE_ADJ: 'off' });
  try {
    assert.equal(oomScoreAdjOf(child.process.pid!), inherited);
    assert.ok(!child.logs.some((line) => /oom_score_adj/i.test(line)), child.logs.join('\n'));
  } finally {
    assert.equal(await terminate(child), 143);
  }
});

test('default -998: set when the process may lower it, else one warning and the extension serves anyway', { timeout: TEST_TIMEOUT_MS, skip: !onLinux && 'Linux only' }, async () => {
  const child = await spawnExtension([fixture('passthrough')]);
  try {
    const score = oomScoreAdjOf(child.process.pid!);
    const about = child.logs.filter((line) => /oom_score_adj/.test(line)).map((line) => JSON.parse(line) as { level: string; oomScoreAdj: number; previous: number });
    assert.equal(about.length, 1, child.logs.join('\n'));
    if (score === -998) {
      assert.deepEqual([about[0]!.level, about[0]!.oomScoreAdj, about[0]!.previous], ['info', -998, inherited]);
    } else {
      // Without root or CAP_SYS_RESOURCE (a CI runner, a container without the capability).
      assert.equal(score, inherited);
      assert.equal(about[0]!.level, 'warn');
      assert.match(child.logs.find((line) => /oom_score_adj/.test(line))!, /CAP_SYS_RESOURCE/);
    }
    assert.equal((await child.agent.request('GET', '/')).status, 200);
  } finally {
    assert.equal(await terminate(child), 143);
  }
});

/**
 * An extension with text logs in `color` mode: waits until it listens, runs the fixture action (its
 * start logs on a handler thread), and returns every stderr line up to its exit.
 */
async function textLogsWithColor(color: 'true' | 'false'): Promise<string[]> {
  const child = spawnNode([SERVE_ENTRY, fixture('logs-info')], { STEADYBIT_LOG_FORMAT: 'text', STEADYBIT_LOG_COLOR: color });
  try {
    const port = await untilLogged(child, 'listening', (line) => /extension listening.*"port":(\d+)/.exec(stripAnsi(line))?.[1]);
    const client = new AgentClient({ baseUrl: `http://127.0.0.1:${port}`, requestTimeoutMs: 5_000 });
    assert.deepEqual((await client.run(ACTION)).errors, []);
    await untilLogged(child, 'the handler thread\'s line', (line) => (line.includes(HANDLER_LOG_MESSAGE) ? true : undefined));
  } finally {
    child.process.kill('SIGTERM');
  }
  assert.equal(await child.exited, 143);
  return child.logs;
}

function stripAnsi(line: string): string {
  return line.replace(/\u001b\[[0-9;]*m/g, '');
}

test('STEADYBIT_LOG_COLOR=true with text logs: colours on the main thread\'s and the handler thread\'s lines', { timeout: TEST_TIMEOUT_MS }, async () => {
  const logs = await textLogsWithColor('true');
  const listening = logs.find((line) => line.includes('extension listening'));
  const handler = logs.find((line) => line.includes(HANDLER_LOG_MESSAGE));
  assert.ok(listening?.includes(ANSI), logs.join('\n'));
  // A worker thread's stderr is never a terminal: it colours only because the main thread said so.
  assert.ok(handler?.includes(ANSI), logs.join('\n'));
});

test('STEADYBIT_LOG_COLOR=false with text logs: no escape sequence anywhere', { timeout: TEST_TIMEOUT_MS }, async () => {
  const logs = await textLogsWithColor('false');
  assert.ok(logs.some((line) => line.includes(HANDLER_LOG_MESSAGE)), logs.join('\n'));
  assert.ok(!logs.some((line) => line.includes('\u001b')), logs.join('\n'));
});

test('STEADYBIT_LOG_COLOR=true with JSON logs: plain JSON lines, also from the handler thread', { timeout: TEST_TIMEOUT_MS }, async () => {
  const child = await spawnExtension([fixture('logs-info')], { STEADYBIT_LOG_COLOR: 'true' });
  try {
    await child.agent.run(ACTION, randomUUID(), {});
    await untilLogged(child, 'the handler thread\'s line', (line) => (line.includes(HANDLER_LOG_MESSAGE) ? true : undefined));
  } finally {
    assert.equal(await terminate(child), 143);
  }
  assert.ok(!child.logs.some((line) => line.includes('\u001b')), child.logs.join('\n'));
  const handler = child.logs.map((line) => JSON.parse(line) as { message: string; thread?: string }).find((entry) => entry.message === HANDLER_LOG_MESSAGE);
  assert.equal(handler?.thread, 'handler');
});

test('STEADYBIT_LOG_LEVEL=panic: starts, serves a whole execution and shuts down without logging a line', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const dir = tempDir('actionkit-panic-');
  t.after(() => dir.remove());
  // Nothing is logged, not even `extension listening`: the readiness probe on a socket says it serves.
  const socketPath = join(dir.path, 'ext.sock');
  const child = spawnNode([SERVE_ENTRY, fixture('logs-info')], { STEADYBIT_LOG_LEVEL: 'panic', STEADYBIT_LOG_FORMAT: 'text', STEADYBIT_EXTENSION_UNIX_SOCKET: socketPath });
  const dispatcher = new UndiciAgent({ connect: { socketPath } });
  try {
    const client = new AgentClient({ baseUrl: 'http://extension.local', dispatcher, requestTimeoutMs: 5_000 });
    await eventually('readiness on the socket', async () => {
      const ready = await client.exchange('GET', '/health/readiness').then(
        (answer) => answer.httpStatus === 200,
        () => false,
      );
      return ready ? true : undefined;
    });
    // The handler thread's info line is below the level too.
    assert.deepEqual((await client.run(ACTION)).errors, []);
  } finally {
    await dispatcher.close();
    child.process.kill('SIGTERM');
  }
  assert.equal(await child.exited, 143);
  assert.deepEqual(child.logs, []);
});
