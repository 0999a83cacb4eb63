/**
 * Request/response over a forked child's IPC channel. The bench runs the extension, the baseline
 * servers and the load generator in separate processes so that no side steals another's thread.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

interface Request {
  id: number;
  op: string;
  payload: unknown;
}
type Response = { id: number; result: unknown } | { id: number; error: string };
/** First message a child sends once it is ready (e.g. listening). */
interface Ready {
  ready: unknown;
}

/** How long any one request to a child may take before the bench fails instead of hanging. */
const REQUEST_TIMEOUT_MS = 10 * 60_000;

/** A forked bench process. */
export class BenchChild {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  readonly exited: Promise<number | string>;
  private stderrTail = '';

  private constructor(
    readonly process: ChildProcess,
    readonly name: string,
  ) {
    this.exited = new Promise((resolve) => process.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
    process.stderr?.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString()).slice(-4000);
    });
    process.on('message', (message: Response) => {
      const waiter = this.pending.get(message.id);
      if (waiter === undefined) return;
      this.pending.delete(message.id);
      if ('error' in message) waiter.reject(new Error(`${name}: ${message.error}`));
      else waiter.resolve(message.result);
    });
    void this.exited.then((code) => {
      for (const waiter of this.pending.values()) waiter.reject(new Error(`${name} exited (${code}):\n${this.stderrTail}`));
      this.pending.clear();
    });
  }

  /** Fork `module` (a path relative to the built bench folder) and wait for its ready message. */
  static async start<R>(module: string, env: Record<string, string> = {}, execArgv: string[] = []): Promise<{ child: BenchChild; ready: R }> {
    const path = fileURLToPath(new URL(module, import.meta.url));
    const forked = fork(path, [], { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'pipe', 'ipc'], execArgv });
    const child = new BenchChild(forked, module);
    const ready = once(forked, 'message') as Promise<[Ready]>;
    const [message] = await Promise.race([
      ready,
      child.exited.then((code) => {
        throw new Error(`${module} exited (${code}) before it was ready:\n${child.stderrTail}`);
      }),
    ]);
    return { child, ready: message.ready as R };
  }

  /** Call `op` in the child. */
  request<T>(op: string, payload: unknown = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name}: ${op} did not answer within ${REQUEST_TIMEOUT_MS} ms`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.process.send({ id, op, payload } satisfies Request);
    });
  }

  /** End the child (SIGKILL after `graceMs` if it does not exit on SIGTERM). */
  async stop(graceMs = 5_000): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** In a child: announce readiness and answer the parent's requests with `handlers`. */
export function serveParent(ready: unknown, handlers: Record<string, (payload: never) => unknown>): void {
  process.on('message', (message: Request) => {
    const handler = handlers[message.op];
    void (async () => {
      try {
        if (handler === undefined) throw new Error(`unknown op ${message.op}`);
        process.send!({ id: message.id, result: await handler(message.payload as never) } satisfies Response);
      } catch (error) {
        process.send!({ id: message.id, error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies Response);
      }
    })();
  });
  process.send!({ ready } satisfies Ready);
}
