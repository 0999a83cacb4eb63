/**
 * A cap on the open connections of one server that sheds the slowest connection instead of
 * refusing the new one.
 *
 * Why shed rather than refuse (as `server.maxConnections` does): a crowd of slow clients
 * (slowloris: a request head or body sent a byte at a time, or connections opened and left silent)
 * would otherwise hold every slot, and the agent — whose connections come and go — would be the
 * one locked out. Shedding the slowest keeps room for whoever actually sends requests.
 *
 * Who is shed, when a connection beyond the cap arrives:
 * 1. a connection whose request is incomplete — nothing sent yet, the head or the TLS handshake
 *    unfinished, or the body still arriving — the oldest first (the connection's age, or for a
 *    keep-alive connection the age of its current request): the longer it has been incomplete, the
 *    more likely it is a slow client and the less a real client loses;
 * 2. else the connection idle the longest between requests (keep-alive);
 * 3. else a connection whose client does not read its answers: the answers back up in the socket
 *    (pipelined requests, never read), which would otherwise hold its slot for as long as the
 *    client likes — the oldest connection first;
 * 4. else (every connection busy with a complete request the extension is answering) the new
 *    connection itself: work in progress is never cut.
 *
 * Bookkeeping is O(1) per connection and request: two insertion-ordered maps (incomplete, idle) whose
 * first entry is the oldest. A request whose body completes is not reported by any event without
 * consuming it, so an entry of the incomplete map is checked when shedding and moved out of it if
 * its request turned out complete (busy, or idle if already answered). Shedding one connection
 * therefore costs O(1) amortised: every entry skipped leaves the map.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { Server as TlsServer } from 'node:tls';
import type { Logger } from '../logging.js';

/** Why a connection was shed (the `reason` label of `actionkit_http_connections_shed_total`). */
export type ShedReason = 'incomplete_request' | 'idle' | 'stalled_reader' | 'refused';

/** Settings of {@link limitConnections}. */
export interface ConnectionLimit {
  /** Open connections kept; the next one sheds another (see the module comment). */
  maxConnections: number;
  /** Which server, in log lines (`api`, `probes`). */
  name: string;
  /** The setting that sets `maxConnections`, named in the warning (none for a fixed cap). */
  setting?: string;
  logger: Logger;
  /** Called for every shed connection (metrics). */
  onShed?: (reason: ShedReason) => void;
}

/** A running limit: what metrics read. */
export interface ConnectionGuard {
  /** Connections open now (shed ones no longer count). */
  readonly open: number;
  /**
   * Destroy every connection, also those the HTTP layer does not know yet (a TLS handshake never
   * started or finished): shutdown's last resort, after `closeAllConnections()`.
   */
  destroyAll(): void;
}

/** At most one warning per this period while connections are being shed; the rest are counted in it. */
export const SHED_LOG_INTERVAL_MS = 10_000;

interface Entry {
  /** The socket the server accepted (for TLS, the TCP socket under the TLS socket). */
  socket: Socket;
  /** The request being read or answered last, if any. */
  request: IncomingMessage | undefined;
  /** Requests received and not yet answered (more than one with pipelining). */
  pending: number;
  shed: boolean;
}

/**
 * Apply the cap to `server` (plain HTTP, HTTPS or a unix socket server). Call before it listens.
 */
export function limitConnections(server: Server | HttpsServer, limit: ConnectionLimit): ConnectionGuard {
  return new Limiter(server, limit);
}

class Limiter implements ConnectionGuard {
  open = 0;
  /** Connections without a complete request, in the order they became so (oldest first). */
  private readonly incomplete = new Map<Socket, Entry>();
  /** Keep-alive connections between requests, in the order they became idle (oldest first). */
  private readonly idle = new Map<Socket, Entry>();
  private readonly entries = new Map<Socket, Entry>();
  /**
   * For TLS: the request's socket is the TLS socket wrapping the accepted TCP socket; the peer
   * address and port name the TCP connection uniquely while it is open.
   */
  private readonly byPeer = new Map<string, Entry>();
  private readonly tls: boolean;
  private readonly shedSinceLog: Record<ShedReason, number> = { incomplete_request: 0, idle: 0, stalled_reader: 0, refused: 0 };
  private lastLogMs = Number.NEGATIVE_INFINITY;

  constructor(
    server: Server | HttpsServer,
    private readonly limit: ConnectionLimit,
  ) {
    this.tls = server instanceof TlsServer;
    server.on('connection', (socket: Socket) => this.onConnection(socket));
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res));
  }

  private onConnection(socket: Socket): void {
    const entry: Entry = { socket, request: undefined, pending: 0, shed: false };
    this.open++;
    this.entries.set(socket, entry);
    const peer = this.tls ? peerOf(socket) : undefined;
    if (peer !== undefined) this.byPeer.set(peer, entry);
    this.incomplete.set(socket, entry);
    socket.once('close', () => {
      this.forget(entry);
      if (peer !== undefined && this.byPeer.get(peer) === entry) this.byPeer.delete(peer);
    });
    if (this.open > this.limit.maxConnections) this.shedOne(entry);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    const entry = this.entries.get(socket) ?? (this.tls ? this.byPeer.get(peerOf(socket) ?? '') : undefined);
    if (entry === undefined || entry.shed) return;
    entry.pending++;
    entry.request = req;
    // From idle to reading a new request: its age counts from now. A connection that had not sent a
    // complete head yet keeps its place (its age counts from the connection).
    if (this.idle.delete(entry.socket)) this.incomplete.set(entry.socket, entry);
    else if (!this.incomplete.has(entry.socket)) this.incomplete.set(entry.socket, entry);
    res.once('close', () => {
      entry.pending--;
      if (entry.pending > 0 || entry.shed || entry.socket.destroyed) return;
      // Answered before its body arrived (a 404, a refusal): the rest is still being read and
      // discarded, so the request is still incomplete.
      if (!req.complete) return;
      this.incomplete.delete(entry.socket);
      this.idle.delete(entry.socket);
      this.idle.set(entry.socket, entry);
    });
  }

  /** Shed one connection to make room for `newcomer` (see the module comment for the order). */
  private shedOne(newcomer: Entry): void {
    for (const [socket, entry] of this.incomplete) {
      if (entry === newcomer) continue;
      if (entry.request?.complete === true) {
        // Its request arrived whole since: busy being answered, or (answered already) idle.
        this.incomplete.delete(socket);
        if (entry.pending === 0) this.idle.set(socket, entry);
        continue;
      }
      return this.shed(entry, 'incomplete_request');
    }
    const [oldestIdle] = this.idle.values();
    if (oldestIdle !== undefined) return this.shed(oldestIdle, 'idle');
    // Every connection busy: a full scan, but only at the cap with nothing slow or idle to shed.
    for (const entry of this.entries.values()) {
      if (entry !== newcomer && entry.socket.writableNeedDrain) return this.shed(entry, 'stalled_reader');
    }
    this.shed(newcomer, 'refused');
  }

  destroyAll(): void {
    for (const socket of [...this.entries.keys()]) socket.destroy();
  }

  private shed(entry: Entry, reason: ShedReason): void {
    this.forget(entry);
    entry.shed = true;
    entry.socket.destroy();
    this.limit.onShed?.(reason);
    this.shedSinceLog[reason]++;
    const nowMs = performance.now();
    if (nowMs - this.lastLogMs < SHED_LOG_INTERVAL_MS) return;
    this.lastLogMs = nowMs;
    const { name: server, maxConnections, setting } = this.limit;
    // `shed` counts every connection shed since the previous warning, this one included.
    this.limit.logger.warn({ server, maxConnections, setting, shed: { ...this.shedSinceLog } }, 'connection cap reached: shedding the slowest connections');
    for (const key of Object.keys(this.shedSinceLog) as ShedReason[]) this.shedSinceLog[key] = 0;
  }

  /** Remove `entry` from the bookkeeping, once (shed, then closed, counts once). */
  private forget(entry: Entry): void {
    if (entry.shed || !this.entries.delete(entry.socket)) return;
    this.open--;
    this.incomplete.delete(entry.socket);
    this.idle.delete(entry.socket);
  }
}

function peerOf(socket: Socket): string | undefined {
  return socket.remotePort === undefined ? undefined : `${socket.remoteAddress}|${socket.remotePort}`;
}
