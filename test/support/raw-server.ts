/**
 * A hand-written "extension" on plain `node:http` for tests of the agent client and `actionkit
 * check` against servers that are not this runtime — including broken ones. Every request is
 * recorded (method, path, headers, raw body) and answered by the route's function.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A recorded request. */
export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** `performance.now()` when it arrived. */
  atMs: number;
}

/** What a route answers: JSON unless `contentType` says otherwise (then `body` is sent as text). */
export interface RawReply {
  status?: number;
  body: unknown;
  contentType?: string;
}

/** Route key `METHOD /path` → answer. */
export type RawRoutes = Record<string, (request: RecordedRequest) => RawReply>;

/** A running raw server. */
export interface RawServer {
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/** Serve `routes` on 127.0.0.1, port 0. Unknown routes answer 404 with an ActionKitError. */
export function rawServer(routes: RawRoutes): Promise<RawServer> {
  const requests: RecordedRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const recorded: RecordedRequest = { method: req.method ?? '', path: req.url ?? '/', headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), atMs: performance.now() };
      requests.push(recorded);
      const route = routes[`${recorded.method} ${recorded.path}`];
      const reply: RawReply = route === undefined ? { status: 404, body: { title: `no route ${recorded.method} ${recorded.path}` } } : route(recorded);
      const text = reply.contentType === undefined ? JSON.stringify(reply.body) : String(reply.body);
      res.writeHead(reply.status ?? 200, { 'content-type': reply.contentType ?? 'application/json' }).end(text);
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        requests,
        close: () => {
          server.closeAllConnections();
          return new Promise<void>((done) => server.close(() => done()));
        },
      }),
    ),
  );
}

/** The JSON body of a recorded request (throws when it is not JSON). */
export function jsonOf(request: RecordedRequest): Record<string, unknown> {
  return JSON.parse(request.body) as Record<string, unknown>;
}
