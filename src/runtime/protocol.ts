/**
 * Messages between the main thread and the worker threads. Everything here is plain,
 * structured-cloneable data; errors travel as {@link ErrorData}.
 */
import type { MessagePort } from 'node:worker_threads';
import type { BodyInfo, BodyReports, JsonObject, Message, Metric, ResultExtras } from '../action.js';
import type { ErrorData } from '../errors.js';
import type { LogSettings } from '../logging.js';

/** Lifecycle phases that run an author handler on the handler lane. */
export type Phase = 'prepare' | 'start' | 'status' | 'stop' | 'query';

/** Data every worker thread receives at start-up. */
export interface WorkerBootData {
  /** The control table (see `src/shm/table.ts`). */
  buffer: SharedArrayBuffer;
  /** `file:` URLs of the action modules. */
  actionModules: string[];
  log: LogSettings;
}

/** One handler invocation. */
export interface HandlerTask {
  phase: Phase;
  actionId: string;
  executionId: string;
  /** prepare: the request body (config already holds upload paths); query: the request body. */
  request?: JsonObject;
  /** start, status, stop: the state to hand to the handler. */
  state?: JsonObject;
  /** status, stop: what the body is doing and reported. */
  body?: BodyInfo & { stopMs?: number; reports?: BodyReports };
  /** stop: why and by whom. */
  stop?: { reason: string; requestedBy: 'agent' | 'extension' };
  /** Wall-clock ms (`Date.now()`) at which the handler's `ctx.signal` aborts. */
  deadlineMs: number;
}

/** A handler's answer. `state` is always the state as the handler left it, also on failure. */
export type HandlerReply =
  | { ok: true; result: ResultExtras & { completed?: boolean }; state?: JsonObject }
  | { ok: false; error: ErrorData; state?: JsonObject };

/** One body run. */
export interface BodyTask {
  actionId: string;
  executionId: string;
  slot: number;
  generation: number;
  state: JsonObject;
  /** Receives {@link BodyReport} messages from `ctx.report()`. */
  reports: MessagePort;
}

/** A body report after validation on the body's thread (metric timestamps filled in). */
export interface CheckedBodyReport {
  messages?: Message[];
  metrics?: Metric[];
}

/**
 * The last message on a body's report port, posted when the body ended: every report sent before
 * it has been delivered once it arrives (one port keeps order; piscina's reply travels on another).
 */
export interface BodyEndMarker {
  /** Shared clock µs (`clockUs()`) at which the body's code returned or threw. */
  endedAtUs: number;
}

/** How a body run ended. */
export interface BodyReply {
  phase: 'returned' | 'failed' | 'stopped' | 'skipped';
  error?: ErrorData;
}
