/**
 * `checkExtension`: a conformance check of any running ActionKit extension (this runtime or one
 * written in another language), as rows of pass / fail / skip. The CLI's `actionkit check` prints
 * them; tests and CI can call it directly.
 *
 * What is checked, in order:
 * - `list`: the action list against `ActionList`;
 * - `describe <id>`: every listed description against `ActionDescription`;
 * - when the index lists more than actions: `index` against the merged index (every kit's part,
 *   `DiscoveryList` complete), `discovery <id>` (description, then one `discover` call, against
 *   DiscoveryKit), `target type <id>`, `target attributes <path>`, `enrichment rule <id>`; `advice` and
 *   `preflight` entries must answer a JSON object (their kits' schemas are not part of this
 *   package); event listeners are listed, not called (they need a real event);
 * - `rules <id>`: the registration rules of `src/api/description.ts` (reference §1.3 and the gaps the
 *   runtime closes), with what the action implements inferred from what it describes; `routes`: no
 *   two endpoints share a method and path;
 * - per action: `prepare`/`start`/`status`/`stop`/`query <id>`: one agent-like run with the
 *   parameters' default values (plus the caller's config and files), every answer validated;
 *   `malformed json <id>`: a prepare with broken JSON must get a 4xx ActionKitError;
 *   `unknown execution <id>`: status (or stop) of an execution nobody started must get a 4xx
 *   ActionKitError or a schema-valid result, never a 5xx, HTML or a crash;
 * - opt-in `heartbeat <id>`: start, then stay silent; the extension must stop the execution on its
 *   own within the reference's heartbeat timeout.
 */
import { randomUUID } from 'node:crypto';
import { assertUniqueRoutes, normalizeDescription, parseDurationMs } from '../api/description.js';
import type { ActionDescription, DescribingEndpointReference, JsonObject } from '../api/schemas.js';
import { heartbeatExpiryMs } from '../config.js';
import { AgentClient, interpretAnswer, type AgentClientOptions } from './client.js';
import { defaultConfig } from './defaults.js';
import type { FileSource, Phase, RunResult } from './run.js';
import { schemaIssues, type AnswerOf } from './validate.js';
import { describeActionKitError, renderValue, type SchemaIssue } from './errors.js';

/** Outcome of one check. */
export type CheckStatus = 'pass' | 'fail' | 'skip';

/** One row of the report. */
export interface CheckRow {
  /** Stable name: `list`, `describe <id>`, `rules <id>`, `routes`, `prepare <id>`, … (see the module documentation). */
  name: string;
  /** pass, fail, or skip (not applicable / not possible, with the reason in `detail`). */
  status: CheckStatus;
  /** Why it failed or was skipped; what was seen when it passed. */
  detail: string;
}

/** The whole report. */
export interface CheckReport {
  /** The extension checked. */
  url: string;
  /** True when no row failed. */
  ok: boolean;
  /** Rows per outcome. */
  counts: Record<CheckStatus, number>;
  /** Every check, in the order they ran. */
  rows: CheckRow[];
}

/** Options of {@link checkExtension}. */
export interface CheckOptions {
  /** Run only this action (list, descriptions and rules are still checked for all). */
  actionId?: string;
  /** Merged over the default parameter values of every action that is run. */
  config?: JsonObject;
  /** Files for `file` parameters, by parameter name. */
  files?: Readonly<Record<string, FileSource>>;
  /** How long each run may last before it is stopped. Default 3 000 ms. */
  runDurationMs?: number;
  /** Status and metric queries are polled at least this often (the described interval if shorter). Default 1 000 ms. */
  maxIntervalMs?: number;
  /** Also check that a silent agent makes the extension stop the execution (slow: up to a minute by default). */
  heartbeat?: boolean;
  /**
   * How long to stay silent before asking for the status. Default: the reference's heartbeat expiry
   * for the described status interval with its 5 s minimum (21 s for intervals up to 5 s, 62 s for the
   * synthetic 15 s), plus 2 s.
   */
  heartbeatTimeoutMs?: number;
  /** Client options besides the URL (request timeout, dispatcher, list path, headers). */
  client?: Omit<AgentClientOptions, 'baseUrl'>;
}

/** Defaults of {@link CheckOptions}. */
const DEFAULT_RUN_DURATION_MS = 3_000;
const DEFAULT_MAX_INTERVAL_MS = 1_000;
/** The reference SDK's minimum heartbeat interval (§1.10). */
const REFERENCE_HEARTBEAT_MIN_INTERVAL_MS = 5_000;
/** Added to the computed heartbeat expiry: the extension checks periodically, not at the exact instant. */
const HEARTBEAT_SLACK_MS = 2_000;
const LIFECYCLE_PHASES: readonly Phase[] = ['prepare', 'start', 'status', 'stop', 'query'];

/** Check the extension at `baseUrl` (see the module documentation). Never throws for what the extension does. */
export async function checkExtension(baseUrl: string | URL, options: CheckOptions = {}): Promise<CheckReport> {
  const client = new AgentClient({ ...options.client, baseUrl });
  const rows: CheckRow[] = [];
  const add = (name: string, status: CheckStatus, detail: string): void => void rows.push({ name, status, detail });

  const { references, index } = await checkList(client, options.client?.listPath ?? '/', add);
  await checkOtherKits(client, index, add);
  const descriptions = await checkDescriptions(client, references, add);
  checkRules(descriptions, add);

  const selected = options.actionId === undefined ? descriptions : descriptions.filter((description) => description.id === options.actionId);
  if (options.actionId !== undefined && selected.length === 0) add(`action ${options.actionId}`, 'fail', 'no valid description with this id is listed');

  const runnable: Array<{ description: ActionDescription; config: JsonObject }> = [];
  for (const description of selected) {
    const config = await checkRun(client, description, options, add);
    if (config !== undefined) runnable.push({ description, config });
    await checkMalformedJson(client, description, add);
    await checkUnknownExecution(client, description, add);
  }
  if (options.heartbeat === true) {
    // In parallel (each waits out the timeout), reported in list order.
    const outcomes = await Promise.all(
      selected.map((description) => checkHeartbeat(client, description, runnable.find((r) => r.description === description)?.config, options)),
    );
    selected.forEach((description, index) => add(`heartbeat ${description.id}`, ...outcomes[index]!));
  }

  const counts: Record<CheckStatus, number> = { pass: 0, fail: 0, skip: 0 };
  for (const row of rows) counts[row.status]++;
  return { url: client.baseUrl.href, ok: counts.fail === 0, counts, rows };
}

type Add = (name: string, status: CheckStatus, detail: string) => void;

/** `list`; returns the references to describe (the usable ones even when the list is invalid). */
async function checkList(client: AgentClient, listPath: string, add: Add): Promise<{ references: DescribingEndpointReference[]; index: unknown }> {
  let json: unknown;
  try {
    const answer = await client.exchange('GET', listPath);
    json = answer.json;
    const list = interpretAnswer(answer, 'ActionList').result;
    add('list', 'pass', `${list.actions.length} action(s)`);
    return { references: list.actions, index: json };
  } catch (error) {
    add('list', 'fail', messageOf(error));
  }
  // Go on with the entries that can be described, so one bad entry does not hide the others.
  return { references: usableReferences((json as { actions?: unknown } | undefined)?.actions), index: json };
}

/** The entries of an index list that can be called (an object with an absolute path). */
function usableReferences(entries: unknown): DescribingEndpointReference[] {
  if (!Array.isArray(entries)) return [];
  return entries.filter(
    (entry): entry is DescribingEndpointReference =>
      typeof entry === 'object' && entry !== null && typeof (entry as { path?: unknown }).path === 'string' && (entry as { path: string }).path.startsWith('/'),
  );
}

/** The index fields of kits other than ActionKit, in the order they are checked. */
const OTHER_KIT_FIELDS = ['discoveries', 'targetTypes', 'targetAttributes', 'targetEnrichmentRules', 'advice', 'preflights', 'eventListeners'] as const;

/** `index` and one row per entry of the other kits' lists (nothing when the index lists only actions). */
async function checkOtherKits(client: AgentClient, index: unknown, add: Add): Promise<void> {
  if (typeof index !== 'object' || index === null) return;
  const lists = index as Partial<Record<(typeof OTHER_KIT_FIELDS)[number], unknown>>;
  const used = OTHER_KIT_FIELDS.filter((field) => lists[field] !== undefined);
  if (used.length === 0) return;
  const issues = schemaIssues('ExtensionIndex', index);
  if (issues.length === 0) add('index', 'pass', used.map((field) => `${(lists[field] as unknown[]).length} ${field}`).join(', '));
  else add('index', 'fail', `violates the merged index: ${renderIssues(issues)}`);

  const describe = async <N extends 'DiscoveryDescription' | 'TargetDescription' | 'AttributeDescriptions' | 'TargetEnrichmentRule'>(
    label: string,
    reference: DescribingEndpointReference,
    schema: N,
    summary: (result: AnswerOf<N>) => Promise<[name: string, detail: string]>,
  ): Promise<void> => {
    try {
      const [name, detail] = await summary(interpretAnswer(await client.exchange('GET', reference.path), schema).result);
      add(`${label} ${name}`, 'pass', detail);
    } catch (error) {
      add(`${label} ${reference.path}`, 'fail', messageOf(error));
    }
  };
  for (const reference of usableReferences(lists.discoveries)) {
    await describe('discovery', reference, 'DiscoveryDescription', async (discovery) => {
      const data = await client.discover(discovery);
      const seen = new Set<string>();
      for (const target of data.targets ?? []) {
        const key = JSON.stringify([target.targetType, target.id]);
        if (seen.has(key)) throw new Error(`${discovery.discover.path} discovered two ${target.targetType} targets with id ${JSON.stringify(target.id)} (ids must be unique per target type)`);
        seen.add(key);
      }
      const found = [describeDiscovered(data.targets ?? [], 'targetType', 'target(s)'), describeDiscovered(data.enrichmentData ?? [], 'enrichmentDataType', 'enrichment data')];
      return [discovery.id, `${found.join(', ')}; called every ${discovery.discover.callInterval ?? '(agent default)'}`];
    });
  }
  for (const reference of usableReferences(lists.targetTypes)) {
    await describe('target type', reference, 'TargetDescription', async (type) => [type.id, `"${type.label.one}", version ${type.version}, ${type.table.columns.length} column(s)`]);
  }
  for (const reference of usableReferences(lists.targetAttributes)) {
    await describe('target attributes', reference, 'AttributeDescriptions', async (described) => [reference.path, described.attributes.map((attribute) => attribute.attribute).join(', ') || 'none']);
  }
  for (const reference of usableReferences(lists.targetEnrichmentRules)) {
    await describe('enrichment rule', reference, 'TargetEnrichmentRule', async (rule) => [rule.id, `${rule.src.type} → ${rule.dest.type}, ${rule.attributes.length} attribute(s)`]);
  }
  for (const field of ['advice', 'preflights'] as const) {
    for (const reference of usableReferences(lists[field])) {
      const name = `${field === 'advice' ? 'advice' : 'preflight'} ${reference.path}`;
      try {
        const answer = await client.exchange('GET', reference.path);
        const problem = answer.httpStatus !== 200 ? `answered ${answer.httpStatus}` : typeof answer.json !== 'object' || answer.json === null || Array.isArray(answer.json) ? 'did not answer a JSON object' : undefined;
        add(name, problem === undefined ? 'pass' : 'fail', problem ?? `200 with a JSON object (${field === 'advice' ? 'AdviceKit' : 'PreflightKit'} schemas are not checked here)`);
      } catch (error) {
        add(name, 'fail', messageOf(error));
      }
    }
  }
  for (const reference of usableReferences(lists.eventListeners)) {
    add(`event listener ${reference.path}`, 'skip', `listed (${String(reference.method)}); not called: it needs a real event`);
  }
}

/** `3 target(s) (2 com.example.host, 1 com.example.disk)` — counts by type. */
function describeDiscovered<K extends string>(items: ReadonlyArray<Record<K, string>>, typeField: K, noun: string): string {
  const byType = new Map<string, number>();
  for (const item of items) byType.set(item[typeField], (byType.get(item[typeField]) ?? 0) + 1);
  const types = [...byType].map(([type, count]) => `${count} ${type}`).join(', ');
  return `${items.length} ${noun}${types === '' ? '' : ` (${types})`}`;
}

/** `describe <id>` for every reference; returns the valid descriptions. */
async function checkDescriptions(client: AgentClient, references: readonly DescribingEndpointReference[], add: Add): Promise<ActionDescription[]> {
  const valid: ActionDescription[] = [];
  for (const reference of references) {
    let json: unknown;
    try {
      const answer = await client.exchange('GET', reference.path);
      json = answer.json;
      const description = interpretAnswer(answer, 'ActionDescription').result;
      valid.push(description);
      add(`describe ${description.id}`, 'pass', `${description.kind}, timeControl ${description.timeControl}, ${description.parameters.length} parameter(s)`);
    } catch (error) {
      const id = (json as { id?: unknown } | undefined)?.id;
      add(`describe ${typeof id === 'string' ? id : reference.path}`, 'fail', messageOf(error));
    }
  }
  return valid;
}

/** `rules <id>` and `routes`. */
function checkRules(descriptions: readonly ActionDescription[], add: Add): void {
  for (const description of descriptions) {
    // From the outside, an endpoint that is described is one that is implemented.
    const implemented = {
      status: description.status !== undefined,
      stop: description.stop !== undefined,
      query: description.metrics?.query !== undefined,
      body: false,
    };
    try {
      normalizeDescription(description, implemented);
      add(`rules ${description.id}`, 'pass', 'registration rules hold');
    } catch (error) {
      add(`rules ${description.id}`, 'fail', messageOf(error));
    }
  }
  if (descriptions.length === 0) return;
  try {
    assertUniqueRoutes(descriptions);
    add('routes', 'pass', 'ids and endpoint routes are unique');
  } catch (error) {
    add('routes', 'fail', messageOf(error));
  }
}

/** The lifecycle rows of one default run; returns the config used, or undefined when skipped. */
async function checkRun(client: AgentClient, description: ActionDescription, options: CheckOptions, add: Add): Promise<JsonObject | undefined> {
  const id = description.id;
  const defaults = defaultConfig(description);
  const config = { ...defaults.config, ...options.config };
  const missing = defaults.missing.filter((name) => config[name] === undefined && filesFor(description, options.files)?.[name] === undefined);
  if (missing.length > 0) {
    const fileNames = new Set(description.parameters.filter((parameter) => parameter.type === 'file').map((parameter) => parameter.name));
    const hints = missing.map((name) => (fileNames.has(name) ? `--file ${name}=<path>` : `--config '{"${name}": …}'`));
    const reason = `required parameter(s) without default: ${missing.join(', ')} (give ${hints.join(', ')})`;
    add(`run ${id}`, 'skip', reason);
    return undefined;
  }
  const files = filesFor(description, options.files);
  const maxIntervalMs = options.maxIntervalMs ?? DEFAULT_MAX_INTERVAL_MS;
  const run = await client.run(description, {
    config,
    ...(files === undefined ? {} : { files }),
    durationMs: options.runDurationMs ?? DEFAULT_RUN_DURATION_MS,
    statusIntervalMs: Math.min(intervalMs(description.status?.callInterval, maxIntervalMs), maxIntervalMs),
    queryIntervalMs: Math.min(intervalMs(description.metrics?.query?.endpoint.callInterval, maxIntervalMs), maxIntervalMs),
  });
  for (const phase of LIFECYCLE_PHASES) {
    const [status, detail] = phaseOutcome(run, phase);
    add(`${phase} ${id}`, status, detail);
  }
  return config;
}

/** Row of one phase of a run. */
function phaseOutcome(run: RunResult, phase: Phase): [CheckStatus, string] {
  const errors = run.errors.filter((error) => error.phase === phase);
  // A `failed` result error is the action's verdict (a check that found a problem), which is the
  // action doing its job; `errored` results and failed calls are malfunctions.
  const malfunctions = errors.filter((error) => error.cause !== undefined || error.error?.status !== 'failed');
  if (malfunctions.length > 0) return ['fail', malfunctions.map((error) => error.message).join('; ')];
  const verdict = errors.length > 0 ? `; action verdict ${errors.map((error) => error.message).join('; ')}` : '';
  const description = run.description;
  const took = (record: { httpStatus: number; durationMs: number } | undefined): string =>
    record === undefined ? '' : `${record.httpStatus} in ${Math.round(record.durationMs)} ms`;
  switch (phase) {
    case 'prepare':
      return ['pass', `${took(run.prepare)}, ${run.prepare?.result.messages?.length ?? 0} message(s)${verdict}`];
    case 'start':
      return run.start === undefined ? ['skip', 'not reached: prepare failed'] : ['pass', `${took(run.start)}${verdict}`];
    case 'status': {
      if (description.status === undefined) return ['skip', 'no status endpoint described'];
      if (run.start === undefined) return ['skip', 'not reached: prepare failed'];
      const last = run.status.at(-1);
      if (last === undefined) return ['skip', `the run ended (${run.ended}) before the first status call`];
      return ['pass', `${run.status.length} call(s), run ended: ${run.ended}${verdict}`];
    }
    case 'stop':
      if (description.stop === undefined) return ['skip', 'no stop endpoint described'];
      return run.stop === undefined ? ['skip', 'not reached: prepare failed'] : ['pass', `${took(run.stop)}, ${Math.round(run.durationMs)} ms after start${verdict}`];
    case 'query':
      if (description.metrics?.query === undefined) return ['skip', 'no metrics.query described'];
      if (run.query.length === 0) return ['skip', `the run ended (${run.ended}) before the first metric query`];
      return ['pass', `${run.query.length} call(s), ${run.query.reduce((sum, q) => sum + (q.result.metrics?.length ?? 0), 0)} metric(s)${verdict}`];
  }
}

/** `malformed json <id>`: broken JSON on prepare must get a 4xx ActionKitError with a title. */
async function checkMalformedJson(client: AgentClient, description: ActionDescription, add: Add): Promise<void> {
  const name = `malformed json ${description.id}`;
  try {
    const answer = await client.exchange(description.prepare.method, description.prepare.path, '{"executionId": "', { headers: { 'content-type': 'application/json' } });
    const problem = errorAnswerProblem(answer);
    add(name, problem === undefined ? 'pass' : 'fail', problem ?? `${answer.httpStatus}: ${titleOf(answer.json)}`);
  } catch (error) {
    add(name, 'fail', messageOf(error));
  }
}

/**
 * `unknown execution <id>`: status (else stop) of an execution nobody prepared. A 4xx ActionKitError
 * passes; so does a schema-valid 2xx, which is what the reference SDK answers (its synthetic status
 * says `{"completed": false}`, a status handler runs with the agent's state — an agent polling
 * after a restart of the extension must not fail the experiment). Anything else fails.
 */
async function checkUnknownExecution(client: AgentClient, description: ActionDescription, add: Add): Promise<void> {
  const name = `unknown execution ${description.id}`;
  const endpoint = description.status ?? description.stop;
  if (endpoint === undefined) {
    add(name, 'skip', 'no status or stop endpoint described');
    return;
  }
  const schema = description.status !== undefined ? 'StatusResult' : 'StopResult';
  try {
    const answer = await client.exchange(endpoint.method, endpoint.path, { executionId: randomUUID(), state: {} });
    if (answer.httpStatus >= 200 && answer.httpStatus <= 299) {
      interpretAnswer(answer, schema);
      add(name, 'pass', `${answer.httpStatus} with a valid ${schema} (the extension answers without execution state)`);
      return;
    }
    const problem = errorAnswerProblem(answer);
    add(name, problem === undefined ? 'pass' : 'fail', problem ?? `${answer.httpStatus}: ${titleOf(answer.json)}`);
  } catch (error) {
    add(name, 'fail', messageOf(error));
  }
}

/** `path: message (found value)`, joined. */
function renderIssues(issues: readonly SchemaIssue[]): string {
  return issues.map((issue) => `${issue.path === '' ? '(body)' : issue.path}: ${issue.message} (found ${renderValue(issue.value)})`).join('; ');
}

/** What is wrong with an answer that should be a 4xx ActionKitError, or undefined. */
function errorAnswerProblem(answer: { request: string; httpStatus: number; contentType: string; text: string; json: unknown }): string | undefined {
  const where = `${answer.request} answered ${answer.httpStatus}`;
  if (answer.json === undefined) {
    const excerpt = answer.text.length > 80 ? `${answer.text.slice(0, 80)}…` : answer.text;
    return `${where} with ${answer.contentType === '' ? 'no content type' : answer.contentType}, not an ActionKitError JSON: ${JSON.stringify(excerpt)}`;
  }
  const issues = schemaIssues('ActionKitError', answer.json);
  if (issues.length > 0) {
    return `${where}; body violates ActionKitError: ${renderIssues(issues)}`;
  }
  if ((answer.json as { title: string }).title.trim() === '') return `${where} with an empty title`;
  if (answer.httpStatus < 400 || answer.httpStatus > 499) return `${where} (${titleOf(answer.json)}): expected a 4xx status`;
  return undefined;
}

/**
 * `heartbeat <id>`: prepare and start, then no status call for the heartbeat timeout; the first
 * status afterwards must report `completed` with `Action was stopped by extension: heartbeat timeout`.
 */
async function checkHeartbeat(client: AgentClient, description: ActionDescription, config: JsonObject | undefined, options: CheckOptions): Promise<[CheckStatus, string]> {
  if (description.stop === undefined || description.status === undefined) return ['skip', 'not stoppable: no heartbeat (no stop endpoint)'];
  if (config === undefined) return ['skip', 'the action could not be run with default parameters'];
  const interval = intervalMs(description.status.callInterval, REFERENCE_HEARTBEAT_MIN_INTERVAL_MS);
  const silenceMs = options.heartbeatTimeoutMs ?? heartbeatExpiryMs(interval, REFERENCE_HEARTBEAT_MIN_INTERVAL_MS) + HEARTBEAT_SLACK_MS;
  // An external action must still be running when the silence ends, or it could end on its own.
  const runConfig = description.timeControl === 'external' ? { ...config, duration: Math.max(Number(config['duration']) || 0, silenceMs * 4) } : config;
  const endpoints = client.endpoints(description);
  const executionId = randomUUID();
  let state: JsonObject = {};
  let prepared = false;
  try {
    const files = filesFor(description, options.files);
    const preparation = await endpoints.prepare({ executionId, config: runConfig, properties: {}, ...(files === undefined ? {} : { files }) });
    if (preparation.result.error !== undefined) return ['fail', `prepare reported ${describeActionKitError(preparation.result.error)}`];
    prepared = true;
    state = preparation.result.state;
    const started = await endpoints.start({ executionId, state });
    state = started.result.state ?? state;
    if (started.result.error !== undefined) return ['fail', `start reported ${describeActionKitError(started.result.error)}`];
    await new Promise((resolve) => setTimeout(resolve, silenceMs));
    const status = (await endpoints.status({ executionId, state })).result;
    const title = status.error?.title ?? '';
    if (status.completed && /stopped by extension/i.test(title) && /heartbeat/i.test(title)) return ['pass', `stopped within ${silenceMs} ms of silence: ${title}`];
    if (status.completed && !/stopped by extension/i.test(title)) {
      return ['skip', `the execution ended on its own before the silence ended${title === '' ? '' : ` (${title})`}; nothing to stop`];
    }
    return ['fail', `after ${silenceMs} ms without status calls the execution was not stopped for the heartbeat (status: completed ${status.completed}${title === '' ? '' : `, error ${JSON.stringify(title)}`})`];
  } catch (error) {
    return ['fail', messageOf(error)];
  } finally {
    // Roll back whatever still runs (an extension that stopped it answers with its stop event).
    if (prepared) await endpoints.stop({ executionId, state }).catch(() => undefined);
  }
}

/** The caller's files that are parameters of type `file` of this action (undefined when none). */
function filesFor(description: ActionDescription, files: Readonly<Record<string, FileSource>> | undefined): Record<string, FileSource> | undefined {
  const names = new Set(description.parameters.filter((parameter) => parameter.type === 'file').map((parameter) => parameter.name));
  const own = Object.entries(files ?? {}).filter(([name]) => names.has(name));
  return own.length === 0 ? undefined : Object.fromEntries(own);
}

function intervalMs(callInterval: string | undefined, fallbackMs: number): number {
  if (callInterval === undefined) return fallbackMs;
  try {
    return parseDurationMs(callInterval);
  } catch {
    return fallbackMs;
  }
}

function titleOf(json: unknown): string {
  const title = (json as { title?: unknown } | undefined)?.title;
  return typeof title === 'string' ? JSON.stringify(title) : 'no title';
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
