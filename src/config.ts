/**
 * Configuration: one zod schema for the options of {@link createExtension}, the environment
 * variables that override them, validation with a message naming the setting, frozen result.
 *
 * Precedence: environment variable > option passed in code > default. Operators own the
 * environment of a running extension, so they get the last word (as with the reference's
 * `STEADYBIT_EXTENSION_PORT`).
 */
import { availableParallelism } from 'node:os';
import type { RequestHandler } from 'express';
import { z } from 'zod';
import { parseDurationMs } from './api/description.js';
import { IndexContributionsSchema } from './api/extension-index.js';

/** Raised at start-up when an option or environment variable is invalid. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/**
 * Levels accepted: zerolog's (the reference's), any case from the environment. pino has no
 * `panic`; it maps to `fatal`, pino's most severe level: nothing but the runtime's fatal errors
 * (a crashed watchdog, a stop run that failed by a bug) is logged.
 */
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'panic'] as const;

/** The reference's default `oom_score_adj` (extension-kit `extruntime`): almost never the OOM killer's choice. */
export const DEFAULT_OOM_SCORE_ADJ = -998;
/** The kernel's bounds of `oom_score_adj`; values beyond are clamped, as the reference does. */
const OOM_SCORE_ADJ_MIN = -1000;
const OOM_SCORE_ADJ_MAX = 1000;

/**
 * The longest duration a setting may have: the longest delay a Node timer holds (2^31 - 1 ms, about
 * 24.8 days). A longer `setTimeout` fires after 1 ms instead — a handler timeout of `30d` would
 * time out every handler at once.
 */
const MAX_DURATION_MS = 2 ** 31 - 1;

/** A duration: milliseconds as a number, or a spec string such as `500ms`, `5s`, `1m`, `1h`, `1d`; at most {@link MAX_DURATION_MS}. */
const duration = z
  .union([z.number().int().nonnegative(), z.string()])
  .transform((value, ctx) => {
    if (typeof value === 'number') return value;
    try {
      return parseDurationMs(value.trim());
    } catch {
      ctx.addIssue({ code: 'custom', message: `expected a duration such as 500ms, 5s, 1m, 1h or 1d, got "${value}"` });
      return z.NEVER;
    }
  })
  .refine((ms) => ms <= MAX_DURATION_MS, `expected at most ${MAX_DURATION_MS} ms (about 24.8 days, the longest timer Node holds)`);

/** A byte size: a number of bytes, or a string with a binary suffix: `512kb`, `10mb`, `1gb`. */
const byteSize = z.union([z.number().int().positive(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return value;
  const match = /^(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?$/i.exec(value.trim());
  if (match === null) {
    ctx.addIssue({ code: 'custom', message: `expected a byte size such as 1048576, 512kb or 10mb, got "${value}"` });
    return z.NEVER;
  }
  const unit = (match[2] ?? 'b').toLowerCase();
  const factor = unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 ** 2 : unit.startsWith('g') ? 1024 ** 3 : 1;
  return Number(match[1]) * factor;
});

const threads = z.number().int().min(1).max(256);

/** How the TLS settings are named in messages: the environment variable and the option. */
const TLS_NAMES = {
  cert: 'STEADYBIT_EXTENSION_TLS_SERVER_CERT (option tlsServerCert)',
  key: 'STEADYBIT_EXTENSION_TLS_SERVER_KEY (option tlsServerKey)',
  clientCas: 'STEADYBIT_EXTENSION_TLS_CLIENT_CAS (option tlsClientCas)',
} as const;

/**
 * An express router or request handler for {@link OptionsSchema | `routers`}. Its own name, so the
 * declaration files name it instead of spelling out express's generic defaults (whose packages,
 * such as `qs`, a consumer's compiler may not resolve from this package).
 */
export interface RouterOption extends RequestHandler {}

const routerSchema = z.custom<RouterOption>((value) => typeof value === 'function', {
  message: 'expected an express router or request handler (a function)',
});

/**
 * Options of {@link createExtension}. Every field except `actions` is optional; defaults below.
 */
export const OptionsSchema = z.strictObject({
  /** Action modules: URLs or absolute paths of modules whose default export is a `defineAction(...)` (or an array of them). */
  actions: z.array(z.union([z.instanceof(URL), z.string().min(1)])),
  /**
   * Where the index (the list of actions and of `index` entries) is served (`ACTIONKIT_INDEX_PATH`),
   * for registrations that point at a sub-path such as `/actions`. Default `/`.
   */
  indexPath: z
    .string()
    .regex(/^\/[^?#\s]*$/, { message: 'expected an absolute path without query, fragment or spaces, such as / or /actions' })
    .default('/'),
  /**
   * What the index lists besides the actions: the other kits' endpoint references (`discoveries`,
   * `targetTypes`, `targetAttributes`, `targetEnrichmentRules`, `advice`, `eventListeners`,
   * `preflights`), served by `routers`. Default: nothing.
   */
  index: IndexContributionsSchema.default({}),
  /**
   * Express routers (or request handlers) serving the rest of the extension — discoveries,
   * advice, event listeners — on the same server, behind the same TLS, Request-Id, access log,
   * metrics, `Request-Timeout` and shutdown. They run on the HTTP thread after the action routes,
   * in this order. Default: none.
   */
  routers: z.array(routerSchema).default([]),
  /** HTTP port (`STEADYBIT_EXTENSION_PORT`). Default 8080; 0 picks a free port. */
  port: z.number().int().min(0).max(65535).default(8080),
  /** Listen address; default all interfaces, like the reference. */
  host: z.string().min(1).optional(),
  /**
   * Listen on this unix domain socket instead of TCP (`STEADYBIT_EXTENSION_UNIX_SOCKET`). Takes
   * precedence over `port`, `host` and TLS (as the reference); the probes then answer on the socket
   * too. A missing parent folder is created (0755), a stale socket file removed. Default: TCP.
   */
  unixSocket: z.string().min(1).optional(),
  /** PEM certificate (chain) file; with `tlsServerKey` the extension serves HTTPS (`STEADYBIT_EXTENSION_TLS_SERVER_CERT`). Default: plain HTTP. */
  tlsServerCert: z.string().min(1).optional(),
  /** PEM private key file of `tlsServerCert`, unencrypted (`STEADYBIT_EXTENSION_TLS_SERVER_KEY`). */
  tlsServerKey: z.string().min(1).optional(),
  /**
   * CA certificate files or folders (walked recursively) for mutual TLS (`STEADYBIT_EXTENSION_TLS_CLIENT_CAS`,
   * comma-separated): a client must present a certificate signed by one of them or the handshake fails.
   * Needs `tlsServerCert` and `tlsServerKey`. Default: no client certificates asked for.
   */
  tlsClientCas: z.array(z.string().min(1)).min(1).optional(),
  /**
   * How often the TLS files are checked for replacement (`ACTIONKIT_TLS_RELOAD_CHECK`); new connections get a
   * replaced certificate, key or CA after at most this long, without a restart. Default 1s; at least 10ms.
   */
  tlsReloadCheckMs: duration.refine((ms) => ms >= 10, 'expected at least 10ms').default(1_000),
  /** Health probe port (`STEADYBIT_EXTENSION_HEALTH_PORT`). Default 8081; 0 picks a free port; `null` disables probes. */
  healthPort: z.number().int().min(0).max(65535).nullable().default(8081),
  /**
   * Log level (`STEADYBIT_LOG_LEVEL`, any case): `trace`, `debug`, `info`, `warn`, `error`, `fatal`,
   * or `panic` (the reference's; pino has none, so it resolves to `fatal`). Default `info`.
   */
  logLevel: z
    .enum(LOG_LEVELS)
    .default('info')
    .transform((level) => (level === 'panic' ? 'fatal' : level)),
  /** Log format (`STEADYBIT_LOG_FORMAT`): `json` lines or human `text`. Default `text`, on stderr. */
  logFormat: z.enum(['json', 'text']).default('text'),
  /**
   * Colours in the `text` log format (`STEADYBIT_LOG_COLOR`: `true` or `false`, any case). Default:
   * colours when stderr is a terminal. `true` means colours — the reference reads the variable
   * inverted (`true` turns them off); we do what the name says. JSON logs are never coloured.
   */
  logColor: z.boolean().optional(),
  /**
   * `oom_score_adj` written to `/proc/self/oom_score_adj` when `extension.listen()` starts
   * serving (`STEADYBIT_EXTENSION_OOM_SCORE_ADJ`; Linux only), so that under memory pressure the
   * kernel kills the attacks' victims before the extension that rolls the attacks back. Clamped
   * to [-1000, 1000]. Lowering it needs root or CAP_SYS_RESOURCE; without, a warning is logged and
   * the extension serves anyway. `null` (environment: `off`) leaves it alone. Default -998.
   */
  oomScoreAdj: z
    .number()
    .int()
    .nullable()
    .default(DEFAULT_OOM_SCORE_ADJ)
    .transform((score) => (score === null ? null : Math.min(OOM_SCORE_ADJ_MAX, Math.max(OOM_SCORE_ADJ_MIN, score)))),
  /** Control-block capacity = max concurrently active stoppable executions (`ACTIONKIT_MAX_EXECUTIONS`). Default 10000. */
  maxExecutions: z.number().int().min(1).max(1_000_000).default(10_000),
  /** How long a body may take to honour a stop before its worker is terminated (`ACTIONKIT_STOP_GRACE`). Default 5s. */
  stopGraceMs: duration.default(5_000),
  /** Minimum heartbeat interval (`ACTIONKIT_HEARTBEAT_MIN_INTERVAL`); the reference uses 5s. Default 5s. */
  heartbeatMinIntervalMs: duration.default(5_000),
  /** Folder for uploaded files (`ACTIONKIT_UPLOAD_DIR`). Default `/tmp/steadybit`. */
  uploadDir: z.string().min(1).default('/tmp/steadybit'),
  /** Max size of one uploaded file (`ACTIONKIT_UPLOAD_MAX_BYTES`). Default 100mb. */
  uploadMaxBytes: byteSize.default(100 * 1024 ** 2),
  /**
   * Max size of a JSON request body (`ACTIONKIT_MAX_BODY_BYTES`). A body declaring a larger
   * `Content-Length` gets 413 before any of it is read, and its connection is closed. Default 5mb.
   */
  maxBodyBytes: byteSize.default(5 * 1024 ** 2),
  /**
   * Open connections the extension's server keeps (`ACTIONKIT_MAX_CONNECTIONS`), so that a crowd of
   * slow clients cannot use up the process's file descriptors. At the cap a new connection is still
   * accepted and the slowest one is shed instead: first the oldest with an incomplete request, then
   * the one idle the longest; only when every connection is busy with a complete request is the
   * newcomer refused. Keep it below the file-descriptor limit (`ulimit -n`). Default 10000.
   */
  maxConnections: z.number().int().min(1).max(1_000_000).default(10_000),
  /** Threads running lifecycle handlers (`ACTIONKIT_HANDLER_THREADS`). Default max(2, cores). */
  handlerThreads: threads.default(Math.max(2, availableParallelism())),
  /**
   * Cap of threads running `cpu` bodies, one body each (`ACTIONKIT_MAX_BODY_THREADS`). A start that
   * would need one more fails with `Too many running bodies`; no body ever waits for a thread.
   * Each costs about 20 MiB. Default 256.
   */
  maxBodyThreads: z.number().int().min(1).max(4096).default(256),
  /** Idle `cpu` body threads kept booted, so the first bodies of a burst start at once (`ACTIONKIT_SPARE_BODY_THREADS`). Default 2. */
  spareBodyThreads: z.number().int().min(0).max(256).default(2),
  /** Threads shared by all `io` bodies (`ACTIONKIT_IO_BODY_THREADS`). Default 2. */
  ioBodyThreads: z.number().int().min(1).max(64).default(2),
  /** A handler running longer is terminated with its worker (`ACTIONKIT_HANDLER_TIMEOUT`). Default 5m. */
  handlerTimeoutMs: duration.default(5 * 60_000),
  /** Bound of the stop-all on SIGINT/SIGTERM/SIGUSR1 (`ACTIONKIT_STOP_ALL_TIMEOUT`). Default 30s. */
  stopAllTimeoutMs: duration.default(30_000),
  /** Minimum time a stop outcome stays answerable (`ACTIONKIT_STOP_RETENTION`). Default 10m; the last 1,000 are always kept. */
  stopRetentionMs: duration.default(10 * 60_000),
  /** V8 old-generation limit of each worker thread in MiB (`ACTIONKIT_WORKER_MAX_OLD_GENERATION_MB`). Default: Node's. */
  workerMaxOldGenerationMb: z.number().int().min(16).optional(),
  /**
   * `cpu` bodies that run at normal priority at once (`ACTIONKIT_FULL_PRIORITY_BODIES`): up to this
   * many, a CPU attack competes with everything on the host as an equal. Default: the cores Node
   * sees — set it to the container's CPU limit.
   */
  fullPriorityBodies: z.number().int().min(0).max(4096).default(availableParallelism()),
  /**
   * Nice value of the `cpu` body threads beyond `fullPriorityBodies` (`ACTIONKIT_BODY_NICE`): when
   * bodies outnumber the cores, these yield, so the HTTP thread, the handlers and the watchdog stay
   * prompt. 0 never lowers a body. Default 10.
   */
  bodyNice: z.number().int().min(0).max(19).default(10),
  /** A prepared execution not started within this time is rolled back (`ACTIONKIT_PREPARED_TTL`). Default 24h. */
  preparedTtlMs: duration.refine((ms) => ms >= 1, 'expected at least 1ms').default(24 * 3_600_000),
  /** Delay before the first automatic retry of a failed stop; each further retry waits 4× longer (`ACTIONKIT_STOP_RETRY_BASE`). Default 1s. */
  stopRetryBaseMs: duration.refine((ms) => ms >= 1, 'expected at least 1ms').default(1_000),
  /** Automatic retries of a failed stop before it is given up, logged as an error and its execution freed (`ACTIONKIT_STOP_RETRIES`). Default 5 (1 s … 256 s). */
  stopRetryAttempts: z.number().int().min(0).max(20).default(5),
  /** Install SIGINT/SIGTERM/SIGUSR1 handlers in `listen()`. Default true. */
  handleSignals: z.boolean().default(true),
}).superRefine((options, ctx) => {
  // A unix socket takes precedence over TLS (reference §2.1.3): the TLS settings are then ignored, not checked.
  if (options.unixSocket !== undefined) return;
  const cert = options.tlsServerCert !== undefined;
  const key = options.tlsServerKey !== undefined;
  if (cert && !key) ctx.addIssue({ code: 'custom', path: [], message: `TLS server key missing: ${TLS_NAMES.key} is not set, but ${TLS_NAMES.cert} is; HTTPS needs both` });
  if (key && !cert) ctx.addIssue({ code: 'custom', path: [], message: `TLS server certificate missing: ${TLS_NAMES.cert} is not set, but ${TLS_NAMES.key} is; HTTPS needs both` });
  if (options.tlsClientCas !== undefined && !cert && !key) {
    ctx.addIssue({ code: 'custom', path: [], message: `${TLS_NAMES.clientCas} is set, but mutual TLS needs HTTPS: set ${TLS_NAMES.cert} and ${TLS_NAMES.key} too` });
  }
});

/** Options accepted by {@link createExtension} (before defaults). */
export type ExtensionOptions = z.input<typeof OptionsSchema>;
/** Options after defaults, environment and validation; frozen. */
export type ResolvedOptions = Readonly<z.output<typeof OptionsSchema>>;

type EnvKind = 'int' | 'string' | 'lowercase' | 'duration' | 'bytes' | 'list' | 'boolean' | 'int-or-off';
const ENVIRONMENT: ReadonlyArray<readonly [string, keyof z.input<typeof OptionsSchema>, EnvKind]> = [
  ['STEADYBIT_EXTENSION_PORT', 'port', 'int'],
  ['STEADYBIT_EXTENSION_HEALTH_PORT', 'healthPort', 'int'],
  ['STEADYBIT_EXTENSION_UNIX_SOCKET', 'unixSocket', 'string'],
  ['STEADYBIT_EXTENSION_TLS_SERVER_CERT', 'tlsServerCert', 'string'],
  ['STEADYBIT_EXTENSION_TLS_SERVER_KEY', 'tlsServerKey', 'string'],
  ['STEADYBIT_EXTENSION_TLS_CLIENT_CAS', 'tlsClientCas', 'list'],
  ['STEADYBIT_LOG_LEVEL', 'logLevel', 'lowercase'],
  ['STEADYBIT_LOG_FORMAT', 'logFormat', 'lowercase'],
  ['STEADYBIT_LOG_COLOR', 'logColor', 'boolean'],
  ['STEADYBIT_EXTENSION_OOM_SCORE_ADJ', 'oomScoreAdj', 'int-or-off'],
  ['ACTIONKIT_MAX_EXECUTIONS', 'maxExecutions', 'int'],
  ['ACTIONKIT_STOP_GRACE', 'stopGraceMs', 'duration'],
  ['ACTIONKIT_HEARTBEAT_MIN_INTERVAL', 'heartbeatMinIntervalMs', 'duration'],
  ['ACTIONKIT_UPLOAD_DIR', 'uploadDir', 'string'],
  ['ACTIONKIT_UPLOAD_MAX_BYTES', 'uploadMaxBytes', 'bytes'],
  ['ACTIONKIT_MAX_BODY_BYTES', 'maxBodyBytes', 'bytes'],
  ['ACTIONKIT_MAX_CONNECTIONS', 'maxConnections', 'int'],
  ['ACTIONKIT_HANDLER_THREADS', 'handlerThreads', 'int'],
  ['ACTIONKIT_MAX_BODY_THREADS', 'maxBodyThreads', 'int'],
  ['ACTIONKIT_SPARE_BODY_THREADS', 'spareBodyThreads', 'int'],
  ['ACTIONKIT_IO_BODY_THREADS', 'ioBodyThreads', 'int'],
  ['ACTIONKIT_HANDLER_TIMEOUT', 'handlerTimeoutMs', 'duration'],
  ['ACTIONKIT_STOP_ALL_TIMEOUT', 'stopAllTimeoutMs', 'duration'],
  ['ACTIONKIT_STOP_RETENTION', 'stopRetentionMs', 'duration'],
  ['ACTIONKIT_WORKER_MAX_OLD_GENERATION_MB', 'workerMaxOldGenerationMb', 'int'],
  ['ACTIONKIT_BODY_NICE', 'bodyNice', 'int'],
  ['ACTIONKIT_FULL_PRIORITY_BODIES', 'fullPriorityBodies', 'int'],
  ['ACTIONKIT_TLS_RELOAD_CHECK', 'tlsReloadCheckMs', 'duration'],
  ['ACTIONKIT_PREPARED_TTL', 'preparedTtlMs', 'duration'],
  ['ACTIONKIT_STOP_RETRY_BASE', 'stopRetryBaseMs', 'duration'],
  ['ACTIONKIT_STOP_RETRIES', 'stopRetryAttempts', 'int'],
  ['ACTIONKIT_INDEX_PATH', 'indexPath', 'string'],
];

/** Settings that were removed, with what replaced them (named in the start-up error). */
const REMOVED_ENVIRONMENT: Readonly<Record<string, string>> = {
  ACTIONKIT_BODY_THREADS:
    "ACTIONKIT_BODY_THREADS was removed: bodies no longer wait for a fixed set of threads; a 'cpu' body gets a thread of its own (cap: ACTIONKIT_MAX_BODY_THREADS) and 'io' bodies share ACTIONKIT_IO_BODY_THREADS",
};

/** Environment variable names the runtime reads, for documentation and error messages. */
export const ENVIRONMENT_VARIABLES: readonly string[] = ENVIRONMENT.map(([name]) => name);

/**
 * Merge `options` with the environment, apply defaults, validate, freeze. Throws
 * {@link ConfigError} naming the option or environment variable at fault.
 */
export function resolveOptions(options: ExtensionOptions, env: NodeJS.ProcessEnv = process.env): ResolvedOptions {
  const merged: Record<string, unknown> = { ...options };
  const source = new Map<string, string>();
  for (const [name, key, kind] of ENVIRONMENT) {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') continue;
    merged[key] = fromEnv(name, raw.trim(), kind);
    source.set(key, name);
  }
  const known = new Set(ENVIRONMENT_VARIABLES);
  const removed = Object.keys(env).filter((name) => REMOVED_ENVIRONMENT[name] !== undefined);
  if (removed.length > 0) throw new ConfigError(`Invalid configuration: ${removed.map((name) => REMOVED_ENVIRONMENT[name]).join('; ')}`);
  const unknown = Object.keys(env).filter((name) => name.startsWith('ACTIONKIT_') && !known.has(name));
  if (unknown.length > 0) {
    throw new ConfigError(`Invalid configuration: unknown setting ${unknown.join(', ')}; the ACTIONKIT_ settings are ${ENVIRONMENT_VARIABLES.filter((n) => n.startsWith('ACTIONKIT_')).join(', ')}`);
  }
  const parsed = OptionsSchema.safeParse(merged);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      // Issues about several settings at once carry no path and name the settings themselves.
      if (issue.path.length === 0) return issue.message;
      const key = String(issue.path[0] ?? '');
      const where = source.has(key) ? `${source.get(key)}=${JSON.stringify(merged[key])}` : `option "${issue.path.join('.')}"`;
      return `${where}: ${issue.message}`;
    });
    throw new ConfigError(`Invalid configuration: ${problems.join('; ')}`);
  }
  return Object.freeze(parsed.data);
}

function fromEnv(name: string, raw: string, kind: EnvKind): unknown {
  switch (kind) {
    case 'lowercase':
      return raw.toLowerCase();
    case 'list':
      return raw.split(',').map((item) => item.trim()).filter((item) => item !== '');
    case 'string':
    case 'duration':
    case 'bytes':
      return raw;
    case 'int':
      return envInteger(name, raw);
    case 'int-or-off':
      return raw.toLowerCase() === 'off' ? null : envInteger(name, raw, ' or off');
    case 'boolean': {
      const value = raw.toLowerCase();
      if (value !== 'true' && value !== 'false') throw new ConfigError(`Invalid configuration: ${name}="${raw}": expected true or false`);
      return value === 'true';
    }
  }
}

function envInteger(name: string, raw: string, alternatives = ''): number {
  if (!/^-?\d+$/.test(raw)) throw new ConfigError(`Invalid configuration: ${name}="${raw}": expected an integer${alternatives}`);
  return Number(raw);
}

/**
 * Heartbeat parameters of the reference SDK (§1.10) for a status `callInterval`:
 * base interval `I = max(callInterval, minInterval)`, check interval `E = I + min(5%·I, 500ms)`,
 * timeout `T = 4·I`. The reference checks every `E` of silence and fires at the first check where
 * the silence exceeds `T`, i.e. `(floor(T/E) + 1)·E` after the last heartbeat; we fire at that same
 * moment (plus at most one watchdog tick).
 */
export function heartbeatExpiryMs(callIntervalMs: number, minIntervalMs: number): number {
  const interval = Math.max(callIntervalMs, minIntervalMs);
  const check = interval + Math.min(interval * 0.05, 500);
  const timeout = 4 * interval;
  return Math.ceil((Math.floor(timeout / check) + 1) * check);
}

/** Watchdog scan period: fine enough to be precise relative to the shortest possible expiry. */
export function watchdogTickMs(minIntervalMs: number): number {
  return Math.min(250, Math.max(5, Math.floor(minIntervalMs / 20)));
}
