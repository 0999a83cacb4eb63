/**
 * Run an action's handlers in a test without HTTP: a real {@link Extension} (worker pools, control
 * table, watchdog, body threads, stop queue) that never listens, whose lifecycle operations are called
 * directly. Request bodies are validated and answers read exactly as over HTTP, so what passes here
 * passes in front of the agent, minus the HTTP envelope.
 */
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import {
  ActionStatusRequestBodySchema,
  PrepareActionRequestBodySchema,
  QueryMetricsRequestBodySchema,
  StartActionRequestBodySchema,
  StopActionRequestBodySchema,
} from '../api/schemas.js';
import type { ExtensionOptions } from '../config.js';
import { ErrorCode, RuntimeError } from '../errors.js';
import { createExtension, type Extension } from '../extension.js';
import { validateBody } from '../http/app.js';
import { FOLDER_MODE, UPLOADED_FILE_MODE } from '../http/uploads.js';
import type { Reply, RequestScope, UploadedFiles } from '../runtime/lifecycle.js';
import type { RegisteredAction } from '../runtime/registry.js';
import { interpretAnswer } from './client.js';
import type { AnswerOf, AnswerSchemaName } from './validate.js';
import { runExecution, type Exchange, type ExecutionEndpoints, type FileSource, type RunOptions, type RunResult } from './run.js';

/** An action module: a `file:` URL, a URL string or an absolute path. */
export type ModuleReference = URL | string;

/** Options of {@link createActionHarness}. */
export interface ActionHarnessOptions {
  /** Which action to drive when the modules define several. Default: the only one. */
  actionId?: string;
  /**
   * Options of the underlying extension (threads, `heartbeatMinIntervalMs`, `stopGraceMs`, …).
   * Defaults for tests: no probes, no signal handlers, log level `warn`, a fresh temporary
   * `uploadDir` removed by `close()`. The environment still overrides them, as for `createExtension`.
   */
  extension?: Omit<Partial<ExtensionOptions>, 'actions'>;
}

/**
 * One action's lifecycle operations on real worker threads, without HTTP. The methods answer like
 * the HTTP endpoints (see {@link ExecutionEndpoints}); {@link ActionHarness.run} drives a whole
 * execution like the agent.
 */
export interface ActionHarness extends ExecutionEndpoints {
  /** The extension behind the harness (e.g. for `stats()` or `stopAll()`). */
  readonly extension: Extension;
  /** Run one execution like the agent (see {@link runExecution}). */
  run(options?: RunOptions): Promise<RunResult>;
  /** Stop every execution, end the threads, remove the temporary upload folder. Idempotent. */
  close(): Promise<void>;
}

/** The request scope of a direct call: no `Request-Timeout`, never abandoned. */
const DIRECT_SCOPE: RequestScope = { deadlineMs: undefined, abandoned: () => false };

/**
 * Load `modules` into an extension that does not listen and return the harness of one action.
 *
 * @example
 * ```ts
 * const harness = await createActionHarness(new URL('../actions/cpu-stress.js', import.meta.url));
 * try {
 *   const prepared = await harness.prepare({ executionId: randomUUID(), config: { duration: 1000 } });
 * } finally {
 *   await harness.close();
 * }
 * ```
 * @throws RegistrationError / ConfigError as `createExtension`; Error when `actionId` is unknown or
 *   ambiguous.
 */
export async function createActionHarness(modules: ModuleReference | readonly ModuleReference[], options: ActionHarnessOptions = {}): Promise<ActionHarness> {
  const ownUploadDir = options.extension?.uploadDir === undefined ? await mkdtemp(join(tmpdir(), 'actionkit-harness-')) : undefined;
  const uploadDir = options.extension?.uploadDir ?? ownUploadDir!;
  let extension: Extension;
  try {
    extension = await createExtension({
      healthPort: null,
      handleSignals: false,
      logLevel: 'warn',
      ...options.extension,
      uploadDir,
      actions: Array.isArray(modules) ? [...(modules as readonly ModuleReference[])] : [modules as ModuleReference],
    });
  } catch (error) {
    if (ownUploadDir !== undefined) await rm(ownUploadDir, { recursive: true, force: true });
    throw error;
  }
  const { registry, lifecycle } = extension.inProcess();
  const actions = registry.all();
  const action = options.actionId === undefined ? (actions.length === 1 ? actions[0] : undefined) : registry.get(options.actionId);
  if (action === undefined) {
    await extension.close();
    if (ownUploadDir !== undefined) await rm(ownUploadDir, { recursive: true, force: true });
    const ids = actions.map((a) => a.id).join(', ');
    throw new Error(options.actionId === undefined ? `the modules define ${actions.length} actions (${ids}): pass actionId` : `no action ${JSON.stringify(options.actionId)} in the modules (they define ${ids})`);
  }

  /** Run one operation and read its reply exactly as the HTTP client reads an answer. */
  const answer = async <N extends AnswerSchemaName>(phase: string, schema: N, operation: () => Promise<Reply>): Promise<Exchange<AnswerOf<N>>> => {
    const startedAt = performance.now();
    let reply: Reply;
    try {
      reply = await operation();
    } catch (error) {
      if (!(error instanceof RuntimeError)) throw error;
      reply = { status: error.httpStatus, body: { ...error.toWire() } };
    }
    const json = throughJson(reply.body);
    return interpretAnswer(
      { request: `${phase} ${action.id}`, httpStatus: reply.status, headers: new Headers(), contentType: 'application/json', text: '', json, durationMs: performance.now() - startedAt },
      schema,
    );
  };

  let closing: Promise<void> | undefined;
  const harness: ActionHarness = {
    description: action.description,
    extension,
    prepare: (request) =>
      answer('prepare', 'PrepareResult', async () => {
        const { files, ...json } = request;
        const body = validateBody(throughJson(json), PrepareActionRequestBodySchema);
        const upload = files === undefined ? undefined : await saveFiles(action, uploadDir, body.executionId.toLowerCase(), files);
        return lifecycle.prepare(action, body, upload, DIRECT_SCOPE);
      }),
    start: (request) => answer('start', 'StartResult', () => lifecycle.start(action, validateBody(throughJson(request), StartActionRequestBodySchema), DIRECT_SCOPE)),
    status: (request) =>
      answer('status', 'StatusResult', async () => {
        if (action.description.status === undefined) throw notDescribed(action, 'status');
        return lifecycle.status(action, validateBody(throughJson(request), ActionStatusRequestBodySchema), DIRECT_SCOPE);
      }),
    stop: (request) =>
      answer('stop', 'StopResult', async () => {
        if (action.description.stop === undefined) throw notDescribed(action, 'stop');
        return lifecycle.stop(action, validateBody(throughJson(request), StopActionRequestBodySchema));
      }),
    query: (request) =>
      answer('query', 'QueryMetricsResult', async () => {
        if (!action.hasQueryHandler) throw notDescribed(action, 'metrics.query');
        return lifecycle.query(action, validateBody(throughJson(request), QueryMetricsRequestBodySchema), DIRECT_SCOPE);
      }),
    run: (runOptions) => runExecution(harness, runOptions),
    close: () =>
      (closing ??= (async () => {
        await extension.close();
        if (ownUploadDir !== undefined) await rm(ownUploadDir, { recursive: true, force: true });
      })()),
  };
  return harness;
}

/**
 * Run one execution of the action in `modules` like the agent (prepare → start → status polls →
 * stop, metric queries), on real worker threads without HTTP, then close everything.
 *
 * @example
 * ```ts
 * const run = await runAction(new URL('../actions/cpu-stress.js', import.meta.url), { config: { duration: 500 } });
 * assert.deepEqual(run.errors, []);
 * ```
 */
export async function runAction(modules: ModuleReference | readonly ModuleReference[], options: RunOptions & ActionHarnessOptions = {}): Promise<RunResult> {
  const { actionId, extension, ...runOptions } = options;
  const harness = await createActionHarness(modules, { ...(actionId === undefined ? {} : { actionId }), ...(extension === undefined ? {} : { extension }) });
  try {
    return await harness.run(runOptions);
  } finally {
    await harness.close();
  }
}

/**
 * Save files where a multipart prepare would: `<uploadDir>/<executionId>/<basename>`, one per
 * `file` parameter (anything else is the same 400 as over HTTP).
 */
async function saveFiles(action: RegisteredAction, uploadDir: string, executionId: string, files: Readonly<Record<string, FileSource>>): Promise<UploadedFiles> {
  const folder = join(uploadDir, executionId);
  const saved = new Map<string, string>();
  for (const [name, source] of Object.entries(files)) {
    if (!action.fileParameters.has(name)) {
      throw new RuntimeError(ErrorCode.Multipart, 400, 'Failed to parse multipart request body.', `${JSON.stringify(name)} is not a parameter of type "file" of this action`);
    }
    const filename = basename(typeof source === 'string' ? source : source.filename);
    const content = typeof source === 'string' ? await readFile(source) : source.content;
    await mkdir(folder, { recursive: true, mode: FOLDER_MODE });
    const path = join(folder, filename);
    await writeFile(path, content, { mode: UPLOADED_FILE_MODE });
    saved.set(name, path);
  }
  return { folder: saved.size === 0 ? undefined : folder, files: saved };
}

/** A value as it would arrive over the wire (undefined fields dropped, no shared objects): requests and answers both pass through it. */
function throughJson(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value)) as unknown;
}

function notDescribed(action: RegisteredAction, endpoint: string): RuntimeError {
  return new RuntimeError(ErrorCode.NotFound, 404, `Not found: action ${action.id} has no ${endpoint} endpoint`);
}
