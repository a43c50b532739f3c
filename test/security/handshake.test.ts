/**
 * The pure parts of the security layer: the HMAC proofs of the farm-key handshake, the stateless
 * worker nonces (single use, expiry, bound to the client nonce), and farm-key parsing, files and
 * resolution order. No sockets, no processes.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { InvalidOptionError } from '../../dist/src/index.js';
import {
  FARM_KEY_BYTES,
  defaultKeyPath,
  generateFarmKey,
  keyFileTooOpen,
  parseFarmKey,
  readKeyFile,
  resolveFarmKey,
  writeNewKeyFile,
} from '../../dist/src/security/farm-key.js';
import { WorkerNonces, clientProof, newClientNonce, proofsEqual, workerProof, type HandshakeFields } from '../../dist/src/security/handshake.js';

function fields(over: Partial<HandshakeFields> = {}): HandshakeFields {
  return {
    workerId: 'worker-1',
    clientNonce: Buffer.alloc(16, 1),
    workerNonce: Buffer.alloc(40, 2),
    certFingerprint: 'AB:CD:EF:01',
    ...over,
  };
}

/** Settles a synchronous call into its error (or undefined). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err;
  }
}

describe('handshake proofs', () => {
  const key = randomBytes(32);

  it('both sides compute the same proof from the same fields; worker and client proofs are domain-separated', () => {
    const f = fields();
    // What the worker sends equals what the client recomputes, and vice versa.
    expect(proofsEqual(workerProof(key, f), workerProof(Buffer.from(key), { ...f, clientNonce: Buffer.from(f.clientNonce) }))).toBe(true);
    expect(proofsEqual(clientProof(key, f, 'client-a'), clientProof(key, fields(), 'client-a'))).toBe(true);
    expect(workerProof(key, f)).toHaveLength(32);
    expect(clientProof(key, f, 'client-a')).toHaveLength(32);
    // A worker proof is never a valid client proof (a reflected proof is useless), even with client id ''.
    expect(proofsEqual(workerProof(key, f), clientProof(key, f, ''))).toBe(false);
    // The fingerprint is compared case-insensitively (both sides upper-case it).
    expect(proofsEqual(workerProof(key, f), workerProof(key, { ...f, certFingerprint: f.certFingerprint.toLowerCase() }))).toBe(true);
  });

  it('any changed field (key, worker id, either nonce, fingerprint, client id) gives a different proof', () => {
    const f = fields();
    const base = { w: workerProof(key, f), c: clientProof(key, f, 'client-a') };
    const changes: [string, Buffer, HandshakeFields, string][] = [
      ['key', randomBytes(32), f, 'client-a'],
      ['worker id', key, { ...f, workerId: 'worker-2' }, 'client-a'],
      ['client nonce', key, { ...f, clientNonce: Buffer.alloc(16, 3) }, 'client-a'],
      ['worker nonce', key, { ...f, workerNonce: Buffer.alloc(40, 4) }, 'client-a'],
      ['fingerprint', key, { ...f, certFingerprint: 'AB:CD:EF:02' }, 'client-a'],
      ['fingerprint emptied (no TLS)', key, { ...f, certFingerprint: '' }, 'client-a'],
    ];
    for (const [what, k, g, clientId] of changes) {
      expect(proofsEqual(base.w, workerProof(k, g)), `worker proof, changed ${what}`).toBe(false);
      expect(proofsEqual(base.c, clientProof(k, g, clientId)), `client proof, changed ${what}`).toBe(false);
    }
    expect(proofsEqual(base.c, clientProof(key, f, 'client-b')), 'client proof, changed client id').toBe(false);
    // Fields are length-framed: moving a character from one field to the next changes the proof.
    expect(proofsEqual(workerProof(key, { ...f, workerId: 'ab' }), workerProof(key, { ...f, workerId: 'a' }))).toBe(false);
    expect(proofsEqual(clientProof(key, { ...f, workerId: 'worker-1x' }, 'y'), clientProof(key, { ...f, workerId: 'worker-1' }, 'xy'))).toBe(false);
    // One flipped bit anywhere in a proof makes it wrong.
    for (let bit = 0; bit < 256; bit += 37) {
      const flipped = Buffer.from(base.c);
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      expect(proofsEqual(base.c, flipped)).toBe(false);
    }
  });

  it('proofsEqual refuses proofs of another length (empty, truncated, extended) without throwing', () => {
    const p = workerProof(key, fields());
    expect(proofsEqual(p, Buffer.alloc(0))).toBe(false);
    expect(proofsEqual(p, p.subarray(0, 31))).toBe(false);
    expect(proofsEqual(p, Buffer.concat([p, Buffer.alloc(1)]))).toBe(false);
    expect(proofsEqual(p, Buffer.from(p))).toBe(true);
  });

  it('client nonces are fresh 16-byte values', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const n = newClientNonce();
      expect(n).toHaveLength(16);
      seen.add(n.toString('hex'));
    }
    expect(seen.size).toBe(1000);
  });
});

describe('WorkerNonces', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('a nonce issued for a client nonce is redeemed once; a replay is refused', () => {
    const nonces = new WorkerNonces(10_000);
    const nc = newClientNonce();
    const nw = nonces.issue(nc);
    expect(nw).toHaveLength(16 + 8 + 16);
    expect(nonces.redeem(nw, nc)).toBeUndefined();
    expect(nonces.redeem(nw, nc)).toMatch(/already used/);
    expect(nonces.redeem(Buffer.from(nw), Buffer.from(nc))).toMatch(/already used/);
    // Other nonces of the same issuer are unaffected.
    const nc2 = newClientNonce();
    expect(nonces.redeem(nonces.issue(nc2), nc2)).toBeUndefined();
  });

  it('expires after its ttl (fake clock), and its expiry cannot be extended by editing it', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2030-01-01T00:00:00Z'));
    const nonces = new WorkerNonces(300);
    const nc = newClientNonce();
    const late = nonces.issue(nc);
    const onTime = nonces.issue(nc);
    vi.setSystemTime(Date.now() + 299);
    expect(nonces.redeem(onTime, nc)).toBeUndefined();
    vi.setSystemTime(Date.now() + 2);
    expect(Date.now() - new Date('2030-01-01T00:00:00Z').getTime()).toBe(301);
    expect(nonces.redeem(late, nc)).toMatch(/expired/);
    // Pushing the expiry field forward breaks the nonce's MAC.
    const extended = Buffer.from(late);
    extended.writeBigUInt64BE(BigInt(Date.now() + 60_000), 16);
    expect(nonces.redeem(extended, nc)).toMatch(/not issued by this worker/);
  });

  it('refuses a nonce redeemed with another client nonce, from another issuer, tampered or malformed', () => {
    const nonces = new WorkerNonces(10_000);
    const other = new WorkerNonces(10_000);
    const nc = newClientNonce();
    const nw = nonces.issue(nc);
    expect(nonces.redeem(nw, newClientNonce())).toMatch(/not issued by this worker for this client/);
    expect(nonces.redeem(other.issue(nc), nc)).toMatch(/not issued by this worker/);
    for (const at of [0, 15, 16, 23, 24, 39]) {
      const t = Buffer.from(nw);
      t[at]! ^= 0x40;
      expect(nonces.redeem(t, nc), `byte ${at} flipped`).toMatch(/not issued by this worker/);
    }
    for (const bad of [Buffer.alloc(0), nw.subarray(0, 39), Buffer.concat([nw, Buffer.alloc(1)]), randomBytes(64)]) {
      expect(nonces.redeem(bad, nc)).toMatch(/malformed/);
    }
    // None of the refusals consumed the genuine nonce.
    expect(nonces.redeem(nw, nc)).toBeUndefined();
  });

  it('bounds the used-nonce table: full of unexpired nonces it refuses; expired ones are swept', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2030-01-01T00:00:00Z'));
    const nonces = new WorkerNonces(1000, 3);
    const nc = newClientNonce();
    for (let i = 0; i < 3; i++) expect(nonces.redeem(nonces.issue(nc), nc)).toBeUndefined();
    expect(nonces.redeem(nonces.issue(nc), nc)).toMatch(/too many handshakes/);
    const fresh = () => nonces.issue(nc);
    vi.setSystemTime(Date.now() + 1001);
    expect(nonces.redeem(fresh(), nc)).toBeUndefined();
  });
});

describe('farm keys', () => {
  const saved: Record<string, string | undefined> = {};
  const envNames = ['TASKFARM_KEY', 'TASKFARM_KEY_FILE', 'XDG_CONFIG_HOME'];
  let dir = '';

  beforeEach(() => {
    for (const n of envNames) saved[n] = process.env[n];
    dir = mkdtempSync(join(tmpdir(), 'taskfarm-keys-'));
  });
  afterEach(() => {
    for (const n of envNames) {
      if (saved[n] === undefined) delete process.env[n];
      else process.env[n] = saved[n];
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('generate → parse round-trips 32 bytes; surrounding whitespace (a newline in a file) is accepted', () => {
    for (let i = 0; i < 50; i++) {
      const text = generateFarmKey();
      expect(text).toMatch(/^[A-Za-z0-9_-]{43}$/);
      const bytes = parseFarmKey(text, 'test');
      expect(bytes).toHaveLength(FARM_KEY_BYTES);
      expect(bytes.toString('base64url')).toBe(text);
      expect(parseFarmKey(`  ${text}\n`, 'test').equals(bytes)).toBe(true);
    }
  });

  it('wrong length, wrong alphabet and garbage are refused with InvalidOptionError that does not echo the text', () => {
    const good = generateFarmKey();
    const bad = [
      '',
      good.slice(0, 42),
      good + 'A',
      good + good,
      randomBytes(32).toString('base64'), // '+' '/' '=' are not base64url
      randomBytes(32).toString('hex'),
      'SECRET-LOOKING-GARBAGE-' + 'x'.repeat(10),
      'SECRET-LOOKING-GARBAGE!' + 'x'.repeat(20), // 43 characters, one outside the alphabet
      `${good.slice(0, 20)} ${good.slice(20)}`,
    ];
    for (const text of bad) {
      const err = thrown(() => parseFarmKey(text, '$TASKFARM_KEY'));
      expect(err, JSON.stringify(text)).toBeInstanceOf(InvalidOptionError);
      expect((err as InvalidOptionError).code).toBe('FARM_ERR_INVALID_OPTION');
      const message = (err as Error).message;
      if (text.trim().length >= 8) expect(message).not.toContain(text.trim());
      for (const part of text.split(/\s+/).filter((p) => p.length >= 8)) expect(message).not.toContain(part);
      // It names where the key came from.
      expect(message).toContain('$TASKFARM_KEY');
    }
    // The same through a file and through the environment.
    const path = join(dir, 'bad.key');
    writeFileSync(path, 'SECRET-LOOKING-GARBAGE-in-a-file\n', { mode: 0o600 });
    const fromFile = thrown(() => readKeyFile(path));
    expect(fromFile).toBeInstanceOf(InvalidOptionError);
    expect((fromFile as Error).message).not.toContain('SECRET-LOOKING-GARBAGE');
    expect((fromFile as Error).message).toContain(path);
    process.env['TASKFARM_KEY'] = 'SECRET-LOOKING-GARBAGE-in-env';
    const fromEnv = thrown(() => resolveFarmKey());
    expect(fromEnv).toBeInstanceOf(InvalidOptionError);
    expect((fromEnv as Error).message).not.toContain('SECRET-LOOKING-GARBAGE');
    // A missing key file is an InvalidOptionError too (naming the path, not a stack).
    expect(thrown(() => readKeyFile(join(dir, 'missing.key')))).toBeInstanceOf(InvalidOptionError);
  });

  it('writeNewKeyFile writes a parseable key with mode 0600 in a 0700 folder, and refuses to overwrite unless forced', () => {
    const path = join(dir, 'sub', 'farm.key');
    expect(writeNewKeyFile(path)).toBe(path);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'sub')).mode & 0o777).toBe(0o700);
    expect(keyFileTooOpen(path)).toBe(false);
    const first = readKeyFile(path);
    expect(first.key).toHaveLength(32);
    expect(first.source).toBe(`file ${path}`);
    const again = thrown(() => writeNewKeyFile(path));
    expect((again as NodeJS.ErrnoException).code).toBe('EEXIST');
    expect(readKeyFile(path).key.equals(first.key)).toBe(true);
    writeNewKeyFile(path, true);
    expect(readKeyFile(path).key.equals(first.key)).toBe(false);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    // A group/world-readable key file is detected.
    const open = join(dir, 'open.key');
    writeFileSync(open, generateFarmKey() + '\n', { mode: 0o644 });
    expect(keyFileTooOpen(open)).toBe(true);
  });

  it('resolveFarmKey precedence: option key > keyFile > $TASKFARM_KEY > $TASKFARM_KEY_FILE > default path; none → undefined', () => {
    const k = Array.from({ length: 5 }, () => generateFarmKey());
    const keyFile = join(dir, 'option.key');
    const envFile = join(dir, 'env.key');
    writeFileSync(keyFile, k[1] + '\n', { mode: 0o600 });
    writeFileSync(envFile, k[3] + '\n', { mode: 0o600 });
    process.env['XDG_CONFIG_HOME'] = join(dir, 'config');
    expect(defaultKeyPath()).toBe(join(dir, 'config', 'taskfarm', 'farm.key'));
    mkdirSync(join(dir, 'config', 'taskfarm'), { recursive: true });
    writeFileSync(defaultKeyPath(), k[4] + '\n', { mode: 0o600 });
    process.env['TASKFARM_KEY'] = k[2];
    process.env['TASKFARM_KEY_FILE'] = envFile;

    const text = (r: ReturnType<typeof resolveFarmKey>) => r?.key.toString('base64url');
    expect(text(resolveFarmKey({ key: k[0], keyFile }))).toBe(k[0]);
    expect(resolveFarmKey({ key: k[0], keyFile })!.source).toBe('option key');
    expect(text(resolveFarmKey({ keyFile }))).toBe(k[1]);
    expect(text(resolveFarmKey())).toBe(k[2]);
    expect(resolveFarmKey()!.source).toBe('$TASKFARM_KEY');
    process.env['TASKFARM_KEY'] = ''; // empty counts as unset
    expect(text(resolveFarmKey())).toBe(k[3]);
    expect(resolveFarmKey()!.source).toBe(`file ${envFile}`);
    delete process.env['TASKFARM_KEY'];
    delete process.env['TASKFARM_KEY_FILE'];
    expect(text(resolveFarmKey())).toBe(k[4]);
    expect(resolveFarmKey()!.source).toBe(`file ${defaultKeyPath()}`);
    rmSync(defaultKeyPath());
    expect(existsSync(defaultKeyPath())).toBe(false);
    expect(resolveFarmKey()).toBeUndefined();
    // Sources are named, never the key.
    for (const r of [resolveFarmKey({ key: k[0] }), resolveFarmKey({ keyFile })]) {
      for (const key of k) expect(r!.source).not.toContain(key);
    }
    // An explicit but malformed option wins over a good environment (it is an error, not skipped).
    process.env['TASKFARM_KEY'] = k[2];
    expect(thrown(() => resolveFarmKey({ key: 'not-a-key' }))).toBeInstanceOf(InvalidOptionError);
    expect(readFileSync(keyFile, 'utf8').trim()).toBe(k[1]);
  });
});
