/**
 * Worker of the postMessage baseline: a CPU-bound computation that checks a flag its `message`
 * handler would set. The handler cannot run while the computation holds the thread, which is the
 * point being measured: the stop is seen only when the loop ends by itself.
 */
import { parentPort } from 'node:worker_threads';
import { burnWindow, nowUs, WINDOW_MS } from '../workload.js';

export type BusyRequest = { op: 'compute'; busyMs: number } | { op: 'stop' };
export type BusyReply = { started: number } | { observedAtUs: number } | { finishedAtUs: number };

let stopRequested = false;
parentPort!.on('message', (request: BusyRequest) => {
  if (request.op === 'stop') {
    stopRequested = true;
    parentPort!.postMessage({ observedAtUs: nowUs() } satisfies BusyReply);
    return;
  }
  stopRequested = false;
  parentPort!.postMessage({ started: nowUs() } satisfies BusyReply);
  const until = performance.now() + request.busyMs;
  while (!stopRequested && performance.now() < until) burnWindow(WINDOW_MS, () => stopRequested);
  parentPort!.postMessage({ finishedAtUs: nowUs() } satisfies BusyReply);
});
