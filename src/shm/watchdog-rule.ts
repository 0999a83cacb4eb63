/**
 * The heartbeat watchdog's rule: **a heartbeat is due only for time in which the main thread was
 * able to read requests.** Status requests are read, and heartbeats stamped, on the main thread;
 * when it cannot run — a long synchronous task, a GC pause, CPU starvation, the whole process
 * frozen by SIGSTOP — the agent's requests wait in the socket, and that silence is ours, not the
 * agent's. The watchdog thread keeps running through a main-thread stall (and wakes first after a
 * freeze), so without this rule it would stop every watched execution before the requests sent in
 * the meantime are read.
 *
 * **Terms.** The *shared clock* is `clockMs` (CLOCK_MONOTONIC, which keeps running while the
 * process is stopped). The main thread takes a *liveness reading* ({@link ControlTable.markMainAlive})
 * at every heartbeat stamp (status request, start) and from a timer every
 * {@link mainStampIntervalMs}; while its event loop turns, readings are about one interval apart.
 * A *stall* is a gap `g` between two consecutive readings longer than the threshold
 * `θ` = {@link mainStallAfterMs}; its *excuse* is `g − θ`. The *heartbeat clock* is the shared
 * clock minus every excuse accounted so far (`MAIN_EXCUSED_MS`). Heartbeats are stamped on the
 * heartbeat clock when the main thread reads the status request, and aged on it.
 *
 * **Who writes which word** (layout in `src/shm/table.ts`):
 * - main thread, single writer: at a reading `t` that ends a stall it adds `g − θ` to
 *   MAIN_EXCUSED_MS and 1 to MAIN_STALLS, *then* stores `t` into MAIN_ALIVE_MS; then it stamps the
 *   heartbeat (HB_LAST_MS = `t − excused`) if the reading was a status request.
 * - watchdog thread: reads the shared clock `n` first, then MAIN_ALIVE_MS `a`, then
 *   MAIN_EXCUSED_MS `x`; it writes only CONTROL words (through the one stop entry point, a CAS)
 *   and its counters.
 *
 * **The watchdog's pass at `n`** ({@link WatchdogRule.pass}), one of three outcomes:
 * 1. *judge* when the main thread is live (`n − a ≤ θ`): stop (CAS Running → StopRequested,
 *    `heartbeat timeout`) every Running execution with `(n − x) − HB_LAST_MS ≥ its expiry`.
 * 2. *defer* when it is stale (`n − a > θ`): a stall may be under way whose excuse is not
 *    accounted yet, so nothing is judged.
 * 3. *judge anyway* (wedged) once the watchdog has itself watched one stall for `W` =
 *    {@link MAIN_WEDGED_AFTER_MS}: it then judges with `n − x`, charging the stall in progress in
 *    full. A deferred pass adds `min(time since the previous pass, 2 ticks)` to the watched time:
 *    a longer step is the watchdog's own clock jump — it was frozen or starved itself and watched
 *    nothing — so a process freeze never counts towards `W`. The watched time belongs to one
 *    stall: it restarts at 0 whenever the pass finds a main-thread reading other than the one it
 *    watched from (the main thread read in between, even if no pass saw it live).
 *
 * **Why the ordering is safe.** All accesses are `Atomics` (sequentially consistent). A watchdog
 * that sees the MAIN_ALIVE_MS that ended a stall also sees that stall's excuse (written before it).
 * If it sees an excuse newer than the reading it saw, its heartbeat clock is only behind, so
 * heartbeats look younger: never a false stop. A heartbeat stamped after `n` was read is "in the
 * future" and counts as fresh (signed difference). The watchdog's own freezes need no excuse of
 * their own: SIGSTOP freezes the main thread too, whose gap covers the freeze — after SIGCONT
 * either the watchdog runs first and finds the main thread stale (defer), or the main thread ran
 * first and its first reading already excused the freeze; a watchdog that read `n` before a freeze
 * and judges after it uses an old `n` (heartbeats look younger). A watchdog starved alone judges
 * the heartbeats the running main thread kept stamping.
 *
 * **What the agent is charged.** At a judging pass, an execution whose last status request was read
 * at `s` is charged `n − s` minus the excuses of the stalls that ended since `s`: the first `θ` of
 * every stall is charged, the rest is not. Requests the agent sent during a stall or a freeze are
 * read right after it, charged as if the stall had lasted `θ`: with the agent polling every
 * `I ≤ expiry / 4` (the reference formula) that leaves them at least `expiry − I − θ` minus network
 * latency to be read — the same margin a request has in normal operation, less `θ`.
 *
 * **Bound on detecting a real silence.** An execution whose agent fell silent after a request read
 * at `s` is stopped at the first judging pass where its charged silence reaches its expiry: at the
 * latest `s + expiry + X + one tick` (plus the pass's own scheduling delay), where `X` is the sum of
 * the excuses of the main-thread stalls in between — with no stall, exactly as before this rule.
 * While a stall lasts, no pass judges until the main thread reads again or the watchdog watched the
 * stall for `W`; a main thread that reads no request for a minute is wedged, and stopping its
 * executions (their bodies see the stop on their own) is the safe side. When a stall the watchdog
 * already judged through ends, the main thread excuses all of it (it cannot tell a watched stall
 * from a freeze): executions that survived it get that extension. `X` has no cap of its own: a
 * main thread that stalls in bursts each shorter than `W` (blocked 59 s, live 100 ms, again and
 * again) postpones a silent stop by the bursts' total — measured: 53 times the expiry for that
 * pattern. A real agent's executions are not at risk from it (their requests are read in every
 * live window); only the detection of a silent agent is late, while the process is that sick.
 */
import { ControlTable, elapsedMs } from './table.js';

/** How often the main thread's timer takes a liveness reading: the watchdog's tick. */
export function mainStampIntervalMs(tickMs: number): number {
  return tickMs;
}

/**
 * `θ`: the longest gap between two main-thread liveness readings that is not a stall — four stamp
 * intervals plus 20 ms of scheduling slack (1,020 ms at the default 5 s minimum heartbeat
 * interval, 60 ms at 200 ms). The tick is at most a twentieth of the minimum interval `I`, so
 * `θ ≤ I/5 + 20 ms`, small against the expiry (over `4·I`): the charged part of a stall does not
 * eat the agent's margin.
 */
export function mainStallAfterMs(tickMs: number): number {
  return 4 * mainStampIntervalMs(tickMs) + 20;
}

/** `W`: a main-thread stall the watchdog watched this long is judged through (wedged main thread). */
export const MAIN_WEDGED_AFTER_MS = 60_000;

/** What one pass did. */
export interface PassOutcome {
  /** The pass judged the heartbeats (false: deferred because the main thread was stale). */
  judged: boolean;
  /** It judged although the main thread was stale: the watched stall exceeded `W`. */
  wedged: boolean;
  /** Heartbeat timeouts this pass won. */
  fired: number;
  /** The heartbeat clock the pass judged with (when it judged). */
  heartbeatNowMs: number;
}

/**
 * The watchdog's side of the rule, with its own state (the previous pass, the stall time watched).
 * One instance per watchdog thread; the clock is passed in, so a test can drive it with any schedule.
 */
export class WatchdogRule {
  private previousPassMs: number | undefined;
  /** Stall time watched since the main-thread reading {@link watchedSinceAliveMs}. */
  private watchedStallMs = 0;
  private watchedSinceAliveMs: number | undefined;

  constructor(
    private readonly table: ControlTable,
    private readonly tickMs: number,
  ) {}

  /** One pass at shared-clock time `nowMs` (read before calling; see the module comment). */
  pass(nowMs: number): PassOutcome {
    const live = this.table.mainLiveness();
    // A step that went backwards (a caller's clock read before a later pass's) counts as 0.
    const stepMs = this.previousPassMs === undefined || ((nowMs - this.previousPassMs) | 0) < 0 ? 0 : elapsedMs(nowMs, this.previousPassMs);
    this.previousPassMs = nowMs;
    let wedged = false;
    // A new reading since the last pass: whatever is stale now is a new stall, watched from 0 —
    // also when no pass ran in the short live window between two stalls (a freeze or a starved
    // watchdog right after a reading), which must not carry the old stall's watched time over.
    if (live.aliveMs !== this.watchedSinceAliveMs) {
      this.watchedSinceAliveMs = live.aliveMs;
      this.watchedStallMs = 0;
    }
    if (live.stallAfterMs > 0 && ((nowMs - live.aliveMs) | 0) > live.stallAfterMs) {
      this.watchedStallMs += Math.min(stepMs, 2 * this.tickMs);
      if (this.watchedStallMs < live.wedgedAfterMs) {
        this.table.recordDeferredScan();
        return { judged: false, wedged: false, fired: 0, heartbeatNowMs: 0 };
      }
      wedged = true;
    }
    const heartbeatNowMs = (nowMs - live.excusedMs) >>> 0;
    return { judged: true, wedged, fired: this.table.scanHeartbeats(heartbeatNowMs), heartbeatNowMs };
  }
}
