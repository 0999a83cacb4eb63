/**
 * storm: N executions, then at once: three concurrent agent stops for every execution (seeded
 * random order), status polling, a real SIGUSR1 stop-all part-way through, and heartbeat expiry
 * for a tenth of them (their action has a short status interval and nobody polls them). Counts
 * come from the author's stop handler's own log, not from the runtime.
 *
 * Two storms share this machinery:
 * - `storm`: 10,000 executions (quick 1,000) whose io bodies await their stop on the shared io
 *   threads — the stop path under volume; then, in the same run, the same storm against its
 *   inline baselines ({@link StormBaselines}).
 * - `cpuStorm`: 200 executions (quick 64) whose cpu bodies burn CPU until stopped, each on a body
 *   thread of its own, far more than there are cores — the stop path while the HTTP thread, the
 *   handlers and the bodies that must see their stop all compete for oversubscribed cores.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { quantile, round } from '../stats.js';
import type { ServerStats } from '../server.js';
import { machineShares, machineTicks, mainThreadSchedUs } from '../thread-cpu.js';
import { setupExecutions, startBaseline, startLoad, startServer, waitFor, type BenchSize } from './common.js';

/** What one storm measured, against the runtime or against a baseline server. */
export interface StormFigures {
  executions: number;
  stopRequests: number;
  stopHandlerCalls: number;
  duplicateStops: number;
  lostStops: number;
  http5xx: number;
  drainMs: number;
  stopsPerSec: number;
  /**
   * CPU time of the server's main thread (the HTTP thread, the storm's bottleneck) and of the whole
   * server process per execution stopped, from the start of the storm to the drain: what the rate
   * comes from, without the hypervisor's steal time and the load generator that move the rate.
   */
  mainCpuUsPerExecution: number;
  processCpuUsPerExecution: number;
  /**
   * Time the main thread was ready to run but waited for a CPU, per execution: what the machine's
   * other threads (the server's own, the load generator's, other guests') took from it.
   */
  mainRunQueueUsPerExecution: number;
  /**
   * CPU time of the load generator (the agent's side of every request, on the same 2 cores) per
   * execution, while it sent the storm's stops and polls: the share of the machine the server did
   * not get.
   */
  loadCpuUsPerExecution: number;
  /**
   * The same main-thread and process CPU per request answered in that time (stops and statuses).
   * The eight status pollers ask again as soon as they are answered, so a server that answers
   * status faster gets more of them per execution: per request, servers compare on equal terms.
   */
  mainCpuUsPerRequest: number;
  processCpuUsPerRequest: number;
  stopP99Ms: number;
  statusP99Ms: number;
  /**
   * Percent of the whole machine's CPU time during the storm (`/proc/stat`, every process) taken
   * by the hypervisor for other guests (steal), and left idle. A storm with much steal ran on a
   * busy host; its rate says more about the neighbours than about the server.
   */
  stealPct: number;
  idlePct: number;
  /** Extra detail. */
  statusRequests: number;
  heartbeatTimeouts: number;
  usr1SentAtMs: number;
  answers: Record<string, number>;
  setupMs: number;
  /** Executions that were not stopped exactly once, first few, for the report. */
  problems: string[];
}

/**
 * The io storm's baselines, the same storm (same seed) in the same run against the storm's actions
 * written inline on one thread (`bench/inline-storm.ts`): on bare `node:http`, what this machine's
 * one thread can do at all, and on express, what an author writing with express alone gets.
 */
export interface StormBaselines {
  nodeHttp: StormFigures;
  express: StormFigures;
  /** The runtime's executions stopped per second over each baseline's; null when that baseline did not stop every execution exactly once. */
  stopsPerSecOverNodeHttp: number | null;
  stopsPerSecOverExpress: number | null;
}

export interface StormResult extends StormFigures {
  bodies: { cooperative: number; killed: number };
  /** cpu body threads running bodies when the stops began (cpuStorm: one per burning body). */
  cpuBodiesAtStorm: number;
  /** Server RSS when the stops began. */
  rssMiB: number;
  /** `storm` only. */
  baselines?: StormBaselines;
}

const STOPS_PER_EXECUTION = 3;
const EXPIRING_SHARE = 0.1;
/** Asking the server for its counters costs its main thread a little: not too often. */
const STATS_POLL_MS = 25;

/** The io storm: volume. */
export function storm(size: BenchSize): Promise<StormResult> {
  return runStorm(size, { executionCount: size.quick ? 1_000 : 10_000, action: 'bench.wait', expiringAction: 'bench.wait-expiring', baselines: true });
}

/**
 * The cpu storm: every body burns CPU on a thread of its own, 32 (quick) to 100 per core on 2
 * cores. Starting that many takes long (each start boots a thread while the others burn), longer
 * than a short heartbeat: every execution is kept alive by status polling from its start on, and
 * released when all run, the expiring share one after another over a second.
 */
export function cpuStorm(size: BenchSize): Promise<StormResult> {
  const executionCount = size.quick ? 64 : 200;
  return runStorm(size, {
    executionCount,
    action: 'bench.spin',
    expiringAction: 'bench.spin-expiring',
    // The expiring share's heartbeat then expires ~4 s after its last status: margin for a slow poll under load.
    heartbeatMinInterval: '1s',
    keepAlive: true,
    // Fewer in flight than executions, so agent stops win some before SIGUSR1 takes the rest.
    concurrency: 16,
    env: { ACTIONKIT_MAX_BODY_THREADS: String(executionCount + 16) },
  });
}

interface StormOptions {
  executionCount: number;
  /** The bulk, polled for status during the storm. */
  action: string;
  /** The share left to expire (250 ms status interval). */
  expiringAction: string;
  /** ACTIONKIT_HEARTBEAT_MIN_INTERVAL (default 250ms). */
  heartbeatMinInterval?: string;
  /**
   * Keep every execution alive by status polling from its start until all run (expiring share
   * first); otherwise the expiring share is started last and expires as the setup ends.
   */
  keepAlive?: boolean;
  /** Executions whose stops are in flight at once (default 64). */
  concurrency?: number;
  env?: Record<string, string>;
  /** Run the same storm against the inline baselines too ({@link StormBaselines}). */
  baselines?: boolean;
}

/** What the storm reads from a server, the runtime's `stats()` or a baseline's. */
interface StormCounters {
  activeExecutions: number;
  watchdog: { heartbeatTimeouts: number };
}

interface StormServer<C extends StormCounters> {
  base: string;
  pid: number;
  stats(): Promise<C>;
  cpuUsage(): Promise<NodeJS.CpuUsage>;
}

async function runStorm(size: BenchSize, options: StormOptions): Promise<StormResult> {
  const { executionCount } = options;
  const logDir = mkdtempSync(join(tmpdir(), 'actionkit-bench-storm-'));
  const stopLog = join(logDir, 'stops.log');
  try {
    const server = await startServer({
      ACTIONKIT_MAX_EXECUTIONS: String(executionCount * 2),
      ACTIONKIT_HEARTBEAT_MIN_INTERVAL: options.heartbeatMinInterval ?? '250ms',
      BENCH_STOP_LOG: stopLog,
      ...options.env,
    });
    let runtime: Awaited<ReturnType<typeof drive<ServerStats>>>;
    try {
      runtime = await drive(size, options, server, stopLog);
    } finally {
      await server.stop();
    }
    const { figures, atStorm, atEnd } = runtime;
    return {
      ...figures,
      bodies: { cooperative: atEnd.stops.bodiesCooperative, killed: atEnd.stops.bodiesKilled },
      cpuBodiesAtStorm: atStorm.bodies.cpuBusy,
      rssMiB: round(atStorm.rssBytes / 1_048_576),
      ...(options.baselines === true ? { baselines: await stormBaselines(size, options, logDir, figures) } : {}),
    };
  } finally {
    rmSync(logDir, { recursive: true, force: true });
  }
}

/** The same storm against the inline baselines, one after the other, each with a stop log of its own. */
async function stormBaselines(size: BenchSize, options: StormOptions, logDir: string, runtime: StormFigures): Promise<StormBaselines> {
  const against = async (mode: 'storm-node-http' | 'storm-express'): Promise<StormFigures> => {
    const stopLog = join(logDir, `stops-${mode}.log`);
    const server = await startBaseline(mode, { BENCH_STOP_LOG: stopLog });
    try {
      const { figures } = await drive(size, options, { ...server, stats: () => server.request<StormCounters>('stats') }, stopLog);
      return { ...figures, problems: figures.problems.map((problem) => `baseline ${mode}: ${problem}`) };
    } finally {
      await server.stop();
    }
  };
  const nodeHttp = await against('storm-node-http');
  const express = await against('storm-express');
  return {
    nodeHttp,
    express,
    stopsPerSecOverNodeHttp: ratioOver(runtime, nodeHttp),
    stopsPerSecOverExpress: ratioOver(runtime, express),
  };
}

/** A baseline's rate means something only if it did the storm's work: every execution stopped exactly once, no 5xx. */
function ratioOver(runtime: StormFigures, baseline: StormFigures): number | null {
  const clean = baseline.duplicateStops === 0 && baseline.lostStops === 0 && baseline.http5xx === 0 && baseline.problems.length === 0;
  return clean ? round(runtime.stopsPerSec / baseline.stopsPerSec, 2) : null;
}

/**
 * One storm against `server`: set up the executions, wait for the first heartbeat expiry, storm,
 * drain, then count the author's stops from `stopLog` and ask every execution's final status.
 */
async function drive<C extends StormCounters>(size: BenchSize, options: StormOptions, server: StormServer<C>, stopLog: string) {
  const { executionCount } = options;
  const expiring = Math.round(executionCount * EXPIRING_SHARE);
  const load = await startLoad();
  try {
    const bulk = { action: options.action, burn: true, count: executionCount - expiring };
    const expiringShare = { action: options.expiringAction, burn: true, count: expiring };
    const { executions, elapsedMs: setupMs } = options.keepAlive
      ? await setupExecutions(load, server.base, [
          { ...expiringShare, keepAliveMs: 250 },
          { ...bulk, keepAliveMs: 5_000 },
        ])
      : // The expiring share is started last, so the others are all running when it begins to expire.
        await setupExecutions(load, server.base, [bulk, expiringShare]);
    const keptAlive = options.keepAlive
      ? load.call<{ http5xx: number; failures: string[]; failureCount: number }>('releaseKeepAlive', { spreadMs: 1_000 })
      : Promise.resolve({ http5xx: 0, failures: [], failureCount: 0 });
    await waitFor('the first heartbeat timeout', async () => (await server.stats()).watchdog.heartbeatTimeouts > 0, 30_000);
    const atStorm = await server.stats();

    const mainBefore = mainThreadSchedUs(server.pid);
    const cpuBefore = await server.cpuUsage();
    const machineBefore = machineTicks();
    const started = performance.now();
    const storming = load.call<{
      stopLatenciesMs: number[];
      statusLatenciesMs: number[];
      stopRequests: number;
      statusRequests: number;
      http5xx: number;
      answers: Record<string, number>;
      usr1SentAtMs: number;
      stopsAnsweredMs: number;
      cpuUs: number;
    }>('storm', {
      base: server.base,
      executions,
      statusTargets: executions.filter((e) => e.action === options.action),
      stopsPerExecution: STOPS_PER_EXECUTION,
      concurrency: options.concurrency ?? 64,
      statusPollers: 8,
      serverPid: server.pid,
      usr1AfterShare: 0.5,
      seed: size.seed,
    });
    let stormAnswered = false;
    void storming.finally(() => (stormAnswered = true)).catch(() => undefined);
    // Drained: every stop answered and no execution left active. Bounded, so a lost stop fails the run instead of hanging it.
    const drainBudgetMs = 60_000 + executionCount * 10;
    let drained = true;
    try {
      await waitFor('all executions to end', async () => stormAnswered && (await server.stats()).activeExecutions === 0, drainBudgetMs, STATS_POLL_MS);
    } catch {
      drained = false;
    }
    const drainMs = performance.now() - started;
    const mainAfter = mainThreadSchedUs(server.pid);
    const mainCpuUs = mainAfter.cpuUs - mainBefore.cpuUs;
    const mainRunQueueUs = mainAfter.runQueueUs - mainBefore.runQueueUs;
    const cpuAfter = await server.cpuUsage();
    const machine = machineShares(machineBefore, machineTicks());
    const processCpuUs = cpuAfter.user - cpuBefore.user + (cpuAfter.system - cpuBefore.system);
    const result = await storming;
    const stats = await server.stats();

    const calls = new Map<string, number>();
    for (const id of readFileSync(stopLog, 'utf8').split('\n')) if (id !== '') calls.set(id, (calls.get(id) ?? 0) + 1);
    const final = await load.call<{ notCompleted: string[]; http5xx: number }>('finalStatus', { base: server.base, executions, concurrency: 32 });
    const kept = await keptAlive;
    const problems: string[] = kept.failures.map((failure) => `while kept alive before the storm: ${failure}`);
    let duplicateStops = 0;
    const lost = new Set<string>();
    for (const execution of executions) {
      const count = calls.get(execution.id) ?? 0;
      if (count === 0) lost.add(execution.id);
      if (count > 1) {
        duplicateStops += count - 1;
        problems.push(`${execution.id}: author stop ran ${count} times`);
      }
    }
    for (const line of final.notCompleted) {
      lost.add(line.slice(0, line.indexOf(':')));
      problems.push(`not completed after the storm: ${line}`);
    }
    if (!drained) problems.push(`${stats.activeExecutions} executions still active ${Math.round(drainMs)} ms after the storm began`);
    for (const id of lost) if ((calls.get(id) ?? 0) === 0) problems.push(`${id}: author stop never ran`);
    const stopHandlerCalls = [...calls.values()].reduce((a, b) => a + b, 0);
    const figures: StormFigures = {
      executions: executions.length,
      stopRequests: result.stopRequests,
      stopHandlerCalls,
      duplicateStops,
      // An execution still active after the drain budget either never had its author stop (no log
      // line) or was never released (its final status is not completed): it is in `lost` already.
      lostStops: lost.size,
      http5xx: result.http5xx + final.http5xx + kept.http5xx,
      drainMs: round(drainMs),
      stopsPerSec: round((executions.length * 1000) / drainMs),
      mainCpuUsPerExecution: round(mainCpuUs / executions.length),
      processCpuUsPerExecution: round(processCpuUs / executions.length),
      mainRunQueueUsPerExecution: round(mainRunQueueUs / executions.length),
      loadCpuUsPerExecution: round(result.cpuUs / executions.length),
      mainCpuUsPerRequest: round(mainCpuUs / (result.stopRequests + result.statusRequests)),
      processCpuUsPerRequest: round(processCpuUs / (result.stopRequests + result.statusRequests)),
      stopP99Ms: round(quantile(result.stopLatenciesMs, 0.99), 2),
      statusP99Ms: round(quantile(result.statusLatenciesMs, 0.99), 2),
      stealPct: round(machine.steal * 100),
      idlePct: round(machine.idle * 100),
      statusRequests: result.statusRequests,
      heartbeatTimeouts: stats.watchdog.heartbeatTimeouts,
      usr1SentAtMs: round(result.usr1SentAtMs),
      answers: result.answers,
      setupMs: round(setupMs),
      problems: problems.slice(0, 10),
    };
    return { figures, atStorm, atEnd: stats };
  } finally {
    await load.stop();
  }
}
