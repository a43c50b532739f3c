/**
 * Mutual authentication with the farm key: HMAC-SHA256 challenge–response over fresh nonces from
 * both sides, bound to the worker id, the client id and the worker's TLS certificate fingerprint.
 *
 *   client → Describe{client_nonce}
 *   worker → {id, worker_nonce, worker_proof = HMAC(key, "worker", id, client_id?, nc, nw, fp)}
 *   client checks worker_proof against the fingerprint it saw in the TLS handshake, then
 *   client → Recruit{client_id, nc, nw, client_proof = HMAC(key, "client", id, client_id, nc, nw, fp)}
 *   worker checks nw is one it issued (stateless MAC), unexpired and unused, then the proof.
 *
 * A man in the middle terminating TLS presents its own certificate, so the proofs it relays are
 * over the wrong fingerprint and fail on both sides; a recorded Recruit fails because its worker
 * nonce is used or expired; a recorded Describe answer fails because the client nonce is fresh.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** Inputs every proof covers. */
export interface HandshakeFields {
  readonly workerId: string;
  readonly clientNonce: Uint8Array;
  readonly workerNonce: Uint8Array;
  /** SHA-256 fingerprint of the worker's TLS certificate (`AB:CD:…`), or '' without TLS. */
  readonly certFingerprint: string;
}

const NONCE_BYTES = 16;

function frame(h: ReturnType<typeof createHmac>, part: string | Uint8Array): void {
  const bytes = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length, 0);
  h.update(len);
  h.update(bytes);
}

function mac(key: Uint8Array, role: 'worker' | 'client', f: HandshakeFields, clientId: string): Buffer {
  const h = createHmac('sha256', key);
  for (const part of ['taskfarm/v1/' + role, f.workerId, clientId, f.clientNonce, f.workerNonce, f.certFingerprint.toUpperCase()]) frame(h, part);
  return h.digest();
}

/** The worker's proof of the key (clientId is not known yet at Describe: ''). */
export function workerProof(key: Uint8Array, f: HandshakeFields): Buffer {
  return mac(key, 'worker', f, '');
}

/** The client's proof of the key. */
export function clientProof(key: Uint8Array, f: HandshakeFields, clientId: string): Buffer {
  return mac(key, 'client', f, clientId);
}

/** Constant-time comparison of a received proof with the expected one. */
export function proofsEqual(expected: Uint8Array, given: Uint8Array): boolean {
  return given.length === expected.length && timingSafeEqual(expected, given);
}

/** A fresh client nonce. */
export function newClientNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

/**
 * Worker nonces that need no per-Describe state (a flood of Describe calls costs nothing): each is
 * `random(16) ‖ expiry(8) ‖ HMAC(secret, random ‖ expiry ‖ client nonce)[0..16)`. Redeeming checks the
 * MAC, the expiry and that it was not used before (used nonces are kept until they expire).
 */
export class WorkerNonces {
  readonly #secret = randomBytes(32);
  readonly #ttlMs: number;
  readonly #used = new Map<string, number>();
  readonly #maxUsed: number;

  constructor(ttlMs: number, maxUsed = 65_536) {
    this.#ttlMs = ttlMs;
    this.#maxUsed = maxUsed;
  }

  #tag(random: Uint8Array, expiry: Uint8Array, clientNonce: Uint8Array): Buffer {
    return createHmac('sha256', this.#secret).update(random).update(expiry).update(clientNonce).digest().subarray(0, 16);
  }

  /** Issues a nonce for a Describe that carried `clientNonce`. */
  issue(clientNonce: Uint8Array): Buffer {
    const random = randomBytes(NONCE_BYTES);
    const expiry = Buffer.alloc(8);
    expiry.writeBigUInt64BE(BigInt(Date.now() + this.#ttlMs), 0);
    return Buffer.concat([random, expiry, this.#tag(random, expiry, clientNonce)]);
  }

  /**
   * Why the nonce cannot be redeemed, or undefined when it can (it is then marked used). Check the
   * proof first with {@link check}, and call this only for a proven client: then only key holders
   * can fill the table of used nonces.
   */
  redeem(nonce: Uint8Array, clientNonce: Uint8Array): string | undefined {
    const problem = this.check(nonce, clientNonce);
    if (problem !== undefined) return problem;
    const buf = Buffer.from(nonce);
    const id = buf.subarray(0, NONCE_BYTES).toString('hex');
    const now = Date.now();
    if (this.#used.size >= this.#maxUsed) this.#sweep(now);
    if (this.#used.size >= this.#maxUsed) return 'too many handshakes in progress; try again shortly';
    this.#used.set(id, Number(buf.readBigUInt64BE(NONCE_BYTES)));
    return undefined;
  }

  /** Why the nonce is not redeemable (malformed, not ours, expired, used), without marking it. */
  check(nonce: Uint8Array, clientNonce: Uint8Array): string | undefined {
    if (nonce.length !== NONCE_BYTES + 8 + 16) return 'malformed handshake nonce';
    const buf = Buffer.from(nonce);
    const random = buf.subarray(0, NONCE_BYTES);
    const expiry = buf.subarray(NONCE_BYTES, NONCE_BYTES + 8);
    if (!proofsEqual(this.#tag(random, expiry, clientNonce), buf.subarray(NONCE_BYTES + 8)))
      return 'the handshake nonce was not issued by this worker for this client';
    const expires = Number(expiry.readBigUInt64BE(0));
    const now = Date.now();
    if (expires < now) return 'the handshake expired (Describe and Recruit must follow each other within the handshake time)';
    if (this.#used.has(random.toString('hex'))) return 'the handshake was already used (replay refused)';
    return undefined;
  }

  #sweep(now: number): void {
    for (const [id, expires] of this.#used) if (expires < now) this.#used.delete(id);
  }
}
