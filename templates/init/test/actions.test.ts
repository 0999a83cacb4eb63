/**
 * Both actions, driven the way the Steadybit agent drives them (prepare → start → status → stop),
 * on real worker threads, every answer checked against the ActionKit schemas.
 * `npm test` builds first; this file runs from dist/test/.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createExtension } from 'actionkit-runtime';
import { AgentClient, runAction } from 'actionkit-runtime/testing';

const SHA256_LOAD = new URL('../src/actions/sha256-load.js', import.meta.url);
const PRIME_COUNT = new URL('../src/actions/prime-count.js', import.meta.url);

test('sha256-load hashes on its own thread until the duration is over, then stops cleanly', async () => {
  // Durations are in milliseconds, as the agent sends them.
  const run = await runAction(SHA256_LOAD, { config: { duration: 1000 }, statusIntervalMs: 200 });
  assert.deepEqual(run.errors, []);
  const stopMessages = (run.stop?.result.messages ?? []).map((m) => m.message);
  assert.ok(stopMessages.some((message) => /^Hashed \d+ MiB with SHA-256/.test(message)), JSON.stringify(stopMessages));
});

test('prime-count counts the primes below the limit', async () => {
  const run = await runAction(PRIME_COUNT, { config: { limit: 100_000, maxDuration: 60_000 }, statusIntervalMs: 50 });
  assert.deepEqual(run.errors, []);
  assert.equal(run.ended, 'completed');
  assert.ok(run.messages.some((m) => m.message === '9592 primes below 100000'), JSON.stringify(run.messages));
});

test('prime-count fails when counting takes longer than allowed, and its body is stopped', async () => {
  // Far more numbers than any machine counts in 100 ms, so the verdict does not depend on its speed.
  const run = await runAction(PRIME_COUNT, { config: { limit: 2_000_000_000, maxDuration: 100 }, statusIntervalMs: 50 });
  assert.equal(run.ended, 'error');
  assert.equal(run.errors[0]?.phase, 'status');
  assert.equal(run.errors[0]?.error?.status, 'failed');
  assert.match(run.errors[0]?.error?.title ?? '', /took longer than 100 ms/);
  assert.ok(run.stop !== undefined, 'the agent stops a failed check');
});

test('over HTTP, as the agent sees the extension', async (t) => {
  // Port 0 picks a free port. No probes, no signal handlers and no OOM-killer setting: the test
  // runner owns this process. Warnings only: no access log lines between the test results.
  const extension = await createExtension({
    actions: [SHA256_LOAD, PRIME_COUNT],
    port: 0,
    host: '127.0.0.1',
    healthPort: null,
    handleSignals: false,
    oomScoreAdj: null,
    logLevel: 'warn',
  });
  t.after(() => extension.close());
  const { port } = await extension.listen();
  const client = new AgentClient({ baseUrl: `http://127.0.0.1:${port}` });
  const ids = (await client.describeAll()).map((description) => description.id).sort();
  assert.deepEqual(ids, ['{{actionPrefix}}.prime-count', '{{actionPrefix}}.sha256-load']);
  const run = await client.run('{{actionPrefix}}.prime-count', { config: { limit: 100_000, maxDuration: 60_000 }, statusIntervalMs: 50 });
  assert.deepEqual(run.errors, []);
  assert.equal(run.ended, 'completed');
});
