/**
 * Prime-count check: counts the primes below a limit on a worker thread and fails when that takes
 * longer than allowed — a quick way to see whether the extension's host has CPU to spare.
 *
 * The counting is CPU-bound, so it runs in `body` (a thread of its own). The body publishes its
 * running count with `ctx.progress()`; `status` reads it, reports completion once the body has
 * returned, and fails the check when the time is up first (the agent then stops the execution,
 * which stops the body).
 */
import { defineAction, ExtensionError, z } from 'actionkit-runtime/action';

/** Numbers tested between two stop checks. */
const NUMBERS_PER_CHECK = 4096;

interface State {
  limit: number;
  maxDurationMs: number;
  /** When start ran (ms since the epoch); 0 before. */
  startedAtMs: number;
}

/** Whether odd `n` > 2 is prime, by trial division with the odd primes found so far (ascending). */
function isOddPrime(n: number, oddPrimes: readonly number[]): boolean {
  for (const p of oddPrimes) {
    if (p * p > n) return true;
    if (n % p === 0) return false;
  }
  return true;
}

export default defineAction({
  description: {
    id: '{{actionPrefix}}.prime-count',
    label: 'Prime count',
    version: '0.1.0',
    description: 'Counts the primes below a limit on one CPU core of the extension host; fails when that takes longer than the maximum duration.',
    kind: 'check',
    category: 'resource',
    timeControl: 'internal',
    parameters: [
      { name: 'limit', label: 'Limit', type: 'integer', defaultValue: '5000000', minValue: 3, required: true, description: 'Count the primes below this number.' },
      { name: 'maxDuration', label: 'Maximum duration', type: 'duration', defaultValue: '30s', required: true, description: 'Fail when counting takes longer.' },
    ],
    status: { callInterval: '500ms' },
  },
  config: z.object({
    limit: z.number().int().min(3).default(5_000_000),
    // Durations arrive as milliseconds.
    maxDuration: z.number().int().positive().default(30_000),
  }),

  prepare({ config }) {
    const state: State = { limit: config.limit, maxDurationMs: config.maxDuration, startedAtMs: 0 };
    return { state };
  },

  start(state) {
    state.startedAtMs = Date.now();
  },

  body(state, ctx) {
    const oddPrimes: number[] = [];
    let count = 1; // 2
    for (let n = 3; n < state.limit; n += 2) {
      if (isOddPrime(n, oddPrimes)) {
        count++;
        // Divisors beyond the square root of the limit are never needed.
        if (n * n < state.limit) oddPrimes.push(n);
      }
      if (n % NUMBERS_PER_CHECK === 1) {
        if (ctx.shouldStop()) return;
        ctx.progress(count);
      }
    }
    ctx.progress(count);
  },

  status(state, ctx) {
    const { phase, progress } = ctx.body;
    if (phase === 'returned') {
      const text = `${progress} primes below ${state.limit}`;
      return { completed: true, messages: [{ message: text }], summary: { text, level: 'info' } };
    }
    const elapsedMs = Date.now() - state.startedAtMs;
    if (elapsedMs > state.maxDurationMs) {
      throw new ExtensionError(`Counting primes below ${state.limit} took longer than ${state.maxDurationMs} ms`, {
        detail: `${progress} primes found after ${elapsedMs} ms`,
        status: 'failed',
      });
    }
    return { completed: false, messages: [{ message: `${progress} primes so far`, level: 'debug' }] };
  },
});
