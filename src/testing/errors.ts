/**
 * What the agent test client throws when an extension answers something the agent would reject.
 * Every error names the request (`POST /com.example.x/status`) so a failing test points at the
 * endpoint, and carries the data a test may want to assert on.
 */
import type { ActionKitError } from '../api/schemas.js';

/** Base class of every error of the test client. */
export class AgentClientError extends Error {
  /** The request, e.g. `POST /com.example.x/status`. */
  readonly request: string;

  /**
   * @param request the request this error is about, e.g. `GET /`
   * @param message what went wrong, without the request (it is prefixed)
   */
  constructor(request: string, message: string, options?: ErrorOptions) {
    super(`${request}: ${message}`, options);
    this.name = new.target.name;
    this.request = request;
  }
}

/** The request never got an HTTP answer: connection refused, reset, or the client-side timeout. */
export class TransportError extends AgentClientError {}

/** The answer is not JSON (an HTML error page, plain text, an empty 500, …). */
export class ProtocolError extends AgentClientError {
  /** HTTP status of the answer. */
  readonly httpStatus: number;
  /** `Content-Type` of the answer ('' when absent). */
  readonly contentType: string;
  /** The start of the body (at most 200 characters). */
  readonly bodyExcerpt: string;

  /**
   * @param request the request, e.g. `POST /x/prepare`
   * @param httpStatus status of the answer
   * @param contentType its `Content-Type` ('' when absent)
   * @param body the body as received (cut to 200 characters for the message)
   */
  constructor(request: string, httpStatus: number, contentType: string, body: string) {
    const excerpt = body.length > 200 ? `${body.slice(0, 200)}…` : body;
    super(request, `answered ${httpStatus} with ${contentType === '' ? 'no content type' : contentType}, not JSON: ${JSON.stringify(excerpt)}`);
    this.httpStatus = httpStatus;
    this.contentType = contentType;
    this.bodyExcerpt = excerpt;
  }
}

/** One place where an answer violates its schema. */
export interface SchemaIssue {
  /** Path of the offending field, `a.b[0].c` (`''` for the whole body). */
  path: string;
  /** What is wrong, e.g. `Invalid input: expected boolean, received string`. */
  message: string;
  /** The value found at `path` (`undefined` when the field is missing). */
  value: unknown;
}

/** A JSON answer that does not validate against the ActionKit schema the agent applies to it. */
export class SchemaViolation extends AgentClientError {
  /** HTTP status of the answer. */
  readonly httpStatus: number;
  /** Name of the schema, e.g. `StatusResult`. */
  readonly schema: string;
  /** Every violation, in the schema's order. */
  readonly issues: readonly SchemaIssue[];
  /** The whole offending body. */
  readonly body: unknown;

  /**
   * @param request the request, e.g. `POST /x/status`
   * @param httpStatus status of the answer
   * @param schema spec name of the schema applied (`StatusResult`, …)
   * @param issues every violation with path and value
   * @param body the offending body
   */
  constructor(request: string, httpStatus: number, schema: string, issues: readonly SchemaIssue[], body: unknown) {
    const rendered = issues.map((issue) => `${issue.path === '' ? '(body)' : issue.path}: ${issue.message} (found ${renderValue(issue.value)})`);
    super(request, `answer (${httpStatus}) violates ${schema}: ${rendered.join('; ')}`);
    this.httpStatus = httpStatus;
    this.schema = schema;
    this.issues = issues;
    this.body = body;
  }
}

/**
 * The extension answered with an ActionKitError and a non-2xx status (e.g. stop failed, unknown
 * execution). The message reads like the Go test client's: `[<status>] <title>: <detail>`.
 */
export class ErrorAnswer extends AgentClientError {
  /** HTTP status of the answer. */
  readonly httpStatus: number;
  /** The error body. */
  readonly error: ActionKitError;

  /**
   * @param request the request, e.g. `POST /x/stop`
   * @param httpStatus status of the answer
   * @param error the validated ActionKitError body
   */
  constructor(request: string, httpStatus: number, error: ActionKitError) {
    super(request, `answered ${httpStatus}: ${describeActionKitError(error)}`);
    this.httpStatus = httpStatus;
    this.error = error;
  }
}

/** `[<status>] <title>: <detail>` (status defaults to `errored`, as the agent reads it). */
export function describeActionKitError(error: ActionKitError): string {
  const detail = error.detail === undefined || error.detail === '' ? '' : `: ${error.detail}`;
  return `[${error.status ?? 'errored'}] ${error.title}${detail}`;
}

/** A value for a message: JSON, cut at 120 characters; `missing` for undefined. */
export function renderValue(value: unknown): string {
  if (value === undefined) return 'missing';
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}
