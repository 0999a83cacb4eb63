/**
 * Where the extension listens (reference §2.1.3): plain HTTP on a TCP port, HTTPS with optional
 * mutual TLS, or a unix domain socket (which takes precedence over TLS). This module owns opening
 * that server, loading and validating the TLS files, and replacing the TLS context when the files
 * are rotated.
 *
 * Rotation, and how it improves on the reference (which re-reads the pair when the key file's
 * mtime grows, checked on every handshake, unsynchronised): a timer stats the certificate, key and
 * CA files every `reloadCheckMs`; when anything changed it loads and validates the whole set, and
 * only a complete, consistent set (certificate parses, key parses and matches it, every CA parses)
 * replaces the server's secure context with `setSecureContext`. A half-written or mismatched
 * replacement is reported once and the previous context keeps serving. A handshake that already
 * began keeps the context it started with, so established connections are untouched. Checks never
 * overlap (one in flight at a time) and run off the connection path: a handshake never waits on
 * the file system.
 *
 * Every server it opens has a connection cap (`maxConnections`, `./connections.ts`) that sheds the
 * slowest connection rather than refusing a new one, so that slow clients cannot hold every file
 * descriptor and lock the agent (and, on a unix socket, the probes) out.
 */
import { once } from 'node:events';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, realpath, stat, unlink } from 'node:fs/promises';
import { createServer as createHttpServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { connect, type AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { ConfigError } from '../config.js';
import type { Logger } from '../logging.js';
import { limitConnections, type ConnectionGuard, type ShedReason } from './connections.js';

/** The TLS files of an HTTPS listener. */
export interface TlsFiles {
  /** PEM certificate, optionally followed by its chain. */
  certFile: string;
  /** PEM private key of the certificate (not encrypted). */
  keyFile: string;
  /** CA certificate files or folders (walked recursively); set → clients must present a certificate signed by one of them. */
  clientCaPaths: readonly string[] | undefined;
}

/**
 * How long an idle keep-alive connection stays open. Node's default (5 s) is shorter than the idle
 * timeout of the agent's Go HTTP client (90 s): the server would close connections the client still
 * counts on, and a POST sent on one as it closes fails with a connection reset (Go does not retry
 * POSTs). The reference server has no idle timeout at all; two minutes outlives the client's.
 */
export const KEEP_ALIVE_TIMEOUT_MS = 120_000;

function keepConnections<S extends Server | HttpsServer>(server: S): S {
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // Must exceed the keep-alive timeout, or a request arriving on an idle connection could be cut.
  server.headersTimeout = KEEP_ALIVE_TIMEOUT_MS + 1_000;
  return server;
}

/** What {@link openListener} needs. */
export interface ListenerSettings {
  /** TCP port; 0 picks a free one. Ignored on a unix socket. */
  port: number;
  /** TCP listen address; undefined = all interfaces. Ignored on a unix socket. */
  host: string | undefined;
  /** Unix domain socket path; takes precedence over TCP and TLS. */
  unixSocket: string | undefined;
  /** Serve HTTPS with these files; ignored on a unix socket. */
  tls: TlsFiles | undefined;
  /** Period of the TLS file change check. */
  tlsReloadCheckMs: number;
  /** Accept queue length. */
  backlog: number;
  /** Open connections kept; beyond, the slowest is shed (`./connections.ts`). */
  maxConnections: number;
  /** Called for every connection shed at the cap (metrics). */
  onShed?: (reason: ShedReason) => void;
}

/** Where an opened listener accepts connections. */
export interface Endpoint {
  /** The TCP port, or undefined on a unix socket. */
  port: number | undefined;
  /** The absolute unix socket path, or undefined on TCP. */
  socketPath: string | undefined;
  /** True when serving HTTPS. */
  tls: boolean;
  /** True when clients must present a certificate signed by one of the configured CAs. */
  mutualTls: boolean;
}

/** An opened listener: the server (close it like any `http.Server`) and where it listens. */
export interface OpenedListener {
  server: Server;
  endpoint: Endpoint;
  /** Its connection cap (open connections, for metrics). */
  connections: ConnectionGuard;
}

const SETTING = {
  cert: 'TLS server certificate (STEADYBIT_EXTENSION_TLS_SERVER_CERT)',
  key: 'TLS server key (STEADYBIT_EXTENSION_TLS_SERVER_KEY)',
  clientCas: 'TLS client CA (STEADYBIT_EXTENSION_TLS_CLIENT_CAS)',
  socket: 'STEADYBIT_EXTENSION_UNIX_SOCKET',
  port: 'STEADYBIT_EXTENSION_PORT',
} as const;

/**
 * Longest unix socket path the kernel accepts (`sun_path` is 108 bytes on Linux, 104 on the BSDs
 * and macOS, both including the terminating NUL).
 */
const MAX_SOCKET_PATH_BYTES = process.platform === 'linux' ? 107 : 103;

/** How long a connection attempt to an existing socket file may take before it counts as stale. */
const SOCKET_PROBE_TIMEOUT_MS = 1_000;

/**
 * Open the extension's server serving `handler` as `settings` say, and resolve once it accepts
 * connections. TLS files are read and validated first; a problem with a file or the socket path
 * rejects with a {@link ConfigError} naming it.
 */
export async function openListener(handler: RequestListener, settings: ListenerSettings, logger: Logger): Promise<OpenedListener> {
  if (settings.unixSocket !== undefined) {
    if (settings.tls !== undefined) logger.warn({ socketPath: settings.unixSocket }, `${SETTING.socket} is set: it takes precedence, the TLS settings are ignored`);
    const socketPath = resolve(settings.unixSocket);
    await prepareSocketPath(socketPath, logger);
    const server = keepConnections(createHttpServer(handler));
    const connections = capConnections(server, settings, logger);
    await listening(server, { path: socketPath, backlog: settings.backlog }, `unix socket ${socketPath}`);
    return { server, endpoint: { port: undefined, socketPath, tls: false, mutualTls: false }, connections };
  }
  if (settings.tls === undefined) {
    const server = keepConnections(createHttpServer(handler));
    const connections = capConnections(server, settings, logger);
    await listening(server, { port: settings.port, host: settings.host, backlog: settings.backlog }, `port ${settings.port} (${SETTING.port})`);
    return { server, endpoint: { port: (server.address() as AddressInfo).port, socketPath: undefined, tls: false, mutualTls: false }, connections };
  }
  const files = settings.tls;
  const material = await loadTlsMaterial(files);
  const mutualTls = material.ca !== undefined;
  const server: HttpsServer = keepConnections(createHttpsServer(
    {
      cert: material.cert,
      key: material.key,
      ca: material.ca,
      // Mutual TLS: a client without a certificate signed by one of the CAs fails the handshake
      // and never reaches HTTP (reference: RequireAndVerifyClientCert).
      requestCert: mutualTls,
      rejectUnauthorized: mutualTls,
    },
    handler,
  ));
  // Scanners, load balancers' TCP checks and clients without the right certificate fail here all
  // the time; as the reference, that is debug noise, not an error.
  server.on('tlsClientError', (error: NodeJS.ErrnoException, socket) => {
    logger.debug({ err: { code: error.code, message: error.message }, remoteAddress: socket.remoteAddress }, 'TLS handshake failed');
  });
  logCertificate(logger, 'TLS certificate loaded', material);
  const connections = capConnections(server, settings, logger);
  await listening(server, { port: settings.port, host: settings.host, backlog: settings.backlog }, `port ${settings.port} (${SETTING.port})`);
  new TlsReloader(server, files, material, settings.tlsReloadCheckMs, logger).start();
  return { server, endpoint: { port: (server.address() as AddressInfo).port, socketPath: undefined, tls: true, mutualTls }, connections };
}

function capConnections(server: Server | HttpsServer, settings: ListenerSettings, logger: Logger): ConnectionGuard {
  return limitConnections(server, { maxConnections: settings.maxConnections, name: 'api', setting: 'ACTIONKIT_MAX_CONNECTIONS', logger, onShed: settings.onShed });
}

async function listening(server: Server, options: { port?: number; host?: string | undefined; path?: string; backlog: number }, where: string): Promise<void> {
  server.listen(options);
  await listenedOrExplained(server, where);
}

/** Errors of `listen()` that are the operator's to fix (port taken, no permission, no such address). */
const SETTING_ERRORS = new Set(['EADDRINUSE', 'EACCES', 'EADDRNOTAVAIL']);

/**
 * Wait until `server` listens. A port that is taken (or not allowed, or an address not on this
 * host) is a {@link ConfigError} naming `where`, so a command line shows one line, not a stack.
 */
export async function listenedOrExplained(server: Server, where: string): Promise<void> {
  try {
    await once(server, 'listening');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== undefined && SETTING_ERRORS.has(code)) throw new ConfigError(`Cannot listen on ${where}: ${(error as Error).message}`);
    throw new Error(`cannot listen on ${where}: ${(error as Error).message}`, { cause: error });
  }
}

// ---------------------------------------------------------------------------------------------
// unix socket
// ---------------------------------------------------------------------------------------------

/**
 * Make `socketPath` listenable: create the missing parent folder (0755, as the reference), and
 * remove a socket file a dead process left behind. Unlike the reference, a socket another process
 * still accepts on, or a path that is not a socket at all, is refused instead of deleted.
 */
async function prepareSocketPath(socketPath: string, logger: Logger): Promise<void> {
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
    throw new ConfigError(`${SETTING.socket}=${socketPath}: the path is ${Buffer.byteLength(socketPath)} bytes long; unix socket paths are limited to ${MAX_SOCKET_PATH_BYTES}`);
  }
  const parent = dirname(socketPath);
  try {
    const created = await mkdir(parent, { recursive: true, mode: 0o755 });
    if (created !== undefined) logger.info({ folder: parent }, 'created the unix socket folder');
  } catch (error) {
    throw new ConfigError(`${SETTING.socket}=${socketPath}: cannot create the folder ${parent}: ${(error as Error).message}`);
  }
  let existing;
  try {
    existing = await lstat(socketPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ConfigError(`${SETTING.socket}=${socketPath}: ${(error as Error).message}`);
  }
  if (!existing.isSocket()) throw new ConfigError(`${SETTING.socket}=${socketPath}: the path exists and is not a socket; not removing it`);
  if (await socketAccepts(socketPath)) throw new ConfigError(`${SETTING.socket}=${socketPath}: another process is listening on this socket`);
  await unlink(socketPath);
  logger.info({ socketPath }, 'removed a stale unix socket file');
}

/** Whether something accepts connections on the socket file (a stale file refuses them). */
function socketAccepts(socketPath: string): Promise<boolean> {
  return new Promise((resolveAccepts) => {
    const socket = connect(socketPath);
    const done = (accepts: boolean): void => {
      socket.destroy();
      resolveAccepts(accepts);
    };
    socket.setTimeout(SOCKET_PROBE_TIMEOUT_MS, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

// ---------------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------------

/** A validated, consistent set of TLS files, and the file state it was read from. */
interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  /** Every client CA certificate (PEM), deduplicated; undefined without mutual TLS. */
  ca: string[] | undefined;
  certificate: X509Certificate;
  /** Identity of every file read (path, inode, size, mtime); changes when any file is replaced. */
  signature: string;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Thrown when the files changed while being read; the next check reads them again. */
class FilesChangedWhileReading extends Error {}

/**
 * Read and validate the TLS files. Every problem is a {@link ConfigError} naming the setting and
 * the file. The signature is taken before and after reading, so a set that changed in between
 * (a rotation in progress) is never mistaken for a consistent one.
 */
async function loadTlsMaterial(files: TlsFiles): Promise<TlsMaterial> {
  const caFiles = files.clientCaPaths === undefined ? undefined : await findCaFiles(files.clientCaPaths);
  const before = await signatureOf(files, caFiles);
  const cert = await readSetting(SETTING.cert, files.certFile);
  const key = await readSetting(SETTING.key, files.keyFile);
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch (error) {
    throw new ConfigError(`${SETTING.cert} ${files.certFile}: not a PEM certificate (${(error as Error).message})`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new ConfigError(`${SETTING.key} ${files.keyFile}: not an unencrypted PEM private key (${(error as Error).message})`);
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new ConfigError(`${SETTING.key} ${files.keyFile} does not belong to the certificate in ${files.certFile} (subject ${certificate.subject.replaceAll('\n', ', ')})`);
  }
  let ca: string[] | undefined;
  if (caFiles !== undefined) {
    const seen = new Set<string>();
    ca = [];
    for (const { path, explicit } of caFiles) {
      for (const pem of await caCertificates(path, explicit)) {
        if (seen.has(pem)) continue;
        seen.add(pem);
        ca.push(pem);
      }
    }
    if (ca.length === 0) throw new ConfigError(`${SETTING.clientCas} ${files.clientCaPaths!.join(',')}: no CA certificate found; no client could ever connect`);
  }
  try {
    // The final word on consistency (e.g. a chain OpenSSL refuses): the context the server will use.
    createSecureContext({ cert, key, ca });
  } catch (error) {
    throw new ConfigError(`${SETTING.cert} ${files.certFile} with ${SETTING.key} ${files.keyFile}: ${(error as Error).message}`);
  }
  const after = await signatureOf(files, caFiles);
  if (after !== before) throw new FilesChangedWhileReading('the TLS files changed while they were read');
  return { cert, key, ca, certificate, signature: after };
}

async function readSetting(setting: string, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (error) {
    throw new ConfigError(`${setting} ${file}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}

interface CaFile {
  path: string;
  /** Named in the setting (must hold certificates) rather than found in a named folder. */
  explicit: boolean;
}

/**
 * The files behind the CA setting: named files as they are, named folders walked recursively
 * (following symbolic links, as Kubernetes secret volumes are made of them; each real folder once).
 */
async function findCaFiles(paths: readonly string[]): Promise<CaFile[]> {
  const found: CaFile[] = [];
  const visited = new Set<string>();
  const walk = async (folder: string): Promise<void> => {
    const real = await realpath(folder);
    if (visited.has(real)) return;
    visited.add(real);
    const entries = (await readdir(folder)).sort();
    for (const entry of entries) {
      const path = join(folder, entry);
      const info = await stat(path).catch(() => undefined);
      if (info === undefined) continue; // a dangling link, or replaced while walking
      if (info.isDirectory()) await walk(path);
      else if (info.isFile()) found.push({ path, explicit: false });
    }
  };
  for (const path of paths) {
    let info;
    try {
      info = await stat(path);
    } catch (error) {
      throw new ConfigError(`${SETTING.clientCas} ${path}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
    }
    if (info.isDirectory()) {
      try {
        await walk(path);
      } catch (error) {
        throw new ConfigError(`${SETTING.clientCas} ${path}: cannot read the folder (${(error as Error).message})`);
      }
    } else found.push({ path, explicit: true });
  }
  return found;
}

/**
 * The certificates of one CA file, each parsed. A file named in the setting must hold at least one;
 * a file found in a named folder without any certificate (a README, a key) is skipped.
 */
async function caCertificates(path: string, explicit: boolean): Promise<string[]> {
  const text = (await readSetting(SETTING.clientCas, path)).toString('utf8');
  const pems = text.match(PEM_CERTIFICATE) ?? [];
  if (pems.length === 0 && explicit) throw new ConfigError(`${SETTING.clientCas} ${path}: no PEM certificate in it`);
  for (const pem of pems) {
    try {
      new X509Certificate(pem);
    } catch (error) {
      throw new ConfigError(`${SETTING.clientCas} ${path}: a certificate in it does not parse (${(error as Error).message})`);
    }
  }
  return pems;
}

/**
 * Identity of the current file set: every file's inode, size and modification time (through
 * symbolic links, so an atomic link swap counts). A missing file is part of the signature too.
 */
async function signatureOf(files: TlsFiles, caFiles: readonly CaFile[] | undefined): Promise<string> {
  const paths = [files.certFile, files.keyFile, ...(caFiles ?? []).map((file) => file.path)];
  const parts = await Promise.all(
    paths.map(async (path) => {
      try {
        const info = await stat(path, { bigint: true });
        return `${path}:${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
      } catch (error) {
        return `${path}:${(error as NodeJS.ErrnoException).code ?? 'unreadable'}`;
      }
    }),
  );
  return parts.join('\n');
}

function logCertificate(logger: Logger, message: string, material: TlsMaterial): void {
  const { certificate } = material;
  logger.info(
    {
      subject: certificate.subject.replaceAll('\n', ', '),
      serialNumber: certificate.serialNumber,
      validTo: certificate.validTo,
      clientCas: material.ca?.length,
    },
    message,
  );
  if (Date.parse(certificate.validTo) < Date.now()) logger.warn({ validTo: certificate.validTo }, 'the TLS server certificate has expired');
}

/**
 * Replaces the server's secure context when the TLS files change (see the module comment).
 * Invariant: the server's context is always built from the last set that validated completely.
 */
class TlsReloader {
  private current: TlsMaterial;
  /** The file state that last failed to load: reported once, not again until the files change. */
  private failedSignature: string | undefined;
  private checking = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly server: HttpsServer,
    private readonly files: TlsFiles,
    initial: TlsMaterial,
    private readonly checkMs: number,
    private readonly logger: Logger,
  ) {
    this.current = initial;
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), this.checkMs);
    // The check must never keep a closing process alive.
    this.timer.unref();
    this.server.once('close', () => clearInterval(this.timer));
  }

  private async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      let signature: string;
      try {
        const caFiles = this.files.clientCaPaths === undefined ? undefined : await findCaFiles(this.files.clientCaPaths);
        signature = await signatureOf(this.files, caFiles);
      } catch (error) {
        // A named CA path that vanished: its message stands in for the file state.
        signature = `unreadable: ${(error as Error).message}`;
      }
      if (signature === this.current.signature || signature === this.failedSignature) return;
      try {
        const next = await loadTlsMaterial(this.files);
        if (!this.server.listening) return;
        this.server.setSecureContext({ cert: next.cert, key: next.key, ca: next.ca });
        this.current = next;
        this.failedSignature = undefined;
        logCertificate(this.logger, 'TLS files changed: new connections use the new certificate', next);
      } catch (error) {
        // A rotation in progress: read again on the next tick, without noise.
        if (error instanceof FilesChangedWhileReading) return;
        this.failedSignature = signature;
        this.logger.warn(
          { err: { message: (error as Error).message }, serialNumber: this.current.certificate.serialNumber },
          'TLS files changed but cannot be used; still serving the previous certificate',
        );
      }
    } finally {
      this.checking = false;
    }
  }
}
