/**
 * What the example extension serves: four actions, and a discovery of the host it runs on next to
 * them (its index entries and its router). `main.ts` serves it; the tests serve the same.
 *
 * Actions are passed as module URLs, not imported: each worker thread imports them itself. The
 * discovery's router runs on the HTTP thread and is passed as an object.
 */
import type { ExtensionOptions } from 'actionkit-runtime';
import { hostDiscovery } from './discovery/host.js';

/** The example actions' module names under `./actions/`. */
export const EXAMPLE_ACTIONS = ['cpu-stress', 'http-check', 'log-pattern-check', 'webhook'] as const;

/** The options of the example extension; every other setting comes from the environment (see the README). */
export function exampleOptions(): ExtensionOptions {
  return {
    actions: EXAMPLE_ACTIONS.map((name) => new URL(`./actions/${name}.js`, import.meta.url)),
    index: hostDiscovery.index,
    routers: [hostDiscovery.router],
  };
}
