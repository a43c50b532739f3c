/**
 * The daemon's TLS identity: a self-signed certificate made once and kept in its state folder. No
 * certificate authority is involved: clients pin the certificate's fingerprint, and the fingerprint
 * is authenticated by the farm-key handshake (see handshake.ts).
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A certificate and its private key, PEM-encoded. */
export interface TlsIdentity {
  readonly cert: string;
  readonly key: string;
  /** SHA-256 fingerprint of the certificate, `AB:CD:…`. */
  readonly fingerprint: string;
}

/** The fingerprint format clients see in the TLS handshake (`PeerCertificate.fingerprint256`). */
export function certFingerprint(certPem: string): string {
  return new X509Certificate(certPem).fingerprint256.toUpperCase();
}

/** Loads `<dir>/cert.pem` + `<dir>/key.pem`, making them (EC P-256, 10 years) on first use. */
export async function loadOrCreateTlsIdentity(dir: string, commonName: string): Promise<TlsIdentity> {
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  if (existsSync(certPath) && existsSync(keyPath)) {
    const cert = readFileSync(certPath, 'utf8');
    const key = readFileSync(keyPath, 'utf8');
    try {
      const x = new X509Certificate(cert);
      if (new Date(x.validTo).getTime() > Date.now() + 86_400_000) return { cert, key, fingerprint: certFingerprint(cert) };
    } catch {
      // unreadable: make a new one below
    }
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { generate } = await import('selfsigned');
  const now = new Date();
  const pems = await generate([{ name: 'commonName', value: commonName.slice(0, 60) || 'taskfarm-worker' }], {
    keyType: 'ec',
    curve: 'P-256',
    notBeforeDate: new Date(now.getTime() - 86_400_000),
    notAfterDate: new Date(now.getTime() + 10 * 365 * 86_400_000),
  });
  writeFileSync(keyPath + '.tmp', pems.private, { mode: 0o600 });
  writeFileSync(certPath + '.tmp', pems.cert, { mode: 0o644 });
  renameSync(keyPath + '.tmp', keyPath);
  renameSync(certPath + '.tmp', certPath);
  return { cert: pems.cert, key: pems.private, fingerprint: certFingerprint(pems.cert) };
}
