/**
 * Health probes, as the reference (§2.2): `/health/liveness` and `/health/readiness` answer 200
 * or 503 on their own port (`STEADYBIT_EXTENSION_HEALTH_PORT`), any method; on a unix socket they
 * answer on the extension's server instead.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/** The state the probes report. */
export interface ProbeState {
  /** False while stopping everything on a signal, and after shutdown began. */
  ready(): boolean;
  /** False when a core thread died (watchdog) or the stop coordinator is stuck. */
  alive(): boolean;
}

/** A plain HTTP server for the probes (no express: it must answer even when everything else is busy). */
export function createProbeServer(state: ProbeState): Server {
  const probes = probeHandler(state);
  return createServer((req, res) => {
    if (probes(req, res)) return;
    const path = (req.url ?? '').split('?')[0];
    res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify({ title: `Not found: ${path}` }));
  });
}

/**
 * Answers a probe request and returns true, or returns false for any other path. On a unix socket
 * the probes have no port of their own and join the extension's server through this (reference §2.2).
 */
export function probeHandler(state: ProbeState): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    const healthy = path === '/health/liveness' ? state.alive() : path === '/health/readiness' ? state.ready() : undefined;
    if (healthy === undefined) return false;
    res
      .writeHead(healthy ? 200 : 503, { 'Content-Type': 'application/json' })
      .end(JSON.stringify(healthy ? { status: 'UP' } : { title: 'Service Unavailable' }));
    return true;
  };
}
