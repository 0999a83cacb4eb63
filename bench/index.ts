/**
 * `npm run bench` — the runtime against its baselines, each pair measured in the same run.
 *
 *   npm run bench                       full size (the README's figures), charts into bench/charts
 *   npm run bench -- --quick            every scenario smaller (< 60 s on 2 cores)
 *   npm run bench -- --json             … and one JSON summary as the last line of stdout
 *   npm run bench -- --results          … and record the tables in bench/RESULTS.md and README.md
 *   npm run bench -- --only storm,scaling --seed 7 --charts <dir>
 *   BENCH_PROFILE_DIR=<dir> npm run bench -- --only httpOverhead   server threads under --cpu-prof
 *
 * Exit code: 1 when a correctness figure is violated (duplicate or lost stop, 5xx) or a scenario
 * fails; 2 when only a performance bar is missed; 0 otherwise. Progress goes to stderr.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cdf, chart } from './svg.js';
import { httpOverhead } from './scenarios/http-overhead.js';
import { responsiveness } from './scenarios/responsiveness.js';
import { scaling } from './scenarios/scaling.js';
import { stopLatency } from './scenarios/stop-latency.js';
import { storm } from './scenarios/storm.js';
import type { BenchSize } from './scenarios/common.js';
import type { ScalingPoint } from './scenarios/scaling.js';

const SCENARIOS = { storm, stopLatency, responsiveness, httpOverhead, scaling } as const;
type ScenarioName = keyof typeof SCENARIOS;
type Results = { [K in ScenarioName]?: Awaited<ReturnType<(typeof SCENARIOS)[K]>> };

interface Bar {
  scenario: ScenarioName;
  figure: string;
  value: number;
  bar: string;
  pass: boolean;
  /** Correctness (never tolerated) rather than speed. */
  correctness: boolean;
}

function usageError(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(1);
}

const OPTIONS = {
  quick: { type: 'boolean', default: false },
  json: { type: 'boolean', default: false },
  only: { type: 'string' },
  seed: { type: 'string' },
  charts: { type: 'string' },
  results: { type: 'boolean', default: false },
  help: { type: 'boolean', default: false },
} as const;

function parseCommandLine() {
  try {
    return parseArgs({ options: OPTIONS }).values;
  } catch (error) {
    return usageError(error instanceof Error ? error.message : String(error));
  }
}
const args = parseCommandLine();
if (args.help) {
  process.stdout.write(
    'usage: npm run bench -- [--quick] [--json] [--results] [--only storm,stopLatency,responsiveness,httpOverhead,scaling] [--seed N] [--charts DIR]\n',
  );
  process.exit(0);
}
const selected = (args.only?.split(',').map((s) => s.trim()) ?? Object.keys(SCENARIOS)) as ScenarioName[];
for (const name of selected) if (!(name in SCENARIOS)) usageError(`unknown scenario ${name}; known: ${Object.keys(SCENARIOS).join(', ')}`);
if (args.seed !== undefined && !/^\d+$/.test(args.seed)) usageError(`--seed must be a non-negative integer, got ${args.seed}`);
const size: BenchSize = { quick: args.quick, seed: args.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(args.seed) };
/** Full runs draw their charts into bench/charts; `--results` also records the tables in bench/RESULTS.md and the README. */
const chartsDir = args.charts ?? (args.quick ? undefined : fileURLToPath(new URL('../../bench/charts', import.meta.url)));
const resultsFile = fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url));
const readmeFile = fileURLToPath(new URL('../../README.md', import.meta.url));

const machine = {
  cpus: availableParallelism(),
  cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  platform: `${process.platform}-${process.arch}`,
};

const results: Results = {};
const failures: string[] = [];
const benchStarted = performance.now();
for (const name of selected) {
  const started = performance.now();
  process.stderr.write(`bench: ${name} (${size.quick ? 'quick' : 'full'}, seed ${size.seed}) …\n`);
  try {
    (results as Record<string, unknown>)[name] = await SCENARIOS[name](size);
  } catch (error) {
    failures.push(`${name}: ${error instanceof Error ? error.message : String(error)}`);
  }
  process.stderr.write(`bench: ${name} done in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
}

const bars = evaluateBars(results);
const rows = tableRows(results, bars);
printTable(rows);
if (chartsDir !== undefined) writeCharts(results, chartsDir);
if (args.results) {
  const machineLine = `${machine.cpus} cores (${machine.cpuModel}), ${machine.memoryGiB} GiB, Node ${machine.node}, ${machine.platform}`;
  writeBlock(resultsFile, 'results', markdownTable(rows));
  writeBlock(readmeFile, 'headline', `${headlineTable(results, bars)}\n\nMeasured ${new Date().toISOString().slice(0, 10)} on ${machineLine} with \`npm run bench -- --results${size.quick ? " --quick" : ""}\` (${size.quick ? "quick" : "full"} size, seed ${size.seed}); all figures in [bench/RESULTS.md](bench/RESULTS.md).`);
}
const correctnessViolated = failures.length > 0 || bars.some((b) => b.correctness && !b.pass);
const barsMissed = bars.some((b) => !b.correctness && !b.pass);
for (const failure of failures) process.stdout.write(`FAILED ${failure}\n`);
if (args.json) {
  const { samples: _samples, ...latency } = results.stopLatency ?? { samples: undefined };
  const summary = {
    mode: size.quick ? 'quick' : 'full',
    seed: size.seed,
    machine,
    durationS: Math.round((performance.now() - benchStarted) / 1000),
    ...results,
    ...(results.stopLatency === undefined ? {} : { stopLatency: latency }),
    bars,
    failures,
    ok: !correctnessViolated && !barsMissed,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}
process.exitCode = correctnessViolated ? 1 : barsMissed ? 2 : 0;

function evaluateBars(r: Results): Bar[] {
  const bars: Bar[] = [];
  const add = (scenario: ScenarioName, figure: string, value: number, bar: string, pass: boolean, correctness = false): void =>
    void bars.push({ scenario, figure, value, bar, pass, correctness });
  if (r.storm) {
    add('storm', 'duplicateStops', r.storm.duplicateStops, '= 0', r.storm.duplicateStops === 0, true);
    add('storm', 'lostStops', r.storm.lostStops, '= 0', r.storm.lostStops === 0, true);
    add('storm', 'http5xx', r.storm.http5xx, '= 0', r.storm.http5xx === 0, true);
  }
  if (r.stopLatency) {
    add('stopLatency', 'sabP99Us', r.stopLatency.sabP99Us, '< 1000', r.stopLatency.sabP99Us < 1000);
    add('stopLatency', 'killOverSab', r.stopLatency.killOverSab, '≥ 10', r.stopLatency.killOverSab >= 10);
  }
  if (r.responsiveness) add('responsiveness', 'inlineOverRuntime', r.responsiveness.inlineOverRuntime, '≥ 10', r.responsiveness.inlineOverRuntime >= 10);
  if (r.httpOverhead) add('httpOverhead', 'runtimeOverExpress', r.httpOverhead.runtimeOverExpress, '≥ 0.7', r.httpOverhead.runtimeOverExpress >= 0.7);
  const points = r.scaling ?? [];
  const from = points.find((p) => p.active === 1_000);
  const to = points.find((p) => p.active === 10_000);
  if (from && to) {
    const stopGrowth = to.usPerStop / from.usPerStop;
    const scanGrowth = to.watchdogUsPerScan / to.active / (from.watchdogUsPerScan / from.active);
    add('scaling', 'usPerStop growth 1k→10k', Number(stopGrowth.toFixed(2)), '< 2×', stopGrowth < 2);
    add('scaling', 'watchdog µs/scan/active growth 1k→10k', Number(scanGrowth.toFixed(2)), '< 2×', scanGrowth < 2);
  }
  return bars;
}

type Row = [scenario: string, figure: string, value: string, bar: string];

/** The results as table rows: every figure of every scenario, with its bar where it has one. */
function tableRows(r: Results, bars: Bar[]): Row[] {
  const rows: Row[] = [];
  const barOf = (scenario: string, figure: string): string => {
    const bar = bars.find((b) => b.scenario === scenario && b.figure === figure);
    return bar === undefined ? '' : `${bar.bar} ${bar.pass ? 'ok' : 'MISSED'}`;
  };
  const section = (scenario: ScenarioName, figures: object, keys: string[]): void => {
    for (const key of keys) rows.push([scenario, key, formatValue((figures as Record<string, unknown>)[key]), barOf(scenario, key)]);
  };
  if (r.storm) {
    section('storm', r.storm, [
      'executions', 'stopRequests', 'stopHandlerCalls', 'duplicateStops', 'lostStops', 'http5xx', 'drainMs', 'stopsPerSec', 'stopP99Ms', 'statusP99Ms', 'statusRequests', 'heartbeatTimeouts',
    ]);
    for (const [answer, count] of Object.entries(r.storm.answers)) rows.push(['storm', `answer: ${answer}`, formatValue(count), '']);
    for (const problem of r.storm.problems) rows.push(['storm', 'PROBLEM', problem, '']);
  }
  if (r.stopLatency) {
    section('stopLatency', r.stopLatency, [
      'sabP50Us', 'sabP99Us', 'killP50Us', 'killP99Us', 'killOverSab', 'postMessageObservedPct', 'postMessageP50Us', 'httpStopToObservedP50Us', 'httpStopToObservedP99Us',
    ]);
  }
  if (r.responsiveness) {
    section('responsiveness', r.responsiveness, ['runtimeStatusP50Ms', 'runtimeStatusP99Ms', 'inlineStatusP50Ms', 'inlineStatusP99Ms', 'inlineOverRuntime']);
  }
  if (r.httpOverhead) section('httpOverhead', r.httpOverhead, ['runtimeRps', 'expressRps', 'runtimeOverExpress', 'runtimeP99Ms', 'expressP99Ms', 'runtimeCpuUsPerRequest', 'expressCpuUsPerRequest']);
  for (const point of r.scaling ?? []) {
    rows.push(['scaling', `active ${formatValue(point.active)}`, `${formatValue(point.usPerStop)} µs/stop · ${point.watchdogUsPerScan} µs/scan · ${point.rssMiB} MiB RSS`, '']);
  }
  for (const bar of bars.filter((b) => b.scenario === 'scaling')) rows.push(['scaling', bar.figure, String(bar.value), `${bar.bar} ${bar.pass ? 'ok' : 'MISSED'}`]);
  return rows;
}

function printTable(rows: Row[]): void {
  const all: Row[] = [['scenario', 'figure', 'value', 'bar'], ...rows];
  const widths = [0, 1, 2, 3].map((i) => Math.max(...all.map((row) => row[i]!.length)));
  const line = (row: string[]): string => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd();
  process.stdout.write(`actionkit-runtime bench (${size.quick ? 'quick' : 'full'}, seed ${size.seed}) on ${machine.cpus} cores, Node ${machine.node}\n`);
  process.stdout.write(`${line(all[0]!)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const row of rows) process.stdout.write(`${line(row)}\n`);
}

/** The results as a markdown table (bench/RESULTS.md embeds it between markers). */
function markdownTable(rows: Row[]): string {
  const cell = (text: string): string => text.replace(/\|/g, '\\|');
  return [
    `Measured ${new Date().toISOString().slice(0, 10)} · ${size.quick ? 'quick' : 'full'} size · seed ${size.seed} · ${machine.cpus} cores (${machine.cpuModel}), ${machine.memoryGiB} GiB, Node ${machine.node}, ${machine.platform}`,
    '',
    '| scenario | figure | value | bar |',
    '|---|---|---|---|',
    ...rows.map((row) => `| ${row.map(cell).join(' | ')} |`),
  ].join('\n');
}

/** The README's headline table: each figure beside its same-run baseline and its bar. */
function headlineTable(r: Results, bars: Bar[]): string {
  const verdict = (scenario: ScenarioName): string =>
    bars
      .filter((b) => b.scenario === scenario)
      .map((b) => `${b.figure} ${formatValue(b.value)} (${b.bar}) ${b.pass ? '✅' : '❌'}`)
      .join('<br>');
  const rows: string[] = [];
  if (r.storm) {
    const s = r.storm;
    rows.push(
      `| stop storm: ${formatValue(s.executions)} CPU-burning executions × 3 concurrent agent stops + status polling + SIGUSR1 + heartbeat expiry | author stop ran ${formatValue(s.stopHandlerCalls)}× for ${formatValue(s.executions)} executions; drained in ${formatValue(s.drainMs / 1000)} s (${formatValue(s.stopsPerSec)} executions stopped/s), stop p99 ${formatValue(s.stopP99Ms)} ms | — | ${verdict('storm')} |`,
    );
  }
  if (r.stopLatency) {
    const l = r.stopLatency;
    rows.push(
      `| stop request → CPU-bound body stops | shared-memory stop word: p50 ${formatValue(l.sabP50Us)} µs, p99 ${formatValue(l.sabP99Us)} µs | piscina abort + respawn: p50 ${formatValue(l.killP50Us)} µs, p99 ${formatValue(l.killP99Us)} µs; postMessage to a busy worker: ${formatValue(l.postMessageObservedPct)}% seen within 1 s | ${verdict('stopLatency')} |`,
    );
  }
  if (r.responsiveness) {
    const x = r.responsiveness;
    rows.push(
      `| status p99 while ${x.burningBodies} bodies burn CPU | ${formatValue(x.runtimeStatusP99Ms)} ms | same action inline on the main thread (express alone): ${formatValue(x.inlineStatusP99Ms)} ms | ${verdict('responsiveness')} |`,
    );
  }
  if (r.httpOverhead) {
    const h = r.httpOverhead;
    rows.push(
      `| status requests/s, author status handler on a worker thread | ${formatValue(h.runtimeRps)}/s | bare express, same JSON: ${formatValue(h.expressRps)}/s | ${verdict('httpOverhead')} |`,
    );
  }
  const points = r.scaling ?? [];
  if (points.length > 0) {
    const describe = (p: ScalingPoint): string => `${formatValue(p.active)}: ${formatValue(p.usPerStop)} µs/stop, ${formatValue((p.watchdogUsPerScan * 1000) / p.active)} ns/execution/scan, ${formatValue(p.rssMiB)} MiB`;
    rows.push(`| cost as active executions grow | ${points.map(describe).join('<br>')} | itself | ${verdict('scaling')} |`);
  }
  return ['| scenario | actionkit-runtime | baseline, same run | bar |', '|---|---|---|---|', ...rows].join('\n');
}

/** Replace the text between `<!-- bench:<name>:begin/end -->` in `file` (or append the block) with `content`. */
function writeBlock(file: string, name: string, content: string): void {
  const begin = `<!-- bench:${name}:begin -->`;
  const end = `<!-- bench:${name}:end -->`;
  const current = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const block = `${begin}\n${content}\n${end}`;
  const from = current.indexOf(begin);
  const to = current.indexOf(end);
  const next = from >= 0 && to > from ? current.slice(0, from) + block + current.slice(to + end.length) : `${current}${current === '' ? '' : '\n'}${block}\n`;
  writeFileSync(file, next);
}

function formatValue(value: unknown): string {
  return typeof value === 'number' ? value.toLocaleString('en-US', { maximumFractionDigits: 2 }) : String(value);
}

function writeCharts(r: Results, dir: string): void {
  mkdirSync(dir, { recursive: true });
  if (r.stopLatency) {
    const { sab, kill, postMessage } = r.stopLatency.samples;
    const svg = chart(
      [
        {
          title: 'Stop request → CPU-bound body stops',
          xLabel: 'latency (µs, log scale)',
          yLabel: 'share of stops (%)',
          xLog: true,
          yRange: [0, 100],
          series: [
            { name: `SharedArrayBuffer stop word (p50 ${r.stopLatency.sabP50Us} µs)`, color: '#1b7f3b', points: cdf(sab) },
            { name: `piscina abort + respawn (p50 ${r.stopLatency.killP50Us} µs)`, color: '#c0392b', points: cdf(kill) },
            { name: `postMessage to busy worker (p50 ${r.stopLatency.postMessageP50Us} µs)`, color: '#7f8c8d', points: cdf(postMessage) },
          ],
        },
      ],
      `${machine.cpus} cores, Node ${machine.node}; ${sab.length} / ${kill.length} / ${postMessage.length} samples`,
    );
    writeFileSync(join(dir, 'stop-latency.svg'), svg);
  }
  const points = r.scaling ?? [];
  if (points.length > 0) {
    const svg = chart(
      [
        {
          title: 'Agent stop cost',
          xLabel: 'active executions (log scale)',
          yLabel: 'µs per stop (HTTP, 32 in flight)',
          xLog: true,
          yRange: [0, Math.max(...points.map((p) => p.usPerStop)) * 1.2],
          series: [{ name: 'µs per stop', color: '#2c6fbb', points: points.map((p) => [p.active, p.usPerStop]) }],
        },
        {
          title: 'Heartbeat watchdog scan cost',
          xLabel: 'active executions (log scale)',
          yLabel: 'ns per scan per active execution',
          xLog: true,
          yRange: [0, Math.max(...points.map((p) => (p.watchdogUsPerScan * 1000) / p.active)) * 1.2],
          series: [{ name: 'ns per execution per scan', color: '#8e44ad', points: points.map((p) => [p.active, (p.watchdogUsPerScan * 1000) / p.active]) }],
        },
      ],
      `${machine.cpus} cores, Node ${machine.node}; flat lines = cost per execution does not grow with the number of executions`,
    );
    writeFileSync(join(dir, 'scaling.svg'), svg);
  }
}
