/**
 * Log pattern check: scans an uploaded log file with a regular expression and fails when more
 * lines match than allowed — e.g. "no FATAL in the log we captured during the experiment".
 *
 * Scanning is CPU-bound, so it runs in the body on its own thread, reading the file in chunks (a
 * 100 MB upload never sits in memory at once) and checking for a stop every few thousand lines.
 * A pathological pattern that backtracks forever on one line never reaches the next check; the
 * runtime then terminates the body's thread after its stop grace period.
 * The runtime removes the uploaded file when the execution stops.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { defineAction, ExtensionError, z } from 'actionkit-runtime/action';

const MATCHES_METRIC = 'log_pattern_matches';
const LINES_METRIC = 'log_pattern_lines_scanned';
const CHUNK_BYTES = 256 * 1024;
/** Lines between two stop checks: a few hundred microseconds of regex work. */
const LINES_PER_CHECK = 4096;
/** Matching lines sent as messages, so the user sees what matched without opening the file. */
const MAX_SAMPLES = 10;
const MAX_SAMPLE_CHARS = 300;

const Config = z.object({
  logFile: z.string().min(1, { error: 'upload a log file' }),
  pattern: z
    .string()
    .min(1)
    .default('ERROR|FATAL')
    .refine((source) => compiles(source), { error: 'not a valid JavaScript regular expression' }),
  maxMatches: z.number().int().min(0).default(0),
});

interface State {
  logFile: string;
  fileName: string;
  pattern: string;
  maxMatches: number;
  /** From the body's final report; null until it arrived. */
  matches: number | null;
  lines: number | null;
}

function compiles(source: string): boolean {
  try {
    new RegExp(source);
    return true;
  } catch {
    return false;
  }
}

export default defineAction({
  description: {
    id: 'com.example.actionkit.log-pattern-check',
    label: 'Log pattern check',
    version: '1.0.0',
    description: 'Scans an uploaded log file line by line with a regular expression and fails when more lines match than allowed.',
    kind: 'check',
    category: 'observability',
    technology: 'Node.js',
    timeControl: 'internal',
    parameters: [
      { name: 'logFile', label: 'Log file', type: 'file', required: true, acceptedFileTypes: ['.log', '.txt', 'text/plain'] },
      { name: 'pattern', label: 'Pattern', type: 'regex', defaultValue: 'ERROR|FATAL', required: true, description: 'JavaScript regular expression, tested against each line.' },
      { name: 'maxMatches', label: 'Allowed matching lines', type: 'integer', defaultValue: '0', minValue: 0 },
    ],
    status: { callInterval: '1s' },
  },
  config: Config,

  async prepare({ config }) {
    const info = await stat(config.logFile);
    if (!info.isFile()) throw new ExtensionError('Log file is not a regular file', { detail: config.logFile });
    const state: State = {
      logFile: config.logFile,
      fileName: basename(config.logFile),
      pattern: config.pattern,
      maxMatches: config.maxMatches,
      matches: null,
      lines: null,
    };
    return { state, messages: [{ message: `Will scan ${state.fileName} (${info.size} bytes) for /${state.pattern}/` }] };
  },

  body(state, ctx) {
    const regex = new RegExp(state.pattern);
    const samples: string[] = [];
    let lines = 0;
    let matches = 0;
    let stopped = false;
    const scan = (raw: string): void => {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      lines++;
      if (regex.test(line)) {
        matches++;
        if (samples.length < MAX_SAMPLES) samples.push(`line ${lines}: ${line.slice(0, MAX_SAMPLE_CHARS)}`);
      }
      if (lines % LINES_PER_CHECK === 0 && ctx.shouldStop()) stopped = true;
    };

    const fd = openSync(state.logFile, 'r');
    try {
      const sizeBytes = fstatSync(fd).size;
      const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
      const decoder = new StringDecoder('utf8'); // keeps multi-byte characters split across chunks intact
      let readBytes = 0;
      let carry = '';
      while (!stopped) {
        const n = readSync(fd, chunk, 0, CHUNK_BYTES, null);
        if (n === 0) break;
        readBytes += n;
        const parts = (carry + decoder.write(chunk.subarray(0, n))).split('\n');
        carry = parts.pop() ?? '';
        for (const part of parts) {
          scan(part);
          if (stopped) break;
        }
        ctx.progress(sizeBytes === 0 ? 1000 : Math.min(1000, Math.floor((readBytes * 1000) / sizeBytes)));
      }
      const last = carry + decoder.end();
      if (!stopped && last !== '') scan(last);
      if (!stopped) ctx.progress(1000);
    } finally {
      closeSync(fd);
    }

    const labels = { file: state.fileName, pattern: state.pattern, scan: stopped ? 'partial' : 'complete' };
    ctx.report({
      messages: samples.map((message) => ({ message, level: 'warn' as const, fields: { file: state.fileName } })),
      metrics: [
        { name: MATCHES_METRIC, metric: labels, value: matches },
        { name: LINES_METRIC, metric: labels, value: lines },
      ],
    });
  },

  status(state, ctx) {
    for (const metric of ctx.body.reports?.metrics ?? []) {
      if (metric.name === MATCHES_METRIC) state.matches = metric.value;
      if (metric.name === LINES_METRIC) state.lines = metric.value;
    }
    // `returned` is only reported once every report of the body was delivered, so the result is in.
    if (ctx.body.phase !== 'returned') {
      return { completed: false, messages: [{ message: `Scanning ${state.fileName}: ${ctx.body.progress / 10}% read`, level: 'debug' }] };
    }
    if (state.matches === null) throw new ExtensionError('Log scan ended without a result', { detail: 'the scan reported no match count' });
    const found = `${state.matches} of ${state.lines} lines in ${state.fileName} match /${state.pattern}/`;
    if (state.matches > state.maxMatches) {
      return { completed: true, error: { title: `Log pattern check failed: ${found}`, detail: `at most ${state.maxMatches} allowed`, status: 'failed' } };
    }
    return { completed: true, messages: [{ message: `Log pattern check passed: ${found} (at most ${state.maxMatches} allowed)` }] };
  },

  // Required for file parameters anyway: the runtime deletes the uploaded file after this.
  stop(state) {
    if (state.matches === null) return { summary: { text: `Scan of ${state.fileName} did not finish`, level: 'warning' } };
    return {
      summary: {
        text: `${state.fileName}: ${state.matches} matching lines of ${state.lines} (at most ${state.maxMatches} allowed)`,
        level: state.matches > state.maxMatches ? 'warning' : 'info',
      },
    };
  },
});
