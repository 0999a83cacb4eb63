/**
 * Health probes, as the reference (§2.2): `/health/liveness` and `/health/readiness` answer 200
 * or 503 on their own port (`STEADYBIT_EXTENSION_HEALTH_PORT`), any method; on a unix socket they
 * answer on the extension's server instead. Next to them, `GET /metrics` (Prometheus text format),
 * so operators scrape where they already probe and the agent-facing port carries only the
 * ActionKit API.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../logging.js';
import { limitConnections, type ConnectionGuard, type ShedReason } from './connections.js';

/** The state the probes report. */
export interface ProbeState {
  /** False while stopping everything on a signal, and after shutdown began. */
  ready(): boolean;
  /** False when a core thread died (the heartbeat watchdog). */
  alive(): boolean;
}

/** A source of Prometheus text (see `src/metrics.ts`). */
export interface MetricsEndpoint {
  readonly contentType: string;
  scrape(): Promise<string>;
}

/**
 * Open connections the probe server keeps. Kubelet opens one connection per probe and Prometheus
 * one per scrape target: a few at a time. The cap (which sheds the slowest, `./connections.ts`)
 * keeps slow clients on the probe port from using up the file descriptors the API needs.
 */
export const PROBE_MAX_CONNECTIONS = 256;

/** What the probe server needs besides the state. */
export interface ProbeServerOptions {
  metrics?: MetricsEndpoint;
  logger: Logger;
  /** Called for every connection shed at {@link PROBE_MAX_CONNECTIONS} (metrics). */
  onShed?: (reason: ShedReason) => void;
}

/** A plain HTTP server for the probes (no express: it must answer even when everything else is busy). */
export function createProbeServer(state: ProbeState, options: ProbeServerOptions): { server: Server; connections: ConnectionGuard } {
  const probes = probeHandler(state, options.metrics);
  const server = createServer((req, res) => {
    if (probes(req, res)) return;
    const path = (req.url ?? '').split('?')[0];
    res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify({ title: `Not found: ${path}` }));
  });
  const connections = limitConnections(server, { maxConnections: PROBE_MAX_CONNECTIONS, name: 'probes', logger: options.logger, onShed: options.onShed });
  return { server, connections };
}

/**
 * Answers a probe (or `/metrics`) request and returns true, or returns false for any other path.
 * On a unix socket the probes have no port of their own and join the extension's server through
 * this (reference §2.2).
 */
export function probeHandler(state: ProbeState, metrics?: MetricsEndpoint): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/metrics' && metrics !== undefined) {
      serveMetrics(req.method ?? 'GET', res, metrics);
      return true;
    }
    const healthy = path === '/health/liveness' ? state.alive() : path === '/health/readiness' ? state.ready() : undefined;
    if (healthy === undefined) return false;
    res
      .writeHead(healthy ? 200 : 503, { 'Content-Type': 'application/json' })
      .end(JSON.stringify(healthy ? { status: 'UP' } : { title: 'Service Unavailable' }));
    return true;
  };
}

function serveMetrics(method: string, res: ServerResponse, metrics: MetricsEndpoint): void {
  if (method !== 'GET' && method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'application/json' }).end(JSON.stringify({ title: `Method ${method} not allowed for /metrics` }));
    return;
  }
  metrics.scrape().then(
    (text) => res.writeHead(200, { 'Content-Type': metrics.contentType, 'Content-Length': Buffer.byteLength(text) }).end(method === 'HEAD' ? undefined : text),
    (error: unknown) =>
      res.writeHead(500, { 'Content-Type': 'application/json' }).end(JSON.stringify({ title: 'Could not collect metrics', detail: error instanceof Error ? error.message : String(error) })),
  );
}
