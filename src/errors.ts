/**
 * The one error catalogue of the runtime.
 *
 * Every error the runtime answers with has a stable `code`, an HTTP status and the wire title the
 * agent sees. Errors cross thread boundaries as plain {@link ErrorData} (structured clone drops class
 * identity); the main thread turns that data straight into the wire error ({@link handlerErrorToWire}).
 */

/** Wire shape of an ActionKit error (`ActionKitError` in the OpenAPI spec). */
export interface ActionKitErrorBody {
  title: string;
  status?: 'failed' | 'errored';
  type?: string;
  detail?: string;
  instance?: string;
}

/** Options of {@link ExtensionError}; every field maps 1:1 to the wire error. */
export interface ExtensionErrorOptions {
  /** Human-readable explanation of this occurrence. */
  detail?: string;
  /** `failed` (the action detected a failure, e.g. a check did not pass) or `errored` (technical error, default). */
  status?: 'failed' | 'errored';
  /** URI reference identifying the problem type. */
  type?: string;
  /** URI reference identifying this occurrence. */
  instance?: string;
  /** Underlying cause, kept for logs; never sent to the agent. */
  cause?: unknown;
}

/**
 * An error whose title, detail and status are sent to the agent verbatim.
 *
 * Throw it from any handler (prepare, start, status, stop, query) or from a body. Any other thrown
 * value is wrapped with the reference SDK's title for that phase (`Failed to prepare.` etc.) and its
 * message as detail.
 */
const EXTENSION_ERROR_BRAND = Symbol.for('actionkit-runtime.extension-error');

export class ExtensionError extends Error {
  /** Wire status; `undefined` lets the agent apply its default (`errored`). */
  readonly status: 'failed' | 'errored' | undefined;
  readonly detail: string | undefined;
  readonly type: string | undefined;
  readonly instance: string | undefined;

  constructor(title: string, options: ExtensionErrorOptions = {}) {
    super(title, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ExtensionError';
    this.status = options.status;
    this.detail = options.detail;
    this.type = options.type;
    this.instance = options.instance;
    Object.defineProperty(this, EXTENSION_ERROR_BRAND, { value: true });
  }

  /**
   * Recognises instances made by any copy of this package (an author's bundle or a second copy in
   * node_modules), not only this module's class.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[EXTENSION_ERROR_BRAND] === true;
  }

  /** The title as sent on the wire. */
  get title(): string {
    return this.message;
  }

  /** The wire body of this error. */
  toWire(): ActionKitErrorBody {
    return compactError({
      title: this.message,
      status: this.status,
      detail: this.detail,
      type: this.type,
      instance: this.instance,
    });
  }
}

/** Stable codes of every error the runtime itself produces. */
export const ErrorCode = {
  /** Request body is not JSON. */
  BadJson: 'BAD_JSON',
  /** Request body is JSON but does not match the wire schema. */
  InvalidRequest: 'INVALID_REQUEST',
  /** Path does not name a registered action or endpoint. */
  NotFound: 'NOT_FOUND',
  /** Known path, wrong HTTP method. */
  MethodNotAllowed: 'METHOD_NOT_ALLOWED',
  /** Request body larger than the configured limit. */
  BodyTooLarge: 'BODY_TOO_LARGE',
  /** Request body of a content type the endpoint does not accept. */
  UnsupportedMediaType: 'UNSUPPORTED_MEDIA_TYPE',
  /** An execution with this id already exists (duplicate prepare or start). */
  Conflict: 'CONFLICT',
  /** The control-block table is full. */
  CapacityExhausted: 'CAPACITY_EXHAUSTED',
  /** `Request-Timeout` elapsed before the handler answered. */
  Timeout: 'TIMEOUT',
  /** The process is shutting down and accepts no new executions. */
  ShuttingDown: 'SHUTTING_DOWN',
  /** Multipart body could not be parsed. */
  Multipart: 'MULTIPART',
  /** Uploaded file larger than the configured limit. */
  FileTooLarge: 'FILE_TOO_LARGE',
  /** A file could not be written. */
  FileSave: 'FILE_SAVE',
  /** An author handler failed (wrapped with the phase title). */
  HandlerFailed: 'HANDLER_FAILED',
  /** The worker thread running a handler or body died (crash, exit, OOM, hang). */
  WorkerLost: 'WORKER_LOST',
  /** A bug in the runtime. */
  Internal: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * An error produced by the runtime itself: a code, an HTTP status and the wire error body.
 * Handlers never need to throw this; it is what the HTTP layer answers with.
 */
export class RuntimeError extends Error {
  readonly code: ErrorCode;
  readonly httpStatus: number;
  readonly detail: string | undefined;

  constructor(code: ErrorCode, httpStatus: number, title: string, detail?: string) {
    super(title);
    this.name = 'RuntimeError';
    this.code = code;
    this.httpStatus = httpStatus;
    this.detail = detail;
  }

  toWire(): ActionKitErrorBody {
    return compactError({ title: this.message, detail: this.detail });
  }
}

/** Plain-data form of an error, the only form in which errors cross threads. */
export interface ErrorData {
  code: ErrorCode | 'EXTENSION_ERROR';
  message: string;
  details: {
    detail?: string;
    status?: 'failed' | 'errored';
    type?: string;
    instance?: string;
    /** Stack of the original error, for logs only. */
    stack?: string;
  };
}

/** Convert anything thrown into plain data that survives `postMessage`. */
export function toErrorData(error: unknown): ErrorData {
  if (error instanceof ExtensionError) {
    return {
      code: 'EXTENSION_ERROR',
      message: error.message,
      details: compactError({
        detail: error.detail,
        status: error.status,
        type: error.type,
        instance: error.instance,
        stack: error.stack,
      }),
    };
  }
  if (error instanceof RuntimeError) {
    return { code: error.code, message: error.message, details: compactError({ detail: error.detail }) };
  }
  if (error instanceof Error) {
    return { code: ErrorCode.HandlerFailed, message: error.message, details: compactError({ stack: error.stack }) };
  }
  return { code: ErrorCode.HandlerFailed, message: describeThrown(error), details: {} };
}

/**
 * The wire error for a failure of an author handler in `phase`: an {@link ExtensionError} passes
 * through verbatim (in every phase, unlike the reference SDK's pointer/value mix-up); anything else
 * gets the reference title of the phase with the message as detail.
 */
export function handlerErrorToWire(data: ErrorData, phaseTitle: string): ActionKitErrorBody {
  if (data.code === 'EXTENSION_ERROR') {
    const { detail, status, type, instance } = data.details;
    return compactError({ title: data.message, detail, status, type, instance });
  }
  return compactError({ title: phaseTitle, detail: data.message });
}

/** Render a thrown non-Error value for a message. */
export function describeThrown(value: unknown): string {
  try {
    if (value instanceof Error) return String(value.message);
    if (typeof value === 'string') return value;
    const text = JSON.stringify(value) ?? String(value);
    // A thrown object may carry anything (request headers, a whole response): say what it is, briefly.
    return text.length > MAX_THROWN_TEXT ? `${text.slice(0, MAX_THROWN_TEXT)}…` : text;
  } catch {
    // Never throws: an object that cannot even be turned into a string (a null prototype holding a bigint).
    return Object.prototype.toString.call(value);
  }
}

/** Characters of a thrown non-Error value kept in a message. */
const MAX_THROWN_TEXT = 200;

/** Drop `undefined` fields so bodies carry only what is set (the spec has no nullable fields). */
function compactError<T extends object>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) if (v !== undefined) out[key] = v;
  return out as { [K in keyof T]: Exclude<T[K], undefined> };
}
