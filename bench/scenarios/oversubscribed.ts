/**
 * oversubscribed: CPU-burning bodies far outnumbering the cores — what happens to the agent's
 * status and stop requests, and does every body really burn what it should?
 *
 * One server with the default settings, in this order:
 *
 * 1. idle: no body running (the polled executions' bodies returned at once). Sequential status
 *    requests, then agent stops of a single burning body (as stopLatency measures them), and the
 *    server's CPU over a window. The baseline of every ratio below.
 * 2. burn: 3 × cores executions whose bodies burn at a duty cycle adding up to `BURN_TOTAL_SHARE`
 *    of the cores; the server's CPU over a window, less the idle CPU, against that sum.
 * 3. each level (8 × cores; full size also 32 × cores): prepare and start that many CPU-spinning
 *    executions from nothing (32 at a time) and time it; the server's CPU over a window (the
 *    bodies should take every core); the same status requests and stop samples as in 1 while they
 *    burn; then agent stops for all of them (32 at a time) and time the drain.
 *
 * Then the nice comparison: a fresh server per `ACTIONKIT_BODY_NICE` value (0 and 19; the default
 * 10 is the server above) runs its own idle status baseline and the same levels the same way.
 *
 * Nothing here waits in a queue: a start answered without error means the body runs on a thread
 * of its own, so every execution started counts, and any error answer is counted.
 */
import { availableParallelism, cpus } from 'node:os';
import { quantile, round } from '../stats.js';
import { sleep, startLoad, startServer, waitFor, type AgentExecution, type BenchSize, type LoadProcess, type ServerProcess } from './common.js';

/** Status and stop latencies and CPU, measured the same way with and without bodies. */
interface LatencyFigures {
  nice: number;
  statusP50Ms: number;
  statusP99Ms: number;
  statusRequests: number;
  /** Agent stop of one more burning body: HTTP round trip. */
  stopRoundTripP50Ms: number;
  stopRoundTripP99Ms: number;
  /** Stop sent → that body observed it (same clock, includes HTTP). */
  stopToObservedP50Ms: number;
  stopToObservedP99Ms: number;
  /** Server CPU meanwhile, in cores (all threads). */
  coresUsed: number;
  /** Cores every other process of the machine used meanwhile (noise, when not ~0). */
  otherCores: number;
  errors: number;
}

/** Figures of one level: `bodies` CPU-spinning executions. */
export interface OversubscribedLevel extends LatencyFigures {
  perCore: number;
  bodies: number;
  /** Prepare + start of all of them, 32 in flight (wall). */
  startMs: number;
  /** Executions whose prepare or start was answered with an error. */
  startFailures: number;
  msPerStart: number;
  stopSamples: number;
  /** Agent stops for all `bodies`, 32 in flight, until none is active (wall). */
  drainMs: number;
  msPerStop: number;
  /** Bodies whose thread had to be terminated after the stop grace (did not see the stop in time). */
  bodiesKilled: number;
  http5xx: number;
  /** Executions still active after the drain. */
  leftActive: number;
}

/** The no-body baseline of one server. */
export interface OversubscribedIdle extends LatencyFigures {
  http5xx: number;
}

export interface OversubscribedResult {
  cores: number;
  idle: OversubscribedIdle;
  burn: { executions: number; dutyPct: number; expectedCores: number; measuredCores: number; otherCores: number; errors: number; http5xx: number; leftActive: number };
  /** Default nice (10): 8 × cores, and at full size 32 × cores. */
  levels: OversubscribedLevel[];
  /** The same levels with nice 0 and 19, each on its own server with its own idle baseline. */
  niceRuns: { idle: OversubscribedIdle; levels: OversubscribedLevel[] }[];
  /** Headline figures (ratios and counts within this run). */
  statusP99OverIdle: number;
  stopRoundTripP99OverIdle: number;
  /** Measured CPU of the duty-cycled bodies over what they add up to. */
  burnRatio: number;
  /**
   * Server CPU with 8 × cores spinners over the cores other processes left (all of them on a
   * quiet machine): the bodies take whatever CPU there is.
   */
  saturation: number;
  /** Status p99 under 8 × cores spinners, nice 0 over nice 10 (the default). */
  nice0OverNice10: number;
  /** … nice 19 over nice 10. */
  nice19OverNice10: number;
  /** Every execution asked for started (0 start failures): counted over every level and server. */
  startFailures: number;
  /** Error answers of every request (start failures included), and the 5xx among them. */
  errors: number;
  http5xx: number;
  /** Executions still active after their level's drain, over every level and server. */
  leftActive: number;
  bodiesKilled: number;
  /** Status latencies (ms) for the chart; not in the JSON summary. */
  samples: { idle: number[]; byNice: Record<string, number[]> };
}

const DEFAULT_NICE = 10;
const COMPARED_NICE = [0, 19];
const BURN_PER_CORE = 3;
/** The duty-cycled bodies add up to this share of the cores: enough to see, with room for the rest. */
const BURN_TOTAL_SHARE = 0.5;
const SETUP_CONCURRENCY = 32;
const STOP_CONCURRENCY = 32;
/** Let bodies get going (and spare threads boot) before measuring. */
const WARM_MS = 500;

interface Sizes {
  statusMs: number;
  stopSamples: number;
  cpuWindowMs: number;
  perCore: number[];
}

export async function oversubscribed(size: BenchSize): Promise<OversubscribedResult> {
  const cores = availableParallelism();
  const sizes: Sizes = size.quick
    ? { statusMs: 2_000, stopSamples: 20, cpuWindowMs: 2_000, perCore: [8] }
    : { statusMs: 5_000, stopSamples: 50, cpuWindowMs: 3_000, perCore: [8, 32] };
  const maxBodies = Math.max(...sizes.perCore) * cores;
  // Room for every spinner, the stop-latency probe and the spares booting beside them.
  const env = { ACTIONKIT_MAX_BODY_THREADS: String(Math.min(4096, maxBodies + 16)), ACTIONKIT_MAX_EXECUTIONS: String(maxBodies * 2) };
  const load = await startLoad();
  try {
    const server = await startServer(env);
    let idle: OversubscribedIdle;
    let burn: OversubscribedResult['burn'];
    const levels: OversubscribedLevel[] = [];
    let idleSamples: number[];
    let defaultSamples: number[] = [];
    try {
      ({ idle, samples: idleSamples } = await measureIdle(server, load, DEFAULT_NICE, cores, sizes));
      burn = await measureBurn(server, load, cores, sizes.cpuWindowMs, idle.coresUsed);
      for (const perCore of sizes.perCore) {
        const { level, samples } = await measureLevel(server, load, DEFAULT_NICE, perCore, cores, sizes);
        levels.push(level);
        if (perCore === 8) defaultSamples = samples;
      }
    } finally {
      await server.stop();
    }
    const niceRuns: OversubscribedResult['niceRuns'] = [];
    const byNice: Record<string, number[]> = { [DEFAULT_NICE]: defaultSamples };
    for (const nice of COMPARED_NICE) {
      const niceServer = await startServer({ ...env, ACTIONKIT_BODY_NICE: String(nice) });
      try {
        const { idle: niceIdle } = await measureIdle(niceServer, load, nice, cores, { ...sizes, stopSamples: 0, cpuWindowMs: 0 });
        const niceLevels: OversubscribedLevel[] = [];
        for (const perCore of sizes.perCore) {
          const { level, samples } = await measureLevel(niceServer, load, nice, perCore, cores, sizes);
          niceLevels.push(level);
          if (perCore === 8) byNice[nice] = samples;
        }
        niceRuns.push({ idle: niceIdle, levels: niceLevels });
      } finally {
        await niceServer.stop();
      }
    }
    const at8 = levels.find((l) => l.perCore === 8)!;
    const niceAt = (nice: number): OversubscribedLevel | undefined => niceRuns.find((r) => r.idle.nice === nice)?.levels.find((l) => l.perCore === 8);
    const allLevels = [...levels, ...niceRuns.flatMap((r) => r.levels)];
    const allIdle = [idle, ...niceRuns.map((r) => r.idle)];
    return {
      cores,
      idle,
      burn,
      levels,
      niceRuns,
      statusP99OverIdle: round(at8.statusP99Ms / idle.statusP99Ms, 2),
      stopRoundTripP99OverIdle: round(at8.stopRoundTripP99Ms / idle.stopRoundTripP99Ms, 2),
      burnRatio: round(burn.measuredCores / burn.expectedCores, 2),
      saturation: round(at8.coresUsed / Math.max(cores - at8.otherCores, 0.5), 2),
      nice0OverNice10: round((niceAt(0)?.statusP99Ms ?? Number.NaN) / at8.statusP99Ms, 2),
      nice19OverNice10: round((niceAt(19)?.statusP99Ms ?? Number.NaN) / at8.statusP99Ms, 2),
      startFailures: allLevels.reduce((sum, l) => sum + l.startFailures, 0),
      errors: allLevels.reduce((sum, l) => sum + l.errors, 0) + allIdle.reduce((sum, i) => sum + i.errors, 0) + burn.errors,
      http5xx: allLevels.reduce((sum, l) => sum + l.http5xx, 0) + allIdle.reduce((sum, i) => sum + i.http5xx, 0) + burn.http5xx,
      leftActive: allLevels.reduce((sum, l) => sum + l.leftActive, 0) + burn.leftActive,
      bodiesKilled: allLevels.reduce((sum, l) => sum + l.bodiesKilled, 0),
      samples: { idle: idleSamples, byNice },
    };
  } finally {
    await load.stop();
  }
}

/** Error answers, by the `<phase> → <status> <title>` lines the load generator reports. */
function countErrors(failures: readonly string[]): { errors: number; http5xx: number } {
  return { errors: failures.length, http5xx: failures.filter((f) => /→ 5\d\d/.test(f)).length };
}

/** CPU time the machine's cores spent busy so far (ms, all processes). */
function machineBusyMs(): number {
  let busy = 0;
  for (const { times } of cpus()) busy += times.user + times.nice + times.sys + times.irq;
  return busy;
}

/**
 * Server CPU (all threads) over `windowMs`, in cores, and what every other process of the machine
 * burnt meanwhile (the bench's own processes are nearly idle while it waits): when that is not
 * near 0, the machine was shared and the server's figure is low for that reason.
 */
async function coresUsed(server: ServerProcess, windowMs: number): Promise<{ server: number; others: number }> {
  const before = await server.cpuUsage();
  const machineBefore = machineBusyMs();
  const started = performance.now();
  await sleep(windowMs);
  const after = await server.cpuUsage();
  const machineAfter = machineBusyMs();
  const elapsedMs = performance.now() - started;
  const serverCores = (after.user - before.user + after.system - before.system) / 1000 / elapsedMs;
  const machineCores = (machineAfter - machineBefore) / elapsedMs;
  return { server: round(serverCores, 2), others: round(Math.max(0, machineCores - serverCores), 2) };
}

async function setup(load: LoadProcess, base: string, items: { action: string; burn: boolean; count: number; dutyPct?: number }[]) {
  return load.call<{ executions: AgentExecution[]; failures: string[]; elapsedMs: number }>('setup', { base, items, concurrency: SETUP_CONCURRENCY });
}

async function statusLatency(load: LoadProcess, base: string, targets: AgentExecution[], durationMs: number) {
  return load.call<{ latenciesMs: number[]; failures: string[] }>('statusLatency', { base, targets, durationMs });
}

async function stopSamples(load: LoadProcess, base: string, samples: number) {
  if (samples === 0) return { stopToBodyEndUs: [], sendToObservedUs: [], stopRoundTripMs: [], failures: [] };
  // 50 ms between start and stop: the probe body is running (not still starting) when its stop comes.
  return load.call<{ stopToBodyEndUs: number[]; sendToObservedUs: number[]; stopRoundTripMs: number[]; failures: string[] }>('sabLatency', {
    base,
    samples,
    settleMs: 50,
  });
}

/** Stop every execution (32 in flight) and wait until none is active; the drain's wall time. */
async function drain(server: ServerProcess, load: LoadProcess, executions: AgentExecution[]) {
  const started = performance.now();
  const stopped = await load.call<{ elapsedMs: number; failures: string[] }>('stopBatch', { base: server.base, executions, concurrency: STOP_CONCURRENCY });
  let leftActive = 0;
  try {
    await waitFor('every execution to end', async () => (await server.stats()).activeExecutions === 0, 30_000);
  } catch {
    leftActive = (await server.stats()).activeExecutions;
  }
  return { drainMs: performance.now() - started, failures: stopped.failures, leftActive };
}

async function measureIdle(server: ServerProcess, load: LoadProcess, nice: number, cores: number, sizes: Sizes): Promise<{ idle: OversubscribedIdle; samples: number[] }> {
  // Executions to poll whose bodies returned at once: the status handler is the same, no body runs.
  const targets = await setup(load, server.base, [{ action: 'bench.spin', burn: false, count: cores }]);
  await sleep(WARM_MS);
  const cpu = sizes.cpuWindowMs > 0 ? await coresUsed(server, sizes.cpuWindowMs) : { server: Number.NaN, others: Number.NaN };
  const status = await statusLatency(load, server.base, targets.executions, sizes.statusMs);
  const stops = await stopSamples(load, server.base, sizes.stopSamples);
  const drained = await drain(server, load, targets.executions);
  const counted = countErrors([...targets.failures, ...status.failures, ...stops.failures, ...drained.failures]);
  return {
    idle: {
      nice,
      statusP50Ms: round(quantile(status.latenciesMs, 0.5), 2),
      statusP99Ms: round(quantile(status.latenciesMs, 0.99), 2),
      statusRequests: status.latenciesMs.length,
      stopRoundTripP50Ms: round(quantile(stops.stopRoundTripMs, 0.5), 2),
      stopRoundTripP99Ms: round(quantile(stops.stopRoundTripMs, 0.99), 2),
      stopToObservedP50Ms: round(quantile(stops.sendToObservedUs, 0.5) / 1000, 2),
      stopToObservedP99Ms: round(quantile(stops.sendToObservedUs, 0.99) / 1000, 2),
      coresUsed: cpu.server,
      otherCores: cpu.others,
      ...counted,
    },
    samples: status.latenciesMs,
  };
}

async function measureBurn(server: ServerProcess, load: LoadProcess, cores: number, windowMs: number, idleCores: number): Promise<OversubscribedResult['burn']> {
  const executions = BURN_PER_CORE * cores;
  const dutyPct = Math.round((100 * BURN_TOTAL_SHARE) / BURN_PER_CORE);
  const started = await setup(load, server.base, [{ action: 'bench.spin', burn: true, count: executions, dutyPct }]);
  await sleep(WARM_MS);
  const measured = await coresUsed(server, windowMs);
  const drained = await drain(server, load, started.executions);
  return {
    executions,
    dutyPct,
    expectedCores: round((executions * dutyPct) / 100, 2),
    measuredCores: round(measured.server - idleCores, 2),
    otherCores: measured.others,
    ...countErrors([...started.failures, ...drained.failures]),
    leftActive: drained.leftActive,
  };
}

async function measureLevel(
  server: ServerProcess,
  load: LoadProcess,
  nice: number,
  perCore: number,
  cores: number,
  sizes: Sizes,
): Promise<{ level: OversubscribedLevel; samples: number[] }> {
  const bodies = perCore * cores;
  const killedBefore = (await server.stats()).stops.bodiesKilled;
  const started = await setup(load, server.base, [{ action: 'bench.spin', burn: true, count: bodies }]);
  await sleep(WARM_MS);
  const cpu = await coresUsed(server, sizes.cpuWindowMs);
  const status = await statusLatency(load, server.base, started.executions, sizes.statusMs);
  const stops = await stopSamples(load, server.base, sizes.stopSamples);
  const drained = await drain(server, load, started.executions);
  const killedAfter = (await server.stats()).stops.bodiesKilled;
  const counted = countErrors([...started.failures, ...status.failures, ...stops.failures, ...drained.failures]);
  return {
    level: {
      nice,
      perCore,
      bodies,
      startMs: round(started.elapsedMs),
      startFailures: started.failures.length,
      msPerStart: round(started.elapsedMs / bodies, 2),
      coresUsed: cpu.server,
      otherCores: cpu.others,
      statusP50Ms: round(quantile(status.latenciesMs, 0.5), 2),
      statusP99Ms: round(quantile(status.latenciesMs, 0.99), 2),
      statusRequests: status.latenciesMs.length,
      stopRoundTripP50Ms: round(quantile(stops.stopRoundTripMs, 0.5), 2),
      stopRoundTripP99Ms: round(quantile(stops.stopRoundTripMs, 0.99), 2),
      stopToObservedP50Ms: round(quantile(stops.sendToObservedUs, 0.5) / 1000, 2),
      stopToObservedP99Ms: round(quantile(stops.sendToObservedUs, 0.99) / 1000, 2),
      stopSamples: stops.stopRoundTripMs.length,
      drainMs: round(drained.drainMs),
      msPerStop: round(drained.drainMs / Math.max(started.executions.length, 1), 2),
      bodiesKilled: killedAfter - killedBefore,
      ...counted,
      leftActive: drained.leftActive,
    },
    samples: status.latenciesMs,
  };
}
