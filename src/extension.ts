/**
 * `createExtension`: wires configuration, actions, the control table, the watchdog thread, the
 * handler pool, the body threads, the lifecycle and its stop queue loop, the HTTP app, probes and
 * signals into one {@link Extension}.
 */
import { once } from 'node:events';
import type { RequestListener, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import { resolveOptions, watchdogTickMs, type ExtensionOptions, type ResolvedOptions } from './config.js';
import { buildIndex } from './api/extension-index.js';
import { assertPathsFree, buildApp, type ExtensionHandler } from './http/app.js';
import type { ConnectionGuard } from './http/connections.js';
import { listenedOrExplained, openListener } from './http/listener.js';
import { createProbeServer, probeHandler, type ProbeState } from './http/probes.js';
import { removeExecutionFolder, sweepStaleUploads } from './http/uploads.js';
import { createLogger, logSettingsOf, type LogSettings, type Logger } from './logging.js';
import { ExtensionMetrics } from './metrics.js';
import { adjustOomScoreAdj } from './oom-score.js';
import { WorkerPools, type PoolStats } from './pool.js';
import { BodyLane } from './runtime/bodies.js';
import { settlesWithin } from './runtime/waits.js';
import { BodyThreads, type BodyThreadStats } from './runtime/body-threads.js';
import { ExecutionStore } from './runtime/executions.js';
import { Lifecycle, type StopAllResult, type StopStats } from './runtime/lifecycle.js';
import { importActions, moduleUrl } from './runtime/modules.js';
import type { BodyKind } from './runtime/protocol.js';
import { ActionRegistry } from './runtime/registry.js';
import { EXIT_CODES, SignalHandling, type HandledSignal } from './runtime/signals.js';
import { stateLimitFor } from './runtime/state-limit.js';
import { StopQueueLoop } from './runtime/stop-queue.js';
import { installedGates } from './runtime/test-points.js';
import { ControlTable, Reason, type WatchdogStats } from './shm/table.js';
import { MAIN_WEDGED_AFTER_MS, mainStallAfterMs, mainStampIntervalMs } from './shm/watchdog-rule.js';

/** The test-only hold points for worker threads, when a test installed them. */
function gatesBoot(): { gates?: SharedArrayBuffer } {
  const gates = installedGates();
  return gates === undefined ? {} : { gates: gates.buffer };
}

/** Where {@link Extension.listen} is listening. */
export interface ListenInfo {
  /** The HTTP(S) port (useful with port 0), or undefined on a unix socket. */
  port: number | undefined;
  /** The absolute unix socket path (`STEADYBIT_EXTENSION_UNIX_SOCKET`), or undefined on TCP. */
  socketPath: string | undefined;
  /** True when serving HTTPS. */
  tls: boolean;
  /** True when clients must present a certificate signed by one of `tlsClientCas`. */
  mutualTls: boolean;
  /** The probes' port; undefined when probes are disabled or answer on the unix socket. */
  healthPort: number | undefined;
}

/** Runtime counters (metrics, benchmarks, tests). */
export interface ExtensionStats {
  activeExecutions: number;
  stopQueueDepth: number;
  stopEventsEnqueued: number;
  /** Queue cells skipped because their producer died before publishing (should stay 0). */
  stopQueueStalls: number;
  stops: StopStats;
  watchdog: WatchdogStats;
  pools: PoolStats;
  bodies: BodyThreadStats;
  /** Bytes held by remembered stop outcomes (approximate). */
  recentStopBytes: number;
}

const SIGNAL_REASONS: Record<HandledSignal, Reason> = {
  SIGINT: Reason.SignalInt,
  SIGTERM: Reason.SignalTerm,
  SIGUSR1: Reason.SignalUsr1,
};

/** Accept queue length (the kernel caps it at net.core.somaxconn). */
const LISTEN_BACKLOG = 4096;

/** How long closing the HTTP server may wait for open requests before dropping them (reference: 5 s). */
const HTTP_CLOSE_GRACE_MS = 5_000;

/**
 * A shutdown (SIGINT, SIGTERM, `close()`) ends at most this long after `stopAllTimeoutMs`: the
 * time left for author shutdown hooks, closing the servers and ending the threads after the stops.
 * Whatever still runs then is abandoned (and logged).
 */
export const SHUTDOWN_MARGIN_MS = 5_000;

/** The last part of a shutdown's time, kept for terminating the worker threads. */
const THREADS_END_MS = 1_000;

/**
 * Create an extension: load and validate the actions (a bad description throws, naming the action
 * and the field), allocate the control table, start the watchdog and worker threads. Call
 * {@link Extension.listen} to serve.
 */
export async function createExtension(options: ExtensionOptions): Promise<Extension> {
  const resolved = resolveOptions(options);
  const logSettings = logSettingsOf(resolved);
  const logger = createLogger(logSettings);
  const moduleUrls = resolved.actions.map(moduleUrl);
  const registry = new ActionRegistry();
  registry.register(await importActions(moduleUrls), resolved.heartbeatMinIntervalMs);
  for (const action of registry.all()) for (const warning of action.warnings) logger.warn({ action: action.id }, warning);
  assertPathsFree(registry, resolved.indexPath, resolved.index);
  try {
    const swept = await sweepStaleUploads(resolved.uploadDir);
    if (swept.length > 0) logger.info({ removed: swept }, 'removed uploads left by dead processes');
  } catch (error) {
    // Housekeeping only: an unreadable upload dir must not keep the extension from starting.
    logger.warn({ err: error, uploadDir: resolved.uploadDir }, 'could not sweep stale upload folders');
  }
  const extension = new Extension(resolved, logSettings, logger, registry, moduleUrls);
  try {
    await extension.warmUp();
  } catch (error) {
    await extension.close();
    throw new Error(`worker threads could not load the action modules: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  return extension;
}

/** A running ActionKit extension. */
export class Extension {
  /** Resolved, frozen options. */
  readonly options: ResolvedOptions;
  readonly logger: Logger;
  /**
   * The extension's request handler (`src/http/app.ts`): {@link listen} serves it; it can also be
   * mounted in another server (`http.createServer(extension.app)`, `outerApp.use(extension.app)`).
   */
  readonly app: ExtensionHandler;
  private readonly registry: ActionRegistry;
  private readonly table: ControlTable;
  private readonly pools: WorkerPools;
  private readonly bodyThreads: BodyThreads;
  private readonly store: ExecutionStore;
  private readonly lifecycle: Lifecycle;
  private readonly stopQueue: StopQueueLoop;
  private readonly signals: SignalHandling;
  private readonly watchdog: Worker;
  /** The main thread's liveness readings between requests (`src/shm/watchdog-rule.ts`). */
  private readonly mainStamps: NodeJS.Timeout;
  private readonly metrics: ExtensionMetrics;
  private watchdogAlive = true;
  /** Set when the threads are being ended on purpose (close or signal exit). */
  private releasing = false;
  private ready = true;
  private server: Server | undefined;
  /** The connection caps of the API and probe servers (shutdown destroys what they hold). */
  private apiConnections: ConnectionGuard | undefined;
  private probeConnections: ConnectionGuard | undefined;
  private probes: Server | undefined;
  private closing: Promise<void> | undefined;

  /** @internal Use {@link createExtension}. */
  constructor(options: ResolvedOptions, logSettings: LogSettings, logger: Logger, registry: ActionRegistry, moduleUrls: string[]) {
    this.options = options;
    this.logger = logger;
    this.registry = registry;
    this.metrics = new ExtensionMetrics({
      trackedActionIds: registry.all().filter((action) => action.stoppable).map((action) => action.id),
      snapshot: () => {
        const stats = this.stats();
        return {
          activeActionIds: this.store.all().map((execution) => execution.action.id),
          stopQueueDepth: stats.stopQueueDepth,
          stopEventsEnqueued: stats.stopEventsEnqueued,
          stopQueueStalls: stats.stopQueueStalls,
          heartbeatTimeouts: stats.watchdog.heartbeatTimeouts,
          mainStalls: stats.watchdog.mainStalls,
          mainExcusedMs: stats.watchdog.mainExcusedMs,
          pools: stats.pools,
          bodies: stats.bodies,
          rememberedStops: { ...this.store.recentStopCounts, bytes: stats.recentStopBytes },
        };
      },
    });
    this.table = ControlTable.create(options.maxExecutions);
    const tickMs = watchdogTickMs(options.heartbeatMinIntervalMs);
    this.table.setWatchdogTickMs(tickMs);
    // Before the watchdog starts: it must never see stall accounting off while the main thread stalls.
    this.table.setMainStallRule(mainStallAfterMs(tickMs), MAIN_WEDGED_AFTER_MS);
    // Cheap (a clock read and three atomics) and unref'd: it only tells the watchdog that this
    // thread's event loop turns, hence reads requests, when no status request does.
    this.mainStamps = setInterval(() => this.table.markMainAlive(), mainStampIntervalMs(tickMs));
    this.mainStamps.unref();
    this.watchdog = new Worker(new URL('../workers/watchdog.js', import.meta.url), { workerData: { buffer: this.table.buffer } });
    this.watchdog.unref();
    this.watchdog.on('error', (error) => logger.fatal({ err: error }, 'heartbeat watchdog thread crashed'));
    this.watchdog.on('exit', (code) => {
      this.watchdogAlive = false;
      if (!this.releasing) logger.fatal({ code }, 'heartbeat watchdog thread exited; liveness is now failing');
    });
    const boot = { buffer: this.table.buffer, actionModules: moduleUrls, log: logSettings };
    this.pools = new WorkerPools({
      boot: { ...boot, stateLimit: stateLimitFor(options.maxBodyBytes), ...gatesBoot() },
      handlerThreads: options.handlerThreads,
      maxOldGenerationMb: options.workerMaxOldGenerationMb,
      laneTaskTimeoutMs: options.handlerTimeoutMs,
      logger,
      onHandlerSettled: (phase, actionId, seconds, outcome) => this.metrics.observeHandler(phase, actionId, seconds, outcome),
    });
    this.bodyThreads = new BodyThreads({
      boot,
      maxThreads: options.maxBodyThreads,
      spares: options.spareBodyThreads,
      ioThreads: options.ioBodyThreads,
      fullPriorityBodies: options.fullPriorityBodies,
      nice: options.bodyNice,
      maxOldGenerationMb: options.workerMaxOldGenerationMb,
      gates: installedGates(),
      logger,
    });
    this.store = new ExecutionStore(this.table, options.stopRetentionMs);
    this.lifecycle = new Lifecycle({
      table: this.table,
      store: this.store,
      bodies: new BodyLane(this.table, this.bodyThreads, logger),
      pools: this.pools,
      logger,
      handlerTimeoutMs: options.handlerTimeoutMs,
      stopGraceMs: options.stopGraceMs,
      stopRetry: { baseMs: options.stopRetryBaseMs, attempts: options.stopRetryAttempts },
      preparedTtlMs: options.preparedTtlMs,
      uploadDir: options.uploadDir,
      removeUploads: async (executionId) => {
        try {
          await removeExecutionFolder(options.uploadDir, executionId);
        } catch (error) {
          logger.error({ err: error, executionId }, 'could not remove uploaded files');
        }
      },
      onStopFinished: (execution, reason, bodyEnd, succeeded) => this.metrics.observeStop(execution, reason, bodyEnd, succeeded),
      onStopGivenUp: (_, reason) => this.metrics.observeStopGivenUp(reason),
    });
    this.stopQueue = new StopQueueLoop(this.table, logger, (slot, control, fromSweep) => this.lifecycle.onStopTaken(slot, control, fromSweep));
    this.stopQueue.start();
    this.app = buildApp({
      registry,
      lifecycle: this.lifecycle,
      decode: (task, abandoned, ofExecution) => this.pools.decode(task, abandoned, ofExecution),
      logger,
      maxBodyBytes: options.maxBodyBytes,
      uploadDir: options.uploadDir,
      uploadMaxBytes: options.uploadMaxBytes,
      metrics: this.metrics,
      indexPath: options.indexPath,
      index: buildIndex(
        registry.all().map((action) => ({ method: 'GET', path: `/${action.id}` })),
        options.index,
      ),
      routers: options.routers,
    });
    this.signals = new SignalHandling({
      logger,
      budgetMs: () => options.stopAllTimeoutMs + SHUTDOWN_MARGIN_MS,
      exitReserveMs: THREADS_END_MS,
      onTerminating: () => {
        // From the signal on: not ready, no new executions — whatever a SIGUSR1 run still does.
        this.ready = false;
        this.lifecycle.close();
      },
    });
    this.signals.add({ name: 'readiness false', order: 0, run: () => void (this.ready = false) });
    this.signals.add({
      name: 'stop all executions',
      order: 10,
      run: async (signal, deadlineMs) => {
        await this.lifecycle.stopAll(SIGNAL_REASONS[signal], Math.min(options.stopAllTimeoutMs, deadlineMs - Date.now()));
      },
    });
    this.signals.add({ name: 'readiness restored', order: 30, run: (signal) => void (signal === 'SIGUSR1' && !this.signals.terminating && (this.ready = true)) });
    this.signals.add({ name: 'close probes', order: 80, run: (_, deadlineMs) => closeServer(this.probes, graceUntil(deadlineMs), this.probeConnections) });
    this.signals.add({ name: 'close http', order: 90, run: (_, deadlineMs) => closeServer(this.server, graceUntil(deadlineMs), this.apiConnections) });
    this.signals.add({
      name: 'exit',
      order: 100,
      run: async (signal, deadlineMs) => {
        const terminating = signal as 'SIGINT' | 'SIGTERM';
        // process.exit() waits for every worker thread; one blocked in a native call would hold it.
        if (await this.releaseThreads(deadlineMs)) process.exit(EXIT_CODES[terminating]);
        this.signals.exitBySignal(terminating);
      },
    });
  }

  /**
   * Serve the extension on `port` over HTTP or HTTPS (or on `unixSocket`), the probes on
   * `healthPort` (on the socket when on a socket), and install the signal handlers unless
   * `handleSignals` is false. First, on Linux, the process's `oom_score_adj` is set to
   * `oomScoreAdj` unless that is `null` (a refusal is only logged). A TLS file or socket path that
   * cannot be used rejects with a `ConfigError` naming it.
   */
  async listen(): Promise<ListenInfo> {
    const { port, host, healthPort, unixSocket, tlsServerCert, tlsServerKey, oomScoreAdj } = this.options;
    // Before the first request: an attack started through this extension must find it protected.
    if (oomScoreAdj !== null) adjustOomScoreAdj(oomScoreAdj, this.logger);
    const probeState: ProbeState = { ready: () => this.ready && this.closing === undefined, alive: () => this.watchdogAlive };
    const onSocket = unixSocket !== undefined;
    const handler = onSocket && healthPort !== null ? withProbes(probeState, this.metrics, this.app) : this.app;
    const tls = tlsServerCert !== undefined && tlsServerKey !== undefined ? { certFile: tlsServerCert, keyFile: tlsServerKey, clientCaPaths: this.options.tlsClientCas } : undefined;
    // A deep accept backlog: a stop storm opens thousands of connections at once.
    const opened = await openListener(
      handler,
      {
        port,
        host,
        unixSocket,
        tls,
        tlsReloadCheckMs: this.options.tlsReloadCheckMs,
        backlog: LISTEN_BACKLOG,
        maxConnections: this.options.maxConnections,
        onShed: (reason) => this.metrics.observeConnectionShed('api', reason),
      },
      this.logger,
    );
    this.server = opened.server;
    this.apiConnections = opened.connections;
    this.metrics.watchConnections('api', opened.connections);
    const info: ListenInfo = { ...opened.endpoint, healthPort: undefined };
    if (healthPort !== null && !onSocket) {
      const probes = createProbeServer(probeState, { metrics: this.metrics, logger: this.logger, onShed: (reason) => this.metrics.observeConnectionShed('probes', reason) });
      this.probes = probes.server;
      this.probeConnections = probes.connections;
      this.metrics.watchConnections('probes', probes.connections);
      this.probes.listen(healthPort, host);
      try {
        await listenedOrExplained(this.probes, `port ${healthPort} (STEADYBIT_EXTENSION_HEALTH_PORT)`);
      } catch (error) {
        // Serve both or neither: the API must not stay up without its probes.
        this.server.close();
        throw error;
      }
      info.healthPort = (this.probes.address() as AddressInfo).port;
    }
    if (this.options.handleSignals) this.signals.install();
    this.logger.info({ ...info, actions: this.registry.all().map((a) => a.id) }, 'extension listening');
    return info;
  }

  /**
   * @internal The registry and lifecycle operations, for the in-process handler harness of
   * `actionkit-runtime/testing`: it calls them directly (same pools and control table), without HTTP.
   */
  inProcess(): { registry: ActionRegistry; lifecycle: Lifecycle } {
    return { registry: this.registry, lifecycle: this.lifecycle };
  }

  /** @internal Wait for every worker thread to be ready (called by {@link createExtension}). */
  async warmUp(): Promise<void> {
    const kinds = new Set<BodyKind>();
    for (const action of this.registry.all()) if (action.bodyKind !== undefined) kinds.add(action.bodyKind);
    await Promise.all([this.pools.warmUp(), this.bodyThreads.warmUp(kinds)]);
  }

  /**
   * Add a shutdown hook that runs after all executions were stopped (reference order 20). It
   * shares the shutdown's bound (`stopAllTimeoutMs` + 5 s from the signal): one still running then
   * is abandoned.
   */
  onShutdown(name: string, hook: (signal: HandledSignal) => Promise<void> | void): void {
    this.signals.add({ name: `custom: ${name}`, order: 20, run: (signal) => hook(signal) });
  }

  /** Run the signal sequence as if `signal` had been received (SIGINT/SIGTERM end with process exit). */
  simulateSignal(signal: HandledSignal): Promise<void> {
    return this.signals.handle(signal);
  }

  /** Stop every active execution (reason `extension shutdown`), bounded by `stopAllTimeoutMs`. */
  stopAll(): Promise<StopAllResult> {
    return this.lifecycle.stopAll(Reason.Shutdown, this.options.stopAllTimeoutMs);
  }

  /**
   * Stop everything, close the servers and end every thread. Idempotent. Resolves within
   * `stopAllTimeoutMs` + 5 s whatever hangs (an author stop, a hook, a slow client): what still
   * runs then is abandoned and logged.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const deadlineMs = Date.now() + this.options.stopAllTimeoutMs + SHUTDOWN_MARGIN_MS;
      this.ready = false;
      this.lifecycle.close();
      this.signals.uninstall();
      await this.lifecycle.stopAll(Reason.Shutdown, this.options.stopAllTimeoutMs);
      const serversDeadlineMs = deadlineMs - THREADS_END_MS;
      await Promise.all([closeServer(this.server, graceUntil(serversDeadlineMs), this.apiConnections), closeServer(this.probes, graceUntil(serversDeadlineMs), this.probeConnections)]);
      await this.releaseThreads(deadlineMs);
    })();
    return this.closing;
  }

  /** Counters of the runtime. */
  stats(): ExtensionStats {
    return {
      activeExecutions: this.store.size,
      stopQueueDepth: this.table.queueDepth(),
      stopEventsEnqueued: this.table.enqueuedTotal(),
      stopQueueStalls: this.stopQueue.queueStalls,
      stops: { ...this.lifecycle.stats },
      watchdog: this.table.watchdogStats(),
      pools: this.pools.stats(),
      bodies: this.bodyThreads.stats(),
      recentStopBytes: this.store.recentStopBytes,
    };
  }

  /**
   * Wait for the stops in progress until shortly before `deadlineMs` (`Date.now()` scale), then end
   * every thread by the deadline. False if some thread did not exit (blocked in a native call).
   */
  private async releaseThreads(deadlineMs: number): Promise<boolean> {
    this.releasing = true;
    const unfinished = await this.lifecycle.drain(deadlineMs - THREADS_END_MS);
    if (unfinished > 0) this.logger.error({ unfinished }, 'stops still running at the shutdown deadline were abandoned; their executions may not be rolled back');
    await this.stopQueue.close();
    clearInterval(this.mainStamps);
    this.table.stopWatchdog();
    this.metrics.close();
    const ended = await settlesWithin(Promise.all([this.watchdog.terminate(), this.pools.close(), this.bodyThreads.close()]), Math.max(0, deadlineMs - Date.now()));
    if (!ended) this.logger.error('worker threads still running at the shutdown deadline (blocked in a native call?); abandoning them');
    return ended;
  }
}

/** How long a server may wait for open requests when the shutdown must be over at `deadlineMs`. */
function graceUntil(deadlineMs: number): number {
  return Math.max(0, Math.min(HTTP_CLOSE_GRACE_MS, deadlineMs - Date.now()));
}

/** The probes (and `/metrics`) first, then the extension: how the probes share a unix socket with the extension. */
function withProbes(state: ProbeState, metrics: ExtensionMetrics, app: RequestListener): RequestListener {
  const probes = probeHandler(state, metrics);
  return (req, res) => {
    if (!probes(req, res)) app(req, res);
  };
}

/** Close a server, letting open requests finish for up to `graceMs`. */
async function closeServer(server: Server | undefined, graceMs: number, connections: ConnectionGuard | undefined): Promise<void> {
  if (server === undefined || !server.listening) return;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => {
    server.closeAllConnections();
    // The HTTP layer knows only connections with a finished TLS handshake: the rest would keep
    // server.close() waiting for the handshake timeout (two minutes).
    connections?.destroyAll();
  }, graceMs);
  await closed;
  clearTimeout(timer);
}
