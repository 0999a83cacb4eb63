/**
 * The stop queue loop: the main thread's single consumer of the shared-memory stop-event queue.
 *
 * Every stop trigger — agent stop, duplicate agent stops, heartbeat timeout (watchdog thread),
 * signals, a failing body (body thread), expiry, retries — calls `ControlTable.requestStop`; the one
 * winner of its CAS enqueues the slot. This loop wakes on the queue's doorbell, takes each event
 * once (CAS StopRequested → Stopping, with the recovery rules of `StopEventConsumer`) and hands
 * the taken stop to the lifecycle, which runs it.
 */
import type { Logger } from '../logging.js';
import { StopEventConsumer } from '../shm/consumer.js';
import type { ControlTable } from '../shm/table.js';

/** Safety net: drain the queue at least this often even if a doorbell wake-up were missed. */
const IDLE_DRAIN_MS = 1000;
/** While the head cell is reserved but unpublished, look again this soon. */
const PENDING_HEAD_RETRY_MS = 5;

/** Drains the stop queue on the main thread. */
export class StopQueueLoop {
  /** Queue cells skipped because their producer died before publishing (should stay 0). */
  queueStalls = 0;
  private readonly table: ControlTable;
  private readonly logger: Logger;
  private readonly onTaken: (slot: number, control: number, fromSweep: boolean) => void;
  private running = false;
  private loop: Promise<void> | undefined;

  constructor(table: ControlTable, logger: Logger, onTaken: (slot: number, control: number, fromSweep: boolean) => void) {
    this.table = table;
    this.logger = logger;
    this.onTaken = onTaken;
  }

  /** Start consuming. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.consume();
  }

  /** Stop consuming (stops already taken go on in the lifecycle). */
  async close(): Promise<void> {
    this.running = false;
    this.table.ringDoorbell();
    await this.loop;
  }

  private async consume(): Promise<void> {
    const { table } = this;
    const consumer = new StopEventConsumer(table);
    while (this.running) {
      // Read the doorbell before draining: a publication after this read changes it, so the wait
      // below returns at once instead of missing the event.
      const seen = table.doorbell();
      const pass = consumer.pass((slot, control, source) => this.onTaken(slot, control, source === 'sweep'));
      if (pass.skipped || pass.recovered > 0) {
        this.queueStalls += pass.skipped ? 1 : 0;
        this.logger.error({ recovered: pass.recovered, skippedCell: pass.skipped }, 'stop queue: recovered stops whose producer died inside requestStop');
      }
      await table.waitDoorbell(seen, pass.headPending ? PENDING_HEAD_RETRY_MS : IDLE_DRAIN_MS);
    }
  }
}
