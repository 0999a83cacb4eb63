/**
 * `actionkit serve <module...>`: what `example/main.ts` does, for any action modules: create the
 * extension from the environment, listen, and let the runtime handle signals. A configuration or
 * description mistake (or a module that cannot be loaded) is one clear line on stderr and exit 1.
 */
import { resolve } from 'node:path';
import { createExtension, type Extension } from '../extension.js';
import { parseCommandLine, UsageError } from './usage.js';

const USAGE = `Usage: actionkit serve <module...>

Serves the action modules (absolute or relative paths, or file: URLs; each module's default
export is defineAction({...}) or an array of them) as one ActionKit extension.

Configuration comes from the environment, as for createExtension():
  STEADYBIT_EXTENSION_PORT (default 8080), STEADYBIT_EXTENSION_HEALTH_PORT (default 8081),
  STEADYBIT_LOG_LEVEL, STEADYBIT_LOG_FORMAT, and the ACTIONKIT_* settings.
SIGTERM/SIGINT stop every execution and exit 143/130; SIGUSR1 stops every execution and keeps serving.

Options:
  -h, --help   Show this help.
`;

/** Run `serve`; resolves with an exit code on failure, undefined once listening. */
export async function runServeCommand(argv: readonly string[]): Promise<number | undefined> {
  const parsed = parseCommandLine(argv, { help: { type: 'boolean', short: 'h' } }, USAGE);
  if (parsed === undefined) return 0;
  if (parsed.positionals.length === 0) throw new UsageError('serve needs at least one action module', USAGE);
  // Relative paths are relative to where the command runs (the runtime itself refuses them,
  // because worker threads could resolve them differently).
  const actions = parsed.positionals.map((module) => (/^[a-z][a-z0-9+.-]*:/i.test(module) && !/^[a-z]:[\\/]/i.test(module) ? module : resolve(module)));
  let extension: Extension;
  try {
    extension = await createExtension({ actions });
  } catch (error) {
    // ConfigError, RegistrationError, a module that fails to load: the message says what is wrong.
    return startupFailure(error);
  }
  try {
    await extension.listen();
    return undefined;
  } catch (error) {
    // E.g. the port is in use: end the worker threads, or they would keep the process alive.
    await extension.close();
    return startupFailure(error);
  }
}

function startupFailure(error: unknown): number {
  process.stderr.write(`actionkit serve: ${error instanceof Error ? error.message : String(error)}\n`);
  return 1;
}
