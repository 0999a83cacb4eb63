/**
 * {@link AgentClient}: drives any ActionKit extension over HTTP the way the Steadybit agent does,
 * and validates every answer against the wire schemas.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import type { AttributeDescriptions, DiscoveryData, DiscoveryDescription, TargetDescription, TargetEnrichmentRule } from '../api/discovery.js';
import type { ExtensionIndex } from '../api/extension-index.js';
import type { ActionDescription, ActionList, DescribingEndpointReference, MutatingEndpointReference } from '../api/schemas.js';
import { ErrorAnswer, ProtocolError, TransportError } from './errors.js';
import { runExecution, type Exchange, type ExecutionEndpoints, type FileSource, type PrepareRequest, type RunOptions, type RunResult } from './run.js';
import { isDefinedAction } from '../action.js';
import type { AnyDefinedAction, ConfigOf, StateOf } from './run.js';
import { ANSWER_SCHEMAS, validateWire, type AnswerOf, type AnswerSchemaName } from './validate.js';

/** Options of {@link AgentClient}. */
export interface AgentClientOptions {
  /**
   * Where the extension is, e.g. `http://127.0.0.1:8080`. Endpoint paths are appended to its path,
   * so `http://host/prefix` serves `/prefix/<id>/prepare`.
   */
  baseUrl: string | URL;
  /** Path of the action list (the agent's registration URL). Default `/`. */
  listPath?: string;
  /**
   * Sent as `Request-Timeout` (seconds) with every request, as the agent does; the client itself
   * gives up one second later. `null` sends no `Request-Timeout` and waits as long as it takes (for
   * tests of the extension's own time limits). Default 30 000 ms.
   */
  requestTimeoutMs?: number | null;
  /**
   * An undici `Dispatcher` passed to `fetch` (`init.dispatcher`), e.g. an `Agent` with TLS options
   * (`connect: { ca, cert, key }`) or a unix socket (`connect: { socketPath }`).
   */
  dispatcher?: FetchDispatcher;
  /** The `fetch` to use. Default: the global one (Node's bundled undici). */
  fetch?: typeof fetch;
  /** Headers sent with every request (e.g. authorization of a proxy in front of the extension). */
  headers?: Readonly<Record<string, string>>;
}

/**
 * What {@link AgentClientOptions.dispatcher} accepts: an undici `Dispatcher` (an `Agent`, `Pool`,
 * `ProxyAgent`, … from the `undici` package), which Node's `fetch` takes as `init.dispatcher`.
 *
 * Typed by its shape on purpose: `RequestInit['dispatcher']` exists only in `@types/node`'s
 * `RequestInit`, and a consumer whose tsconfig includes the DOM lib (TypeScript's default when
 * `lib` is not set) gets the DOM's `RequestInit` instead, so a public signature naming it fails
 * to compile there. Any object with undici's `dispatch` method fits.
 */
export interface FetchDispatcher {
  /** undici's `Dispatcher.dispatch(options, handler)`. */
  dispatch(...args: never[]): unknown;
}

/** An HTTP answer as received, before any schema is applied. */
export interface RawAnswer {
  /** `METHOD path`, for messages. */
  request: string;
  /** HTTP status. */
  httpStatus: number;
  /** Response headers. */
  headers: Headers;
  /** `Content-Type` ('' when absent). */
  contentType: string;
  /** The body as text. */
  text: string;
  /** The body parsed as JSON, or undefined when it is empty or not JSON. */
  json: unknown;
  /** Request sent → body received. */
  durationMs: number;
}

/** Options of one raw request. */
export interface ExchangeOptions {
  /** Extra headers (override the client's). */
  headers?: Readonly<Record<string, string>>;
  /** `Request-Timeout` of this request instead of the client's (`null`: none). */
  requestTimeoutMs?: number | null;
}

/** Default `Request-Timeout`. */
const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** How much longer than its `Request-Timeout` the client waits for the extension's own timeout answer. */
const CLIENT_TIMEOUT_SLACK_MS = 1_000;

/**
 * An agent-like client for one extension.
 *
 * Every answer is validated against the schema the agent applies to it (`ActionList`,
 * `ActionDescription`, `PrepareResult`, …; non-2xx answers against `ActionKitError`); a violation
 * throws a {@link SchemaViolation} naming each path and offending value, a non-JSON answer a
 * {@link ProtocolError}, an error answer an {@link ErrorAnswer}, a lost request a
 * {@link TransportError}.
 *
 * @example
 * ```ts
 * const client = new AgentClient({ baseUrl: `http://127.0.0.1:${port}` });
 * const run = await client.run('com.example.cpu-stress', { config: { duration: 2000 }, timeScale: 0.1 });
 * assert.deepEqual(run.errors, []);
 * ```
 */
export class AgentClient {
  /** The extension's base URL. */
  readonly baseUrl: URL;
  private readonly listPath: string;
  private readonly requestTimeoutMs: number | null;
  private readonly dispatcher: FetchDispatcher | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly headers: Readonly<Record<string, string>>;

  /** @throws RangeError for a non-positive `requestTimeoutMs`; TypeError for an invalid `baseUrl`. */
  constructor(options: AgentClientOptions) {
    this.baseUrl = new URL(options.baseUrl);
    this.listPath = options.listPath ?? '/';
    this.requestTimeoutMs = options.requestTimeoutMs === undefined ? DEFAULT_REQUEST_TIMEOUT_MS : options.requestTimeoutMs;
    if (this.requestTimeoutMs !== null && !(this.requestTimeoutMs > 0)) throw new RangeError(`requestTimeoutMs must be positive or null, got ${this.requestTimeoutMs}`);
    this.dispatcher = options.dispatcher;
    this.fetchImpl = options.fetch ?? fetch;
    this.headers = options.headers ?? {};
  }

  /**
   * Send one request and return the answer whatever its status; throws only a
   * {@link TransportError} (no answer). `body`: `FormData` is sent as multipart, a string verbatim
   * (set `content-type` yourself), anything else as JSON.
   */
  async exchange(method: string, path: string, body?: unknown, options: ExchangeOptions = {}): Promise<RawAnswer> {
    const request = `${method} ${path}`;
    const timeoutMs = options.requestTimeoutMs === undefined ? this.requestTimeoutMs : options.requestTimeoutMs;
    const headers: Record<string, string> = { ...(timeoutMs === null ? {} : { 'request-timeout': String(timeoutMs / 1000) }), ...lowerCaseKeys(this.headers) };
    const init: RequestInit = { method, headers };
    if (timeoutMs !== null) init.signal = AbortSignal.timeout(timeoutMs + CLIENT_TIMEOUT_SLACK_MS);
    if (body instanceof FormData) init.body = body;
    else if (typeof body === 'string') init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      headers['content-type'] = 'application/json';
    }
    Object.assign(headers, lowerCaseKeys(options.headers ?? {}));
    // Node's fetch reads `dispatcher` from the init; not every RequestInit type declares it.
    if (this.dispatcher !== undefined) Object.assign(init, { dispatcher: this.dispatcher });
    const startedAt = performance.now();
    let response: Response;
    let text: string;
    try {
      response = await this.fetchImpl(this.url(path), init);
      text = await response.text();
    } catch (error) {
      // fetch hides the socket error in `cause`; show it.
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      const reason = (error as Error).name === 'TimeoutError' ? `no answer within ${(timeoutMs ?? 0) + CLIENT_TIMEOUT_SLACK_MS} ms` : [cause?.code, cause?.message ?? String(error)].filter(Boolean).join(' ');
      throw new TransportError(request, `request failed: ${reason}`, { cause: error });
    }
    let json: unknown;
    if (text.trim() !== '') {
      try {
        json = JSON.parse(text) as unknown;
      } catch {
        json = undefined;
      }
    }
    return {
      request,
      httpStatus: response.status,
      headers: response.headers,
      contentType: response.headers.get('content-type') ?? '',
      text,
      json,
      durationMs: performance.now() - startedAt,
    };
  }

  /** `GET <listPath>`: the action list. */
  async list(): Promise<ActionList> {
    return (await this.call({ method: 'GET', path: this.listPath }, undefined, 'ActionList')).result;
  }

  /**
   * `GET <listPath>`: the whole index — the actions and whatever else the extension lists
   * (`discoveries`, `targetTypes`, …), every kit's part validated.
   */
  async index(): Promise<ExtensionIndex> {
    return (await this.call({ method: 'GET', path: this.listPath }, undefined, 'ExtensionIndex')).result;
  }

  /** `GET` of a `discoveries` entry (or a path): the discovery's description. */
  async describeDiscovery(reference: DescribingEndpointReference | string): Promise<DiscoveryDescription> {
    return (await this.call(asReference(reference), undefined, 'DiscoveryDescription')).result;
  }

  /** Call a discovery's `discover` endpoint, as the agent does every `callInterval`: the targets and enrichment data. */
  async discover(discovery: DiscoveryDescription | DescribingEndpointReference | string): Promise<DiscoveryData> {
    const reference = typeof discovery === 'object' && 'discover' in discovery ? (discovery as DiscoveryDescription).discover : asReference(discovery as DescribingEndpointReference | string);
    return (await this.call(reference, undefined, 'DiscoveryData')).result;
  }

  /** `GET` of a `targetTypes` entry (or a path): the target type's description. */
  async describeTargetType(reference: DescribingEndpointReference | string): Promise<TargetDescription> {
    return (await this.call(asReference(reference), undefined, 'TargetDescription')).result;
  }

  /** `GET` of a `targetAttributes` entry (or a path): the attributes' labels. */
  async describeTargetAttributes(reference: DescribingEndpointReference | string): Promise<AttributeDescriptions> {
    return (await this.call(asReference(reference), undefined, 'AttributeDescriptions')).result;
  }

  /** `GET` of a `targetEnrichmentRules` entry (or a path): the enrichment rule. */
  async describeEnrichmentRule(reference: DescribingEndpointReference | string): Promise<TargetEnrichmentRule> {
    return (await this.call(asReference(reference), undefined, 'TargetEnrichmentRule')).result;
  }

  /** `GET <path>` of a list entry (or a path): the action's description. */
  async describe(reference: DescribingEndpointReference | string): Promise<ActionDescription> {
    return (await this.call(asReference(reference), undefined, 'ActionDescription')).result;
  }

  /** Every listed description, in list order. */
  async describeAll(): Promise<ActionDescription[]> {
    const list = await this.list();
    const descriptions: ActionDescription[] = [];
    for (const reference of list.actions) descriptions.push(await this.describe(reference));
    return descriptions;
  }

  /**
   * The description of `actionId`: lists, then describes entries in order until the id matches (as
   * the Go test client; a broken description before it fails the lookup).
   * @throws Error when no listed action has this id.
   */
  async findAction(actionId: string): Promise<ActionDescription> {
    const list = await this.list();
    for (const reference of list.actions) {
      const description = await this.describe(reference);
      if (description.id === actionId) return description;
    }
    throw new Error(`action with id ${JSON.stringify(actionId)} not found in ${this.url(this.listPath)}`);
  }

  /** The lifecycle endpoints of the described action, for single calls or {@link runExecution}. */
  endpoints(description: ActionDescription): ExecutionEndpoints {
    const need = (name: 'status' | 'stop', ref: MutatingEndpointReference | undefined): MutatingEndpointReference => {
      if (ref === undefined) throw new Error(`action ${description.id} describes no ${name} endpoint`);
      return ref;
    };
    return {
      description,
      prepare: async (request) => this.call(description.prepare, await this.prepareBody(description, request), 'PrepareResult'),
      start: (request) => this.call(description.start, request, 'StartResult'),
      status: (request) => this.call(need('status', description.status), request, 'StatusResult'),
      stop: (request) => this.call(need('stop', description.stop), request, 'StopResult'),
      query: (request) => {
        const endpoint = description.metrics?.query?.endpoint;
        if (endpoint === undefined) throw new Error(`action ${description.id} describes no metrics.query endpoint`);
        return this.call(endpoint, request, 'QueryMetricsResult');
      },
    };
  }

  /**
   * The lifecycle endpoints of an action this extension serves, found by the definition's id (see
   * {@link findAction}) and typed by the definition: its config as the agent sends it, its state.
   */
  async endpointsOf<A extends AnyDefinedAction>(action: A): Promise<ExecutionEndpoints<ConfigOf<A>, StateOf<A>>> {
    // The answers are validated against the wire schemas; the types are the definition's promise.
    return this.endpoints(await this.findAction(action.description.id)) as unknown as ExecutionEndpoints<ConfigOf<A>, StateOf<A>>;
  }

  /**
   * Run one execution like the agent: (list → describe when given an id or a definition) → prepare
   * → start → status at its callInterval until completed, an error or the run window ends → stop,
   * metric queries in parallel. Failures are collected in `errors`; only a failing lookup throws.
   * Given the action definition (the value `defineAction` returned), `config` and the result's
   * states are typed by it.
   */
  run<A extends AnyDefinedAction>(action: A, options?: RunOptions<ConfigOf<A>>): Promise<RunResult<StateOf<A>>>;
  run(action: string | ActionDescription, options?: RunOptions): Promise<RunResult>;
  async run(action: string | ActionDescription | AnyDefinedAction, options: RunOptions<unknown> = {}): Promise<RunResult<unknown>> {
    const description =
      typeof action === 'string' ? await this.findAction(action) : isDefinedAction(action) ? await this.findAction(action.description.id) : (action as ActionDescription);
    // Typed by the overloads; the config goes to the extension as it is, like the agent's.
    return runExecution(this.endpoints(description), options as RunOptions);
  }

  /** Send, then apply the agent's reading of the answer (see {@link interpretAnswer}). */
  private async call<N extends AnswerSchemaName>(ref: { method: string; path: string }, body: unknown, schema: N): Promise<Exchange<AnswerOf<N>>> {
    return interpretAnswer(await this.exchange(ref.method.toUpperCase(), ref.path, body), schema);
  }

  /** JSON body, or multipart (`request` = JSON, one part per file parameter) when files are involved. */
  private async prepareBody(description: ActionDescription, request: PrepareRequest): Promise<unknown> {
    const { files, ...json } = request;
    const hasFileParameter = description.parameters.some((parameter) => parameter.type === 'file');
    if (files === undefined && !hasFileParameter) return json;
    const form = new FormData();
    form.append('request', JSON.stringify(json));
    for (const [name, source] of Object.entries(files ?? {})) {
      const { filename, content } = await loadFile(source);
      form.append(name, new Blob([content], { type: 'application/octet-stream' }), filename);
    }
    return form;
  }

  private url(path: string): URL {
    // Concatenated, not resolved: a path such as `//x` must stay a path on this extension.
    const prefix = this.baseUrl.pathname.replace(/\/+$/, '');
    return new URL(`${this.baseUrl.origin}${prefix}${path}`);
  }
}

/**
 * How the agent reads an answer: a 2xx body must validate against `schema` (an ActionKitError
 * alone is also a valid answer and becomes an {@link ErrorAnswer}); any other status must carry an
 * ActionKitError body ({@link ErrorAnswer}); a body that is not JSON is a {@link ProtocolError};
 * a schema violation a {@link SchemaViolation}.
 */
export function interpretAnswer<N extends AnswerSchemaName>(answer: RawAnswer, schema: N): Exchange<AnswerOf<N>> {
  const { request, httpStatus, json } = answer;
  if (json === undefined) throw new ProtocolError(request, httpStatus, answer.contentType, answer.text);
  if (httpStatus < 200 || httpStatus > 299) {
    throw new ErrorAnswer(request, httpStatus, validateWire('ActionKitError', json, request, httpStatus));
  }
  if (!ANSWER_SCHEMAS[schema].safeParse(json).success) {
    const error = ANSWER_SCHEMAS.ActionKitError.safeParse(json);
    if (error.success && schema !== 'ActionKitError') throw new ErrorAnswer(request, httpStatus, error.data);
  }
  return { httpStatus, result: validateWire(schema, json, request, httpStatus), durationMs: answer.durationMs };
}

function asReference(reference: DescribingEndpointReference | string): DescribingEndpointReference {
  return typeof reference === 'string' ? { method: 'GET', path: reference } : reference;
}

async function loadFile(source: FileSource): Promise<{ filename: string; content: Uint8Array | string }> {
  if (typeof source === 'string') return { filename: basename(source), content: new Uint8Array(await readFile(source)) };
  return source;
}

function lowerCaseKeys(headers: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
}
