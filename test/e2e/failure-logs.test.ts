/**
 * The log lines that explain a failure, as an operator sees them: a child process serving
 * `test/fixtures/behave.ts` with JSON logs at the default level, and the exact lines (and how
 * many) it writes for a handler that throws, a body that ignores its stop and is killed, and a
 * body that throws. None of them carries the request's config.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { fixture, spawnExtension, untilLogged, type Child } from '../support/harness.js';

const BEHAVE = 'fixture.behave';
const GRACE_MS = 300;
/** A config value no log line may contain: config, state and request bodies can hold credentials. */
const SECRET = 'secret-token-3f9a1c';

/** A JSON log line, without its time (which differs on every run). */
type Entry = Record<string, unknown> & { level: string; message: string };

let child: Child;

before(async () => {
  // STEADYBIT_LOG_LEVEL empty: the default level (info), as an operator who set nothing has it.
  child = await spawnExtension([fixture('behave')], { STEADYBIT_LOG_LEVEL: '', ACTIONKIT_STOP_GRACE: `${GRACE_MS}ms` });
});

after(async () => {
  child.process.kill('SIGTERM');
  await child.exited;
  assert.ok(!child.logs.some((line) => line.includes(SECRET)), `a log line carries the config:\n${child.logs.filter((line) => line.includes(SECRET)).join('\n')}`);
});

/** Every JSON line about execution `id` with this message, time removed. */
function entries(id: string, message: string): Entry[] {
  const found: Entry[] = [];
  for (const line of child.logs) {
    let entry: Entry;
    try {
      entry = JSON.parse(line) as Entry;
    } catch {
      continue;
    }
    if (entry['executionId'] !== id || entry.message !== message) continue;
    const { time, ...rest } = entry;
    assert.equal(typeof time, 'string');
    found.push(rest as Entry);
  }
  return found;
}

/** Wait for the line, then return every such line (there must be exactly one). */
async function theOnly(id: string, message: string): Promise<Entry> {
  await untilLogged(child, `"${message}" for ${id}`, (line) => (line.includes(id) && line.includes(`"message":${JSON.stringify(message)}`) ? true : undefined));
  const found = entries(id, message);
  assert.equal(found.length, 1, `exactly one "${message}" line for ${id}:\n${child.logs.filter((line) => line.includes(id)).join('\n')}`);
  return found[0]!;
}

/** `entry` with its `error.stack` checked against `firstLine` and removed. */
function withoutStack(entry: Entry, firstLine: string): Entry {
  const error = entry['error'] as Record<string, unknown>;
  const stack = error['stack'];
  assert.equal(typeof stack, 'string');
  const [head, ...frames] = (stack as string).split('\n');
  assert.equal(head, firstLine);
  assert.ok(frames.length > 0 && frames.every((frame) => /^\s+at /.test(frame)), `stack frames:\n${stack as string}`);
  assert.ok(frames.some((frame) => frame.includes('behave.js')), `the stack points into the action module:\n${stack as string}`);
  const { stack: _, ...rest } = error;
  return { ...entry, error: rest };
}

/** The one `action handler failed` line of execution `id`: exactly these fields, and a stack starting with `stackHead`. */
async function expectHandlerFailure(id: string, phase: string, stackHead: string, error: Record<string, string>): Promise<void> {
  const entry = await theOnly(id, 'action handler failed');
  assert.deepEqual(withoutStack(entry, stackHead), { level: 'warn', message: 'action handler failed', action: BEHAVE, executionId: id, phase, error });
}

describe('failure log lines (JSON, default level)', () => {
  test('a plain Error thrown in prepare: one warn line with action, execution, phase, title, message and stack', async () => {
    const id = randomUUID();
    const prepared = await child.agent.prepare(BEHAVE, id, { duration: 1000, prepare: 'throw', apiKey: SECRET });
    assert.deepEqual(prepared.body['error'], { title: 'Failed to prepare.', detail: 'prepare failed on purpose' });
    await expectHandlerFailure(id, 'prepare', 'Error: prepare failed on purpose', { code: 'HANDLER_FAILED', title: 'Failed to prepare.', message: 'prepare failed on purpose' });
  });

  test('an ExtensionError thrown in status: its own title and detail, at warn', async () => {
    const id = randomUUID();
    const state = await child.agent.run(BEHAVE, id, { duration: 10_000, status: 'extension-error', apiKey: SECRET });
    const status = await child.agent.status(BEHAVE, id, state);
    assert.equal((status.body['error'] as { title: string }).title, 'status refused');
    await expectHandlerFailure(id, 'status', 'ExtensionError: status refused', {
      code: 'EXTENSION_ERROR',
      title: 'status refused',
      message: 'status refused',
      detail: 'as configured',
    });
    assert.equal((await child.agent.stop(BEHAVE, id, state)).status, 200);
  });

  test('a body that ignores its stop: one warn line with the grace period and how long it ran past it', async () => {
    const id = randomUUID();
    const state = await child.agent.run(BEHAVE, id, { duration: 10_000, body: 'ignore-stop', apiKey: SECRET });
    const stopped = await child.agent.stop(BEHAVE, id, state);
    assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
    const entry = await theOnly(id, 'action body did not stop within the grace period; terminating its thread');
    const { pastGraceMs, ...rest } = entry;
    assert.deepEqual(rest, {
      level: 'warn',
      message: 'action body did not stop within the grace period; terminating its thread',
      action: BEHAVE,
      executionId: id,
      phase: 'body',
      kind: 'cpu',
      graceMs: GRACE_MS,
    });
    // How late the kill came depends on the machine's load; that it is said does not.
    assert.ok(typeof pastGraceMs === 'number' && pastGraceMs >= 0, `pastGraceMs ${String(pastGraceMs)}`);
  });

  test('a body that throws: one info line with the error message and stack', async () => {
    const id = randomUUID();
    const state = await child.agent.run(BEHAVE, id, { duration: 10_000, body: 'throw', apiKey: SECRET });
    const entry = await theOnly(id, 'action body failed');
    assert.deepEqual(withoutStack(entry, 'Error: body failed on purpose'), {
      level: 'info',
      message: 'action body failed',
      action: BEHAVE,
      executionId: id,
      phase: 'body',
      error: { code: 'HANDLER_FAILED', message: 'body failed on purpose' },
    });
    const status = await child.agent.status(BEHAVE, id, state);
    assert.equal((status.body['error'] as { title: string }).title, 'Action was stopped by extension: action body failed');
  });
});
