/**
 * httpOverhead: status requests/s through the runtime for an action with an author status handler
 * (every request crosses to a worker thread and back, with validation on both sides), versus a
 * bare express server answering the same JSON. Same autocannon settings from the same client
 * process; the two servers alternate twice and each side's mean is used, so drift in the
 * machine's speed during the run hits both.
 */
import { round } from '../stats.js';
import { setupExecutions, startBaseline, startLoad, startServer, type BenchSize, type LoadProcess } from './common.js';

export interface HttpOverheadResult {
  runtimeRps: number;
  expressRps: number;
  runtimeOverExpress: number;
  /** Extra detail. */
  connections: number;
  secondsPerRound: number;
  runtimeP99Ms: number;
  expressP99Ms: number;
}

interface Throughput {
  rps: number;
  total: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  p99Ms: number;
}

const CONNECTIONS = 16;
const ROUNDS = 2;

export async function httpOverhead(size: BenchSize): Promise<HttpOverheadResult> {
  const durationS = size.quick ? 2 : 8;
  const load = await startLoad();
  const server = await startServer();
  let echo: { base: string; stop(): Promise<void> } | undefined;
  try {
    const { executions } = await setupExecutions(load, server.base, [{ action: 'bench.spin', burn: false, count: 1 }], 1);
    const execution = executions[0]!;
    const request = { executionId: execution.id, state: execution.state };
    const answer = await load.call<unknown>('statusOnce', { base: server.base, execution });
    echo = await startBaseline('echo', { BENCH_ECHO_BODY: JSON.stringify(answer) });
    const runtime: Throughput[] = [];
    const express: Throughput[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      runtime.push(await run(load, `${server.base}/bench.spin/status`, request, durationS));
      express.push(await run(load, `${echo.base}/bench.spin/status`, request, durationS));
    }
    const runtimeRps = mean(runtime.map((t) => t.rps));
    const expressRps = mean(express.map((t) => t.rps));
    return {
      runtimeRps: Math.round(runtimeRps),
      expressRps: Math.round(expressRps),
      runtimeOverExpress: round(runtimeRps / expressRps, 2),
      connections: CONNECTIONS,
      secondsPerRound: durationS,
      runtimeP99Ms: Math.max(...runtime.map((t) => t.p99Ms)),
      expressP99Ms: Math.max(...express.map((t) => t.p99Ms)),
    };
  } finally {
    await echo?.stop();
    await server.stop();
    await load.stop();
  }
}

async function run(load: LoadProcess, url: string, body: unknown, durationS: number): Promise<Throughput> {
  const result = await load.call<Throughput>('throughput', { url, body, durationS, connections: CONNECTIONS });
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
    throw new Error(`httpOverhead: ${url} answered ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts`);
  }
  return result;
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}
