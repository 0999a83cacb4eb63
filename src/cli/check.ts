/**
 * `actionkit check <url>`: runs {@link checkExtension} and prints a table (or `--json`); exit code
 * 1 when any row fails.
 */
import { readFileSync } from 'node:fs';
import type { JsonObject } from '../api/schemas.js';
import { checkExtension, type CheckOptions, type CheckReport } from '../testing/check.js';
import { nodeTransport, type NodeTransportOptions } from '../testing/node-transport.js';
import { durationOption, parseCommandLine, UsageError } from './usage.js';

const USAGE = `Usage: actionkit check <url> [options]

Checks the ActionKit extension at <url> (written with this runtime or not): the index and every
description against the spec's schemas, the registration rules, one agent-like run per action
with the parameters' default values (prepare, start, status, stop, metric queries; every answer
validated), the error answers to malformed JSON and unknown executions, and the DiscoveryKit
entries the index lists (each discovery described and run once, target types, attributes,
enrichment rules; advice and preflights must answer a JSON object).
Actions with required parameters that have no default are skipped unless --config/--file give them.

Options:
  --action <id>               Run only this action (all are still listed and described).
  --config <json>             JSON object merged over the default parameter values of each run.
  --file <name>=<path>        A file for the 'file' parameter <name> (repeatable).
  --duration <d>              How long each run may last before it is stopped (default 3s).
  --max-interval <d>          Poll status and metric queries at least this often (default 1s).
  --request-timeout <d>       Request-Timeout sent with every request (default 30s).
  --list-path <path>          Path of the index (default /).
  --unix-socket <path>        Connect to this unix domain socket (the URL then only gives the
                              scheme and Host header, e.g. http://localhost).
  --ca <file>                 PEM CA certificate(s) to trust for an https:// extension.
  --cert <file>, --key <file> PEM client certificate and key, for mutual TLS.
  --heartbeat                 Also check that the extension stops an execution whose agent went
                              silent (waits for the heartbeat timeout: about 21 s to 62 s).
  --heartbeat-timeout <d>     How long to stay silent before checking (default: the reference's
                              timeout for the status interval, plus 2s).
  --json                      Print one JSON object instead of the table.
  -h, --help                  Show this help.

Durations: 500ms, 3s, 1m, or a number of milliseconds. Exit code 0 when nothing failed, 1 when
a check failed, 2 for wrong arguments.
`;

/** Run `check`; resolves with the exit code. */
export async function runCheckCommand(argv: readonly string[]): Promise<number> {
  const parsed = parseCommandLine(
    argv,
    {
      action: { type: 'string' },
      config: { type: 'string' },
      file: { type: 'string', multiple: true },
      duration: { type: 'string' },
      'max-interval': { type: 'string' },
      'request-timeout': { type: 'string' },
      'list-path': { type: 'string' },
      'unix-socket': { type: 'string' },
      ca: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      heartbeat: { type: 'boolean' },
      'heartbeat-timeout': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    USAGE,
  );
  if (parsed === undefined) return 0;
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'check needs the URL of an extension' : `check takes one URL, got ${positionals.length}`, USAGE);
  const url = positionals[0]!;
  if (!URL.canParse(url)) throw new UsageError(`${JSON.stringify(url)} is not a URL (e.g. http://127.0.0.1:8080)`, USAGE);

  const options: CheckOptions = {};
  if (values.action !== undefined) options.actionId = values.action;
  if (values.config !== undefined) options.config = jsonObjectOption(values.config);
  if (values.file !== undefined) options.files = fileOptions(values.file);
  const runDurationMs = durationOption('duration', values.duration, USAGE);
  if (runDurationMs !== undefined) options.runDurationMs = runDurationMs;
  const maxIntervalMs = durationOption('max-interval', values['max-interval'], USAGE);
  if (maxIntervalMs !== undefined) options.maxIntervalMs = Math.max(1, maxIntervalMs);
  if (values.heartbeat === true) options.heartbeat = true;
  const heartbeatTimeoutMs = durationOption('heartbeat-timeout', values['heartbeat-timeout'], USAGE);
  if (heartbeatTimeoutMs !== undefined) options.heartbeatTimeoutMs = heartbeatTimeoutMs;
  const requestTimeoutMs = durationOption('request-timeout', values['request-timeout'], USAGE);
  options.client = {
    ...(requestTimeoutMs === undefined ? {} : { requestTimeoutMs: Math.max(1, requestTimeoutMs) }),
    ...(values['list-path'] === undefined ? {} : { listPath: values['list-path'] }),
  };
  const transport = transportOptions(values);
  if (transport !== undefined) options.client.fetch = nodeTransport(transport);

  const report = await checkExtension(url, options);
  process.stdout.write(values.json === true ? `${JSON.stringify(report, null, 2)}\n` : renderTable(report));
  return report.ok ? 0 : 1;
}

/** Socket and TLS options, read from their files; undefined when none is given (plain fetch). */
function transportOptions(values: { 'unix-socket'?: string; ca?: string; cert?: string; key?: string }): NodeTransportOptions | undefined {
  if (values['unix-socket'] === undefined && values.ca === undefined && values.cert === undefined && values.key === undefined) return undefined;
  if ((values.cert === undefined) !== (values.key === undefined)) throw new UsageError('--cert and --key go together', USAGE);
  const read = (option: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (error) {
      throw new UsageError(`--${option} ${JSON.stringify(path)}: ${(error as Error).message}`, USAGE);
    }
  };
  return {
    ...(values['unix-socket'] === undefined ? {} : { socketPath: values['unix-socket'] }),
    ...(values.ca === undefined ? {} : { ca: read('ca', values.ca) }),
    ...(values.cert === undefined ? {} : { cert: read('cert', values.cert) }),
    ...(values.key === undefined ? {} : { key: read('key', values.key) }),
  };
}

function jsonObjectOption(text: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (error) {
    throw new UsageError(`--config is not JSON: ${(error as Error).message}`, USAGE);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError('--config must be a JSON object', USAGE);
  return value as JsonObject;
}

function fileOptions(entries: readonly string[]): Record<string, string> {
  const files: Record<string, string> = {};
  for (const entry of entries) {
    const separator = entry.indexOf('=');
    if (separator <= 0 || separator === entry.length - 1) throw new UsageError(`--file ${JSON.stringify(entry)}: expected <parameter>=<path>`, USAGE);
    files[entry.slice(0, separator)] = entry.slice(separator + 1);
  }
  return files;
}

/** The report as an aligned table plus a summary line. */
export function renderTable(report: CheckReport): string {
  const nameWidth = Math.max(5, ...report.rows.map((row) => row.name.length));
  const lines = [`actionkit check ${report.url}`, '', `${'RESULT'.padEnd(6)}  ${'CHECK'.padEnd(nameWidth)}  DETAIL`];
  for (const row of report.rows) lines.push(`${row.status.toUpperCase().padEnd(6)}  ${row.name.padEnd(nameWidth)}  ${row.detail}`);
  const { pass, fail, skip } = report.counts;
  lines.push('', `${report.rows.length} checks: ${pass} passed, ${fail} failed, ${skip} skipped${report.ok ? '' : ' — FAILED'}`);
  return `${lines.join('\n')}\n`;
}
