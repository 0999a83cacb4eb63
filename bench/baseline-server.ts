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
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { InlineStorm, type InlineAnswer } from './inline-storm.js';
import { serveParent } from './ipc.js';
import { mainThreadCpuUs } from './thread-cpu.js';
import { burnWindow, WINDOW_MS } from './workload.js';

const mode = process.env['BENCH_BASELINE'];
const app = express();
app.use(express.json());

let bare: Server | undefined;
let storm: InlineStorm | undefined;
if (mode === 'storm-node-http' || mode === 'storm-express') {
  const inline = new InlineStorm(process.env['BENCH_STOP_LOG']);
  storm = inline;
  const send = (res: ServerResponse, answer: InlineAnswer): void => {
    const text = JSON.stringify(answer.body);
    res.writeHead(answer.status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  };
  const answer = (path: string, body: unknown, res: ServerResponse): void => {
    const handled = inline.handle(path, (body ?? {}) as Record<string, unknown>);
    if (handled instanceof Promise) void handled.then((settled) => send(res, settled));
    else send(res, handled);
  };
  if (mode === 'storm-node-http') {
    bare = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          return send(res, { status: 400, body: { title: 'the request body is not JSON' } });
        }
        answer(req.url ?? '/', body, res);
      });
    });
    bare.listen(0, '127.0.0.1');
  } else {
    app.post('/:action/:endpoint', (req, res) => answer(req.path, req.body, res));
  }
} else if (mode === 'node-http') {
  const body = JSON.parse(process.env['BENCH_ECHO_BODY'] ?? 'null') as unknown;
  bare = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const text = JSON.stringify(body);
      res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  bare.listen(0, '127.0.0.1');
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
  { cpuUsage: () => process.cpuUsage(), mainThreadCpuUs, ...(storm === undefined ? {} : { stats: () => storm.stats() }) },
);
process.once('SIGTERM', () => process.exit(0));
