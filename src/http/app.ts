/**
 * The request handler of an extension, separate from listening (tests and embedders mount it
 * anywhere). The action routes are served from `node:http` in front of an express application
 * (see {@link buildApp}). It is thin: an exact-path route table built from the registered descriptions, body
 * parsing, zod validation of every request body, and the exthttp envelope of the reference
 * (§2.1.1): `Request-Id` header, gzip above 1 KiB (done in {@link send}: every answer is JSON we
 * serialise ourselves, so a streaming compression middleware on every request would only cost),
 * `Request-Timeout`/`X-Request-Timeout` → 503,
 * JSON errors everywhere, one access-log line and HTTP metric per request (`./access-log.ts`).
 * Bodies above 16 KiB are never parsed here: they go to the large-request lane, and large states
 * stay sealed (`src/runtime/sealed.ts`).
 * Unlike the reference, which reads any body as JSON, the JSON endpoints take only JSON content
 * types (415 otherwise, so a web page cannot call them without a CORS preflight), and a body whose
 * declared `Content-Length` exceeds its limit gets 413 before a byte of it is read.
 * The lifecycle work happens in `src/runtime/lifecycle.ts`.
 *
 * The rest of an extension (discoveries, advice, event listeners) is served by the author's
 * `routers`, after the action routes and before the final 404, inside the same envelope: they get
 * the `Request-Id`, the access log and metrics, the `Request-Timeout` answer (their later answer is
 * discarded; {@link requestSignal} tells them to give up), gzip above 1 KiB and JSON errors.
 */
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { IncomingMessage, ServerResponse } from 'node:http';
import compression from 'compression';
import accepts from 'accepts';
import parseurl from 'parseurl';
import express, { type Request, type RequestHandler, type Response } from 'express';
import type { z } from 'zod';
import { indexedPaths, type ExtensionIndex, type IndexContributions } from '../api/extension-index.js';
import { parseBodyText, REQUEST_SCHEMAS, validateBody } from '../api/request-body.js';
import type { PrepareActionRequestBodySchema } from '../api/schemas.js';
import { ConfigError } from '../config.js';
import { ErrorCode, ExtensionError, RuntimeError } from '../errors.js';
import type { Logger } from '../logging.js';
import type { ExtensionMetrics } from '../metrics.js';
import { DecodedRequest, type Lifecycle, type Reply, type RequestScope, type StateRequest, type UploadedFiles } from '../runtime/lifecycle.js';
import type { DecodedBody, DecodeTask } from '../runtime/protocol.js';
import type { ActionRegistry, RegisteredAction } from '../runtime/registry.js';
import { answerJson, LARGE_JSON_BYTES, stateFromWire } from '../runtime/sealed.js';
import { accessLogger, setResponseBytes, setRoute } from './access-log.js';
import { exchangeAbandoned, onExchangeEnd } from './exchange.js';
import { receiveMultipart, removeExecutionFolder } from './uploads.js';

/** What the app needs. */
export interface AppDeps {
  registry: ActionRegistry;
  lifecycle: Lifecycle;
  logger: Logger;
  maxBodyBytes: number;
  uploadDir: string;
  uploadMaxBytes: number;
  metrics: Pick<ExtensionMetrics, 'observeHttp'>;
  /** Where the index is served. */
  indexPath: string;
  /** The index body (actions and contributions), fixed at start-up. */
  index: ExtensionIndex;
  /** The author's routers, tried in order for every path that is not the runtime's. */
  routers: readonly RequestHandler[];
  /**
   * Decode a body larger than `LARGE_JSON_BYTES` on the large-request lane (`WorkerPools.decode`);
   * dropped if `abandoned()` by its turn; `ofExecution`: for an execution this process holds, so
   * before anonymous bodies.
   */
  decode(task: DecodeTask, abandoned: () => boolean, ofExecution?: boolean): Promise<DecodedBody>;
}

type Route = (req: IncomingMessage, res: ServerResponse, scope: RequestScope, path: string) => Promise<Reply>;

/** Per-response flags of the app (under a symbol: plain `node:http` responses have no `res.locals`). */
interface Flags {
  timedOut?: boolean;
  /** Set for requests that reach the author's routers ({@link requestSignal}). */
  abort?: AbortController;
}
const FLAGS = Symbol('actionkit');
type Flagged = ServerResponse & { [FLAGS]?: Flags };

function flagsOf(res: ServerResponse): Flags {
  const flagged = res as Flagged;
  return (flagged[FLAGS] ??= {});
}

/**
 * The extension's request handler: `(req, res)` for `http.createServer`. It is an express
 * application, so `outer.use('/prefix', extension.app)` mounts it as a sub-app: its routers inherit
 * the outer app's settings (`trust proxy`, `json spaces`…), as with any express app.
 */
export type ExtensionHandler = (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) => void;

/**
 * Build the extension's request handler.
 *
 * The action routes (and the index and descriptions) are served straight from `node:http`'s
 * request and response, in front of express: an exact-path lookup, no router, no middleware
 * chain. That is the path the agent polls; express's per-request setup would cost the main thread
 * more than everything else it does for a status call (`bench/RESULTS.md`, *The HTTP path at
 * bare-express speed*).
 * Every other path goes to an express application holding the author's `routers`, the final 404
 * and the error handler, inside the same envelope.
 */
export function buildApp(deps: AppDeps): ExtensionHandler {
  const routes = buildRoutes(deps);
  const requestIds = requestIdGenerator();
  const observe = accessLogger({ logger: deps.logger, metrics: deps.metrics, pollingRoutes: pollingRoutes(deps.registry) });
  const answerError = (error: unknown, req: IncomingMessage, res: ServerResponse, path: string): void => {
    const failure = asRuntimeError(error);
    if (failure.httpStatus >= 500) deps.logger.error({ err: error, path }, failure.message);
    // Refused before its body was read, or while it was still arriving: the client may still be
    // sending. Close the connection after the answer instead of reading the rest.
    if (failure.code === ErrorCode.FileTooLarge || failure.code === ErrorCode.BodyTooLarge || failure.code === ErrorCode.UnsupportedMediaType) {
      if (!res.headersSent) res.setHeader('Connection', 'close');
    }
    send(res, failure.httpStatus, failure.toWire());
  };

  const app = express();
  app.disable('x-powered-by');
  // Express' automatic ETags would make every JSON answer conditional; only the index has one.
  app.set('etag', false);
  app.use((req, res, next) => {
    res.setHeader('Request-Id', requestIds());
    observe(req, res, req.path);
    next();
  });
  if (deps.routers.length > 0) app.use(routerScope, compression({ threshold: GZIP_MIN_BYTES }), ...deps.routers);
  app.use((req) => {
    throw new RuntimeError(ErrorCode.NotFound, 404, `Not found: ${req.method} ${req.path}`, `nothing is served at this path; GET ${deps.indexPath} lists the endpoints`);
  });
  app.use((error: unknown, req: Request, res: Response, _next: express.NextFunction) => answerError(error, req, res, req.path));

  const answerBadTarget = (req: IncomingMessage, res: ServerResponse): void => {
    res.setHeader('Request-Id', requestIds());
    observe(req, res, '');
    const shown = (req.url ?? '').slice(0, 100);
    answerError(new RuntimeError(ErrorCode.InvalidRequest, 400, 'Invalid request target', `not a path nor a URL: ${JSON.stringify(shown)}`), req, res, '');
  };

  // In front of express's own handling, not as its first middleware: calling the app (as a server's
  // listener, or as a sub-app mounted by another express app) goes through `handle`, and express's
  // per-request work starts there. Everything not the runtime's is passed on to it.
  const hooked = app as unknown as { handle: Handle };
  const expressHandle = hooked.handle.bind(app);
  hooked.handle = (req, res, next) => {
    let path: string | undefined;
    try {
      path = parseurl(req)?.pathname ?? undefined;
    } catch {
      // A target Node's HTTP parser took but `url.parse` refuses (`GET http://[/x`): nobody's path.
      return answerBadTarget(req, res);
    }
    const methods = path === undefined ? undefined : routes.get(path);
    if (path === undefined || methods === undefined) return expressHandle(req, res, next);
    res.setHeader('Request-Id', requestIds());
    observe(req, res, path);
    setRoute(res, path);
    const route = methods.get(req.method === 'HEAD' ? 'GET' : (req.method ?? ''));
    if (route === undefined) {
      res.setHeader('Allow', [...methods.keys()].join(', '));
      const allowed = `allowed: ${[...methods.keys()].join(', ')}`;
      return answerError(new RuntimeError(ErrorCode.MethodNotAllowed, 405, `Method ${req.method} not allowed for ${path}`, allowed), req, res, path);
    }
    route(req, res, requestScope(req, res), path)
      .then((reply) => send(res, reply.status, reply.body))
      .catch((error: unknown) => answerError(error, req, res, path))
      .catch((error: unknown) => {
        // Not even the error answer could be written: log it, and end the exchange.
        deps.logger.error({ err: error, path }, 'could not answer a request');
        res.destroy();
      })
      .finally(() => returnReadTurn(req));
  };
  return app as unknown as ExtensionHandler;
}

/** express's `app.handle`. */
type Handle = (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) => void;

/**
 * Start-up check that every path the index lists reaches what it names: the index path and the
 * contributed entries must not be paths the runtime serves for an action (those never reach the
 * routers), nor each other's. Throws a {@link ConfigError} naming both users of the path.
 */
export function assertPathsFree(registry: ActionRegistry, indexPath: string, contributions: IndexContributions): void {
  const taken = new Map<string, string>();
  for (const { id, description: d } of registry.all()) {
    taken.set(`/${id}`, `the description of action ${id}`);
    const endpoints = { prepare: d.prepare, start: d.start, status: d.status, stop: d.stop, 'metrics query': d.metrics?.query?.endpoint };
    for (const [name, endpoint] of Object.entries(endpoints)) if (endpoint !== undefined) taken.set(endpoint.path, `the ${name} endpoint of action ${id}`);
  }
  const claim = (path: string, what: string): void => {
    const owner = taken.get(path);
    if (owner !== undefined) throw new ConfigError(`Invalid configuration: ${what} is ${path}, which is already ${owner}`);
    taken.set(path, what);
  };
  claim(indexPath, 'the index path (option indexPath, ACTIONKIT_INDEX_PATH)');
  for (const { field, path } of indexedPaths(contributions)) claim(path, `an entry of option index.${field}`);
}

/** Paths the agent calls periodically: status and metric query. */
function pollingRoutes(registry: ActionRegistry): Set<string> {
  const paths = new Set<string>();
  for (const { description } of registry.all()) {
    if (description.status !== undefined) paths.add(description.status.path);
    const query = description.metrics?.query?.endpoint;
    if (query !== undefined) paths.add(query.path);
  }
  return paths;
}

function buildRoutes(deps: AppDeps): Map<string, Map<string, Route>> {
  const { registry, lifecycle } = deps;
  const routes = new Map<string, Map<string, Route>>();
  const add = (path: string, method: string, route: Route): void => {
    const methods = routes.get(path) ?? new Map<string, Route>();
    methods.set(method.toUpperCase(), route);
    routes.set(path, methods);
  };
  const json = jsonBodyParser(deps.maxBodyBytes);
  /** A start, status or stop body: validated here, or decoded on the large-request lane. */
  const stateRequest = async (action: RegisteredAction, req: IncomingMessage, res: ServerResponse, scope: RequestScope, path: string, kind: 'start' | 'status' | 'stop'): Promise<StateRequest> => {
    // A large body of an execution this process holds is the agent's: it goes first.
    const ofExecution = (head: Uint8Array): boolean => {
      const id = executionIdAtStart(head);
      const held = id !== undefined && lifecycle.largeRequestArrived(action, id, kind);
      // Its stop runs even if its client leaves or its Request-Timeout answers first (a stop the
      // agent sent is never lost, as a small one is not): it is read whole and keeps its read turn
      // until it ran, which bounds how many such bodies wait.
      if (held && kind === 'stop') readWhateverAnswered(req);
      return held;
    };
    const body = await parse(req, res, path, json, REQUEST_SCHEMAS[kind], JSON_TYPES, ofExecution);
    if (!(body instanceof LargeBody)) return body;
    const abandoned = kind === 'stop' && body.ofExecution ? () => false : () => scope.abandoned();
    const decoded = await deps.decode({ kind, bytes: body.bytes }, abandoned, body.ofExecution);
    return { executionId: decoded.executionId, state: stateFromWire(decoded.state ?? {}) ?? {} };
  };

  add(deps.indexPath, 'GET', async (req, res) => {
    const etag = registry.revision;
    res.setHeader('ETag', etag);
    if (etagMatches(req.headers['if-none-match'], etag)) return { status: 304, body: {} };
    return { status: 200, body: deps.index };
  });

  for (const action of registry.all()) {
    const d = action.description;
    add(`/${action.id}`, 'GET', async () => ({ status: 200, body: d as unknown as Record<string, unknown> }));
    const multipartLimitBytes = action.fileParameters.size * deps.uploadMaxBytes + deps.maxBodyBytes + MULTIPART_FRAMING_BYTES;
    const fileParameters = [...action.fileParameters];
    add(d.prepare.path, d.prepare.method, async (req, res, scope, path) => {
      if (mediaTypeOf(req) === 'multipart/form-data') {
        refuseDeclaredLength(req, multipartLimitBytes, 'ACTIONKIT_UPLOAD_MAX_BYTES per file parameter + ACTIONKIT_MAX_BODY_BYTES + 1 MiB of multipart framing');
        const { request, upload } = await receiveUpload(req, action, deps, scope);
        return lifecycle.prepare(action, request, upload, scope);
      }
      const accepted = action.fileParameters.size > 0 ? `${JSON_TYPES}, or multipart/form-data with the files of ${fileParameters.join(', ')}` : JSON_TYPES;
      const body = await parse(req, res, path, json, REQUEST_SCHEMAS.prepare, accepted);
      const request = body instanceof LargeBody ? await decodedRequest(deps, { kind: 'prepare', bytes: body.bytes, fileParameters }, scope) : body;
      return lifecycle.prepare(action, request, undefined, scope);
    });
    add(d.start.path, d.start.method, async (req, res, scope, path) => lifecycle.start(action, await stateRequest(action, req, res, scope, path, 'start'), scope));
    if (d.status !== undefined) {
      add(d.status.path, d.status.method, async (req, res, scope, path) => lifecycle.status(action, await stateRequest(action, req, res, scope, path, 'status'), scope));
    }
    if (d.stop !== undefined) {
      add(d.stop.path, d.stop.method, async (req, res, scope, path) => lifecycle.stop(action, await stateRequest(action, req, res, scope, path, 'stop')));
    }
    const query = d.metrics?.query?.endpoint;
    if (query !== undefined && action.hasQueryHandler) {
      add(query.path, query.method, async (req, res, scope, path) => {
        const body = await parse(req, res, path, json, REQUEST_SCHEMAS.query);
        return lifecycle.query(action, body instanceof LargeBody ? await decodedRequest(deps, { kind: 'query', bytes: body.bytes }, scope) : body, scope);
      });
    }
  }
  return routes;
}

/**
 * The execution id a body starts with, as the agent writes it (Go encodes the struct's fields in
 * order: `{"executionId":"<uuid>",…`), read from its first bytes only; undefined otherwise. Not
 * validated beyond its shape: it only lets the body of an execution this process holds go first
 * and count its heartbeat on arrival — what a client knowing a live execution's id could have
 * with a small request anyway.
 */
function executionIdAtStart(bytes: Uint8Array): string | undefined {
  const head = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.byteLength, 128)).toString('latin1');
  return EXECUTION_ID_AT_START.exec(head)?.[1];
}
const EXECUTION_ID_AT_START = /^(?:\xef\xbb\xbf)?\s*\{\s*"executionId"\s*:\s*"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"/;

/** A body read whole but not parsed: larger than `LARGE_JSON_BYTES`, for the large-request lane. */
class LargeBody {
  constructor(
    readonly bytes: Uint8Array,
    /** Its first bytes named an execution this process holds (see `readJson`'s `ofExecution`). */
    readonly ofExecution: boolean,
  ) {}
}

/** Decode a large body on the large-request lane; its failures are the 400s the main thread would have answered. */
function decodeLarge(deps: Pick<AppDeps, 'decode'>, task: DecodeTask, scope: RequestScope): Promise<DecodedBody> {
  return deps.decode(task, () => scope.abandoned());
}

/** A large prepare or query body, decoded on the large-request lane. */
async function decodedRequest(deps: Pick<AppDeps, 'decode'>, task: DecodeTask, scope: RequestScope): Promise<DecodedRequest> {
  return DecodedRequest.from(await decodeLarge(deps, task, scope));
}

/** Parse a multipart prepare, validate its `request` field (unless decoded already), and hand back the saved files. */
async function receiveUpload(req: IncomingMessage, action: RegisteredAction, deps: AppDeps, scope: RequestScope): Promise<{ request: z.output<typeof PrepareActionRequestBodySchema> | DecodedRequest; upload: UploadedFiles }> {
  const received = await receiveMultipart(req, {
    uploadDir: deps.uploadDir,
    maxFileBytes: deps.uploadMaxBytes,
    maxRequestBytes: deps.maxBodyBytes,
    fileParameters: action.fileParameters,
    // Like every decode: dropped when its answer can no longer matter (timed out, or the client left).
    decode: (task) => decodeLarge(deps, task, scope),
  });
  try {
    const request = received.request instanceof DecodedRequest ? received.request : validateBody(received.request, REQUEST_SCHEMAS.prepare);
    return { request, upload: { folder: received.folder, files: received.files } };
  } catch (error) {
    if (received.folder !== undefined) await removeExecutionFolder(deps.uploadDir, received.executionId);
    throw error;
  }
}

type Middleware = (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => void;

/** A body reader: a middleware that may be told how to recognise, from its first bytes, a large body of an execution this process holds. */
type BodyReader = (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void, ofExecution?: (head: Uint8Array) => boolean) => void;

/** The JSON media types, as named in a 415 answer. */
const JSON_TYPES = 'application/json (or application/*+json)';

/** `application/json` and the structured-syntax `+json` types (RFC 6839), without parameters. */
const JSON_MEDIA_TYPE = /^application\/([a-z0-9!#$&^_.+-]+\+)?json$/;

/**
 * Allowance for the boundaries, part headers and small extra fields of a multipart prepare, on top
 * of its files and its `request` field, when its declared `Content-Length` is checked.
 */
const MULTIPART_FRAMING_BYTES = 1024 * 1024;

/**
 * Only JSON bodies reach the JSON endpoints, so that a web page cannot fire them without a CORS
 * preflight: `text/plain`, `application/x-www-form-urlencoded` and `multipart/form-data` are the
 * types a page may send cross-origin without one (multipart stays accepted for prepare, see the
 * route). Steadybit's Go test client (`action_kit_test`, resty with a struct body) and the
 * reference SDK's own tests send `application/json`.
 *
 * A request without any `Content-Type` is accepted — the reference reads every body as JSON and a
 * Go client built on `http.NewRequest` sends none — unless it carries an `Origin` header: browsers
 * send `Origin` with every POST, and a page can omit the content type (a `Blob` or `ArrayBuffer`
 * body) without a preflight; the agent never sends `Origin`.
 */
function refuseNonJson(req: IncomingMessage, path: string, accepted: string): void {
  const mediaType = mediaTypeOf(req);
  if (mediaType === '') {
    if (req.headers.origin === undefined) return;
    throw new RuntimeError(ErrorCode.UnsupportedMediaType, 415, 'Missing content type', `a request with an Origin header (from a web page) must declare its body: ${req.method} ${path} accepts ${accepted}`);
  }
  if (JSON_MEDIA_TYPE.test(mediaType)) return;
  const shown = mediaType.length > 100 ? `${mediaType.slice(0, 100)}…` : mediaType;
  throw new RuntimeError(ErrorCode.UnsupportedMediaType, 415, `Unsupported content type: ${shown}`, `${req.method} ${path} accepts ${accepted}`);
}

/** The media type of a request's body, lower case, without parameters; '' when it declares none. */
function mediaTypeOf(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? '').split(';', 1)[0]!.trim().toLowerCase();
}

/**
 * 413 from the headers alone when the declared `Content-Length` exceeds `limitBytes`: not a byte of
 * the body is read, and the error handler closes the connection after the answer (a client
 * declaring a terabyte would otherwise hold it while we read, or until the request timeout).
 */
function refuseDeclaredLength(req: IncomingMessage, limitBytes: number, setting: string): void {
  const header = req.headers['content-length'];
  if (header === undefined) return;
  // Node's parser admits only digits here; a length beyond 2^53 still compares as too large.
  const declaredBytes = Number(header);
  if (!(declaredBytes > limitBytes)) return;
  throw new RuntimeError(ErrorCode.BodyTooLarge, 413, 'Request body too large', `Content-Length ${header} exceeds the limit of ${limitBytes} bytes (${setting})`);
}

/**
 * JSON bodies limited to `maxBytes` (the content type is checked before, by {@link parse}).
 *
 * A declared `Content-Length` above the limit is refused before reading
 * ({@link refuseDeclaredLength}); the limit applies to the bytes on the wire as well as to the
 * decoded body (a compressed body larger than the limit would inflate to more than it).
 *
 * What the agent sends — UTF-8, not compressed — is read directly: chunks, one `JSON.parse`. That
 * is most requests, and it halves the main thread's parsing cost (status polling is the hot path);
 * a chunked body is counted as it streams and refused the moment it passes the limit, without
 * reading the rest. A body above `LARGE_JSON_BYTES` is not parsed here: it is read, in its turn
 * ({@link LargeBodyTurns}), into a buffer for the large-request lane (`src/runtime/sealed.ts`).
 * Everything else (compressed bodies, other charsets) goes through body-parser, which owns those
 * rules and their errors, within `LARGE_JSON_BYTES` of JSON; the direct path fails the same way
 * with the same error types.
 */
function jsonBodyParser(maxBytes: number): BodyReader {
  // The agent's bodies (recognised by their first bytes) have turns of their own: they never wait
  // behind anonymous ones, and a client claiming live ids cannot read without bound either.
  const turns = { anonymous: new LargeBodyTurns(MAX_LARGE_BODIES_READ), ofExecutions: new LargeBodyTurns(MAX_LARGE_BODIES_READ) };
  // On the main thread, so bounded by the large-body threshold (decoded, that is: a compressed
  // body inflates to it); the agent sends neither compressed nor other charsets.
  const generalLimitBytes = Math.min(maxBytes, LARGE_JSON_BYTES);
  const parseGeneral = express.json({ limit: generalLimitBytes, strict: false, type: () => true }) as Middleware;
  const general: Middleware = (req, res, next) =>
    parseGeneral(req, res, (error?: unknown) => {
      if ((error as { type?: unknown } | undefined)?.type !== 'entity.too.large' || generalLimitBytes === maxBytes) return next(error);
      next(
        new RuntimeError(
          ErrorCode.BodyTooLarge,
          413,
          'Request body too large',
          `a compressed body, or one in another charset than UTF-8, may hold at most ${generalLimitBytes} bytes of JSON; send larger bodies as uncompressed UTF-8 (up to ACTIONKIT_MAX_BODY_BYTES, ${maxBytes} bytes)`,
        ),
      );
    });
  return (req, res, next, ofExecution) => {
    try {
      refuseDeclaredLength(req, maxBytes, 'ACTIONKIT_MAX_BODY_BYTES');
    } catch (error) {
      return next(error);
    }
    const lengthHeader = req.headers['content-length'];
    const declaredBytes = lengthHeader === undefined ? undefined : Number(lengthHeader);
    const encoding = req.headers['content-encoding'];
    const charset = CHARSET.exec(req.headers['content-type'] ?? '')?.[2];
    const plain =
      (declaredBytes === undefined ? req.headers['transfer-encoding'] !== undefined : Number.isSafeInteger(declaredBytes)) &&
      (encoding === undefined || encoding.toLowerCase() === 'identity') &&
      (charset === undefined || UTF8.test(charset));
    if (!plain) return general(req, res, next);
    readJson(req, res, declaredBytes, maxBytes, next, turns, ofExecution);
  };
}

/**
 * Large bodies (above `LARGE_JSON_BYTES`) read at once at most: being received, waiting for the
 * large-request lane or decoded there, until answered. A further one is not read beyond its first
 * chunk until one of them is: the rest of its bytes wait in the client's socket (TCP flow control
 * slows the client down) and cost this thread nothing, so a crowd of clients posting maximum-size
 * bodies has them read at the rate the lane decodes them, and holds at most this many in memory.
 * A body whose first bytes name an execution this process holds (the agent's) has as many turns
 * of its own.
 */
export const MAX_LARGE_BODIES_READ = 8;

/** Turns to read a large body ({@link MAX_LARGE_BODIES_READ}), first come first served. */
class LargeBodyTurns {
  private active = 0;
  private readonly waiting: (() => boolean)[] = [];

  constructor(private readonly limit: number) {}

  /**
   * Call `read` once this request may read the rest of its large body; its turn ends when its
   * answer is made ({@link returnReadTurn}) or its exchange ends (answered, or the client left),
   * whichever comes first — an answer queued behind a slow one on the same connection holds no
   * turn. A request answered before its body was read (its `Request-Timeout` passed, or an error)
   * reads no more: it is destroyed, and takes no turn.
   *
   * The agent's large stops ({@link readWhateverAnswered}) are the exception: like a small stop,
   * such a request is read to its end and run even after its `Request-Timeout` answered it, so
   * only its connection closing ends it; its turn ends only when its route made its answer. (The
   * server's `requestTimeout` still bounds how long a stalled body holds it.)
   */
  wait(req: IncomingMessage, res: ServerResponse, read: () => void): void {
    const agentStop = (req as TurnHolder)[READ_WHATEVER_ANSWERED] === true;
    /** Nothing of it is wanted any more: a stop while its connection is open, anything else once answered. */
    const over = (): boolean => (agentStop ? req.destroyed : res.writableEnded || res.destroyed);
    const answered = (): void => {
      if (!req.complete) req.destroy();
    };
    if (over()) return answered();
    const take = (): void => {
      this.active++;
      let held = true;
      // An agent's stop: its connection closing ends it (a request whose answer is out is not
      // destroyed by Node when its connection closes, so its read would never end).
      const stopWatching = agentStop
        ? onConnectionClose(req, answered)
        : onExchangeEnd(req, res, () => {
            returnReadTurn(req);
            answered();
          });
      (req as TurnHolder)[RETURN_TURN] = (): void => {
        if (!held) return;
        held = false;
        if (agentStop) stopWatching();
        this.leave();
      };
      read();
    };
    if (this.active < this.limit) return take();
    /** Its turn came: false if nothing of it is wanted any more (its end removes it), so the turn goes on. */
    const waiter = (): boolean => {
      if (over()) return false;
      stopWatching();
      take();
      return true;
    };
    // A waiting request that is no longer wanted gives up its place: an agent's stop when its
    // connection closes, anything else when answered or its client left.
    const gone = (): void => {
      const at = this.waiting.indexOf(waiter);
      if (at >= 0) this.waiting.splice(at, 1);
      answered();
    };
    this.waiting.push(waiter);
    const stopWatching = agentStop ? onConnectionClose(req, gone) : onExchangeEnd(req, res, gone);
  }

  private leave(): void {
    this.active--;
    for (let next = this.waiting.shift(); next !== undefined; next = this.waiting.shift()) if (next()) return;
  }
}

/** Set on a request that holds a large-body read turn: gives the turn back (at most once). */
const RETURN_TURN = Symbol('returnReadTurn');
/** Set on the agent's large stop: read to its end and run whatever answered it first ({@link LargeBodyTurns.wait}). */
const READ_WHATEVER_ANSWERED = Symbol('readWhateverAnswered');
type TurnHolder = IncomingMessage & { [RETURN_TURN]?: () => void; [READ_WHATEVER_ANSWERED]?: true };

/**
 * `req` is the agent's stop: its body is read to the end and it runs even if its `Request-Timeout`
 * answered first or its client left, as a small stop is; it keeps its read turn until its answer is
 * made ({@link returnReadTurn}). Called before its body waits for a turn.
 */
function readWhateverAnswered(req: IncomingMessage): void {
  (req as TurnHolder)[READ_WHATEVER_ANSWERED] = true;
}

/** Call `listener` once when `req`'s connection closes (at once if it is closed); returns what cancels it. */
function onConnectionClose(req: IncomingMessage, listener: () => void): () => void {
  const socket = req.socket;
  if (socket === null || socket.closed) {
    process.nextTick(listener);
    return () => undefined;
  }
  socket.once('close', listener);
  return () => socket.off('close', listener);
}

/** The request's answer is made: its large body, if it had one, no longer needs its read turn. */
function returnReadTurn(req: IncomingMessage): void {
  (req as TurnHolder)[RETURN_TURN]?.();
}

const CHARSET = /;\s*charset\s*=\s*("?)([^";\s]+)\1/i;
const UTF8 = /^utf-?8$/i;

/**
 * Read a body of `declaredBytes` (undefined: chunked, at most `maxBytes`) and parse it into
 * `req.body`; errors carry body-parser's `type`. With `turns`, a body that passes
 * `LARGE_JSON_BYTES` while it arrives waits for its turn ({@link LargeBodyTurns}) to be read on.
 */
function readJson(
  req: IncomingMessage & { body?: unknown },
  res: ServerResponse,
  declaredBytes: number | undefined,
  maxBytes: number,
  next: (error?: unknown) => void,
  turns: { anonymous: LargeBodyTurns; ofExecutions: LargeBodyTurns },
  ofExecution?: (head: Uint8Array) => boolean,
): void {
  let chunks: Buffer[] = [];
  // Past LARGE_JSON_BYTES the body goes into a buffer of its own as it arrives (small copies, not
  // one of megabytes at the end); that buffer is what the large-request lane receives.
  let large: LargeBodySink | undefined;
  let largeOfExecution = false;
  let receivedBytes = 0;
  let settled = false;
  const fail = (type: string, message: string, status = 400): void => {
    if (settled) return;
    settled = true;
    chunks = [];
    large = undefined;
    next(Object.assign(new Error(message), { type, status, limit: maxBytes }));
  };
  req.on('data', (chunk: Buffer) => {
    if (settled) return;
    receivedBytes += chunk.length;
    if (declaredBytes === undefined && receivedBytes > maxBytes) return fail('entity.too.large', 'request entity too large', 413);
    if (declaredBytes !== undefined && receivedBytes > declaredBytes) return fail('request.size.invalid', 'request size did not match content length');
    if (large !== undefined) return large.add(chunk);
    chunks.push(chunk);
    if ((declaredBytes ?? receivedBytes) <= LARGE_JSON_BYTES) return;
    // Large (declared so, or a chunked body that grew so): from here on into a sink, and the rest
    // is read in its turn — among the agent's bodies when what came so far names an execution
    // this process holds.
    large = new LargeBodySink(declaredBytes ?? maxBytes);
    for (const received of chunks) large.add(received);
    chunks = [];
    largeOfExecution = ofExecution?.(large.bytes()) ?? false;
    req.pause();
    (largeOfExecution ? turns.ofExecutions : turns.anonymous).wait(req, res, () => req.resume());
  });
  // Closed before the whole body was read (arrived or not): the client went away, and what is left
  // will never be read; without this a request destroyed while it waited would never settle.
  req.once('close', () => {
    if (!req.readableEnded) fail('request.aborted', 'request aborted');
  });
  req.once('error', (error) => fail('request.error', error.message));
  req.once('end', () => {
    if (settled) return;
    if (declaredBytes !== undefined && receivedBytes !== declaredBytes) return fail('request.size.invalid', 'request size did not match content length');
    settled = true;
    // Its text is never made here: it is decoded on the large-request lane.
    if (large !== undefined) {
      req.body = new LargeBody(large.bytes(), largeOfExecution);
      return next();
    }
    try {
      req.body = parseBodyText(Buffer.concat(chunks, receivedBytes).toString('utf8'));
    } catch (error) {
      return next(error);
    }
    (req as DepthChecked)[DEPTH_CHECKED] = true;
    next();
  });
}

/**
 * The bytes of a large body as they arrive, in a buffer that doubles as needed (up to
 * `limitBytes`): never more than twice what the client sent is allocated, and the largest single
 * copy is half the body (a declared length is not trusted with an allocation before the bytes come).
 */
class LargeBodySink {
  private buffer = new Uint8Array(2 * LARGE_JSON_BYTES);
  private length = 0;

  constructor(private readonly limitBytes: number) {}

  add(chunk: Uint8Array): void {
    const needed = this.length + chunk.length;
    if (needed > this.buffer.length) {
      let capacity = this.buffer.length;
      while (capacity < needed) capacity *= 2;
      const grown = new Uint8Array(Math.max(needed, Math.min(capacity, this.limitBytes)));
      grown.set(this.buffer.subarray(0, this.length));
      this.buffer = grown;
    }
    this.buffer.set(chunk, this.length);
    this.length = needed;
  }

  /** The body: a view of exactly its bytes (its buffer is transferred to the lane). */
  bytes(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }
}

/**
 * Check the content type, run the body parser, then validate against `schema`; errors are
 * 400/413/415 RuntimeErrors. `accepted` names the accepted types in a 415. A body larger than
 * `LARGE_JSON_BYTES` comes back unparsed, for the large-request lane.
 */
async function parse<S extends z.ZodType>(
  req: IncomingMessage & { body?: unknown },
  res: ServerResponse,
  path: string,
  parser: BodyReader,
  schema: S,
  accepted = JSON_TYPES,
  ofExecution?: (head: Uint8Array) => boolean,
): Promise<z.output<S> | LargeBody> {
  refuseNonJson(req, path, accepted);
  // body-parser turns an empty body into {}; say what is really wrong.
  if (req.headers['content-length'] === '0') throw new RuntimeError(ErrorCode.BadJson, 400, 'Failed to parse request body.', 'the body is empty; expected a JSON object');
  await new Promise<void>((resolve, reject) => parser(req, res, (error?: unknown) => (error === undefined ? resolve() : reject(bodyError(error))), ofExecution));
  if (req.body instanceof LargeBody) return req.body;
  return validateBody(req.body, schema, (req as DepthChecked)[DEPTH_CHECKED] === true);
}

/** Set on a request whose body text was checked for depth before it was parsed. */
const DEPTH_CHECKED = Symbol('depthChecked');
type DepthChecked = { [DEPTH_CHECKED]?: true };

/** Map a body-parser failure to the catalogue. */
function bodyError(error: unknown): RuntimeError {
  if (error instanceof RuntimeError) return error;
  const failure = error as { type?: string; status?: number; message?: string; limit?: number };
  switch (failure.type) {
    case 'entity.parse.failed':
      return new RuntimeError(ErrorCode.BadJson, 400, 'Failed to parse request body.', failure.message);
    case 'entity.too.large':
      return new RuntimeError(ErrorCode.BodyTooLarge, 413, 'Request body too large', `the limit is ${failure.limit} bytes (ACTIONKIT_MAX_BODY_BYTES)`);
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return new RuntimeError(ErrorCode.InvalidRequest, 415, 'Unsupported request body encoding', failure.message);
    default:
      return new RuntimeError(ErrorCode.InvalidRequest, failure.status ?? 400, 'Failed to read request body.', failure.message);
  }
}

/**
 * Any error as an answer. Besides the runtime's own: what the author's routers throw or pass to
 * `next` — body-parser failures keep their meaning (400/413/415), other client errors (`status`
 * 4xx, as `http-errors` makes them) keep their status, an {@link ExtensionError} its wire fields.
 */
function asRuntimeError(error: unknown): RuntimeError {
  if (error instanceof RuntimeError) return error;
  const failure = (typeof error === 'object' && error !== null ? error : {}) as { type?: unknown; status?: unknown; statusCode?: unknown; message?: unknown };
  const status = failure.status ?? failure.statusCode;
  if (typeof status === 'number' && status >= 400 && status <= 499) {
    if (typeof failure.type === 'string') return bodyError(error);
    return new RuntimeError(ErrorCode.InvalidRequest, status, typeof failure.message === 'string' && failure.message !== '' ? failure.message : `HTTP ${status}`);
  }
  if (error instanceof ExtensionError) {
    const wire = error.toWire();
    return new RuntimeError(ErrorCode.Internal, 500, wire.title, wire.detail);
  }
  const detail = error instanceof Error ? error.message : String(error);
  return new RuntimeError(ErrorCode.Internal, 500, 'Internal Server Error', detail);
}

/**
 * In front of the author's routers: the `Request-Timeout` answer and the request's abort signal
 * (the action routes get both through their {@link RequestScope}).
 */
const routerScope: RequestHandler = (req, res, next) => {
  const abort = new AbortController();
  flagsOf(res).abort = abort;
  requestScope(req, res);
  onExchangeEnd(req, res, () => {
    if (!res.writableFinished) abort.abort(new Error('the client closed the connection before the answer'));
  });
  next();
};

/**
 * The abort signal of a request served by one of the `routers`: aborted when the agent stops
 * waiting — its `Request-Timeout` passed (the runtime then answered `503 Timeout` and discards the
 * router's answer) or the client closed the connection. Pass it to what the handler awaits
 * (`fetch(url, { signal })`) so abandoned work stops. For other requests: a signal that never aborts.
 */
export function requestSignal(res: ServerResponse): AbortSignal {
  return (res as Flagged)[FLAGS]?.abort?.signal ?? NEVER_ABORTED;
}
const NEVER_ABORTED = new AbortController().signal;

/**
 * After the timeout answer, what the handler still writes goes nowhere (Go's `TimeoutHandler`
 * does the same): a late `res.json()` must not throw "headers already sent" from inside an
 * author's callback, where nothing would catch it.
 */
function discardLaterWrites(res: ServerResponse): void {
  const ignore = (): ServerResponse => res;
  // Every method that writes, or throws once headers are out (express's send removes headers for 204/304).
  for (const method of ['setHeader', 'setHeaders', 'appendHeader', 'removeHeader', 'writeHead', 'end', 'flushHeaders', 'writeContinue', 'writeProcessing', 'writeEarlyHints'] as const) {
    (res as unknown as Record<string, unknown>)[method] = ignore;
  }
  res.write = () => true;
}

/**
 * `Request-Timeout` (fallback `X-Request-Timeout`): float seconds after which the agent stops
 * waiting. We answer 503 `Timeout` at that moment; the handler's later answer is discarded (and a
 * prepare that succeeds after it is rolled back by the lifecycle). A timeout longer than
 * {@link MAX_TIMER_MS} counts as none: no timer and no `deadlineMs`, so the lifecycle's deadline
 * (the handler timeout) and the answer agree.
 */
function requestScope(req: IncomingMessage, res: ServerResponse): RequestScope {
  const flags = flagsOf(res);
  // Like the reference: an empty header counts as absent, and only a whole float is a value.
  const header = [req.headers['request-timeout'], req.headers['x-request-timeout']].find((value) => typeof value === 'string' && value.trim() !== '');
  const seconds = typeof header === 'string' && FLOAT_SECONDS.test(header.trim()) ? Number(header.trim()) : Number.NaN;
  let deadlineMs: number | undefined;
  // Beyond what a timer holds (about 24.8 days) `setTimeout` would fire after 1 ms instead: such a
  // timeout is no deadline at all, as if absent (the handler timeout still bounds the work).
  if (Number.isFinite(seconds) && seconds > 0 && seconds * 1000 <= MAX_TIMER_MS) {
    const timeoutMs = seconds * 1000;
    deadlineMs = Date.now() + timeoutMs;
    const timer = setTimeout(() => {
      if (res.headersSent) return;
      // Written at once, never compressed (an asynchronous gzip would let the discard below swallow
      // it); the parsed number, not the header, so the answer stays small whatever was sent.
      send(res, 503, { title: 'Timeout', detail: `the request did not complete within its Request-Timeout of ${seconds} s` }, false);
      flags.timedOut = true;
      discardLaterWrites(res);
      flags.abort?.abort(new Error(`the Request-Timeout of ${seconds} s passed`));
    }, timeoutMs);
    onExchangeEnd(req, res, () => clearTimeout(timer));
  }
  return {
    deadlineMs,
    // Abandoned: we answered with the timeout, or the client went away before any answer.
    abandoned: () => flags.timedOut === true || exchangeAbandoned(req, res),
  };
}

/** The longest delay `setTimeout` holds (2^31 - 1 ms); a longer one fires at once with a TimeoutOverflowWarning. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A decimal float as Go's `ParseFloat` accepts it for a timeout (no unit, no trailing text). */
const FLOAT_SECONDS = /^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** Answers at least this large are gzipped when the client accepts it (reference: 1 KiB). */
export const GZIP_MIN_BYTES = 1024;
const gzipAsync = promisify(gzip);

/**
 * Write a JSON answer unless one was already written (timeout). Large answers are compressed on
 * the thread pool (`zlib.gzip`), never on the main thread — unless `mayCompress` is false: then
 * the answer is written at once, as it is.
 */
function send(res: ServerResponse, status: number, body: unknown, mayCompress = true): void {
  if (res.headersSent || (res as Flagged)[FLAGS]?.timedOut === true) return;
  if (status === 304) {
    setResponseBytes(res, 0);
    res.statusCode = 304;
    res.end();
    return;
  }
  const text = answerJson(body as Record<string, unknown>);
  const bytes = typeof text === 'string' ? Buffer.byteLength(text) : text.length;
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  const end = (answer: string | Buffer, answerBytes: number): void => {
    setResponseBytes(res, res.req.method === 'HEAD' ? 0 : answerBytes);
    res.end(answer);
  };
  if (bytes < GZIP_MIN_BYTES || !mayCompress) return end(text, bytes);
  // Whether compressed or not depends on Accept-Encoding from here on: tell caches.
  res.setHeader('Vary', 'Accept-Encoding');
  if (res.req.method === 'HEAD' || accepts(res.req).encodings('gzip', 'identity') !== 'gzip') return end(text, bytes);
  gzipAsync(text).then(
    (compressed) => {
      if (res.headersSent || (res as Flagged)[FLAGS]?.timedOut === true) return;
      res.setHeader('Content-Encoding', 'gzip');
      end(compressed, compressed.length);
    },
    () => {
      if (!res.headersSent) end(text, bytes);
    },
  );
}

/** `If-None-Match` against our ETag: exact, weak or listed matches all count (RFC 9110 weak comparison). */
function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  const bare = (tag: string): string => tag.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
  const ours = bare(etag);
  return header.split(',').some((candidate) => candidate.trim() === '*' || bare(candidate) === ours);
}

/** Request ids: a per-process random prefix and a counter — unique, and cheap on the hot path. */
function requestIdGenerator(): () => string {
  const prefix = randomBytes(5).toString('hex');
  let counter = 0;
  return () => `${prefix}${(counter++).toString(36).padStart(6, '0')}`;
}
