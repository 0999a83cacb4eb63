/**
 * Hostile or broken clients against the example extension in a child process, as `npm start`
 * serves it: nothing they send reads a file that was not uploaded, operates an execution through
 * another action's endpoints, or makes memory grow past its documented bound — and the healthy
 * executions beside them keep running.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ExecutionStore } from '../../src/runtime/executions.js';
import { spawnListening, tempDir, type Answer, type Child } from '../support/harness.js';

const TEST_TIMEOUT_MS = 120_000;
const CPU = 'com.example.actionkit.cpu-stress';
const HTTP_CHECK = 'com.example.actionkit.http-check';
const LOG_CHECK = 'com.example.actionkit.log-pattern-check';
/** A file every Linux host has, with content no test upload has. */
const HOST_FILE = '/etc/passwd';

type Json = Record<string, unknown>;

describe('hostile clients against the example extension', () => {
  let child: Child;
  const uploads = tempDir('actionkit-hostile-');

  before(async () => {
    child = await spawnListening([fileURLToPath(new URL('../../example/main.js', import.meta.url))], {
      ACTIONKIT_UPLOAD_DIR: uploads.path,
      // Executions here are held by the test, not by a polling agent.
      ACTIONKIT_HEARTBEAT_MIN_INTERVAL: '1h',
    });
  });
  after(async () => {
    child.process.kill('SIGTERM');
    assert.equal(await child.exited, 143);
    uploads.remove();
  });

  /** A multipart prepare of the log check with `content` uploaded as its log file. */
  async function prepareLogCheck(executionId: string, content: string): Promise<Answer> {
    const form = new FormData();
    form.append('request', JSON.stringify({ executionId, config: { logFile: 'file::1', pattern: 'ERROR', maxMatches: 100 }, properties: {} }));
    form.append('logFile', new Blob([content], { type: 'application/octet-stream' }), 'app.log');
    return child.agent.request('POST', `/${LOG_CHECK}/prepare`, form);
  }

  /** No answer may carry a line of the host file. */
  function assertNoHostFile(answer: Answer): void {
    assert.doesNotMatch(JSON.stringify(answer.body), /root:/, 'an answer carries a line of the host file');
  }

  test('a file parameter reads only what was uploaded for its execution: at prepare and in every later state', { timeout: TEST_TIMEOUT_MS }, async () => {
    // A JSON prepare naming a host file: refused, nothing prepared.
    const jsonId = randomUUID();
    const json = await child.agent.prepare(LOG_CHECK, jsonId, { logFile: HOST_FILE, pattern: '.', maxMatches: 100 });
    assert.equal(json.status, 400);
    assert.equal(json.body['title'], 'Invalid request body: file parameter logFile must be uploaded');
    assertNoHostFile(json);
    // The id was not taken: the agent may prepare it properly.
    assert.equal((await prepareLogCheck(jsonId, 'ERROR once\n')).status, 200);
    await child.agent.stop(LOG_CHECK, jsonId, {});

    const id = randomUUID();
    const other = randomUUID();
    const prepared = await prepareLogCheck(id, 'ERROR one\nok\n');
    assert.equal(prepared.status, 200, JSON.stringify(prepared.body));
    const state = prepared.body['state'] as Json;
    const uploaded = String(state['logFile']);
    assert.equal(uploaded, join(uploads.path, id, 'app.log'));
    assert.equal((await prepareLogCheck(other, 'ERROR other\n')).status, 200);
    const otherFile = join(uploads.path, other, 'app.log');

    const altered: [string, Json][] = [
      ['a host file', { ...state, logFile: HOST_FILE }],
      ['a path out of the folder', { ...state, logFile: join(uploads.path, id, '..', '..', '..', 'etc', 'passwd') }],
      ['another execution’s upload', { ...state, logFile: otherFile }],
      ['a host file in a new field', { ...state, extra: { deep: [HOST_FILE] } }],
    ];
    for (const [what, bad] of altered) {
      for (const phase of ['start', 'status', 'stop'] as const) {
        const answer = await child.agent.request('POST', `/${LOG_CHECK}/${phase}`, { executionId: id, state: bad });
        assert.equal(answer.status, 400, `${phase} with ${what}: ${JSON.stringify(answer.body)}`);
        assert.match(String(answer.body['title']), /^Invalid request body: state(\.logFile|\.extra\.deep\[0\]) names a path outside the uploads of execution /, `${phase} with ${what}`);
        assertNoHostFile(answer);
      }
    }
    // The refused requests ran nothing: the execution starts, scans its own file and stops.
    const started = await child.agent.start(LOG_CHECK, id, state);
    assert.equal(started.body['error'], undefined, JSON.stringify(started.body));
    const startedState = started.body['state'] as Json;
    let status: Answer;
    do status = await child.agent.status(LOG_CHECK, id, startedState);
    while (status.body['completed'] !== true);
    assert.match(JSON.stringify(status.body), /1 of 2 lines in app\.log match/);
    assert.equal((await child.agent.stop(LOG_CHECK, id, startedState)).status, 200);
    assert.equal(existsSync(join(uploads.path, id)), false);

    // An execution this process does not know (after a restart): only paths in its upload folder pass.
    const unknown = randomUUID();
    for (const phase of ['start', 'status', 'stop'] as const) {
      const answer = await child.agent.request('POST', `/${LOG_CHECK}/${phase}`, { executionId: unknown, state: { logFile: HOST_FILE, pattern: '.' } });
      assert.equal(answer.status, 400, `${phase} of an unknown execution: ${JSON.stringify(answer.body)}`);
      assertNoHostFile(answer);
    }
    assert.equal((await child.agent.stop(LOG_CHECK, other, {})).status, 200);
  });

  test('an execution answers only through its own action’s endpoints', { timeout: TEST_TIMEOUT_MS }, async () => {
    const id = randomUUID();
    const prepared = await child.agent.prepare(CPU, id, { duration: 60_000, cpuLoad: 5 });
    const started = await child.agent.start(CPU, id, prepared.body['state']);
    assert.equal(started.body['error'], undefined, JSON.stringify(started.body));
    const state = started.body['state'];
    for (const phase of ['start', 'status', 'stop'] as const) {
      const crossed = await child.agent.request('POST', `/${HTTP_CHECK}/${phase}`, { executionId: id, state });
      assert.equal(crossed.status, 409, `${phase} through another action: ${JSON.stringify(crossed.body)}`);
      assert.equal(crossed.body['title'], `Execution ${id} belongs to action ${CPU}`);
    }
    const crossedPrepare = await child.agent.prepare(HTTP_CHECK, id, { url: 'http://127.0.0.1:1/' });
    assert.equal(crossedPrepare.status, 409);
    // Still running, untouched by any of it.
    const status = await child.agent.status(CPU, id, state);
    assert.equal(status.body['completed'], false, JSON.stringify(status.body));
    assert.equal(status.body['error'], undefined);
    assert.equal((await child.agent.stop(CPU, id, state)).status, 200);
    // Stopped: its remembered stop is still its own action's.
    const late = await child.agent.request('POST', `/${HTTP_CHECK}/stop`, { executionId: id, state });
    assert.equal(late.status, 409);
    assert.equal((await child.agent.stop(CPU, id, state)).status, 200);
  });

  test('a flood of stops for unknown executions keeps its memory bounded and evicts nothing that ran here', { timeout: TEST_TIMEOUT_MS }, async () => {
    // One execution that really ran, stopped before the flood: its outcome must survive it.
    const ran = randomUUID();
    const prepared = await child.agent.prepare(CPU, ran, { duration: 60_000, cpuLoad: 5 });
    await child.agent.start(CPU, ran, prepared.body['state']);
    const ranStop = await child.agent.stop(CPU, ran, prepared.body['state']);
    assert.equal(ranStop.status, 200);

    // More stateless stops than the bound holds, as fast as a few connections send them.
    const flood = ExecutionStore.STATELESS.maxCount + 2_000;
    let sent = 0;
    const sender = async (): Promise<void> => {
      while (sent < flood) {
        sent++;
        const answer = await child.agent.request('POST', `/${CPU}/stop`, { executionId: randomUUID(), state: {} });
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
      }
    };
    await Promise.all(Array.from({ length: 16 }, sender));

    const metrics = await scrape(child);
    assert.ok(metric(metrics, 'actionkit_remembered_stops{kind="stateless"}') <= ExecutionStore.STATELESS.maxCount, 'stateless outcomes beyond their bound');
    assert.ok(metric(metrics, 'actionkit_remembered_stops{kind="ran"}') >= 1);
    assert.ok(metric(metrics, 'actionkit_remembered_stops_bytes') <= ExecutionStore.RAN.maxBytes + ExecutionStore.STATELESS.maxBytes);
    // The execution that ran still gets its own stop's answer, not a stateless rerun.
    const again = await child.agent.stop(CPU, ran, prepared.body['state']);
    assert.deepEqual(again.body, ranStop.body);
    // The log was not flooded: at most a budget of lines about unknown executions.
    const unknownLines = child.logs.filter((line) => line.includes('does not know')).length;
    assert.ok(unknownLines < 100, `${unknownLines} log lines about unknown executions`);
  });
});

async function scrape(child: Child): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${child.healthPort}/metrics`);
  return response.text();
}

function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line !== undefined, `no series ${series}`);
  return Number(line.split(' ')[1]);
}
