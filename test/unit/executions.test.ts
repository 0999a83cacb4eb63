/**
 * The execution store's memory of finished stops: bounded by count and by bytes, whatever the age
 * and the "keep the last 1,000" floor; and the pending body reports a failed stop puts back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExecutionStore, PendingReports, type StopOutcome } from '../../src/runtime/executions.js';
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

test('remembered stop outcomes are bounded by bytes, even below the count floor and within the retention', () => {
  const store = new ExecutionStore(ControlTable.create(1), 3_600_000);
  // 100 outcomes of 1 MiB each: far below the 1,000 kept by count, all young — and 100 MiB.
  const bytesEach = 1024 * 1024;
  for (let i = 0; i < 100; i++) store.remember(`id-${i}`, 'action', outcome(bytesEach));
  assert.ok(store.recentStopBytes <= ExecutionStore.RAN.maxBytes, `${store.recentStopBytes} bytes kept`);
  assert.ok(store.recentStopBytes > ExecutionStore.RAN.maxBytes - 2 * bytesEach, 'it keeps as many as fit');
  assert.equal(store.recentStop('id-0'), undefined, 'the oldest went first');
  assert.ok(store.recentStop('id-99') !== undefined, 'the newest is kept');
  // Small outcomes: the count floor and the retention apply as before.
  const small = new ExecutionStore(ControlTable.create(1), 3_600_000);
  for (let i = 0; i < 2_000; i++) small.remember(`id-${i}`, 'action', outcome(10));
  assert.ok(small.recentStop('id-0') !== undefined, 'young small outcomes are all kept');
  // Remembering an id again replaces it, and its bytes are not counted twice.
  const before = small.recentStopBytes;
  small.remember('id-5', 'action', outcome(10));
  assert.equal(small.recentStopBytes, before);
});

test('reports a failed stop took are put back in front of newer ones, within the per-poll bound', () => {
  const reports = new PendingReports();
  reports.add([{ message: 'old' }], []);
  const taken = reports.drain();
  reports.add([{ message: 'new' }], []);
  reports.putBack(taken);
  assert.deepEqual(reports.drain().messages.map((m) => m.message), ['old', 'new']);
});
