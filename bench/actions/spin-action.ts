/**
 * The benchmark's action: a stoppable attack whose body burns CPU until it is stopped.
 *
 * - `stop` appends the execution id to the file named by `BENCH_STOP_LOG` (one `appendFileSync`,
 *   an O_APPEND write, atomic between threads). The bench counts the lines per id: that is how it
 *   sees duplicate or missing author stops independently of the runtime's own counters.
 * - The body publishes the moment it observed the stop through `ctx.progress` (one atomic store,
 *   so the measurement adds nothing measurable to the stop path it measures); `stop` returns that
 *   moment and the runtime's stop-request → body-ended time as metrics of the stop answer.
 */
import { appendFileSync } from 'node:fs';
import { defineAction, z } from 'actionkit-runtime/action';
import { burnWindow, nowUs, WINDOW_MS } from '../workload.js';

/** Metric a body reports when it sees the stop: monotonic µs (see `nowUs`). */
export const OBSERVED_AT_METRIC = 'bench_observed_at_us';
/** Metric of the stop result: µs from the stop request (the winning CAS) to the body's end. */
export const STOP_TO_BODY_END_METRIC = 'bench_stop_to_body_end_us';

const Config = z.object({
  /** False for a body that returns at once (HTTP overhead and scaling runs). */
  burn: z.boolean().default(true),
  /**
   * cpu bodies: the share of every {@link WINDOW_MS} window spent burning, the rest asleep on the
   * stop word (`ctx.sleep`) — the example cpu-stress action's `cpuLoad`. 100 burns without pause.
   */
  dutyPct: z.number().int().min(1).max(100).default(100),
});

interface State {
  burn: boolean;
  dutyPct: number;
}

const stopLog = process.env['BENCH_STOP_LOG'];

/** Progress is a 32-bit integer: the observation time travels modulo 2^31 µs (35 minutes). */
const PROGRESS_MODULUS = 2 ** 31;

/** The full µs time whose residue is `residue`, latest at or before `nowUs`. */
function unwrapUs(residue: number, now: number): number {
  const base = now - (now % PROGRESS_MODULUS) + residue;
  return base > now ? base - PROGRESS_MODULUS : base;
}

/**
 * The spin action with its own id and status call interval (the heartbeat period). `cpu`: the body
 * burns CPU on a thread of its own until stopped; `io`: it awaits its stop signal on a shared io
 * thread (how thousands of executions fit in one process).
 */
export function spinAction(id: string, callInterval: string, kind: 'cpu' | 'io' = 'cpu') {
  return defineAction({
    description: {
      id,
      label: `Spin (${callInterval} heartbeat)`,
      version: '1.0.0',
      description: kind === 'cpu' ? 'Burns CPU on a body thread until stopped (benchmark).' : 'Awaits its stop on a shared body thread (benchmark).',
      kind: 'attack',
      timeControl: 'external',
      parameters: [{ name: 'duration', label: 'Duration', type: 'duration', defaultValue: '10m', required: true }],
      status: { callInterval },
    },
    config: Config,
    prepare: ({ config }) => ({ state: { burn: config.burn, dutyPct: config.dutyPct } satisfies State }),
    status: () => ({ completed: false }),
    stop: (_state, ctx) => {
      if (stopLog !== undefined) appendFileSync(stopLog, `${ctx.executionId}\n`);
      const { stopMs, phase, progress } = ctx.body;
      if (stopMs === undefined || phase !== 'stopped') return;
      const timestamp = new Date().toISOString();
      return {
        metrics: [
          { name: STOP_TO_BODY_END_METRIC, metric: { phase: String(phase) }, value: Math.round(stopMs * 1000), timestamp },
          { name: OBSERVED_AT_METRIC, metric: { phase: String(phase) }, value: unwrapUs(progress, nowUs()), timestamp },
        ],
      };
    },
    bodyKind: kind,
    body:
      kind === 'cpu'
        ? (state, ctx) => {
            if (!state.burn) return;
            const dutyPct = state.dutyPct ?? 100;
            if (dutyPct >= 100) {
              while (!ctx.shouldStop()) burnWindow(WINDOW_MS, ctx.shouldStop);
            } else {
              // Windows on a fixed grid, so a late wake-up shortens the next sleep instead of drifting.
              const busyMs = (WINDOW_MS * dutyPct) / 100;
              let windowStart = performance.now();
              while (!ctx.shouldStop()) {
                burnWindow(busyMs, ctx.shouldStop);
                windowStart += WINDOW_MS;
                const restMs = windowStart - performance.now();
                if (restMs > 0) ctx.sleep(restMs);
                else windowStart = performance.now();
              }
            }
            ctx.progress(nowUs() % PROGRESS_MODULUS);
          }
        : async (state, ctx) => {
            if (!state.burn) return;
            if (!ctx.signal.aborted) await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
            ctx.progress(nowUs() % PROGRESS_MODULUS);
          },
  });
}
