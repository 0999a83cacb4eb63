/**
 * Forcing interleavings: hold an execution's flow at a named point of the main thread
 * (`src/runtime/test-points.ts`) or hold a body thread at a gate (`src/shm/test-gates.ts`) while
 * the test makes something else happen, then let it go. Create a {@link Holds} before the
 * extension (its body threads get the gates when they start), dispose it after.
 */
import { installTestHooks, type TestPoint } from '../../src/runtime/test-points.js';
import { GatePoint, TestGates } from '../../src/shm/test-gates.js';

/** One armed hold: resolves `reached` when the flow arrives, waits there until `release()` — or throws `fail()`'s error there. */
export interface Hold {
  reached: Promise<void>;
  release(): void;
  /** Make the held flow throw `error` at the point (an injected failure). */
  fail(error: Error): void;
}

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (error: Error) => void } {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** The test side of the hold points. */
export class Holds {
  /** Gates for body threads: `gates.arm(GatePoint.X)`, `await gates.arrived(...)`, `gates.open(...)`. */
  readonly gates = TestGates.create();
  private readonly armed = new Map<string, { reached: () => void; released: Promise<void> }>();
  /** Every hold's release, so dispose() frees a flow a failed test left held. */
  private readonly releases: (() => void)[] = [];
  private readonly arrivals = new Set<string>();
  private readonly observed = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  private readonly uninstall: () => void;

  constructor() {
    this.uninstall = installTestHooks({ gates: this.gates, at: (point, executionId) => this.at(point, executionId) });
  }

  /** Hold the next arrival of `executionId` at `point` until `release()`. */
  hold(point: TestPoint, executionId: string): Hold {
    const reached = deferred();
    const released = deferred();
    this.armed.set(`${point} ${executionId}`, { reached: reached.resolve, released: released.promise });
    this.releases.push(released.resolve);
    return { reached: reached.promise, release: released.resolve, fail: released.reject };
  }

  /** Resolves when `executionId` arrives at `point` (now or earlier), without holding it. */
  reached(point: TestPoint, executionId: string): Promise<void> {
    return this.observation(`${point} ${executionId}`).promise;
  }

  /** True if `executionId` has arrived at `point`. */
  hasReached(point: TestPoint, executionId: string): boolean {
    return this.arrivals.has(`${point} ${executionId}`);
  }

  /** Uninstall the hooks and release everything still held (main-thread points and body gates). */
  dispose(): void {
    this.uninstall();
    this.armed.clear();
    for (const release of this.releases) release();
    for (const point of Object.values(GatePoint)) this.gates.open(point);
  }

  private at(point: TestPoint, executionId: string): Promise<void> | undefined {
    const key = `${point} ${executionId}`;
    this.arrivals.add(key);
    this.observation(key).resolve();
    const hold = this.armed.get(key);
    if (hold === undefined) return undefined;
    this.armed.delete(key);
    hold.reached();
    return hold.released;
  }

  private observation(key: string): { promise: Promise<void>; resolve: () => void } {
    let entry = this.observed.get(key);
    if (entry === undefined) this.observed.set(key, (entry = deferred()));
    return entry;
  }
}
