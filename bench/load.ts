/**
 * Bench child: the load generator, playing the agent over real HTTP (undici keep-alive pools,
 * autocannon for throughput). It runs in its own process so it never competes with the server's
 * main thread inside one event loop.
 */
import { randomUUID } from 'node:crypto';
import autocannon from 'autocannon';
import { Client, Pool } from 'undici';
import { serveParent } from './ipc.js';
import { mulberry32, shuffle } from './stats.js';
import { OBSERVED_AT_METRIC, STOP_TO_BODY_END_METRIC } from './actions/spin-action.js';
import { nowUs } from './workload.js';

/** A started execution as the agent knows it. */
export interface AgentExecution {
  id: string;
  action: string;
  state: unknown;
}

interface Answer {
  status: number;
  body: Record<string, unknown> | undefined;
  ms: number;
}

const pools = new Map<string, Pool>();
function poolFor(base: string): Pool {
  let pool = pools.get(base);
  if (pool === undefined) {
    pool = new Pool(base, { connections: 256, pipelining: 1, keepAliveTimeout: 60_000 });
    pools.set(base, pool);
  }
  return pool;
}

/**
 * POST `body` as JSON and read the whole answer. Through undici's `dispatch` with a handler that
 * collects the chunks, not `request()`: no response stream and no promise per chunk. The load
 * generator shares the 2 cores with the server it measures, so its CPU per request is taken from
 * the server's; `dispatch` costs about a fifth less of it per request (same requests, same
 * connections: keep-alive, no pipelining, like an agent).
 */
function post(base: string, path: string, body: unknown): Promise<Answer> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    let status = 0;
    const chunks: Buffer[] = [];
    poolFor(base).dispatch(
      { path, method: 'POST', headers: JSON_HEADERS, body: JSON.stringify(body) },
      {
        onConnect: () => undefined,
        onHeaders: (statusCode) => {
          status = statusCode;
          return true;
        },
        onData: (chunk) => {
          chunks.push(chunk);
          return true;
        },
        onComplete: () => {
          const ms = performance.now() - started;
          let parsed: Record<string, unknown> | undefined;
          try {
            parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
          } catch {
            parsed = undefined;
          }
          resolve({ status, body: parsed, ms });
        },
        onError: reject,
      },
    );
  });
}

const JSON_HEADERS = { 'content-type': 'application/json' };

/** Run `task` for every item with at most `concurrency` in flight. */
async function forEachLimited<T>(items: readonly T[], concurrency: number, task: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      await task(items[index]!, index);
    }
  });
  await Promise.all(lanes);
}

function describeAnswer(phase: string, answer: Answer): string {
  const error = answer.body?.['error'] as { title?: string } | undefined;
  const title = error?.title ?? (answer.body?.['title'] as string | undefined);
  return `${phase} → ${answer.status}${title === undefined ? '' : ` ${title}`}`;
}

/** Executions to prepare and start: `count` of `action`, with the spin action's config. */
export interface SetupItem {
  action: string;
  burn: boolean;
  count: number;
  /** Share of each window a cpu body burns (default 100). */
  dutyPct?: number;
  /**
   * Poll each execution's status every this many ms from the moment its start answered, until
   * `releaseKeepAlive`: its heartbeat cannot expire however long the rest of the setup takes.
   */
  keepAliveMs?: number;
}

/** Executions kept alive by status polling, by polling interval. */
const keptAlive = new Map<number, { base: string; executions: { execution: AgentExecution; untilMs: number }[]; loop: Promise<void> }>();
const keepAliveProblems = { http5xx: 0, failures: [] as string[] };

function keepAlive(base: string, execution: AgentExecution, intervalMs: number): void {
  let group = keptAlive.get(intervalMs);
  if (group === undefined) {
    const created = { base, executions: [] as { execution: AgentExecution; untilMs: number }[], loop: Promise.resolve() };
    created.loop = (async () => {
      for (;;) {
        const now = performance.now();
        const due = created.executions.filter((kept) => now < kept.untilMs);
        if (due.length === 0 && created.executions.every((kept) => Number.isFinite(kept.untilMs))) return;
        await Promise.all(
          due.map(async ({ execution: e }) => {
            const answer = await post(created.base, `/${e.action}/status`, { executionId: e.id, state: e.state });
            if (answer.status >= 500) keepAliveProblems.http5xx++;
            if (answer.status !== 200 || answer.body?.['completed'] === true) keepAliveProblems.failures.push(`${e.id}: kept alive, ${describeAnswer('status', answer)}`);
          }),
        );
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    })();
    group = created;
    keptAlive.set(intervalMs, group);
  }
  group.executions.push({ execution, untilMs: Number.POSITIVE_INFINITY });
}

/**
 * Stop keeping executions alive: each group's executions get their last status spread evenly over
 * `spreadMs` from now (so their heartbeats expire one after another, not in one watchdog tick).
 * Resolves once every poll ended, with the error answers seen while keeping them alive.
 */
async function releaseKeepAlive(payload: { spreadMs: number }) {
  const now = performance.now();
  for (const group of keptAlive.values()) {
    group.executions.forEach((kept, i) => (kept.untilMs = now + (payload.spreadMs * i) / Math.max(group.executions.length, 1)));
  }
  await Promise.all([...keptAlive.values()].map((group) => group.loop));
  keptAlive.clear();
  const result = { http5xx: keepAliveProblems.http5xx, failures: keepAliveProblems.failures.slice(0, 10), failureCount: keepAliveProblems.failures.length };
  keepAliveProblems.http5xx = 0;
  keepAliveProblems.failures = [];
  return result;
}

/** Prepare and start executions (in order), `concurrency` at a time. */
async function setup(payload: { base: string; items: SetupItem[]; concurrency: number }) {
  const plan = payload.items.flatMap((item) => Array.from({ length: item.count }, () => item));
  const executions: AgentExecution[] = [];
  const failures: string[] = [];
  const started = performance.now();
  await forEachLimited(plan, payload.concurrency, async ({ action, burn, dutyPct, keepAliveMs }) => {
    const id = randomUUID();
    const config = { duration: 600_000, burn, ...(dutyPct === undefined ? {} : { dutyPct }) };
    const prepared = await post(payload.base, `/${action}/prepare`, { executionId: id, config });
    if (prepared.status !== 200 || prepared.body?.['error'] !== undefined) return void failures.push(describeAnswer('prepare', prepared));
    const startedAnswer = await post(payload.base, `/${action}/start`, { executionId: id, state: prepared.body?.['state'] });
    if (startedAnswer.status !== 200 || startedAnswer.body?.['error'] !== undefined) return void failures.push(describeAnswer('start', startedAnswer));
    const execution = { id, action, state: startedAnswer.body?.['state'] ?? prepared.body?.['state'] };
    executions.push(execution);
    if (keepAliveMs !== undefined) keepAlive(payload.base, execution, keepAliveMs);
  });
  return { executions, failures, elapsedMs: performance.now() - started };
}

/** What an agent stop answered, as a category: `stopped`, `stopped by extension: <reason>` or `unexpected: …`. */
function classifyStop(answer: Answer): string {
  if (answer.status !== 200) return `unexpected: ${describeAnswer('stop', answer)}`;
  const error = answer.body?.['error'] as { title?: string } | undefined;
  if (error === undefined) return 'stopped';
  const prefix = 'Action was stopped by extension ';
  if (error.title?.startsWith(prefix)) return `stopped by extension: ${error.title.slice(prefix.length)}`;
  return `unexpected: ${describeAnswer('stop', answer)}`;
}

interface StormPayload {
  base: string;
  executions: AgentExecution[];
  /** Executions whose status the pollers keep asking (the ones that must not expire). */
  statusTargets: AgentExecution[];
  stopsPerExecution: number;
  /** Executions whose stops are in flight at once (each with all its concurrent stops). */
  concurrency: number;
  statusPollers: number;
  serverPid: number;
  /** Send SIGUSR1 once this share of executions had their stops sent. */
  usr1AfterShare: number;
  seed: number;
}

/**
 * The storm: every execution gets `stopsPerExecution` agent stops sent at the same moment, in a
 * seeded random order of executions, while pollers ask for status and, part-way through, the
 * server receives a real SIGUSR1.
 */
async function storm(payload: StormPayload) {
  const order = shuffle([...payload.executions], mulberry32(payload.seed));
  const stopLatenciesMs: number[] = [];
  const statusLatenciesMs: number[] = [];
  const answers: Record<string, number> = {};
  let http5xx = 0;
  let statusRequests = 0;
  let stopRequests = 0;
  let usr1SentAtMs: number | undefined;
  const started = performance.now();
  const usr1At = Math.floor(order.length * payload.usr1AfterShare);
  let stopsDone = false;
  const random = mulberry32(payload.seed ^ 0x5bd1e995);
  const cpuBefore = process.cpuUsage();

  const pollers = Array.from({ length: payload.statusTargets.length === 0 ? 0 : payload.statusPollers }, async () => {
    while (!stopsDone) {
      const target = payload.statusTargets[Math.floor(random() * payload.statusTargets.length)]!;
      const answer = await post(payload.base, `/${target.action}/status`, { executionId: target.id, state: target.state });
      statusRequests++;
      statusLatenciesMs.push(answer.ms);
      if (answer.status >= 500) http5xx++;
      if (answer.status !== 200) answers[`status: ${describeAnswer('status', answer)}`] = (answers[`status: ${describeAnswer('status', answer)}`] ?? 0) + 1;
    }
  });

  await forEachLimited(order, payload.concurrency, async (execution, index) => {
    if (index === usr1At) {
      process.kill(payload.serverPid, 'SIGUSR1');
      usr1SentAtMs = performance.now() - started;
    }
    const stops = Array.from({ length: payload.stopsPerExecution }, () =>
      post(payload.base, `/${execution.action}/stop`, { executionId: execution.id, state: execution.state }),
    );
    stopRequests += stops.length;
    for (const answer of await Promise.all(stops)) {
      stopLatenciesMs.push(answer.ms);
      if (answer.status >= 500) http5xx++;
      const kind = classifyStop(answer);
      answers[kind] = (answers[kind] ?? 0) + 1;
    }
  });
  const stopsAnsweredMs = performance.now() - started;
  stopsDone = true;
  await Promise.all(pollers);
  const cpu = process.cpuUsage(cpuBefore);
  return { stopLatenciesMs, statusLatenciesMs, stopRequests, statusRequests, http5xx, answers, usr1SentAtMs, stopsAnsweredMs, cpuUs: cpu.user + cpu.system };
}

/** One status per execution after the storm: each must say `completed: true`. */
async function finalStatus(payload: { base: string; executions: AgentExecution[]; concurrency: number }) {
  const notCompleted: string[] = [];
  let http5xx = 0;
  await forEachLimited(payload.executions, payload.concurrency, async (execution) => {
    const answer = await post(payload.base, `/${execution.action}/status`, { executionId: execution.id, state: execution.state });
    if (answer.status >= 500) http5xx++;
    if (answer.status !== 200 || answer.body?.['completed'] !== true) notCompleted.push(`${execution.id}: ${describeAnswer('status', answer)}`);
  });
  return { notCompleted, http5xx };
}

/** Agent stops for a batch of executions, `concurrency` in flight; wall time of the batch. */
async function stopBatch(payload: { base: string; executions: AgentExecution[]; concurrency: number }) {
  const failures: string[] = [];
  const started = performance.now();
  await forEachLimited(payload.executions, payload.concurrency, async (execution) => {
    const answer = await post(payload.base, `/${execution.action}/stop`, { executionId: execution.id, state: execution.state });
    if (answer.status !== 200 || answer.body?.['error'] !== undefined) failures.push(describeAnswer('stop', answer));
  });
  return { elapsedMs: performance.now() - started, failures };
}

/** Sequential status requests for `durationMs`, round-robin over `targets`: latency of each. */
async function statusLatency(payload: { base: string; targets: AgentExecution[]; durationMs: number }) {
  const latenciesMs: number[] = [];
  const failures: string[] = [];
  const until = performance.now() + payload.durationMs;
  for (let i = 0; performance.now() < until; i++) {
    const target = payload.targets[i % payload.targets.length]!;
    const answer = await post(payload.base, `/${target.action}/status`, { executionId: target.id, state: target.state });
    latenciesMs.push(answer.ms);
    if (answer.status !== 200) failures.push(describeAnswer('status', answer));
  }
  return { latenciesMs, failures };
}

/** One status answer (the JSON the echo baseline repeats). */
async function statusOnce(payload: { base: string; execution: AgentExecution }) {
  const answer = await post(payload.base, `/${payload.execution.action}/status`, { executionId: payload.execution.id, state: payload.execution.state });
  return answer.body;
}

/**
 * Requests/s of `POST url` for `durationS` seconds (autocannon). Each connection sends its own
 * body from `bodies` (one execution per connection, polled one request at a time — how the agent
 * polls many executions).
 */
async function throughput(payload: { url: string; bodies: unknown[]; durationS: number; connections: number }) {
  const bodies = payload.bodies.map((body) => JSON.stringify(body));
  let assigned = 0;
  const result = await autocannon({
    url: payload.url,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    duration: payload.durationS,
    connections: payload.connections,
    pipelining: 1,
    requests: [
      {
        setupRequest: (request, context: { body?: string }) => {
          context.body ??= bodies[assigned++ % bodies.length]!;
          return { ...request, body: context.body };
        },
      },
    ],
  });
  return { rps: result.requests.average, total: result.requests.total, non2xx: result.non2xx, errors: result.errors, timeouts: result.timeouts, p99Ms: result.latency.p99 };
}

/**
 * Stop latency through the runtime, one execution at a time: start a burning body, stop it over
 * HTTP, and read from the stop answer (a) the runtime's stop-request → body-end time and (b) the
 * body's own observation time, compared with the moment this process sent the stop.
 */
async function sabLatency(payload: { base: string; samples: number; settleMs: number }) {
  const stopToBodyEndUs: number[] = [];
  const sendToObservedUs: number[] = [];
  const stopRoundTripMs: number[] = [];
  const failures: string[] = [];
  let notRunning = 0;
  for (let i = 0; i < payload.samples; i++) {
    const { executions, failures: setupFailures } = await setup({ base: payload.base, items: [{ action: 'bench.spin', burn: true, count: 1 }], concurrency: 1 });
    failures.push(...setupFailures);
    const execution = executions[0];
    if (execution === undefined) continue;
    await new Promise((resolve) => setTimeout(resolve, payload.settleMs));
    const sentAtUs = nowUs();
    const answer = await post(payload.base, '/bench.spin/stop', { executionId: execution.id, state: execution.state });
    const metrics = (answer.body?.['metrics'] ?? []) as { name: string; value: number }[];
    const bodyEnd = metrics.find((m) => m.name === STOP_TO_BODY_END_METRIC)?.value;
    const observedAt = metrics.find((m) => m.name === OBSERVED_AT_METRIC)?.value;
    if (answer.status !== 200) {
      failures.push(describeAnswer('stop', answer));
      continue;
    }
    // No metrics: the body had not started yet (skipped) — not a stop of a running body; try again.
    if (bodyEnd === undefined || observedAt === undefined) {
      notRunning++;
      if (notRunning > payload.samples) failures.push('the body was never running when the stop came');
      else i--;
      continue;
    }
    stopToBodyEndUs.push(bodyEnd);
    sendToObservedUs.push(observedAt - sentAtUs);
    stopRoundTripMs.push(answer.ms);
  }
  return { stopToBodyEndUs, sendToObservedUs, stopRoundTripMs, failures };
}

/**
 * The well-behaved agent of hostileFlood: each execution polled in a loop of its own, one status
 * at a time and `intervalMs` after the previous answer (as the agent polls at the action's call
 * interval), from `agentStart` until `agentEnd`. Each latency is filed under the phase the parent
 * had set (`agentPhase`) when the request was sent.
 */
const agent = {
  phase: 'warm-up',
  running: false,
  loops: [] as Promise<void>[],
  latenciesMs: {} as Record<string, number[]>,
  /** Executions whose status said they ended (completed, or an error such as a heartbeat timeout). */
  stopped: [] as { id: string; phase: string; title: string }[],
  failures: [] as string[],
};

async function agentStart(payload: { base: string; action: string; count: number; intervalMs: number }) {
  if (agent.running) throw new Error('the agent is already polling');
  const { executions, failures } = await setup({ base: payload.base, items: [{ action: payload.action, burn: true, count: payload.count }], concurrency: payload.count });
  if (failures.length > 0) throw new Error(`agent setup failed: ${failures.join('; ')}`);
  Object.assign(agent, { phase: 'warm-up', running: true, latenciesMs: {}, stopped: [], failures: [] });
  agent.loops = executions.map(async (execution) => {
    while (agent.running) {
      const phase = agent.phase;
      const answer = await post(payload.base, `/${execution.action}/status`, { executionId: execution.id, state: execution.state });
      (agent.latenciesMs[phase] ??= []).push(answer.ms);
      if (answer.status !== 200) agent.failures.push(`${phase}: ${describeAnswer('status', answer)}`);
      else if (answer.body?.['completed'] === true) {
        const error = answer.body['error'] as { title?: string } | undefined;
        agent.stopped.push({ id: execution.id, phase, title: error?.title ?? 'completed' });
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, payload.intervalMs));
    }
  });
  return { executions };
}

function agentPhase(payload: { phase: string }) {
  agent.phase = payload.phase;
  return {};
}

async function agentEnd() {
  agent.running = false;
  await Promise.all(agent.loops);
  return { latenciesMs: agent.latenciesMs, stopped: agent.stopped, failures: agent.failures.slice(0, 10), failureCount: agent.failures.length };
}

/** The bodies a flood client sends, in turn. `stopUnknown` twice: the shape the runtime accepts and acts on. */
const FLOOD_VARIANTS = ['stopUnknown', 'truncated', 'stopUnknown', 'invalidId'] as const;
type FloodVariant = (typeof FLOOD_VARIANTS)[number];
/**
 * The repeated unit of the flood's state: nested arrays of one number each. Of the shapes tried
 * (flat numbers, pairs, objects, strings, arrays nested 1–3 deep), many tiny arrays cost the server
 * the most per byte (2.5–4 s a 5 MiB body, flat numbers 0.4–0.6 s): a JSON value and a V8 array
 * every two or three bytes, to parse and to clone to a handler thread.
 */
const FLOOD_UNIT = '[[0],[1]],';
const UUID_PLACEHOLDER = '00000000-0000-4000-8000-000000000000';

/**
 * A JSON text of exactly `sizeBytes` (the largest body the server accepts):
 * `{"executionId":…,"state":{"samples":[[[0],[1]],…]}}`, padded with whitespace.
 * - `stopUnknown`: valid; the id is replaced per request, so each is a stop for an execution this
 *   server never saw (the author's stop runs statelessly on a handler thread, reference behaviour);
 * - `truncated`: the same text without its final brace: malformed JSON, found at the last byte;
 * - `invalidId`: valid JSON whose `executionId` is not a UUID: refused by the schema after parsing.
 */
function floodBody(variant: FloodVariant, sizeBytes: number): { body: Buffer; idOffset: number } {
  const id = variant === 'invalidId' ? 'not-an-execution-id-000000000000000000' : UUID_PLACEHOLDER;
  const head = `{"executionId":"${id}","state":{"samples":[`;
  const tail = '[0]]}}';
  const units = Math.floor((sizeBytes - head.length - tail.length) / FLOOD_UNIT.length);
  let text = head + FLOOD_UNIT.repeat(units) + tail;
  text = text.slice(0, -1) + ' '.repeat(sizeBytes - text.length) + '}';
  if (variant === 'truncated') text = `${text.slice(0, -1)} `;
  return { body: Buffer.from(text), idOffset: variant === 'stopUnknown' ? head.indexOf(UUID_PLACEHOLDER) : -1 };
}

/**
 * hostileFlood's flood: `clients` connections, each posting maximum-size bodies to `path` one
 * after another (the next once the previous is answered) until `durationMs` passed; resolves when
 * the last one is answered. Answers are counted by variant and HTTP status, failures by error code.
 */
async function flood(payload: { base: string; path: string; clients: number; durationMs: number; bodyBytes: number }) {
  const templates = new Map(FLOOD_VARIANTS.map((variant) => [variant, floodBody(variant, payload.bodyBytes)]));
  const answers: Record<string, number> = {};
  let completed = 0;
  let failed = 0;
  const started = performance.now();
  const until = started + payload.durationMs;
  await Promise.all(
    Array.from({ length: payload.clients }, async (_, client) => {
      const connection = new Client(payload.base, { pipelining: 1, keepAliveTimeout: 60_000 });
      try {
        for (let i = client; performance.now() < until; i++) {
          const variant = FLOOD_VARIANTS[i % FLOOD_VARIANTS.length]!;
          const template = templates.get(variant)!;
          let body = template.body;
          if (template.idOffset >= 0) {
            body = Buffer.from(template.body);
            body.write(randomUUID(), template.idOffset, 'latin1');
          }
          let key: string;
          try {
            const answer = await connection.request({ path: payload.path, method: 'POST', headers: { 'content-type': 'application/json' }, body });
            await answer.body.text();
            key = `${variant} → ${answer.statusCode}`;
            completed++;
          } catch (error) {
            key = `${variant} → ${(error as { code?: string }).code ?? (error instanceof Error ? error.message : String(error))}`;
            failed++;
          }
          answers[key] = (answers[key] ?? 0) + 1;
        }
      } finally {
        await connection.close().catch(() => undefined);
      }
    }),
  );
  return { completed, failed, answers, floodMs: performance.now() - started };
}

serveParent({ pid: process.pid }, { setup, releaseKeepAlive, storm, finalStatus, stopBatch, statusLatency, statusOnce, throughput, sabLatency, agentStart, agentPhase, agentEnd, flood });
