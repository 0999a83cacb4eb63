/**
 * The kernel's accounts the bench reads from outside a server's process: its main thread's (which
 * serves every HTTP request) CPU time and time waiting for a CPU — the process totals
 * (`process.cpuUsage()`) mix it with the worker threads, and issue 12's bars are about the main
 * thread alone — and the whole machine's CPU ticks, to tell how busy the host was meanwhile.
 */
import { readFileSync } from 'node:fs';

/**
 * The main thread of process `pid` so far, in µs, from `/proc/<pid>/task/<pid>/schedstat` (the main
 * thread's id is the pid; nanoseconds): time on a CPU (first field), and time runnable but waiting
 * for one (second field: the machine's other threads, the load generator's and other guests', held
 * the cores). NaN where there is no such file (not Linux, or schedstats compiled out).
 */
export function mainThreadSchedUs(pid: number): { cpuUs: number; runQueueUs: number } {
  try {
    const fields = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').trim().split(/\s+/);
    return { cpuUs: Number(fields[0]) / 1000, runQueueUs: Number(fields[1]) / 1000 };
  } catch {
    return { cpuUs: Number.NaN, runQueueUs: Number.NaN };
  }
}

/** The whole machine's CPU account since boot, in clock ticks (`/proc/stat`'s `cpu` line). */
export interface MachineTicks {
  /** Every tick of every CPU: busy, idle and stolen. */
  total: number;
  /** Ticks the hypervisor gave to other guests while this one had work (`steal`). */
  steal: number;
  /** Ticks no task wanted (`idle` + `iowait`). */
  idle: number;
}

/** The machine's CPU ticks so far; undefined where there is no `/proc/stat` (not Linux). */
export function machineTicks(): MachineTicks | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest time is inside user/nice)
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line.trim().split(/\s+/).slice(1, 9).map(Number);
    return { total: user + nice + system + idle + iowait + irq + softirq + steal, steal, idle: idle + iowait };
  } catch {
    return undefined;
  }
}

/** Shares (0–1) of the machine's CPU time between two readings that was stolen and idle; NaN without readings. */
export function machineShares(before: MachineTicks | undefined, after: MachineTicks | undefined): { steal: number; idle: number } {
  const ticks = before === undefined || after === undefined ? 0 : after.total - before.total;
  if (before === undefined || after === undefined || ticks <= 0) return { steal: Number.NaN, idle: Number.NaN };
  return { steal: (after.steal - before.steal) / ticks, idle: (after.idle - before.idle) / ticks };
}
