/**
 * The lifecycle operations — prepare, start, status, stop, query — independent of HTTP: they take
 * validated wire bodies and return the HTTP status and body to answer with, or throw a
 * {@link RuntimeError}. Parity with the reference SDK (§1.5, §1.6): handler failures of
 * prepare/start/status are HTTP 200 with `error` and the latest state; stop and query failures are
 * HTTP 500 with an ActionKitError body.
 */
import * as os from 'node:os';
import type { JsonObject, Message } from '../action.js';
import type {
  ActionStatusRequestBody,
  PrepareActionRequestBody,
  QueryMetricsRequestBody,
  StartActionRequestBody,
  StopActionRequestBody,
} from '../api/schemas.js';
import { ErrorCode, handlerErrorToWire, RuntimeError, type ActionKitErrorBody } from '../errors.js';
import type { Logger } from '../logging.js';
import type { WorkerPools } from '../pool.js';
import { clockMs, Reason, reasonOf, reasonText, State, stateOf, type ControlTable } from '../shm/table.js';
import type { BodyLane } from './bodies.js';
import { prependReports, type Execution, type ExecutionStore, type StopOutcome } from './executions.js';
import type { HandlerReply, HandlerTask } from './protocol.js';
import type { RegisteredAction } from './registry.js';
import { runAuthorStop, type StopCoordinator } from './stop-coordinator.js';

/** An answer: HTTP status and JSON body. */
export interface Reply {
  status: number;
  body: JsonObject;
}

/** Per-request context supplied by the HTTP layer. */
export interface RequestScope {
  /** `Date.now()` ms when the agent stops waiting (`Request-Timeout`), if it said. */
  deadlineMs: number | undefined;
  /** True once the agent has given up on this request (timed out or disconnected). */
  abandoned(): boolean;
}

/** Files saved for a multipart prepare. */
export interface UploadedFiles {
  folder: string | undefined;
  /** parameter name → absolute path */
  files: Map<string, string>;
}

/** What the operations need. */
export interface LifecycleDeps {
  table: ControlTable;
  store: ExecutionStore;
  bodies: BodyLane;
  coordinator: StopCoordinator;
  pools: WorkerPools;
  logger: Logger;
  handlerTimeoutMs: number;
  /** Remove `<uploadDir>/<executionId>` if it exists (never throws). */
  removeUploads(executionId: string): Promise<void>;
}

/**
 * The reference appends `OS information: sysname=…; release=…; version=…; machine=…` to every
 * prepare result on Linux (platform diagnostics); elsewhere nothing.
 */
const UNAME_MESSAGE: Message | undefined =
  os.type() === 'Linux'
    ? { level: 'info', message: `OS information: sysname=${os.type()}; release=${os.release()}; version=${os.version()}; machine=${os.machine()}` }
    : undefined;

/** Implements the five lifecycle endpoints. */
export class Lifecycle {
  private readonly deps: LifecycleDeps;
  /** Set on shutdown: no new executions. */
  private closed = false;
  /** Stops of executions this process does not know, de-duplicated while they run. */
  private readonly statelessStops = new Map<string, Promise<StopOutcome>>();

  constructor(deps: LifecycleDeps) {
    this.deps = deps;
  }

  /** Refuse new executions from now on (shutdown). */
  close(): void {
    this.closed = true;
  }

  /** `POST prepare`. */
  async prepare(action: RegisteredAction, request: PrepareActionRequestBody, upload: UploadedFiles | undefined, scope: RequestScope): Promise<Reply> {
    const id = request.executionId.toLowerCase();
    let execution: Execution | undefined;
    try {
      if (this.closed) throw shuttingDown();
      // Only stoppable actions are tracked; the agent carries the state of the others.
      if (action.stoppable) execution = this.deps.store.create(id, action);
    } catch (error) {
      if (upload?.folder !== undefined) await this.deps.removeUploads(id);
      throw error;
    }
    const config: JsonObject = { ...(request.config as JsonObject) };
    for (const [name, file] of upload?.files ?? []) config[name] = file;
    const task = this.task('prepare', action, id, scope, { request: { ...request, executionId: id, config } as JsonObject });
    if (execution === undefined) return prepareReply(await this.runHandler(task));

    const owned = execution;
    owned.uploadFolder = upload?.folder;
    // Book-keeping happens under the execution's lock, so a stop queued behind this prepare sees its state.
    return owned.lock.run(async () => {
      const reply = await this.runHandler(task);
      const failed = !reply.ok || reply.result.error !== undefined;
      if (failed) {
        // The agent never calls stop after a failed prepare: clean up here (unless a signal already took it).
        if (stateOf(this.deps.table.control(owned.slot)) === State.Prepared) {
          if (owned.uploadFolder !== undefined) await this.deps.removeUploads(id);
          this.deps.store.release(owned);
        }
      } else {
        owned.state = reply.state ?? {};
        if (scope.abandoned()) {
          // The agent gave up waiting and will never start or stop it: roll back what prepare did.
          this.deps.logger.warn({ executionId: id }, 'prepare finished after the agent gave up; stopping the execution');
          void this.deps.coordinator.request(owned, Reason.PrepareAbandoned);
        }
      }
      return prepareReply(reply);
    });
  }

  /** `POST start`. */
  async start(action: RegisteredAction, request: StartActionRequestBody, scope: RequestScope): Promise<Reply> {
    const id = request.executionId.toLowerCase();
    const state = request.state as JsonObject;
    if (!action.stoppable) return stateReply(await this.runHandler(this.task('start', action, id, scope, { state })), state, 'Failed to start action.');

    let execution = this.deps.store.get(id);
    if (execution === undefined) {
      const recent = this.deps.store.recentStop(id);
      if (recent !== undefined) return { status: 200, body: { state, error: stoppedByExtensionForStatus(recent.outcome.reason) } };
      if (this.closed) throw shuttingDown();
      // Prepared by a previous process of this extension (restart): adopt it with the agent's state.
      execution = this.deps.store.create(id, action);
      execution.state = state;
    }
    const owned = execution;
    return owned.lock.run(async () => {
      const control = this.deps.table.control(owned.slot);
      if (stateOf(control) === State.Running) throw new RuntimeError(ErrorCode.Conflict, 409, `Execution ${id} was already started`);
      if (stateOf(control) !== State.Prepared) return { status: 200, body: { state, error: stoppedByExtensionForStatus(reasonOf(control)) } };
      const reply = await this.runHandler(this.task('start', action, id, scope, { state }));
      const newState = reply.state ?? state;
      owned.state = newState;
      // Like the reference, the heartbeat is armed even when start failed: the agent will call stop.
      const running = this.deps.table.markRunning(owned.slot, owned.generation, action.heartbeatExpiryMs);
      if (running && action.hasBody && reply.ok && reply.result.error === undefined) this.deps.bodies.enqueue(owned, newState);
      return stateReply(reply, newState, 'Failed to start action.');
    });
  }

  /** `POST status`. Every status request is a heartbeat. */
  async status(action: RegisteredAction, request: ActionStatusRequestBody, scope: RequestScope): Promise<Reply> {
    const id = request.executionId.toLowerCase();
    const state = request.state as JsonObject;
    const execution = action.stoppable ? this.deps.store.get(id) : undefined;
    if (execution === undefined) {
      const recent = action.stoppable ? this.deps.store.recentStop(id) : undefined;
      if (recent !== undefined) return stoppedStatus(recent.outcome.reason, recent.outcome.bodyError);
      if (!action.hasStatusHandler) throw executionNotFound(id);
      return statusReply(await this.runHandler(this.task('status', action, id, scope, { state })), state, undefined);
    }
    this.deps.table.recordHeartbeat(execution.slot);
    const stopped = this.stoppedStatusOf(execution);
    if (stopped !== undefined) return stopped;
    if (!action.hasStatusHandler) return { status: 200, body: prependReports({ completed: false }, execution.reports.drain()) };
    return execution.lock.run(async () => {
      // Re-check: a stop may have been requested while this request waited for the lock.
      const stoppedMeanwhile = this.stoppedStatusOf(execution);
      if (stoppedMeanwhile !== undefined) return stoppedMeanwhile;
      const reports = execution.reports.drain();
      const body = { ...this.deps.bodies.info(execution), reports };
      const reply = await this.runHandler(this.task('status', action, id, scope, { state, body }));
      const newState = reply.state ?? state;
      execution.state = newState;
      return statusReply(reply, newState, reports);
    });
  }

  /**
   * `POST stop` from the agent. A stop already under way (or finished) is shared: a duplicate
   * agent stop gets the same answer, a stop the extension initiated answers
   * `Action was stopped by extension <reason>` and the author's stop is not called again.
   */
  async stop(action: RegisteredAction, request: StopActionRequestBody): Promise<Reply> {
    const id = request.executionId.toLowerCase();
    const state = request.state as JsonObject;
    // Two rounds at most: an extension-initiated stop that failed is retried once as the agent's.
    for (let round = 0; round < 2; round++) {
      const execution = this.deps.store.get(id);
      if (execution === undefined) break;
      const outcome = await this.deps.coordinator.request(execution, Reason.Agent, state);
      if (outcome.reason === Reason.Agent) return { status: outcome.httpStatus, body: outcome.body };
      if (outcome.succeeded) return stoppedByExtensionForStop(outcome.reason);
    }
    const recent = this.deps.store.recentStop(id);
    if (recent !== undefined) {
      return recent.outcome.reason === Reason.Agent
        ? { status: recent.outcome.httpStatus, body: recent.outcome.body }
        : stoppedByExtensionForStop(recent.outcome.reason);
    }
    const live = this.deps.store.get(id);
    if (live !== undefined) return stoppedByExtensionForStop(reasonOf(this.deps.table.control(live.slot)));
    return this.statelessStop(action, id, state);
  }

  /** `POST query` (metric query): stateless. */
  async query(action: RegisteredAction, request: QueryMetricsRequestBody, scope: RequestScope): Promise<Reply> {
    const id = request.executionId.toLowerCase();
    const reply = await this.runHandler(this.task('query', action, id, scope, { request: request as JsonObject }));
    if (!reply.ok) return { status: 500, body: { ...handlerErrorToWire(reply.error, 'Failed to query metrics.') } };
    return { status: 200, body: reply.result as JsonObject };
  }

  /**
   * Stop of an execution this process does not know (e.g. the extension restarted mid-attack):
   * run the author's stop with the agent's state so the rollback still happens, as the reference.
   * Concurrent duplicates share one run.
   */
  private async statelessStop(action: RegisteredAction, id: string, state: JsonObject): Promise<Reply> {
    if (!action.hasStopHandler) throw executionNotFound(id);
    let running = this.statelessStops.get(id);
    if (running === undefined) {
      running = runAuthorStop(this.deps.pools, this.deps.handlerTimeoutMs, {
        actionId: action.id,
        executionId: id,
        state,
        body: { phase: 'none', progress: 0 },
        stop: { reason: reasonText(Reason.Agent), requestedBy: 'agent' },
      }).then((answer): StopOutcome => ({ ...answer, reason: Reason.Agent, finishedAtMs: clockMs() }));
      this.statelessStops.set(id, running);
      void running.then((outcome) => {
        this.statelessStops.delete(id);
        if (outcome.succeeded) this.deps.store.remember(id, action.id, outcome);
      });
    }
    const outcome = await running;
    return { status: outcome.httpStatus, body: outcome.body };
  }

  /** The status answer for an execution whose stop was requested, or undefined if it runs. */
  private stoppedStatusOf(execution: Execution): Reply | undefined {
    const control = this.deps.table.control(execution.slot);
    const state = stateOf(control);
    if (state === State.Prepared || state === State.Running) return undefined;
    return stoppedStatus(reasonOf(control), execution.body?.error);
  }

  private task(phase: HandlerTask['phase'], action: RegisteredAction, executionId: string, scope: RequestScope, extra: Partial<HandlerTask>): HandlerTask {
    const handlerDeadline = Date.now() + this.deps.handlerTimeoutMs;
    return {
      phase,
      actionId: action.id,
      executionId,
      deadlineMs: scope.deadlineMs === undefined ? handlerDeadline : Math.min(scope.deadlineMs, handlerDeadline),
      ...extra,
    };
  }

  /** Run a handler; a lost worker becomes a failed reply (HTTP 200 + error for prepare/start/status). */
  private async runHandler(task: HandlerTask): Promise<HandlerReply> {
    try {
      return await this.deps.pools.runHandler(task, this.deps.handlerTimeoutMs);
    } catch (error) {
      if (!(error instanceof RuntimeError)) throw error;
      this.deps.logger.error({ executionId: task.executionId, phase: task.phase, detail: error.detail }, error.message);
      const state = task.phase === 'prepare' ? {} : task.state;
      return { ok: false, error: { code: error.code, message: error.detail ?? error.message, details: {} }, ...(state === undefined ? {} : { state }) };
    }
  }
}

function prepareReply(reply: HandlerReply): Reply {
  const body = stateReply(reply, reply.state ?? {}, 'Failed to prepare.').body;
  if (UNAME_MESSAGE !== undefined) body['messages'] = [...((body['messages'] as Message[] | undefined) ?? []), UNAME_MESSAGE];
  return { status: 200, body };
}

/** HTTP 200 with the handler's result and state; on failure the wrapped error and the latest state. */
function stateReply(reply: HandlerReply, state: JsonObject, phaseTitle: string): Reply {
  if (reply.ok) return { status: 200, body: { ...reply.result, state: reply.state ?? state } };
  return { status: 200, body: { state: reply.state ?? state, error: handlerErrorToWire(reply.error, phaseTitle) } };
}

function statusReply(reply: HandlerReply, state: JsonObject, reports: Reports | undefined): Reply {
  const base = stateReply(reply, state, 'Failed to read status.').body;
  // A failed status handler leaves `completed` to the agent's default handling of `error`.
  if (!reply.ok) base['completed'] = false;
  return { status: 200, body: reports === undefined ? base : prependReports(base, reports) };
}

type Reports = { messages: Message[]; metrics: unknown[] };

/** Status of a stopped execution (reference §1.5.3 step 3). */
function stoppedStatus(reason: Reason, bodyError: string | undefined): Reply {
  if (reason === Reason.Agent) return { status: 200, body: { completed: true } };
  const error: ActionKitErrorBody = stoppedByExtensionForStatus(reason);
  if (reason === Reason.BodyFailed && bodyError !== undefined) error.detail = bodyError;
  return { status: 200, body: { completed: true, error } };
}

function stoppedByExtensionForStatus(reason: Reason): ActionKitErrorBody {
  return { title: `Action was stopped by extension: ${reasonText(reason)}`, status: 'errored' };
}

/** Agent stop after an extension-initiated stop (reference §1.5.4 step 3: no colon, no status). */
function stoppedByExtensionForStop(reason: Reason): Reply {
  return { status: 200, body: { error: { title: `Action was stopped by extension ${reasonText(reason)}` } } };
}

function executionNotFound(id: string): RuntimeError {
  return new RuntimeError(
    ErrorCode.NotFound,
    404,
    `Execution ${id} not found`,
    'this extension has no active execution with this id and remembers no stop of it (outcomes are kept for at least 10 minutes)',
  );
}

function shuttingDown(): RuntimeError {
  return new RuntimeError(ErrorCode.ShuttingDown, 503, 'Extension is shutting down', 'no new executions are accepted');
}
