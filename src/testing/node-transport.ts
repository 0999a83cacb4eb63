/**
 * A `fetch` for {@link AgentClient} built on `node:http`/`node:https`, for extensions behind a unix
 * socket or (mutual) TLS with a private CA — without an undici dependency (Node's own `fetch`
 * takes a `dispatcher`, but the undici `Agent` class that would configure one is not part of Node).
 * Used by `actionkit check --unix-socket/--ca/--cert/--key`; tests that have undici can pass
 * `dispatcher` instead.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { AgentClient, AgentClientOptions } from './client.js';

/** Where and how to connect. */
export interface NodeTransportOptions {
  /** Connect to this unix domain socket instead of the URL's host and port. */
  socketPath?: string;
  /** CA certificate(s), PEM, trusted for the extension's certificate (default: Node's bundled roots). */
  ca?: string | Buffer | Array<string | Buffer>;
  /** Client certificate, PEM, for mutual TLS. */
  cert?: string | Buffer;
  /** Key of the client certificate, PEM. */
  key?: string | Buffer;
}

/** Statuses whose response has no body (the `Response` constructor refuses one). */
const NULL_BODY_STATUSES: ReadonlySet<number> = new Set([101, 204, 205, 304]);

/**
 * A `fetch`-compatible function for {@link AgentClientOptions.fetch} that sends every request with
 * `node:http` (or `node:https` for `https:` URLs) using `options`. Bodies — JSON, text, or
 * `FormData` serialised as multipart — are buffered, which is fine for a test client. No connection
 * reuse: each request opens its own connection.
 */
export function nodeTransport(options: NodeTransportOptions = {}): typeof fetch {
  const send = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    // Serialising through Request gives FormData its multipart body and boundary header.
    const body = request.body === null ? undefined : Buffer.from(await request.arrayBuffer());
    const url = new URL(request.url);
    const headers: Record<string, string> = Object.fromEntries(request.headers);
    if (body !== undefined) headers['content-length'] = String(body.length);
    const secure = url.protocol === 'https:';
    const requestOptions: https.RequestOptions = {
      method: request.method,
      hostname: url.hostname,
      port: url.port,
      path: `${url.pathname}${url.search}`,
      headers,
      agent: false,
      ...(options.socketPath === undefined ? {} : { socketPath: options.socketPath }),
      ...(secure ? { ca: options.ca, cert: options.cert, key: options.key } : {}),
      ...(init?.signal === undefined || init.signal === null ? {} : { signal: init.signal }),
    };
    return new Promise<Response>((resolve, reject) => {
      const outgoing = (secure ? https : http).request(requestOptions, (incoming) => {
        const chunks: Buffer[] = [];
        incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
        incoming.on('error', reject);
        incoming.on('end', () => {
          const status = incoming.statusCode ?? 500;
          const responseHeaders = new Headers();
          for (const [name, value] of Object.entries(incoming.headers)) {
            for (const item of Array.isArray(value) ? value : value === undefined ? [] : [value]) responseHeaders.append(name, item);
          }
          const responseBody = NULL_BODY_STATUSES.has(status) ? null : Buffer.concat(chunks);
          resolve(new Response(responseBody, { status, statusText: incoming.statusMessage ?? '', headers: responseHeaders }));
        });
      });
      outgoing.on('error', (error: Error) => reject(new TypeError('fetch failed', { cause: error })));
      outgoing.end(body);
    });
  };
  return send as typeof fetch;
}
