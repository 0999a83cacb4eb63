/**
 * Entry of a body thread: lower the thread's priority first — before loading the runtime and the
 * action modules, the costly part of its boot — then load the body runner (`./body-runner.ts`).
 * On Linux a nice value is per thread: only this body thread yields, so CPU-bound bodies leave the
 * HTTP thread, the handlers and the watchdog first in line when cores are oversubscribed.
 */
import { setPriority } from 'node:os';
import { workerData } from 'node:worker_threads';

const { nice } = workerData as { nice: number };
if (nice > 0) {
  try {
    setPriority(0, nice);
  } catch {
    // The runner sees the priority it got and logs it.
  }
}
await import('./body-runner.js');
