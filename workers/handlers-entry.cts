/**
 * piscina's task module on both handler lanes: a CommonJS file in front of the ES module
 * `./handlers.ts`.
 *
 * Why not the ES module itself: piscina loads its task module with `require()` first. On Node
 * 20.19 and later that runs Node's require(esm) loader, which instantiates the module graph
 * synchronously; a thread terminated during that step (the pool destroyed by a failed start-up
 * while piscina was booting the replacement of a thread that failed) aborts the whole process
 * with a V8 fatal error, `v8::Module::IsGraphAsync must be used on an instantiated module`: Node
 * asks the graph of a module whose instantiation was cut short. `require()` loads this file as
 * plain CommonJS, and it loads the handlers with `import()`, which has no such step.
 *
 * Invariant: a thread reports ready only once the handlers have loaded, and a thread whose
 * handlers fail to load dies with their error, never living on to fail every task. piscina
 * awaits the task module's export before it reports the thread ready, so each export here is a
 * promise of one handler. The module's value is itself the promise of the default handler: when
 * `require()`'s path fails, piscina falls back to `import()` of this file, whose default export
 * (a CommonJS module's value) is then that same promise, and the load error ends that path too.
 */
type Handlers = typeof import('./handlers.js');
/** The handlers piscina calls by name (`src/pool.ts`). */
type Exported = 'default' | 'decode' | 'uploadViolation' | 'ping';
// A function added to `handlers.ts` must be exported here too: this fails to compile until it is.
const everyHandlerExported: Record<Exclude<keyof Handlers, Exported>, never> = {};
void everyHandlerExported;

const loading: Promise<Handlers> = import('./handlers.js');

/** The promise of one handler; marked handled, as piscina awaits only the ones it calls. */
function handler<K extends Exported>(name: K): Promise<Handlers[K]> {
  const loaded = loading.then((handlers) => handlers[name]);
  loaded.catch(() => undefined);
  return loaded;
}

export = Object.assign(handler('default'), {
  decode: handler('decode'),
  uploadViolation: handler('uploadViolation'),
  ping: handler('ping'),
});
