/**
 * Multipart prepare with a `file` parameter (reference §1.8) and DESIGN.md invariant 6 for uploads:
 * files land in `<uploadDir>/<executionId>/<basename>` with their content intact, the folder is
 * removed on every terminal path (agent stop, extension-initiated stop, failed prepare, rejected
 * request, abandoned prepare), and hostile file names never create anything outside it.
 * Real HTTP, real worker threads.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { dirname, isAbsolute, join, sep } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as schemas from '../../src/api/schemas.js';
import { BOOKKEEPING_DIR, LEGACY_OWNER_MARKER_FILE } from '../../src/http/uploads.js';
import { assertWire, eventually, fixture, sleep, spawnExtension, start, tempDir, type Answer, type Running } from '../support/harness.js';
import { stagedFiles, uploadLeftovers, walk } from '../support/uploads.js';

const FILES = 'fixture.http.files';
const PREPARE = `/${FILES}/prepare`;

type Json = Record<string, unknown>;

/** An extension whose upload dir sits a few levels deep in its own temp root, so traversal stays observable. */
interface Setup {
  running: Running;
  root: { path: string; remove(): void };
  uploadDir: string;
}

async function setup(options: { uploadMaxBytes?: number } = {}): Promise<Setup> {
  const root = tempDir('actionkit-uploads-root-');
  const uploadDir = join(root.path, 'l1', 'l2', 'uploads');
  mkdirSync(join(root.path, 'l1', 'l2'), { recursive: true });
  const running = await start({ actions: [fixture('http-files')], uploadDir, heartbeatMinIntervalMs: 10_000, ...options });
  return { running, root, uploadDir };
}

let main: Setup;
let tiny: Setup;
let logs: { path: string; remove(): void };

before(async () => {
  logs = tempDir('actionkit-uploads-logs-');
  [main, tiny] = await Promise.all([setup(), setup({ uploadMaxBytes: 1024 })]);
});
after(async () => {
  await Promise.all([main.running.close(), tiny.running.close()]);
  main.root.remove();
  tiny.root.remove();
  logs.remove();
});

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

function prepareBody(executionId: string, config: Json = {}): Json {
  return { executionId, config: { duration: 10_000, payload: 'file::placeholder', ...config }, properties: {} };
}

/** A multipart prepare as the agent sends it: `request` (JSON string) + one file part per parameter. */
function form(request: Json | string, files: Array<{ name: string; content: Buffer | string; filename: string }>): FormData {
  const data = new FormData();
  data.append('request', typeof request === 'string' ? request : JSON.stringify(request));
  for (const file of files) data.append(file.name, new Blob([file.content], { type: 'application/octet-stream' }), file.filename);
  return data;
}

async function prepareMultipart(setup: Setup, data: FormData): Promise<Answer> {
  const answer = await setup.running.agent.request('POST', PREPARE, data);
  assertWire(schemas.PrepareActionResponseSchema, answer.body, 'multipart prepare');
  return answer;
}

function sha256(content: Buffer | string): string {
  return createHash('sha256').update(content).digest('hex');
}

function stateOf(answer: Answer): Json {
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  assert.equal(answer.body['error'], undefined, JSON.stringify(answer.body['error']));
  return answer.body['state'] as Json;
}

function title(answer: Answer): string {
  return String((answer.body as { title?: unknown }).title);
}

/**
 * Everything in the temp root that should not be there: anything outside the upload dir but its
 * ancestors, and anything an upload left inside it, except the folders (and owner records) of
 * `allowedExecutionIds`.
 */
function strayEntries(setup: Setup, allowedExecutionIds: string[] = []): string[] {
  const uploadsRel = join('l1', 'l2', 'uploads');
  const ancestors = new Set(['l1', join('l1', 'l2'), uploadsRel]);
  const outside = walk(setup.root.path).filter((entry) => !ancestors.has(entry) && !entry.startsWith(uploadsRel + sep));
  const inside = uploadLeftovers(setup.uploadDir).filter(
    (entry) => !allowedExecutionIds.some((id) => entry === id || entry.startsWith(`${id}/`) || entry === `${BOOKKEEPING_DIR}/owners/${id}`),
  );
  return [...outside, ...inside.map((entry) => join(uploadsRel, entry))];
}

function readLines(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter((line) => line !== '');
  } catch {
    return [];
  }
}

/** A hand-crafted multipart body: each part's Content-Disposition is written verbatim. */
function rawMultipart(boundary: string, parts: Array<{ disposition: string; content: string; contentType?: string }>): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${part.disposition}\r\n`, 'utf8'));
    if (part.contentType !== undefined) chunks.push(Buffer.from(`Content-Type: ${part.contentType}\r\n`, 'utf8'));
    chunks.push(Buffer.from(`\r\n${part.content}\r\n`, 'utf8'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`, 'utf8'));
  return Buffer.concat(chunks);
}

/** POST a raw body with node:http; checks the envelope and the wire schema of the answer. */
function postRaw(setup: Setup, path: string, contentType: string, body: Buffer): Promise<Answer> {
  const url = new URL(path, setup.running.base);
  return new Promise<Answer>((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-type': contentType, 'content-length': String(body.length) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          try {
            assert.match(String(res.headers['content-type']), /^application\/json/);
            assert.ok(res.headers['request-id'] !== undefined, 'no Request-Id');
            assert.ok(res.headers['date'] !== undefined, 'no Date');
            const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Json;
            if ((res.statusCode ?? 0) >= 400) assertWire(schemas.ActionKitErrorSchema, parsed, `${path} (${res.statusCode})`);
            else assertWire(schemas.PrepareActionResponseSchema, parsed, path);
            const headers = new Headers();
            for (const [key, value] of Object.entries(res.headers)) if (typeof value === 'string') headers.set(key, value);
            resolve({ status: res.statusCode ?? 0, body: parsed, headers });
          } catch (error) {
            reject(error as Error);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------------------------
// the happy path and every terminal path
// ---------------------------------------------------------------------------------------------

describe('uploads: files reach the action and are removed on every terminal path', () => {
  test('multipart prepare: config holds <uploadDir>/<executionId>/<basename>, content intact; agent stop removes the folder after the author stop', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `agent-stop-${id}.log`);
    // Binary content with every byte value, larger than busboy's and the socket's chunks.
    const content = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(300 * 1024)]);
    const prepared = await prepareMultipart(main, form(prepareBody(id, { stopLog }), [{ name: 'payload', content, filename: 'payload.bin' }]));
    const state = stateOf(prepared);
    const expectedPath = join(main.uploadDir, id, 'payload.bin');
    assert.equal(state['path'], expectedPath);
    assert.ok(isAbsolute(String(state['path'])));
    assert.equal(state['size'], content.length);
    assert.equal(state['sha256'], sha256(content));
    const messages = prepared.body['messages'] as Array<{ message: string }>;
    assert.equal(messages[0]?.message, `received ${content.length} bytes, sha256 ${sha256(content)}`);
    assert.ok(readFileSync(expectedPath).equals(content), 'file on disk differs from the upload');
    // Exactly the upload is in the folder, with the reference's permissions; the owner record is outside it.
    assert.deepEqual(readdirSync(join(main.uploadDir, id)), ['payload.bin']);
    const umask = process.umask();
    assert.equal(statSync(join(main.uploadDir, id)).mode & 0o777, 0o755 & ~umask, 'folder: 0755 less the umask');
    assert.equal(statSync(expectedPath).mode & 0o777, 0o666 & ~umask, 'file: 0666 less the umask');
    assert.ok(statSync(join(main.uploadDir, BOOKKEEPING_DIR, 'owners', id)).isFile(), 'no owner record outside the folder');
    assert.deepEqual(strayEntries(main, [id]), []);

    const started = await main.running.agent.start(FILES, id, state);
    assert.equal(started.status, 200);
    const stopped = await main.running.agent.stop(FILES, id, started.body['state']);
    assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
    assert.equal(stopped.body['error'], undefined);
    assert.deepEqual(readLines(stopLog), [`${id} agent stop true`], 'the author stop must still see the file');
    assert.equal(existsSync(join(main.uploadDir, id)), false, 'folder left after agent stop');
    assert.deepEqual(uploadLeftovers(main.uploadDir), []);
  });

  test('parts in any order, upper-case executionId: the folder is named by the lower-case id', async () => {
    const id = randomUUID();
    const data = new FormData();
    data.append('payload', new Blob(['file before request']), 'first.txt');
    data.append('request', JSON.stringify(prepareBody(id.toUpperCase())));
    const prepared = await prepareMultipart(main, data);
    const state = stateOf(prepared);
    assert.equal(state['path'], join(main.uploadDir, id, 'first.txt'));
    assert.equal(readFileSync(String(state['path']), 'utf8'), 'file before request');
    assert.equal((await main.running.agent.stop(FILES, id, state)).status, 200);
    assert.deepEqual(uploadLeftovers(main.uploadDir), []);
  });

  test('a UTF-8 file name arrives as sent (like Go, which uses the raw name)', async () => {
    const id = randomUUID();
    const name = 'Grüße 日本 😀.txt';
    const state = stateOf(await prepareMultipart(main, form(prepareBody(id), [{ name: 'payload', content: 'unicode', filename: name }])));
    assert.equal(state['path'], join(main.uploadDir, id, name));
    assert.equal(readFileSync(join(main.uploadDir, id, name), 'utf8'), 'unicode');
    assert.equal((await main.running.agent.stop(FILES, id, state)).status, 200);
    assert.deepEqual(uploadLeftovers(main.uploadDir), []);
  });

  test('extension-initiated stop (stopAll) removes the folder; the agent stop then reports it', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `stop-all-${id}.log`);
    const prepared = await prepareMultipart(main, form(prepareBody(id, { stopLog }), [{ name: 'payload', content: 'stop me', filename: 'p.txt' }]));
    const started = await main.running.agent.start(FILES, id, stateOf(prepared));
    assert.equal(started.status, 200);
    assert.ok(existsSync(join(main.uploadDir, id, 'p.txt')));

    const result = await main.running.extension.stopAll();
    assert.equal(result.succeeded, 1, JSON.stringify(result));
    assert.deepEqual(readLines(stopLog), [`${id} extension shutdown true`]);
    assert.equal(existsSync(join(main.uploadDir, id)), false, 'folder left after an extension-initiated stop');
    assert.deepEqual(uploadLeftovers(main.uploadDir), []);

    const agentStop = await main.running.agent.stop(FILES, id, started.body['state']);
    assert.equal(agentStop.status, 200);
    assert.deepEqual(agentStop.body['error'], { title: 'Action was stopped by extension extension shutdown' });
    assert.equal(readLines(stopLog).length, 1, 'the author stop must not run again');
  });

  test('prepared but never started: stopAll still removes the folder', async () => {
    const id = randomUUID();
    const prepared = await prepareMultipart(main, form(prepareBody(id), [{ name: 'payload', content: 'never started', filename: 'n.txt' }]));
    stateOf(prepared);
    assert.ok(existsSync(join(main.uploadDir, id)));
    await main.running.extension.stopAll();
    assert.equal(existsSync(join(main.uploadDir, id)), false);
    assert.equal(main.running.extension.stats().activeExecutions, 0);
  });

  test('failed prepare removes the folder at once (the agent never calls stop after it)', async () => {
    const id = randomUUID();
    const content = 'read then fail';
    const prepared = await prepareMultipart(main, form(prepareBody(id, { failPrepare: true }), [{ name: 'payload', content, filename: 'f.txt' }]));
    assert.equal(prepared.status, 200);
    assert.deepEqual(prepared.body['error'], { title: 'Failed to prepare.', detail: `prepare failed on purpose after reading ${content.length} bytes` });
    assert.equal(existsSync(join(main.uploadDir, id)), false, 'folder left after a failed prepare');
    assert.deepEqual(uploadLeftovers(main.uploadDir), []);
    assert.equal(main.running.extension.stats().activeExecutions, 0);
  });

  test('prepare abandoned by the agent (Request-Timeout) is rolled back, folder included', async () => {
    const id = randomUUID();
    const stopLog = join(logs.path, `abandoned-${id}.log`);
    const answer = await main.running.agent.request(
      'POST',
      PREPARE,
      form(prepareBody(id, { stopLog, prepareDelayMs: 600 }), [{ name: 'payload', content: 'slow', filename: 's.txt' }]),
      { 'request-timeout': '0.15' },
    );
    assert.equal(answer.status, 503, JSON.stringify(answer.body));
    await eventually('the abandoned prepare to be stopped', () => (readLines(stopLog).length > 0 ? true : undefined));
    await eventually('the folder to be removed', () => (existsSync(join(main.uploadDir, id)) ? undefined : true));
    assert.match(readLines(stopLog)[0]!, new RegExp(`^${id} .+ true$`));
    await eventually('no active execution', () => (main.running.extension.stats().activeExecutions === 0 ? true : undefined));
    assert.deepEqual(uploadLeftovers(main.uploadDir), []);
  });
});

// ---------------------------------------------------------------------------------------------
// hostile input
// ---------------------------------------------------------------------------------------------

describe('uploads: hostile and invalid input', () => {
  const hostileNames: Array<{ label: string; disposition: (boundary: string) => string; basename: string | undefined }> = [
    { label: '../../x', disposition: () => 'form-data; name="payload"; filename="../../x"', basename: 'x' },
    { label: '../../../../x (up to the temp root)', disposition: () => 'form-data; name="payload"; filename="../../../../x"', basename: 'x' },
    { label: '/etc/passwd', disposition: () => 'form-data; name="payload"; filename="/etc/passwd"', basename: 'passwd' },
    { label: 'a\\u0000b (raw NUL)', disposition: () => 'form-data; name="payload"; filename="a\u0000b"', basename: undefined },
    { label: "RFC 5987 encoded ../../y", disposition: () => "form-data; name=\"payload\"; filename*=UTF-8''..%2F..%2Fy", basename: 'y' },
    { label: 'encoded NUL', disposition: () => "form-data; name=\"payload\"; filename*=UTF-8''a%00b", basename: undefined },
    { label: 'backslashes ..\\..\\z', disposition: () => 'form-data; name="payload"; filename="..\\\\..\\\\z"', basename: 'z' },
    { label: '..', disposition: () => 'form-data; name="payload"; filename=".."', basename: undefined },
    { label: '.', disposition: () => 'form-data; name="payload"; filename="."', basename: undefined },
    { label: 'empty name', disposition: () => 'form-data; name="payload"; filename=""', basename: undefined },
    { label: "an earlier version's marker file name", disposition: () => `form-data; name="payload"; filename="${LEGACY_OWNER_MARKER_FILE}"`, basename: undefined },
    { label: 'a%2F..%2Fb (percent text in a plain filename is literal)', disposition: () => 'form-data; name="payload"; filename="a%2F..%2Fb"', basename: 'a%2F..%2Fb' },
  ];

  const passwdBefore = existsSync('/etc/passwd') ? statSync('/etc/passwd').mtimeMs : undefined;

  for (const hostile of hostileNames) {
    test(`file name ${hostile.label}: nothing outside <uploadDir>/<executionId>/`, async () => {
      const id = randomUUID();
      const boundary = `----actionkit${randomBytes(8).toString('hex')}`;
      const body = rawMultipart(boundary, [
        { disposition: 'form-data; name="request"', content: JSON.stringify(prepareBody(id)) },
        { disposition: hostile.disposition(boundary), content: 'hostile content', contentType: 'application/octet-stream' },
      ]);
      const answer = await postRaw(main, PREPARE, `multipart/form-data; boundary=${boundary}`, body);
      if (hostile.basename === undefined) {
        assert.equal(answer.status, 400, JSON.stringify(answer.body));
        assert.deepEqual(strayEntries(main), [], 'a rejected upload left something behind');
      } else {
        // Accepted under its base name only.
        const state = stateOf(answer);
        assert.equal(state['path'], join(main.uploadDir, id, hostile.basename));
        assert.equal(readFileSync(String(state['path']), 'utf8'), 'hostile content');
        assert.deepEqual(strayEntries(main, [id]), [], 'an upload escaped its execution folder');
        assert.equal((await main.running.agent.stop(FILES, id, state)).status, 200);
      }
      assert.deepEqual(uploadLeftovers(main.uploadDir), []);
      if (passwdBefore !== undefined) assert.equal(statSync('/etc/passwd').mtimeMs, passwdBefore);
    });
  }

  test('oversized file (uploadMaxBytes 1024) → 413, nothing left; exactly 1024 bytes is accepted', async () => {
    for (const size of [1025, 64 * 1024, 900 * 1024]) {
      const id = randomUUID();
      const answer = await prepareMultipart(tiny, form(prepareBody(id), [{ name: 'payload', content: randomBytes(size), filename: 'big.bin' }]));
      assert.equal(answer.status, 413, `${size} bytes: ${JSON.stringify(answer.body)}`);
      assert.equal(title(answer), 'Uploaded file too large');
      assert.deepEqual(uploadLeftovers(tiny.uploadDir), [], `${size} bytes: something left in uploadDir`);
      assert.deepEqual(strayEntries(tiny), []);
    }
    // Far beyond the limit the runtime stops draining (max(1 MiB, uploadMaxBytes) discarded) and
    // resets the connection, by design: the client may see the 413 or a reset. Nothing is left either way.
    const huge = await prepareMultipart(tiny, form(prepareBody(randomUUID()), [{ name: 'payload', content: randomBytes(3 * 1024 * 1024), filename: 'huge.bin' }])).then(
      (answer) => answer.status,
      (error: unknown) => String(error),
    );
    assert.ok(huge === 413 || /ECONNRESET|EPIPE|other side closed/.test(String(huge)), `3 MiB upload: ${huge}`);
    await eventually('the huge upload to be cleaned up', () => (uploadLeftovers(tiny.uploadDir).length === 0 ? true : undefined), 5000);
    assert.deepEqual(strayEntries(tiny), []);
    const id = randomUUID();
    const content = randomBytes(1024);
    const accepted = await prepareMultipart(tiny, form(prepareBody(id), [{ name: 'payload', content, filename: 'exact.bin' }]));
    const state = stateOf(accepted);
    assert.equal(state['sha256'], sha256(content));
    assert.equal((await tiny.running.agent.stop(FILES, id, state)).status, 200);
    assert.deepEqual(uploadLeftovers(tiny.uploadDir), []);
    assert.equal(tiny.running.extension.stats().activeExecutions, 0);
  });

  test('a second file for the same parameter → 400 "Too many Fileheaders for parameter payload.", nothing left', async () => {
    const id = randomUUID();
    const answer = await prepareMultipart(
      main,
      form(prepareBody(id), [
        { name: 'payload', content: 'one', filename: 'one.txt' },
        { name: 'payload', content: 'two', filename: 'two.txt' },
      ]),
    );
    assert.equal(answer.status, 400, JSON.stringify(answer.body));
    assert.equal(title(answer), 'Too many Fileheaders for parameter payload.');
    assert.deepEqual(uploadLeftovers(main.uploadDir), []);
    assert.equal(main.running.extension.stats().activeExecutions, 0);
  });

  test('invalid `request` field (bad executionId, bad JSON, missing, wrong types) → 400, nothing left', async () => {
    const file = { name: 'payload', content: 'content', filename: 'c.txt' };
    const cases: Array<{ what: string; data: FormData; title?: RegExp }> = [
      { what: 'executionId abc', data: form(prepareBody('abc'), [file]), title: /executionId|request body/ },
      { what: 'executionId ../../etc', data: form(prepareBody('../../etc'), [file]) },
      { what: 'executionId UUID + extra', data: form(prepareBody(`${randomUUID()}x`), [file]) },
      { what: 'executionId missing', data: form({ config: {} }, [file]) },
      { what: 'malformed JSON', data: form('{"executionId": ', [file]), title: /^Failed to parse request body\.$/ },
      { what: 'JSON array', data: form('[]', [file]) },
      { what: 'config as array', data: form({ executionId: randomUUID(), config: [], properties: {} }, [file]), title: /config/ },
    ];
    const missing = new FormData();
    missing.append('payload', new Blob(['content']), 'c.txt');
    cases.push({ what: 'no request field', data: missing });
    const unknownField = form(prepareBody(randomUUID()), [{ name: 'other', content: 'x', filename: 'o.txt' }]);
    cases.push({ what: 'file for a field that is not a file parameter', data: unknownField });

    // Not multipart at all / no boundary, sent raw.
    const request = JSON.stringify(prepareBody(randomUUID()));
    for (const contentType of ['multipart/form-data', 'multipart/form-data; boundary=']) {
      const answer = await postRaw(main, PREPARE, contentType, rawMultipart('xyz', [{ disposition: 'form-data; name="request"', content: request }]));
      assert.equal(answer.status, 400, `${contentType}: ${JSON.stringify(answer.body)}`);
      assert.deepEqual(uploadLeftovers(main.uploadDir), []);
    }
    // Truncated body: the closing boundary never comes.
    const truncated = rawMultipart('cut', [
      { disposition: 'form-data; name="request"', content: request },
      { disposition: 'form-data; name="payload"; filename="t.txt"', content: 'truncated' },
    ]);
    const cut = await postRaw(main, PREPARE, 'multipart/form-data; boundary=cut', truncated.subarray(0, truncated.length - 12));
    assert.equal(cut.status, 400, JSON.stringify(cut.body));
    assert.deepEqual(uploadLeftovers(main.uploadDir), []);

    for (const { what, data, title: expected } of cases) {
      const answer = await prepareMultipart(main, data);
      assert.equal(answer.status, 400, `${what}: ${JSON.stringify(answer.body)}`);
      if (expected !== undefined) assert.match(title(answer), expected, what);
      assert.deepEqual(uploadLeftovers(main.uploadDir), [], `${what}: something left in uploadDir`);
      assert.deepEqual(strayEntries(main), [], what);
    }
    assert.equal(main.running.extension.stats().activeExecutions, 0);
  });

  test('a duplicate multipart prepare (409) leaves the first execution’s files untouched', async () => {
    const id = randomUUID();
    const first = await prepareMultipart(main, form(prepareBody(id), [{ name: 'payload', content: 'first', filename: 'same.txt' }]));
    const state = stateOf(first);
    for (const data of [
      form(prepareBody(id), [{ name: 'payload', content: 'second', filename: 'same.txt' }]),
      form(prepareBody(id), [{ name: 'payload', content: 'third', filename: 'other.txt' }]),
      form(prepareBody(id), []),
    ]) {
      const duplicate = await prepareMultipart(main, data);
      assert.equal(duplicate.status, 409, JSON.stringify(duplicate.body));
      assert.equal(readFileSync(join(main.uploadDir, id, 'same.txt'), 'utf8'), 'first');
      assert.deepEqual(readdirSync(join(main.uploadDir, id)), ['same.txt']);
    }
    const json = await main.running.agent.prepare(FILES, id, { duration: 1000, payload: 'x' });
    assert.equal(json.status, 409);
    assert.equal(readFileSync(join(main.uploadDir, id, 'same.txt'), 'utf8'), 'first');
    assert.equal((await main.running.agent.stop(FILES, id, state)).status, 200);
    assert.deepEqual(uploadLeftovers(main.uploadDir), []);
  });

  test('an owner record for the id (another process claimed it) → 409, its record untouched, nothing else left', async () => {
    const id = randomUUID();
    const record = join(main.uploadDir, BOOKKEEPING_DIR, 'owners', id);
    mkdirSync(dirname(record), { recursive: true });
    writeFileSync(record, '{"pid":1,"startTime":1,"bootId":""}');
    try {
      const answer = await prepareMultipart(main, form(prepareBody(id), [{ name: 'payload', content: 'x', filename: 'x.txt' }]));
      assert.equal(answer.status, 409, JSON.stringify(answer.body));
      assert.equal(title(answer), `Execution ${id} already has uploaded files`);
      assert.equal(readFileSync(record, 'utf8'), '{"pid":1,"startTime":1,"bootId":""}');
      assert.deepEqual(uploadLeftovers(main.uploadDir), [`${BOOKKEEPING_DIR}/owners/${id}`], 'no folder, no staging, no record draft');
      assert.equal(main.running.extension.stats().activeExecutions, 0);
    } finally {
      rmSync(record, { force: true });
    }
  });

  test('concurrent multipart prepares with one executionId: one wins, its file is intact, nothing else is left', async () => {
    const id = randomUUID();
    const contents = Array.from({ length: 8 }, (_, i) => `candidate ${i} `.repeat(2000));
    const answers = await Promise.all(
      contents.map((content, i) => prepareMultipart(main, form(prepareBody(id), [{ name: 'payload', content, filename: `c${i}.txt` }]))),
    );
    const winners = answers.filter((answer) => answer.status === 200);
    assert.equal(winners.length, 1, answers.map((answer) => answer.status).join(','));
    assert.ok(answers.every((answer) => answer.status === 200 || answer.status === 409));
    const state = stateOf(winners[0]!);
    const index = contents.findIndex((content) => sha256(content) === state['sha256']);
    assert.ok(index >= 0);
    assert.equal(readFileSync(String(state['path']), 'utf8'), contents[index]);
    assert.deepEqual(readdirSync(join(main.uploadDir, id)), [`c${index}.txt`]);
    // Give the losers' cleanup a moment, then nothing but the winner's folder may exist.
    await sleep(50);
    assert.deepEqual(strayEntries(main, [id]), []);
    assert.equal((await main.running.agent.stop(FILES, id, state)).status, 200);
    assert.deepEqual(uploadLeftovers(main.uploadDir), []);
  });

  test('afterwards nothing is left anywhere in the temp roots', async () => {
    await eventually('no active executions', () => (main.running.extension.stats().activeExecutions === 0 ? true : undefined));
    assert.deepEqual(strayEntries(main), []);
    assert.deepEqual(strayEntries(tiny), []);
  });
});

// ---------------------------------------------------------------------------------------------
// a crash: the next start-up reclaims what the dead process left, and only that
// ---------------------------------------------------------------------------------------------

describe('uploads: a process killed mid-upload', () => {
  test('SIGKILL: a live process keeps it all; the next start-up after the death removes folder, record and staged file', async () => {
    const dir = tempDir('actionkit-uploads-kill-');
    const uploadDir = join(dir.path, 'uploads');
    const child = await spawnExtension([fixture('http-files')], { ACTIONKIT_UPLOAD_DIR: uploadDir, ACTIONKIT_HEARTBEAT_MIN_INTERVAL: '1h' });
    try {
      const prepared = randomUUID();
      const answer = await child.agent.request('POST', PREPARE, form(prepareBody(prepared), [{ name: 'payload', content: 'prepared', filename: 'done.txt' }]));
      stateOf(answer);
      // A second upload, cut off by the kill while its file is being written.
      const upload = httpRequest({
        host: '127.0.0.1',
        port: child.port,
        path: PREPARE,
        method: 'POST',
        headers: { 'content-type': 'multipart/form-data; boundary=kill', 'content-length': String(10 * 1024 * 1024) },
      });
      upload.on('error', () => undefined); // the kill resets the connection
      upload.write('--kill\r\nContent-Disposition: form-data; name="payload"; filename="half.bin"\r\nContent-Type: application/octet-stream\r\n\r\n');
      upload.write(randomBytes(64 * 1024));
      const staged = await eventually('the file to be staged', () => stagedFiles(uploadDir).find((file) => file.endsWith('/half.bin')));
      const left = [prepared, `${prepared}/done.txt`, `${BOOKKEEPING_DIR}/owners/${prepared}`, dirname(staged), staged];

      // Another process starting meanwhile: the owner is alive, nothing is swept.
      const sibling = await start({ actions: [fixture('http-files')], uploadDir });
      await sibling.close();
      assert.deepEqual(uploadLeftovers(uploadDir), [...left].sort());

      child.process.kill('SIGKILL');
      assert.equal(await child.exited, 'SIGKILL');
      upload.destroy();
      assert.deepEqual(uploadLeftovers(uploadDir), [...left].sort(), 'the dead process left its folder, record and staged file');

      const next = await start({ actions: [fixture('http-files')], uploadDir });
      try {
        assert.deepEqual(uploadLeftovers(uploadDir), []);
        const deadStaging = staged.split('/')[2];
        assert.ok(deadStaging !== undefined && !readdirSync(join(uploadDir, BOOKKEEPING_DIR, 'staging')).includes(deadStaging), 'the dead process\'s staging folder is gone');
        // The id is free again.
        const again = await next.agent.request('POST', PREPARE, form(prepareBody(prepared), [{ name: 'payload', content: 'again', filename: 'done.txt' }]));
        assert.equal((await next.agent.stop(FILES, prepared, stateOf(again))).status, 200);
        assert.deepEqual(uploadLeftovers(uploadDir), []);
      } finally {
        await next.close();
      }
    } finally {
      child.process.kill('SIGKILL');
      dir.remove();
    }
  });
});
