/**
 * An agent on its own thread: polls `status` of executions at an interval over real HTTP while the
 * test's main thread — which also runs the extension under test — may be blocked. The test steers
 * it and reads its counts through a SharedArrayBuffer ({@link PollerControl}), never through
 * messages, which a blocked main thread could not receive.
 *
 * Blocking hand-shake: the test stores BLOCK = 1 and blocks its thread in `Atomics.wait` on
 * RELEASE. The poller notes when it saw BLOCK, and releases the test (RELEASE = 1 + notify) once
 * `blockMs` have passed since then **and** every execution it polls has had a status request sent
 * after that moment — so "the main thread was blocked for that long while the agent's requests
 * were queued" holds by construction, whatever the machine's load.
 */
import { parentPort, workerData, Worker } from 'node:worker_threads';

/** What the poller needs. */
export interface PollerData {
  base: string;
  actionId: string;
  executions: { id: string; state: unknown }[];
  intervalMs: number;
  blockMs: number;
  control: SharedArrayBuffer;
}

const STOP = 0;
const BLOCK = 1;
const RELEASE = 2;
const HEADER = 4;
const WORDS_PER_EXECUTION = 5;
const POLL = 0;
const SENT = 1;
const ANSWERED = 2;
const STOPPED = 3;
const SENT_IN_BLOCK = 4;
/** Requests in flight per execution (they pile up while the server is blocked). */
const MAX_IN_FLIGHT = 3;

/** The test's side of the poller. */
export class PollerControl {
  readonly buffer: SharedArrayBuffer;
  private readonly words: Int32Array;

  constructor(readonly executions: number) {
    this.buffer = new SharedArrayBuffer((HEADER + executions * WORDS_PER_EXECUTION) * 4);
    this.words = new Int32Array(this.buffer);
    for (let i = 0; i < executions; i++) this.setPolling(i, true);
  }

  /** Start a poller thread for `data` (without `control`, which is this). */
  spawn(data: Omit<PollerData, 'control'>): Worker {
    return new Worker(new URL('./status-poller.js', import.meta.url), { workerData: { ...data, control: this.buffer } satisfies PollerData });
  }

  /** Poll execution `i` or leave it silent from now on. */
  setPolling(i: number, on: boolean): void {
    Atomics.store(this.words, HEADER + i * WORDS_PER_EXECUTION + POLL, on ? 1 : 0);
  }

  /** Requests sent / answered for execution `i`; `stopped`: some answer said the execution had ended. */
  counts(i: number): { sent: number; answered: number; stopped: boolean; sentInBlock: number } {
    const at = HEADER + i * WORDS_PER_EXECUTION;
    return {
      sent: Atomics.load(this.words, at + SENT),
      answered: Atomics.load(this.words, at + ANSWERED),
      stopped: Atomics.load(this.words, at + STOPPED) === 1,
      sentInBlock: Atomics.load(this.words, at + SENT_IN_BLOCK),
    };
  }

  /**
   * Block the calling thread (the extension's main thread) until the poller releases it (see the
   * module comment), at most `limitMs`. Returns false if the poller never released it.
   */
  blockUntilReleased(limitMs: number): boolean {
    Atomics.store(this.words, RELEASE, 0);
    Atomics.store(this.words, BLOCK, 1);
    return Atomics.wait(this.words, RELEASE, 0, limitMs) !== 'timed-out';
  }

  /** End the poller. */
  stop(): void {
    Atomics.store(this.words, STOP, 1);
  }
}

if (parentPort !== null && (workerData as PollerData | undefined)?.control !== undefined) run(workerData as PollerData);

function run(data: PollerData): void {
  const words = new Int32Array(data.control);
  const inFlight = data.executions.map(() => 0);
  let blockSeenAt: number | undefined;
  const at = (i: number, word: number): number => HEADER + i * WORDS_PER_EXECUTION + word;

  const send = (i: number): void => {
    const execution = data.executions[i]!;
    inFlight[i]!++;
    Atomics.add(words, at(i, SENT), 1);
    if (blockSeenAt !== undefined) Atomics.add(words, at(i, SENT_IN_BLOCK), 1);
    fetch(`${data.base}/${data.actionId}/status`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ executionId: execution.id, state: execution.state }),
    })
      .then(async (response) => {
        const body = (await response.json()) as { completed?: boolean; error?: unknown };
        if (response.status !== 200 || body.completed === true || body.error !== undefined) {
          Atomics.store(words, at(i, STOPPED), 1);
          parentPort!.postMessage({ type: 'ended', id: execution.id, status: response.status, body });
        }
        Atomics.add(words, at(i, ANSWERED), 1);
      })
      .catch((error: unknown) => parentPort!.postMessage({ type: 'error', id: execution.id, message: String(error) }))
      .finally(() => inFlight[i]!--);
  };

  const timer = setInterval(() => {
    if (Atomics.load(words, STOP) === 1) {
      clearInterval(timer);
      return;
    }
    if (Atomics.load(words, BLOCK) === 1 && blockSeenAt === undefined) {
      blockSeenAt = performance.now();
      for (let i = 0; i < data.executions.length; i++) Atomics.store(words, at(i, SENT_IN_BLOCK), 0);
    }
    for (let i = 0; i < data.executions.length; i++) {
      if (Atomics.load(words, at(i, POLL)) === 1 && inFlight[i]! < MAX_IN_FLIGHT) send(i);
    }
    if (blockSeenAt !== undefined && performance.now() - blockSeenAt >= data.blockMs) {
      const polled = data.executions.map((_, i) => i).filter((i) => Atomics.load(words, at(i, POLL)) === 1);
      if (polled.every((i) => Atomics.load(words, at(i, SENT_IN_BLOCK)) > 0)) {
        blockSeenAt = undefined;
        Atomics.store(words, BLOCK, 0);
        Atomics.store(words, RELEASE, 1);
        Atomics.notify(words, RELEASE);
      }
    }
  }, data.intervalMs);
}
