/**
 * Logging with pino to stderr, as the reference (`STEADYBIT_LOG_LEVEL`, `STEADYBIT_LOG_FORMAT`,
 * `STEADYBIT_LOG_COLOR`).
 * Used on the main thread and on worker threads: both write synchronously to fd 2, so a worker's
 * log line never depends on the main thread's event loop and is not lost when a worker is killed.
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';
import type { ResolvedOptions } from './config.js';

export type { Logger } from 'pino';

/** What a logger needs; crosses to worker threads in `workerData`. */
export interface LogSettings {
  level: string;
  format: 'json' | 'text';
  /**
   * Colours in the text format. Decided once on the main thread: a worker thread's
   * `process.stderr` is never a terminal, though its log lines go to the same fd 2.
   */
  color: boolean;
}

/**
 * The log settings of resolved options. Colour unset: colours iff stderr is a terminal, as the
 * reference decides (`stderrIsTerminal` is for tests).
 */
export function logSettingsOf(options: Pick<ResolvedOptions, 'logLevel' | 'logFormat' | 'logColor'>, stderrIsTerminal = process.stderr.isTTY === true): LogSettings {
  return { level: options.logLevel, format: options.logFormat, color: options.logColor ?? stderrIsTerminal };
}

/** Fields that may carry credentials or raw request bodies. */
const REDACTED_PATHS = [
  'headers.authorization',
  'headers.cookie',
  'headers["proxy-authorization"]',
  'headers["set-cookie"]',
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["proxy-authorization"]',
  'res.headers["set-cookie"]',
  'err.body',
  'err.cause.body',
];

/** A logger writing to stderr in the configured format. */
export function createLogger(settings: LogSettings, bindings: Record<string, unknown> = {}): Logger {
  const stream =
    settings.format === 'json'
      ? pino.destination({ fd: 2, sync: true })
      : pretty({ destination: 2, sync: true, colorize: settings.color, translateTime: 'SYS:yyyy-mm-dd"T"HH:MM:ss.lo', ignore: 'pid,hostname', messageKey: 'message', singleLine: true });
  return pino(
    {
      level: settings.level,
      base: bindings,
      // Field names follow the reference's zerolog output: {"level":"info","time":…,"message":…}.
      messageKey: 'message',
      formatters: { level: (label) => ({ level: label }) },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Nothing logs these today; the redaction keeps a future `{ headers }` or `{ req }` field, or
      // a body-parser error (its `body` is the raw request), from writing credentials or bodies.
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    },
    stream,
  );
}
