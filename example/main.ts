/**
 * The example extension (`npm start`): four actions served on `STEADYBIT_EXTENSION_PORT` (default
 * 8080) with health probes on `STEADYBIT_EXTENSION_HEALTH_PORT` (default 8081). Every other setting
 * comes from the environment too (see the runtime's README), so this file only lists the actions.
 *
 * Actions are passed as module URLs, not imported: each worker thread imports them itself.
 */
import { createExtension } from 'actionkit-runtime';

const ACTIONS = ['cpu-stress', 'http-check', 'log-pattern-check', 'webhook'];

const extension = await createExtension({
  actions: ACTIONS.map((name) => new URL(`./actions/${name}.js`, import.meta.url)),
});
await extension.listen();
