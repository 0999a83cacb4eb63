/**
 * The CPU work every benchmark body does, shared by the runtime's body thread and the inline
 * baseline on the main thread so both sides burn exactly the same loop.
 *
 * It is the hot loop of the example cpu-stress action: multiply-xor rounds, with a stop check every
 * {@link ITERATIONS_PER_CHECK} rounds (a few microseconds of work).
 */

/** Rounds of the hot loop between two stop checks. */
const ITERATIONS_PER_CHECK = 256;
/**
 * Length of one burn window. The runtime's body loops windows without ever yielding; the inline
 * baseline yields to its event loop between windows — the natural place for an author without
 * worker threads. 100 ms is the duty-cycle window of the example cpu-stress action.
 */
export const WINDOW_MS = 100;

let sink = 0x811c9dc5;

/** Burn CPU for up to `windowMs`, returning early once `shouldStop()` is true. */
export function burnWindow(windowMs: number, shouldStop: () => boolean): void {
  const until = performance.now() + windowMs;
  let hash = sink;
  while (!shouldStop()) {
    for (let i = 0; i < ITERATIONS_PER_CHECK; i++) hash = Math.imul(hash ^ i, 0x01000193);
    if (performance.now() >= until) break;
  }
  sink = hash; // keeps the loop observable, so it cannot be optimised away
}

/**
 * Microseconds on the machine's monotonic clock. `process.hrtime` reads CLOCK_MONOTONIC, which is
 * the same in every thread and every process of the machine, so times taken by the load generator,
 * the server's threads and the bench itself can be subtracted.
 */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}
