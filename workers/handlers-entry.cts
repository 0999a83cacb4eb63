/**
 * piscina's task module on both lanes: a CommonJS file in front of `./handlers.ts`, which is an
 * ES module.
 *
 * piscina loads its task module with `require()` and falls back to `import()`. On Node 20.19 and
 * later, `require()` of an ES module goes through Node's require(esm) loader; there, once in a full
 * test run, a thread whose action module failed to load aborted the whole process with a V8 fatal
 * error (`v8::Module::IsGraphAsync must be used on an instantiated module`, under piscina's
 * `require`). This file needs no such path: `require()` loads it as CommonJS, and it imports the
 * handlers with `import()` at once, as the thread starts. If they cannot load (an action module
 * that fails on a worker thread), every task on the thread fails with that error — the warm-up's
 * `ping` first, which fails start-up naming it.
 */
type Handlers = typeof import('./handlers.js');

const loading: Promise<Handlers> = import('./handlers.js');
// The error is every task's to report; unobserved until the first task, it is not unhandled.
loading.catch(() => undefined);

export default async function runHandler(task: Parameters<Handlers['default']>[0]): ReturnType<Handlers['default']> {
  return (await loading).default(task);
}

export async function decode(task: Parameters<Handlers['decode']>[0]): Promise<ReturnType<Handlers['decode']>> {
  return (await loading).decode(task);
}

export async function uploadViolation(task: Parameters<Handlers['uploadViolation']>[0]): Promise<ReturnType<Handlers['uploadViolation']>> {
  return (await loading).uploadViolation(task);
}

export async function ping(): Promise<boolean> {
  return (await loading).ping();
}
