/**
 * Test-only hold points of the main thread. The lifecycle announces a few named points of an
 * execution's flow; a test that installed hooks may answer with a promise, and the flow waits for
 * it there — so a test can force "the start is waiting for the lock while SIGUSR1 stops the
 * execution" deterministically. Worker threads have their own points (`src/shm/test-gates.ts`),
 * whose buffer is handed to them through these hooks.
 *
 * In production no hooks are installed: a point costs one `undefined` comparison, and the flow
 * does not even await.
 *
 * @internal Not part of the public API.
 */
import type { TestGates } from '../shm/test-gates.js';

/** Named points of the main thread's execution flow. */
export type TestPoint =
  /** The author's prepare settled (ok or failed); nothing has been booked yet. */
  | 'prepare.settled'
  /** A failed prepare is about to remove its uploaded files (then release its control block). */
  | 'prepare.removing-uploads'
  /** A start is about to wait for its execution's lock. */
  | 'start.before-lock'
  /** The author's start settled; the body is not dispatched yet. */
  | 'start.settled'
  /** The stop queue loop took a stop; the stop run is about to end the body. */
  | 'stop.taken'
  /** A stop ended the body and is about to wait for the execution's lock to run the author's stop. */
  | 'stop.body-ended'
  /** A stop's outcome is decided; the control block is not finished yet. */
  | 'stop.decided';

/** What a test installs. */
export interface TestHooks {
  /** Called at every point; return a promise to hold the flow there until it settles. */
  at?(point: TestPoint, executionId: string): Promise<void> | void;
  /** Hold points for body threads (created by the test, passed to the body threads at boot). */
  gates?: TestGates;
}

let installed: TestHooks | undefined;

/** Install hooks (tests only); returns the uninstaller. Extensions created afterwards pass the gates to their threads. */
export function installTestHooks(hooks: TestHooks): () => void {
  installed = hooks;
  return () => {
    if (installed === hooks) installed = undefined;
  };
}

/** The flow reached `point` for `executionId`: a promise to await if a test holds it, else undefined. */
export function testPoint(point: TestPoint, executionId: string): Promise<void> | undefined {
  return installed?.at?.(point, executionId) ?? undefined;
}

/** The body threads' gates, when a test installed them. */
export function installedGates(): TestGates | undefined {
  return installed?.gates;
}
