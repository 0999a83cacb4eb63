/**
 * CPU stress attack: burns one CPU core at a chosen load on the execution's body thread, and offers
 * a metric query with the host's CPU utilisation so the platform can chart the effect.
 *
 * The body is plain synchronous JavaScript. It stays responsive to stops without any message
 * passing: `ctx.shouldStop()` is a single atomic load, so it is cheap enough to call inside the hot
 * loop, and `ctx.sleep()` wakes within microseconds when the stop arrives.
 */
import * as os from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { defineAction, ExtensionError, z } from 'actionkit-runtime/action';
import { HOST_ATTRIBUTES, HOST_TARGET_TYPE } from '../lib/host.js';
import { durationMs, formatMs, formatPercent } from '../lib/params.js';

/** One duty cycle: busy for `cpuLoad`% of it, asleep for the rest. Short enough to look smooth in `top`. */
const WINDOW_MS = 100;
/** Iterations of the hot loop between two stop checks (and clock reads): ~10 µs of work. */
const ITERATIONS_PER_CHECK = 1024;
/** How often the body reports its measured busy ratio. */
const REPORT_INTERVAL_MS = 1000;
/** Gap between the two `os.cpus()` samples of the metric query. */
const CPU_SAMPLE_MS = 200;

const BUSY_RATIO_METRIC = 'cpu_stress_busy_ratio';
const STOP_LATENCY_METRIC = 'cpu_stress_stop_latency_ms';

const Config = z.object({
  duration: durationMs(),
  cpuLoad: z.number().int().min(1).max(100).default(100),
});

interface State {
  durationMs: number;
  cpuLoad: number;
  /** Wall-clock ms when start ran; 0 before. */
  startedAtMs: number;
}

/** Sum of busy and total CPU time over all cores since boot (ms). */
function cpuTimes(): { busyMs: number; totalMs: number } {
  let busyMs = 0;
  let totalMs = 0;
  for (const { times } of os.cpus()) {
    const total = times.user + times.nice + times.sys + times.irq + times.idle;
    totalMs += total;
    busyMs += total - times.idle;
  }
  return { busyMs, totalMs };
}

export default defineAction({
  description: {
    id: 'com.example.actionkit.cpu-stress',
    label: 'Stress CPU',
    version: '1.0.0',
    description: 'Burns one CPU core of the extension host at the chosen load for the given duration, to see how co-located services cope with CPU contention.',
    kind: 'attack',
    category: 'resource',
    // The host discovery of this extension (`example/discovery/host.ts`) offers the host as its target.
    targetSelection: { targetType: HOST_TARGET_TYPE },
    technology: 'Node.js',
    timeControl: 'external',
    parameters: [
      { name: 'duration', label: 'Duration', type: 'duration', defaultValue: '30s', required: true, description: 'How long to burn CPU.' },
      {
        name: 'cpuLoad',
        label: 'CPU load',
        type: 'percentage',
        defaultValue: '100',
        minValue: 1,
        maxValue: 100,
        required: true,
        description: 'Share of one core to keep busy. The load is a duty cycle: busy for this share of every 100 ms, idle for the rest.',
      },
    ],
    hint: { type: 'hint_info', content: 'One execution loads **one** core. Run several executions in parallel to load more cores.' },
    metrics: { query: { endpoint: { callInterval: '1s' }, parameters: [] } },
  },
  config: Config,

  prepare({ config, target }) {
    // It can only burn the CPU of the host it runs on: refuse a target discovered elsewhere.
    const targetHost = target?.attributes[HOST_ATTRIBUTES.name]?.[0];
    if (targetHost !== undefined && targetHost !== os.hostname()) {
      throw new ExtensionError('Target is another host', { detail: `this extension runs on ${os.hostname()} and can only stress that host, not ${targetHost}` });
    }
    const state: State = { durationMs: config.duration, cpuLoad: config.cpuLoad, startedAtMs: 0 };
    return { state };
  },

  start(state) {
    state.startedAtMs = Date.now();
    return { messages: [{ message: `Burning ${state.cpuLoad}% of one CPU core for ${formatMs(state.durationMs)}` }] };
  },

  body(state, ctx) {
    // Stop burning on time even if the agent's stop comes late (or never: the heartbeat then stops us).
    const endAtMs = state.startedAtMs + state.durationMs;
    const busyPerWindowMs = (WINDOW_MS * state.cpuLoad) / 100;
    let hash = 0x811c9dc5; // the hot loop's result; read at the end so the loop cannot be optimised away
    let busySinceReportMs = 0;
    let reportedAt = performance.now();

    while (!ctx.shouldStop() && Date.now() < endAtMs) {
      const windowStart = performance.now();
      const busyUntil = windowStart + busyPerWindowMs;
      let now = windowStart;
      while (now < busyUntil && !ctx.shouldStop()) {
        for (let i = 0; i < ITERATIONS_PER_CHECK; i++) hash = Math.imul(hash ^ i, 0x01000193);
        now = performance.now();
      }
      busySinceReportMs += now - windowStart;
      const restMs = windowStart + WINDOW_MS - performance.now();
      if (restMs > 0 && ctx.sleep(restMs)) break;

      const sinceReportMs = performance.now() - reportedAt;
      if (sinceReportMs >= REPORT_INTERVAL_MS) {
        ctx.report({
          metrics: [{ name: BUSY_RATIO_METRIC, metric: { target_load: String(state.cpuLoad) }, value: Number((busySinceReportMs / sinceReportMs).toFixed(3)) }],
        });
        ctx.progress(Math.floor((Date.now() - state.startedAtMs) / 1000));
        busySinceReportMs = 0;
        reportedAt = performance.now();
      }
    }
    // Practically never true; it only keeps `hash` alive. (Logging unconditionally would add the
    // cost of creating the logger to the measured stop latency.)
    if (hash === 0) ctx.logger.trace('hash collapsed to 0');
  },

  stop(state, ctx) {
    const burnedMs = state.startedAtMs === 0 ? 0 : Math.min(Date.now(), state.startedAtMs + state.durationMs) - state.startedAtMs;
    const { phase, stopMs } = ctx.body;
    const ending =
      phase === 'stopped' && stopMs !== undefined
        ? `the body stopped cooperatively ${formatMs(stopMs)} after the stop request`
        : phase === 'returned'
          ? 'the body had already finished (duration elapsed)'
          : `the body ended as "${phase}"${stopMs === undefined ? '' : ` after ${formatMs(stopMs)}`}`;
    const text = `Burned ${state.cpuLoad}% of one CPU core for ${formatMs(burnedMs)}; ${ending}.`;
    return {
      messages: [{ message: text, level: phase === 'killed' ? 'warn' : 'info' }],
      // Stop latency as a number, so dashboards (and tests) need not parse the message.
      metrics:
        stopMs === undefined ? [] : [{ name: STOP_LATENCY_METRIC, metric: { body_phase: phase }, value: stopMs, timestamp: new Date().toISOString() }],
      summary: { text, level: phase === 'killed' ? 'warning' : 'info' },
    };
  },

  /** Host CPU utilisation over a short window, plus the 1-minute load average. */
  async query() {
    const before = cpuTimes();
    await delay(CPU_SAMPLE_MS);
    const after = cpuTimes();
    const totalMs = after.totalMs - before.totalMs;
    const utilisation = totalMs > 0 ? (after.busyMs - before.busyMs) / totalMs : 0;
    const labels = { host: os.hostname() };
    const timestamp = new Date().toISOString();
    return {
      metrics: [
        { name: 'host_cpu_utilisation_percent', metric: labels, value: Number((utilisation * 100).toFixed(1)), timestamp },
        { name: 'host_load1', metric: labels, value: os.loadavg()[0] ?? 0, timestamp },
      ],
      messages: [{ message: `Host CPU ${formatPercent(utilisation)} busy across ${os.cpus().length} cores`, level: 'debug' }],
    };
  },
});
