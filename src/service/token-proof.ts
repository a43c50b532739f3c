/**
 * The proof of the farm key that mints a token (docs/API.md Tokens): HMAC-SHA256 under the farm key
 * over length-prefixed frames (a 4-byte big-endian length, then the UTF-8 bytes, as in
 * src/security/handshake.ts) of `"taskfarm/v1/token"`, the user, `"admin"` or `"user"`, the label
 * (or ""), the nonce text as the manager gave it, and the manager's TLS certificate fingerprint
 * (`AB:CD:…`, upper case) or "" over plain HTTP. Binding the fingerprint means a man in the middle
 * that terminates TLS cannot relay a proof. The CLI computes it; the service core verifies it.
 */
import { createHmac } from 'node:crypto';

/** What a token proof covers. */
export interface TokenProofFields {
  readonly user: string;
  readonly admin: boolean;
  readonly label?: string;
  /** The nonce of `POST /api/v1/tokens/challenge`, as sent (base64url text). */
  readonly nonce: string;
  /** SHA-256 fingerprint of the manager's TLS certificate, or '' over plain HTTP. */
  readonly certFingerprint: string;
}

/** The proof, base64url, as `POST /api/v1/tokens` takes it. */
export function tokenProof(key: Uint8Array, f: TokenProofFields): string {
  const h = createHmac('sha256', key);
  for (const part of ['taskfarm/v1/token', f.user, f.admin ? 'admin' : 'user', f.label ?? '', f.nonce, f.certFingerprint.toUpperCase()]) {
    const bytes = Buffer.from(part, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length, 0);
    h.update(len);
    h.update(bytes);
  }
  return h.digest('base64url');
}
