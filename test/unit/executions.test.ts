/**
 * The execution store's memory of finished stops: bounded by count and by bytes, whatever the age
 * and the "keep the last 1,000" floor; and the pending body reports a failed stop puts back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { randomUUID } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ExecutionStore, MAX_KEPT_ANSWER_BYTES, outcomeMemoryBound, PendingReports, type StopOutcome } from '../../src/runtime/executions.js';
import { ControlTable, Reason } from '../../src/shm/table.js';

function outcome(messageBytes: number): StopOutcome {
  return {
    reason: Reason.Agent,
    succeeded: true,
    httpStatus: 200,
    body: { messages: [{ message: 'x'.repeat(messageBytes) }] },
    finishedAtMs: 0,
  };
}

test('remembered stop answers are bounded by bytes; their records stay, so a repeated stop is never run again', () => {
  const store = new ExecutionStore(ControlTable.create(1), 3_600_000);
  // 1,000 answers of 60 KiB each (under the per-answer cap): 60 MiB, more than the answers' bound.
  const bytesEach = 60 * 1024;
  for (let i = 0; i < 1_000; i++) store.remember(`id-${i}`, 'action', outcome(bytesEach));
  assert.ok(store.recentStopBytes <= outcomeMemoryBound(ExecutionStore.RAN), `${store.recentStopBytes} bytes kept`);
  assert.deepEqual(store.recentStopCounts, { ran: 1_000, stateless: 0 }, 'every record is kept');
  const oldest = store.recentStop('id-0');
  assert.ok(oldest !== undefined, 'the oldest record is kept');
  assert.match(JSON.stringify(oldest.outcome.body), /no longer kept/, 'the oldest answer went first');
  assert.equal(oldest.outcome.succeeded, true);
  assert.equal(JSON.stringify(store.recentStop('id-999')?.outcome.body).length > bytesEach, true, 'the newest answer is kept');
  // An answer above the per-answer cap is never kept, whatever room there is.
  store.remember('huge', 'action', outcome(MAX_KEPT_ANSWER_BYTES + 1));
  assert.match(JSON.stringify(store.recentStop('huge')?.outcome.body), /no longer kept/);
  // Remembering an id again replaces it, and its bytes are not counted twice.
  const small = new ExecutionStore(ControlTable.create(1), 3_600_000);
  for (let i = 0; i < 2_000; i++) small.remember(`id-${i}`, 'action', outcome(10));
  assert.ok(small.recentStop('id-0') !== undefined, 'young small outcomes are all kept');
  const before = small.recentStopBytes;
  small.remember('id-5', 'action', outcome(10));
  assert.equal(small.recentStopBytes, before);
});

test('a remembered answer is parsed when it is read, once per request; each request gets its own copy', () => {
  const store = new ExecutionStore(ControlTable.create(1), 3_600_000);
  store.remember('id', 'action', { ...outcome(0), body: { messages: [{ message: 'kept' }] } });
  const first = store.recentStop('id');
  assert.ok(first !== undefined);
  assert.equal(first.outcome.reason, Reason.Agent);
  assert.deepEqual(first.outcome.body, { messages: [{ message: 'kept' }] });
  assert.equal(first.outcome.body, first.outcome.body, 'parsed once');
  assert.notEqual(store.recentStop('id')?.outcome.body, first.outcome.body, 'a fresh copy for the next request');
});

test('stateless outcomes are bounded by their own count: a flood of them evicts nothing that ran here', () => {
  const store = new ExecutionStore(ControlTable.create(1), 3_600_000);
  store.remember('ran', 'action', outcome(10));
  for (let i = 0; i < ExecutionStore.STATELESS.maxCount + 500; i++) store.remember(`unknown-${i}`, 'action', { ...outcome(10), stateless: true });
  assert.deepEqual(store.recentStopCounts, { ran: 1, stateless: ExecutionStore.STATELESS.maxCount });
  assert.ok(store.recentStop('ran') !== undefined);
  assert.equal(store.recentStop('unknown-0'), undefined, 'the oldest stateless outcome went');
});

test('the heap a remembered outcome takes stays within what is accounted for it', () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const store = new ExecutionStore(ControlTable.create(1), 3_600_000);
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < 20_000; i++) store.remember(randomUUID(), 'com.example.action', outcome(100));
  gc();
  const heldBytes = process.memoryUsage().heapUsed - before;
  assert.ok(heldBytes <= store.recentStopBytes * 1.1, `heap grew by ${heldBytes} bytes; accounted ${store.recentStopBytes}`);
});

test('reports a failed stop took are put back in front of newer ones, within the per-poll bound', () => {
  const reports = new PendingReports();
  reports.add([{ message: 'old' }], []);
  const taken = reports.drain();
  reports.add([{ message: 'new' }], []);
  reports.putBack(taken);
  assert.deepEqual(reports.drain().messages.map((m) => m.message), ['old', 'new']);
});
