/**
 * Model-based test of the production stop path: the real `Lifecycle`, stop queue loop
 * (`StopEventConsumer`), body lane and body threads, handler pool and watchdog thread of one
 * in-process extension, driven through seeded random schedules, and checked after each schedule
 * against a plain reference model of what may happen to each execution.
 *
 * A schedule runs 1–6 executions side by side. Each: prepare (sometimes failing, sometimes with an
 * uploaded file), maybe start, maybe status polls (a heartbeat) for a while, maybe 1–3 concurrent
 * agent stops; its body returns, throws, crashes its thread (`process.exit`), sleeps, spins,
 * awaits, or ignores the stop (killed after the grace period), on a cpu or io thread; its author
 * stop succeeds, fails once, or always fails. Across the schedule: maybe a SIGUSR1 stop-all;
 * heartbeats expire for executions nobody polls; prepared executions nobody starts expire. The
 * capacity is small, so control blocks are reused all the time.
 *
 * After each schedule (once every execution has ended), per execution:
 * - the author's stop never ran twice at once (begin/end alternate in the call log) and succeeded
 *   exactly once — none if its prepare failed; for an always-failing stop, 1 + retries attempts,
 *   then given up;
 * - no author start after its execution's stop began;
 * - every agent stop was answered, within a bound, with an answer of the reference's forms;
 * - status then says completed;
 * and for the extension: no execution, running body, queued stop or upload folder is left, and
 * the process burns no CPU.
 *
 * Replay: the failure message prints the run seed and the schedule; run
 *   STRESS_SEED=<seed> STRESS_SCHEDULES=<n> node --test dist/test/stress/lifecycle-model.test.js
 * The seed fixes every plan and delay; the OS still decides the exact interleavings. Soak:
 * STRESS_SCHEDULES=100000 (CI runs a fixed number, well within a couple of minutes).
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createExtension, type Extension } from '../../src/index.js';
import type { Reply, RequestScope } from '../../src/runtime/lifecycle.js';
import type { RegisteredAction } from '../../src/runtime/registry.js';
import { RuntimeError } from '../../src/errors.js';
import { fixture, logLines, tempDir } from '../support/harness.js';
import { deriveSeed, envInt, mulberry32, type Rng } from './stress-support.js';

const SCHEDULES = envInt('STRESS_SCHEDULES', 30);
const SEED = envInt('STRESS_SEED', randomInt(2 ** 31));
/** How long the agent waits for a stop answer before the model calls it unanswered. */
const STOP_ANSWER_BOUND_MS = 15_000;
/** How long a schedule may take to settle (every execution ended) before it fails. */
const SETTLE_BOUND_MS = 20_000;
const RETRIES = 2;

const SCOPE: RequestScope = { deadlineMs: undefined, abandoned: () => false };

/** What one execution of a schedule does. */
interface Plan {
  id: string;
  kind: 'cpu' | 'io';
  prepare: 'ok' | 'throw';
  upload: boolean;
  body: 'return' | 'throw' | 'exit' | 'sleep' | 'spin' | 'async' | 'ignore-stop';
  stop: 'ok' | 'fail-once' | 'throw';
  /** ms after the schedule begins. */
  prepareAtMs: number;
  /** undefined: never started. */
  startAfterMs: number | undefined;
  /** Poll status every 50 ms for this long after start (0: never: the heartbeat expires). */
  pollForMs: number;
  /** Agent stops (0–3 at once), this long after start (or prepare). */
  agentStops: number;
  stopAfterMs: number;
}

function planSchedule(rng: Rng, schedule: number): { plans: Plan[]; usr1AtMs: number | undefined } {
  const count = 1 + rng.int(6);
  const plans = Array.from({ length: count }, (_, i): Plan => {
    const started = rng.chance(0.85);
    return {
      id: `00000000-0000-4000-8000-${String(schedule).padStart(6, '0')}${String(i).padStart(6, '0')}`,
      kind: rng.chance(0.5) ? 'cpu' : 'io',
      prepare: rng.chance(0.08) ? 'throw' : 'ok',
      upload: rng.chance(0.25),
      body: rng.pick(['return', 'throw', 'exit', 'sleep', 'spin', 'spin', 'async', 'async', 'ignore-stop'] as const),
      stop: rng.pick(['ok', 'ok', 'ok', 'fail-once', 'fail-once', 'throw'] as const),
      prepareAtMs: rng.int(150),
      startAfterMs: started ? rng.int(100) : undefined,
      pollForMs: rng.chance(0.6) ? rng.int(600) : 0,
      agentStops: rng.pick([0, 1, 1, 2, 3]),
      stopAfterMs: rng.int(500),
    };
  });
  return { plans, usr1AtMs: rng.chance(0.35) ? rng.int(500) : undefined };
}

/** What the model records while a schedule runs. */
interface Observed {
  prepared: Reply | undefined;
  started: Reply | undefined;
  stopAnswers: Reply[];
  violations: string[];
}

/** Call a lifecycle operation the way the HTTP layer does: a RuntimeError becomes its answer. */
async function call(operation: () => Promise<Reply>): Promise<Reply> {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof RuntimeError) return { status: error.httpStatus, body: { ...error.toWire() } };
    throw error;
  }
}

/** The forms an agent stop may be answered with (reference §1.5.4, plus a given-up stop). */
function checkStopAnswer(plan: Plan, answer: Reply, violations: string[]): void {
  const error = answer.body['error'] as { title?: string } | undefined;
  if (answer.status === 200 && error === undefined) return;
  if (answer.status === 200 && /^Action was stopped by extension (agent stop|heartbeat timeout|received signal SIGUSR1|action body failed|prepared but not started in time)$/.test(error?.title ?? '')) return;
  if (answer.status === 500 && answer.body['title'] === 'Failed to stop action.' && plan.stop !== 'ok') return;
  if (answer.status === 404 && plan.prepare === 'throw') return;
  violations.push(`${plan.id}: agent stop answered ${answer.status} ${JSON.stringify(answer.body)}`);
}

async function runSchedule(extension: Extension, actions: Map<string, RegisteredAction>, dirs: { logs: string; uploads: string }, seed: number, schedule: number): Promise<string[]> {
  const rng = mulberry32(seed);
  const { plans, usr1AtMs } = planSchedule(rng, schedule);
  const { lifecycle } = extension.inProcess();
  const callLog = join(dirs.logs, `calls-${schedule}.log`);
  const observed = new Map<string, Observed>(plans.map((plan) => [plan.id, { prepared: undefined, started: undefined, stopAnswers: [], violations: [] }]));
  const stateOf = (reply: Reply | undefined): Record<string, unknown> => (reply?.body['state'] as Record<string, unknown> | undefined) ?? {};

  const drive = async (plan: Plan): Promise<void> => {
    const seen = observed.get(plan.id)!;
    const action = actions.get(plan.kind === 'cpu' ? 'fixture.behave' : 'fixture.behave-io')!;
    await sleep(plan.prepareAtMs);
    const config = { body: plan.body, stop: plan.stop, prepare: plan.prepare, callLog, slowMs: 10 };
    let upload: { folder: string; files: Map<string, string> } | undefined;
    if (plan.upload) {
      // What a multipart prepare leaves before the lifecycle runs: the execution's upload folder.
      const folder = join(dirs.uploads, plan.id);
      mkdirSync(folder, { recursive: true });
      writeFileSync(join(folder, 'payload.txt'), 'uploaded');
      upload = { folder, files: new Map() };
    }
    seen.prepared = await call(() => lifecycle.prepare(action, { executionId: plan.id, config, properties: {} } as never, upload, SCOPE));
    const failedPrepare = seen.prepared.status !== 200 || seen.prepared.body['error'] !== undefined;
    let state = stateOf(seen.prepared);
    const agentStops = async (): Promise<void> => {
      if (plan.agentStops === 0 || failedPrepare) return;
      await sleep(plan.stopAfterMs);
      const answers = await Promise.all(
        Array.from({ length: plan.agentStops }, () =>
          Promise.race([
            call(() => lifecycle.stop(action, { executionId: plan.id, state } as never)),
            sleep(STOP_ANSWER_BOUND_MS).then((): Reply => ({ status: 0, body: { unanswered: true } })),
          ]),
        ),
      );
      for (const answer of answers) {
        if (answer.status === 0) seen.violations.push(`${plan.id}: an agent stop was not answered within ${STOP_ANSWER_BOUND_MS} ms`);
        else checkStopAnswer(plan, answer, seen.violations);
      }
      seen.stopAnswers.push(...answers);
    };
    if (failedPrepare || plan.startAfterMs === undefined) return agentStops();
    await sleep(plan.startAfterMs);
    seen.started = await call(() => lifecycle.start(action, { executionId: plan.id, state } as never, SCOPE));
    state = stateOf(seen.started);
    const startError = seen.started.body['error'] as { title?: string } | undefined;
    if (seen.started.status !== 200) seen.violations.push(`${plan.id}: start answered ${seen.started.status} ${JSON.stringify(seen.started.body)}`);
    if (startError?.title?.endsWith(': none')) seen.violations.push(`${plan.id}: start says stopped for reason "none"`);
    const polling = (async () => {
      const until = performance.now() + plan.pollForMs;
      while (performance.now() < until) {
        const status = await call(() => lifecycle.status(action, { executionId: plan.id, state } as never, SCOPE));
        if (status.status !== 200) seen.violations.push(`${plan.id}: status answered ${status.status}`);
        if (status.body['completed'] === true) return;
        await sleep(50);
      }
    })();
    await Promise.all([polling, agentStops()]);
  };

  let usr1: Promise<void> | undefined;
  const usr1Timer = usr1AtMs === undefined ? undefined : setTimeout(() => (usr1 = extension.simulateSignal('SIGUSR1')), usr1AtMs);
  await Promise.all(plans.map(drive));
  clearTimeout(usr1Timer);
  await usr1;

  // Settle: every execution ends (heartbeat expiry, prepared TTL, retries, give-ups) — or the schedule fails.
  const settleUntil = performance.now() + SETTLE_BOUND_MS;
  while (extension.stats().activeExecutions > 0) {
    if (performance.now() > settleUntil) return [`${extension.stats().activeExecutions} executions still active ${SETTLE_BOUND_MS} ms after the schedule: ${JSON.stringify(extension.stats())}`];
    await sleep(20);
  }

  const violations: string[] = [];
  for (const plan of plans) {
    const seen = observed.get(plan.id)!;
    violations.push(...seen.violations);
    const lines = logLines(callLog, plan.id);
    const where = `${plan.id} (${JSON.stringify({ ...plan, id: undefined })}): calls [${lines.join(', ')}]`;
    // The author's stop never runs twice at once: begin and end alternate.
    let open = false;
    for (const line of lines) {
      if (line === 'stop-begin') {
        if (open) violations.push(`${where}: the author stop ran twice at once`);
        open = true;
      } else if (line === 'stop-ok' || line === 'stop-failed') {
        if (!open) violations.push(`${where}: a stop ended that never began`);
        open = false;
      }
    }
    if (open) violations.push(`${where}: an author stop never ended`);
    const ok = lines.filter((l) => l === 'stop-ok').length;
    const failed = lines.filter((l) => l === 'stop-failed').length;
    const preparedOk = seen.prepared?.status === 200 && seen.prepared.body['error'] === undefined;
    // The reference model of the author's stop.
    if (!preparedOk) {
      if (ok + failed > 0) violations.push(`${where}: an author stop for a failed prepare`);
    } else if (plan.stop === 'ok') {
      if (ok !== 1 || failed !== 0) violations.push(`${where}: expected exactly one successful author stop`);
    } else if (plan.stop === 'fail-once') {
      if (ok !== 1 || failed !== 1) violations.push(`${where}: expected one failed and one successful author stop`);
    } else if (ok !== 0 || failed !== 1 + RETRIES) {
      violations.push(`${where}: an always-failing stop is tried ${1 + RETRIES} times, then given up`);
    }
    const firstStop = lines.indexOf('stop-begin');
    if (firstStop >= 0 && lines.slice(firstStop).includes('start')) violations.push(`${where}: an author start after its stop`);
    if (lines.filter((l) => l === 'start').length > 1) violations.push(`${where}: the author start ran twice`);
    if (preparedOk) {
      const action = actions.get(plan.kind === 'cpu' ? 'fixture.behave' : 'fixture.behave-io')!;
      const status = await call(() => lifecycle.status(action, { executionId: plan.id, state: {} } as never, SCOPE));
      if (status.body['completed'] !== true) violations.push(`${where}: status after the end says ${JSON.stringify(status.body)}`);
    }
  }
  // Everything freed.
  const stats = extension.stats();
  if (stats.bodies.cpuBusy !== 0 || stats.bodies.ioBodies !== 0) violations.push(`bodies still seated: ${JSON.stringify(stats.bodies)}`);
  if (stats.stopQueueDepth !== 0) violations.push(`stop queue depth ${stats.stopQueueDepth}`);
  // A stop that was given up removes its files just after it freed its block: wait a little.
  let leftovers = readdirSync(dirs.uploads);
  for (let tries = 0; leftovers.length > 0 && tries < 100; tries++) {
    await sleep(20);
    leftovers = readdirSync(dirs.uploads);
  }
  if (leftovers.length > 0) violations.push(`upload folders left: ${leftovers.join(', ')}`);
  return violations;
}

test(`lifecycle model: ${SCHEDULES} seeded schedules of prepares, starts, polls, agent stops, SIGUSR1, heartbeat expiry, failing bodies and stops (seed ${SEED})`, { timeout: 60_000 + SCHEDULES * 30_000 }, async (t) => {
  const logs = tempDir('actionkit-model-logs-');
  const uploads = tempDir('actionkit-model-uploads-');
  const extension = await createExtension({
    actions: [fixture('behave'), fixture('behave-io')],
    port: 0,
    healthPort: null,
    handleSignals: false,
    logLevel: 'fatal',
    uploadDir: uploads.path,
    maxExecutions: 4,
    maxBodyThreads: 16,
    ioBodyThreads: 2,
    stopGraceMs: 200,
    heartbeatMinIntervalMs: 50,
    preparedTtlMs: 400,
    stopRetryBaseMs: 20,
    stopRetryAttempts: RETRIES,
    stopAllTimeoutMs: 10_000,
  });
  const actions = new Map(extension.inProcess().registry.all().map((action) => [action.id, action]));
  const totals = { schedules: 0, violations: 0 };
  try {
    for (let schedule = 0; schedule < SCHEDULES; schedule++) {
      const seed = deriveSeed(SEED, schedule);
      const violations = await runSchedule(extension, actions, { logs: logs.path, uploads: uploads.path }, seed, schedule);
      totals.schedules++;
      if (violations.length > 0) {
        assert.fail(
          [
            `schedule ${schedule} of run seed ${SEED} broke the model (${violations.length}):`,
            ...violations.map((v) => `  - ${v}`),
            `replay: STRESS_SEED=${SEED} STRESS_SCHEDULES=${schedule + 1} node --test dist/test/stress/lifecycle-model.test.js`,
          ].join('\n'),
        );
      }
    }
    // CPU idle at the end: no body thread still burns (all ended or killed). A thread the last
    // schedule had replaced may still be booting: a quiet 400 ms must come within 30 s — a body
    // that still spins never gives one.
    let busyMs = Number.POSITIVE_INFINITY;
    for (const quietBy = Date.now() + 30_000; busyMs >= 200 && Date.now() < quietBy; ) {
      const before = process.cpuUsage();
      await sleep(400);
      const used = process.cpuUsage(before);
      busyMs = (used.user + used.system) / 1000;
    }
    assert.ok(busyMs < 200, `the process burned ${busyMs.toFixed(0)} ms of CPU in every 400 ms for 30 s with nothing running`);
    const { stops, bodies } = extension.stats();
    t.diagnostic(`seed ${SEED}: ${totals.schedules} schedules; author stops ${stops.stopHandlerCalls} (${stops.succeeded} ok, ${stops.failed} failed, ${stops.givenUp} given up); bodies cooperative ${stops.bodiesCooperative}, killed ${stops.bodiesKilled}; body threads lost ${bodies.threadsLost}`);
  } finally {
    await extension.close();
    logs.remove();
    uploads.remove();
  }
});
