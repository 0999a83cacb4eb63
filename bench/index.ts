/**
 * `npm run bench` — the runtime against its baselines, each pair measured in the same run.
 *
 *   npm run bench                       full size (the README's figures), charts into bench/charts
 *   npm run bench -- --quick            every scenario smaller (about a minute each at most on 2 cores)
 *   npm run bench -- --json             … and one JSON summary as the last line of stdout
 *   npm run bench -- --results          … and record the tables in bench/RESULTS.md and README.md
 *   npm run bench -- --only storm,scaling --seed 7 --charts <dir>
 *   npm run bench -- --only oversubscribed,cpuStorm   CPU bodies outnumbering the cores
 *   npm run bench -- --only hostileFlood     an agent's status and heartbeats under a flood of maximum-size bodies
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
import { quantile as quantileOf } from './stats.js';
import { cdf, chart } from './svg.js';
import { hostileFlood } from './scenarios/hostile-flood.js';
import { httpOverhead } from './scenarios/http-overhead.js';
import { oversubscribed } from './scenarios/oversubscribed.js';
import { responsiveness } from './scenarios/responsiveness.js';
import { scaling } from './scenarios/scaling.js';
import { stopLatency } from './scenarios/stop-latency.js';
import { cpuStorm, storm, type StormResult } from './scenarios/storm.js';
import type { BenchSize } from './scenarios/common.js';
import type { OversubscribedLevel, OversubscribedResult } from './scenarios/oversubscribed.js';
import type { ScalingPoint } from './scenarios/scaling.js';

const SCENARIOS = { storm, cpuStorm, stopLatency, responsiveness, oversubscribed, httpOverhead, scaling, hostileFlood } as const;
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

/** oversubscribed: status p99 with 8 × cores CPU-spinning bodies at most this multiple of the p99 without bodies. */
const STATUS_P99_OVER_IDLE_BAR = 10;
/**
 * oversubscribed: duty-cycled bodies burn what they add up to, within this range. Not 1.0: their
 * wall-clock bursts collide now and then (three bursts on two cores), ~0.9 measured; bodies left
 * waiting for threads would show ~1/3.
 */
const BURN_RATIO_BAR: [number, number] = [0.75, 1.25];
/** oversubscribed: 8 × cores spinners keep at least this share of the cores other processes left busy. */
const SATURATION_BAR = 0.9;
/** hostileFlood: the agent's status p99 while clients flood maximum-size bodies, at most this multiple of its quiet p99 (issue 11). */
const FLOOD_STATUS_P99_OVER_QUIET_BAR = 5;
/** storm: executions stopped per second at 10,000 executions, twice the 843/s of issue 12's run. */
const STORM_STOPS_PER_SEC_BAR = 1_700;

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
    `usage: npm run bench -- [--quick] [--json] [--results] [--only ${Object.keys(SCENARIOS).join(',')}] [--seed N] [--charts DIR]\n`,
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
  // Raw samples feed the charts; the summary keeps the figures.
  const { samples: _samples, ...latency } = results.stopLatency ?? { samples: undefined };
  const { samples: _statusSamples, ...oversubscribedFigures } = results.oversubscribed ?? { samples: undefined };
  const summary = {
    mode: size.quick ? 'quick' : 'full',
    seed: size.seed,
    machine,
    durationS: Math.round((performance.now() - benchStarted) / 1000),
    ...results,
    ...(results.stopLatency === undefined ? {} : { stopLatency: latency }),
    ...(results.oversubscribed === undefined ? {} : { oversubscribed: oversubscribedFigures }),
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
  for (const name of ['storm', 'cpuStorm'] as const) {
    const s = r[name];
    if (s === undefined) continue;
    add(name, 'duplicateStops', s.duplicateStops, '= 0', s.duplicateStops === 0, true);
    add(name, 'lostStops', s.lostStops, '= 0', s.lostStops === 0, true);
    add(name, 'http5xx', s.http5xx, '= 0', s.http5xx === 0, true);
  }
  // Issue 12: twice the 843 stops/s of the issue's run, at the full size (10,000 executions); the
  // quick storm's 1,000 executions drain too fast for a rate to mean much.
  if (r.storm && r.storm.executions >= 10_000) add('storm', 'stopsPerSec', r.storm.stopsPerSec, `≥ ${STORM_STOPS_PER_SEC_BAR}`, r.storm.stopsPerSec >= STORM_STOPS_PER_SEC_BAR);
  if (r.stopLatency) {
    add('stopLatency', 'sabP99Us', r.stopLatency.sabP99Us, '< 1000', r.stopLatency.sabP99Us < 1000);
    add('stopLatency', 'killOverSab', r.stopLatency.killOverSab, '≥ 10', r.stopLatency.killOverSab >= 10);
  }
  if (r.responsiveness) add('responsiveness', 'inlineOverRuntime', r.responsiveness.inlineOverRuntime, '≥ 10', r.responsiveness.inlineOverRuntime >= 10);
  const o = r.oversubscribed;
  if (o) {
    // Correctness: every execution asked for runs (no queue, no refusal below the cap), every request answered, every stop drained.
    add('oversubscribed', 'startFailures', o.startFailures, '= 0', o.startFailures === 0, true);
    add('oversubscribed', 'errors', o.errors, '= 0', o.errors === 0, true);
    add('oversubscribed', 'http5xx', o.http5xx, '= 0', o.http5xx === 0, true);
    add('oversubscribed', 'leftActive', o.leftActive, '= 0', o.leftActive === 0, true);
    // Speed: ratios within this run.
    add('oversubscribed', 'statusP99OverIdle', o.statusP99OverIdle, `≤ ${STATUS_P99_OVER_IDLE_BAR}`, o.statusP99OverIdle <= STATUS_P99_OVER_IDLE_BAR);
    add('oversubscribed', 'burnRatio', o.burnRatio, `${BURN_RATIO_BAR[0]}–${BURN_RATIO_BAR[1]}`, o.burnRatio >= BURN_RATIO_BAR[0] && o.burnRatio <= BURN_RATIO_BAR[1]);
    add('oversubscribed', 'saturation', o.saturation, `≥ ${SATURATION_BAR}`, o.saturation >= SATURATION_BAR);
    add('oversubscribed', 'bodiesKilled', o.bodiesKilled, '= 0', o.bodiesKilled === 0);
  }
  const http = r.httpOverhead;
  if (http) {
    // Issue 12: the HTTP path at bare-express speed, the main thread doing no more per request than express's.
    add('httpOverhead', 'runtimeOverExpress', http.runtimeOverExpress, '≥ 0.9', http.runtimeOverExpress >= 0.9);
    add('httpOverhead', 'mainCpuOverExpress', http.mainCpuOverExpress, '≤ 1', http.mainCpuOverExpress <= 1);
  }
  const h = r.hostileFlood;
  if (h) {
    // A healthy execution stopped under the flood is a bar, not a correctness figure (exit 2, not
    // 1): the correctness figures are the runtime's contract on any machine (a stop exactly once,
    // none lost, no 5xx). Whether an agent's heartbeats survive a flood depends on how long the
    // machine takes to digest the flood's bodies and on how the watchdog judges that silence — a
    // robustness target (issue 11) judged by the bench like the speed bars, so that a miss is
    // reported (exit 2) without being taken for a broken stop path (exit 1).
    add('hostileFlood', 'executionsStopped', h.executionsStopped, '= 0', h.executionsStopped === 0);
    add('hostileFlood', 'statusP99FloodOverQuiet', h.statusP99FloodOverQuiet, `≤ ${FLOOD_STATUS_P99_OVER_QUIET_BAR}`, h.statusP99FloodOverQuiet <= FLOOD_STATUS_P99_OVER_QUIET_BAR);
  }
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
  const stormRows = (name: 'storm' | 'cpuStorm', s: StormResult): void => {
    section(name, s, [
      'executions', 'stopRequests', 'stopHandlerCalls', 'duplicateStops', 'lostStops', 'http5xx', 'drainMs', 'stopsPerSec', 'mainCpuUsPerExecution', 'mainRunQueueUsPerExecution', 'processCpuUsPerExecution', 'loadCpuUsPerExecution', 'mainCpuUsPerRequest', 'processCpuUsPerRequest', 'stopP99Ms', 'statusP99Ms', 'statusRequests', 'heartbeatTimeouts', 'stealPct', 'idlePct',
    ]);
    if (name === 'cpuStorm') section(name, { ...s, bodiesKilled: s.bodies.killed }, ['cpuBodiesAtStorm', 'setupMs', 'rssMiB', 'bodiesKilled']);
    for (const [answer, count] of Object.entries(s.answers)) rows.push([name, `answer: ${answer}`, formatValue(count), '']);
    for (const problem of s.problems) rows.push([name, 'PROBLEM', problem, '']);
    const b = s.baselines;
    if (b === undefined) return;
    for (const [label, figures] of [['inline node:http', b.nodeHttp], ['inline express', b.express]] as const) {
      for (const key of [
        'drainMs', 'stopsPerSec', 'mainCpuUsPerExecution', 'mainRunQueueUsPerExecution', 'processCpuUsPerExecution', 'loadCpuUsPerExecution', 'mainCpuUsPerRequest', 'processCpuUsPerRequest', 'statusRequests', 'heartbeatTimeouts', 'stealPct', 'duplicateStops', 'lostStops', 'http5xx',
      ] as const) {
        rows.push([name, `${label}: ${key}`, formatValue(figures[key]), '']);
      }
      for (const problem of figures.problems) rows.push([name, 'PROBLEM', problem, '']);
    }
    section(name, b, ['stopsPerSecOverNodeHttp', 'stopsPerSecOverExpress']);
  };
  if (r.storm) stormRows('storm', r.storm);
  if (r.cpuStorm) stormRows('cpuStorm', r.cpuStorm);
  if (r.stopLatency) {
    section('stopLatency', r.stopLatency, [
      'sabP50Us', 'sabP99Us', 'killP50Us', 'killP99Us', 'killOverSab', 'postMessageObservedPct', 'postMessageP50Us', 'httpStopToObservedP50Us', 'httpStopToObservedP99Us',
    ]);
  }
  if (r.responsiveness) {
    section('responsiveness', r.responsiveness, ['runtimeStatusP50Ms', 'runtimeStatusP99Ms', 'inlineStatusP50Ms', 'inlineStatusP99Ms', 'inlineOverRuntime']);
  }
  if (r.oversubscribed) {
    const o = r.oversubscribed;
    const add = (figure: string, value: string): void => void rows.push(['oversubscribed', figure, value, barOf('oversubscribed', figure)]);
    const pair = (p50: number, p99: number): string => `p50 ${formatValue(p50)} / p99 ${formatValue(p99)} ms`;
    const idleRows = (i: OversubscribedResult['idle']): void => {
      add(`no bodies, nice ${i.nice}: status`, `${pair(i.statusP50Ms, i.statusP99Ms)} (${formatValue(i.statusRequests)} requests)`);
      if (!Number.isFinite(i.stopRoundTripP99Ms)) return;
      add(`no bodies, nice ${i.nice}: stop`, `round trip ${pair(i.stopRoundTripP50Ms, i.stopRoundTripP99Ms)} · stop → body observed ${pair(i.stopToObservedP50Ms, i.stopToObservedP99Ms)}`);
      add(`no bodies, nice ${i.nice}: server CPU`, `${formatValue(i.coresUsed)} cores (other processes ${formatValue(i.otherCores)})`);
    };
    const levelRows = (l: OversubscribedLevel): void => {
      const name = `${formatValue(l.bodies)} spinning (${l.perCore} × cores), nice ${l.nice}`;
      add(`${name}: start`, `${formatValue(l.bodies)} prepared + started in ${formatValue(l.startMs)} ms (${formatValue(l.msPerStart)} ms each, 32 in flight)`);
      add(`${name}: server CPU`, `${formatValue(l.coresUsed)} cores (other processes ${formatValue(l.otherCores)})`);
      add(`${name}: status`, `${pair(l.statusP50Ms, l.statusP99Ms)} (${formatValue(l.statusRequests)} requests)`);
      add(`${name}: stop`, `round trip ${pair(l.stopRoundTripP50Ms, l.stopRoundTripP99Ms)} · stop → body observed ${pair(l.stopToObservedP50Ms, l.stopToObservedP99Ms)}`);
      add(`${name}: drain`, `all stopped in ${formatValue(l.drainMs)} ms (${formatValue(l.msPerStop)} ms each, 32 in flight)`);
    };
    idleRows(o.idle);
    add('burn', `${formatValue(o.burn.executions)} bodies at ${o.burn.dutyPct}% duty: ${formatValue(o.burn.measuredCores)} cores (idle subtracted) for ${formatValue(o.burn.expectedCores)} expected (other processes ${formatValue(o.burn.otherCores)})`);
    for (const level of o.levels) levelRows(level);
    for (const run of o.niceRuns) {
      idleRows(run.idle);
      for (const level of run.levels) levelRows(level);
    }
    for (const key of ['statusP99OverIdle', 'stopRoundTripP99OverIdle', 'nice0OverNice10', 'nice19OverNice10', 'burnRatio', 'saturation', 'startFailures', 'errors', 'http5xx', 'leftActive', 'bodiesKilled'] as const) {
      add(key, formatValue(o[key]));
    }
  }
  if (r.httpOverhead) section('httpOverhead', r.httpOverhead, [
      'runtimeRps',
      'expressRps',
      'nodeHttpRps',
      'runtimeOverExpress',
      'runtimeP99Ms',
      'expressP99Ms',
      'runtimeCpuUsPerRequest',
      'expressCpuUsPerRequest',
      'runtimeMainCpuUsPerRequest',
      'expressMainCpuUsPerRequest',
      'nodeHttpMainCpuUsPerRequest',
      'mainCpuOverExpress',
    ]);
  for (const point of r.scaling ?? []) {
    rows.push(['scaling', `active ${formatValue(point.active)}`, `${formatValue(point.usPerStop)} µs/stop · ${point.watchdogUsPerScan} µs/scan · ${point.rssMiB} MiB RSS`, '']);
  }
  for (const bar of bars.filter((b) => b.scenario === 'scaling')) rows.push(['scaling', bar.figure, String(bar.value), `${bar.bar} ${bar.pass ? 'ok' : 'MISSED'}`]);
  if (r.hostileFlood) {
    const h = r.hostileFlood;
    const add = (figure: string, value: string): void => void rows.push(['hostileFlood', figure, value, barOf('hostileFlood', figure)]);
    const pair = (p50: number, p99: number): string => `p50 ${formatValue(p50)} / p99 ${formatValue(p99)} ms`;
    add('agent', `${h.executions} executions polled every ${h.statusIntervalMs} ms, heartbeat expiry ${formatValue(h.heartbeatExpiryMs / 1000)} s`);
    add('flood', `${h.clients} clients × ${formatValue(h.bodyBytes / 1_048_576)} MiB bodies for ${formatValue(h.windowMs / 1000)} s; last answered after ${formatValue(h.floodMs / 1000)} s`);
    add('quiet: status', `${pair(h.statusQuietP50Ms, h.statusQuietP99Ms)} (${formatValue(h.statusQuietRequests)} requests)`);
    add('flood: status', `${pair(h.statusFloodP50Ms, h.statusFloodP99Ms)}, max ${formatValue(h.statusFloodMaxMs)} ms (${formatValue(h.statusFloodRequests)} requests)`);
    add('statusP99FloodOverQuiet', formatValue(h.statusP99FloodOverQuiet));
    add('executionsStopped', formatValue(h.executionsStopped));
    for (const line of h.stopped) add('stopped', line);
    add('watchdog', `${formatValue(h.heartbeatTimeouts)} heartbeat timeouts; ${formatValue(h.mainStallsExcused)} main-thread stalls excused (${formatValue(h.mainExcusedMs)} ms)`);
    add('statusErrors', formatValue(h.statusErrors));
    add('event-loop delay max', `quiet ${formatValue(h.eventLoopDelayQuietMaxMs)} ms / flood ${formatValue(h.eventLoopDelayFloodMaxMs)} ms`);
    add('flood requests', `${formatValue(h.floodRequestsCompleted)} answered (${formatValue(h.floodRequestsPerSec)}/s), ${formatValue(h.floodRequestsFailed)} without an answer`);
    for (const [answer, count] of Object.entries(h.floodAnswers).sort()) add(`flood answer: ${answer}`, formatValue(count));
    add('server RSS', `peak ${formatValue(h.rssPeakQuietMiB)} MiB after quiet, ${formatValue(h.rssPeakMiB)} MiB after flood; ${formatValue(h.rssEndMiB)} MiB at the end`);
  }
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

/** The storm's same-run baselines for the headline table. */
function stormBaselineCell(s: StormResult): string {
  const b = s.baselines;
  if (b === undefined) return '—';
  const ratio = (value: number | null): string => (value === null ? 'no ratio: it did not stop every execution exactly once' : `runtime ÷ it: ${formatValue(value)}`);
  return `the same storm against its actions written inline on one thread: bare \`node:http\` ${formatValue(b.nodeHttp.stopsPerSec)}/s (${ratio(b.stopsPerSecOverNodeHttp)}; main-thread CPU per request ${formatValue(b.nodeHttp.mainCpuUsPerRequest)} µs against the runtime's ${formatValue(s.mainCpuUsPerRequest)}), express ${formatValue(b.express.stopsPerSec)}/s (${ratio(b.stopsPerSecOverExpress)}; ${formatValue(b.express.mainCpuUsPerRequest)} µs)`;
}

/** The README's headline table: each figure beside its same-run baseline and its bar. */
function headlineTable(r: Results, bars: Bar[]): string {
  const verdict = (scenario: ScenarioName, figures?: string[]): string =>
    bars
      .filter((b) => b.scenario === scenario && (figures === undefined || figures.includes(b.figure)))
      .map((b) => `${b.figure} ${formatValue(b.value)} (${b.bar}) ${b.pass ? '✅' : '❌'}`)
      .join('<br>');
  const rows: string[] = [];
  if (r.storm) {
    const s = r.storm;
    rows.push(
      `| stop storm: ${formatValue(s.executions)} executions (io bodies awaiting their stop) × 3 concurrent agent stops + status polling + SIGUSR1 + heartbeat expiry | author stop ran ${formatValue(s.stopHandlerCalls)}× for ${formatValue(s.executions)} executions; drained in ${formatValue(s.drainMs / 1000)} s (${formatValue(s.stopsPerSec)} executions stopped/s), stop p99 ${formatValue(s.stopP99Ms)} ms | ${stormBaselineCell(s)} | ${verdict('storm')} |`,
    );
  }
  if (r.cpuStorm) {
    const s = r.cpuStorm;
    rows.push(
      `| CPU stop storm: ${formatValue(s.executions)} CPU-spinning executions (a thread each, ${formatValue(s.executions / machine.cpus)} per core) × 3 concurrent agent stops + status polling + SIGUSR1 + heartbeat expiry | author stop ran ${formatValue(s.stopHandlerCalls)}× for ${formatValue(s.executions)} executions; drained in ${formatValue(s.drainMs / 1000)} s (${formatValue(s.stopsPerSec)} executions stopped/s), stop p99 ${formatValue(s.stopP99Ms)} ms, status p99 ${formatValue(s.statusP99Ms)} ms; ${formatValue(s.bodies.killed)} bodies killed | — | ${verdict('cpuStorm')} |`,
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
  if (r.oversubscribed) {
    const o = r.oversubscribed;
    const at8 = o.levels.find((l) => l.perCore === 8);
    const levelsOf = (nice: number): OversubscribedLevel[] => (nice === 10 ? o.levels : (o.niceRuns.find((n) => n.idle.nice === nice)?.levels ?? []));
    const byLevel = (nice: number, show: (l: OversubscribedLevel) => string): string => levelsOf(nice).map((l) => `${formatValue(l.bodies)} bodies: ${show(l)}`).join('; ');
    const statusOf = (l: OversubscribedLevel): string => `${formatValue(l.statusP50Ms)} / ${formatValue(l.statusP99Ms)} ms`;
    if (at8 !== undefined) {
      rows.push(
        `| status and agent stop while ${formatValue(at8.bodies)} CPU-spinning bodies (8 × cores) burn | status p50 ${formatValue(at8.statusP50Ms)} ms, p99 ${formatValue(at8.statusP99Ms)} ms; stop round trip p99 ${formatValue(at8.stopRoundTripP99Ms)} ms (stop → body observed p50 ${formatValue(at8.stopToObservedP50Ms)} ms) | no bodies, same server: status p50 ${formatValue(o.idle.statusP50Ms)} ms, p99 ${formatValue(o.idle.statusP99Ms)} ms; stop round trip p99 ${formatValue(o.idle.stopRoundTripP99Ms)} ms | ${verdict('oversubscribed', ['statusP99OverIdle', 'startFailures', 'errors', 'http5xx', 'leftActive'])} |`,
      );
      rows.push(
        `| prepare + start, then agent stops, of N CPU-spinning bodies (32 in flight) | ${o.levels.map((l) => `${formatValue(l.bodies)}: started in ${formatValue(l.startMs / 1000)} s (${formatValue(l.msPerStart)} ms each), drained in ${formatValue(l.drainMs / 1000)} s (${formatValue(l.msPerStop)} ms each)`).join('<br>')} | — | ${verdict('oversubscribed', ['bodiesKilled'])} |`,
      );
      rows.push(
        `| status p50 / p99 under CPU-spinning bodies by \`ACTIONKIT_BODY_NICE\` (the bodies beyond the cores) | 10 (default): ${byLevel(10, statusOf)} | 0: ${byLevel(0, statusOf)}<br>19: ${byLevel(19, statusOf)} | — (nice0OverNice10 ${formatValue(o.nice0OverNice10)}: p99 ratio, reported) |`,
      );
      rows.push(
        `| server CPU: do the bodies burn what they add up to? | ${formatValue(o.burn.executions)} bodies at ${o.burn.dutyPct}% duty: ${formatValue(o.burn.measuredCores)} cores for ${formatValue(o.burn.expectedCores)}; ${formatValue(at8.bodies)} spinning: ${formatValue(at8.coresUsed)} of ${formatValue(o.cores)} cores (other processes: ${formatValue(o.burn.otherCores)}, ${formatValue(at8.otherCores)}) | — | ${verdict('oversubscribed', ['burnRatio', 'saturation'])} |`,
      );
    }
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
  if (r.hostileFlood) {
    const h = r.hostileFlood;
    rows.push(
      `| an agent polling ${h.executions} executions (heartbeat expiry ${formatValue(h.heartbeatExpiryMs / 1000)} s) while ${h.clients} clients post ${formatValue(h.bodyBytes / 1_048_576)} MiB bodies | status p50 ${formatValue(h.statusFloodP50Ms)} ms, p99 ${formatValue(h.statusFloodP99Ms)} ms; ${formatValue(h.executionsStopped)} executions stopped; event-loop delay max ${formatValue(h.eventLoopDelayFloodMaxMs)} ms; RSS peak ${formatValue(h.rssPeakMiB)} MiB | no flood, same server: status p50 ${formatValue(h.statusQuietP50Ms)} ms, p99 ${formatValue(h.statusQuietP99Ms)} ms | ${verdict('hostileFlood')} |`,
    );
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
  if (r.oversubscribed) {
    const o = r.oversubscribed;
    const bodies = o.levels.find((l) => l.perCore === 8)?.bodies ?? 0;
    const colors: Record<string, string> = { 0: '#c0392b', 10: '#1b7f3b', 19: '#2c6fbb' };
    const series = [
      { name: `no bodies (p99 ${o.idle.statusP99Ms} ms)`, color: '#7f8c8d', points: cdf(o.samples.idle) },
      ...Object.entries(o.samples.byNice)
        .sort(([a], [b]) => Number(a) - Number(b))
        .map(([nice, samples]) => ({
          name: `${bodies} spinning bodies, nice ${nice}${Number(nice) === 10 ? ' (default)' : ''} (p99 ${formatValue(quantileOf(samples, 0.99))} ms)`,
          color: colors[nice] ?? '#8e44ad',
          points: cdf(samples),
        })),
    ];
    const svg = chart(
      [{ title: 'Status latency with CPU bodies outnumbering the cores', xLabel: 'status round trip (ms, log scale)', yLabel: 'share of requests (%)', xLog: true, yRange: [0, 100], series }],
      `${machine.cpus} cores, Node ${machine.node}; sequential status requests, one client`,
    );
    writeFileSync(join(dir, 'oversubscribed.svg'), svg);
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
