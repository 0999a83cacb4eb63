/**
 * Signal handling in the reference's order (§2.4): on SIGINT/SIGTERM run, one after the other,
 * readiness false (0) → stop all executions (10) → author hooks (20) → close probes (80) → close
 * the HTTP server (90) → exit 130/143 (100). SIGUSR1 runs the same hooks up to 30 and keeps
 * serving (readiness comes back). A hook that throws is logged and the next one still runs.
 *
 * Bounded, whatever hangs: every run of the hooks has a deadline (`budgetMs` after the signal).
 * A hook still running at the deadline is abandoned (logged) and the next one starts; on
 * SIGINT/SIGTERM the exit hook runs at the latest then, and a last-resort timer exits the process
 * if even that does not return. A termination signal does not wait for a SIGUSR1 run in progress,
 * and from its arrival on the extension is not ready and accepts no new executions
 * (`onTerminating`), whatever a SIGUSR1 run still does.
 */
import type { Logger } from '../logging.js';
import { settlesWithin } from './waits.js';

/** Signals the runtime handles. */
export type HandledSignal = 'SIGINT' | 'SIGTERM' | 'SIGUSR1';

/** One step of the shutdown sequence. */
export interface SignalHook {
  name: string;
  /** Lower runs first; the reference's orders are 0, 10, 20, 80, 90, 100. */
  order: number;
  /** `deadlineMs` (`Date.now()` scale): when this run of the hooks must be over. */
  run(signal: HandledSignal, deadlineMs: number): Promise<void> | void;
  /** Run for SIGUSR1 too (default: only orders below 80 do). */
  onUsr1?: boolean;
}

/** Exit codes: 128 + signal number, as a shell reports them. */
export const EXIT_CODES: Record<'SIGINT' | 'SIGTERM', number> = { SIGINT: 130, SIGTERM: 143 };

/** Hooks at or above this order run after the deadline too (the exit). */
const ALWAYS_ORDER = 100;

/** After the deadline, the exit hook gets this long before the process exits without it. */
const LAST_RESORT_MS = 2_000;

/** What signal handling needs from the extension. */
export interface SignalSettings {
  logger: Logger;
  /** Bound of one run of the hooks, from the signal (read at each signal). */
  budgetMs(): number;
  /** The end of that time kept for the exit hook (ending the threads): the other hooks get the rest. */
  exitReserveMs: number;
  /** Called synchronously when SIGINT/SIGTERM arrives, before any hook. */
  onTerminating(signal: 'SIGINT' | 'SIGTERM'): void;
}

/** Installs the handlers and runs the hooks in order. */
export class SignalHandling {
  private readonly hooks: SignalHook[] = [];
  private readonly settings: SignalSettings;
  /** SIGUSR1 runs, one after the other. */
  private usr1Chain: Promise<void> = Promise.resolve();
  private termination: Promise<void> | undefined;
  private readonly listeners = new Map<HandledSignal, () => void>();

  constructor(settings: SignalSettings) {
    this.settings = settings;
  }

  /** True once SIGINT or SIGTERM arrived (or was simulated). */
  get terminating(): boolean {
    return this.termination !== undefined;
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

  /**
   * End the process now, by `signal`'s default action: `process.exit()` would wait for every
   * worker thread, and one blocked in a native call (a synchronous child process) would hold it.
   * The exit status is the shell's 128 + signal number, as with `process.exit(EXIT_CODES[…])`.
   */
  exitBySignal(signal: 'SIGINT' | 'SIGTERM'): void {
    for (const listener of process.listeners(signal)) process.off(signal, listener as () => void);
    process.kill(process.pid, signal);
  }

  /** Remove the listeners. */
  uninstall(): void {
    for (const [signal, listener] of this.listeners) process.off(signal, listener);
    this.listeners.clear();
  }

  /**
   * Run the hooks for `signal` (also usable without a real signal, e.g. in tests). SIGUSR1 runs
   * queue behind each other; the first SIGINT/SIGTERM starts at once and later ones share it.
   */
  handle(signal: HandledSignal): Promise<void> {
    if (signal === 'SIGUSR1') {
      this.usr1Chain = this.usr1Chain.then(() => (this.terminating ? undefined : this.runHooks(signal)));
      return this.usr1Chain;
    }
    if (this.termination === undefined) {
      this.settings.onTerminating(signal);
      this.termination = this.runHooks(signal);
    }
    return this.termination;
  }

  private onSignal(signal: HandledSignal): void {
    if (signal !== 'SIGUSR1' && this.terminating) {
      // A second SIGINT/SIGTERM while shutting down: the operator insists.
      this.settings.logger.warn({ signal }, 'second termination signal; exiting now');
      this.exitBySignal(signal);
    }
    this.settings.logger.info({ signal }, 'received signal');
    void this.handle(signal);
  }

  private async runHooks(signal: HandledSignal): Promise<void> {
    const { logger } = this.settings;
    const deadlineMs = Date.now() + this.settings.budgetMs();
    const hooksDeadlineMs = deadlineMs - this.settings.exitReserveMs;
    if (signal !== 'SIGUSR1') {
      // Whatever the hooks do, the process ends shortly after the deadline.
      setTimeout(() => {
        logger.error({ signal }, 'shutdown did not finish by its deadline; exiting now');
        this.exitBySignal(signal);
      }, Math.max(0, deadlineMs - Date.now()) + LAST_RESORT_MS).unref();
    }
    for (const hook of [...this.hooks]) {
      if (signal === 'SIGUSR1' && !(hook.onUsr1 ?? hook.order < 80)) continue;
      // A SIGUSR1 run that a termination overtook stops here: the termination owns what follows.
      if (signal === 'SIGUSR1' && this.terminating) return;
      const always = hook.order >= ALWAYS_ORDER;
      const hookDeadlineMs = always ? deadlineMs : hooksDeadlineMs;
      const leftMs = hookDeadlineMs - Date.now();
      if (leftMs <= 0 && !always) {
        logger.error({ hook: hook.name, signal }, 'signal hook skipped: the shutdown deadline has passed');
        continue;
      }
      try {
        const running = Promise.resolve(hook.run(signal, hookDeadlineMs));
        // The exit hook bounds itself (and the last-resort timer bounds it); every other one is raced.
        if (always) await running;
        else if (!(await settlesWithin(running, leftMs))) logger.error({ hook: hook.name, signal }, 'signal hook still running at the shutdown deadline; going on without it');
      } catch (error) {
        logger.error({ err: error, hook: hook.name, signal }, 'signal hook failed');
      }
    }
  }
}
