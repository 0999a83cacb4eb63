#!/usr/bin/env node
/**
 * `actionkit` — the runtime's command line:
 * - `actionkit serve <module...>` serves action modules without a hand-written main;
 * - `actionkit check <url>` checks any running ActionKit extension against the spec and the agent's
 *   expectations.
 *
 * Exit codes: 0 success, 1 failure (start-up error, failed check), 2 usage error. `serve` keeps
 * running until a signal; the runtime then exits with 143 (SIGTERM) or 130 (SIGINT).
 */
import { runCheckCommand } from './cli/check.js';
import { UsageError } from './cli/usage.js';
import { runServeCommand } from './cli/serve.js';

const HELP = `Usage: actionkit <command> [options]

Commands:
  serve <module...>   Serve action modules (paths or file: URLs) as an extension.
                      Configured by the environment like createExtension
                      (STEADYBIT_EXTENSION_PORT, STEADYBIT_LOG_LEVEL, ACTIONKIT_*, ...).
  check <url>         Check a running ActionKit extension (any language): list,
                      descriptions, registration rules, one run per action with
                      default parameters, error answers; optionally the heartbeat.

Run 'actionkit <command> --help' for the options of a command.
`;

async function main(argv: readonly string[]): Promise<number | undefined> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return runServeCommand(rest);
    case 'check':
      return runCheckCommand(rest);
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
