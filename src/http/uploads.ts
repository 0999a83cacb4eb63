/**
 * Multipart prepare requests: the `request` JSON field plus one file per `file` parameter.
 *
 * Like the reference Go SDK (sdk-behaviour.md §1.8): the files of an execution land in
 * `<uploadDir>/<executionId>/<basename>`, the folder made with mode 0755 and the files with 0666,
 * both less the process umask (Go: `MkdirAll(0755)`, `os.Create`), and the folder holds exactly the
 * uploaded files. Differences to the reference (§1.8, §1.17), all deliberate:
 * - Files are streamed to disk as they arrive (Go buffers each file in memory) and each is capped at
 *   {@link MultipartLimits.maxFileBytes}; the `request` field, the number of fields, files and parts
 *   are capped as well.
 * - Parts may come in any order, so files land in a staging folder first; only when the whole body
 *   is parsed and the execution id is known and valid is it renamed to `<uploadDir>/<executionId>`.
 *   Every failure removes the staging folder, so a failed prepare leaves nothing behind (Go leaks
 *   the folder).
 * - Bad input is a 4xx with a precise title instead of a panic or a 500.
 * - Hostile file names (traversal, control characters, over-long names) are rejected, and two
 *   parameters whose files share a name are rejected instead of silently overwriting each other.
 * - Folders left by processes that died are removed at start-up ({@link sweepStaleUploads}).
 *
 * ## Bookkeeping: who owns a folder
 *
 * Ownership is recorded outside the folders an action reads, in {@link BOOKKEEPING_DIR}, whose name
 * is never a UUID and so never an execution's folder:
 *
 * ```
 * <uploadDir>/
 *   <executionId>/                      the execution's files, nothing else
 *   .actionkit/
 *     owners/<executionId>              owner record: {"pid":…,"startTime":…,"bootId":"…"} of the
 *                                       process that owns <uploadDir>/<executionId>
 *     staging/p<pid>-s<startTime>-b<bootId>/
 *                                       one folder per process, its name the owner (atomic with
 *                                       the folder: no marker to write), holding
 *       <random>/                       the files of a request still arriving, and
 *       <random>.record                 an owner record being written
 * ```
 *
 * The rule: **an owner record is complete before its execution folder exists, and outlives it.**
 * - Making a folder: (1) write the files into a staging folder; (2) if `<uploadDir>/<executionId>`
 *   exists (a Go extension's, an earlier version's) → 409, no record is made; (3) claim the id: write
 *   the record under a temporary name in this process's staging folder, then `link(2)` it to
 *   `owners/<executionId>` — exclusive (`EEXIST` → 409: the id is taken, by a live process or by a
 *   dead one whose folder only a sweep may remove) and atomic (a reader sees no record or a whole
 *   one, never a partial one); the temporary name is then unlinked; (4) look for the folder again
 *   (made since step 2 by someone who keeps no records → 409, the record is removed); (5) rename the
 *   staging folder to `<uploadDir>/<executionId>`. Every failure removes the staging folder and, from
 *   step 3 on, the record. On a file system without hard links step 3 falls back to creating the
 *   record exclusively (`O_EXCL`) and writing it; a crash between the two leaves an unreadable
 *   record (see the sweep).
 * - Removing a folder: the folder first, then its record.
 * - Sweeping at start-up ({@link sweepStaleUploads}): a staging folder of a process that is gone is
 *   removed with everything in it; for a record whose owner is gone, the execution folder is removed,
 *   then the record. A record that cannot be read as one (empty, partial, not ours) is removed once
 *   it is older than {@link UNREADABLE_RECORD_MIN_AGE_MS} (one minute: a record is written in
 *   microseconds, so an older unreadable one is not being written any more); its folder, if any, is
 *   kept: a folder is renamed into place only after its record was complete, so the folder beside
 *   an unreadable record was not made under it — it is not attributable, and kept like any folder
 *   we cannot attribute (a Go extension's).
 *
 * So a crash at any step leaves a complete record with or without its folder, an unreadable record
 * without a folder (fallback only), or files in a staging folder named by its owner — never a folder
 * of ours that a sweep could not attribute, and nothing a sweep keeps forever — and the next
 * start-up removes them once the owner is gone. A sweep never removes a live execution's folder:
 * that folder has a live owner's record, and while a dead owner's record exists no process can
 * create the folder of that id (step 3), so the sweep removes exactly the dead owner's folder.
 * (Left open, all needing a coincidence agents do not produce, as they never reuse an execution id:
 * two processes starting at once may both judge the same dead record, and should a third re-create
 * that execution id between their sweeps, the slower sweep would remove it; a folder of a Go
 * extension made between steps 2 and 4 of a process that then crashes is attributed to that
 * process.)
 *
 * Folders of the earlier layout (an `.actionkit-owner` marker inside `<uploadDir>/<executionId>`
 * and `<uploadDir>/.staging-*`) are still swept by their marker: a folder whose marker names an
 * owner that is gone is removed. A `.staging-*` folder (a name only earlier versions used) whose
 * marker is missing or unreadable — a crash between creating the folder or marker and writing it —
 * is removed once the marker (or, without one, the folder) is older than
 * {@link UNREADABLE_RECORD_MIN_AGE_MS}; an execution folder with such a marker is kept (not
 * attributable: earlier versions wrote the marker before the rename). Uploads may still not be named
 * like the marker, so a sweep of an earlier version never misreads an upload as one.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, createWriteStream, readFileSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import busboy from 'busboy';
import { isUuid, parseRequestField } from '../api/request-body.js';
import { ErrorCode, RuntimeError } from '../errors.js';
import { DecodedRequest } from '../runtime/lifecycle.js';
import type { DecodedBody, DecodeTask } from '../runtime/protocol.js';
import { LARGE_JSON_BYTES } from '../runtime/sealed.js';

/** Limits and context of {@link receiveMultipart}. */
export interface MultipartLimits {
  /** Base folder, e.g. `/tmp/steadybit`. Created (recursive, mode 0755 less the umask) when missing. */
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
  /**
   * Decode a `request` field longer than `LARGE_JSON_BYTES` on the large-request lane
   * (`src/runtime/sealed.ts`): the main thread never parses one.
   */
  decode(task: DecodeTask): Promise<DecodedBody>;
}

/** Result of {@link receiveMultipart}. */
export interface ReceivedMultipart {
  /**
   * The parsed JSON of the `request` field (not yet schema-validated; the caller validates) — or,
   * for a field longer than `LARGE_JSON_BYTES`, the request decoded and validated on the
   * large-request lane.
   */
  request: unknown;
  /** `request.executionId`, validated as an 8-4-4-4-12 hex UUID and lower-cased (= the folder name). */
  executionId: string;
  /** Absolute folder `<uploadDir>/<executionId>` holding the files, or `undefined` if no file part was sent. */
  folder: string | undefined;
  /** Parameter name → absolute file path `<uploadDir>/<executionId>/<basename>`. */
  files: Map<string, string>;
}

/** Bookkeeping directory inside the upload dir (see the module documentation). */
export const BOOKKEEPING_DIR = '.actionkit';

/** Owner records, one per execution folder, inside {@link BOOKKEEPING_DIR}. */
const OWNERS_DIR = 'owners';

/** Per-process staging folders inside {@link BOOKKEEPING_DIR}. */
const STAGING_DIR = 'staging';

/** The ownership marker earlier versions wrote into every upload folder; still reserved and still swept. */
export const LEGACY_OWNER_MARKER_FILE = '.actionkit-owner';

/** Prefix of the staging folders earlier versions made directly in the upload dir. */
const LEGACY_STAGING_PREFIX = '.staging-';

/**
 * Age after which the start-up sweep removes an owner record (or an earlier version's staging
 * marker) that cannot be read as one: writing one takes microseconds, so after a minute it is not
 * being written any more, it was left by a crash (module documentation).
 */
export const UNREADABLE_RECORD_MIN_AGE_MS = 60_000;

/** Suffix of an owner record being written in a process's staging folder (module documentation). */
const RECORD_DRAFT_SUFFIX = '.record';

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
/** An owner record is tiny; anything larger is not ours. */
const MAX_RECORD_BYTES = 4096;
/** Every folder we make, less the umask (reference SDK: `MkdirAll(0755)`). */
export const FOLDER_MODE = 0o755;
/** Uploaded files, less the umask (reference SDK: `os.Create`). */
export const UPLOADED_FILE_MODE = 0o666;
/** Owner records, less the umask: readable by a sibling process that sweeps. */
const RECORD_MODE = 0o644;
/** Random bytes in a staging folder's name. */
const STAGING_NAME_BYTES = 8;

// eslint-disable-next-line no-control-regex -- control characters are exactly what is rejected
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;
const REQUEST_BODY_TITLE = 'Failed to parse request body.';
const MULTIPART_TITLE = 'Failed to parse multipart request body.';


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
    if (Buffer.byteLength(value) > LARGE_JSON_BYTES) {
      // Decoded off the main thread; the files keep streaming to the staging folder meanwhile, and
      // the end of the body waits for it like for a file write.
      this.writes.push(
        this.limits.decode({ kind: 'prepare', requestField: value, fileParameters: [...this.limits.fileParameters] }).then(
          (reply) => {
            this.request = DecodedRequest.from(reply);
            this.executionId = reply.executionId.toLowerCase();
          },
          (error: unknown) => this.fail(error instanceof RuntimeError ? error : new RuntimeError(ErrorCode.Internal, 500, 'Internal Server Error', `the \`request\` field could not be decoded: ${messageOf(error)}`)),
        ),
      );
      return;
    }
    // Checked as soon as it arrives, so a bad body fails before any (possibly large) file is stored.
    try {
      const { request, executionId } = parseRequestField(value);
      this.request = request;
      this.executionId = executionId.toLowerCase();
    } catch (error) {
      this.fail(error as RuntimeError);
    }
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

  /** Create the staging folder once, on the first file part. */
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
    let claimed = false;
    try {
      const staging = await this.staging;
      // Steps 2–5 of the module documentation. A folder nobody recorded (a Go extension's, an
      // earlier version's) is looked for before the claim, so no record ever names it, and again
      // after it, because rename(2) would silently replace it if it were empty.
      await refuseUnrecordedFolder(folder, executionId);
      // Exclusive: of two prepares of one id, in this process or another of this runtime, exactly
      // one gets past this line.
      await claimExecutionFolder(uploadDir, executionId);
      claimed = true;
      await refuseUnrecordedFolder(folder, executionId);
      await fsp.rename(staging, folder);
    } catch (error) {
      if (claimed) await fsp.rm(ownerRecordPath(uploadDir, executionId), { force: true }).catch(() => undefined);
      if (error instanceof RuntimeError) this.fail(error);
      else if (isErrno(error, 'EEXIST', 'ENOTEMPTY', 'ENOTDIR')) this.fail(conflictError(executionId));
      else {
        this.fail(
          new RuntimeError(ErrorCode.FileSave, 500, 'Failed to save uploaded files.', `Could not move them into place: ${errnoSummary(error)}.`),
        );
      }
      return;
    }
    if (this.failure !== undefined) {
      // Failed while the folder was being moved into place (nothing does so today, the body being
      // read): the failure's clean-up found no staging folder, so the folder and record go here.
      await removeExecutionFolder(uploadDir, executionId).catch(ignore);
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
      // Best effort: if this fails, the name of its parent (its owner) lets a later start-up sweep reclaim it.
      if (staging !== undefined) await fsp.rm(staging, { recursive: true, force: true }).catch(() => undefined);
    }
    this.settle(() => this.reject(error));
  }
}

/**
 * Remove `<uploadDir>/<executionId>` recursively, then its owner record (module documentation: the
 * record outlives the folder). A missing folder is fine (never throws for ENOENT); a symlink in its
 * place is removed itself, never followed. Call it only for a folder this process made.
 *
 * @throws RuntimeError(InvalidRequest, 400) when `executionId` is not a UUID, so a crafted id can
 *   never name another path (`..`, `/`, `.actionkit`).
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
  const base = path.resolve(uploadDir);
  const id = executionId.toLowerCase();
  // fs.rm lstat()s each entry, so symlinks (top-level or inside) are unlinked, not traversed.
  await fsp.rm(path.join(base, id), { recursive: true, force: true });
  await fsp.rm(ownerRecordPath(base, id), { force: true });
}

/**
 * Start-up sweep: remove what dead processes of this runtime left in the upload dir (module
 * documentation), judged by owner: a process is gone when its pid no longer exists, or exists with
 * a different start time (pid reused), or it ran in another boot.
 *
 * - Staging folders `.actionkit/staging/<owner>/` (files of unfinished requests, record drafts) of
 *   an owner that is gone.
 * - For each owner record `.actionkit/owners/<executionId>` of an owner that is gone: the folder
 *   `<uploadDir>/<executionId>`, then the record.
 * - Owner records that cannot be read as one and are older than
 *   {@link UNREADABLE_RECORD_MIN_AGE_MS}; their folders are kept.
 * - Earlier layout: a UUID-named folder without an owner record, or a `.staging-*` folder, directly
 *   in `uploadDir`, whose `.actionkit-owner` marker names an owner that is gone; a `.staging-*`
 *   folder whose marker is missing or unreadable, by the same age.
 *
 * Nothing is followed through a symlink: a bookkeeping directory, folder or record that is one is
 * left alone. Folders without a readable record or marker (e.g. a Go extension's, sharing
 * `/tmp/steadybit`) and folders of live owners are kept. A missing `uploadDir` yields `[]`.
 *
 * Pids are checked in this process's pid namespace: a folder shared with a runtime in *another*
 * container on the same host would be judged by the wrong pid, so do not share one upload dir across
 * containers.
 *
 * @returns The removed folders and records, relative to `uploadDir` (an execution's folder is its id,
 *   its record `.actionkit/owners/<id>`).
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
  const remove = async (relative: string): Promise<void> => {
    // fs.rm lstat()s each entry, so symlinks are unlinked, never traversed.
    if (!(await pathExists(path.join(base, relative)))) return;
    await fsp.rm(path.join(base, relative), { recursive: true, force: true });
    removed.push(relative);
  };
  if (await isRealDirectory(path.join(base, BOOKKEEPING_DIR))) {
    const staging = path.join(BOOKKEEPING_DIR, STAGING_DIR);
    for (const name of await subdirectories(path.join(base, staging))) {
      const owner = parseOwnerName(name);
      if (owner !== undefined && (await isOwnerGone(owner, self))) await remove(path.join(staging, name));
    }
    const owners = path.join(BOOKKEEPING_DIR, OWNERS_DIR);
    for (const name of await directoryEntries(path.join(base, owners))) {
      if (!isUuid(name)) continue;
      const record = await readOwnerRecord(path.join(base, owners, name));
      if (record.kind === 'owner' && (await isOwnerGone(record.owner, self))) {
        // The folder first: the record outlives it.
        await remove(name);
        await remove(path.join(owners, name));
      } else if (record.kind === 'unreadable' && record.ageMs >= UNREADABLE_RECORD_MIN_AGE_MS) {
        await remove(path.join(owners, name));
      }
    }
  }
  for (const name of entries) {
    const legacyStaging = name.startsWith(LEGACY_STAGING_PREFIX);
    if (!isUuid(name) && !legacyStaging) continue;
    const entry = path.join(base, name);
    if (!(await isRealDirectory(entry))) continue;
    // A recorded folder is judged by its record (above), never by a file inside it.
    if (isUuid(name) && (await pathExists(ownerRecordPath(base, name)))) continue;
    if (await isLegacyFolderStale(entry, legacyStaging, self)) await remove(name);
  }
  return removed;
}

/**
 * Whether a folder of the earlier layout is a dead process's: its marker names an owner that is
 * gone, or — a `.staging-*` folder only — it has no readable marker and is older than
 * {@link UNREADABLE_RECORD_MIN_AGE_MS}.
 */
async function isLegacyFolderStale(folder: string, staging: boolean, self: OwnerIdentity): Promise<boolean> {
  const marker = await readOwnerRecord(path.join(folder, LEGACY_OWNER_MARKER_FILE));
  if (marker.kind === 'owner') return isOwnerGone(marker.owner, self);
  if (!staging) return false;
  if (marker.kind === 'unreadable') return marker.ageMs >= UNREADABLE_RECORD_MIN_AGE_MS;
  const stats = await fsp.lstat(folder).catch(() => undefined);
  return stats !== undefined && Date.now() - stats.mtimeMs >= UNREADABLE_RECORD_MIN_AGE_MS;
}

/** Where the owner record of `<uploadDir>/<executionId>` is. */
function ownerRecordPath(uploadDir: string, executionId: string): string {
  return path.join(path.resolve(uploadDir), BOOKKEEPING_DIR, OWNERS_DIR, executionId);
}

/**
 * Record this process as the owner of `<uploadDir>/<executionId>`, before that folder exists (step
 * 3 of the module documentation): the record is written under a draft name in this process's
 * staging folder and linked into place, so it appears whole or not at all. Exclusive: a record that
 * exists already (anyone's) → 409.
 */
async function claimExecutionFolder(uploadDir: string, executionId: string): Promise<void> {
  const record = ownerRecordPath(uploadDir, executionId);
  const content = JSON.stringify(ownIdentity());
  await fsp.mkdir(path.dirname(record), { recursive: true, mode: FOLDER_MODE });
  const draft = path.join(await processStagingFolder(uploadDir), randomBytes(STAGING_NAME_BYTES).toString('hex') + RECORD_DRAFT_SUFFIX);
  try {
    await fsp.writeFile(draft, content, { flag: 'wx', mode: RECORD_MODE });
    try {
      await fsp.link(draft, record).catch(async (error: unknown) => {
        if (!isErrno(error, ...NO_HARD_LINKS)) throw error;
        // Not atomic: a crash between create and write leaves an empty record, which the sweep
        // removes by age (module documentation).
        await fsp.writeFile(record, content, { flag: 'wx', mode: RECORD_MODE });
      });
    } catch (error) {
      if (isErrno(error, 'EEXIST')) throw conflictError(executionId);
      throw error;
    }
  } finally {
    // Best effort: a draft left behind goes with this process's staging folder once it is gone.
    await fsp.rm(draft, { force: true }).catch(ignore);
  }
}

/** What link(2) answers on a file system that has no hard links. */
const NO_HARD_LINKS = ['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'];

/** 409 when `folder` exists: made by someone who keeps no owner records (module documentation). */
async function refuseUnrecordedFolder(folder: string, executionId: string): Promise<void> {
  if (await pathExists(folder)) throw conflictError(executionId);
}

/** Identity of a process as written to owner records (and to the markers of earlier versions). */
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

/** This process's staging folder `<uploadDir>/.actionkit/staging/<this process>`, made if missing; its absolute path. */
async function processStagingFolder(uploadDir: string): Promise<string> {
  const base = path.resolve(uploadDir);
  await fsp.mkdir(base, { recursive: true, mode: FOLDER_MODE });
  const folder = path.join(base, BOOKKEEPING_DIR, STAGING_DIR, ownerName(ownIdentity()));
  // Made again for every request: a cleaner may have removed it since.
  await fsp.mkdir(folder, { recursive: true, mode: FOLDER_MODE });
  return folder;
}

/**
 * Create a staging folder `<uploadDir>/.actionkit/staging/<this process>/<random>` (mode 0755 less
 * the umask, like the execution folder it becomes by a rename); returns its absolute path.
 */
async function createStagingFolder(uploadDir: string): Promise<string> {
  const parent = await processStagingFolder(uploadDir);
  for (;;) {
    const staging = path.join(parent, randomBytes(STAGING_NAME_BYTES).toString('hex'));
    try {
      // Exclusive: a name already taken fails, and another is drawn.
      await fsp.mkdir(staging, { mode: FOLDER_MODE });
      return staging;
    } catch (error) {
      if (!isErrno(error, 'EEXIST')) throw error;
    }
  }
}

/** A process's identity as a folder name, `p<pid>-s<startTime>-b<bootId>`: written atomically with the folder. */
function ownerName(owner: OwnerIdentity): string {
  return `p${owner.pid}-s${owner.startTime}-b${owner.bootId}`;
}

const OWNER_NAME = /^p(\d+)-s(\d+)-b([0-9a-f-]*)$/;

/** The identity in a name made by {@link ownerName}; `undefined` for any other name. */
function parseOwnerName(name: string): OwnerIdentity | undefined {
  const match = OWNER_NAME.exec(name);
  if (match === null) return undefined;
  const pid = Number(match[1]);
  const startTime = Number(match[2]);
  if (!Number.isSafeInteger(pid) || pid <= 0 || !Number.isSafeInteger(startTime)) return undefined;
  return { pid, startTime, bootId: match[3] ?? '' };
}

/** What {@link readOwnerRecord} found. */
type RecordReading =
  /** A complete record. */
  | { kind: 'owner'; owner: OwnerIdentity }
  /** A regular file that is not a record (empty, partial, not ours), last modified `ageMs` ago. */
  | { kind: 'unreadable'; ageMs: number }
  /** Nothing, or something that is not a regular file (a symlink is never followed). */
  | { kind: 'none' };

/** Read and validate an owner record (or an earlier version's marker) without following symlinks. */
async function readOwnerRecord(file: string): Promise<RecordReading> {
  let handle: fsp.FileHandle;
  try {
    // O_NONBLOCK: a FIFO planted in place of a record must not hang the start-up sweep.
    handle = await fsp.open(file, fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0));
  } catch {
    return { kind: 'none' };
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) return { kind: 'none' };
    const unreadable: RecordReading = { kind: 'unreadable', ageMs: Date.now() - stats.mtimeMs };
    if (stats.size > MAX_RECORD_BYTES) return unreadable;
    const owner = parseOwnerRecord(await handle.readFile('utf8'));
    return owner === undefined ? unreadable : { kind: 'owner', owner };
  } catch {
    return { kind: 'none' };
  } finally {
    await handle.close();
  }
}

/** The identity in a record's text; `undefined` when it is not a whole record. */
function parseOwnerRecord(text: string): OwnerIdentity | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { pid, startTime, bootId } = parsed as Record<string, unknown>;
  if (!Number.isSafeInteger(pid) || (pid as number) <= 0) return undefined;
  if (typeof startTime !== 'number' || !Number.isFinite(startTime) || typeof bootId !== 'string') return undefined;
  return { pid: pid as number, startTime, bootId };
}

/** `true` only when the owner is provably no longer running; unknown → `false` (keep). */
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
  if (name === LEGACY_OWNER_MARKER_FILE) return `The file name ${LEGACY_OWNER_MARKER_FILE} is reserved.`;
  return undefined;
}

function baseName(raw: string): string {
  const parts = raw.split(/[/\\]/);
  return parts[parts.length - 1] ?? '';
}

/** `true` when `file` is a directory itself, not a symlink to one. */
async function isRealDirectory(file: string): Promise<boolean> {
  const stats = await fsp.lstat(file).catch(() => undefined);
  return stats?.isDirectory() === true;
}

/** Names in a directory; none when it is missing. */
async function directoryEntries(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch (error) {
    if (isErrno(error, 'ENOENT', 'ENOTDIR')) return [];
    throw error;
  }
}

/** Names of the real directories (not symlinks) in a directory; none when it is missing. */
async function subdirectories(dir: string): Promise<string[]> {
  const names: string[] = [];
  for (const name of await directoryEntries(dir)) if (await isRealDirectory(path.join(dir, name))) names.push(name);
  return names;
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
