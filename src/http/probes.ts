/**
 * Health probes, as the reference (§2.2): `/health/liveness` and `/health/readiness` answer 200
 * or 503 on their own port (`STEADYBIT_EXTENSION_HEALTH_PORT`), any method.
 */
import { createServer, type Server } from 'node:http';

/** The state the probes report. */
export interface ProbeState {
  /** False while stopping everything on a signal, and after shutdown began. */
  ready(): boolean;
  /** False when a core thread died (watchdog) or the stop coordinator is stuck. */
  alive(): boolean;
}

/** A plain HTTP server for the probes (no express: it must answer even when everything else is busy). */
export function createProbeServer(state: ProbeState): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    const healthy = path === '/health/liveness' ? state.alive() : path === '/health/readiness' ? state.ready() : undefined;
    if (healthy === undefined) {
      res.writeHead(404, { 'Content-Type': 'application/json' }).end(JSON.stringify({ title: `Not found: ${path}` }));
      return;
    }
    res
      .writeHead(healthy ? 200 : 503, { 'Content-Type': 'application/json' })
      .end(JSON.stringify(healthy ? { status: 'UP' } : { title: 'Service Unavailable' }));
  });
}
