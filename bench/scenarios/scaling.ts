/**
 * scaling: what one stop and one heartbeat scan cost as active executions grow 100 → 1,000 →
 * 10,000. At each level: the watchdog's scan cost (its own counters over one second of scans),
 * the server's RSS, and the wall time of a batch of agent stops (fixed concurrency) per stop.
 * The stopped batch is replaced before the next level, so each level has exactly that many
 * executions active.
 */
import { round } from '../stats.js';
import { setupExecutions, sleep, startLoad, startServer, type AgentExecution, type BenchSize } from './common.js';

export interface ScalingPoint {
  active: number;
  usPerStop: number;
  watchdogUsPerScan: number;
  rssMiB: number;
  /** Extra detail. */
  stopsMeasured: number;
  scansMeasured: number;
}

const STOP_BATCH = 1_000;
const STOP_CONCURRENCY = 32;
const SCAN_WINDOW_MS = 1_000;

export async function scaling(size: BenchSize): Promise<ScalingPoint[]> {
  const levels = size.quick ? [100, 1_000] : [100, 1_000, 10_000];
  const server = await startServer({
    ACTIONKIT_MAX_EXECUTIONS: String(Math.max(...levels) + STOP_BATCH),
    // A 1 s minimum makes the watchdog tick every 50 ms: enough scans in a one-second window.
    ACTIONKIT_HEARTBEAT_MIN_INTERVAL: '1s',
  });
  const load = await startLoad();
  const points: ScalingPoint[] = [];
  let active: AgentExecution[] = [];
  try {
    for (const level of levels) {
      const { executions } = await setupExecutions(load, server.base, [{ action: 'bench.wait', burn: false, count: level - active.length }]);
      active = active.concat(executions);
      const before = await server.stats();
      if (before.activeExecutions !== level) throw new Error(`scaling: expected ${level} active executions, the server has ${before.activeExecutions}`);
      await sleep(SCAN_WINDOW_MS);
      const after = await server.stats();
      const scans = after.watchdog.scans - before.watchdog.scans;
      const scanNanos = (after.watchdog.scanNanosWrapping - before.watchdog.scanNanosWrapping) >>> 0;

      const batch = active.slice(0, Math.min(STOP_BATCH, level));
      const stopped = await load.call<{ elapsedMs: number; failures: string[] }>('stopBatch', { base: server.base, executions: batch, concurrency: STOP_CONCURRENCY });
      if (stopped.failures.length > 0) throw new Error(`scaling: ${stopped.failures.length} stops failed, e.g. ${stopped.failures[0]}`);
      active = active.slice(batch.length);
      points.push({
        active: level,
        usPerStop: round((stopped.elapsedMs * 1000) / batch.length),
        watchdogUsPerScan: round(scanNanos / 1000 / Math.max(scans, 1), 2),
        rssMiB: round(after.rssBytes / 1_048_576),
        stopsMeasured: batch.length,
        scansMeasured: scans,
      });
    }
    return points;
  } finally {
    await load.stop();
    await server.stop();
  }
}
