/**
 * Prometheus metrics of one extension, served as `GET /metrics` on the probes' port.
 *
 * Each {@link ExtensionMetrics} owns its own prom-client `Registry` (never the global default one):
 * a process may hold several extensions (tests, embedders), and each must report only its own
 * series. Two kinds of series:
 * - **state read at scrape time** (`collect` callbacks over one snapshot of the runtime's
 *   counters, taken by {@link ExtensionMetrics.scrape}): active executions, pool and queue gauges,
 *   counters the runtime already keeps (heartbeat timeouts live in the shared control table);
 * - **events recorded as they happen** through the small typed `observe*` methods, which the
 *   runtime calls on hot paths: they reuse cached label children, so a status request costs a
 *   few map lookups and one histogram observation, and builds no label strings.
 *
 * Label values are bounded by construction: action ids and routes are fixed at registration,
 * phases, reasons and outcomes are closed enums, methods outside a fixed set become `OTHER`.
 * Execution ids never become labels.
 *
 * Not prom-client's `collectDefaultMetrics`: it installs a GC observer and an event-loop monitor
 * that can never be removed, one more per extension. The few process series below are computed
 * at scrape time, and the event-loop monitor is disabled by {@link ExtensionMetrics.close}.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BodyPhase } from './action.js';
import type { ConnectionGuard, ShedReason } from './http/connections.js';
import type { HandlerOutcome, PoolStats } from './pool.js';
import type { BodyThreadStats } from './runtime/body-threads.js';
import type { Phase } from './runtime/protocol.js';
import { Reason } from './shm/table.js';

/** What the runtime exposes to a scrape; read once per scrape. */
export interface MetricsSnapshot {
  /** The action id of every execution this process holds (prepared or running). */
  activeActionIds: Iterable<string>;
  /** Stop events published to the shared queue and not yet taken by the stop queue loop. */
  stopQueueDepth: number;
  /** Stop events ever published. */
  stopEventsEnqueued: number;
  /** Queue cells skipped because their producer died before publishing. */
  stopQueueStalls: number;
  /** Heartbeat timeouts fired by the watchdog thread. */
  heartbeatTimeouts: number;
  /** Main-thread stalls the watchdog did not charge to the agents (`src/shm/watchdog-rule.ts`). */
  mainStalls: number;
  /** Their excused time, ms (modulo 2^32). */
  mainExcusedMs: number;
  pools: PoolStats;
  bodies: BodyThreadStats;
  /** Stop outcomes remembered for late and duplicate requests, by kind, and their approximate heap. */
  rememberedStops: { ran: number; stateless: number; bytes: number };
}

/** Where the metrics read the runtime's state. */
export interface MetricsSources {
  /** Ids of the actions whose executions are tracked (stoppable), so their gauges exist at 0. */
  trackedActionIds: readonly string[];
  snapshot(): MetricsSnapshot;
}

/** Labels of `actionkit_stops_total{reason}`: snake case, one per stop reason code. */
const REASON_LABELS: Record<Reason, string> = {
  [Reason.None]: 'none',
  [Reason.Agent]: 'agent',
  [Reason.HeartbeatTimeout]: 'heartbeat_timeout',
  [Reason.SignalInt]: 'sigint',
  [Reason.SignalTerm]: 'sigterm',
  [Reason.SignalUsr1]: 'sigusr1',
  [Reason.BodyFailed]: 'body_failed',
  [Reason.PrepareAbandoned]: 'prepare_abandoned',
  [Reason.Shutdown]: 'shutdown',
  [Reason.PreparedExpired]: 'prepared_expired',
};

/**
 * Labels of `actionkit_body_stops_total{outcome}`: how the body had ended once its execution's
 * stop took it. `queued`/`running` cannot be the end of a stop; they are listed for totality.
 */
const BODY_OUTCOME_LABELS: Record<BodyPhase, string> = {
  none: 'none',
  skipped: 'skipped',
  stopped: 'cooperative',
  killed: 'killed',
  returned: 'returned',
  failed: 'failed',
  queued: 'queued',
  running: 'running',
};

/** The ways a body can have ended when its stop took it (its counters start at 0). */
const STOP_BODY_OUTCOMES: readonly BodyPhase[] = ['none', 'skipped', 'stopped', 'killed', 'returned', 'failed'];

/** The servers of an extension whose connections are capped: the API and the probes' own port. */
export type CappedServer = 'api' | 'probes';
const CAPPED_SERVERS: readonly CappedServer[] = ['api', 'probes'];
const SHED_REASONS: readonly ShedReason[] = ['incomplete_request', 'idle', 'stalled_reader', 'refused'];

const PHASES: readonly Phase[] = ['prepare', 'start', 'status', 'stop', 'query'];
const HANDLER_OUTCOMES: readonly HandlerOutcome[] = ['ok', 'error', 'lost'];
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);

/** Route label of a request that matched no route (404): the path itself would be unbounded. */
export const UNMATCHED_ROUTE = 'unmatched';

/** Handlers take from well under a millisecond (status) to the handler timeout. */
const HANDLER_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** A cooperative stop reaches a body in microseconds; a kill comes after the grace period (seconds). */
const BODY_STOP_BUCKETS_S = [0.00001, 0.0001, 0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30];

/** Resolution of the event-loop delay monitor (Node's default; finer costs more timer wake-ups). */
const EVENT_LOOP_RESOLUTION_MS = 10;

type HandlerChildren = Record<Phase, Histogram.Internal<string>[]>;
type HttpChildren = { duration: Histogram.Internal<string>; byStatus: Map<number, Counter.Internal> };

/** One extension's metrics. */
export class ExtensionMetrics {
  /** The `Content-Type` of {@link scrape}'s text (Prometheus text exposition format). */
  readonly contentType: string;
  private readonly registry = new Registry();
  private readonly sources: MetricsSources;
  private readonly loopDelay: IntervalHistogram;
  /** The runtime's state read by the scrape in progress (the latest scrape's, between scrapes). */
  private current: MetricsSnapshot | undefined;

  private readonly handlerSeconds: Histogram<'phase' | 'action' | 'outcome'>;
  private readonly handlerChildren = new Map<string, HandlerChildren>();
  private readonly stops: Counter<'reason' | 'result'>;
  /** [reason][0 = succeeded, 1 = failed], for every reason but `None`. */
  private readonly stopChildren: Counter.Internal[][] = [];
  private readonly stopsGivenUp: Counter<'reason'>;
  private readonly bodyStops: Counter<'outcome'>;
  private readonly bodyStopSeconds: Histogram<'outcome'>;
  /** Executions whose body end was counted: a retried stop (the first attempt failed) counts it once. */
  private readonly bodyEndsCounted = new WeakSet<object>();
  private readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  private readonly httpSeconds: Histogram<'route' | 'method'>;
  private readonly httpChildren = new Map<string, Map<string, HttpChildren>>();
  private readonly connectionsShed: Counter<'server' | 'reason'>;
  private readonly connectionGuards = new Map<CappedServer, ConnectionGuard>();

  constructor(sources: MetricsSources) {
    this.sources = sources;
    this.contentType = this.registry.contentType;
    const registers = [this.registry];
    // Every collect callback of one scrape reads the same snapshot, so the series agree.
    const snapshot = (): MetricsSnapshot => (this.current ??= sources.snapshot());

    new Gauge({
      name: 'actionkit_remembered_stops',
      help: 'Stop outcomes remembered for late and duplicate requests: of executions that ran here (kind="ran") and of ids this process never knew (kind="stateless"), each bounded.',
      labelNames: ['kind'],
      registers,
      collect() {
        const { ran, stateless } = snapshot().rememberedStops;
        this.set({ kind: 'ran' }, ran);
        this.set({ kind: 'stateless' }, stateless);
      },
    });
    new Gauge({
      name: 'actionkit_remembered_stops_bytes',
      help: 'Approximate heap held by remembered stop outcomes, bytes.',
      registers,
      collect() {
        this.set(snapshot().rememberedStops.bytes);
      },
    });
    new Gauge({
      name: 'actionkit_active_executions',
      help: 'Executions this process holds (prepared or running), by action. Only stoppable actions are tracked.',
      labelNames: ['action'],
      registers,
      collect() {
        this.reset();
        for (const action of sources.trackedActionIds) this.set({ action }, 0);
        for (const action of snapshot().activeActionIds) this.inc({ action });
      },
    });
    this.handlerSeconds = new Histogram({
      name: 'actionkit_handler_duration_seconds',
      help: 'Author handler calls on the handler lane, from submission (including time queued for a thread) to reply. outcome: ok, error (threw) or lost (worker crashed or handler timed out).',
      labelNames: ['phase', 'action', 'outcome'],
      buckets: HANDLER_BUCKETS_S,
      registers,
    });
    this.stops = new Counter({
      name: 'actionkit_stops_total',
      help: 'Stop attempts, by reason and by result of the author stop (no stop handler, or nothing prepared, counts as succeeded). A failed stop retried later counts again.',
      labelNames: ['reason', 'result'],
      registers,
    });
    // Every reason × result series exists from the start at 0, so `rate()` and `increase()` see
    // the first stop of a kind instead of a series appearing at 1.
    for (const reason of Object.values(Reason)) {
      if (reason === Reason.None) continue;
      const label = REASON_LABELS[reason];
      this.stopChildren[reason] = [this.stops.labels(label, 'succeeded'), this.stops.labels(label, 'failed')];
      for (const child of this.stopChildren[reason]) child.inc(0);
    }
    this.stopsGivenUp = new Counter({
      name: 'actionkit_stops_given_up_total',
      help: 'Stops that failed on every automatic retry and were given up (their execution was freed without a successful rollback), by reason.',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of Object.values(Reason)) if (reason !== Reason.None) this.stopsGivenUp.labels(REASON_LABELS[reason]).inc(0);
    this.bodyStops = new Counter({
      name: 'actionkit_body_stops_total',
      help: 'How executions being stopped had their body end: cooperative, killed (grace period exceeded), skipped (stopped before it began), returned or failed (ended before the stop), none (no body). Once per execution.',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of STOP_BODY_OUTCOMES) this.bodyStops.labels(BODY_OUTCOME_LABELS[outcome]).inc(0);
    this.bodyStopSeconds = new Histogram({
      name: 'actionkit_body_stop_duration_seconds',
      help: 'From the stop request to the body ending (cooperative) or its thread being terminated (killed).',
      labelNames: ['outcome'],
      buckets: BODY_STOP_BUCKETS_S,
      registers,
    });
    new Counter({
      name: 'actionkit_heartbeat_timeouts_total',
      help: 'Executions the watchdog stopped because the agent stopped polling status.',
      registers,
      collect() {
        this.reset();
        this.inc(snapshot().heartbeatTimeouts);
      },
    });
    new Counter({
      name: 'actionkit_main_thread_stalls_total',
      help: 'Times the main thread could not read requests for longer than the stall threshold (blocked event loop, CPU starvation, process frozen); heartbeats are not charged for the excess.',
      registers,
      collect() {
        this.reset();
        this.inc(snapshot().mainStalls);
      },
    });
    new Counter({
      name: 'actionkit_main_thread_stalled_seconds_total',
      help: 'Time of those stalls beyond the threshold: heartbeat deadlines were extended by it.',
      registers,
      collect() {
        this.reset();
        this.inc(snapshot().mainExcusedMs / 1000);
      },
    });
    new Gauge({
      name: 'actionkit_stop_queue_depth',
      help: 'Stop events in the shared-memory queue not yet taken by the stop queue loop.',
      registers,
      collect() {
        this.set(snapshot().stopQueueDepth);
      },
    });
    new Counter({
      name: 'actionkit_stop_events_total',
      help: 'Stop events published to the shared-memory queue (one per stop request that won).',
      registers,
      collect() {
        this.reset();
        this.inc(snapshot().stopEventsEnqueued);
      },
    });
    new Counter({
      name: 'actionkit_stop_queue_stalls_total',
      help: 'Queue cells skipped because their producer thread died before publishing (should stay 0).',
      registers,
      collect() {
        this.reset();
        this.inc(snapshot().stopQueueStalls);
      },
    });
    new Gauge({
      name: 'actionkit_pool_threads',
      help: 'Worker threads of the handler pool (lifecycle handlers).',
      labelNames: ['pool'],
      registers,
      collect() {
        this.set({ pool: 'handlers' }, snapshot().pools.handlerThreads);
      },
    });
    new Gauge({
      name: 'actionkit_pool_busy_threads',
      help: 'Handler threads running a task now.',
      labelNames: ['pool'],
      registers,
      collect() {
        this.set({ pool: 'handlers' }, snapshot().pools.handlerBusy);
      },
    });
    new Gauge({
      name: 'actionkit_pool_queued_tasks',
      help: 'Tasks waiting for a thread: handlers (pool="handlers"), and decodes, checks and handlers of bodies above 16 KiB (pool="large-requests").',
      labelNames: ['pool'],
      registers,
      collect() {
        const { pools } = snapshot();
        this.set({ pool: 'handlers' }, pools.handlerQueue);
        this.set({ pool: 'large-requests' }, pools.largeRequestQueue);
      },
    });
    new Counter({
      name: 'actionkit_large_request_tasks_total',
      help: 'Tasks the large-request lane completed: decodes of request bodies above 16 KiB, upload checks and handlers of states above it.',
      registers,
      collect() {
        this.reset();
        this.inc(snapshot().pools.largeRequestTasks);
      },
    });
    new Gauge({
      name: 'actionkit_pool_utilization_ratio',
      help: "piscina's utilization of the handler pool: mean run time of completed tasks relative to its capacity (0..1).",
      labelNames: ['pool'],
      registers,
      collect() {
        this.set({ pool: 'handlers' }, snapshot().pools.handlerUtilization);
      },
    });
    new Gauge({
      name: 'actionkit_bodies_running',
      help: 'Execution bodies running now, by kind (cpu: one thread each; io: sharing the io threads).',
      labelNames: ['kind'],
      registers,
      collect() {
        const { bodies } = snapshot();
        this.set({ kind: 'cpu' }, bodies.cpuBusy);
        this.set({ kind: 'io' }, bodies.ioBodies);
      },
    });
    new Gauge({
      name: 'actionkit_body_threads',
      help: 'Body threads alive, by kind (cpu: running a body, spare or booting; io: shared).',
      labelNames: ['kind'],
      registers,
      collect() {
        const { bodies } = snapshot();
        this.set({ kind: 'cpu' }, bodies.cpuThreads);
        this.set({ kind: 'io' }, bodies.ioThreads);
      },
    });
    new Gauge({
      name: 'actionkit_body_spare_threads',
      help: 'Booted idle cpu body threads, ready for the next body.',
      registers,
      collect() {
        this.set(snapshot().bodies.cpuSpares);
      },
    });
    new Counter({
      name: 'actionkit_body_threads_lost_total',
      help: 'Body threads that ended while carrying bodies: crashed, exited, out of memory, or terminated to kill a body that ignored its stop.',
      registers,
      collect() {
        this.reset();
        this.inc(snapshot().bodies.threadsLost);
      },
    });
    new Counter({
      name: 'actionkit_pool_workers_replaced_total',
      help: 'Handler threads that ended (crash, exit, out of memory, hung handler) and were replaced.',
      registers,
      collect() {
        this.reset();
        this.inc(snapshot().pools.workersReplaced);
      },
    });
    this.httpRequests = new Counter({
      name: 'actionkit_http_requests_total',
      help: 'HTTP requests answered (or abandoned by the client), by route template, method and status.',
      labelNames: ['route', 'method', 'status'],
      registers,
    });
    this.httpSeconds = new Histogram({
      name: 'actionkit_http_request_duration_seconds',
      help: 'From receiving an HTTP request to the end of its answer, by route template and method.',
      labelNames: ['route', 'method'],
      buckets: HANDLER_BUCKETS_S,
      registers,
    });
    this.connectionsShed = new Counter({
      name: 'actionkit_http_connections_shed_total',
      help: 'Connections closed at the connection cap to make room for a new one (ACTIONKIT_MAX_CONNECTIONS; the probe port has a fixed cap), by server and reason: incomplete_request (the oldest without a complete request: slow or silent clients), idle (the longest idle keep-alive connection), stalled_reader (a client not reading its answers, which back up), refused (every connection was busy, the new one was closed).',
      labelNames: ['server', 'reason'],
      registers,
    });
    for (const server of CAPPED_SERVERS) for (const reason of SHED_REASONS) this.connectionsShed.labels(server, reason).inc(0);
    const guards = this.connectionGuards;
    new Gauge({
      name: 'actionkit_http_open_connections',
      help: 'Open connections, by server (api, probes); the api server sheds the slowest beyond ACTIONKIT_MAX_CONNECTIONS.',
      labelNames: ['server'],
      registers,
      collect() {
        this.reset();
        for (const [server, guard] of guards) this.set({ server }, guard.open);
      },
    });

    // The event-loop monitor samples with a timer of its own; reset at each scrape, so the
    // series describe the time since the previous scrape. Its samples are the time between two
    // timer turns, i.e. resolution + delay: the resolution is subtracted to report the delay alone.
    this.loopDelay = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
    this.loopDelay.enable();
    const loop = this.loopDelay;
    const resolutionNs = EVENT_LOOP_RESOLUTION_MS * 1e6;
    const loopGauge = (name: string, help: string, read: (h: IntervalHistogram) => number): Gauge =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(loop.count === 0 ? 0 : Math.max(0, read(loop) - resolutionNs) / 1e9);
        },
      });
    loopGauge('actionkit_event_loop_delay_p50_seconds', 'Main-thread event-loop delay since the previous scrape, median.', (h) => h.percentile(50));
    loopGauge('actionkit_event_loop_delay_p99_seconds', 'Main-thread event-loop delay since the previous scrape, 99th percentile.', (h) => h.percentile(99));
    loopGauge('actionkit_event_loop_delay_max_seconds', 'Main-thread event-loop delay since the previous scrape, maximum.', (h) => h.max);
    loopGauge('actionkit_event_loop_delay_mean_seconds', 'Main-thread event-loop delay since the previous scrape, mean.', (h) => h.mean);

    const startTimeSeconds = Math.round(Date.now() / 1000 - process.uptime());
    new Gauge({ name: 'process_start_time_seconds', help: 'Start time of the process since the Unix epoch, seconds.', registers, collect() { this.set(startTimeSeconds); } });
    new Counter({
      name: 'process_cpu_seconds_total',
      help: 'User and system CPU time of the whole process (all threads), seconds.',
      registers,
      collect() {
        const { user, system } = process.cpuUsage();
        this.reset();
        this.inc((user + system) / 1e6);
      },
    });
    new Gauge({ name: 'process_resident_memory_bytes', help: 'Resident set size of the process (all threads), bytes.', registers, collect() { this.set(process.memoryUsage.rss()); } });
    new Gauge({
      name: 'nodejs_heap_size_used_bytes',
      help: 'V8 heap in use on the main thread, bytes (worker threads have heaps of their own).',
      registers,
      collect() {
        this.set(process.memoryUsage().heapUsed);
      },
    });
  }

  /** Record a settled handler task (called by the worker pools for every phase). */
  observeHandler(phase: Phase, actionId: string, seconds: number, outcome: HandlerOutcome): void {
    let children = this.handlerChildren.get(actionId);
    if (children === undefined) {
      const byPhase = {} as HandlerChildren;
      for (const p of PHASES) byPhase[p] = HANDLER_OUTCOMES.map((o) => this.handlerSeconds.labels(p, actionId, o));
      children = byPhase;
      this.handlerChildren.set(actionId, children);
    }
    children[phase][HANDLER_OUTCOMES.indexOf(outcome)]?.observe(seconds);
  }

  /**
   * Record a stop attempt that finished: its reason and the author stop's result on every
   * attempt; how the body ended (and how long after the stop request) once per `execution`.
   */
  observeStop(execution: object, reason: Reason, body: { phase: BodyPhase; stopMs?: number }, succeeded: boolean): void {
    this.stopChildren[reason]?.[succeeded ? 0 : 1]?.inc();
    if (this.bodyEndsCounted.has(execution)) return;
    this.bodyEndsCounted.add(execution);
    const outcome = BODY_OUTCOME_LABELS[body.phase];
    this.bodyStops.labels(outcome).inc();
    if ((body.phase === 'stopped' || body.phase === 'killed') && body.stopMs !== undefined) this.bodyStopSeconds.labels(outcome).observe(body.stopMs / 1000);
  }

  /** Record a stop given up after its retries. */
  observeStopGivenUp(reason: Reason): void {
    this.stopsGivenUp.labels(REASON_LABELS[reason]).inc();
  }

  /**
   * Record one HTTP request. `route` is the matched route template (our routes are exact paths
   * fixed at registration) or {@link UNMATCHED_ROUTE}.
   */
  observeHttp(route: string, method: string, status: number, seconds: number): void {
    const boundedMethod = KNOWN_METHODS.has(method) ? method : 'OTHER';
    let byMethod = this.httpChildren.get(route);
    if (byMethod === undefined) {
      byMethod = new Map();
      this.httpChildren.set(route, byMethod);
    }
    let children = byMethod.get(boundedMethod);
    if (children === undefined) {
      children = { duration: this.httpSeconds.labels(route, boundedMethod), byStatus: new Map() };
      byMethod.set(boundedMethod, children);
    }
    let counter = children.byStatus.get(status);
    if (counter === undefined) {
      counter = this.httpRequests.labels(route, boundedMethod, String(status));
      children.byStatus.set(status, counter);
    }
    counter.inc();
    children.duration.observe(seconds);
  }

  /** Report the open connections of `server` (read at each scrape). */
  watchConnections(server: CappedServer, guard: ConnectionGuard): void {
    this.connectionGuards.set(server, guard);
  }

  /** Record a connection shed at the cap of `server`. */
  observeConnectionShed(server: CappedServer, reason: ShedReason): void {
    this.connectionsShed.labels(server, reason).inc();
  }

  /** The metrics in the Prometheus text format, state read now. */
  async scrape(): Promise<string> {
    this.current = this.sources.snapshot();
    const text = await this.registry.metrics();
    this.loopDelay.reset();
    return text;
  }

  /** Stop the event-loop monitor. Recording after close is harmless; scraping still works. */
  close(): void {
    this.loopDelay.disable();
  }
}
