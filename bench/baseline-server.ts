/**
 * Bench child: the baselines an author would write with express alone, on the same machine, in
 * the same run as the runtime.
 *
 * - `echo` (BENCH_BASELINE=echo): answers the status route with the exact JSON the runtime
 *   answered (BENCH_ECHO_BODY) — the floor for the HTTP overhead scenario.
 * - `node-http` (BENCH_BASELINE=node-http): the same answer from bare `node:http`, doing the same
 *   work per request (read the body, `JSON.parse` it, `JSON.stringify` the answer) — what one
 *   thread of this machine can do at all.
 * - `inline` (BENCH_BASELINE=inline): the spin action's endpoints with its body run on the main
 *   thread, burning the same loop in the same 100 ms windows and yielding to the event loop
 *   between windows.
 * - `storm-node-http` and `storm-express`: the storm's actions written inline
 *   (`inline-storm.ts`), served by bare `node:http` (the machine's limit for the storm) and by
 *   express (what an author writing with express alone gets).
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { InlineStorm } from './inline-storm.js';
import { serveParent } from './ipc.js';
import { burnWindow, WINDOW_MS } from './workload.js';

const mode = process.env['BENCH_BASELINE'];
const app = express();
app.use(express.json());

/** A JSON answer with its length, as both bare `node:http` baselines write it. */
function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** A bare `node:http` server that reads each request's body whole and parses it (400 when it is not JSON). */
function bareJsonServer(handle: (req: IncomingMessage, body: unknown, res: ServerResponse) => void): Server {
  const created = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return sendJson(res, 400, { title: 'the request body is not JSON' });
      }
      handle(req, body, res);
    });
  });
  created.listen(0, '127.0.0.1');
  return created;
}

let bare: Server | undefined;
let storm: InlineStorm | undefined;
if (mode === 'storm-node-http' || mode === 'storm-express') {
  const inline = new InlineStorm(process.env['BENCH_STOP_LOG']);
  storm = inline;
  const answer = (path: string, body: unknown, res: ServerResponse): void => {
    const handled = inline.handle(path, (body ?? {}) as Record<string, unknown>);
    if (handled instanceof Promise) void handled.then((settled) => sendJson(res, settled.status, settled.body));
    else sendJson(res, handled.status, handled.body);
  };
  if (mode === 'storm-node-http') bare = bareJsonServer((req, body, res) => answer(req.url ?? '/', body, res));
  else app.post('/:action/:endpoint', (req, res) => answer(req.path, req.body, res));
} else if (mode === 'node-http') {
  const body = JSON.parse(process.env['BENCH_ECHO_BODY'] ?? 'null') as unknown;
  bare = bareJsonServer((_req, _body, res) => sendJson(res, 200, body));
} else if (mode === 'echo') {
  const body = JSON.parse(process.env['BENCH_ECHO_BODY'] ?? 'null') as unknown;
  app.post('/bench.spin/status', (_req, res) => void res.json(body));
} else if (mode === 'inline') {
  const stopped = new Map<string, boolean>();
  const burn = (executionId: string): void => {
    if (stopped.get(executionId) !== false) return;
    burnWindow(WINDOW_MS, () => stopped.get(executionId) !== false);
    setImmediate(burn, executionId);
  };
  app.post('/bench.spin/prepare', (req, res) => void res.json({ state: { burn: req.body?.config?.burn !== false } }));
  app.post('/bench.spin/start', (req, res) => {
    const executionId = String(req.body?.executionId);
    stopped.set(executionId, false);
    if (req.body?.state?.burn !== false) setImmediate(burn, executionId);
    res.json({});
  });
  app.post('/bench.spin/status', (_req, res) => void res.json({ completed: false }));
  app.post('/bench.spin/stop', (req, res) => {
    stopped.set(String(req.body?.executionId), true);
    res.json({});
  });
} else {
  throw new Error(`BENCH_BASELINE must be echo, node-http, inline, storm-node-http or storm-express, got ${String(mode)}`);
}

const server = bare ?? app.listen(0, '127.0.0.1');
// Idle keep-alive connections stay open between a scenario's phases, as the runtime's do.
server.keepAliveTimeout = 120_000;
await once(server, 'listening');
serveParent(
  { port: (server.address() as AddressInfo).port, pid: process.pid },
  { cpuUsage: () => process.cpuUsage(), ...(storm === undefined ? {} : { stats: () => storm.stats() }) },
);
process.once('SIGTERM', () => process.exit(0));
