/**
 * `GET /metrics` on the probes' port, over real HTTP with real worker threads: every scrape is
 * checked line by line against the Prometheus text format (a strict parser below, since
 * prom-client ships none), then exact values are asserted after driving executions through a
 * normal lifecycle, a failing author stop, a heartbeat expiry and a killed body.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { get } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { eventually, fixture, start, tempDir, type Running } from '../support/harness.js';

const ACTION = 'fixture.behave';

/** One sample line. */
interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** A parsed scrape: samples by metric name, and the declared type of every family. */
interface Scrape {
  samples: Map<string, Sample[]>;
  types: Map<string, string>;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = `[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*"`;
const SAMPLE_LINE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,${LABEL})*)?\\})? (-?(?:\\d+(?:\\.\\d+)?(?:[eE][+-]?\\d+)?)|NaN|\\+Inf|-Inf)$`);
const HELP_LINE = new RegExp(`^# HELP (${NAME}) .*$`);
const TYPE_LINE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);

/**
 * Parse the text exposition format strictly: every line is HELP, TYPE or a sample; every sample
 * belongs to a family declared by a TYPE line before it; counters end in `_total`; histogram
 * buckets are cumulative and their `+Inf` bucket equals `_count`.
 */
function parseExposition(text: string): Scrape {
  const samples = new Map<string, Sample[]>();
  const types = new Map<string, string>();
  assert.ok(text.endsWith('\n'), 'the exposition ends with a newline');
  for (const line of text.slice(0, -1).split('\n')) {
    if (line === '') continue;
    const type = TYPE_LINE.exec(line);
    if (type !== null) {
      assert.equal(types.has(type[1]!), false, `family ${type[1]} declared twice`);
      types.set(type[1]!, type[2]!);
      if (type[2] === 'counter') assert.match(type[1]!, /_total$/, `counter ${type[1]} ends in _total`);
      continue;
    }
    if (HELP_LINE.test(line)) continue;
    const match = SAMPLE_LINE.exec(line);
    assert.ok(match !== null, `not a valid exposition line: ${line}`);
    const name = match[1]!;
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    assert.ok(types.has(family), `sample ${name} has no TYPE line before it`);
    if (family !== name) assert.equal(types.get(family), 'histogram', `${name} belongs to a histogram`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').match(new RegExp(LABEL, 'g')) ?? []) {
      const eq = pair.indexOf('=');
      labels[pair.slice(0, eq)] = pair.slice(eq + 2, -1);
    }
    const value = match[3] === '+Inf' ? Infinity : match[3] === '-Inf' ? -Infinity : Number(match[3]);
    samples.set(name, [...(samples.get(name) ?? []), { labels, value }]);
  }
  for (const [family, type] of types) {
    if (type !== 'histogram') continue;
    for (const count of samples.get(`${family}_count`) ?? []) {
      const buckets = (samples.get(`${family}_bucket`) ?? []).filter((b) => sameLabels(withoutLe(b.labels), count.labels));
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `${family} buckets are cumulative`);
      assert.equal(buckets.at(-1)?.labels['le'], '+Inf', `${family} ends with the +Inf bucket`);
      assert.equal(buckets.at(-1)?.value, count.value, `${family} +Inf bucket equals _count`);
    }
  }
  return { samples, types };
}

function withoutLe(labels: Record<string, string>): Record<string, string> {
  const { le: _le, ...rest } = labels;
  return rest;
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key]);
}

/** The value of the one sample of `name` with exactly `labels`, or undefined if there is none. */
function value(scrape: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = (scrape.samples.get(name) ?? []).filter((sample) => sameLabels(sample.labels, labels));
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} appears ${found.length} times`);
  return found[0]?.value;
}

async function scrape(running: Running): Promise<Scrape> {
  const response = await fetch(`http://127.0.0.1:${running.healthPort}/metrics`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  return parseExposition(await response.text());
}

/** Scrape until `check` holds (gauges and counters that settle after an HTTP answer). */
async function scrapeUntil(running: Running, what: string, check: (scrape: Scrape) => boolean): Promise<Scrape> {
  return eventually(what, async () => {
    const current = await scrape(running);
    return check(current) ? current : undefined;
  });
}

const handlerCount = (s: Scrape, phase: string, outcome = 'ok'): number | undefined =>
  value(s, 'actionkit_handler_duration_seconds_count', { phase, action: ACTION, outcome });
const active = (s: Scrape): number | undefined => value(s, 'actionkit_active_executions', { action: ACTION });
const bodyStops = (s: Scrape, outcome: string): number | undefined => value(s, 'actionkit_body_stops_total', { outcome });
const stops = (s: Scrape, reason: string, result = 'succeeded'): number | undefined => value(s, 'actionkit_stops_total', { reason, result });

describe('GET /metrics', () => {
  let running: Running;
  before(async () => {
    // Failed stops are not retried during these tests (their counts are asserted). A grace of 2 s:
    // a cooperative body must see its stop and end within it on a busy machine too.
    running = await start({ actions: [fixture('behave'), fixture('behave-io')], handlerThreads: 2, stopGraceMs: 2_000, heartbeatMinIntervalMs: 200, stopRetryBaseMs: 3_600_000 });
  });
  after(() => running.close());

  test('at rest: gauges present, queues empty, no stop recorded', async () => {
    const s = await scrape(running);
    assert.equal(active(s), 0);
    assert.equal(value(s, 'actionkit_stop_queue_depth'), 0);
    assert.equal(value(s, 'actionkit_stop_events_total'), 0);
    assert.equal(value(s, 'actionkit_heartbeat_timeouts_total'), 0);
    const pool = 'handlers';
    assert.equal(value(s, 'actionkit_pool_threads', { pool }), 2, 'handler threads');
    assert.equal(value(s, 'actionkit_pool_busy_threads', { pool }), 0, 'handlers busy');
    assert.equal(value(s, 'actionkit_pool_queued_tasks', { pool }), 0, 'handlers queued');
    const utilization = value(s, 'actionkit_pool_utilization_ratio', { pool });
    assert.ok(utilization !== undefined && utilization >= 0 && utilization <= 1, `handler utilization ${utilization}`);
    // The fixture has cpu and io bodies: the spare cpu threads and the io threads are up, idle.
    assert.equal(value(s, 'actionkit_body_threads', { kind: 'cpu' }), 2, 'spare cpu body threads');
    assert.equal(value(s, 'actionkit_body_spare_threads'), 2);
    assert.equal(value(s, 'actionkit_body_threads', { kind: 'io' }), 2, 'io body threads');
    for (const kind of ['cpu', 'io']) assert.equal(value(s, 'actionkit_bodies_running', { kind }), 0, `${kind} bodies running`);
    assert.equal(value(s, 'actionkit_body_threads_lost_total'), 0);
    // Known label sets start at 0, so a first stop of a kind shows as an increase.
    const reasons = ['agent', 'heartbeat_timeout', 'sigint', 'sigterm', 'sigusr1', 'body_failed', 'prepare_abandoned', 'shutdown', 'prepared_expired'];
    for (const reason of reasons) {
      assert.equal(stops(s, reason), 0, reason);
      assert.equal(stops(s, reason, 'failed'), 0, reason);
      assert.equal(value(s, 'actionkit_stops_given_up_total', { reason }), 0, reason);
    }
    assert.equal(s.samples.get('actionkit_stops_total')?.length, 2 * reasons.length);
    for (const outcome of ['none', 'skipped', 'cooperative', 'killed', 'returned', 'failed']) assert.equal(bodyStops(s, outcome), 0, outcome);
    assert.equal(s.samples.get('actionkit_handler_duration_seconds_count'), undefined, 'no handler ran yet');
    assert.equal(s.types.get('actionkit_stops_total'), 'counter');
    assert.equal(s.types.get('actionkit_handler_duration_seconds'), 'histogram');
    for (const name of ['p50', 'p99', 'max', 'mean']) {
      const delay = value(s, `actionkit_event_loop_delay_${name}_seconds`);
      assert.ok(delay !== undefined && delay >= 0 && delay < 5, `event loop delay ${name} = ${delay}`);
    }
    assert.ok((value(s, 'process_cpu_seconds_total') ?? 0) > 0);
    assert.ok((value(s, 'process_resident_memory_bytes') ?? 0) > 0);
  });

  test('a lifecycle: active gauge 1 → 0, handler histograms per phase, an agent stop with a cooperative body', async () => {
    const id = randomUUID();
    const state = await running.agent.run(ACTION, id, { body: 'spin' });
    // A started body runs at once: no waiting for it.
    const during = await scrape(running);
    assert.equal(value(during, 'actionkit_bodies_running', { kind: 'cpu' }), 1);
    assert.equal(active(during), 1);
    await running.agent.status(ACTION, id, state);
    await running.agent.status(ACTION, id, state);
    const stopped = await running.agent.stop(ACTION, id, state);
    assert.equal(stopped.status, 200);

    const s = await scrape(running);
    assert.equal(active(s), 0);
    assert.equal(handlerCount(s, 'prepare'), 1);
    assert.equal(handlerCount(s, 'start'), 1);
    assert.equal(handlerCount(s, 'status'), 2);
    assert.equal(handlerCount(s, 'stop'), 1);
    assert.equal(handlerCount(s, 'query'), undefined, 'no series for a phase that never ran');
    assert.equal(stops(s, 'agent'), 1);
    assert.equal(stops(s, 'agent', 'failed'), 0);
    assert.equal(bodyStops(s, 'cooperative'), 1);
    assert.equal(value(s, 'actionkit_body_stop_duration_seconds_count', { outcome: 'cooperative' }), 1);
    assert.ok((value(s, 'actionkit_body_stop_duration_seconds_sum', { outcome: 'cooperative' }) ?? Infinity) < 2, 'a cooperative stop ends within the grace period');
    assert.equal(value(s, 'actionkit_stop_events_total'), 1);
    assert.equal(value(s, 'actionkit_stop_queue_depth'), 0);
    assert.equal(value(s, 'actionkit_bodies_running', { kind: 'cpu' }), 0);
    assert.ok((value(s, 'actionkit_body_spare_threads') ?? 0) >= 2, 'its thread went back to the idle ones');
    assert.equal(value(s, 'actionkit_http_requests_total', { route: `/${ACTION}/status`, method: 'POST', status: '200' }), 2);
    assert.equal(value(s, 'actionkit_http_requests_total', { route: `/${ACTION}/prepare`, method: 'POST', status: '200' }), 1);
    assert.equal(value(s, 'actionkit_http_request_duration_seconds_count', { route: `/${ACTION}/stop`, method: 'POST' }), 1);
    for (const labels of s.samples.get('actionkit_http_requests_total') ?? []) assert.doesNotMatch(JSON.stringify(labels), new RegExp(id), 'no execution id in any label');
  });

  test('handler failures are counted by outcome; a failed author stop counts per attempt, its body once', async () => {
    const failedPrepare = await running.agent.prepare(ACTION, randomUUID(), { prepare: 'throw' });
    assert.ok(failedPrepare.body['error'] !== undefined);
    const id = randomUUID();
    const state = await running.agent.run(ACTION, id, { body: 'sleep', stop: 'throw' });
    assert.equal((await running.agent.stop(ACTION, id, state)).status, 500);
    assert.equal((await running.agent.stop(ACTION, id, state)).status, 500);

    const s = await scrape(running);
    assert.equal(handlerCount(s, 'prepare', 'error'), 1);
    assert.equal(handlerCount(s, 'prepare'), 2);
    assert.equal(handlerCount(s, 'stop', 'error'), 2);
    assert.equal(stops(s, 'agent', 'failed'), 2);
    assert.equal(stops(s, 'agent'), 1, 'unchanged');
    assert.equal(bodyStops(s, 'cooperative'), 2, 'the body of the twice-stopped execution is counted once');
    assert.equal(active(s), 1, 'an execution whose stop failed stays held (a later stop retries)');
    assert.equal(value(s, 'actionkit_http_requests_total', { route: `/${ACTION}/stop`, method: 'POST', status: '500' }), 2);
  });

  test('a heartbeat expiry counts a heartbeat timeout and a stop with that reason', async () => {
    const id = randomUUID();
    await running.agent.run(ACTION, id, { body: 'sleep' });
    // Interval max(100 ms, 200 ms) → expiry after 800 ms without a status request.
    const s = await scrapeUntil(running, 'the heartbeat stop', (current) => stops(current, 'heartbeat_timeout') === 1);
    assert.equal(value(s, 'actionkit_heartbeat_timeouts_total'), 1);
    assert.equal(bodyStops(s, 'cooperative'), 3);
    assert.equal(active(s), 1, 'only the execution with the failing stop is left');
  });

  test('a body that ignores the stop is killed after the grace period, with its thread', async () => {
    const id = randomUUID();
    const state = await running.agent.run(ACTION, id, { body: 'ignore-stop' });
    assert.equal(value(await scrape(running), 'actionkit_bodies_running', { kind: 'cpu' }), 1);
    const stopped = await running.agent.stop(ACTION, id, state);
    assert.equal(stopped.status, 200);
    const s = await scrape(running);
    assert.equal(value(s, 'actionkit_body_threads_lost_total'), 1, 'its thread was terminated');
    assert.equal(value(s, 'actionkit_bodies_running', { kind: 'cpu' }), 0);
    assert.equal(bodyStops(s, 'killed'), 1);
    assert.equal(value(s, 'actionkit_body_stop_duration_seconds_count', { outcome: 'killed' }), 1);
    const killedAfter = value(s, 'actionkit_body_stop_duration_seconds_sum', { outcome: 'killed' }) ?? 0;
    assert.ok(killedAfter >= 1.99 && killedAfter < 10, `killed ${killedAfter} s after the stop request (grace 2 s)`);
    assert.equal(stops(s, 'agent'), 2);
    await scrapeUntil(running, 'the spares to be back to full strength', (current) => (value(current, 'actionkit_body_spare_threads') ?? 0) >= 2);
  });

  test('route labels are bounded: unknown paths and methods are collapsed', async () => {
    assert.equal((await fetch(`${running.base}/no/such/${randomUUID()}`)).status, 404);
    assert.equal((await fetch(`${running.base}/`, { method: 'PURGE' })).status, 405);
    const s = await scrape(running);
    assert.equal(value(s, 'actionkit_http_requests_total', { route: 'unmatched', method: 'GET', status: '404' }), 1);
    assert.equal(value(s, 'actionkit_http_requests_total', { route: '/', method: 'OTHER', status: '405' }), 1);
  });

  test('only GET and HEAD are answered on /metrics', async () => {
    const post = await fetch(`http://127.0.0.1:${running.healthPort}/metrics`, { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    const head = await fetch(`http://127.0.0.1:${running.healthPort}/metrics`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
  });
});

describe('metrics registries', () => {
  test('two extensions in one process report only their own series', async () => {
    const [a, b] = await Promise.all([start({ actions: [fixture('behave')] }), start({ actions: [fixture('behave')] })]);
    try {
      await a.agent.prepare(ACTION, randomUUID(), { prepare: 'throw' });
      const [sa, sb] = await Promise.all([scrape(a), scrape(b)]);
      assert.equal(handlerCount(sa, 'prepare', 'error'), 1);
      assert.equal(handlerCount(sb, 'prepare', 'error'), undefined);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('metrics on a unix socket', () => {
  test('with the probes on the socket, /metrics answers there too', async () => {
    const dir = tempDir('actionkit-metrics-socket-');
    const socketPath = join(dir.path, 'ext.sock');
    const running = await start({ actions: [fixture('behave')], unixSocket: socketPath });
    try {
      assert.equal(running.healthPort, undefined, 'no probes port of its own');
      const { status, type, text } = await new Promise<{ status: number; type: string; text: string }>((resolve, reject) => {
        get({ socketPath, path: '/metrics' }, (response) => {
          let text = '';
          response.setEncoding('utf8');
          response.on('data', (chunk: string) => (text += chunk));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, type: String(response.headers['content-type']), text }));
        }).on('error', reject);
      });
      assert.equal(status, 200);
      assert.equal(type, 'text/plain; version=0.0.4; charset=utf-8');
      const s = parseExposition(text);
      assert.equal(value(s, 'actionkit_stop_queue_depth'), 0);
      assert.equal(active(s), 0);
    } finally {
      await running.close();
      dir.remove();
    }
  });
});
