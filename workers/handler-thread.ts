/**
 * Entry of a handler-lane thread (`src/runtime/handler-threads.ts`): loads `./handlers.ts` (and
 * with it the action modules), says `ready`, then answers `{ id, task }` messages on its port with
 * `{ id, reply }`. The main thread sends a thread one task at a time.
 *
 * A file of its own rather than `./handlers.ts` serving the port itself: `./handlers.ts` is also
 * piscina's task module on the large-request lane, where the port belongs to piscina, and telling
 * the two apart from inside would be a guess. Here the handler function is the same on both lanes.
 *
 * Between tasks the thread waits for a message, its event loop turning: a timer or a keep-alive
 * connection a handler left behind is serviced while the thread is idle.
 */
import { parentPort } from 'node:worker_threads';
import type { HandlerThreadCommand, HandlerThreadEvent } from '../src/runtime/protocol.js';
import runHandler from './handlers.js';

const port = parentPort!;

function post(event: HandlerThreadEvent): void {
  port.postMessage(event);
}

port.on('message', ({ id, task }: HandlerThreadCommand) => {
  runHandler(task).then(
    (reply) => post({ id, reply }),
    // runHandler turns every failure into a reply; should it throw all the same, the task fails and the thread stays.
    (error: unknown) => post({ id, failure: error instanceof Error ? error.message : String(error) }),
  );
});
post({ id: undefined, ready: true });
