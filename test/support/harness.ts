/**
 * Test harness: a real extension on 127.0.0.1 port 0 with real worker threads, and an agent-like
 * HTTP client whose every answer is checked against the wire schemas.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { z } from 'zod';
import { createExtension, type Extension, type ExtensionOptions } from '../../src/index.js';
import * as schemas from '../../src/api/schemas.js';
import { AgentClient, ProtocolError, validateWire } from '../../src/testing/index.js';

/** Absolute path of a compiled fixture module in `test/fixtures`. */
export function fixture(name: string): string {
  return fileURLToPath(new URL(`../fixtures/${name}.js`, import.meta.url));
}

/** A fresh temporary directory, removed by the returned cleanup. */
export function tempDir(prefix = 'actionkit-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A running in-process extension plus its client. */
export interface Running {
  extension: Extension;
  base: string;
  agent: Agent;
  uploadDir: string;
  /** The probes' (and metrics') port, undefined when probes are disabled. */
  healthPort: number | undefined;
  /** Close the extension and remove its temp upload dir. */
  close(): Promise<void>;
}

/**
 * The base URL of an extension listening on `port` of 127.0.0.1. On a unix socket there is no port:
 * the URL then only names the scheme and Host (requests need a dispatcher for the socket).
 */
function baseUrl(port: number | undefined): string {
  return port === undefined ? 'http://localhost' : `http://127.0.0.1:${port}`;
}

/** Start an extension in this process with test-friendly defaults (port 0, no signals, quiet logs). */
export async function start(options: Partial<ExtensionOptions> & { actions: ExtensionOptions['actions'] }): Promise<Running> {
  const uploads = tempDir('actionkit-uploads-');
  let extension: Extension | undefined;
  let listening: Awaited<ReturnType<Extension['listen']>>;
  try {
    extension = await createExtension({
      port: 0,
      host: '127.0.0.1',
      healthPort: 0,
      handleSignals: false,
      logLevel: 'fatal',
      heartbeatMinIntervalMs: 200,
      stopGraceMs: 1000,
      uploadDir: uploads.path,
      // The test runner's own process: its OOM-killer standing is not the extension's to change.
      oomScoreAdj: null,
      ...options,
    });
    listening = await extension.listen();
  } catch (error) {
    // A start-up a test expects to fail leaves nothing behind.
    await extension?.close();
    uploads.remove();
    throw error;
  }
  const { port, healthPort } = listening;
  const base = baseUrl(port);
  return {
    extension,
    base,
    agent: new Agent(base),
    uploadDir: uploads.path,
    healthPort,
    close: async () => {
      await extension.close();
      uploads.remove();
    },
  };
}

/** One HTTP answer. */
export interface Answer<T = Record<string, unknown>> {
  status: number;
  body: T;
  headers: Headers;
}

const RESPONSE_SCHEMAS = {
  prepare: schemas.PrepareActionResponseSchema,
  start: schemas.StartActionResponseSchema,
  status: schemas.ActionStatusResponseSchema,
  stop: schemas.StopActionResponseSchema,
  query: schemas.QueryMetricsResponseSchema,
} as const;

/** Thrown when an answer violates the runtime's HTTP envelope (JSON content type, Request-Id, Date). */
export class ContractViolation extends Error {}

/** Parse `body` with `schema` or throw a {@link ContractViolation} naming the field. */
export function assertWire<S extends z.ZodType>(schema: S, body: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new ContractViolation(`${what}: ${schemas.formatZodIssues(parsed.error).all}\n${JSON.stringify(body)}`);
  return parsed.data;
}

/**
 * Calls an extension the way the agent does, through the public test client
 * (`actionkit-runtime/testing`), with raw access for tests of bad input: every JSON answer (2xx and
 * errors) is validated against the ActionKit response schemas, and on top of the client the
 * envelope of this runtime is checked (JSON content type, Request-Id, Date).
 */
export class Agent {
  /** The public agent client underneath (no Request-Timeout unless a test sends one). */
  readonly client: AgentClient;

  constructor(readonly base: string) {
    this.client = new AgentClient({ baseUrl: base, requestTimeoutMs: null });
  }

  /** Raw request; the body is sent as JSON unless it is a string (sent verbatim) or FormData. */
  async request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
    const answer = await this.client.exchange(method, path, body, { headers });
    if (answer.httpStatus !== 304 && !answer.contentType.startsWith('application/json')) {
      throw new ContractViolation(`${answer.request}: content type ${answer.contentType}, body ${answer.text.slice(0, 200)}`);
    }
    if (answer.headers.get('request-id') === null) throw new ContractViolation(`${answer.request}: no Request-Id header`);
    if (answer.headers.get('date') === null) throw new ContractViolation(`${answer.request}: no Date header`);
    if (answer.text !== '' && answer.json === undefined) throw new ProtocolError(answer.request, answer.httpStatus, answer.contentType, answer.text);
    const parsed = (answer.text === '' ? {} : answer.json) as Record<string, unknown>;
    if (answer.httpStatus >= 400) validateWire('ActionKitError', parsed, answer.request, answer.httpStatus);
    return { status: answer.httpStatus, body: parsed, headers: answer.headers };
  }

  private async phase(phase: keyof typeof RESPONSE_SCHEMAS, actionId: string, body: unknown, headers?: Record<string, string>): Promise<Answer> {
    const answer = await this.request('POST', `/${actionId}/${phase}`, body, headers);
    assertWire(RESPONSE_SCHEMAS[phase], answer.body, `${phase} ${actionId}`);
    return answer;
  }

  prepare(actionId: string, executionId: string, config: Record<string, unknown>, headers?: Record<string, string>): Promise<Answer> {
    return this.phase('prepare', actionId, { executionId, config, properties: {} }, headers);
  }
  start(actionId: string, executionId: string, state: unknown, headers?: Record<string, string>): Promise<Answer> {
    return this.phase('start', actionId, { executionId, state }, headers);
  }
  status(actionId: string, executionId: string, state: unknown, headers?: Record<string, string>): Promise<Answer> {
    return this.phase('status', actionId, { executionId, state }, headers);
  }
  stop(actionId: string, executionId: string, state: unknown, headers?: Record<string, string>): Promise<Answer> {
    return this.phase('stop', actionId, { executionId, state }, headers);
  }
  query(actionId: string, executionId: string, config: Record<string, unknown>): Promise<Answer> {
    return this.phase('query', actionId, { executionId, timestamp: new Date().toISOString(), config });
  }

  /** prepare + start; throws if either reports an error. Returns the state after start. */
  async run(actionId: string, executionId: string, config: Record<string, unknown>): Promise<Record<string, unknown>> {
    const prepared = await this.prepare(actionId, executionId, config);
    if (prepared.status !== 200 || prepared.body['error'] !== undefined) throw new Error(`prepare failed: ${JSON.stringify(prepared.body)}`);
    const started = await this.start(actionId, executionId, prepared.body['state']);
    if (started.status !== 200 || started.body['error'] !== undefined) throw new Error(`start failed: ${JSON.stringify(started.body)}`);
    return started.body['state'] as Record<string, unknown>;
  }
}

/** The lines a fixture logged for execution `id` (without the id), in file order; none if there is no file. */
export function logLines(file: string, id: string): string[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.startsWith(`${id} `))
    .map((line) => line.slice(id.length + 1));
}

/** Resolve after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll `check` until it returns a value other than undefined, or fail after `timeoutMs` naming `what`. */
export async function eventually<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A `node` child process and what it wrote to stderr. */
export interface Spawned {
  process: ChildProcess;
  /** Every stderr line so far. */
  logs: string[];
  /** Resolves with the exit code (or signal name) once stderr is closed too: every line is in `logs`. */
  exited: Promise<number | string>;
}

/** A child process serving an extension, once it logged that it listens. */
export interface Child extends Spawned {
  port: number;
  healthPort: number;
  base: string;
  agent: Agent;
}

/** How long a child may take to log what a test waits for. */
const CHILD_LOG_TIMEOUT_MS = 20_000;

/**
 * Run `node <args>` with the test environment — ports 0, JSON logs at `info`, heartbeat minimum
 * 200ms — overridden by `env`, and nothing else of this process's environment but `PATH`.
 */
export function spawnNode(args: string[], env: Record<string, string> = {}): Spawned {
  const child = spawn(process.execPath, args, {
    env: {
      PATH: process.env['PATH'] ?? '',
      STEADYBIT_EXTENSION_PORT: '0',
      STEADYBIT_EXTENSION_HEALTH_PORT: '0',
      STEADYBIT_LOG_FORMAT: 'json',
      STEADYBIT_LOG_LEVEL: 'info',
      ACTIONKIT_HEARTBEAT_MIN_INTERVAL: '200ms',
      ...env,
    },
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  const logs: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => logs.push(line));
  const exited = new Promise<number | string>((resolve) => child.once('close', (code, signal) => resolve(code ?? signal ?? -1)));
  return { process: child, logs, exited };
}

/**
 * The first value `match` returns for a stderr line of `child`, waiting for it. Rejects, with the
 * lines so far, when the child exits first or nothing matched within 20 s; the child is then killed.
 */
export async function untilLogged<T>(child: Spawned, what: string, match: (line: string) => T | undefined): Promise<T> {
  let exit: number | string | undefined;
  void child.exited.then((code) => (exit = code));
  const deadline = Date.now() + CHILD_LOG_TIMEOUT_MS;
  try {
    for (;;) {
      for (const line of child.logs) {
        const value = match(line);
        if (value !== undefined) return value;
      }
      if (exit !== undefined) throw new Error(`extension exited (${exit}) before ${what}`);
      if (Date.now() > deadline) throw new Error(`timed out after ${CHILD_LOG_TIMEOUT_MS} ms waiting for ${what}`);
      await sleep(20);
    }
  } catch (error) {
    // A child left running would keep the test process alive after the failure.
    child.process.kill('SIGKILL');
    throw new Error(`${(error as Error).message}:\n${child.logs.join('\n')}`);
  }
}

/** The path of the harness's child entry `test/support/serve.js`, for {@link spawnNode}. */
export const SERVE_ENTRY = fileURLToPath(new URL('./serve.js', import.meta.url));

/**
 * Start an extension in a child process (`test/support/serve.js` serving the given fixture
 * modules), with real signal handling. Resolves when it logged that it listens.
 */
export function spawnExtension(modules: string[], env: Record<string, string> = {}): Promise<Child> {
  return spawnListening([SERVE_ENTRY, ...modules], env);
}

/**
 * Run `node <args>` — any entry that serves an extension configured by the environment (the
 * harness's serve.js, `actionkit serve`, an example main) — with {@link spawnNode}'s environment
 * (JSON logs required), and resolve once it logged `extension listening`.
 */
export async function spawnListening(args: string[], env: Record<string, string> = {}): Promise<Child> {
  const child = spawnNode(args, env);
  const { port, healthPort } = await untilLogged(child, 'listening', (line) => {
    try {
      const entry = JSON.parse(line) as { message?: string; port?: number; healthPort?: number };
      return entry.message === 'extension listening' ? { port: entry.port!, healthPort: entry.healthPort! } : undefined;
    } catch {
      return undefined; // not JSON: only kept in the logs
    }
  });
  const base = baseUrl(port);
  return { ...child, port, healthPort, base, agent: new Agent(base) };
}
