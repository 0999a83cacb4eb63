/**
 * httpOverhead: status requests/s through the runtime for an action with an author status handler
 * (every request crosses to a worker thread and back, with validation on both sides), versus a
 * bare express server answering the same JSON. Same autocannon settings from the same client
 * process: each connection polls its own execution, one request at a time, like the agent. The
 * two servers alternate twice and each side's mean is used, so drift in the machine's speed
 * during the run hits both.
 */
import { round } from '../stats.js';
import { setupExecutions, startBaseline, startLoad, startServer, type BaselineProcess, type BenchSize, type LoadProcess } from './common.js';

export interface HttpOverheadResult {
  runtimeRps: number;
  expressRps: number;
  runtimeOverExpress: number;
  /** Extra detail. */
  connections: number;
  secondsPerRound: number;
  runtimeP99Ms: number;
  expressP99Ms: number;
  /** Server CPU time (all threads) per request: what the throughput ratio comes from on a busy machine. */
  runtimeCpuUsPerRequest: number;
  expressCpuUsPerRequest: number;
}

interface Throughput {
  rps: number;
  total: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  p99Ms: number;
}

type Measured = Throughput & { cpuUsPerRequest: number };

const CONNECTIONS = 16;
const ROUNDS = 2;

export async function httpOverhead(size: BenchSize): Promise<HttpOverheadResult> {
  const durationS = size.quick ? 2 : 8;
  const load = await startLoad();
  const server = await startServer();
  let echo: BaselineProcess | undefined;
  try {
    const { executions } = await setupExecutions(load, server.base, [{ action: 'bench.spin', burn: false, count: CONNECTIONS }], 1);
    const requests = executions.map((execution) => ({ executionId: execution.id, state: execution.state }));
    const answer = await load.call<unknown>('statusOnce', { base: server.base, execution: executions[0] });
    echo = await startBaseline('echo', { BENCH_ECHO_BODY: JSON.stringify(answer) });
    const runtime: Measured[] = [];
    const express: Measured[] = [];
    for (let pass = 0; pass < ROUNDS; pass++) {
      runtime.push(await run(load, server, `${server.base}/bench.spin/status`, requests, durationS));
      express.push(await run(load, echo, `${echo.base}/bench.spin/status`, requests, durationS));
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
      runtimeCpuUsPerRequest: round(mean(runtime.map((t) => t.cpuUsPerRequest))),
      expressCpuUsPerRequest: round(mean(express.map((t) => t.cpuUsPerRequest))),
    };
  } finally {
    await echo?.stop();
    await server.stop();
    await load.stop();
  }
}

async function run(load: LoadProcess, server: BaselineProcess, url: string, bodies: unknown[], durationS: number): Promise<Measured> {
  const before = await server.cpuUsage();
  const result = await load.call<Throughput>('throughput', { url, bodies, durationS, connections: CONNECTIONS });
  const after = await server.cpuUsage();
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
    throw new Error(`httpOverhead: ${url} answered ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts`);
  }
  const cpuUs = after.user - before.user + (after.system - before.system);
  return { ...result, cpuUsPerRequest: cpuUs / result.total };
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}
