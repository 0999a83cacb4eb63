/**
 * Body thread (loaded by `./bodies.ts`, which first lowered the thread's priority): runs execution
 * bodies handed to it by the main thread (`src/runtime/body-threads.ts`).
 * A `cpu` thread runs one body at a time and nothing else; an `io` thread runs many async bodies
 * side by side.
 *
 * The thread is driven by messages on its port, never by `Atomics.wait` between runs: its event
 * loop keeps turning while it is idle, so timers and sockets a body opened (a fetch's keep-alive
 * connection closed by the server, say) are serviced at once, not when the next body arrives.
 *
 * The stop check is the execution's CONTROL word in the shared control table: `shouldStop()` is one
 * `Atomics.load`, `sleep()` is an `Atomics.wait` on that word (a stop's `Atomics.notify` wakes it),
 * and the `AbortSignal` is fired from an `Atomics.waitAsync` on the same word. None of these need
 * the main thread or a message, so a CPU-bound body sees a stop within microseconds.
 *
 * Per run, in this order: BODY Queued → Running (CAS with the generation), `began`, the body,
 * BODY → Returned | Stopped | Failed, context closed, `ended`. After `ended` nothing of the run
 * touches shared memory (see the PROGRESS rule in `src/shm/table.ts`).
 */
import { getPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type { BodyContext, BodyReport, DefinedAction, JsonObject } from '../src/action.js';
import { BODY_RESULT_MAX_BYTES, StopRequested } from '../src/action.js';
import { MessageSchema, MetricSchema, formatZodIssues } from '../src/api/schemas.js';
import { ErrorCode, toErrorData } from '../src/errors.js';
import { assertJson, checkedJsonText, NotJsonError } from '../src/json.js';
import { createLogger, type Logger } from '../src/logging.js';
import { importActions } from '../src/runtime/modules.js';
import { stateOfWire } from '../src/runtime/sealed.js';
import type { BodyReply, WireBodyTask, BodyThreadBootData, BodyThreadCommand, BodyThreadEvent, CheckedBodyReport } from '../src/runtime/protocol.js';
import { BodyState, clockUs, ControlTable, Reason } from '../src/shm/table.js';
import { GatePoint, TestGates } from '../src/shm/test-gates.js';

const boot = workerData as BodyThreadBootData;
const port = parentPort!;
const table = ControlTable.attach(boot.buffer);
const gates = boot.gates === undefined ? undefined : TestGates.attach(boot.gates);
const rootLogger = createLogger(boot.log, { thread: `body-${boot.kind}` });
if (boot.nice > 0 && getPriority(0) !== boot.nice) rootLogger.warn({ nice: boot.nice, actual: getPriority(0) }, 'could not lower the priority of a body thread');
const actions = new Map((await importActions(boot.actionModules)).map((action) => [action.description.id, action]));

function post(event: BodyThreadEvent): void {
  port.postMessage(event);
}

port.on('message', (command: BodyThreadCommand) => {
  if (command.type === 'run') void run(command.runId, command.task);
});
/**
 * What keeps this thread's event loop alive when it runs nothing (its port): a body that leaves more
 * behind leaves it unclean. Judged on cpu threads only (one body at a time): an io thread's loop is
 * shared by all its bodies, so its resources say nothing about the one that ended, and listing them
 * at each of thousands of body ends was most of an io thread's work in a stop storm.
 */
const idleResources = boot.kind === 'cpu' ? activeResources() : undefined;
post({ type: 'ready' });

/** The thread's active handles and requests, but those being closed (`CloseReq`: on their way out). */
function activeResources(): string {
  return process
    .getActiveResourcesInfo()
    .filter((resource) => resource !== 'CloseReq')
    .sort()
    .join(',');
}

/** Run one body; never throws. The outcome is the `ended` event and the BODY word. */
async function run(runId: number, task: WireBodyTask): Promise<void> {
  gates?.pass(GatePoint.BodyBeforeBegin);
  const { slot, generation } = task;
  let reply: BodyReply & { endedAtUs?: number };
  const action = actions.get(task.actionId);
  if (action?.body === undefined) {
    table.transitionBody(slot, generation, BodyState.Queued, BodyState.Failed);
    reply = { phase: 'failed', error: { code: ErrorCode.Internal, message: `action ${task.actionId} has no body on this thread`, details: {} } };
  } else if (!table.transitionBody(slot, generation, BodyState.Queued, BodyState.Running)) {
    // Only the main thread moves a Queued body otherwise, when it gave this thread up as lost.
    reply = { phase: 'skipped' };
  } else if (!table.isRunning(slot, generation)) {
    // The execution was stopped before its body began: it never runs.
    table.transitionBody(slot, generation, BodyState.Running, BodyState.Skipped);
    reply = { phase: 'skipped' };
  } else {
    post({ type: 'began', runId });
    reply = await runBody(runId, action, task);
  }
  const endedAtUs = reply.endedAtUs ?? clockUs();
  // Let the work the body queued behind itself (promise chains) run first: a thread still busy with
  // it has not ended its run — its stop kills it at the end of the grace period — and only a thread
  // that got here, idle, with nothing left behind takes another body.
  await new Promise((resolve) => setImmediate(resolve));
  gates?.pass(GatePoint.BodyBeforeEnded);
  const clean = idleResources === undefined || activeResources() === idleResources;
  post({ type: 'ended', runId, phase: reply.phase, ...(reply.error === undefined ? {} : { error: reply.error }), endedAtUs, clean });
}

/** Run the author's body; the reply says how it ended and when (shared-clock µs, taken the moment its code returned or threw). */
async function runBody(runId: number, action: DefinedAction, task: WireBodyTask): Promise<BodyReply & { endedAtUs: number }> {
  const { slot, generation } = task;
  const controller = new AbortController();
  // Resolves on stop; the thread's port keeps the event loop alive while it waits.
  void table.waitWhileRunningAsync(slot, generation, Number.POSITIVE_INFINITY).then(() => controller.abort(new StopRequested()));
  /** Open until the body settles: afterwards its leftovers (a timer, a late promise) cannot reach shared memory or the agent. */
  let open = true;
  let logger: Logger | undefined;
  const results = new ResultCoalescer((json) => post({ type: 'result', runId, json }));
  const ctx: BodyContext = {
    executionId: task.executionId,
    actionId: task.actionId,
    // A result waiting for its interval goes out from the body's own calls too: a busy or
    // sleeping body never turns its event loop, where the coalescer's timer would fire.
    shouldStop: () => {
      results.sendIfDue();
      return !table.isRunning(slot, generation);
    },
    throwIfStopped: () => {
      results.sendIfDue();
      if (!table.isRunning(slot, generation)) throw new StopRequested();
    },
    sleep:
      boot.kind === 'cpu'
        ? (ms) => {
            results.flush();
            return table.waitWhileRunning(slot, generation, ms);
          }
        : () => {
            throw new TypeError(`ctx.sleep() blocks the thread, and an 'io' body shares its thread with other bodies: use await ctx.sleepAsync(ms), or declare bodyKind: 'cpu'`);
          },
    sleepAsync: (ms) => table.waitWhileRunningAsync(slot, generation, ms),
    signal: controller.signal,
    progress: (value) => {
      if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) throw new RangeError(`progress must be a 32-bit integer, got ${value}`);
      if (open) table.setProgress(slot, generation, value);
    },
    report: (report) => {
      const checked = checkReport(report);
      if (open) post({ type: 'report', runId, ...checked });
    },
    publish: (value) => {
      const json = checkResult(value);
      if (open) results.publish(json);
    },
    get logger() {
      logger ??= rootLogger.child({ action: task.actionId, executionId: task.executionId, phase: 'body' });
      return logger;
    },
  };
  try {
    // A synchronous body is not awaited: its end is stamped without a turn of the microtask queue.
    // The state after start: it passed the JSON check on the handler thread.
    const returned = action.body!(Object.freeze((stateOfWire(task) ?? {}) as JsonObject), ctx);
    if (returned instanceof Promise) await returned;
    const endedAtUs = clockUs();
    results.flush();
    open = false;
    const stopped = !table.isRunning(slot, generation);
    table.transitionBody(slot, generation, BodyState.Running, stopped ? BodyState.Stopped : BodyState.Returned);
    return { phase: stopped ? 'stopped' : 'returned', endedAtUs };
  } catch (error) {
    const endedAtUs = clockUs();
    results.flush();
    open = false;
    if (!table.isRunning(slot, generation)) {
      // Ended by throwing after the stop: still a cooperative stop (StopRequested or an abort error).
      table.transitionBody(slot, generation, BodyState.Running, BodyState.Stopped);
      return error instanceof StopRequested ? { phase: 'stopped', endedAtUs } : { phase: 'stopped', error: toErrorData(error), endedAtUs };
    }
    table.transitionBody(slot, generation, BodyState.Running, BodyState.Failed);
    // A failing body asks for its execution's stop, through the same entry point as every trigger.
    table.requestStop(slot, generation, Reason.BodyFailed);
    return { phase: 'failed', error: toErrorData(error), endedAtUs };
  }
}

/** Published results are sent at most this often; a newer one replaces one not sent yet. */
const RESULT_MIN_INTERVAL_MS = 10;

/**
 * `ctx.publish` without a backlog: a body that publishes in a tight loop must not queue a message
 * per call (memory, and status reading a value far behind). At most one result goes out per
 * {@link RESULT_MIN_INTERVAL_MS}; a result published sooner waits, replaced by any newer one, and
 * goes out once the interval has passed — at the body's next publish, `shouldStop()` or
 * `throwIfStopped()`, at the timer (when its event loop turns) — before a blocking `ctx.sleep()`,
 * and when the body ends, before its `ended`, so stop always reads the last one.
 */
class ResultCoalescer {
  private lastSentMs = Number.NEGATIVE_INFINITY;
  private pending: string | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly send: (json: string) => void) {}

  publish(json: string): void {
    const sinceMs = performance.now() - this.lastSentMs;
    if (sinceMs >= RESULT_MIN_INTERVAL_MS) return this.sendNow(json);
    this.pending = json;
    this.timer ??= setTimeout(() => this.flush(), RESULT_MIN_INTERVAL_MS - sinceMs);
  }

  /** Send what waits once its interval has passed (cheap when nothing waits: the body's hot path). */
  sendIfDue(): void {
    if (this.pending !== undefined && performance.now() - this.lastSentMs >= RESULT_MIN_INTERVAL_MS) this.flush();
  }

  /** Send what waits (if anything) and stop the timer: nothing of the body may stay on the thread. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const pending = this.pending;
    if (pending !== undefined) this.sendNow(pending);
  }

  private sendNow(json: string): void {
    this.pending = undefined;
    this.lastSentMs = performance.now();
    this.send(json);
  }
}

/**
 * The JSON text of a published result, checked here, on the body's thread, so an author mistake
 * throws where it was made: JSON (`src/json.ts`) and at most {@link BODY_RESULT_MAX_BYTES}.
 */
function checkResult(value: unknown): string {
  let json: string | undefined;
  try {
    json = checkedJsonText(value, 'result');
  } catch (error) {
    if (error instanceof NotJsonError) throw new TypeError(`ctx.publish: ${error.message}`);
    throw error;
  }
  if (json === undefined) throw new TypeError('ctx.publish: undefined is not JSON; publish null for "no result"');
  // UTF-8 bytes are at most 3 per UTF-16 unit: count them only when the text could be too large.
  if (json.length * 3 > BODY_RESULT_MAX_BYTES) {
    const bytes = Buffer.byteLength(json, 'utf8');
    if (bytes > BODY_RESULT_MAX_BYTES) {
      throw new RangeError(`ctx.publish: the result is ${bytes} bytes of JSON, more than ${BODY_RESULT_MAX_BYTES}; publish a summary and keep bulky data in a file`);
    }
  }
  return json;
}

/** Validate a report here, on the body's thread, so an author mistake surfaces where it was made. */
function checkReport(report: BodyReport): CheckedBodyReport {
  try {
    assertJson(report, '');
  } catch (error) {
    if (error instanceof NotJsonError) throw new TypeError(`ctx.report: ${error.message}`);
    throw error;
  }
  const out: CheckedBodyReport = {};
  if (report.messages !== undefined) out.messages = report.messages.map((m, i) => parseOrThrow(MessageSchema, m, `messages[${i}]`));
  if (report.metrics !== undefined) {
    out.metrics = report.metrics.map((m, i) =>
      parseOrThrow(MetricSchema, { ...m, timestamp: m.timestamp ?? new Date().toISOString() }, `metrics[${i}]`),
    );
  }
  return out;
}

function parseOrThrow<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: import('zod').ZodError } }, value: unknown, where: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new TypeError(`ctx.report: ${where}: ${formatZodIssues(parsed.error).first}`);
  return parsed.data;
}
