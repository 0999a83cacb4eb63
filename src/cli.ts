#!/usr/bin/env node
/**
 * `actionkit` — the runtime's command line:
 * - `actionkit serve <module...>` serves action modules without a hand-written main;
 * - `actionkit check <url>` checks any running ActionKit extension against the spec and the agent's
 *   expectations;
 * - `actionkit init <dir>` scaffolds an extension project that depends on this runtime.
 *
 * Exit codes: 0 success, 1 failure (start-up error, failed check), 2 usage error. `serve` keeps
 * running until a signal; the runtime then exits with 143 (SIGTERM) or 130 (SIGINT).
 */
import { UsageError } from './cli/usage.js';

const HELP = `Usage: actionkit <command> [options]

Commands:
  serve <module...>   Serve action modules (paths or file: URLs) as an extension.
                      Configured by the environment like createExtension
                      (STEADYBIT_EXTENSION_PORT, STEADYBIT_LOG_LEVEL, ACTIONKIT_*, ...).
  check <url>         Check a running ActionKit extension (any language): list,
                      descriptions, registration rules, one run per action with
                      default parameters, error answers; optionally the heartbeat.
  init <dir>          Create an extension project in <dir>: two actions, tests,
                      tsconfig, Dockerfile, README (--runtime picks the package).

Run 'actionkit <command> --help' for the options of a command.
`;

async function main(argv: readonly string[]): Promise<number | undefined> {
  const [command, ...rest] = argv;
  switch (command) {
    // Each command loads only its own modules: `init` and `check` need neither express nor the pools.
    case 'serve':
      return (await import('./cli/serve.js')).runServeCommand(rest);
    case 'check':
      return (await import('./cli/check.js')).runCheckCommand(rest);
    case 'init':
      return (await import('./cli/init.js')).runInitCommand(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(HELP);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`, HELP);
  }
}

try {
  const code = await main(process.argv.slice(2));
  // `serve` returns undefined: the extension keeps the process alive and exits on a signal.
  if (code !== undefined) process.exitCode = code;
} catch (error) {
  if (!(error instanceof UsageError)) throw error;
  process.stderr.write(`actionkit: ${error.message}\n\n${error.usage}`);
  process.exitCode = 2;
}
