/**
 * stopLatency: from a stop request to the CPU-bound body observing it, three ways, same run:
 *
 * - sab: the runtime. A real agent stop over HTTP; the figure is the runtime's own
 *   stop-request (winning CAS on the control word) → body-ended time, which the stop handler
 *   returns. The body checks `ctx.shouldStop()` (one `Atomics.load`) every few µs of work. The
 *   client-side figure (stop sent by the load process → body observed, same monotonic clock,
 *   includes HTTP) is reported beside it.
 * - kill: raw piscina, the way to cancel a task that never looks at a flag: abort its
 *   AbortSignal, piscina terminates the worker; measured until a replacement worker runs the next
 *   task (the respawn is part of the cost: until then the pool has no thread).
 * - postMessage: a stop message to a worker busy computing; it is seen only when the
 *   computation ends by itself. Reported as the share observed within 1 s.
 */
import { Worker } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { quantile, round } from '../stats.js';
import { nowUs } from '../workload.js';
import type { BusyReply, BusyRequest } from '../workers/busy-worker.js';
import type { KillTask } from '../workers/kill-task.js';
import { sleep, startLoad, startServer, type BenchSize } from './common.js';

export interface StopLatencyResult {
  sabP50Us: number;
  sabP99Us: number;
  killP50Us: number;
  killP99Us: number;
  postMessageObservedPct: number;
  killOverSab: number;
  /** Extra detail. */
  sabSamples: number;
  killSamples: number;
  postMessageSamples: number;
  /** Load process sent the stop → body observed it (includes the HTTP request). */
  httpStopToObservedP50Us: number;
  httpStopToObservedP99Us: number;
  postMessageP50Us: number;
  /** Raw samples, for the chart (not in the JSON summary). */
  samples: { sab: number[]; kill: number[]; postMessage: number[] };
}

/** How long the postMessage baseline's computation runs before it would look at its mailbox. */
const BUSY_MS = 2_000;
const OBSERVED_WITHIN_US = 1_000_000;

export async function stopLatency(size: BenchSize): Promise<StopLatencyResult> {
  const sab = await measureSab(size.quick ? 100 : 300);
  const kill = await measureKill(size.quick ? 30 : 100);
  const postMessage = await measurePostMessage(size.quick ? 2 : 5);
  const sabP50Us = quantile(sab.stopToBodyEndUs, 0.5);
  const killP50Us = quantile(kill, 0.5);
  return {
    sabP50Us: round(sabP50Us),
    sabP99Us: round(quantile(sab.stopToBodyEndUs, 0.99)),
    killP50Us: round(killP50Us),
    killP99Us: round(quantile(kill, 0.99)),
    postMessageObservedPct: round((100 * postMessage.filter((us) => us <= OBSERVED_WITHIN_US).length) / postMessage.length),
    killOverSab: round(killP50Us / Math.max(sabP50Us, 1), 1),
    sabSamples: sab.stopToBodyEndUs.length,
    killSamples: kill.length,
    postMessageSamples: postMessage.length,
    httpStopToObservedP50Us: round(quantile(sab.sendToObservedUs, 0.5)),
    httpStopToObservedP99Us: round(quantile(sab.sendToObservedUs, 0.99)),
    postMessageP50Us: round(quantile(postMessage, 0.5)),
    samples: { sab: sab.stopToBodyEndUs, kill, postMessage },
  };
}

async function measureSab(samples: number): Promise<{ stopToBodyEndUs: number[]; sendToObservedUs: number[] }> {
  const server = await startServer();
  const load = await startLoad();
  try {
    const result = await load.call<{ stopToBodyEndUs: number[]; sendToObservedUs: number[]; failures: string[] }>('sabLatency', {
      base: server.base,
      samples,
      settleMs: 10,
    });
    if (result.failures.length > 0) throw new Error(`stop latency: ${result.failures.length} samples failed, e.g. ${result.failures[0]}`);
    return result;
  } finally {
    await load.stop();
    await server.stop();
  }
}

async function measureKill(samples: number): Promise<number[]> {
  const pool = new Piscina({ filename: new URL('../workers/kill-task.js', import.meta.url).href, minThreads: 1, maxThreads: 1, idleTimeout: Number.POSITIVE_INFINITY });
  const latenciesUs: number[] = [];
  try {
    await pool.run({ op: 'now' } satisfies KillTask);
    for (let i = 0; i < samples; i++) {
      const started = new Int32Array(new SharedArrayBuffer(4));
      const controller = new AbortController();
      const spinning = pool.run({ op: 'spin', started } satisfies KillTask, { signal: controller.signal }).catch(() => undefined);
      const waiting = Atomics.waitAsync(started, 0, 0, 10_000);
      if ((waiting.async ? await waiting.value : waiting.value) === 'timed-out') throw new Error('kill baseline: the spin task did not start');
      await sleep(5);
      const abortedAtUs = nowUs();
      controller.abort();
      const replacementRanAtUs = (await pool.run({ op: 'now' } satisfies KillTask)) as number;
      await spinning;
      latenciesUs.push(replacementRanAtUs - abortedAtUs);
    }
  } finally {
    await pool.destroy();
  }
  return latenciesUs;
}

async function measurePostMessage(samples: number): Promise<number[]> {
  const worker = new Worker(new URL('../workers/busy-worker.js', import.meta.url));
  const latenciesUs: number[] = [];
  // A persistent listener: replies can arrive back to back, faster than a fresh `once` is attached.
  const inbox: BusyReply[] = [];
  let wake: (() => void) | undefined;
  worker.on('message', (reply: BusyReply) => {
    inbox.push(reply);
    wake?.();
  });
  const next = async (): Promise<BusyReply> => {
    while (inbox.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    return inbox.shift()!;
  };
  try {
    for (let i = 0; i < samples; i++) {
      worker.postMessage({ op: 'compute', busyMs: BUSY_MS } satisfies BusyRequest);
      const started = await next();
      if (!('started' in started)) throw new Error('postMessage baseline: unexpected reply');
      await sleep(5);
      const sentAtUs = nowUs();
      worker.postMessage({ op: 'stop' } satisfies BusyRequest);
      let observedAtUs: number | undefined;
      while (observedAtUs === undefined) {
        const reply = await next();
        if ('observedAtUs' in reply) observedAtUs = reply.observedAtUs;
      }
      latenciesUs.push(observedAtUs - sentAtUs);
    }
  } finally {
    await worker.terminate();
  }
  return latenciesUs;
}
