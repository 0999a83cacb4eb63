/**
 * The storm's baseline extension: what an author would write for the storm's two actions
 * (`bench.wait`, `bench.wait-expiring`) with everything on the main thread — the same answers the
 * storm reads from the runtime, each execution's body a promise awaiting its stop, the author's
 * stop appending one line to `BENCH_STOP_LOG`, duplicate stops sharing the first one's answer, a
 * heartbeat watchdog on a main-thread timer, SIGUSR1 stopping everything. No worker thread, no
 * shared memory, no validation of the requests (the runtime validates every one): about the least
 * an extension that passes the storm does per request, so the storm's rate against it is close to
 * what one thread of the machine does, measured in the same run.
 *
 * Its HTTP layer is the caller's (`baseline-server.ts` mounts {@link InlineStorm.handle} on bare
 * `node:http` and on express).
 */
import { appendFileSync } from 'node:fs';
import { heartbeatExpiryMs } from '../src/config.js';

/** Status call intervals of the storm's actions (`bench/actions/wait*.ts`), in ms. */
const CALL_INTERVAL_MS: Record<string, number> = { 'bench.wait': 60_000, 'bench.wait-expiring': 250 };
/** The storm's `ACTIONKIT_HEARTBEAT_MIN_INTERVAL`. */
const MIN_INTERVAL_MS = 250;
/**
 * The watchdog's scan period. The expiry itself is the runtime's (the reference's rule, 1,050 ms
 * after the last status for the 250 ms action); the runtime scans every 12 ms on a thread of its
 * own, this one on the main thread every 100 ms, so it fires up to 100 ms later.
 */
const WATCHDOG_TICK_MS = 100;

export interface InlineAnswer {
  status: number;
  body: Record<string, unknown>;
}

interface Execution {
  id: string;
  expiryMs: number;
  lastStatusMs: number;
  abort: AbortController;
  bodyEnded: Promise<void>;
  /** Set once, by the first stop of any kind: every later stop shares it. */
  stop?: { reason: string; done: Promise<void> };
}

export class InlineStorm {
  private readonly executions = new Map<string, Execution>();
  private active = 0;
  private heartbeatTimeouts = 0;

  /** Serves until the process ends (the bench stops it with SIGTERM). */
  constructor(private readonly stopLog: string | undefined) {
    setInterval(() => this.expireHeartbeats(), WATCHDOG_TICK_MS);
    process.on('SIGUSR1', () => {
      for (const execution of this.executions.values()) this.beginStop(execution, 'received signal SIGUSR1');
    });
  }

  /** Counters in the shape the storm reads from the runtime's `stats()`. */
  stats() {
    return { activeExecutions: this.active, watchdog: { heartbeatTimeouts: this.heartbeatTimeouts } };
  }

  /** One request: `/<action>/<endpoint>` with its parsed JSON body. */
  handle(path: string, body: Record<string, unknown>): InlineAnswer | Promise<InlineAnswer> {
    const [, action = '', endpoint] = path.split('/');
    const intervalMs = CALL_INTERVAL_MS[action];
    const id = String(body['executionId']);
    if (intervalMs === undefined) return { status: 404, body: { title: `no action ${action}` } };
    switch (endpoint) {
      case 'prepare': {
        const config = (body['config'] ?? {}) as Record<string, unknown>;
        return { status: 200, body: { state: { burn: config['burn'] !== false, dutyPct: 100 } } };
      }
      case 'start':
        return this.start(id, intervalMs);
      case 'status':
        return this.status(id);
      case 'stop':
        return this.agentStop(id);
      default:
        return { status: 404, body: { title: `no endpoint ${path}` } };
    }
  }

  private start(id: string, intervalMs: number): InlineAnswer {
    if (this.executions.has(id)) return { status: 409, body: { title: `execution ${id} already started` } };
    const abort = new AbortController();
    const bodyEnded = new Promise<void>((resolve) => abort.signal.addEventListener('abort', () => resolve(), { once: true }));
    this.executions.set(id, { id, expiryMs: heartbeatExpiryMs(intervalMs, MIN_INTERVAL_MS), lastStatusMs: performance.now(), abort, bodyEnded });
    this.active++;
    return { status: 200, body: {} };
  }

  private status(id: string): InlineAnswer {
    const execution = this.executions.get(id);
    if (execution === undefined) return { status: 200, body: { completed: true, error: { title: `unknown execution ${id}`, status: 'errored' } } };
    execution.lastStatusMs = performance.now();
    const { stop } = execution;
    if (stop === undefined) return { status: 200, body: { completed: false } };
    if (stop.reason === 'agent') return { status: 200, body: { completed: true } };
    return { status: 200, body: { completed: true, error: { title: `Action was stopped by extension: ${stop.reason}`, status: 'errored' } } };
  }

  private async agentStop(id: string): Promise<InlineAnswer> {
    const execution = this.executions.get(id);
    if (execution === undefined) return { status: 200, body: {} };
    const { reason, done } = this.beginStop(execution, 'agent');
    await done;
    return reason === 'agent' ? { status: 200, body: {} } : { status: 200, body: { error: { title: `Action was stopped by extension ${reason}` } } };
  }

  /** The first stop of `execution` ends its body, then runs the author's stop once; later ones get the same. */
  private beginStop(execution: Execution, reason: string): { reason: string; done: Promise<void> } {
    if (execution.stop !== undefined) return execution.stop;
    execution.abort.abort();
    const done = execution.bodyEnded.then(() => {
      if (this.stopLog !== undefined) appendFileSync(this.stopLog, `${execution.id}\n`);
      this.active--;
    });
    execution.stop = { reason, done };
    return execution.stop;
  }

  private expireHeartbeats(): void {
    const now = performance.now();
    for (const execution of this.executions.values()) {
      if (execution.stop === undefined && now - execution.lastStatusMs >= execution.expiryMs) {
        this.heartbeatTimeouts++;
        this.beginStop(execution, 'heartbeat timeout');
      }
    }
  }
}
