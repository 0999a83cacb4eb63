/**
 * The heartbeat watchdog: its own thread, so a busy main event loop can neither delay nor
 * accelerate heartbeat expiry. Each tick it makes one pass of {@link WatchdogRule}: if the main
 * thread is live, one scan over the control table ({@link ControlTable.scanHeartbeats}) —
 * O(active executions), no timer per execution — requesting a `heartbeat timeout` stop through the
 * same entry point as every other trigger; if the main thread is stalled (or the process was just
 * frozen), no judgement until it reads requests again (the rule and its bounds:
 * `src/shm/watchdog-rule.ts`). It sleeps in `Atomics.wait` (it has no event loop work), and exits
 * when the main thread clears the RUN word.
 */
import { workerData } from 'node:worker_threads';
import { ControlTable, clockMs } from '../src/shm/table.js';
import { WatchdogRule } from '../src/shm/watchdog-rule.js';

interface WatchdogData {
  buffer: SharedArrayBuffer;
}

const table = ControlTable.attach((workerData as WatchdogData).buffer);
const rule = new WatchdogRule(table, table.watchdogTickMs());

while (table.watchdogShouldRun()) {
  const startedAt = performance.now();
  if (rule.pass(clockMs()).judged) table.recordScan((performance.now() - startedAt) * 1_000_000);
  table.watchdogSleep(table.watchdogTickMs());
}
