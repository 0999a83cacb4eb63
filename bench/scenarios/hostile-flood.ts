/**
 * hostileFlood: a well-behaved agent beside clients that post the largest bodies the server
 * accepts — do its status answers stay prompt, and do its executions survive?
 *
 * One server (heartbeat minimum 1 s, so an execution whose status goes unread expires after 4 s),
 * the agent in one load process and the flood in another, in this order:
 *
 * 1. the agent prepares and starts `AGENT_EXECUTIONS` executions (io bodies awaiting their stop,
 *    status call interval 250 ms) and polls each at that interval, one request at a time, until
 *    the end; a short warm-up is not measured;
 * 2. quiet: a window with nothing else; the agent's status latency and the main thread's
 *    event-loop delay (the server's own `/metrics`) over it;
 * 3. flood: for a window of the same length, `clients` connections each post bodies of exactly
 *    `ACTIONKIT_MAX_BODY_BYTES`, one after another — mostly stops for executions the server never
 *    saw whose state is a large nested array of numbers (parsed, validated and cloned to a handler
 *    thread, where the author's stop runs statelessly), some malformed (truncated JSON, an invalid
 *    id). The phase lasts until the last of them is answered; the agent keeps polling throughout;
 * 4. settle: the agent polls a little longer than the heartbeat expiry, so an execution the
 *    watchdog stopped for the silence of the flood is seen stopped.
 *
 * The peak RSS is the kernel's high-water mark of the server process (`VmHWM`, Linux).
 */
import { readFileSync } from 'node:fs';
import { quantile, round } from '../stats.js';
import { sleep, startLoad, startServer, type BenchSize, type ServerProcess } from './common.js';

export interface HostileFloodResult {
  /** The agent's executions, polled throughout. */
  executions: number;
  statusIntervalMs: number;
  /** Heartbeat expiry of the agent's executions: 4 × max(call interval, minimum interval). */
  heartbeatExpiryMs: number;
  clients: number;
  bodyBytes: number;
  /** Length of the quiet window and of the flood's sending window. */
  windowMs: number;
  statusQuietP50Ms: number;
  statusQuietP99Ms: number;
  statusQuietRequests: number;
  /** The agent's status requests sent from the first flood body to the last flood answer. */
  statusFloodP50Ms: number;
  statusFloodP99Ms: number;
  statusFloodMaxMs: number;
  statusFloodRequests: number;
  statusP99FloodOverQuiet: number;
  /** The agent's executions that ended (status said so, or the server no longer runs them): 0 is the bar. */
  executionsStopped: number;
  /** How each of them was reported, with the phase it was seen in. */
  stopped: string[];
  /** The watchdog's counters over the run: heartbeat timeouts, and main-thread stalls it excused. */
  heartbeatTimeouts: number;
  mainStallsExcused: number;
  mainExcusedMs: number;
  /** The agent's status answers other than 200 (each a failure of the agent's poll). */
  statusErrors: number;
  /** Main-thread event-loop delay, maximum over each phase (the server's `/metrics`). */
  eventLoopDelayQuietMaxMs: number;
  eventLoopDelayFloodMaxMs: number;
  /** First flood body sent → last flood answer. */
  floodMs: number;
  floodRequestsCompleted: number;
  /** Flood requests that got no HTTP answer (connection reset, timeout). */
  floodRequestsFailed: number;
  floodRequestsPerSec: number;
  /** Flood answers by `<variant> → <HTTP status or error code>`. */
  floodAnswers: Record<string, number>;
  /** Server RSS high-water mark at the end of the quiet window and at the end of the run; RSS at the end. */
  rssPeakQuietMiB: number;
  rssPeakMiB: number;
  rssEndMiB: number;
}

/** The agent's action: an io body awaiting its stop, status call interval 250 ms (bench/actions/wait-expiring.ts). */
const AGENT_ACTION = 'bench.wait-expiring';
const AGENT_EXECUTIONS = 5;
const STATUS_INTERVAL_MS = 250;
/** `ACTIONKIT_HEARTBEAT_MIN_INTERVAL`: the heartbeat interval is max(250 ms, 1 s) = 1 s, the expiry 4 s. */
const HEARTBEAT_MIN_INTERVAL_MS = 1_000;
const HEARTBEAT_EXPIRY_MS = 4 * Math.max(STATUS_INTERVAL_MS, HEARTBEAT_MIN_INTERVAL_MS);
/** The runtime's default `ACTIONKIT_MAX_BODY_BYTES`, set explicitly so that the bodies match it. */
const MAX_BODY_BYTES = 5 * 1024 ** 2;
/** The endpoint flooded: stops of the cpu spin action (its author stop returns at once). */
const FLOOD_PATH = '/bench.spin/stop';
const WARM_UP_MS = 1_000;
/** After the flood, longer than the heartbeat expiry: a stop for the flood's silence is seen by then. */
const SETTLE_MS = HEARTBEAT_EXPIRY_MS + 1_000;

export async function hostileFlood(size: BenchSize): Promise<HostileFloodResult> {
  const { clients, windowMs } = size.quick ? { clients: 10, windowMs: 10_000 } : { clients: 40, windowMs: 15_000 };
  const server = await startServer({
    ACTIONKIT_HEARTBEAT_MIN_INTERVAL: `${HEARTBEAT_MIN_INTERVAL_MS}ms`,
    ACTIONKIT_MAX_BODY_BYTES: String(MAX_BODY_BYTES),
  });
  // Two client processes: the flood's sending must not delay the agent's own requests and timing.
  const agent = await startLoad();
  const flooder = await startLoad();
  try {
    const before = (await server.stats()).watchdog;
    const { executions } = await agent.call<{ executions: unknown[] }>('agentStart', {
      base: server.base,
      action: AGENT_ACTION,
      count: AGENT_EXECUTIONS,
      intervalMs: STATUS_INTERVAL_MS,
    });
    await sleep(WARM_UP_MS);

    await agent.call('agentPhase', { phase: 'quiet' });
    await loopDelayMaxMs(server); // resets the server's event-loop histogram: the next reading covers the quiet window
    await sleep(windowMs);
    const eventLoopDelayQuietMaxMs = await loopDelayMaxMs(server);
    const rssPeakQuietMiB = processMemoryMiB(server.pid, 'VmHWM');

    await agent.call('agentPhase', { phase: 'flood' });
    const flooded = await flooder.call<{ completed: number; failed: number; answers: Record<string, number>; floodMs: number }>('flood', {
      base: server.base,
      path: FLOOD_PATH,
      clients,
      durationMs: windowMs,
      bodyBytes: MAX_BODY_BYTES,
    });
    await agent.call('agentPhase', { phase: 'settle' });
    const eventLoopDelayFloodMaxMs = await loopDelayMaxMs(server);
    await sleep(SETTLE_MS);
    const polled = await agent.call<{ latenciesMs: Record<string, number[]>; stopped: { id: string; phase: string; title: string }[]; failureCount: number }>('agentEnd', {});

    const stats = await server.stats();
    const quiet = polled.latenciesMs['quiet'] ?? [];
    const flood = polled.latenciesMs['flood'] ?? [];
    // Stopped as the agent saw it, or as the server counts: an execution no longer active ended.
    const executionsStopped = Math.max(polled.stopped.length, executions.length - stats.activeExecutions);
    return {
      executions: executions.length,
      statusIntervalMs: STATUS_INTERVAL_MS,
      heartbeatExpiryMs: HEARTBEAT_EXPIRY_MS,
      clients,
      bodyBytes: MAX_BODY_BYTES,
      windowMs,
      statusQuietP50Ms: round(quantile(quiet, 0.5), 2),
      statusQuietP99Ms: round(quantile(quiet, 0.99), 2),
      statusQuietRequests: quiet.length,
      statusFloodP50Ms: round(quantile(flood, 0.5), 2),
      statusFloodP99Ms: round(quantile(flood, 0.99), 2),
      statusFloodMaxMs: round(quantile(flood, 1), 2),
      statusFloodRequests: flood.length,
      statusP99FloodOverQuiet: round(quantile(flood, 0.99) / quantile(quiet, 0.99), 2),
      executionsStopped,
      stopped: polled.stopped.map((s) => `${s.id} (${s.phase}): ${s.title}`),
      heartbeatTimeouts: stats.watchdog.heartbeatTimeouts - before.heartbeatTimeouts,
      mainStallsExcused: stats.watchdog.mainStalls - before.mainStalls,
      mainExcusedMs: stats.watchdog.mainExcusedMs - before.mainExcusedMs,
      statusErrors: polled.failureCount,
      eventLoopDelayQuietMaxMs,
      eventLoopDelayFloodMaxMs,
      floodMs: round(flooded.floodMs),
      floodRequestsCompleted: flooded.completed,
      floodRequestsFailed: flooded.failed,
      floodRequestsPerSec: round((flooded.completed * 1000) / flooded.floodMs, 2),
      floodAnswers: flooded.answers,
      rssPeakQuietMiB,
      rssPeakMiB: processMemoryMiB(server.pid, 'VmHWM'),
      rssEndMiB: processMemoryMiB(server.pid, 'VmRSS'),
    };
  } finally {
    await flooder.stop();
    await agent.stop();
    await server.stop();
  }
}

/**
 * The server's `actionkit_event_loop_delay_max_seconds` in ms: the longest main-thread event-loop
 * delay since the previous scrape (each scrape resets it; nothing else scrapes this server).
 */
async function loopDelayMaxMs(server: ServerProcess): Promise<number> {
  const line = (await server.metrics()).split('\n').find((l) => l.startsWith('actionkit_event_loop_delay_max_seconds '));
  if (line === undefined) throw new Error('/metrics has no actionkit_event_loop_delay_max_seconds');
  return round(Number(line.slice(line.indexOf(' ') + 1)) * 1000, 1);
}

/** `VmHWM` (peak RSS) or `VmRSS` of a process from /proc, in MiB; NaN where there is no /proc. */
function processMemoryMiB(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? Number.NaN : round(Number(match[1]) / 1024);
  } catch {
    return Number.NaN;
  }
}
