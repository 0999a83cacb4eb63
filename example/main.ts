/**
 * The example extension (`npm start`): four actions served on `STEADYBIT_EXTENSION_PORT` (default
 * 8080) with health probes on `STEADYBIT_EXTENSION_HEALTH_PORT` (default 8081). Every other setting
 * comes from the environment too (see the README), so this file only lists the actions.
 *
 * Actions are passed as module URLs, not imported: each worker thread imports them itself.
 */
import { ConfigError, createExtension, RegistrationError } from 'actionkit-runtime';

const ACTIONS = ['cpu-stress', 'http-check', 'log-pattern-check', 'webhook'];

try {
  const extension = await createExtension({
    actions: ACTIONS.map((name) => new URL(`./actions/${name}.js`, import.meta.url)),
  });
  await extension.listen();
} catch (error) {
  // A configuration or description mistake: say what is wrong, without a stack trace.
  if (!(error instanceof ConfigError || error instanceof RegistrationError)) throw error;
  console.error(error.message);
  process.exit(1);
}
