/**
 * Main-thread bookkeeping of executions: executionId → control-block slot, the latest state, the
 * per-execution lock, body reports, and the outcomes of finished stops (kept so that late and
 * duplicate requests are answered like the reference).
 *
 * Only stoppable actions have executions here: the others are stateless on the extension side
 * (the agent carries their state), exactly as in the reference SDK.
 */
import type { JsonObject, Message, Metric } from '../action.js';
import { ErrorCode, RuntimeError } from '../errors.js';
import { clockMs, ControlTable, type Reason } from '../shm/table.js';
import type { BodyEnd, BodyRun } from './bodies.js';
import type { RegisteredAction } from './registry.js';

/** How a stop ended; shared by every request that waited for it. */
export interface StopOutcome {
  reason: Reason;
  /** The author's stop succeeded (or there was none). */
  succeeded: boolean;
  /** HTTP status and body to answer the agent's stop with when the agent asked for this stop. */
  httpStatus: number;
  body: JsonObject;
  /** Shared-clock ms at which the outcome was decided. */
  finishedAtMs: number;
  /** For reason `action body failed`: the body's error message (status answers carry it as detail). */
  bodyError?: string;
  /** Every attempt failed and the extension gave the stop up: the rollback did not happen. */
  givenUp?: boolean;
  /** A stop of an execution this process did not know (run with the agent's state). */
  stateless?: boolean;
}

/** A stop outcome remembered after its execution's slot was released. */
export interface RecentStop {
  actionId: string;
  outcome: StopOutcome;
  /** `Date.now()` when it was recorded. */
  recordedAt: number;
  /** Approximate memory it holds (its answer's JSON length plus a fixed overhead). */
  bytes: number;
}

/** Serialises the handler calls of one execution (no prepare/start/status/stop overlap). */
export class ExecutionLock {
  private tail: Promise<unknown> = Promise.resolve();

  /** Run `task` after every task queued before it. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

/** Reports sent by a body, waiting for the next status or stop result. */
export class PendingReports {
  /** Bound per kind, so a chatty body cannot grow memory without limit between two polls. */
  static readonly LIMIT = 1000;
  private messages: Message[] = [];
  private metrics: Metric[] = [];
  private droppedMessages = 0;
  private droppedMetrics = 0;

  add(messages: readonly Message[] | undefined, metrics: readonly Metric[] | undefined): void {
    if (messages !== undefined) this.droppedMessages += PendingReports.append(this.messages, messages);
    if (metrics !== undefined) this.droppedMetrics += PendingReports.append(this.metrics, metrics);
  }

  /** Put back what {@link drain} took (a failed stop did not deliver it), in front of anything newer. */
  putBack(reports: { messages: Message[]; metrics: Metric[] }): void {
    this.droppedMessages += PendingReports.append(reports.messages, this.messages);
    this.droppedMetrics += PendingReports.append(reports.metrics, this.metrics);
    this.messages = reports.messages;
    this.metrics = reports.metrics;
  }

  /** Take everything pending (oldest first); a note says how much was dropped. */
  drain(): { messages: Message[]; metrics: Metric[] } {
    const messages = this.messages;
    const metrics = this.metrics;
    if (this.droppedMessages > 0 || this.droppedMetrics > 0) {
      messages.push({
        level: 'warn',
        message: `body reports exceeded ${PendingReports.LIMIT} per poll: dropped ${this.droppedMessages} oldest messages and ${this.droppedMetrics} oldest metrics`,
      });
    }
    this.messages = [];
    this.metrics = [];
    this.droppedMessages = 0;
    this.droppedMetrics = 0;
    return { messages, metrics };
  }

  private static append<T>(into: T[], items: readonly T[]): number {
    into.push(...items);
    const excess = into.length - PendingReports.LIMIT;
    if (excess > 0) into.splice(0, excess);
    return Math.max(0, excess);
  }
}

/**
 * A copy of `result` with body reports (and notes of the runtime) in front of its own messages
 * and metrics — how every status and stop result carries what the body sent since the last one.
 */
export function prependReports(result: JsonObject, reports: { messages: readonly Message[]; metrics: readonly unknown[] }): JsonObject {
  const out: JsonObject = { ...result };
  const messages = [...reports.messages, ...((result['messages'] as unknown[] | undefined) ?? [])];
  const metrics = [...reports.metrics, ...((result['metrics'] as unknown[] | undefined) ?? [])];
  if (messages.length > 0) out['messages'] = messages;
  if (metrics.length > 0) out['metrics'] = metrics;
  return out;
}

/** One active execution of a stoppable action. Its lifecycle is `./lifecycle.ts`'s. */
export interface Execution {
  readonly id: string;
  readonly action: RegisteredAction;
  readonly slot: number;
  readonly generation: number;
  /** Shared-clock ms when the control block was allocated (prepare), for `ACTIONKIT_PREPARED_TTL`. */
  readonly createdAtMs: number;
  /** The author's prepare succeeded (or the execution was adopted at start): there may be something to roll back. */
  prepared: boolean;
  /** Latest state a handler returned. */
  state: JsonObject;
  /** `<uploadDir>/<id>` when files were uploaded. */
  uploadFolder: string | undefined;
  readonly lock: ExecutionLock;
  readonly reports: PendingReports;
  body: BodyRun | undefined;
  /** How the body ended, from the first stop attempt (a retried stop does not end it again). */
  bodyEnd: BodyEnd | undefined;
  /** Stop attempts so far (author stops that ran or were skipped). */
  stopAttempts: number;
  /** The next automatic retry of a failed stop. */
  retryTimer: NodeJS.Timeout | undefined;
  /** The state the agent sent with the stop request that won (agent stops use the agent's state). */
  agentStopState: JsonObject | undefined;
  /** Resolvers of the stop in progress, created by the first waiter. */
  pendingStop: { promise: Promise<StopOutcome>; resolve: (outcome: StopOutcome) => void } | undefined;
  /** How it ended, set when its control block was released after a stop. */
  outcome: StopOutcome | undefined;
}

/** Keeps active executions and recent stop outcomes. */
export class ExecutionStore {
  readonly table: ControlTable;
  private readonly active = new Map<string, Execution>();
  private readonly bySlot: (Execution | undefined)[];
  /** Free slots; popped from the end so recently used (cache-warm) slots are reused first. */
  private readonly freeSlots: number[];
  private readonly recent = new Map<string, RecentStop>();
  private readonly retentionMs: number;
  /** Always keep at least this many outcomes, whatever their age. */
  static readonly RETAIN_AT_LEAST = 1000;
  /** Never keep more than this many, whatever their age (memory bound under extreme storms). */
  static readonly RETAIN_AT_MOST = 200_000;
  /** Never hold more than this many bytes of outcomes, whatever their count and age (one outcome may carry thousands of messages). */
  static readonly RETAIN_AT_MOST_BYTES = 64 * 1024 ** 2;
  /** What an outcome costs besides its answer's JSON (map entry, objects, id). */
  private static readonly ENTRY_OVERHEAD_BYTES = 300;
  private recentBytes = 0;

  constructor(table: ControlTable, retentionMs: number) {
    this.table = table;
    this.retentionMs = retentionMs;
    this.bySlot = new Array<Execution | undefined>(table.capacity).fill(undefined);
    this.freeSlots = Array.from({ length: table.capacity }, (_, i) => table.capacity - 1 - i);
  }

  /**
   * Create an execution in a fresh control block (state Prepared). Throws 503 when the table is
   * full and 409 when the id is active or recently stopped.
   */
  create(id: string, action: RegisteredAction): Execution {
    if (this.active.has(id)) throw new RuntimeError(ErrorCode.Conflict, 409, `Execution ${id} already exists`, 'an execution with this id is active; every prepare needs a new executionId');
    if (this.recent.has(id)) throw new RuntimeError(ErrorCode.Conflict, 409, `Execution ${id} already exists`, 'an execution with this id was already stopped');
    const slot = this.freeSlots.pop();
    if (slot === undefined) {
      throw new RuntimeError(
        ErrorCode.CapacityExhausted,
        503,
        'Too many active executions',
        `all ${this.table.capacity} control blocks are in use (ACTIONKIT_MAX_EXECUTIONS); stop executions or raise the limit`,
      );
    }
    const generation = this.table.allocate(slot);
    if (generation < 0) throw new Error(`control block ${slot} was on the free list but is not free`);
    const execution: Execution = {
      id,
      action,
      slot,
      generation,
      createdAtMs: clockMs(),
      prepared: false,
      state: {},
      uploadFolder: undefined,
      lock: new ExecutionLock(),
      reports: new PendingReports(),
      body: undefined,
      bodyEnd: undefined,
      stopAttempts: 0,
      retryTimer: undefined,
      agentStopState: undefined,
      pendingStop: undefined,
      outcome: undefined,
    };
    this.active.set(id, execution);
    this.bySlot[slot] = execution;
    return execution;
  }

  /** The active execution with this id. */
  get(id: string): Execution | undefined {
    return this.active.get(id);
  }

  /** The active execution owning `slot`. */
  atSlot(slot: number): Execution | undefined {
    return this.bySlot[slot];
  }

  /** Every active execution. */
  all(): Execution[] {
    return [...this.active.values()];
  }

  /** Number of active executions. */
  get size(): number {
    return this.active.size;
  }

  /**
   * Free the execution's control block (generation + 1) and forget it; with `outcome`, remember
   * how its stop ended so late requests get the same answer. False, and nothing changed, when the
   * block is not in a releasable state of this generation (Prepared, Stopped, StopFailed) — e.g. a
   * stop took a Prepared block first.
   */
  release(execution: Execution, outcome?: StopOutcome): boolean {
    if (this.active.get(execution.id) !== execution) return false;
    if (!this.table.release(execution.slot, execution.generation)) return false;
    this.active.delete(execution.id);
    this.bySlot[execution.slot] = undefined;
    this.freeSlots.push(execution.slot);
    if (outcome !== undefined) {
      execution.outcome = outcome;
      this.remember(execution.id, execution.action.id, outcome);
    }
    return true;
  }

  /** Remember a stop outcome for an execution that has no control block (stateless stop). */
  remember(id: string, actionId: string, outcome: StopOutcome): void {
    this.forgetRecent(id);
    const bytes = ExecutionStore.ENTRY_OVERHEAD_BYTES + JSON.stringify(outcome.body).length;
    this.recent.set(id, { actionId, outcome, recordedAt: Date.now(), bytes });
    this.recentBytes += bytes;
    this.evict();
  }

  /** Bytes held by remembered outcomes (approximate). */
  get recentStopBytes(): number {
    return this.recentBytes;
  }

  private forgetRecent(id: string): void {
    const entry = this.recent.get(id);
    if (entry === undefined) return;
    this.recent.delete(id);
    this.recentBytes -= entry.bytes;
  }

  /** The remembered stop of this execution, if any. */
  recentStop(id: string): RecentStop | undefined {
    return this.recent.get(id);
  }

  /**
   * Keep outcomes younger than the retention, and at least the last RETAIN_AT_LEAST — within the
   * bounds of count and bytes, which win over both (Map order is insertion order: oldest first).
   */
  private evict(): void {
    const cutoff = Date.now() - this.retentionMs;
    for (const [id, entry] of this.recent) {
      const tooMany = this.recent.size > ExecutionStore.RETAIN_AT_MOST || this.recentBytes > ExecutionStore.RETAIN_AT_MOST_BYTES;
      const expendable = this.recent.size > ExecutionStore.RETAIN_AT_LEAST && entry.recordedAt < cutoff;
      if (!tooMany && !expendable) break;
      this.forgetRecent(id);
    }
  }
}
