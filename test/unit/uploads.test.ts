/**
 * Multipart uploads against a real HTTP server on 127.0.0.1:0 with real clients: fetch + FormData for
 * well-formed requests, hand-written bodies over node:http for hostile names and malformed input
 * (FormData would sanitise them).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import { RuntimeError } from '../../src/errors.js';
import {
  BOOKKEEPING_DIR,
  LEGACY_OWNER_MARKER_FILE,
  type MultipartLimits,
  type ReceivedMultipart,
  receiveMultipart,
  removeExecutionFolder,
  sweepStaleUploads,
  UNREADABLE_RECORD_MIN_AGE_MS,
} from '../../src/http/uploads.js';
import { stagedFiles, uploadLeftovers } from '../support/uploads.js';

const TEST_TIMEOUT_MS = 15_000;
const MAX_FILE_BYTES = 1024;

type Outcome = { ok: true; value: ReceivedMultipart } | { ok: false; error: unknown };

interface Harness {
  port: number;
  uploadDir: string;
  /** The settled result of the n-th request the server received (0-based). */
  outcome(index: number): Promise<Outcome>;
  close(): Promise<void>;
}

interface WireAnswer {
  status: number;
  body: Record<string, unknown>;
}

const tempDirs: string[] = [];
const servers: Harness[] = [];

async function freshDir(): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'actionkit-uploads-'));
  tempDirs.push(dir);
  return dir;
}

async function startServer(overrides: Partial<MultipartLimits> = {}): Promise<Harness> {
  const uploadDir = overrides.uploadDir ?? path.join(await freshDir(), 'steadybit');
  const limits: MultipartLimits = {
    uploadDir,
    maxFileBytes: MAX_FILE_BYTES,
    maxRequestBytes: 4096,
    fileParameters: new Set(['file1', 'file2']),
    // Every request field here is below LARGE_JSON_BYTES, parsed where it arrives.
    decode: () => Promise.reject(new Error('no request field in these tests is large enough to be decoded elsewhere')),
    ...overrides,
  };
  const outcomes: Promise<Outcome>[] = [];
  const waiters: Array<() => void> = [];
  const server = http.createServer((req, res) => {
    const outcome = receiveMultipart(req, limits).then(
      (value): Outcome => ({ ok: true, value }),
      (error: unknown): Outcome => ({ ok: false, error }),
    );
    outcomes.push(outcome);
    for (const wake of waiters.splice(0)) wake();
    void outcome.then((result) => {
      if (res.destroyed) return;
      if (result.ok) {
        const { request, executionId, folder, files } = result.value;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ request, executionId, folder: folder ?? null, files: Object.fromEntries(files) }));
      } else {
        const error = result.error;
        const status = error instanceof RuntimeError ? error.httpStatus : 599;
        const body = error instanceof RuntimeError ? { ...error.toWire(), code: error.code } : { title: String(error) };
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const harness: Harness = {
    port: (server.address() as AddressInfo).port,
    uploadDir,
    async outcome(index) {
      while (outcomes.length <= index) await new Promise<void>((resolve) => waiters.push(resolve));
      return outcomes[index] as Promise<Outcome>;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  servers.push(harness);
  return harness;
}

afterEach(async () => {
  for (const harness of servers.splice(0)) await harness.close();
});
after(async () => {
  for (const dir of tempDirs.splice(0)) await fsp.rm(dir, { recursive: true, force: true });
});

function prepareBody(executionId: string = randomUUID()): Record<string, unknown> {
  return {
    executionId,
    config: { file1: 'file::1234567890', duration: 10000 },
    target: { name: 'host-1', attributes: {} },
    executionContext: { agentAid: 'agent' },
  };
}

async function postForm(harness: Harness, form: FormData): Promise<WireAnswer> {
  const response = await fetch(`http://127.0.0.1:${harness.port}/prepare`, { method: 'POST', body: form });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

interface RawPart {
  name?: string;
  /** Raw `filename="…"` parameter content, inserted verbatim (no escaping). */
  filename?: string;
  /** RFC 5987 `filename*=` value, e.g. `utf-8''a%00b`. */
  filenameStar?: string;
  contentType?: string;
  body: string | Buffer;
}

const BOUNDARY = '----actionkit-test-boundary';

function multipartBody(parts: RawPart[], boundary = BOUNDARY): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    let disposition = 'form-data';
    if (part.name !== undefined) disposition += `; name="${part.name}"`;
    if (part.filename !== undefined) disposition += `; filename="${part.filename}"`;
    if (part.filenameStar !== undefined) disposition += `; filename*=${part.filenameStar}`;
    let head = `--${boundary}\r\nContent-Disposition: ${disposition}\r\n`;
    if (part.contentType !== undefined) head += `Content-Type: ${part.contentType}\r\n`;
    chunks.push(Buffer.from(`${head}\r\n`, 'utf8'), Buffer.isBuffer(part.body) ? part.body : Buffer.from(part.body, 'utf8'), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

function requestPart(body: unknown): RawPart {
  return { name: 'request', body: typeof body === 'string' ? body : JSON.stringify(body) };
}

function filePart(name: string, filename: string, body: string | Buffer = 'content'): RawPart {
  return { name, filename, contentType: 'application/octet-stream', body };
}

function postRaw(harness: Harness, body: Buffer, contentType = `multipart/form-data; boundary=${BOUNDARY}`): Promise<WireAnswer> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: '127.0.0.1', port: harness.port, method: 'POST', path: '/prepare', headers: { 'content-type': contentType, 'content-length': body.length } },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          try {
            resolve({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> });
          } catch (error) {
            reject(error);
          }
        });
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}

/** Entries of the upload dir (missing dir = none). */
async function listUploadDir(harness: Harness): Promise<string[]> {
  try {
    return (await fsp.readdir(harness.uploadDir)).sort();
  } catch {
    return [];
  }
}

/** Poll until a staging folder holding `fileName` exists; returns its path relative to the upload dir. */
async function waitForStaging(harness: Harness, fileName: string): Promise<string> {
  const POLL_MS = 10;
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const staged = stagedFiles(harness.uploadDir).find((file) => path.basename(file) === fileName);
    if (staged !== undefined) return path.dirname(staged);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error(`no staging folder with ${fileName} appeared`);
}

async function assertNothingLeft(harness: Harness): Promise<void> {
  assert.deepEqual(uploadLeftovers(harness.uploadDir), [], 'nothing but the empty bookkeeping may be left after a failed upload');
}

/** The owner record of an execution folder, parsed. */
async function ownerRecord(uploadDir: string, executionId: string): Promise<{ pid: number; startTime: number; bootId: string }> {
  return JSON.parse(await fsp.readFile(path.join(uploadDir, BOOKKEEPING_DIR, 'owners', executionId), 'utf8')) as { pid: number; startTime: number; bootId: string };
}

describe('receiveMultipart', { timeout: TEST_TIMEOUT_MS }, () => {
  test('happy path: file part after `request`, config left unchanged', async () => {
    const harness = await startServer();
    const body = prepareBody();
    const form = new FormData();
    form.append('request', JSON.stringify(body));
    form.append('file1', new Blob(['hello world'], { type: 'application/octet-stream' }), 'data.txt');
    const answer = await postForm(harness, form);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const eid = body.executionId as string;
    const folder = path.join(harness.uploadDir, eid);
    assert.equal(answer.body.executionId, eid);
    assert.equal(answer.body.folder, folder);
    assert.deepEqual(answer.body.files, { file1: path.join(folder, 'data.txt') });
    assert.deepEqual(answer.body.request, body, 'the request, including config.file1, is reported unchanged');
    assert.equal(await fsp.readFile(path.join(folder, 'data.txt'), 'utf8'), 'hello world');
    assert.deepEqual(await fsp.readdir(folder), ['data.txt'], 'the folder holds exactly the uploads');
    assert.deepEqual(uploadLeftovers(harness.uploadDir), [`${BOOKKEEPING_DIR}/owners/${eid}`, eid, `${eid}/data.txt`], 'no staging folder is left');
    const umask = process.umask();
    assert.equal((await fsp.stat(folder)).mode & 0o777, 0o755 & ~umask, 'folder: 0755 less the umask');
    assert.equal((await fsp.stat(path.join(folder, 'data.txt'))).mode & 0o777, 0o666 & ~umask, 'file: 0666 less the umask');
    const record = await ownerRecord(harness.uploadDir, eid);
    assert.equal(record.pid, process.pid);
    assert.equal(typeof record.startTime, 'number');
    assert.equal(typeof record.bootId, 'string');
  });

  test('happy path: file parts before `request`, two parameters, upper-case id is lower-cased', async () => {
    const harness = await startServer();
    const eid = randomUUID();
    const body = prepareBody(eid.toUpperCase());
    const form = new FormData();
    form.append('file2', new Blob([Buffer.alloc(MAX_FILE_BYTES, 7)], { type: 'application/octet-stream' }), 'exactly-the-limit.bin');
    form.append('file1', new Blob(['one'], { type: 'application/octet-stream' }), 'one.txt');
    form.append('request', JSON.stringify(body));
    const answer = await postForm(harness, form);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const folder = path.join(harness.uploadDir, eid);
    assert.equal(answer.body.executionId, eid);
    assert.deepEqual(answer.body.files, { file1: path.join(folder, 'one.txt'), file2: path.join(folder, 'exactly-the-limit.bin') });
    assert.equal((await fsp.stat(path.join(folder, 'exactly-the-limit.bin'))).size, MAX_FILE_BYTES, 'a file of exactly maxFileBytes is accepted');
  });

  test('no file part: no folder is created', async () => {
    const harness = await startServer();
    const form = new FormData();
    form.append('request', JSON.stringify(prepareBody()));
    const answer = await postForm(harness, form);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.folder, null);
    assert.deepEqual(answer.body.files, {});
    await assertNothingLeft(harness);
  });

  test('file larger than maxFileBytes → 413 and nothing left', async () => {
    const harness = await startServer();
    const form = new FormData();
    form.append('request', JSON.stringify(prepareBody()));
    form.append('file1', new Blob([Buffer.alloc(64 * 1024, 1)], { type: 'application/octet-stream' }), 'big.bin');
    const answer = await postForm(harness, form);
    assert.equal(answer.status, 413);
    assert.equal(answer.body.title, 'Uploaded file too large');
    assert.match(String(answer.body.detail), /file1/);
    assert.match(String(answer.body.detail), new RegExp(String(MAX_FILE_BYTES)));
    await assertNothingLeft(harness);
  });

  test('file one byte over the limit → 413', async () => {
    const harness = await startServer();
    const answer = await postRaw(harness, multipartBody([requestPart(prepareBody()), filePart('file1', 'a.bin', Buffer.alloc(MAX_FILE_BYTES + 1))]));
    assert.equal(answer.status, 413);
    await assertNothingLeft(harness);
  });

  test('a far larger body than the drain budget: the promise rejects, nothing left, the server survives', async () => {
    const harness = await startServer();
    const form = new FormData();
    form.append('request', JSON.stringify(prepareBody()));
    form.append('file1', new Blob([Buffer.alloc(8 * 1024 * 1024, 1)], { type: 'application/octet-stream' }), 'huge.bin');
    // The client may see the 413 or a reset, depending on how far it got when the request was cut.
    const answer = await postForm(harness, form).catch((error: unknown) => error);
    if (!(answer instanceof Error)) assert.equal((answer as WireAnswer).status, 413);
    const outcome = await harness.outcome(0);
    assert.equal(outcome.ok, false);
    assert.equal((outcome as { error: RuntimeError }).error.httpStatus, 413);
    await assertNothingLeft(harness);
    const next = new FormData();
    next.append('request', JSON.stringify(prepareBody()));
    assert.equal((await postForm(harness, next)).status, 200);
  });

  test('`request` field larger than maxRequestBytes → 413', async () => {
    const harness = await startServer({ maxRequestBytes: 100 });
    const body = { ...prepareBody(), padding: 'x'.repeat(200) };
    const answer = await postRaw(harness, multipartBody([filePart('file1', 'a.txt'), requestPart(body)]));
    assert.equal(answer.status, 413);
    assert.equal(answer.body.title, 'Request body too large');
    await assertNothingLeft(harness);
  });

  test('second file for the same parameter → 400 with the reference title', async () => {
    const harness = await startServer();
    const form = new FormData();
    form.append('request', JSON.stringify(prepareBody()));
    form.append('file1', new Blob(['a'], { type: 'application/octet-stream' }), 'a.txt');
    form.append('file1', new Blob(['b'], { type: 'application/octet-stream' }), 'b.txt');
    const answer = await postForm(harness, form);
    assert.equal(answer.status, 400);
    assert.equal(answer.body.title, 'Too many Fileheaders for parameter file1.');
    await assertNothingLeft(harness);
  });

  test('file for a field that is not a file parameter → 400 naming the field', async () => {
    const harness = await startServer();
    const form = new FormData();
    form.append('request', JSON.stringify(prepareBody()));
    form.append('file1', new Blob(['a'], { type: 'application/octet-stream' }), 'a.txt');
    form.append('duration', new Blob(['b'], { type: 'application/octet-stream' }), 'b.txt');
    const answer = await postForm(harness, form);
    assert.equal(answer.status, 400);
    assert.equal(answer.body.title, 'Unexpected file for field duration.');
    await assertNothingLeft(harness);
  });

  test('`request` sent as a file part → 400', async () => {
    const harness = await startServer();
    const answer = await postRaw(harness, multipartBody([filePart('request', 'request.json', JSON.stringify(prepareBody()))]));
    assert.equal(answer.status, 400);
    assert.equal(answer.body.title, 'Failed to parse request body.');
    await assertNothingLeft(harness);
  });

  test('missing `request` field → 400 Failed to parse request body.', async () => {
    const harness = await startServer();
    const form = new FormData();
    form.append('file1', new Blob(['a'], { type: 'application/octet-stream' }), 'a.txt');
    const answer = await postForm(harness, form);
    assert.equal(answer.status, 400);
    assert.equal(answer.body.title, 'Failed to parse request body.');
    assert.match(String(answer.body.detail), /no `request`/);
    await assertNothingLeft(harness);
  });

  test('invalid JSON in `request` → 400 Failed to parse request body.', async () => {
    const harness = await startServer();
    const answer = await postRaw(harness, multipartBody([filePart('file1', 'a.txt'), requestPart('{"executionId": ')]));
    assert.equal(answer.status, 400);
    assert.equal(answer.body.title, 'Failed to parse request body.');
    assert.match(String(answer.body.detail), /not valid JSON/);
    await assertNothingLeft(harness);
  });

  test('duplicate `request` field → 400', async () => {
    const harness = await startServer();
    const answer = await postRaw(harness, multipartBody([requestPart(prepareBody()), requestPart(prepareBody())]));
    assert.equal(answer.status, 400);
    assert.equal(answer.body.title, 'Failed to parse request body.');
  });

  for (const [label, executionId] of [
    ['not a UUID', 'not-a-uuid'],
    ['path traversal', '../../etc'],
    ['missing', undefined],
    ['a number', 42],
  ] as const) {
    test(`invalid executionId (${label}) → 400 and nothing left`, async () => {
      const harness = await startServer();
      const body = { ...prepareBody(), executionId };
      const answer = await postRaw(harness, multipartBody([filePart('file1', 'a.txt'), requestPart(body)]));
      assert.equal(answer.status, 400);
      assert.equal(answer.body.title, 'Failed to parse request body.');
      assert.match(String(answer.body.detail), /executionId/);
      await assertNothingLeft(harness);
    });
  }

  test('malformed multipart (no closing boundary) → 400 Failed to parse multipart request body.', async () => {
    const harness = await startServer();
    const full = multipartBody([requestPart(prepareBody()), filePart('file1', 'a.txt')]);
    const truncated = full.subarray(0, full.length - `--${BOUNDARY}--\r\n`.length - 4);
    const answer = await postRaw(harness, truncated);
    assert.equal(answer.status, 400);
    assert.equal(answer.body.title, 'Failed to parse multipart request body.');
    await assertNothingLeft(harness);
  });

  test('multipart without boundary and non-multipart content types → 400', async () => {
    const harness = await startServer();
    const body = multipartBody([requestPart(prepareBody())]);
    for (const contentType of ['multipart/form-data', 'application/x-www-form-urlencoded', 'application/json']) {
      const answer = await postRaw(harness, body, contentType);
      assert.equal(answer.status, 400, contentType);
      assert.equal(answer.body.title, 'Failed to parse multipart request body.');
    }
    await assertNothingLeft(harness);
  });

  test('too many form fields → 413', async () => {
    const harness = await startServer();
    const parts: RawPart[] = [requestPart(prepareBody())];
    for (let i = 0; i < 20; i++) parts.push({ name: `extra${i}`, body: 'x' });
    const answer = await postRaw(harness, multipartBody(parts));
    assert.equal(answer.status, 413);
    assert.equal(answer.body.title, 'Too many form fields in multipart request body.');
  });

  test('too many parts → 413', async () => {
    const harness = await startServer();
    // Parts without Content-Disposition are skipped by the parser but still count as parts.
    const parts = Array.from({ length: 150 }, () => `--${BOUNDARY}\r\nX-Filler: 1\r\n\r\nx\r\n`).join('');
    const body = Buffer.concat([Buffer.from(parts), multipartBody([requestPart(prepareBody())])]);
    const answer = await postRaw(harness, body);
    assert.equal(answer.status, 413);
    assert.equal(answer.body.title, 'Too many parts in multipart request body.');
  });

  // Traversal attempts are reduced to their base name and land inside the execution folder.
  for (const [raw, expected] of [
    ['../../etc/passwd', 'passwd'],
    ['/etc/passwd', 'passwd'],
    ['..\\..\\x', 'x'],
    ['C:\\Windows\\system.ini', 'system.ini'],
  ] as const) {
    test(`hostile file name ${JSON.stringify(raw)} is reduced to ${JSON.stringify(expected)} inside the folder`, async () => {
      const harness = await startServer();
      const eid = randomUUID();
      const answer = await postRaw(harness, multipartBody([requestPart(prepareBody(eid)), filePart('file1', raw, 'evil')]));
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      const folder = path.join(harness.uploadDir, eid);
      assert.deepEqual(answer.body.files, { file1: path.join(folder, expected) });
      assert.deepEqual(await fsp.readdir(folder), [expected]);
      assert.deepEqual(await listUploadDir(harness), [BOOKKEEPING_DIR, eid]);
    });
  }

  for (const [label, part] of [
    ['NUL via filename*', { filenameStar: "utf-8''a%00b" }],
    ['newline via filename*', { filenameStar: "utf-8''a%0Ab" }],
    ['DEL via filename*', { filenameStar: "utf-8''a%7Fb" }],
    ['C1 control (U+0085) via filename*', { filenameStar: "utf-8''a%C2%85b" }],
    ['traversal to .. via filename*', { filenameStar: "utf-8''..%2F.." }],
    ['..', { filename: '..' }],
    ['.', { filename: '.' }],
    ['a/..', { filename: 'a/..' }],
    ['dir\\..', { filename: 'dir\\..' }],
    ['empty', { filename: '' }],
    ['only a slash', { filename: '/' }],
    ['no filename (octet-stream part)', {}],
    ['longer than 255 bytes', { filename: 'é'.repeat(128) }],
    ["an earlier version's marker name", { filename: LEGACY_OWNER_MARKER_FILE }],
  ] as const) {
    test(`hostile file name: ${label} → 400 naming the parameter, nothing left`, async () => {
      const harness = await startServer();
      const hostile: RawPart = { name: 'file1', contentType: 'application/octet-stream', body: 'evil', ...part };
      // A good file first, so that a staging folder exists and must be cleaned up.
      const answer = await postRaw(harness, multipartBody([filePart('file2', 'good.txt'), hostile, requestPart(prepareBody())]));
      assert.equal(answer.status, 400);
      assert.equal(answer.body.title, 'Invalid file name for parameter file1.');
      await assertNothingLeft(harness);
    });
  }

  test('raw NUL byte in the part header → 400 (malformed part header)', async () => {
    const harness = await startServer();
    const answer = await postRaw(harness, multipartBody([requestPart(prepareBody()), filePart('file1', 'a\u0000b')]));
    assert.equal(answer.status, 400);
    await assertNothingLeft(harness);
  });

  test('UTF-8 file names are kept', async () => {
    const harness = await startServer();
    const eid = randomUUID();
    const answer = await postRaw(harness, multipartBody([requestPart(prepareBody(eid)), filePart('file1', 'grüße.txt')]));
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body.files, { file1: path.join(harness.uploadDir, eid, 'grüße.txt') });
  });

  test('two parameters with the same base name → 400', async () => {
    const harness = await startServer();
    const answer = await postRaw(
      harness,
      multipartBody([requestPart(prepareBody()), filePart('file1', 'a/same.txt', 'one'), filePart('file2', 'b\\same.txt', 'two')]),
    );
    assert.equal(answer.status, 400);
    assert.equal(answer.body.title, 'Duplicate file name for parameters file1 and file2.');
    await assertNothingLeft(harness);
  });

  test('existing execution folder → 409, existing files untouched, no staging left', async () => {
    const harness = await startServer();
    const eid = randomUUID();
    const existing = path.join(harness.uploadDir, eid);
    await fsp.mkdir(existing, { recursive: true });
    await fsp.writeFile(path.join(existing, 'data.txt'), 'original');
    const form = new FormData();
    form.append('request', JSON.stringify(prepareBody(eid)));
    form.append('file1', new Blob(['replacement'], { type: 'application/octet-stream' }), 'data.txt');
    const answer = await postForm(harness, form);
    assert.equal(answer.status, 409);
    assert.equal(answer.body.title, `Execution ${eid} already has uploaded files`);
    assert.equal(await fsp.readFile(path.join(existing, 'data.txt'), 'utf8'), 'original');
    assert.deepEqual(uploadLeftovers(harness.uploadDir), [eid, `${eid}/data.txt`], 'no staging folder, no owner record');
  });

  for (const [label, content] of [
    ['a complete one', '{"pid":1,"startTime":1,"bootId":""}'],
    ['an empty one', ''],
  ] as const) {
    test(`an owner record for the id without a folder (${label}) → 409, the record untouched, nothing else left`, async () => {
      const harness = await startServer();
      const eid = randomUUID();
      const record = path.join(harness.uploadDir, BOOKKEEPING_DIR, 'owners', eid);
      await fsp.mkdir(path.dirname(record), { recursive: true });
      await fsp.writeFile(record, content);
      const answer = await postRaw(harness, multipartBody([requestPart(prepareBody(eid)), filePart('file1', 'data.txt')]));
      assert.equal(answer.status, 409, JSON.stringify(answer.body));
      assert.equal(answer.body.title, `Execution ${eid} already has uploaded files`);
      assert.equal(await fsp.readFile(record, 'utf8'), content);
      assert.deepEqual(uploadLeftovers(harness.uploadDir), [`${BOOKKEEPING_DIR}/owners/${eid}`], 'no folder, no staging, no record draft');
    });
  }

  test('two concurrent prepares with the same id: one 200, one 409', async () => {
    const harness = await startServer();
    const eid = randomUUID();
    const send = (content: string) =>
      postRaw(harness, multipartBody([requestPart(prepareBody(eid)), filePart('file1', 'data.txt', content)]));
    const answers = await Promise.all([send('a'), send('b')]);
    assert.deepEqual(answers.map((answer) => answer.status).sort(), [200, 409]);
    assert.deepEqual(uploadLeftovers(harness.uploadDir), [`${BOOKKEEPING_DIR}/owners/${eid}`, eid, `${eid}/data.txt`]);
  });

  test('write failure (upload dir cannot be created) → 500 Failed to save file, no server path in the detail', async () => {
    const base = await freshDir();
    // A regular file where a folder is expected fails even for root (chmod tricks do not).
    await fsp.writeFile(path.join(base, 'blocker'), 'x');
    const harness = await startServer({ uploadDir: path.join(base, 'blocker', 'steadybit') });
    const answer = await postRaw(harness, multipartBody([requestPart(prepareBody()), filePart('file1', 'a.txt')]));
    assert.equal(answer.status, 500);
    assert.equal(answer.body.title, 'Failed to save file a.txt.');
    assert.doesNotMatch(String(answer.body.detail), new RegExp(base), 'no server paths in the wire error');
    assert.deepEqual(await fsp.readdir(base), ['blocker']);
  });

  test('staging folder removed behind our back mid-upload → 500 Failed to save uploaded files., nothing left', async () => {
    // The open file keeps accepting writes after its folder is unlinked, so the failure surfaces at
    // the final rename: exercises the late-failure path deterministically (ENOSPC cannot be staged
    // without mounting a tiny file system).
    const harness = await startServer({ maxFileBytes: 10 * 1024 * 1024 });
    const head = Buffer.from(
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file1"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    );
    const tail = Buffer.concat([Buffer.from('\r\n'), multipartBody([requestPart(prepareBody())])]);
    const answer = await new Promise<WireAnswer>((resolve, reject) => {
      const client = http.request(
        {
          host: '127.0.0.1',
          port: harness.port,
          method: 'POST',
          path: '/prepare',
          headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'transfer-encoding': 'chunked' },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () =>
            resolve({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> }),
          );
        },
      );
      client.on('error', reject);
      client.write(head);
      client.write(Buffer.alloc(1024, 1));
      void (async () => {
        const staging = await waitForStaging(harness, 'a.bin');
        await fsp.rm(path.join(harness.uploadDir, staging), { recursive: true, force: true });
        client.write(Buffer.alloc(1024, 2));
        client.end(tail);
      })().catch(reject);
    });
    assert.equal(answer.status, 500);
    assert.equal(answer.body.title, 'Failed to save uploaded files.');
    await assertNothingLeft(harness);
  });

  test('client aborts mid-file: the promise rejects and the staging folder is gone', async () => {
    const harness = await startServer({ maxFileBytes: 10 * 1024 * 1024 });
    const head = Buffer.from(
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file1"; filename="partial.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    );
    const client = http.request({
      host: '127.0.0.1',
      port: harness.port,
      method: 'POST',
      path: '/prepare',
      headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': 5 * 1024 * 1024 },
    });
    client.on('error', () => undefined); // the abort below resets the socket
    client.write(head);
    client.write(Buffer.alloc(256 * 1024, 3));
    // Wait until the file is really being written in a staging folder.
    await waitForStaging(harness, 'partial.bin');
    client.destroy();
    const outcome = await harness.outcome(0);
    assert.equal(outcome.ok, false);
    assert.ok((outcome as { error: unknown }).error instanceof RuntimeError);
    await assertNothingLeft(harness);
  });
});

describe('removeExecutionFolder', { timeout: TEST_TIMEOUT_MS }, () => {
  let uploadDir: string;
  beforeEach(async () => {
    uploadDir = await freshDir();
  });

  test('removes the folder recursively; a missing folder is fine', async () => {
    const eid = randomUUID();
    await fsp.mkdir(path.join(uploadDir, eid, 'nested'), { recursive: true });
    await fsp.writeFile(path.join(uploadDir, eid, 'nested', 'x'), 'x');
    await removeExecutionFolder(uploadDir, eid.toUpperCase());
    assert.deepEqual(await fsp.readdir(uploadDir), []);
    await removeExecutionFolder(uploadDir, eid);
    await removeExecutionFolder(path.join(uploadDir, 'does-not-exist'), randomUUID());
  });

  test('removes the owner record with the folder', async () => {
    const eid = randomUUID();
    await fsp.mkdir(path.join(uploadDir, eid));
    await fsp.writeFile(path.join(uploadDir, eid, 'x'), 'x');
    await fsp.mkdir(path.join(uploadDir, BOOKKEEPING_DIR, 'owners'), { recursive: true });
    await fsp.writeFile(path.join(uploadDir, BOOKKEEPING_DIR, 'owners', eid), '{}');
    await removeExecutionFolder(uploadDir, eid);
    assert.deepEqual(uploadLeftovers(uploadDir), []);
  });

  test('refuses ids that are not UUIDs', async () => {
    await fsp.mkdir(path.join(uploadDir, 'keep'));
    for (const id of ['..', '../keep', 'keep', '', '.staging-abc', BOOKKEEPING_DIR, `${randomUUID()}/..`]) {
      await assert.rejects(removeExecutionFolder(uploadDir, id), (error: unknown) => error instanceof RuntimeError && error.httpStatus === 400, id);
    }
    assert.deepEqual(await fsp.readdir(uploadDir), ['keep']);
  });

  test('a symlink in place of the folder is removed itself, its target is untouched', async () => {
    const outside = await freshDir();
    await fsp.writeFile(path.join(outside, 'precious'), 'data');
    const eid = randomUUID();
    await fsp.symlink(outside, path.join(uploadDir, eid));
    await removeExecutionFolder(uploadDir, eid);
    assert.deepEqual(await fsp.readdir(uploadDir), []);
    assert.equal(await fsp.readFile(path.join(outside, 'precious'), 'utf8'), 'data');
  });
});

describe('sweepStaleUploads', { timeout: TEST_TIMEOUT_MS }, () => {
  /** A pid that certainly belonged to a process that has exited (and been reaped). */
  async function deadPid(): Promise<number> {
    const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    const pid = child.pid;
    assert.ok(pid !== undefined);
    await new Promise<void>((resolve) => child.once('exit', () => resolve()));
    return pid;
  }

  type Identity = { pid: number; startTime: number; bootId: string };

  /**
   * This process's owner record and the name of its staging folder, obtained through a real upload
   * so the test does not re-implement them.
   */
  async function ownIdentity(): Promise<{ record: Identity; stagingName: string }> {
    const harness = await startServer();
    const eid = randomUUID();
    const answer = await postRaw(harness, multipartBody([requestPart(prepareBody(eid)), filePart('file1', 'a.txt')]));
    assert.equal(answer.status, 200);
    const [stagingName, ...others] = await fsp.readdir(path.join(harness.uploadDir, BOOKKEEPING_DIR, 'staging'));
    assert.ok(stagingName !== undefined && others.length === 0);
    return { record: await ownerRecord(harness.uploadDir, eid), stagingName };
  }

  /** A folder with one upload in it, and an earlier version's marker if given. */
  async function folderWithMarker(dir: string, marker: unknown): Promise<void> {
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(path.join(dir, 'upload.bin'), 'data');
    if (marker !== undefined) await fsp.writeFile(path.join(dir, LEGACY_OWNER_MARKER_FILE), JSON.stringify(marker));
  }

  /** An owner record with `content` (a JSON value, or raw text). */
  async function writeRecord(uploadDir: string, executionId: string, content: unknown): Promise<void> {
    await fsp.mkdir(path.join(uploadDir, BOOKKEEPING_DIR, 'owners'), { recursive: true });
    await fsp.writeFile(path.join(uploadDir, BOOKKEEPING_DIR, 'owners', executionId), typeof content === 'string' ? content : JSON.stringify(content));
  }

  /** Make `file` look `ageMs` old (its mtime), as a crash that long ago would have left it. */
  async function age(file: string, ageMs: number): Promise<void> {
    const then = new Date(Date.now() - ageMs);
    await fsp.utimes(file, then, then);
  }

  test('owner records: removes the folder, then the record, of owners that are gone, and their staging; keeps live and unjudgeable ones', async () => {
    const uploadDir = await freshDir();
    const own = await ownIdentity();
    const deadPidNumber = await deadPid();
    const dead = { ...own.record, pid: deadPidNumber };

    const deadExecution = randomUUID();
    const reusedPid = randomUUID();
    const recordOnly = randomUUID();
    const otherBoot = randomUUID();
    const live = randomUUID();
    const liveWithPlantedMarker = randomUUID();
    const emptyRecord = randomUUID();
    const symlinkedRecord = randomUUID();
    await folderWithMarker(path.join(uploadDir, deadExecution), undefined);
    await writeRecord(uploadDir, deadExecution, dead);
    // Same pid as a live process (this one) but another start time: the pid was reused.
    await folderWithMarker(path.join(uploadDir, reusedPid), undefined);
    await writeRecord(uploadDir, reusedPid, { ...own.record, startTime: own.record.startTime - 1 });
    // A crash between writing the record and renaming the folder into place.
    await writeRecord(uploadDir, recordOnly, dead);
    const expectRemoved = [deadExecution, reusedPid].flatMap((id) => [id, `${BOOKKEEPING_DIR}/owners/${id}`]);
    expectRemoved.push(`${BOOKKEEPING_DIR}/owners/${recordOnly}`);
    if (own.record.bootId !== '') {
      // Another boot: its processes are all gone, whatever pid they had (this process's here).
      await folderWithMarker(path.join(uploadDir, otherBoot), undefined);
      await writeRecord(uploadDir, otherBoot, { ...own.record, bootId: '00000000-0000-0000-0000-000000000000' });
      expectRemoved.push(otherBoot, `${BOOKKEEPING_DIR}/owners/${otherBoot}`);
    }
    await folderWithMarker(path.join(uploadDir, live), undefined);
    await writeRecord(uploadDir, live, own.record);
    // A live folder is judged by its record, never by a file in it that looks like an old marker.
    await folderWithMarker(path.join(uploadDir, liveWithPlantedMarker), dead);
    await writeRecord(uploadDir, liveWithPlantedMarker, own.record);
    // A record being written (fallback without hard links) or left by a crash less than a minute ago.
    await folderWithMarker(path.join(uploadDir, emptyRecord), undefined);
    await writeRecord(uploadDir, emptyRecord, '');
    const outside = await freshDir();
    await fsp.writeFile(path.join(outside, 'dead-record'), JSON.stringify(dead));
    await folderWithMarker(path.join(uploadDir, symlinkedRecord), undefined);
    await fsp.symlink(path.join(outside, 'dead-record'), path.join(uploadDir, BOOKKEEPING_DIR, 'owners', symlinkedRecord));

    // Staging folders of a dead process, of this one, and a folder not named by an owner.
    const staging = path.join(uploadDir, BOOKKEEPING_DIR, 'staging');
    const deadStaging = own.stagingName.replace(/^p\d+-/, `p${deadPidNumber}-`);
    for (const name of [deadStaging, own.stagingName, 'not-an-owner']) {
      await fsp.mkdir(path.join(staging, name, 'abc123'), { recursive: true });
      await fsp.writeFile(path.join(staging, name, 'abc123', 'half.bin'), 'half');
    }
    const before = uploadLeftovers(uploadDir);

    expectRemoved.push(`${BOOKKEEPING_DIR}/staging/${deadStaging}`);

    const removed = await sweepStaleUploads(uploadDir);
    assert.deepEqual([...removed].sort(), [...expectRemoved].sort());
    const gone = [
      ...expectRemoved,
      ...[deadExecution, reusedPid, otherBoot].map((id) => `${id}/upload.bin`),
      `${BOOKKEEPING_DIR}/staging/${deadStaging}/abc123`,
      `${BOOKKEEPING_DIR}/staging/${deadStaging}/abc123/half.bin`,
    ];
    assert.deepEqual(uploadLeftovers(uploadDir), before.filter((entry) => !gone.includes(entry)));
    assert.equal(await fsp.readFile(path.join(outside, 'dead-record'), 'utf8'), JSON.stringify(dead), 'the symlink target is untouched');

    // Idempotent.
    assert.deepEqual(await sweepStaleUploads(uploadDir), []);
  });

  test('unreadable owner records: removed once older than UNREADABLE_RECORD_MIN_AGE_MS, their folders kept; younger ones kept', async () => {
    const uploadDir = await freshDir();
    const owners = path.join(uploadDir, BOOKKEEPING_DIR, 'owners');
    const old = UNREADABLE_RECORD_MIN_AGE_MS + 1000;
    const young = UNREADABLE_RECORD_MIN_AGE_MS - 5000;
    // A crash between creating a record and writing it (no folder was made: the rename follows the write).
    const oldEmpty = randomUUID();
    await writeRecord(uploadDir, oldEmpty, '');
    await age(path.join(owners, oldEmpty), old);
    // A damaged record beside a folder: the folder was not made under it, so it is not attributable.
    const oldPartialWithFolder = randomUUID();
    await folderWithMarker(path.join(uploadDir, oldPartialWithFolder), undefined);
    await writeRecord(uploadDir, oldPartialWithFolder, '{"pid":12');
    await age(path.join(owners, oldPartialWithFolder), old);
    const oldOversized = randomUUID();
    await writeRecord(uploadDir, oldOversized, 'x'.repeat(5000));
    await age(path.join(owners, oldOversized), old);
    // Possibly still being written (the fallback without hard links): kept.
    const freshEmpty = randomUUID();
    await folderWithMarker(path.join(uploadDir, freshEmpty), undefined);
    await writeRecord(uploadDir, freshEmpty, '');
    const youngEmpty = randomUUID();
    await writeRecord(uploadDir, youngEmpty, '');
    await age(path.join(owners, youngEmpty), young);
    // A FIFO in place of a record is not a record, and must not hang the sweep.
    const fifo = randomUUID();
    const hasFifo = spawnSync('mkfifo', [path.join(owners, fifo)]).status === 0;
    if (hasFifo) await age(path.join(owners, fifo), old);

    const removed = await sweepStaleUploads(uploadDir);
    assert.deepEqual(
      [...removed].sort(),
      [oldEmpty, oldPartialWithFolder, oldOversized].map((id) => `${BOOKKEEPING_DIR}/owners/${id}`).sort(),
    );
    assert.deepEqual((await fsp.readdir(owners)).sort(), [freshEmpty, youngEmpty, ...(hasFifo ? [fifo] : [])].sort());
    assert.deepEqual(await fsp.readdir(path.join(uploadDir, oldPartialWithFolder)), ['upload.bin']);
    assert.deepEqual(await fsp.readdir(path.join(uploadDir, freshEmpty)), ['upload.bin']);

    // Its id is free again: a new upload with it is accepted.
    const harness = await startServer({ uploadDir });
    const answer = await postRaw(harness, multipartBody([requestPart(prepareBody(oldEmpty)), filePart('file1', 'a.txt')]));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  });

  test('earlier layout: a staging folder with an empty or no marker is removed once older than the age; an execution folder with one is kept', async () => {
    const uploadDir = await freshDir();
    const old = UNREADABLE_RECORD_MIN_AGE_MS + 1000;
    // The symptom of the earlier layout: a crash between creating the marker and writing it.
    const emptyMarker = '.staging-empty1';
    await folderWithMarker(path.join(uploadDir, emptyMarker), undefined);
    await fsp.writeFile(path.join(uploadDir, emptyMarker, LEGACY_OWNER_MARKER_FILE), '');
    await age(path.join(uploadDir, emptyMarker, LEGACY_OWNER_MARKER_FILE), old);
    // A crash between creating the folder and its marker: judged by the folder's age.
    const noMarker = '.staging-none01';
    await folderWithMarker(path.join(uploadDir, noMarker), undefined);
    await age(path.join(uploadDir, noMarker), old);
    const freshEmptyMarker = '.staging-fresh1';
    await folderWithMarker(path.join(uploadDir, freshEmptyMarker), undefined);
    await fsp.writeFile(path.join(uploadDir, freshEmptyMarker, LEGACY_OWNER_MARKER_FILE), '');
    const freshNoMarker = '.staging-fresh2';
    await folderWithMarker(path.join(uploadDir, freshNoMarker), undefined);
    // Earlier versions wrote the marker before the rename: an execution folder with an empty one is not attributable.
    const execution = randomUUID();
    await folderWithMarker(path.join(uploadDir, execution), undefined);
    await fsp.writeFile(path.join(uploadDir, execution, LEGACY_OWNER_MARKER_FILE), '');
    await age(path.join(uploadDir, execution, LEGACY_OWNER_MARKER_FILE), old);
    await age(path.join(uploadDir, execution), old);

    assert.deepEqual((await sweepStaleUploads(uploadDir)).sort(), [emptyMarker, noMarker].sort());
    assert.deepEqual((await fsp.readdir(uploadDir)).sort(), [execution, freshEmptyMarker, freshNoMarker].sort());
  });

  test('a bookkeeping directory that is a symlink is not followed', async () => {
    const uploadDir = await freshDir();
    const dead = { ...(await ownIdentity()).record, pid: await deadPid() };
    const outside = await freshDir();
    const eid = randomUUID();
    await writeRecord(outside, eid, dead);
    await fsp.rename(path.join(outside, BOOKKEEPING_DIR), path.join(outside, 'books'));
    await fsp.symlink(path.join(outside, 'books'), path.join(uploadDir, BOOKKEEPING_DIR));
    await folderWithMarker(path.join(uploadDir, eid), undefined);
    assert.deepEqual(await sweepStaleUploads(uploadDir), []);
    assert.deepEqual(await fsp.readdir(path.join(uploadDir, eid)), ['upload.bin']);
    assert.deepEqual(await fsp.readdir(path.join(outside, 'books', 'owners')), [eid]);
  });

  test("earlier layout (marker inside the folder): removes folders of dead owners only; keeps live, unmarked and foreign entries; never follows symlinks", async () => {
    const uploadDir = await freshDir();
    const own = (await ownIdentity()).record;
    const dead = { ...own, pid: await deadPid() };

    const deadExecution = randomUUID();
    const deadStaging = '.staging-AbC123';
    const reusedPid = randomUUID();
    const otherBoot = randomUUID();
    const ownExecution = randomUUID();
    const unmarked = randomUUID();
    const brokenMarker = randomUUID();
    const symlinkedMarker = randomUUID();
    await folderWithMarker(path.join(uploadDir, deadExecution), dead);
    await folderWithMarker(path.join(uploadDir, deadStaging), dead);
    // Same pid as a live process (this one) but another start time: the pid was reused.
    await folderWithMarker(path.join(uploadDir, reusedPid), { ...own, startTime: own.startTime - 1 });
    await folderWithMarker(path.join(uploadDir, ownExecution), own);
    await folderWithMarker(path.join(uploadDir, unmarked), undefined);
    await folderWithMarker(path.join(uploadDir, brokenMarker), undefined);
    await fsp.writeFile(path.join(uploadDir, brokenMarker, LEGACY_OWNER_MARKER_FILE), '{"pid":');
    // Not UUID-named or staging: never touched, even with a dead marker.
    await folderWithMarker(path.join(uploadDir, 'not-ours'), dead);
    // A regular file named like an execution.
    await fsp.writeFile(path.join(uploadDir, randomUUID()), 'file');

    // A symlink planted in uploadDir, pointing at a folder that carries a dead marker.
    const outside = await freshDir();
    await folderWithMarker(outside, dead);
    const plantedLink = randomUUID();
    await fsp.symlink(outside, path.join(uploadDir, plantedLink));
    // A real folder whose marker is a symlink to a dead marker elsewhere.
    await folderWithMarker(path.join(uploadDir, symlinkedMarker), undefined);
    await fsp.symlink(path.join(outside, LEGACY_OWNER_MARKER_FILE), path.join(uploadDir, symlinkedMarker, LEGACY_OWNER_MARKER_FILE));

    const expectRemoved = [deadExecution, deadStaging, reusedPid];
    if (own.bootId !== '') {
      await folderWithMarker(path.join(uploadDir, otherBoot), { ...own, bootId: '00000000-0000-0000-0000-000000000000' });
      expectRemoved.push(otherBoot);
    }
    const before = await fsp.readdir(uploadDir);

    const removed = await sweepStaleUploads(uploadDir);
    assert.deepEqual([...removed].sort(), [...expectRemoved].sort());
    const after = (await fsp.readdir(uploadDir)).sort();
    assert.deepEqual(after, before.filter((name) => !expectRemoved.includes(name)).sort());
    assert.ok(after.includes(ownExecution) && after.includes(unmarked) && after.includes('not-ours') && after.includes(plantedLink));
    assert.deepEqual((await fsp.readdir(outside)).sort(), [LEGACY_OWNER_MARKER_FILE, 'upload.bin'].sort(), 'the symlink target is untouched');
    assert.equal((await fsp.lstat(path.join(uploadDir, plantedLink))).isSymbolicLink(), true);

    // Idempotent.
    assert.deepEqual(await sweepStaleUploads(uploadDir), []);
  });

  test('a missing upload dir sweeps nothing', async () => {
    assert.deepEqual(await sweepStaleUploads(path.join(await freshDir(), 'missing')), []);
  });
});
