/**
 * One access-log line and one HTTP metric observation per request, written when the response
 * closes: after the answer was sent, or when the client gave up first.
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
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request } from 'express';
import type { Logger } from '../logging.js';
import { UNMATCHED_ROUTE, type ExtensionMetrics } from '../metrics.js';
import { onExchangeEnd } from './exchange.js';

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

/** What the app notes on a response for the access log (under a symbol: plain `node:http` responses have no `res.locals`). */
interface AccessNotes {
  /** The matched route template (the metric's bounded `route` label). */
  route?: string;
  /** Body bytes of the answer as sent (after gzip). */
  resBytes?: number;
}
const NOTES = Symbol('accessLog');
type Noted = ServerResponse & { [NOTES]?: AccessNotes };

function notesOf(res: ServerResponse): AccessNotes {
  const noted = res as Noted;
  return (noted[NOTES] ??= {});
}

/** Mark the route template `res`'s request matched. */
export function setRoute(res: ServerResponse, route: string): void {
  notesOf(res).route = route;
}

/** Record the size of the answer's body as it goes on the wire (the app's one writer calls this). */
export function setResponseBytes(res: ServerResponse, bytes: number): void {
  notesOf(res).resBytes = bytes;
}

/**
 * The access log: `observe(req, res, path)` once per request, before anything answers, with the
 * request's path (without its query). It waits for the end of the exchange (`./exchange.ts`): the
 * response's `close` — after `finish` when the answer was complete, alone when the client went away
 * first — or the connection's, so the line is written exactly once either way. The answer's size comes from the
 * app's writer ({@link setResponseBytes}), not from wrapping `res.write`/`res.end` on every request.
 */
export function accessLogger(deps: AccessLogDeps): (req: IncomingMessage, res: ServerResponse, path: string) => void {
  const { logger, metrics, pollingRoutes } = deps;
  return (req, res, path) => {
    const startedMs = performance.now();
    onExchangeEnd(req, res, () => {
      const seconds = (performance.now() - startedMs) / 1000;
      const aborted = !res.writableFinished;
      // An answer queued behind an earlier one on its connection never had a socket: nothing of it was sent.
      const sent = res.headersSent && res.socket !== null;
      const status = aborted && !sent ? CLIENT_CLOSED_STATUS : res.statusCode;
      const notes = (res as Noted)[NOTES] ?? {};
      const route = notes.route ?? routerRoute(req as Partial<Request>);
      const method = req.method ?? '';
      metrics.observeHttp(route ?? UNMATCHED_ROUTE, method, status, seconds);
      const level = levelOf(method, status, aborted, notes.route !== undefined && pollingRoutes.has(notes.route));
      if (!logger.isLevelEnabled(level)) return;
      const requestId = res.getHeader('Request-Id');
      const body = (req as { body?: unknown }).body;
      if (body !== undefined && logger.isLevelEnabled('debug')) logger.debug({ requestId, body }, 'request body');
      const line: Record<string, unknown> = {
        requestId,
        method,
        path,
        status,
        durationMs: Math.round(seconds * 1e6) / 1000,
        reqBytes: requestBytes(req),
        resBytes: aborted ? 0 : (notes.resBytes ?? declaredResponseBytes(res)),
      };
      if (aborted) line['aborted'] = true;
      logger[level](line, aborted ? 'request abandoned by the client' : 'request');
    });
  };
}

function levelOf(method: string, status: number, aborted: boolean, polling: boolean): 'debug' | 'info' | 'warn' {
  if (aborted || status >= 500) return 'warn';
  if (status >= 400) return 'info';
  return method === 'GET' || method === 'HEAD' || polling ? 'debug' : 'info';
}

/**
 * The route template an author's router matched (`/discovery/:id`, with the router's mount path),
 * so the metric's `route` label stays bounded; undefined when no route of theirs matched.
 */
function routerRoute(req: Partial<Request>): string | undefined {
  const path = (req.route as { path?: unknown } | undefined)?.path;
  return path === undefined ? undefined : `${req.baseUrl}${String(path)}`;
}

/** What an answer the app did not write itself (an author's router) declared as its size. */
function declaredResponseBytes(res: ServerResponse): number {
  const bytes = Number(res.getHeader('content-length'));
  return Number.isSafeInteger(bytes) && bytes >= 0 ? bytes : 0;
}

/** The declared body size (`Content-Length`); 0 without a body; undefined when chunked. */
function requestBytes(req: IncomingMessage): number | undefined {
  const declared = req.headers['content-length'];
  if (declared !== undefined) {
    const bytes = Number(declared);
    return Number.isSafeInteger(bytes) && bytes >= 0 ? bytes : undefined;
  }
  return req.headers['transfer-encoding'] === undefined ? 0 : undefined;
}
