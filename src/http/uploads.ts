/**
 * Multipart prepare requests: the `request` JSON field plus one file per `file` parameter.
 *
 * Differences to the reference Go SDK (sdk-behaviour.md §1.8, §1.17), all deliberate:
 * - Files are streamed to disk as they arrive (Go buffers each file in memory) and each is capped at
 *   {@link MultipartLimits.maxFileBytes}; the `request` field, the number of fields, files and parts
 *   are capped as well.
 * - Parts may come in any order, so files land in a private staging folder
 *   `<uploadDir>/.staging-XXXXXX` first; only when the whole body is parsed and the execution id is
 *   known and valid is the staging folder renamed to `<uploadDir>/<executionId>`. Every failure
 *   removes the staging folder, so a failed prepare leaves nothing behind (Go leaks the folder).
 * - Bad input is a 4xx with a precise title instead of a panic or a 500.
 * - Hostile file names (traversal, control characters, over-long names) are rejected, and two
 *   parameters whose files share a name are rejected instead of silently overwriting each other.
 *
 * ## Ownership marker
 *
 * Every staging folder gets one extra file, {@link OWNER_MARKER_FILE} (`.actionkit-owner`), holding
 * `{"pid":…,"startTime":…,"bootId":"…"}` of the process that created it. The marker travels with the
 * rename into `<uploadDir>/<executionId>`, so an action sees it next to its uploaded files; it is the
 * only file in the folder that is not an upload, and no upload may be named like it.
 * {@link sweepStaleUploads} removes at start-up only folders whose marker names an owner that is no
 * longer alive, which keeps it away from folders of live sibling processes and of Go extensions that
 * share `/tmp/steadybit` (they write no marker).
 *
 * @module
 */
import { constants as fsConstants, createWriteStream, readFileSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import busboy from 'busboy';
import { ErrorCode, RuntimeError } from '../errors.js';

/** Limits and context of {@link receiveMultipart}. */
export interface MultipartLimits {
  /** Base folder, e.g. `/tmp/steadybit`. Created (recursive, mode 0o755) when missing. */
  uploadDir: string;
  /**
   * Max bytes of one uploaded file (a file of exactly this size is accepted); larger →
   * `RuntimeError(FileTooLarge, 413, 'Uploaded file too large')`, detail names parameter and limit.
   */
  maxFileBytes: number;
  /** Max bytes of the `request` JSON field (inclusive). Larger → 413 `BodyTooLarge`. */
  maxRequestBytes: number;
  /** Names of the action's top-level parameters of type `file`. A file part for any other field → 400. */
  fileParameters: ReadonlySet<string>;
}

/** Result of {@link receiveMultipart}. */
export interface ReceivedMultipart {
  /** The parsed JSON of the `request` field (not yet schema-validated; the caller validates). */
  request: unknown;
  /** `request.executionId`, validated as an 8-4-4-4-12 hex UUID and lower-cased (= the folder name). */
  executionId: string;
  /** Absolute folder `<uploadDir>/<executionId>` holding the files, or `undefined` if no file part was sent. */
  folder: string | undefined;
  /** Parameter name → absolute file path `<uploadDir>/<executionId>/<basename>`. */
  files: Map<string, string>;
}

/** Name of the ownership marker written into every upload folder (see the module documentation). */
export const OWNER_MARKER_FILE = '.actionkit-owner';

/** Prefix of staging folders inside the upload dir. */
export const STAGING_PREFIX = '.staging-';

/** Name of the form value field holding the prepare body (reference SDK). */
const REQUEST_FIELD = 'request';

/** Value fields accepted: `request` plus a little slack for clients that send extra fields (ignored, like Go). */
const MAX_FORM_FIELDS = 10;
/** Total parts (files + fields + skipped parts); far above any legitimate prepare. */
const MAX_PARTS = 100;
/**
 * Header pairs per part. Passed to busboy for documentation's sake: busboy 1.6 ignores it for
 * multipart and instead bounds each part's header block at 16 KiB (→ "Malformed part header" → 400).
 */
const MAX_PART_HEADER_PAIRS = 20;
/** Longest file name most file systems accept (NAME_MAX), in bytes. */
const MAX_FILE_NAME_BYTES = 255;
/**
 * After a failure the rest of the body is read and discarded so the error response reaches a client
 * that is still uploading (destroying the request would reset the socket before it reads the
 * answer). Beyond this many discarded bytes (or `maxFileBytes` if larger) the request is destroyed
 * instead: a client that keeps streaming after an error is not worth the bandwidth.
 */
const DRAIN_AFTER_FAILURE_MIN_BYTES = 1024 * 1024;
/** The marker is tiny; anything larger is not ours. */
const MAX_MARKER_BYTES = 4096;
/** Folder mode of the upload dir itself (reference SDK: `MkdirAll(0755)`). */
const UPLOAD_DIR_MODE = 0o755;
/** Uploaded files are readable by the runtime's user only. */
const UPLOADED_FILE_MODE = 0o600;

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// eslint-disable-next-line no-control-regex -- control characters are exactly what is rejected
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;
const REQUEST_BODY_TITLE = 'Failed to parse request body.';
const MULTIPART_TITLE = 'Failed to parse multipart request body.';

/** `true` when `value` is an 8-4-4-4-12 hex UUID (any case). */
export function isUuid(value: string): boolean {
  return UUID_PATTERN.test(value);
}

/**
 * Parse a multipart prepare request and stream every file to disk; a whole file is never buffered in
 * memory.
 *
 * Resolves once the body is fully read, the `request` field parsed and the files moved to
 * `<uploadDir>/<executionId>`. Rejects with a {@link RuntimeError} (use its `httpStatus` and
 * `toWire()`), and only after the staging folder has been removed; the rest of the request body is
 * then discarded in the background (or the request destroyed when it keeps going), so the caller can
 * answer right away. `request.config` is left untouched: rewriting file parameters to the paths in
 * {@link ReceivedMultipart.files} is the caller's job.
 */
export function receiveMultipart(req: IncomingMessage, limits: MultipartLimits): Promise<ReceivedMultipart> {
  return new Promise<ReceivedMultipart>((resolve, reject) => {
    new MultipartReceiver(req, limits, resolve, reject).start();
  });
}

/** What is known about one accepted file part. */
interface AcceptedFile {
  parameter: string;
  fileName: string;
}

/** State machine of one multipart request; settles its promise exactly once. */
class MultipartReceiver {
  private parser: busboy.Busboy | undefined;
  /** First failure; every later failure is a consequence of cleaning up after this one. */
  private failure: RuntimeError | undefined;
  /** Set when the body parsed completely and the success path runs; late request events are then irrelevant. */
  private finishing = false;
  /** The promise has been resolved or rejected. */
  private settled = false;
  private requestSeen = false;
  private request: unknown;
  private executionId: string | undefined;
  private staging: Promise<string> | undefined;
  private readonly accepted: AcceptedFile[] = [];
  /** One promise per file part; never rejects (failures go through {@link fail}). */
  private readonly writes: Promise<void>[] = [];

  constructor(
    private readonly req: IncomingMessage,
    private readonly limits: MultipartLimits,
    private readonly resolve: (value: ReceivedMultipart) => void,
    private readonly reject: (error: RuntimeError) => void,
  ) {}

  start(): void {
    const { req, limits } = this;
    // The request may end badly at any moment; these keep the promise settling even then.
    req.on('aborted', this.onClientGone);
    req.on('error', this.onClientGone);
    req.on('close', () => {
      if (!req.complete) this.onClientGone();
    });

    const contentType = req.headers['content-type'];
    if (typeof contentType !== 'string' || !/^multipart\/form-data\s*(;|$)/i.test(contentType)) {
      this.fail(multipartError(`Content-Type must be multipart/form-data, got ${truncateForDetail(JSON.stringify(contentType ?? ''))}.`));
      return;
    }
    try {
      this.parser = busboy({
        headers: req.headers,
        // Keep the raw name: busboy's own basename() splits differently and silently maps `..` to
        // '' — validateFileName() decides and reports precisely instead.
        preservePath: true,
        // Agents and browsers send names as raw UTF-8 (Go does not decode either); busboy's default is latin1.
        defParamCharset: 'utf8',
        limits: {
          // busboy flags a part as truncated when it reaches the limit exactly; +1 makes the limits inclusive.
          fileSize: limits.maxFileBytes + 1,
          fieldSize: limits.maxRequestBytes + 1,
          fields: MAX_FORM_FIELDS,
          // One more than can be valid, so that the first surplus file reaches onFile() and gets the
          // precise reference title (duplicate parameter / unknown field) rather than a generic one.
          files: limits.fileParameters.size + 1,
          parts: MAX_PARTS,
          headerPairs: MAX_PART_HEADER_PAIRS,
        },
      });
    } catch (error) {
      // Missing or malformed boundary.
      this.fail(multipartError(messageOf(error)));
      return;
    }
    const parser = this.parser;
    parser.on('field', (name, value, info) => this.onField(name, value, info));
    parser.on('file', (name, stream, info) => this.onFile(name, stream, info));
    parser.on('partsLimit', () =>
      this.fail(tooMany('parts', `More than ${MAX_PARTS} parts in the multipart request body.`)),
    );
    parser.on('fieldsLimit', () =>
      this.fail(tooMany('form fields', `More than ${MAX_FORM_FIELDS} form value fields in the multipart request body.`)),
    );
    parser.on('filesLimit', () =>
      this.fail(
        tooMany('files', `More than ${limits.fileParameters.size} file parts; the action has ${describeParameters(limits.fileParameters)}.`),
      ),
    );
    parser.on('error', (error: unknown) => this.fail(multipartError(messageOf(error))));
    parser.on('finish', () => void this.onBodyParsed());
    req.pipe(parser);
  }

  private readonly onClientGone = (): void => {
    if (this.finishing) return;
    this.fail(multipartError('The client closed the connection before the request body was complete.'));
  };

  private onField(name: string | undefined, value: string, info: busboy.FieldInfo): void {
    if (this.failure !== undefined) return;
    // Go reads only the `request` value and ignores other value fields; so do we (they still count
    // against the fields limit).
    if (name !== REQUEST_FIELD) return;
    if (info.valueTruncated) {
      this.fail(
        new RuntimeError(
          ErrorCode.BodyTooLarge,
          413,
          'Request body too large',
          `The \`request\` field exceeds the limit of ${this.limits.maxRequestBytes} bytes.`,
        ),
      );
      return;
    }
    if (this.requestSeen) {
      this.fail(requestError(ErrorCode.InvalidRequest, 'The multipart body has more than one `request` field.'));
      return;
    }
    this.requestSeen = true;
    // Checked as soon as it arrives, so a bad body fails before any (possibly large) file is stored.
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch (error) {
      this.fail(requestError(ErrorCode.BadJson, `The \`request\` field is not valid JSON: ${messageOf(error)}`));
      return;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      this.fail(requestError(ErrorCode.InvalidRequest, 'The `request` field must hold a JSON object.'));
      return;
    }
    const executionId: unknown = (parsed as { executionId?: unknown }).executionId;
    if (typeof executionId !== 'string' || !isUuid(executionId)) {
      this.fail(
        requestError(
          ErrorCode.InvalidRequest,
          `executionId must be a UUID (8-4-4-4-12 hex digits), got ${truncateForDetail(JSON.stringify(executionId) ?? 'undefined')}.`,
        ),
      );
      return;
    }
    this.request = parsed;
    this.executionId = executionId.toLowerCase();
  }

  private onFile(name: string | undefined, stream: Readable & { truncated?: boolean }, info: busboy.FileInfo): void {
    // Destroying the parser errors the current file stream; the cause is reported through the parser,
    // the pipeline or fail(), so an unlistened 'error' here must not become an uncaught exception.
    stream.on('error', ignore);
    if (this.failure !== undefined) {
      stream.resume();
      return;
    }
    const rejected = this.checkFilePart(name, info.filename);
    if (rejected !== undefined) {
      stream.resume();
      this.fail(rejected);
      return;
    }
    // checkFilePart() accepted it, so both are set.
    const parameter = name as string;
    const fileName = baseName(info.filename as string);
    this.accepted.push({ parameter, fileName });
    stream.on('limit', () =>
      this.fail(
        new RuntimeError(
          ErrorCode.FileTooLarge,
          413,
          'Uploaded file too large',
          `The file for parameter ${parameter} exceeds the limit of ${this.limits.maxFileBytes} bytes.`,
        ),
      ),
    );
    this.writes.push(this.writeFile(parameter, fileName, stream));
  }

  /** Why a file part is refused, or `undefined` when it is acceptable. */
  private checkFilePart(name: string | undefined, rawFileName: string | undefined): RuntimeError | undefined {
    if (name === REQUEST_FIELD) {
      return requestError(ErrorCode.InvalidRequest, 'The `request` part must be a form value field, not a file.');
    }
    if (name === undefined || !this.limits.fileParameters.has(name)) {
      const field = name === undefined ? '(unnamed)' : name;
      return new RuntimeError(
        ErrorCode.InvalidRequest,
        400,
        `Unexpected file for field ${field}.`,
        `Files are accepted only for parameters of type file; the action has ${describeParameters(this.limits.fileParameters)}.`,
      );
    }
    if (this.accepted.some((file) => file.parameter === name)) {
      // The reference SDK's title, verbatim (it answers 500; a client error is a 400).
      return new RuntimeError(
        ErrorCode.InvalidRequest,
        400,
        `Too many Fileheaders for parameter ${name}.`,
        'Exactly one file per parameter is accepted.',
      );
    }
    const why = validateFileName(rawFileName);
    if (why !== undefined) {
      return new RuntimeError(ErrorCode.InvalidRequest, 400, `Invalid file name for parameter ${name}.`, why);
    }
    const fileName = baseName(rawFileName as string);
    const clash = this.accepted.find((file) => file.fileName === fileName);
    if (clash !== undefined) {
      return new RuntimeError(
        ErrorCode.InvalidRequest,
        400,
        `Duplicate file name for parameters ${clash.parameter} and ${name}.`,
        `Both files are named ${JSON.stringify(fileName)} and would overwrite each other in the execution folder.`,
      );
    }
    return undefined;
  }

  private async writeFile(parameter: string, fileName: string, stream: Readable): Promise<void> {
    let writeError: unknown;
    try {
      const folder = await this.ensureStaging(fileName);
      if (this.failure !== undefined) {
        stream.resume();
        return;
      }
      const target = path.resolve(folder, fileName);
      // validateFileName() already rules this out; re-checked where the path is actually built.
      if (path.dirname(target) !== folder) {
        throw new RuntimeError(ErrorCode.InvalidRequest, 400, `Invalid file name for parameter ${parameter}.`, 'The name leaves the execution folder.');
      }
      // `wx` = O_CREAT|O_EXCL: never follows a (planted) symlink and never overwrites.
      const out = createWriteStream(target, { flags: 'wx', mode: UPLOADED_FILE_MODE });
      out.on('error', (error) => {
        writeError = error;
      });
      await pipeline(stream, out);
    } catch (error) {
      stream.resume();
      if (error instanceof RuntimeError) this.fail(error);
      else if (writeError !== undefined) this.fail(saveError(fileName, writeError));
      // Otherwise the part itself broke off (abort, malformed body, or our own destroy after another
      // failure); the parser or request reports the cause.
      else this.fail(multipartError(messageOf(error)));
    }
  }

  /** Create the staging folder and its marker once, on the first file part. */
  private ensureStaging(fileName: string): Promise<string> {
    this.staging ??= createStagingFolder(this.limits.uploadDir);
    return this.staging.catch((error: unknown) => {
      throw saveError(fileName, error);
    });
  }

  private async onBodyParsed(): Promise<void> {
    if (this.failure !== undefined) return;
    this.finishing = true;
    await Promise.all(this.writes);
    if (this.failure !== undefined) return;
    if (!this.requestSeen || this.executionId === undefined) {
      this.fail(requestError(ErrorCode.InvalidRequest, 'The multipart body has no `request` form field.'));
      return;
    }
    const executionId = this.executionId;
    const files = new Map<string, string>();
    if (this.staging === undefined) {
      this.settle(() => this.resolve({ request: this.request, executionId, folder: undefined, files }));
      return;
    }
    const uploadDir = path.resolve(this.limits.uploadDir);
    const folder = path.join(uploadDir, executionId);
    try {
      const staging = await this.staging;
      // rename(2) silently replaces an *empty* directory, so check first; a concurrent prepare that
      // wins the race still makes our rename fail with ENOTEMPTY, because its folder holds a marker.
      if (await pathExists(folder)) throw conflictError(executionId);
      await fsp.rename(staging, folder);
    } catch (error) {
      if (error instanceof RuntimeError) this.fail(error);
      else if (isErrno(error, 'EEXIST', 'ENOTEMPTY', 'ENOTDIR')) this.fail(conflictError(executionId));
      else {
        this.fail(
          new RuntimeError(ErrorCode.FileSave, 500, 'Failed to save uploaded files.', `Could not move them into place: ${errnoSummary(error)}.`),
        );
      }
      return;
    }
    for (const { parameter, fileName } of this.accepted) files.set(parameter, path.join(folder, fileName));
    this.settle(() => this.resolve({ request: this.request, executionId, folder, files }));
  }

  /** Record the first failure, stop reading, clean up, then reject. */
  private fail(error: RuntimeError): void {
    if (this.failure !== undefined || this.settled) return;
    this.failure = error;
    this.stopReading();
    void this.cleanUpAndReject(error);
  }

  private settle(action: () => void): void {
    if (this.settled) return;
    this.settled = true;
    action();
  }

  private stopReading(): void {
    const { req, parser } = this;
    if (parser !== undefined) {
      req.unpipe(parser);
      // Destroying ends the current file stream with an error, which unblocks its pipeline and closes
      // the file. Deferred: fail() is often called from inside a busboy event, and busboy keeps using
      // its part state after the listener returns (it crashes if destroyed underneath).
      process.nextTick(() => parser.destroy());
    }
    if (req.complete || req.destroyed) return;
    const maxDiscardBytes = Math.max(DRAIN_AFTER_FAILURE_MIN_BYTES, this.limits.maxFileBytes);
    let discarded = 0;
    req.on('data', (chunk: Buffer) => {
      discarded += chunk.length;
      if (discarded > maxDiscardBytes) req.destroy();
    });
    req.resume();
  }

  private async cleanUpAndReject(error: RuntimeError): Promise<void> {
    // Wait until every file handle is closed before removing the folder they live in.
    await Promise.all(this.writes);
    if (this.staging !== undefined) {
      const staging = await this.staging.catch(() => undefined);
      // Best effort: if this fails the marker still lets a later start-up sweep reclaim the folder.
      if (staging !== undefined) await fsp.rm(staging, { recursive: true, force: true }).catch(() => undefined);
    }
    this.settle(() => this.reject(error));
  }
}

/**
 * Remove `<uploadDir>/<executionId>` recursively. A missing folder is fine (never throws for
 * ENOENT); a symlink in its place is removed itself, never followed.
 *
 * @throws RuntimeError(InvalidRequest, 400) when `executionId` is not a UUID, so a crafted id can
 *   never name another path (`..`, `/`, `.staging-*`).
 */
export async function removeExecutionFolder(uploadDir: string, executionId: string): Promise<void> {
  if (!isUuid(executionId)) {
    throw new RuntimeError(
      ErrorCode.InvalidRequest,
      400,
      'Invalid executionId',
      `Refusing to remove the upload folder of ${truncateForDetail(JSON.stringify(executionId))}: not a UUID.`,
    );
  }
  // fs.rm lstat()s each entry, so symlinks (top-level or inside) are unlinked, not traversed.
  await fsp.rm(path.join(path.resolve(uploadDir), executionId.toLowerCase()), { recursive: true, force: true });
}

/**
 * Start-up sweep: remove upload folders left behind by dead processes of this runtime.
 *
 * Only direct entries of `uploadDir` are considered, and only when (a) the entry itself (lstat, never
 * followed) is a directory named like a UUID or `.staging-*`, and (b) it contains a regular-file
 * {@link OWNER_MARKER_FILE} whose owner is gone: the pid no longer exists, or it exists but with a
 * different start time (pid reused), or the marker comes from another boot. Folders without a
 * readable marker (e.g. from a Go extension sharing `/tmp/steadybit`) and folders of live owners are
 * kept. A missing `uploadDir` yields `[]`.
 *
 * Pids are checked in this process's pid namespace: a folder shared with a runtime in *another*
 * container on the same host would be judged by the wrong pid, so do not share one upload dir across
 * containers.
 *
 * @returns The names (not paths) of the removed entries.
 */
export async function sweepStaleUploads(uploadDir: string): Promise<string[]> {
  const base = path.resolve(uploadDir);
  let entries: string[];
  try {
    entries = await fsp.readdir(base);
  } catch (error) {
    if (isErrno(error, 'ENOENT', 'ENOTDIR')) return [];
    throw error;
  }
  const self = ownIdentity();
  const removed: string[] = [];
  for (const name of entries) {
    if (!isUuid(name) && !name.startsWith(STAGING_PREFIX)) continue;
    const entry = path.join(base, name);
    const stats = await fsp.lstat(entry).catch(() => undefined);
    if (stats === undefined || !stats.isDirectory()) continue;
    const owner = await readMarker(path.join(entry, OWNER_MARKER_FILE));
    if (owner === undefined || !(await isOwnerGone(owner, self))) continue;
    await fsp.rm(entry, { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** Identity of a process as written to the marker. */
interface OwnerIdentity {
  pid: number;
  /** Linux: start time in clock ticks since boot (field 22 of /proc/<pid>/stat); elsewhere epoch seconds. */
  startTime: number;
  /** Linux: /proc/sys/kernel/random/boot_id; elsewhere ''. */
  bootId: string;
}

let cachedIdentity: OwnerIdentity | undefined;

/** This process's identity; computed once (it never changes). */
function ownIdentity(): OwnerIdentity {
  if (cachedIdentity !== undefined) return cachedIdentity;
  const startTime = procStartTime('self');
  const bootId = readBootId();
  cachedIdentity =
    startTime !== undefined && bootId !== undefined
      ? { pid: process.pid, startTime, bootId }
      : { pid: process.pid, startTime: Math.round((Date.now() - process.uptime() * 1000) / 1000), bootId: '' };
  return cachedIdentity;
}

/** Field 22 (starttime) of /proc/<pid>/stat, or `undefined` without procfs or when the pid is gone. */
function procStartTime(pid: number | 'self'): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Field 2 (comm) is parenthesised and may itself contain spaces and ')', so count from the last ')'.
  const afterComm = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const FIRST_FIELD_AFTER_COMM = 3;
  const START_TIME_FIELD = 22;
  const value = Number(afterComm[START_TIME_FIELD - FIRST_FIELD_AFTER_COMM]);
  return Number.isSafeInteger(value) ? value : undefined;
}

function readBootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Create `<uploadDir>/.staging-XXXXXX` (private) with the ownership marker; returns its absolute path. */
async function createStagingFolder(uploadDir: string): Promise<string> {
  const base = path.resolve(uploadDir);
  await fsp.mkdir(base, { recursive: true, mode: UPLOAD_DIR_MODE });
  // mkdtemp is atomic and unique; its 0o700 keeps half-uploaded files private.
  const staging = await fsp.mkdtemp(path.join(base, STAGING_PREFIX));
  try {
    // Written before any upload and in one small write, so a crash leaves either no marker (folder
    // kept: cannot prove it is ours) or a complete one (folder swept later).
    await fsp.writeFile(path.join(staging, OWNER_MARKER_FILE), JSON.stringify(ownIdentity()), {
      flag: 'wx',
      mode: UPLOADED_FILE_MODE,
    });
  } catch (error) {
    await fsp.rm(staging, { recursive: true, force: true }).catch(() => undefined);
    throw error;
  }
  return staging;
}

/** Read and validate a marker without following symlinks; `undefined` when absent or not ours. */
async function readMarker(file: string): Promise<OwnerIdentity | undefined> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0));
  } catch {
    return undefined;
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile() || stats.size > MAX_MARKER_BYTES) return undefined;
    const parsed: unknown = JSON.parse(await handle.readFile('utf8'));
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const { pid, startTime, bootId } = parsed as Record<string, unknown>;
    if (!Number.isSafeInteger(pid) || (pid as number) <= 0) return undefined;
    if (typeof startTime !== 'number' || !Number.isFinite(startTime) || typeof bootId !== 'string') return undefined;
    return { pid: pid as number, startTime, bootId };
  } catch {
    return undefined;
  } finally {
    await handle.close();
  }
}

/** `true` only when the marker's owner is provably no longer running; unknown → `false` (keep). */
async function isOwnerGone(owner: OwnerIdentity, self: OwnerIdentity): Promise<boolean> {
  // Another boot: every process of that boot is gone.
  if (owner.bootId !== '' && self.bootId !== '' && owner.bootId !== self.bootId) return true;
  if (owner.pid === self.pid) return owner.startTime !== self.startTime;
  try {
    process.kill(owner.pid, 0);
  } catch (error) {
    // EPERM: exists, owned by someone else → alive.
    if (isErrno(error, 'ESRCH')) return true;
    return false;
  }
  if (self.bootId === '' || owner.bootId === '') return false; // no procfs start times to compare
  const startTime = procStartTime(owner.pid);
  // Vanished between kill() and the read → gone; a different start time → the pid was reused.
  return startTime === undefined ? !(await pathExists(`/proc/${owner.pid}`)) : startTime !== owner.startTime;
}

/**
 * Why `raw` is not an acceptable upload name, or `undefined` when its basename is fine.
 * The basename is taken after splitting on both `/` and `\` (Windows clients send either).
 */
function validateFileName(raw: string | undefined): string | undefined {
  if (raw === undefined) return 'The file part has no file name.';
  const name = baseName(raw);
  if (name === '' || name === '.' || name === '..') {
    return `The file name ${truncateForDetail(JSON.stringify(raw))} has no usable base name.`;
  }
  if (CONTROL_CHARACTERS.test(name)) return 'The file name contains control characters.';
  if (Buffer.byteLength(name, 'utf8') > MAX_FILE_NAME_BYTES) {
    return `The file name is longer than ${MAX_FILE_NAME_BYTES} bytes.`;
  }
  if (name === OWNER_MARKER_FILE) return `The file name ${OWNER_MARKER_FILE} is reserved.`;
  return undefined;
}

function baseName(raw: string): string {
  const parts = raw.split(/[/\\]/);
  return parts[parts.length - 1] ?? '';
}

async function pathExists(file: string): Promise<boolean> {
  try {
    await fsp.lstat(file);
    return true;
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return false;
    throw error;
  }
}

function isErrno(error: unknown, ...codes: string[]): boolean {
  return typeof error === 'object' && error !== null && codes.includes((error as { code?: unknown }).code as string);
}

/** `ENOSPC (write)`-style summary; never the full message, which contains server paths. */
function errnoSummary(error: unknown): string {
  if (error instanceof RuntimeError) return error.detail ?? error.message;
  const { code, syscall } = (typeof error === 'object' && error !== null ? error : {}) as { code?: unknown; syscall?: unknown };
  if (typeof code === 'string') return typeof syscall === 'string' ? `${code} (${syscall})` : code;
  return 'unexpected error';
}

function saveError(fileName: string, cause: unknown): RuntimeError {
  if (cause instanceof RuntimeError) return cause;
  return new RuntimeError(ErrorCode.FileSave, 500, `Failed to save file ${fileName}.`, errnoSummary(cause));
}

function multipartError(detail: string): RuntimeError {
  return new RuntimeError(ErrorCode.Multipart, 400, MULTIPART_TITLE, detail);
}

function requestError(code: ErrorCode, detail: string): RuntimeError {
  return new RuntimeError(code, 400, REQUEST_BODY_TITLE, detail);
}

function tooMany(what: string, detail: string): RuntimeError {
  return new RuntimeError(ErrorCode.BodyTooLarge, 413, `Too many ${what} in multipart request body.`, detail);
}

function conflictError(executionId: string): RuntimeError {
  return new RuntimeError(ErrorCode.Conflict, 409, `Execution ${executionId} already has uploaded files`);
}

function describeParameters(parameters: ReadonlySet<string>): string {
  if (parameters.size === 0) return 'no file parameters';
  return `file parameters ${[...parameters].join(', ')}`;
}

function ignore(): void {
  // Intentionally empty: see the call sites.
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function truncateForDetail(text: string): string {
  const MAX_ECHO_CHARS = 80;
  return text.length > MAX_ECHO_CHARS ? `${text.slice(0, MAX_ECHO_CHARS)}…` : text;
}
