/**
 * Body lane worker: runs an execution's long-running `body` until it returns, throws or observes
 * a stop.
 *
 * The stop check is the execution's CONTROL word in the shared control table: `shouldStop()` is one
 * `Atomics.load`, `sleep()` is an `Atomics.wait` on that word (a stop's `Atomics.notify` wakes it),
 * and the `AbortSignal` is fired from an `Atomics.waitAsync` on the same word for async bodies.
 * None of these need the main thread or a message, so a CPU-bound body sees a stop within
 * microseconds.
 */
import { workerData } from 'node:worker_threads';
import type { BodyContext, BodyReport, DefinedAction } from '../src/action.js';
import { StopRequested } from '../src/action.js';
import { MessageSchema, MetricSchema, formatZodIssues } from '../src/api/schemas.js';
import { ErrorCode, toErrorData } from '../src/errors.js';
import { createLogger, type Logger } from '../src/logging.js';
import { importActions } from '../src/runtime/modules.js';
import type { BodyEndMarker, BodyReply, BodyTask, CheckedBodyReport, WorkerBootData } from '../src/runtime/protocol.js';
import { BodyState, clockUs, ControlTable, Reason } from '../src/shm/table.js';

const boot = workerData as WorkerBootData;
const table = ControlTable.attach(boot.buffer);
const actions = new Map((await importActions(boot.actionModules)).map((action) => [action.description.id, action]));
const rootLogger = createLogger(boot.log, { thread: 'body' });

/** piscina entry point: run one body. Never throws; the outcome is the reply and the BODY word. */
export default async function runBody(task: BodyTask): Promise<BodyReply> {
  const { slot, generation } = task;
  try {
    const action = actions.get(task.actionId);
    if (action?.body === undefined) {
      return { phase: 'failed', error: { code: ErrorCode.Internal, message: `action ${task.actionId} has no body on this worker`, details: {} } };
    }
    // Queued → Running, unless the main thread marked it Skipped (stopped while queued).
    if (!table.transitionBody(slot, BodyState.Queued, BodyState.Running)) return { phase: 'skipped' };
    if (!table.isRunning(slot, generation)) {
      table.transitionBody(slot, BodyState.Running, BodyState.Skipped);
      return { phase: 'skipped' };
    }
    return await run(action, task);
  } finally {
    const marker: BodyEndMarker = { endedAtUs: clockUs() };
    task.reports.postMessage(marker);
    task.reports.close();
  }
}

async function run(action: DefinedAction, task: BodyTask): Promise<BodyReply> {
  const { slot, generation } = task;
  const controller = new AbortController();
  // Resolves on stop (only while this task keeps the thread's event loop turning, which is when it matters).
  void table.waitWhileRunningAsync(slot, generation, Number.POSITIVE_INFINITY).then(() => controller.abort(new StopRequested()));
  let logger: Logger | undefined;
  const ctx: BodyContext = {
    executionId: task.executionId,
    actionId: task.actionId,
    shouldStop: () => !table.isRunning(slot, generation),
    throwIfStopped: () => {
      if (!table.isRunning(slot, generation)) throw new StopRequested();
    },
    sleep: (ms) => table.waitWhileRunning(slot, generation, ms),
    sleepAsync: (ms) => table.waitWhileRunningAsync(slot, generation, ms),
    signal: controller.signal,
    progress: (value) => {
      if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) throw new RangeError(`progress must be a 32-bit integer, got ${value}`);
      table.setProgress(slot, value);
    },
    report: (report) => task.reports.postMessage(checkReport(report)),
    get logger() {
      logger ??= rootLogger.child({ action: task.actionId, executionId: task.executionId, phase: 'body' });
      return logger;
    },
  };
  try {
    await action.body!(Object.freeze(task.state), ctx);
    const stopped = !table.isRunning(slot, generation);
    table.transitionBody(slot, BodyState.Running, stopped ? BodyState.Stopped : BodyState.Returned);
    return { phase: stopped ? 'stopped' : 'returned' };
  } catch (error) {
    if (!table.isRunning(slot, generation)) {
      // Ended by throwing after the stop: still a cooperative stop (StopRequested or an abort error).
      table.transitionBody(slot, BodyState.Running, BodyState.Stopped);
      return error instanceof StopRequested ? { phase: 'stopped' } : { phase: 'stopped', error: toErrorData(error) };
    }
    table.transitionBody(slot, BodyState.Running, BodyState.Failed);
    // A failing body asks for its execution's stop, through the same entry point as every trigger.
    table.requestStop(slot, generation, Reason.BodyFailed);
    return { phase: 'failed', error: toErrorData(error) };
  }
}

/** Validate a report here, on the body's thread, so an author mistake surfaces where it was made. */
function checkReport(report: BodyReport): CheckedBodyReport {
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

/** Warm-up task (`WorkerPools.warmUp`): resolves once this thread has loaded the actions. */
export function ping(): boolean {
  return true;
}
