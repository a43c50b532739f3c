/**
 * Minting bearer tokens with the farm key (docs/API.md, Tokens): stateless MAC'd challenges, each
 * redeemable once before it expires, and the proof check. Only a holder of the farm key can mint.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { AuthenticationError } from '../errors.js';
import { proofsEqual } from '../security/index.js';
import { InvalidRequestError } from './errors.js';
import { tokenProof } from './token-proof.js';

const RANDOM_BYTES = 16;
const TAG_BYTES = 16;
const NONCE_BYTES = RANDOM_BYTES + 8 + TAG_BYTES;

function hasControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** A token request as {@link TokenMinter.verify} checks it. */
export interface TokenRequest {
  readonly user: string;
  readonly admin: boolean;
  readonly label?: string;
  readonly nonce: string;
  readonly proof: string;
}

/**
 * Issues challenges and checks minting proofs. A challenge is `random(16) ‖ expiry(8) ‖
 * HMAC(secret, random ‖ expiry)[0..16)` in base64url: issuing stores nothing (a flood of challenge
 * requests costs no memory); only redeemed challenges are remembered, until they expire, to refuse
 * replays — and only after a valid proof, so only key holders can fill that table.
 */
export class TokenMinter {
  readonly #key: Uint8Array | undefined;
  readonly #fingerprint: () => string;
  readonly #ttlMs: number;
  readonly #secret = randomBytes(32);
  readonly #used = new Map<string, number>();
  readonly #maxUsed: number;

  /**
   * @param key the farm key (undefined: minting over the API is impossible, every request is refused)
   * @param fingerprint the manager's TLS certificate fingerprint, or '' over plain HTTP
   */
  constructor(key: Uint8Array | undefined, fingerprint: () => string, ttlMs = 60_000, maxUsed = 65_536) {
    this.#key = key;
    this.#fingerprint = fingerprint;
    this.#ttlMs = ttlMs;
    this.#maxUsed = maxUsed;
  }

  #tag(random: Uint8Array, expiry: Uint8Array): Buffer {
    return createHmac('sha256', this.#secret).update('token-challenge').update(random).update(expiry).digest().subarray(0, TAG_BYTES);
  }

  /** A fresh challenge (base64url). */
  challenge(): string {
    const random = randomBytes(RANDOM_BYTES);
    const expiry = Buffer.alloc(8);
    expiry.writeBigUInt64BE(BigInt(Date.now() + this.#ttlMs), 0);
    return Buffer.concat([random, expiry, this.#tag(random, expiry)]).toString('base64url');
  }

  /**
   * Checks a request: its fields, its challenge (issued here, unexpired, unused) and its proof of the
   * farm key; marks the challenge used. Throws {@link InvalidRequestError} for a malformed field and
   * {@link AuthenticationError} (401) for a bad challenge or proof.
   */
  verify(request: TokenRequest): { user: string; admin: boolean; label: string } {
    if (typeof request !== 'object' || request === null) throw new InvalidRequestError('Expected the token request to be an object', { field: 'body' });
    const { user, admin, nonce, proof } = request;
    const label = request.label ?? '';
    if (typeof user !== 'string' || user.length === 0 || user.length > 200 || hasControl(user)) {
      throw new InvalidRequestError('Expected `user` to be a string of 1 to 200 characters without control characters', { field: 'user' });
    }
    if (typeof admin !== 'boolean') throw new InvalidRequestError('Expected `admin` to be a boolean', { field: 'admin' });
    if (typeof label !== 'string' || label.length > 200)
      throw new InvalidRequestError('Expected `label` to be a string of at most 200 characters', { field: 'label' });
    if (typeof nonce !== 'string' || nonce.length > 200)
      throw new InvalidRequestError('Expected `nonce` to be the base64url challenge from POST /api/v1/tokens/challenge', { field: 'nonce' });
    if (typeof proof !== 'string' || proof.length > 200) throw new InvalidRequestError('Expected `proof` to be a base64url HMAC-SHA256', { field: 'proof' });
    if (this.#key === undefined) {
      throw new AuthenticationError(
        'This manager has no farm key, so no token can be minted over the API. Start it with the farm key (--key-file) and mint with `taskfarm token create --key-file FILE`.',
      );
    }
    const buf = Buffer.from(nonce, 'base64url');
    if (buf.length !== NONCE_BYTES || buf.toString('base64url') !== nonce) throw new AuthenticationError('The token challenge is malformed: ask for a new one');
    const random = buf.subarray(0, RANDOM_BYTES);
    const expiry = buf.subarray(RANDOM_BYTES, RANDOM_BYTES + 8);
    if (!proofsEqual(this.#tag(random, expiry), buf.subarray(RANDOM_BYTES + 8)))
      throw new AuthenticationError('The token challenge was not issued by this manager: ask for a new one');
    const expires = Number(expiry.readBigUInt64BE(0));
    const now = Date.now();
    if (expires < now) throw new AuthenticationError('The token challenge expired: ask for a new one and answer it within a minute');
    const id = random.toString('hex');
    if (this.#used.has(id)) throw new AuthenticationError('The token challenge was already used: ask for a new one');
    const expected = tokenProof(this.#key, { user, admin, label, nonce, certFingerprint: this.#fingerprint() });
    if (!proofsEqual(Buffer.from(expected, 'base64url'), Buffer.from(proof, 'base64url')))
      throw new AuthenticationError("Wrong proof: the token request was not signed with this farm's key");
    if (this.#used.size >= this.#maxUsed) for (const [k, e] of this.#used) if (e < now) this.#used.delete(k);
    if (this.#used.size >= this.#maxUsed) throw new AuthenticationError('Too many token requests in the last minute: try again shortly');
    this.#used.set(id, expires);
    return { user, admin, label };
  }
}
