/**
 * The example extension (`npm start`): four actions and a host discovery (see `extension.ts`)
 * served on `STEADYBIT_EXTENSION_PORT` (default 8080) with health probes on
 * `STEADYBIT_EXTENSION_HEALTH_PORT` (default 8081). Every other setting comes from the environment
 * too (see the README).
 */
import { ConfigError, createExtension, RegistrationError } from 'actionkit-runtime';
import { exampleOptions } from './extension.js';

try {
  const extension = await createExtension(exampleOptions());
  await extension.listen();
} catch (error) {
  // A configuration or description mistake: say what is wrong, without a stack trace.
  if (!(error instanceof ConfigError || error instanceof RegistrationError)) throw error;
  console.error(error.message);
  process.exit(1);
}
