/**
 * The heartbeat watchdog: its own thread, so a busy main event loop can neither delay nor
 * accelerate heartbeat expiry. Each tick it makes one pass over the control table
 * ({@link ControlTable.scanHeartbeats}) — O(active executions), no timer per execution — and
 * requests a `heartbeat timeout` stop through the same entry point as every other trigger. It
 * sleeps in `Atomics.wait` (it has no event loop work), and exits when the main thread clears the
 * RUN word.
 */
import { workerData } from 'node:worker_threads';
import { ControlTable, clockMs } from '../src/shm/table.js';

interface WatchdogData {
  buffer: SharedArrayBuffer;
}

const table = ControlTable.attach((workerData as WatchdogData).buffer);

while (table.watchdogShouldRun()) {
  const startedAt = performance.now();
  table.scanHeartbeats(clockMs());
  table.recordScan((performance.now() - startedAt) * 1_000_000);
  table.watchdogSleep(table.watchdogTickMs());
}
