/**
 * piscina task file of the kill baseline: `spin` burns CPU forever and can only be ended by
 * terminating its worker (piscina's AbortSignal); `now` answers with the time it began to run, so
 * the bench sees when a replacement worker is serving again.
 */
import { burnWindow, nowUs, WINDOW_MS } from '../workload.js';

export type KillTask = { op: 'spin'; started: Int32Array } | { op: 'now' };

export default function run(task: KillTask): number {
  if (task.op === 'now') return nowUs();
  Atomics.store(task.started, 0, 1);
  Atomics.notify(task.started, 0);
  for (;;) burnWindow(WINDOW_MS, () => false);
}
