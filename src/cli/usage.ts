/** Command-line usage errors and option parsing shared by the `actionkit` commands. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { parseDurationMs } from '../api/description.js';

/** Wrong arguments: printed with the command's usage, exit code 2. */
export class UsageError extends Error {
  /** The usage text of the command. */
  readonly usage: string;

  constructor(message: string, usage: string) {
    super(message);
    this.name = 'UsageError';
    this.usage = usage;
  }
}

/**
 * A duration option in milliseconds: the spec's form (`500ms`, `3s`, `1m`) or a bare number of
 * milliseconds.
 */
export function durationOption(name: string, value: string | undefined, usage: string): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  try {
    return parseDurationMs(text);
  } catch {
    throw new UsageError(`--${name} ${JSON.stringify(value)}: expected a duration such as 500ms, 3s or 1m`, usage);
  }
}

/** The options of a command, for {@link parseCommandLine}. */
type CommandOptions = NonNullable<ParseArgsConfig['options']>;
/** What `parseArgs` returns for a command with positionals and `options`. */
type CommandLine<O extends CommandOptions> = ReturnType<typeof parseArgs<{ args: string[]; allowPositionals: true; options: O }>>;

/**
 * Parse a command's arguments (positionals allowed). A parse error is a {@link UsageError} with
 * the command's usage; `--help` (an option every command declares as `help`) prints the usage and
 * returns undefined, which the command answers with exit code 0.
 */
export function parseCommandLine<O extends CommandOptions>(argv: readonly string[], options: O, usage: string): CommandLine<O> | undefined {
  let parsed: CommandLine<O>;
  try {
    parsed = parseArgs({ args: [...argv], allowPositionals: true, options });
  } catch (error) {
    throw new UsageError((error as Error).message, usage);
  }
  if ((parsed.values as { help?: unknown }).help === true) {
    process.stdout.write(usage);
    return undefined;
  }
  return parsed;
}
