/** Command-line usage errors and option parsing shared by the `actionkit` commands. */
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
