/**
 * A budget for log lines that a client can cause at will (requests for unknown executions, shed
 * connections): at most `linesPerWindow` per window; the rest are counted, and the first line of
 * the next window says how many were left out. Without it, a flood of such requests is also a
 * flood of the log — disk, log shipping, and the main thread's time writing it.
 */
import type { Logger } from './logging.js';

export class LogBudget {
  private windowStartMs = 0;
  private linesInWindow = 0;
  private suppressed = 0;

  constructor(
    private readonly linesPerWindow: number,
    private readonly windowMs = 60_000,
  ) {}

  /** Log `message` at warn with `fields`, unless this window's budget is spent. */
  warn(logger: Logger, fields: Record<string, unknown>, message: string): void {
    const nowMs = Date.now();
    if (nowMs - this.windowStartMs >= this.windowMs) {
      this.windowStartMs = nowMs;
      this.linesInWindow = 0;
    }
    if (this.linesInWindow >= this.linesPerWindow) {
      this.suppressed++;
      return;
    }
    this.linesInWindow++;
    const left = this.suppressed;
    this.suppressed = 0;
    logger.warn(left === 0 ? fields : { ...fields, similarLinesLeftOut: left }, message);
  }
}
