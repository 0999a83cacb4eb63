/**
 * Messages between the main thread and the worker threads. Everything here is plain,
 * structured-cloneable data; errors travel as {@link ErrorData}.
 */
import type { BodyInfo, BodyReports, Message, Metric, ResultExtras } from '../action.js';
import type { JsonObject } from '../api/schemas.js';
import type { ErrorData } from '../errors.js';
import type { LogSettings } from '../logging.js';
import type { JsonLocation } from './file-state.js';
import type { SealedJson, StateValue, WireState } from './sealed.js';
import type { StateLimit } from './state-limit.js';

/**
 * The body as a status or stop task carries it: its result as the JSON text the body thread made
 * (a string is copied between threads in one piece; the handler thread parses it for the author).
 */
export interface BodyTaskInfo extends Omit<BodyInfo, 'result'> {
  /** JSON text of the latest `ctx.publish()`, absent when the body published nothing. */
  resultJson?: string;
}

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

/** Data a handler thread receives at start-up. */
export interface HandlerThreadBootData extends WorkerBootData {
  /** A state larger than this is refused where the handler returned it (`./state-limit.ts`). */
  stateLimit: StateLimit;
  /** Test-only hold points (`src/shm/test-gates.ts`); absent in production. */
  gates?: SharedArrayBuffer;
  /** Nice value the thread sets on itself at boot (Linux: per thread); 0 leaves it alone. */
  nice?: number;
}

/** One handler invocation, as the main thread makes it. */
export interface HandlerTask {
  phase: Phase;
  actionId: string;
  executionId: string;
  /** prepare: the request body (config already holds upload paths); query: the request body. Sealed when large (`./sealed.ts`). */
  request?: JsonObject | SealedJson;
  /** start, status, stop: the state to hand to the handler. Sealed when large. */
  state?: StateValue;
  /** status, stop: what the body is doing and reported. */
  body?: BodyTaskInfo & { stopMs?: number; reports?: BodyReports };
  /** stop: why and by whom. */
  stop?: { reason: string; requestedBy: 'agent' | 'extension' };
  /** Wall-clock ms (`Date.now()`) at which the handler's `ctx.signal` aborts. */
  deadlineMs: number;
  /**
   * The agent's own deadline (`Request-Timeout`) within `deadlineMs`, if it said: a task that waits
   * for the large-request lane gets its handler timeout from when it runs, never past this.
   */
  requestDeadlineMs?: number;
  /**
   * Actions with file parameters: the execution's upload folder. The reply then lists the
   * locations of the state handed out that name a file in it (`./file-state.ts`, rule 2).
   */
  uploadFolder?: string;
  /** prepare: the files uploaded with it, by file parameter; the handler thread writes their paths into the config. */
  uploadedFiles?: Record<string, string>;
}

/** A {@link HandlerTask} as a handler thread receives it: sealed values as their shared bytes. */
export type WireHandlerTask = Omit<HandlerTask, 'request' | 'state'> & WireState & { request?: JsonObject; sealedRequest?: Uint8Array };

/**
 * A handler's answer. `state` is the state as the handler left it, also on failure — absent when
 * it could not be taken (too large for the agent to send back): the caller keeps the state it sent.
 */
export type HandlerReply = HandlerOutcome & {
  state?: StateValue;
  /** With the task's `uploadFolder`: where the state handed out names files in it. */
  uploadLocations?: JsonLocation[];
};

/** A {@link HandlerReply} as a handler thread sends it: a large state sealed. */
export type WireHandlerReply = HandlerOutcome & WireState & { uploadLocations?: JsonLocation[] };

type HandlerOutcome = { ok: true; result: ResultExtras & { completed?: boolean } } | { ok: false; error: ErrorData };

/** A request body larger than `LARGE_JSON_BYTES`, sent to the large-request lane to be decoded. */
export interface DecodeTask {
  /** Whose request body: the schema of that endpoint validates it. */
  kind: Phase;
  /** The body as received (UTF-8 JSON); its buffer is transferred, not copied. */
  bytes?: Uint8Array;
  /** Or the `request` field of a multipart prepare (refused as the main thread refuses a small one: `parseRequestField`). */
  requestField?: string;
  /** prepare: the action's file parameters (rule 1 of `./file-state.ts` needs which ones have a value). */
  fileParameters?: string[];
}

/**
 * What the main thread needs of a decoded body: the execution id and the rest sealed. A failure
 * carries the answer the main thread would have given had it parsed the body itself.
 */
export type DecodeReply =
  | {
      ok: true;
      /** As sent (the lifecycle lower-cases it). */
      executionId: string;
      /** start, status, stop: the state, sealed when large. */
      state?: WireState;
      /** prepare, query: the validated request — sealed (`./sealed.ts`) when still large. */
      request?: JsonObject;
      sealedRequest?: Uint8Array;
      /** prepare: the file parameters whose config value is set (not absent, null or empty). */
      filledFileParameters?: string[];
    }
  | { ok: false; error: { code: string; httpStatus: number; title: string; detail?: string } };

/** A body the large-request lane decoded (`WorkerPools.decode` turns a refusal into its error). */
export type DecodedBody = Extract<DecodeReply, { ok: true }>;

/** Which kind of body thread runs a body: a thread of its own, or one shared by many bodies. */
export type BodyKind = 'cpu' | 'io';

/** Data a body thread receives at start-up. */
export interface BodyThreadBootData extends WorkerBootData {
  kind: BodyKind;
  /** Nice value the thread sets on itself (Linux: per thread); 0 leaves it alone. */
  nice: number;
  /** Test-only hold points (`src/shm/test-gates.ts`); absent in production. */
  gates?: SharedArrayBuffer;
}

/** One body run, as the main thread hands it to a body thread. */
export interface BodyTask {
  actionId: string;
  executionId: string;
  slot: number;
  generation: number;
  state: StateValue;
}

/** A {@link BodyTask} as a body thread receives it. */
export type WireBodyTask = Omit<BodyTask, 'state'> & WireState;

/** Main thread → body thread. */
export type BodyThreadCommand = { type: 'run'; runId: number; task: WireBodyTask };

/**
 * Body thread → main thread, all on the thread's one port, so they arrive in order: a run's
 * `began`, every `report` and every `result` come before its `ended`.
 */
export type BodyThreadEvent =
  | { type: 'ready' }
  /** The body's code is about to run (BODY word is Running). */
  | { type: 'began'; runId: number }
  /** `ctx.report()`, validated on the body's thread (metric timestamps filled in). */
  | ({ type: 'report'; runId: number } & CheckedBodyReport)
  /** `ctx.publish()`: the body's latest result as JSON text, checked on the body's thread. */
  | { type: 'result'; runId: number; json: string }
  /**
   * The body ended; its context is closed and it will send nothing more. `clean`: it left nothing
   * running on the thread (no timer, socket or other handle), so the thread may take another body
   * (judged on cpu threads; an io thread, shared by many bodies at once, always says true).
   */
  | { type: 'ended'; runId: number; phase: BodyReply['phase']; error?: ErrorData; endedAtUs: number; clean: boolean };

/** A body report after validation on the body's thread (metric timestamps filled in). */
export interface CheckedBodyReport {
  messages?: Message[];
  metrics?: Metric[];
}

/** How a body run ended, as its thread saw it. */
export interface BodyReply {
  phase: 'returned' | 'failed' | 'stopped' | 'skipped';
  error?: ErrorData;
}

/** A rule-2 check of a sealed state (`./file-state.ts`), run on the large-request lane. */
export interface UploadCheckTask {
  sealedState: Uint8Array;
  folder: string;
  locations: JsonLocation[];
}
