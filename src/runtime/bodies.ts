/**
 * The body lane: one execution's body on a body thread (`./body-threads.ts`), what status and stop
 * see of it, and the escalation ladder when a stop arrives.
 *
 * Contract with the lifecycle (`./lifecycle.ts`), which decides when a body starts and stops:
 * - {@link BodyLane.dispatch} hands the body to a seat reserved before the author's start ran;
 *   {@link BodyRun.began} resolves once the body's code runs (or it ended before it could);
 * - every dispatched run settles ({@link BodyRun.done}) exactly once — it ended, was killed, or its
 *   thread was lost — and only after its last report was delivered;
 * - {@link BodyLane.end} returns only once the body's code no longer runs: it ended, or its thread
 *   has exited. The lifecycle releases a control block only after that, which is what keeps an old
 *   body from touching a reused block.
 *
 * Escalation: the stop request already flipped the CONTROL word the body polls (cooperative stop,
 * microseconds). {@link BodyLane.end} waits out the rest of `graceMs`; a body still running then is
 * marked Killed (CAS on its BODY word) and its thread terminated.
 */
import type { BodyInfo, BodyPhase } from '../action.js';
import type { StateValue } from './sealed.js';
import type { ErrorData } from '../errors.js';
import type { Logger } from '../logging.js';
import { BodyState, Reason, clockUs, type ControlTable } from '../shm/table.js';
import type { BodySeat, BodyThreads } from './body-threads.js';
import type { Execution } from './executions.js';
import type { BodyKind, BodyTaskInfo } from './protocol.js';
import { settlesWithin } from './waits.js';

/** A dispatched body as the main thread tracks it. */
export class BodyRun {
  readonly kind: BodyKind;
  /** Resolves when the body's code began, or the run settled without beginning. */
  readonly began: Promise<void>;
  /** Resolves when the body ended (any way) and all its reports were delivered. */
  readonly done: Promise<void>;
  /** Message of the error the body threw (or why its thread was lost), once known. */
  error: string | undefined;
  /** Shared-clock µs at which the body's code ended, when its thread said so. */
  endedAtUs: number | undefined;
  /** JSON text of the body's latest `ctx.publish()`; kept after the body ended, for status and stop. */
  resultJson: string | undefined;
  /** True once {@link done} resolved. */
  settled = false;
  /** True once the body's code began (false for a run that settled without beginning). */
  hasBegun = false;
  readonly seat: BodySeat;
  private markBegan!: () => void;
  private markDone!: () => void;

  constructor(seat: BodySeat) {
    this.seat = seat;
    this.kind = seat.kind;
    this.began = new Promise<void>((resolve) => (this.markBegan = resolve));
    this.done = new Promise<void>((resolve) => (this.markDone = resolve));
  }

  /** The body's code runs. */
  begin(): void {
    this.hasBegun = true;
    this.markBegan();
  }

  /** The run is over; nothing of it runs any more. */
  settle(): void {
    this.settled = true;
    this.markBegan();
    this.markDone();
  }
}

/** How a body ended when its execution was stopped. */
export interface BodyEnd {
  phase: BodyPhase;
  /** ms (fractional, µs resolution) from the stop request to the body's end (cooperative) or to its thread's termination (killed). */
  stopMs?: number;
}

const PHASES: Record<BodyState, BodyPhase> = {
  [BodyState.None]: 'none',
  [BodyState.Queued]: 'queued',
  [BodyState.Running]: 'running',
  [BodyState.Returned]: 'returned',
  [BodyState.Failed]: 'failed',
  [BodyState.Stopped]: 'stopped',
  [BodyState.Killed]: 'killed',
  [BodyState.Skipped]: 'skipped',
};

/** Runs executions' bodies on the body threads. */
export class BodyLane {
  private readonly table: ControlTable;
  private readonly threads: BodyThreads;
  private readonly logger: Logger;

  constructor(table: ControlTable, threads: BodyThreads, logger: Logger) {
    this.table = table;
    this.threads = threads;
    this.logger = logger;
  }

  /** A seat for a body of `kind` (see {@link BodyThreads.reserve}): taken before the author's start runs, so a full lane fails the start before it changed anything. */
  reserve(kind: BodyKind): Promise<BodySeat> {
    return this.threads.reserve(kind);
  }

  /**
   * Hand the body of a just-started execution (CONTROL Running) to its seat; it receives `state`,
   * the state after start. Sets `execution.body`.
   */
  dispatch(execution: Execution, seat: BodySeat, state: StateValue): BodyRun {
    const { slot, generation } = execution;
    const run = new BodyRun(seat);
    execution.body = run;
    if (!this.table.transitionBody(slot, generation, BodyState.None, BodyState.Queued)) {
      // Cannot happen: only a dispatch moves a block's body out of None, once per generation.
      seat.release();
      run.error = 'the body was dispatched twice';
      run.settle();
      return run;
    }
    seat.run(
      { actionId: execution.action.id, executionId: execution.id, slot, generation, state },
      {
        began: () => run.begin(),
        report: (report) => {
          if (!run.settled) execution.reports.add(report.messages, report.metrics);
        },
        result: (json) => {
          if (!run.settled) run.resultJson = json;
        },
        ended: (phase, error, endedAtUs) => {
          run.endedAtUs = endedAtUs;
          if (error !== undefined) run.error = error.message;
          // info, not warn: the execution is stopped for it and the agent told, like any other stop reason.
          if (phase === 'failed') this.logger.info({ ...bodyFields(execution), error: errorFields(error) }, 'action body failed');
          run.settle();
        },
        killed: () => run.settle(),
        lost: (reason) => {
          run.error ??= reason;
          const wasRunning =
            this.table.transitionBody(slot, generation, BodyState.Running, BodyState.Failed) ||
            this.table.transitionBody(slot, generation, BodyState.Queued, BodyState.Failed);
          if (wasRunning) {
            // The body could not request its own stop: do it for it, through the one entry point.
            this.logger.error({ ...bodyFields(execution), reason }, 'body thread lost');
            this.table.requestStop(slot, generation, Reason.BodyFailed);
          }
          run.settle();
        },
      },
    );
    return run;
  }

  /**
   * What status and stop report about the body. A body whose code ended but whose last reports
   * are still in flight counts as running, so a status that sees `returned` has seen every report
   * and its last result.
   */
  info(execution: Execution): BodyTaskInfo {
    const word = this.table.bodyState(execution.slot, execution.generation);
    const ended = word !== BodyState.Queued && word !== BodyState.Running && word !== BodyState.None;
    const phase = ended && execution.body?.settled === false ? 'running' : PHASES[word];
    const info: BodyTaskInfo = { phase, progress: this.table.progress(execution.slot) };
    if (execution.body?.error !== undefined) info.error = execution.body.error;
    if (execution.body?.resultJson !== undefined) info.resultJson = execution.body.resultJson;
    return info;
  }

  /**
   * End the body of a stopping execution, whose stop was requested at `stopAtUs` (shared clock):
   * wait for it up to what is left of `graceMs`, then kill its thread. Resolves once nothing of the
   * body runs any more.
   */
  async end(execution: Execution, graceMs: number, stopAtUs: number): Promise<BodyEnd> {
    const run = execution.body;
    if (run === undefined) return { phase: 'none' };
    const { slot, generation } = execution;
    // A fast body can end before the stop's winner stamped its time: the signed difference is then ≤ 0.
    const sinceStopMs = (nowUs: number): number => Math.max(0, (nowUs - stopAtUs) | 0) / 1000;
    const remainingMs = Math.max(0, graceMs - sinceStopMs(clockUs()));
    if (await settlesWithin(run.done, remainingMs)) {
      return { phase: PHASES[this.table.bodyState(slot, generation)], stopMs: sinceStopMs(run.endedAtUs ?? clockUs()) };
    }
    // Grace is over and the run has not ended — its code still runs, or it returned and its thread
    // is busy with what it left behind: terminate the thread either way.
    if (!this.table.transitionBody(slot, generation, BodyState.Running, BodyState.Killed)) {
      this.table.transitionBody(slot, generation, BodyState.Queued, BodyState.Killed);
    }
    const killedAfterMs = sinceStopMs(clockUs());
    this.logger.warn(
      { ...bodyFields(execution), kind: run.kind, graceMs, pastGraceMs: roundMs(Math.max(0, killedAfterMs - graceMs)) },
      'action body did not stop within the grace period; terminating its thread',
    );
    const exited = run.seat.kill(
      `its shared io body thread was terminated to end the body of execution ${execution.id}, which did not stop within the ${graceMs} ms grace period`,
    );
    // A thread blocked in a native call (a synchronous child process, say) exits only when that
    // returns; its JavaScript never runs again, so the stop goes on after another grace period.
    if (!(await settlesWithin(exited, graceMs))) {
      this.logger.error({ ...bodyFields(execution), graceMs }, 'the terminated body thread did not exit (blocked in a native call?); going on without it');
      run.settle();
    }
    await run.done;
    return { phase: 'killed', stopMs: killedAfterMs };
  }
}

/** Fields of every log line about an execution's body. */
function bodyFields(execution: Execution): { action: string; executionId: string; phase: 'body' } {
  return { action: execution.action.id, executionId: execution.id, phase: 'body' };
}

/** What a log line says about the error a body threw: its message and stack, never its state. */
function errorFields(error: ErrorData | undefined): Record<string, string> | undefined {
  if (error === undefined) return undefined;
  const { detail, stack } = error.details;
  return { code: error.code, message: error.message, ...(detail === undefined ? {} : { detail }), ...(stack === undefined ? {} : { stack }) };
}

/** ms with µs resolution, for log fields. */
function roundMs(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
