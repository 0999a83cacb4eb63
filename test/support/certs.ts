/**
 * Test PKI made at test time with the `openssl` CLI: CAs, server certificates (SAN 127.0.0.1 and
 * localhost) and client certificates, each with a chosen serial so a test can tell them apart.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A certificate and its key, as files and as PEM text. */
export interface Issued {
  certFile: string;
  keyFile: string;
  cert: string;
  key: string;
  /** Upper-case hex, as `getPeerCertificate().serialNumber` reports it. */
  serialNumber: string;
}

const DAYS = '2';

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A fresh random serial: 16 hex digits with the top bit clear (serials are positive). */
function serial(): string {
  const bytes = randomBytes(8);
  bytes[0] = (bytes[0]! & 0x7f) | 0x10;
  return bytes.toString('hex').toUpperCase();
}

function issued(certFile: string, keyFile: string, serialNumber: string): Issued {
  return { certFile, keyFile, cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), serialNumber };
}

/** A self-signed CA named `name` in `dir` (`<name>.crt`, `<name>.key`). */
export function makeCa(dir: string, name: string): Issued {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const serialNumber = serial();
  openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', DAYS, '-subj', `/CN=${name}`, '-set_serial', `0x${serialNumber}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return issued(certFile, keyFile, serialNumber);
}

/** A certificate for `role` (server: SAN 127.0.0.1 + localhost; client) signed by `ca`, named `name` in `dir`. */
export function issue(ca: Issued, dir: string, name: string, role: 'server' | 'client'): Issued {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const csrFile = join(dir, `${name}.csr`);
  const extFile = join(dir, `${name}.ext`);
  const serialNumber = serial();
  writeFileSync(
    extFile,
    role === 'server'
      ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n'
      : 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n',
  );
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', csrFile, '-subj', `/CN=${name}`]);
  openssl(['x509', '-req', '-in', csrFile, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-set_serial', `0x${serialNumber}`, '-days', DAYS, '-extfile', extFile, '-out', certFile]);
  return issued(certFile, keyFile, serialNumber);
}
