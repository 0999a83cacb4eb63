/** What every scenario shares: starting the server, the baselines and the load generator. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BenchChild } from '../ipc.js';
import type { AgentExecution, SetupItem } from '../load.js';
import type { ServerStats } from '../server.js';

export type { AgentExecution, ServerStats, SetupItem };
export { sleep };

/** Sizes of one bench run (`--quick` or the default). */
export interface BenchSize {
  quick: boolean;
  seed: number;
}

/** The extension under test in its own process. */
export interface ServerProcess {
  child: BenchChild;
  base: string;
  pid: number;
  stats(): Promise<ServerStats>;
  /** `GET /metrics` on the probe port (Prometheus text). */
  metrics(): Promise<string>;
  /** CPU time of the whole process, all threads (µs). */
  cpuUsage(): Promise<NodeJS.CpuUsage>;
  stop(): Promise<void>;
}

/**
 * Start the extension child with `env` on top of quiet, port-0 defaults. With `BENCH_PROFILE_DIR`
 * set, the server runs with `--cpu-prof` and leaves one profile per thread there.
 */
export async function startServer(env: Record<string, string> = {}): Promise<ServerProcess> {
  const uploadDir = mkdtempSync(join(tmpdir(), 'actionkit-bench-uploads-'));
  const profileDir = process.env['BENCH_PROFILE_DIR'];
  const execArgv = profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir];
  const { child, ready } = await BenchChild.start<{ port: number; healthPort: number | undefined; pid: number }>('./server.js', {
    STEADYBIT_EXTENSION_PORT: '0',
    STEADYBIT_EXTENSION_HEALTH_PORT: '0',
    STEADYBIT_LOG_LEVEL: 'error',
    STEADYBIT_LOG_FORMAT: 'json',
    ACTIONKIT_UPLOAD_DIR: uploadDir,
    ...env,
  }, execArgv);
  return {
    child,
    base: `http://127.0.0.1:${ready.port}`,
    pid: ready.pid,
    stats: () => child.request<ServerStats>('stats'),
    metrics: async () => {
      if (ready.healthPort === undefined) throw new Error('the server has no probe port, hence no /metrics');
      const answer = await fetch(`http://127.0.0.1:${ready.healthPort}/metrics`);
      if (!answer.ok) throw new Error(`GET /metrics answered ${answer.status}`);
      return answer.text();
    },
    cpuUsage: () => child.request<NodeJS.CpuUsage>('cpuUsage'),
    stop: async () => {
      await child.stop();
      rmSync(uploadDir, { recursive: true, force: true });
    },
  };
}

/** Start a baseline server (`echo`, `node-http`, `inline` or a storm baseline, see baseline-server.ts). */
export async function startBaseline(mode: 'echo' | 'node-http' | 'inline' | 'storm-node-http' | 'storm-express', env: Record<string, string> = {}): Promise<BaselineProcess> {
  const { child, ready } = await BenchChild.start<{ port: number; pid: number }>('./baseline-server.js', { BENCH_BASELINE: mode, ...env });
  return {
    base: `http://127.0.0.1:${ready.port}`,
    pid: ready.pid,
    cpuUsage: () => child.request<NodeJS.CpuUsage>('cpuUsage'),
    request: (op) => child.request(op),
    stop: () => child.stop(),
  };
}

/** A baseline server in its own process; `request` asks it over IPC (the storm baselines answer `stats`). */
export type BaselineProcess = Pick<ServerProcess, 'base' | 'pid' | 'cpuUsage' | 'stop'> & { request<T>(op: string): Promise<T> };

/** The load generator, a client process of its own. */
export interface LoadProcess {
  call<T>(op: string, payload: unknown): Promise<T>;
  stop(): Promise<void>;
}

export async function startLoad(): Promise<LoadProcess> {
  const { child } = await BenchChild.start('./load.js');
  return { call: (op, payload) => child.request(op, payload), stop: () => child.stop() };
}

/** Prepare and start executions through the load generator; any failure aborts the scenario. */
export async function setupExecutions(
  load: LoadProcess,
  base: string,
  items: SetupItem[],
  concurrency = 32,
): Promise<{ executions: AgentExecution[]; elapsedMs: number }> {
  const result = await load.call<{ executions: AgentExecution[]; failures: string[]; elapsedMs: number }>('setup', { base, items, concurrency });
  if (result.failures.length > 0) throw new Error(`setup failed for ${result.failures.length} executions, e.g. ${result.failures[0]}`);
  return result;
}

/** Poll `predicate` every `everyMs` until true; throws after `timeoutMs` (the bench never hangs). */
export async function waitFor(what: string, predicate: () => Promise<boolean>, timeoutMs: number, everyMs = 10): Promise<number> {
  const started = performance.now();
  while (!(await predicate())) {
    if (performance.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
  return performance.now() - started;
}
