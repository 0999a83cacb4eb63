/**
 * Signal handling in the reference's order (§2.4): on SIGINT/SIGTERM run, one after the other,
 * readiness false (0) → stop all executions (10) → author hooks (20) → close probes (80) → close
 * the HTTP server (90) → exit 130/143 (100). SIGUSR1 runs the same hooks up to 20 and keeps serving
 * (readiness comes back). A hook that throws is logged and the next one still runs.
 */
import type { Logger } from '../logging.js';

/** Signals the runtime handles. */
export type HandledSignal = 'SIGINT' | 'SIGTERM' | 'SIGUSR1';

/** One step of the shutdown sequence. */
export interface SignalHook {
  name: string;
  /** Lower runs first; the reference's orders are 0, 10, 20, 80, 90, 100. */
  order: number;
  run(signal: HandledSignal): Promise<void> | void;
  /** Run for SIGUSR1 too (default: only orders below 80 do). */
  onUsr1?: boolean;
}

/** Exit codes: 128 + signal number, as a shell reports them. */
export const EXIT_CODES: Record<'SIGINT' | 'SIGTERM', number> = { SIGINT: 130, SIGTERM: 143 };

/** Installs the handlers and runs hooks in order, one signal at a time. */
export class SignalHandling {
  private readonly hooks: SignalHook[] = [];
  private readonly logger: Logger;
  private chain: Promise<void> = Promise.resolve();
  private terminating = false;
  private readonly listeners = new Map<HandledSignal, () => void>();

  constructor(logger: Logger) {
    this.logger = logger;
  }

  /** Add a hook (replaces one with the same name). */
  add(hook: SignalHook): void {
    const existing = this.hooks.findIndex((h) => h.name === hook.name);
    if (existing >= 0) this.hooks.splice(existing, 1);
    this.hooks.push(hook);
    this.hooks.sort((a, b) => a.order - b.order);
  }

  /** Listen for SIGINT, SIGTERM and SIGUSR1. */
  install(): void {
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGUSR1'] as const) {
      const listener = (): void => this.onSignal(signal);
      this.listeners.set(signal, listener);
      process.on(signal, listener);
    }
  }

  /** Remove the listeners. */
  uninstall(): void {
    for (const [signal, listener] of this.listeners) process.off(signal, listener);
    this.listeners.clear();
  }

  /** Run the hooks for `signal` (also usable without a real signal, e.g. in tests). */
  handle(signal: HandledSignal): Promise<void> {
    this.chain = this.chain.then(() => this.runHooks(signal));
    return this.chain;
  }

  private onSignal(signal: HandledSignal): void {
    if (signal !== 'SIGUSR1' && this.terminating) {
      // A second SIGINT/SIGTERM while shutting down: the operator insists.
      this.logger.warn({ signal }, 'second termination signal; exiting now');
      process.exit(EXIT_CODES[signal]);
    }
    if (signal !== 'SIGUSR1') this.terminating = true;
    this.logger.info({ signal }, 'received signal');
    void this.handle(signal);
  }

  private async runHooks(signal: HandledSignal): Promise<void> {
    for (const hook of [...this.hooks]) {
      if (signal === 'SIGUSR1' && !(hook.onUsr1 ?? hook.order < 80)) continue;
      try {
        await hook.run(signal);
      } catch (error) {
        this.logger.error({ err: error, hook: hook.name, signal }, 'signal hook failed');
      }
    }
  }
}
