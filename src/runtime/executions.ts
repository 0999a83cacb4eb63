/**
 * Main-thread bookkeeping of executions: executionId → control-block slot, the latest state, the
 * per-execution lock, body reports, and the outcomes of finished stops (kept so that late and
 * duplicate requests are answered like the reference).
 *
 * Only stoppable actions have executions here: the others are stateless on the extension side
 * (the agent carries their state), exactly as in the reference SDK.
 */
import type { Message, Metric } from '../action.js';
import type { JsonObject } from '../api/schemas.js';
import { ErrorCode, RuntimeError } from '../errors.js';
import { clockMs, ControlTable, type Reason } from '../shm/table.js';
import type { BodyEnd, BodyRun } from './bodies.js';
import type { UploadLocations } from './file-state.js';
import type { StateValue } from './sealed.js';
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
}

/**
 * How an outcome is kept: its answer as JSON text instead of an object tree (a third of the heap,
 * and a size that is known), parsed again when a late request asks. Under memory pressure the
 * answer goes first and the record stays ({@link OutcomeMemory}).
 */
interface KeptStop {
  actionId: string;
  outcome: Omit<StopOutcome, 'body'>;
  /** Undefined once dropped (too large to keep, or evicted for bytes). */
  bodyJson: string | undefined;
  /** Heap of `bodyJson` (0 once dropped). */
  bodyBytes: number;
  recordedAt: number;
}

/** Bounds of an {@link OutcomeMemory}. */
export interface OutcomeBounds {
  /** Keep at least this many records, whatever their age (within `maxCount`). */
  retainAtLeast: number;
  /** Never more records than this (each about {@link OUTCOME_RECORD_BYTES} of heap). */
  maxCount: number;
  /** Never more bytes of kept answers than this; beyond, the oldest answers are dropped, their records kept. */
  maxBodyBytes: number;
}

/**
 * Heap a remembered outcome costs without its answer: Map entries, id, record and outcome objects.
 * Measured with `--expose-gc` over 100,000 records on Node 20 (750 to 870 bytes), rounded up.
 */
export const OUTCOME_RECORD_BYTES = 896;

/** The most heap an {@link OutcomeMemory} with these bounds holds (approximately). */
export function outcomeMemoryBound(bounds: OutcomeBounds): number {
  return bounds.maxCount * OUTCOME_RECORD_BYTES + bounds.maxBodyBytes;
}

/** Answers larger than this are not kept at all: one outcome must not push out all the others. */
export const MAX_KEPT_ANSWER_BYTES = 64 * 1024;

/**
 * Outcomes by execution id, oldest first (Map order). A record (which stop, how it ended) is what
 * keeps a duplicate stop from rolling back twice; it is evicted only by age beyond
 * `retainAtLeast` and by `maxCount`. The answer that came with it is only for repeating it: it is
 * dropped first when answers take more than `maxBodyBytes`, and a late request then gets the
 * same status with a note instead of the original body.
 */
class OutcomeMemory {
  private readonly records = new Map<string, KeptStop>();
  /** The records that still hold an answer, oldest first: the order in which answers are dropped. */
  private readonly answers = new Map<string, KeptStop>();
  private answerBytes = 0;

  constructor(
    readonly bounds: OutcomeBounds,
    private readonly retentionMs: number,
  ) {}

  /** Approximate heap held: records and kept answers. */
  get bytes(): number {
    return this.records.size * OUTCOME_RECORD_BYTES + this.answerBytes;
  }

  get size(): number {
    return this.records.size;
  }

  /** The action of a remembered outcome, without reading the outcome. */
  actionOf(id: string): string | undefined {
    return this.records.get(id)?.actionId;
  }

  /**
   * The outcome with its answer parsed only when read: most late requests need only the reason
   * (a status, a stop after one the extension made), and a storm of them must not parse every
   * kept answer.
   */
  get(id: string): RecentStop | undefined {
    const kept = this.records.get(id);
    if (kept === undefined) return undefined;
    const { bodyJson } = kept;
    let body: JsonObject | undefined;
    const outcome = {
      ...kept.outcome,
      get body(): JsonObject {
        body ??=
          bodyJson !== undefined
            ? (JSON.parse(bodyJson) as JsonObject)
            : { messages: [{ level: 'info', message: 'This stop already ran (see its first answer); its answer is no longer kept, so it is not repeated here' }] };
        return body;
      },
    };
    return { actionId: kept.actionId, outcome, recordedAt: kept.recordedAt };
  }

  set(id: string, actionId: string, outcome: StopOutcome): void {
    this.delete(id);
    const { body, ...rest } = outcome;
    const json = JSON.stringify(body);
    // Strings of Latin-1 text take a byte per character, others two.
    const bytes = (/[^\u0000-\u00ff]/.test(json) ? 2 : 1) * json.length;
    const keep = bytes <= MAX_KEPT_ANSWER_BYTES;
    const kept: KeptStop = { actionId, outcome: rest, bodyJson: keep ? json : undefined, bodyBytes: keep ? bytes : 0, recordedAt: Date.now() };
    this.records.set(id, kept);
    if (keep) {
      this.answers.set(id, kept);
      this.answerBytes += bytes;
    }
    this.evict();
  }

  delete(id: string): void {
    const kept = this.records.get(id);
    if (kept === undefined) return;
    this.records.delete(id);
    this.dropAnswer(id, kept);
  }

  private dropAnswer(id: string, kept: KeptStop): void {
    if (!this.answers.delete(id)) return;
    this.answerBytes -= kept.bodyBytes;
    kept.bodyJson = undefined;
    kept.bodyBytes = 0;
  }

  private evict(): void {
    const cutoff = Date.now() - this.retentionMs;
    const { retainAtLeast, maxCount, maxBodyBytes } = this.bounds;
    for (const [id, kept] of this.records) {
      const tooMany = this.records.size > maxCount;
      const expendable = this.records.size > retainAtLeast && kept.recordedAt < cutoff;
      if (!tooMany && !expendable) break;
      this.delete(id);
    }
    for (const [id, kept] of this.answers) {
      if (this.answerBytes <= maxBodyBytes) break;
      this.dropAnswer(id, kept);
    }
  }
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
  /** Latest state a handler returned (sealed when large, `./sealed.ts`). */
  state: StateValue;
  /** `<uploadDir>/<id>` when files were uploaded. */
  uploadFolder: string | undefined;
  /** Actions with `file` parameters: where its states named its uploads (`./file-state.ts`, rule 2). */
  uploadLocations: UploadLocations | undefined;
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
  agentStopState: StateValue | undefined;
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
  /**
   * Outcomes of executions this process ran. Their number grows only as fast as executions are
   * prepared and stopped; the bounds matter under extreme storms only.
   */
  static readonly RAN: OutcomeBounds = { retainAtLeast: 1000, maxCount: 50_000, maxBodyBytes: 32 * 1024 ** 2 };
  /**
   * Outcomes of stops of ids this process never knew (stateless stops). Anyone can send those, as
   * fast as they like, so they are bounded separately and tightly: a flood of them evicts only
   * its own kind, never the outcome of an execution that ran here.
   */
  static readonly STATELESS: OutcomeBounds = { retainAtLeast: 1000, maxCount: 10_000, maxBodyBytes: 4 * 1024 ** 2 };
  private readonly ran: OutcomeMemory;
  private readonly stateless: OutcomeMemory;

  constructor(table: ControlTable, retentionMs: number) {
    this.table = table;
    this.ran = new OutcomeMemory(ExecutionStore.RAN, retentionMs);
    this.stateless = new OutcomeMemory(ExecutionStore.STATELESS, retentionMs);
    this.bySlot = new Array<Execution | undefined>(table.capacity).fill(undefined);
    this.freeSlots = Array.from({ length: table.capacity }, (_, i) => table.capacity - 1 - i);
  }

  /**
   * Create an execution in a fresh control block (state Prepared). Throws 503 when the table is
   * full and 409 when the id is active or recently stopped.
   */
  create(id: string, action: RegisteredAction): Execution {
    if (this.active.has(id)) throw new RuntimeError(ErrorCode.Conflict, 409, `Execution ${id} already exists`, 'an execution with this id is active; every prepare needs a new executionId');
    if (this.recentStopActionOf(id) !== undefined) throw new RuntimeError(ErrorCode.Conflict, 409, `Execution ${id} already exists`, 'an execution with this id was already stopped');
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
      uploadLocations: undefined,
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

  /**
   * Remember how the stop of `id` ended (an outcome marked `stateless` counts against the
   * stateless bounds); replaces what was remembered of it.
   */
  remember(id: string, actionId: string, outcome: StopOutcome): void {
    this.ran.delete(id);
    this.stateless.delete(id);
    (outcome.stateless === true ? this.stateless : this.ran).set(id, actionId, outcome);
  }

  /** Bytes held by remembered outcomes (approximate heap). */
  get recentStopBytes(): number {
    return this.ran.bytes + this.stateless.bytes;
  }

  /** Outcomes remembered, of executions that ran here and of stateless stops. */
  get recentStopCounts(): { ran: number; stateless: number } {
    return { ran: this.ran.size, stateless: this.stateless.size };
  }

  /** The action of the remembered stop of this execution, if any (cheap: the outcome is not read). */
  recentStopActionOf(id: string): string | undefined {
    return this.ran.actionOf(id) ?? this.stateless.actionOf(id);
  }

  /** The remembered stop of this execution, if any. */
  recentStop(id: string): RecentStop | undefined {
    return this.ran.get(id) ?? this.stateless.get(id);
  }
}
