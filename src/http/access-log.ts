/**
 * One access-log line and one HTTP metric observation per request, written when the answer has
 * been sent — or when the connection closed first (client gave up): `finish` and `close` both
 * fire for a normal answer, and a guard makes the second a no-op, so the line is written exactly
 * once either way.
 *
 * Levels (the reference logs GETs at debug and everything else at info; an agent polls status
 * every second per execution, which at info would drown everything else):
 * - `warn`: answers ≥ 500 (the failure itself is logged separately with its cause) and requests
 *   the client abandoned before the answer was complete;
 * - `info`: other 4xx, and successful prepare, start and stop calls — the lifecycle events;
 * - `debug`: successful GETs and the polling endpoints (status, metric query).
 *
 * What is never logged at all: headers (Authorization, Cookie and the like are also redacted by
 * the logger in case a caller logs headers), query strings (only the path is logged), response
 * bodies. Request bodies are logged only at debug, in a separate line, and only JSON bodies: a
 * multipart upload's file content never reaches the log.
 */
import type { Request, RequestHandler, Response } from 'express';
import type { Logger } from '../logging.js';
import { UNMATCHED_ROUTE, type ExtensionMetrics } from '../metrics.js';

/** What the access log needs. */
export interface AccessLogDeps {
  logger: Logger;
  metrics: Pick<ExtensionMetrics, 'observeHttp'>;
  /** Routes the agent polls (status, metric query): successful answers are logged at debug. */
  pollingRoutes: ReadonlySet<string>;
}

/**
 * Status recorded for a request whose client closed the connection before any answer was sent
 * (nginx's convention; never sent on the wire).
 */
export const CLIENT_CLOSED_STATUS = 499;

/** Where the route middleware leaves the matched route template for the access log. */
interface AccessLocals {
  route?: string;
}

/** Mark the route template `res`'s request matched (the metric's bounded `route` label). */
export function setRoute(res: Response, route: string): void {
  (res.locals as AccessLocals).route = route;
}

/**
 * The access-log middleware. Install it after the one that sets `Request-Id`, before anything
 * answers. It counts the bytes given to `res.write`/`res.end` — after gzip, which happens before
 * them — so `resBytes` is the body as it went over the wire (headers not included).
 */
export function accessLog(deps: AccessLogDeps): RequestHandler {
  const { logger, metrics, pollingRoutes } = deps;
  return (req, res, next) => {
    const startedMs = performance.now();
    let resBytes = 0;
    const write = res.write as (...args: unknown[]) => boolean;
    const end = res.end as (...args: unknown[]) => Response;
    res.write = ((chunk: unknown, ...rest: unknown[]) => {
      resBytes += byteLength(chunk, rest[0]);
      return write.call(res, chunk, ...rest);
    }) as Response['write'];
    res.end = ((chunk?: unknown, ...rest: unknown[]) => {
      resBytes += byteLength(chunk, rest[0]);
      return end.call(res, chunk, ...rest);
    }) as Response['end'];

    let logged = false;
    const done = (): void => {
      if (logged) return;
      logged = true;
      const seconds = (performance.now() - startedMs) / 1000;
      const aborted = !res.writableFinished;
      const status = aborted && !res.headersSent ? CLIENT_CLOSED_STATUS : res.statusCode;
      const route = (res.locals as AccessLocals).route;
      metrics.observeHttp(route ?? UNMATCHED_ROUTE, req.method, status, seconds);
      const level = levelOf(req, status, aborted, route !== undefined && pollingRoutes.has(route));
      if (!logger.isLevelEnabled(level)) return;
      const requestId = res.getHeader('Request-Id');
      if (req.body !== undefined && logger.isLevelEnabled('debug')) logger.debug({ requestId, body: req.body as unknown }, 'request body');
      const line: Record<string, unknown> = {
        requestId,
        method: req.method,
        path: req.path,
        status,
        durationMs: Math.round(seconds * 1e6) / 1000,
        reqBytes: requestBytes(req),
        resBytes,
      };
      if (aborted) line['aborted'] = true;
      logger[level](line, aborted ? 'request abandoned by the client' : 'request');
    };
    res.once('finish', done);
    res.once('close', done);
    next();
  };
}

function levelOf(req: Request, status: number, aborted: boolean, polling: boolean): 'debug' | 'info' | 'warn' {
  if (aborted || status >= 500) return 'warn';
  if (status >= 400) return 'info';
  return req.method === 'GET' || req.method === 'HEAD' || polling ? 'debug' : 'info';
}

/** The declared body size (`Content-Length`); 0 without a body; undefined when chunked. */
function requestBytes(req: Request): number | undefined {
  const declared = req.headers['content-length'];
  if (declared !== undefined) {
    const bytes = Number(declared);
    return Number.isSafeInteger(bytes) && bytes >= 0 ? bytes : undefined;
  }
  return req.headers['transfer-encoding'] === undefined ? 0 : undefined;
}

function byteLength(chunk: unknown, encoding: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  if (chunk instanceof Uint8Array) return chunk.byteLength;
  return 0;
}
