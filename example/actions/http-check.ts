/**
 * HTTP check: calls a URL at a steady rate for a while and fails the experiment step when too few
 * answers carry an expected status code.
 *
 * The requests run in the execution's body, one metric per request; the body only awaits, so it
 * is an `io` body and shares a thread with other such bodies. `status` folds those metrics into
 * counts kept in the state, so the verdict needs no shared memory beyond what the runtime already
 * hands it.
 */
import { defineAction, z, type Metric } from 'actionkit-runtime/action';
import { durationMs, formatMs, formatPercent, httpUrl } from '../lib/params.js';
import { describeRanges, StatusCodes, type StatusRange } from '../lib/status-codes.js';

const RESPONSE_METRIC = 'http_check_response_time_ms';
/**
 * After `duration + timeout` the last request has ended one way or the other; a little more for
 * its report to travel. Status normally completes earlier, when the body returns.
 */
const SETTLE_MS = 1000;

const Config = z.object({
  duration: durationMs().default(10_000),
  url: httpUrl,
  expectedStatusCodes: z.string().default('200-299').pipe(StatusCodes),
  successRate: z.number().min(0).max(100).default(100),
  requestsPerSecond: z.number().int().min(1).max(50).default(1),
  timeout: durationMs().default(2_000),
});

interface State {
  url: string;
  durationMs: number;
  timeoutMs: number;
  intervalMs: number;
  expected: StatusRange[];
  successRate: number;
  startedAtMs: number;
  total: number;
  successes: number;
  /** Why the latest failed request failed (`status 500`, `timeout`, …). */
  lastFailure: string | null;
}

/** One request: its labels (status or error, outcome) and how long it took. */
async function probe(state: Readonly<State>, stop: AbortSignal): Promise<{ labels: Record<string, string>; ms: number }> {
  const sentAt = performance.now();
  try {
    const response = await fetch(state.url, { signal: AbortSignal.any([stop, AbortSignal.timeout(state.timeoutMs)]) });
    await response.arrayBuffer(); // the full answer counts, and a drained body frees the connection for reuse
    const ok = state.expected.some(([low, high]) => response.status >= low && response.status <= high);
    return { labels: { url: state.url, status: String(response.status), outcome: ok ? 'success' : 'failure' }, ms: performance.now() - sentAt };
  } catch (error) {
    const cause = (error as { cause?: { code?: unknown } }).cause;
    const name = error instanceof Error && error.name === 'TimeoutError' ? 'timeout' : typeof cause?.code === 'string' ? cause.code : String(error);
    return { labels: { url: state.url, error: name, outcome: 'failure' }, ms: performance.now() - sentAt };
  }
}

export default defineAction({
  description: {
    id: 'com.example.actionkit.http-check',
    label: 'HTTP check',
    version: '1.0.0',
    description: 'Calls an HTTP endpoint repeatedly and fails when the share of answers with an expected status code drops below the required success rate.',
    kind: 'check',
    category: 'network',
    technology: 'HTTP',
    timeControl: 'internal',
    parameters: [
      { name: 'duration', label: 'Duration', type: 'duration', defaultValue: '10s', required: true },
      { name: 'url', label: 'URL', type: 'url', required: true, description: 'The http:// or https:// URL to call with GET.' },
      {
        name: 'expectedStatusCodes',
        label: 'Expected status codes',
        type: 'string',
        defaultValue: '200-299',
        description: 'Comma-separated codes and ranges, e.g. `200-299, 404`.',
      },
      { name: 'successRate', label: 'Required success rate', type: 'percentage', defaultValue: '100', minValue: 0, maxValue: 100 },
      {
        name: 'requestsPerSecond',
        label: 'Requests per second',
        type: 'integer',
        defaultValue: '1',
        minValue: 1,
        maxValue: 50,
        advanced: true,
        description: 'Requests are sent one after another, so a slow endpoint lowers the actual rate.',
      },
      { name: 'timeout', label: 'Request timeout', type: 'duration', defaultValue: '2s', advanced: true },
    ],
    status: { callInterval: '1s' },
    widgets: [
      {
        type: 'com.steadybit.widget.line_chart',
        title: 'HTTP responses',
        identity: { metricName: RESPONSE_METRIC, from: 'url', mode: 'com.steadybit.widget.line_chart.identity_mode.select' },
        grouping: {
          showSummary: true,
          groups: [
            { title: 'Expected', color: 'success', matcher: { type: 'com.steadybit.widget.line_chart.group_matcher_key_equals_value', key: 'outcome', value: 'success' } },
            { title: 'Unexpected', color: 'warn', matcher: { type: 'com.steadybit.widget.line_chart.group_matcher_key_equals_value', key: 'outcome', value: 'failure' } },
          ],
        },
        tooltip: { metricValueTitle: 'Response time', metricValueUnit: 'ms', additionalContent: [{ title: 'Status', from: 'status' }, { title: 'Error', from: 'error' }] },
      },
    ],
  },
  config: Config,

  prepare({ config }) {
    const state: State = {
      url: config.url,
      durationMs: config.duration,
      timeoutMs: config.timeout,
      intervalMs: 1000 / config.requestsPerSecond,
      expected: config.expectedStatusCodes,
      successRate: config.successRate,
      startedAtMs: 0,
      total: 0,
      successes: 0,
      lastFailure: null,
    };
    return { state };
  },

  start(state) {
    state.startedAtMs = Date.now();
  },

  // The body only awaits (requests and pauses): it shares an io thread with other bodies.
  bodyKind: 'io',
  async body(state, ctx) {
    const deadlineMs = state.startedAtMs + state.durationMs;
    while (!ctx.shouldStop() && Date.now() < deadlineMs) {
      const sentAt = performance.now();
      const { labels, ms } = await probe(state, ctx.signal);
      // A request cut short by our own stop says nothing about the target: do not count it.
      if (ctx.shouldStop()) return;
      ctx.report({ metrics: [{ name: RESPONSE_METRIC, metric: labels, value: Number(ms.toFixed(2)) }] });
      ctx.progress(Math.min(state.durationMs, Date.now() - state.startedAtMs));
      const waitMs = Math.min(state.intervalMs - (performance.now() - sentAt), deadlineMs - Date.now());
      if (waitMs > 0 && (await ctx.sleepAsync(waitMs))) return;
    }
  },

  status(state, ctx) {
    for (const metric of ctx.body.reports?.metrics ?? []) count(state, metric);
    const elapsedMs = Date.now() - state.startedAtMs;
    // Completed once the body returned: the runtime delivers every report before status sees
    // `returned`, so the counts are final. The time bound only covers a body that hangs.
    const completed = ctx.body.phase === 'returned' || elapsedMs >= state.durationMs + state.timeoutMs + SETTLE_MS;
    const rate = state.total === 0 ? 0 : state.successes / state.total;
    const expectedTotal = Math.max(1, Math.round(state.durationMs / state.intervalMs));
    const progress = `${state.total}/${expectedTotal} requests, ${formatPercent(rate)} ok, ${formatPercent(Math.min(1, elapsedMs / state.durationMs))} of ${formatMs(state.durationMs)} elapsed`;
    if (!completed) return { completed: false, messages: [{ message: progress, level: 'debug' }] };
    if (state.total === 0 || rate * 100 < state.successRate) {
      const got = state.total === 0 ? 'no request completed' : `${formatPercent(rate)} of ${state.total} requests succeeded`;
      return {
        completed: true,
        error: {
          title: `HTTP check failed: ${got}, required ${state.successRate}%`,
          detail: `${state.url}: expected status ${describeRanges(state.expected)}${state.lastFailure === null ? '' : `; last failure: ${state.lastFailure}`}`,
          status: 'failed',
        },
      };
    }
    return { completed: true, messages: [{ message: `HTTP check passed: ${progress}` }] };
  },

  stop(state) {
    const rate = state.total === 0 ? 0 : state.successes / state.total;
    const passed = state.total > 0 && rate * 100 >= state.successRate;
    return {
      summary: {
        text: `${state.url}: ${state.successes}/${state.total} requests answered as expected (${formatPercent(rate)}, required ${state.successRate}%)`,
        level: passed ? 'info' : 'warning',
      },
    };
  },
});

/** Fold one reported metric into the counts. */
function count(state: State, metric: Metric): void {
  if (metric.name !== RESPONSE_METRIC) return;
  state.total++;
  if (metric.metric['outcome'] === 'success') state.successes++;
  else state.lastFailure = metric.metric['error'] ?? `status ${metric.metric['status'] ?? '?'}`;
}
