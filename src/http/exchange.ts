/**
 * The end of one request/response exchange, as everything that holds something per request needs
 * it (the access log, a large body's read turn, the Request-Timeout timer, a router's abort signal).
 *
 * A response's `close` is not enough: a request pipelined on a keep-alive connection behind one
 * not yet answered has its response queued, and when the client goes away Node never emits
 * `close` for that queued response. The connection's `close` ends it then.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** The exchange ends of a connection still waiting for their end (one `close` listener per connection, not per request). */
const PENDING_ENDS = Symbol('pendingExchangeEnds');
type Connection = NonNullable<IncomingMessage['socket']> & { [PENDING_ENDS]?: Set<() => void> };

/**
 * Call `listener` once, on the first of: `res` closes (answered, or the client left), or the
 * connection closes. Returns a function that cancels the call (idempotent).
 */
export function onExchangeEnd(req: IncomingMessage, res: ServerResponse, listener: () => void): () => void {
  const socket = req.socket as Connection | null;
  let pending = true;
  const cancel = (): void => {
    pending = false;
    res.off('close', end);
    socket?.[PENDING_ENDS]?.delete(end);
  };
  const end = (): void => {
    if (!pending) return;
    cancel();
    listener();
  };
  res.once('close', end);
  if (socket !== null) {
    // Its connection closed already (its `close` will not come again): the exchange is over.
    if (socket.closed) process.nextTick(end);
    else pendingEnds(socket).add(end);
  }
  return cancel;
}

function pendingEnds(socket: Connection): Set<() => void> {
  let ends = socket[PENDING_ENDS];
  if (ends === undefined) {
    const created = new Set<() => void>();
    ends = socket[PENDING_ENDS] = created;
    socket.once('close', () => {
      for (const end of [...created]) end();
    });
  }
  return ends;
}

/** The exchange ended before its answer was complete: the client left, or its connection is gone. */
export function exchangeAbandoned(req: IncomingMessage, res: ServerResponse): boolean {
  return !res.writableFinished && (res.destroyed || req.socket?.destroyed === true);
}
