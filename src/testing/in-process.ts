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
import { ACTION_MODULE, isDefinedAction } from '../action.js';
import type { ExtensionOptions } from '../config.js';
import { ErrorCode, RuntimeError } from '../errors.js';
import { createExtension, type Extension } from '../extension.js';
import { validateBody } from '../api/request-body.js';
import { FOLDER_MODE, UPLOADED_FILE_MODE } from '../http/uploads.js';
import type { Reply, RequestScope, UploadedFiles } from '../runtime/lifecycle.js';
import type { JsonObject } from '../api/schemas.js';
import { moduleUrl } from '../runtime/modules.js';
import { answerJson } from '../runtime/sealed.js';
import type { RegisteredAction } from '../runtime/registry.js';
import { interpretAnswer } from './client.js';
import type { AnswerOf, AnswerSchemaName } from './validate.js';
import { runExecution, type AnyDefinedAction, type ConfigOf, type Exchange, type ExecutionEndpoints, type FileSource, type RunOptions, type RunResult, type StateOf } from './run.js';

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

/** Options of {@link createActionHarness} given an action definition. */
export interface TypedHarnessOptions extends Omit<ActionHarnessOptions, 'actionId'> {
  /**
   * The module that exports the action as (part of) its default export. Default: the module that
   * called `defineAction` — right when the action's module calls it itself, as usual; name the
   * module when a helper elsewhere calls `defineAction` for it.
   */
  module?: ModuleReference;
}

/**
 * One action's lifecycle operations on real worker threads, without HTTP. The methods answer like
 * the HTTP endpoints (see {@link ExecutionEndpoints}); {@link ActionHarness.run} drives a whole
 * execution like the agent. Made from an action definition, `C` is its config as the agent sends
 * it and `S` its state ({@link ConfigOf}, {@link StateOf}).
 */
export interface ActionHarness<C = JsonObject, S = JsonObject> extends ExecutionEndpoints<C, S> {
  /** The extension behind the harness (e.g. for `stats()` or `stopAll()`). */
  readonly extension: Extension;
  /** Run one execution like the agent (see {@link runExecution}). */
  run(options?: RunOptions<C>): Promise<RunResult<S>>;
  /** Stop every execution, end the threads, remove the temporary upload folder. Idempotent. */
  close(): Promise<void>;
}

/** The request scope of a direct call: no `Request-Timeout`, never abandoned. */
const DIRECT_SCOPE: RequestScope = { deadlineMs: undefined, abandoned: () => false };

/**
 * Load an action into an extension that does not listen and return its harness.
 *
 * Given the action definition (the module's default export, imported by the test), the harness is
 * typed by it: a config the action's schema would refuse or a state of another shape does not
 * compile. Given module references, it is untyped, and `actionId` picks the action when the
 * modules define several.
 *
 * @example
 * ```ts
 * import cpuStress from '../actions/cpu-stress.js';
 * const harness = await createActionHarness(cpuStress);
 * try {
 *   const prepared = await harness.prepare({ executionId: randomUUID(), config: { duration: 1000 } });
 *   prepared.result.state.cpuLoad; // typed as the action's state
 * } finally {
 *   await harness.close();
 * }
 * ```
 * @throws RegistrationError / ConfigError as `createExtension`; Error when `actionId` is unknown or
 *   ambiguous, or when the module of a definition cannot be told (then pass `module`).
 */
export function createActionHarness<A extends AnyDefinedAction>(action: A, options?: TypedHarnessOptions): Promise<ActionHarness<ConfigOf<A>, StateOf<A>>>;
export function createActionHarness(modules: ModuleReference | readonly ModuleReference[], options?: ActionHarnessOptions): Promise<ActionHarness>;
export async function createActionHarness(
  target: AnyDefinedAction | ModuleReference | readonly ModuleReference[],
  options: ActionHarnessOptions & TypedHarnessOptions = {},
): Promise<ActionHarness> {
  if (isDefinedAction(target)) {
    const { module, ...rest } = options;
    return createActionHarness(module ?? (await exportingModule(target)), { ...rest, actionId: target.description.id });
  }
  const modules = target;
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
    // As the HTTP answer's text: a large state is sealed (src/runtime/sealed.ts).
    const json = JSON.parse(answerJson(reply.body).toString()) as unknown;
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
 * Run one execution of an action like the agent (prepare → start → status polls → stop, metric
 * queries), on real worker threads without HTTP, then close everything. Given the action
 * definition, the options and the result are typed by it (see {@link createActionHarness}).
 *
 * @example
 * ```ts
 * import cpuStress from '../actions/cpu-stress.js';
 * const run = await runAction(cpuStress, { config: { duration: 500 } });
 * assert.deepEqual(run.errors, []);
 * ```
 */
export function runAction<A extends AnyDefinedAction>(action: A, options?: RunOptions<ConfigOf<A>> & TypedHarnessOptions): Promise<RunResult<StateOf<A>>>;
export function runAction(modules: ModuleReference | readonly ModuleReference[], options?: RunOptions & ActionHarnessOptions): Promise<RunResult>;
export async function runAction(
  target: AnyDefinedAction | ModuleReference | readonly ModuleReference[],
  options: RunOptions<unknown> & ActionHarnessOptions & TypedHarnessOptions = {},
): Promise<RunResult<unknown>> {
  const { actionId, extension, module, ...runOptions } = options;
  const harness = await createActionHarness(target as ModuleReference, {
    ...(actionId === undefined ? {} : { actionId }),
    ...(extension === undefined ? {} : { extension }),
    ...(module === undefined ? {} : { module }),
  });
  try {
    // Typed by the overloads; the config goes to the action as it is, like the agent's.
    return await harness.run(runOptions as RunOptions);
  } finally {
    await harness.close();
  }
}

/**
 * The module that exports `action`: the one that called `defineAction`, checked (on this thread)
 * to export it, since a helper module may have made the call for it.
 */
async function exportingModule(action: AnyDefinedAction): Promise<string> {
  const id = action.description.id;
  const recorded = (action as unknown as Record<symbol, unknown>)[ACTION_MODULE];
  const hint = `pass the module that exports it: createActionHarness(action, { module: new URL('./<its module>.js', import.meta.url) })`;
  if (typeof recorded !== 'string') throw new Error(`cannot tell which module defines action ${id}; ${hint}`);
  const url = moduleUrl(recorded);
  const exported = ((await import(url)) as { default?: unknown }).default;
  if (exported !== action && !(Array.isArray(exported) && exported.includes(action))) {
    throw new Error(`action ${id} was defined by a call in ${url}, whose default export is not this action; ${hint}`);
  }
  return url;
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
