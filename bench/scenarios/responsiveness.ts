/**
 * responsiveness: status latency while as many CPU-burning bodies as there are cores run (each on
 * a body thread of its own, so every core is busy), versus the same action written with express
 * alone, its body burning the same loop on the main thread in the same windows (yielding between
 * them). Same client, same number of burning executions. (More bodies than cores: oversubscribed.)
 */
import { availableParallelism } from 'node:os';
import { quantile, round } from '../stats.js';
import { setupExecutions, sleep, startBaseline, startLoad, startServer, type BenchSize, type LoadProcess } from './common.js';

export interface ResponsivenessResult {
  runtimeStatusP99Ms: number;
  inlineStatusP99Ms: number;
  inlineOverRuntime: number;
  /** Extra detail. */
  runtimeStatusP50Ms: number;
  inlineStatusP50Ms: number;
  burningBodies: number;
  runtimeRequests: number;
  inlineRequests: number;
}

/** Let the bodies get going before measuring. */
const WARM_MS = 300;

export async function responsiveness(size: BenchSize): Promise<ResponsivenessResult> {
  const durationMs = size.quick ? 2_000 : 10_000;
  const load = await startLoad();
  try {
    const server = await startServer();
    let runtime: number[];
    let bodies: number;
    try {
      // As many CPU-bound bodies as there are cores: every core busy.
      bodies = availableParallelism();
      runtime = await measure(load, server.base, bodies, durationMs);
    } finally {
      await server.stop();
    }
    const inlineServer = await startBaseline('inline');
    let inline: number[];
    try {
      inline = await measure(load, inlineServer.base, bodies, durationMs);
    } finally {
      await inlineServer.stop();
    }
    const runtimeP99 = quantile(runtime, 0.99);
    const inlineP99 = quantile(inline, 0.99);
    return {
      runtimeStatusP99Ms: round(runtimeP99, 2),
      inlineStatusP99Ms: round(inlineP99, 2),
      inlineOverRuntime: round(inlineP99 / runtimeP99, 1),
      runtimeStatusP50Ms: round(quantile(runtime, 0.5), 2),
      inlineStatusP50Ms: round(quantile(inline, 0.5), 2),
      burningBodies: bodies,
      runtimeRequests: runtime.length,
      inlineRequests: inline.length,
    };
  } finally {
    await load.stop();
  }
}

async function measure(load: LoadProcess, base: string, bodies: number, durationMs: number): Promise<number[]> {
  const { executions } = await setupExecutions(load, base, [{ action: 'bench.spin', burn: true, count: bodies }], 1);
  await sleep(WARM_MS);
  const { latenciesMs, failures } = await load.call<{ latenciesMs: number[]; failures: string[] }>('statusLatency', { base, targets: executions, durationMs });
  if (failures.length > 0) throw new Error(`responsiveness: ${failures.length} status requests failed, e.g. ${failures[0]}`);
  const stopped = await load.call<{ failures: string[] }>('stopBatch', { base, executions, concurrency: executions.length });
  if (stopped.failures.length > 0) throw new Error(`responsiveness: stop failed: ${stopped.failures[0]}`);
  return latenciesMs;
}
