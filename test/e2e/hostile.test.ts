/**
 * Hostile or broken clients against the example extension in a child process, as `npm start`
 * serves it: nothing they send reads a file that was not uploaded, operates an execution through
 * another action's endpoints, or makes memory grow past its documented bound — and the healthy
 * executions beside them keep running.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ExecutionStore, outcomeMemoryBound } from '../../src/runtime/executions.js';
import { MAX_JSON_DEPTH } from '../../src/api/json-depth.js';
import { fixture, logLines, sleep, spawnListening, start, tempDir, type Answer, type Child } from '../support/harness.js';

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
  async function prepareLogCheck(executionId: string, content: string, pattern = 'ERROR'): Promise<Answer> {
    const form = new FormData();
    form.append('request', JSON.stringify({ executionId, config: { logFile: 'file::1', pattern, maxMatches: 100 }, properties: {} }));
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
      ['a relative path (resolved against the working directory)', { ...state, logFile: relative(process.cwd(), HOST_FILE) }],
      ['another execution’s upload', { ...state, logFile: otherFile }],
      ['a number', { ...state, logFile: 7 }],
    ];
    for (const [what, bad] of altered) {
      for (const phase of ['start', 'status', 'stop'] as const) {
        const answer = await child.agent.request('POST', `/${LOG_CHECK}/${phase}`, { executionId: id, state: bad });
        assert.equal(answer.status, 400, `${phase} with ${what}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body['title'], `Invalid request body: state.logFile names no upload of execution ${id}`, `${phase} with ${what}`);
        assertNoHostFile(answer);
      }
    }
    // The refused requests ran nothing: the execution starts, scans its own file and stops.
    const started = await child.agent.start(LOG_CHECK, id, state);
    assert.equal(started.body['error'], undefined, JSON.stringify(started.body));
    // Each poll sends the state of the answer before, as the agent does: the status handler keeps
    // the scan's figures in it, and they are reported only once.
    let polledState = started.body['state'] as Json;
    let status: Answer;
    do {
      status = await child.agent.status(LOG_CHECK, id, polledState);
      polledState = (status.body['state'] as Json | undefined) ?? polledState;
    } while (status.body['completed'] !== true);
    assert.match(JSON.stringify(status.body), /1 of 2 lines in app\.log match/);
    assert.equal((await child.agent.stop(LOG_CHECK, id, polledState)).status, 200);
    assert.equal(existsSync(join(uploads.path, id)), false);

    // A host path brought in through a parameter that is not a file (the pattern, copied into the
    // state by prepare) is still no upload.
    const smuggler = randomUUID();
    const smuggled = await prepareLogCheck(smuggler, 'ERROR\n', HOST_FILE);
    assert.equal(smuggled.status, 200, JSON.stringify(smuggled.body));
    const smuggledState = smuggled.body['state'] as Json;
    const answer = await child.agent.request('POST', `/${LOG_CHECK}/start`, { executionId: smuggler, state: { ...smuggledState, logFile: HOST_FILE, pattern: 'root' } });
    assert.equal(answer.status, 400, JSON.stringify(answer.body));
    assert.equal((await child.agent.stop(LOG_CHECK, smuggler, smuggledState)).status, 200);

    // An execution this process did not prepare (after a restart): no start or status handler runs
    // with its state; its stop runs, for the rollback.
    const unknown = randomUUID();
    const hostile = { logFile: HOST_FILE, fileName: 'passwd', pattern: '.', maxMatches: 0, matches: null, lines: null };
    const startUnknown = await child.agent.start(LOG_CHECK, unknown, hostile);
    assert.match(String((startUnknown.body['error'] as Json | undefined)?.['detail']), /did not prepare this execution/);
    assertNoHostFile(startUnknown);
    const statusUnknown = await child.agent.status(LOG_CHECK, unknown, hostile);
    assert.deepEqual(statusUnknown.body, { completed: false });
    assert.equal((await child.agent.stop(LOG_CHECK, unknown, hostile)).status, 200);
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
    assert.ok(metric(metrics, 'actionkit_remembered_stops_bytes') <= outcomeMemoryBound(ExecutionStore.RAN) + outcomeMemoryBound(ExecutionStore.STATELESS));
    // The execution that ran still gets its own stop's answer, not a stateless rerun.
    const again = await child.agent.stop(CPU, ran, prepared.body['state']);
    assert.deepEqual(again.body, ranStop.body);
    // The log was not flooded: at most a budget of lines about unknown executions.
    const unknownLines = child.logs.filter((line) => line.includes('does not know')).length;
    assert.ok(unknownLines < 100, `${unknownLines} log lines about unknown executions`);
  });
});

describe('hostile clients against extensions in this process', () => {
  const logs = tempDir('actionkit-hostile-logs-');
  after(() => logs.remove());

  test('a state nested too deeply to come back is not handed out; the execution stays stoppable', { timeout: TEST_TIMEOUT_MS }, async () => {
    const running = await start({ actions: [fixture('deep-state')] });
    try {
      const id = randomUUID();
      const stopLog = join(logs.path, `${id}.log`);
      // A request nests the state one level down: MAX_JSON_DEPTH − 1 levels come back, one more would not.
      const fits = await running.agent.prepare('fixture.deep-state', randomUUID(), { depth: MAX_JSON_DEPTH - 1 });
      assert.equal(fits.body['error'], undefined, JSON.stringify(fits.body).slice(0, 300));
      const tooDeep = await running.agent.prepare('fixture.deep-state', id, { depth: MAX_JSON_DEPTH, stopLog });
      assert.equal((tooDeep.body['error'] as Json | undefined)?.['title'], 'State too deeply nested');
      // What was handed out comes back: a start and a stop with it are accepted.
      const handedOut = fits.body['state'];
      const back = await running.agent.request('POST', '/fixture.deep-state/stop', { executionId: randomUUID(), state: handedOut });
      assert.equal(back.status, 200, JSON.stringify(back.body).slice(0, 300));
    } finally {
      await running.close();
    }
  });

  test('answers of a client’s own stops cannot push out the record of a stop that ran: a repeated stop never rolls back twice', { timeout: TEST_TIMEOUT_MS }, async () => {
    const running = await start({ actions: [fixture('behave'), fixture('echo-stop')] });
    try {
      const ran = randomUUID();
      const stopLog = join(logs.path, `evict-${ran}.log`);
      const prepared = await running.agent.prepare('fixture.behave', ran, { stopLog });
      const state = (await running.agent.start('fixture.behave', ran, prepared.body['state'])).body['state'];
      const first = await running.agent.stop('fixture.behave', ran, state);
      assert.equal(first.status, 200);
      // Answers of 4.9 MB each: 15 of them are more than every bound on kept answers.
      const big = 'a'.repeat(4_900_000);
      for (let i = 0; i < 15; i++) {
        const id = randomUUID();
        await running.agent.prepare('fixture.echo-stop', id, {});
        assert.equal((await running.agent.request('POST', '/fixture.echo-stop/stop', { executionId: id, state: { echo: big } })).status, 200);
      }
      const again = await running.agent.stop('fixture.behave', ran, state);
      assert.equal(again.status, 200);
      assert.equal(logLines(stopLog, ran).length, 1, `author stop calls: ${JSON.stringify(logLines(stopLog, ran))}`);
      assert.deepEqual(again.body, first.body);
    } finally {
      await running.close();
    }
  });

  test('after a restart, the agent’s stop of a file action runs with the state it holds (the rollback), the extension’s own paths included', { timeout: TEST_TIMEOUT_MS }, async () => {
    const uploadDir = tempDir('actionkit-hostile-restart-');
    const stopLog = join(logs.path, `restart-${randomUUID()}.log`);
    const id = randomUUID();
    // The first process stays up (its shutdown would roll back itself): the agent's stop reaches a second one.
    const first = await start({ actions: [fixture('http-files')], uploadDir: uploadDir.path });
    const second = await start({ actions: [fixture('http-files')], uploadDir: uploadDir.path });
    try {
      const form = new FormData();
      form.append('request', JSON.stringify({ executionId: id, config: { duration: 10_000, payload: 'file::1', stopLog } }));
      form.append('payload', new Blob(['payload'], { type: 'application/octet-stream' }), 'payload.bin');
      const prepared = await first.agent.request('POST', '/fixture.http.files/prepare', form);
      assert.equal(prepared.status, 200, JSON.stringify(prepared.body));
      const stopped = await second.agent.stop('fixture.http.files', id, prepared.body['state']);
      assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
      assert.equal(logLines(stopLog, id).length, 1, 'the author’s stop (the rollback) ran');
    } finally {
      await second.close();
      await first.close();
      uploadDir.remove();
    }
  });

  test('a Request-Timeout answer is written at once and small, whatever the header held', { timeout: TEST_TIMEOUT_MS }, async () => {
    const running = await start({ actions: [fixture('behave')] });
    try {
      const id = randomUUID();
      const prepared = await running.agent.prepare('fixture.behave', id, { stop: 'slow', slowMs: 800 });
      // 1,100 zeros: echoed into the answer, it would be over 1 KiB and gzipped after the discard.
      const answer = await running.agent.request('POST', '/fixture.behave/stop', { executionId: id, state: prepared.body['state'] }, {
        'accept-encoding': 'gzip',
        'request-timeout': `0.2${'0'.repeat(1100)}`,
      });
      assert.equal(answer.status, 503);
      assert.deepEqual(answer.body, { title: 'Timeout', detail: 'the request did not complete within its Request-Timeout of 0.2 s' });
    } finally {
      await running.close();
    }
  });

  test('an author router that answers after its Request-Timeout, in any way express writes, changes nothing and crashes nothing', { timeout: TEST_TIMEOUT_MS }, async () => {
    const child = await spawnListening([fixture('late-router-main')]);
    try {
      for (const path of ['/late/204', '/late/json', '/late/redirect', '/late/headers']) {
        const answer = await child.agent.request('GET', path, undefined, { 'request-timeout': '0.1' });
        assert.equal(answer.status, 503, path);
      }
      // Past every late write: the process still serves.
      await sleep(1_000);
      assert.equal((await child.agent.request('GET', '/')).status, 200);
      assert.equal(child.logs.filter((line) => /ERR_HTTP_HEADERS_SENT|uncaught/i.test(line)).length, 0, child.logs.join('\n'));
    } finally {
      child.process.kill('SIGTERM');
      assert.equal(await child.exited, 143);
    }
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
