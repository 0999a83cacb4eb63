/**
 * The extension: both actions on `STEADYBIT_EXTENSION_PORT` (default 8080), health probes on
 * `STEADYBIT_EXTENSION_HEALTH_PORT` (default 8081). Every other setting (log level and format,
 * TLS, thread counts, …) comes from the environment too; see the actionkit-runtime README.
 */
import { ConfigError, createExtension, RegistrationError } from 'actionkit-runtime';

/** The action modules, as URLs of their compiled files next to this one. */
const ACTIONS = [new URL('./actions/sha256-load.js', import.meta.url), new URL('./actions/prime-count.js', import.meta.url)];

try {
  const extension = await createExtension({ actions: ACTIONS });
  await extension.listen();
} catch (error) {
  // A configuration or description mistake: one line saying what is wrong, no stack trace.
  if (!(error instanceof ConfigError || error instanceof RegistrationError)) throw error;
  console.error(error.message);
  process.exit(1);
}
