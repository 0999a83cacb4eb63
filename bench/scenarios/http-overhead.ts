/**
 * httpOverhead: status requests/s through the runtime for an action with an author status handler
 * (every request crosses to a worker thread and back, with validation on both sides), versus a
 * bare express server answering the same JSON, and bare `node:http` doing the same work per
 * request (parse the body, serialise the answer): what one thread of this machine can do at all.
 * Same autocannon settings from the same client process: each connection polls its own
 * execution, one request at a time, like the agent. The servers take short turns, round after
 * round, and each ratio is the median of its rounds' ratios: on a shared 2-core VM the speed
 * drifts within seconds (the hypervisor's steal time), and a round pair measured back to back
 * sees the same machine, while one slow round decides no median.
 *
 * Besides the process's CPU time (all threads), the CPU time of the main thread alone — the one
 * that serves HTTP — per request (`bench/thread-cpu.ts`): issue 12's bar is that the runtime's
 * main thread does no more per request than express's.
 */
import { median, round } from '../stats.js';
import { mainThreadSchedUs } from '../thread-cpu.js';
import { setupExecutions, startBaseline, startLoad, startServer, type BaselineProcess, type BenchSize, type LoadProcess } from './common.js';

export interface HttpOverheadResult {
  runtimeRps: number;
  expressRps: number;
  runtimeOverExpress: number;
  /** Bare node:http, same answer, same work per request. */
  nodeHttpRps: number;
  /** Extra detail. */
  connections: number;
  rounds: number;
  secondsPerRound: number;
  runtimeP99Ms: number;
  expressP99Ms: number;
  /** Server CPU time (all threads) per request: what the throughput ratio comes from on a busy machine. */
  runtimeCpuUsPerRequest: number;
  expressCpuUsPerRequest: number;
  /** CPU time of the server's main thread alone per request. */
  runtimeMainCpuUsPerRequest: number;
  expressMainCpuUsPerRequest: number;
  nodeHttpMainCpuUsPerRequest: number;
  /** The runtime's main-thread CPU per request over express's (bar: ≤ 1). */
  mainCpuOverExpress: number;
}

interface Throughput {
  rps: number;
  total: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  p99Ms: number;
}

type Measured = Throughput & { cpuUsPerRequest: number; mainCpuUsPerRequest: number };

const CONNECTIONS = 16;
/** Rounds of turns (runtime, express, node:http), and seconds per turn. */
const ROUNDS = { quick: 3, full: 6 } as const;
const TURN_SECONDS = { quick: 2, full: 4 } as const;

export async function httpOverhead(size: BenchSize): Promise<HttpOverheadResult> {
  const durationS = size.quick ? TURN_SECONDS.quick : TURN_SECONDS.full;
  const rounds = size.quick ? ROUNDS.quick : ROUNDS.full;
  const load = await startLoad();
  const server = await startServer();
  const baselines: BaselineProcess[] = [];
  try {
    const { executions } = await setupExecutions(load, server.base, [{ action: 'bench.spin', burn: false, count: CONNECTIONS }], 1);
    const requests = executions.map((execution) => ({ executionId: execution.id, state: execution.state }));
    const answer = await load.call<unknown>('statusOnce', { base: server.base, execution: executions[0] });
    const echo = await startBaseline('echo', { BENCH_ECHO_BODY: JSON.stringify(answer) });
    baselines.push(echo);
    const bare = await startBaseline('node-http', { BENCH_ECHO_BODY: JSON.stringify(answer) });
    baselines.push(bare);
    const runtime: Measured[] = [];
    const express: Measured[] = [];
    const nodeHttp: Measured[] = [];
    for (let pass = 0; pass < rounds; pass++) {
      runtime.push(await run(load, server, `${server.base}/bench.spin/status`, requests, durationS));
      express.push(await run(load, echo, `${echo.base}/bench.spin/status`, requests, durationS));
      nodeHttp.push(await run(load, bare, `${bare.base}/bench.spin/status`, requests, durationS));
    }
    const runtimeRps = mean(runtime.map((t) => t.rps));
    const expressRps = mean(express.map((t) => t.rps));
    const runtimeMain = mean(runtime.map((t) => t.mainCpuUsPerRequest));
    const expressMain = mean(express.map((t) => t.mainCpuUsPerRequest));
    const ratios = (of: (t: Measured) => number): number[] => runtime.map((t, i) => of(t) / of(express[i]!));
    return {
      runtimeRps: Math.round(runtimeRps),
      expressRps: Math.round(expressRps),
      runtimeOverExpress: round(median(ratios((t) => t.rps)), 2),
      nodeHttpRps: Math.round(mean(nodeHttp.map((t) => t.rps))),
      connections: CONNECTIONS,
      rounds,
      secondsPerRound: durationS,
      runtimeP99Ms: Math.max(...runtime.map((t) => t.p99Ms)),
      expressP99Ms: Math.max(...express.map((t) => t.p99Ms)),
      runtimeCpuUsPerRequest: round(mean(runtime.map((t) => t.cpuUsPerRequest))),
      expressCpuUsPerRequest: round(mean(express.map((t) => t.cpuUsPerRequest))),
      runtimeMainCpuUsPerRequest: round(runtimeMain),
      expressMainCpuUsPerRequest: round(expressMain),
      nodeHttpMainCpuUsPerRequest: round(mean(nodeHttp.map((t) => t.mainCpuUsPerRequest))),
      mainCpuOverExpress: round(median(ratios((t) => t.mainCpuUsPerRequest)), 2),
    };
  } finally {
    for (const baseline of baselines) await baseline.stop();
    await server.stop();
    await load.stop();
  }
}

async function run(load: LoadProcess, server: Pick<BaselineProcess, 'cpuUsage' | 'pid'>, url: string, bodies: unknown[], durationS: number): Promise<Measured> {
  const before = await server.cpuUsage();
  const mainBefore = mainThreadSchedUs(server.pid).cpuUs;
  const result = await load.call<Throughput>('throughput', { url, bodies, durationS, connections: CONNECTIONS });
  const mainAfter = mainThreadSchedUs(server.pid).cpuUs;
  const after = await server.cpuUsage();
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
    throw new Error(`httpOverhead: ${url} answered ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts`);
  }
  const cpuUs = after.user - before.user + (after.system - before.system);
  return { ...result, cpuUsPerRequest: cpuUs / result.total, mainCpuUsPerRequest: (mainAfter - mainBefore) / result.total };
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}
