/**
 * CPU time of one thread: the main thread, which serves every HTTP request. The process totals
 * (`process.cpuUsage()`) mix it with the worker threads; issue 12's bar is about the main thread
 * alone, so the bench reads the kernel's per-thread account.
 */
import { readFileSync } from 'node:fs';

/**
 * CPU time of this process's main thread so far, in µs: the first field of
 * `/proc/self/task/<pid>/schedstat` (nanoseconds on the CPU; the main thread's id is the pid).
 * NaN where there is no such file (not Linux, or schedstats compiled out).
 */
export function mainThreadCpuUs(): number {
  try {
    const fields = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').trim().split(/\s+/);
    return Number(fields[0]) / 1000;
  } catch {
    return Number.NaN;
  }
}
