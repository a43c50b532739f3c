/**
 * Who may use a worker, and whom a client trusts (issue 4, tests 1–3): clients with another key or
 * without the handshake are refused (UNAUTHENTICATED) while a legitimate run on the same daemon is
 * unaffected; a daemon without a key refuses to start unless --insecure; keys never appear in logs,
 * errors or `taskfarm ls`; rogue daemons (another key, --insecure) next to a legitimate one never
 * receive a task or a bundle; captured handshakes cannot be replayed, moved to another daemon or used
 * after --handshake-ms. Real daemons in child processes on 127.0.0.1.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NoWorkersError, PROTOCOL_VERSION, TaskFarm, generateFarmKey, type Logger, type WorkerLostEvent } from '../../dist/src/index.js';
import { createWorkerClient, grpc, type WorkerClient } from '../../dist/src/protocol/grpc.js';
import { clientProof, newClientNonce } from '../../dist/src/security/handshake.js';
import { connectRaw, testKey, type RawWorker } from '../helpers/raw-worker.js';
import { fixture, waitForLine } from '../helpers/daemons.js';
import { SecurityDaemons, alive, envWithoutKey, settle } from '../helpers/security-daemons.js';
import { createLan, netnsAvailable, netnsSkipReason } from '../helpers/virtual-lan.js';

/** A logger that keeps every line (message and fields) as text. */
function capturingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const at = (level: string) => (message: string, fields?: Record<string, unknown>) => {
    lines.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** Every text form of a key that could leak: base64url text, base64, hex. */
function keyForms(keyText: string): string[] {
  const bytes = Buffer.from(keyText, 'base64url');
  return [keyText, bytes.toString('base64'), bytes.toString('hex'), bytes.toString('base64').replace(/=+$/, '')];
}

function expectNoKey(where: string, text: string, keys: readonly string[]): void {
  for (const k of keys) for (const form of keyForms(k)) expect(text.includes(form), `${where} contains a farm key`).toBe(false);
}

const TEST_KEY_TEXT = (): string => process.env['TASKFARM_KEY']!;

describe('authentication: who may recruit a worker, and which workers a client trusts', () => {
  const daemons = new SecurityDaemons();
  const raws: RawWorker[] = [];
  const clients: WorkerClient[] = [];

  async function raw(d: { address: string }): Promise<RawWorker> {
    const c = await connectRaw(d.address);
    raws.push(c);
    return c;
  }

  afterEach(async () => {
    for (const c of raws.splice(0)) c.close();
    for (const c of clients.splice(0)) c.close();
    await daemons.stopAll();
  });

  it('a client with another key, and raw clients without a valid proof, are refused (UNAUTHENTICATED) while a legitimate run on the same daemon completes unaffected; no key in logs or errors', async () => {
    const d = await daemons.start({ inherit: true }, ['--log-level', 'debug']);
    const otherKey = generateFarmKey();

    // The legitimate run, started first and long enough to overlap every attempt below.
    const n = 24;
    const legitLog = capturingLogger();
    const legit = new TaskFarm<unknown, number>(
      fixture('spin.ts'),
      Array.from({ length: n }, (_, v) => ({ v, ms: 100 })),
      {
        peers: [d.address],
        localFallback: false,
        logger: legitLog,
      },
    );
    const legitLost: WorkerLostEvent[] = [];
    legit.on('lost', (e) => legitLost.push(e));
    const recruited = new Promise<void>((r) => legit.once('recruited', () => r()));
    let legitFinished = false;
    const legitDone = legit.compute().finally(() => (legitFinished = true));
    legitDone.catch(() => {});
    await recruited;

    // 1. A TaskFarm with another key: the worker cannot prove *its* key, so nothing is sent; the
    //    run fails (no local fallback) with NoWorkersError whose message says why.
    const wrongLog = capturingLogger();
    const t0 = performance.now();
    const wrong = await settle(
      new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], {
        peers: [d.address],
        localFallback: false,
        workerWaitMs: 400,
        key: otherKey,
        logger: wrongLog,
      }).compute(),
    );
    expect(wrong).toBeInstanceOf(NoWorkersError);
    expect((wrong as NoWorkersError).code).toBe('FARM_ERR_NO_WORKERS');
    // The message is the feature here: a user must see that it was the farm key.
    expect((wrong as Error).message).toMatch(/could not prove the farm key/);
    expect((wrong as Error).message).toContain(d.address);
    expect(performance.now() - t0).toBeLessThan(3000);

    // 2. A client with `insecure: true` speaks plaintext: it cannot even reach a TLS daemon.
    const noKey = await settle(
      new TaskFarm<number, number>(fixture('double.ts'), [1], { peers: [d.address], localFallback: false, workerWaitMs: 400, insecure: true }).compute(),
    );
    expect(noKey).toBeInstanceOf(NoWorkersError);
    expect((noKey as Error).message).toContain(d.address);
    // 3. A client with no key at all does not even look for workers (it would be refused).
    const saved = { key: process.env['TASKFARM_KEY'], config: process.env['XDG_CONFIG_HOME'] };
    let keyless: TaskFarm<number, number>;
    try {
      delete process.env['TASKFARM_KEY'];
      process.env['XDG_CONFIG_HOME'] = join(d.cacheDir, 'no-config');
      keyless = new TaskFarm<number, number>(fixture('double.ts'), [1], { peers: [d.address], localFallback: false, workerWaitMs: 400 });
    } finally {
      process.env['TASKFARM_KEY'] = saved.key;
      process.env['XDG_CONFIG_HOME'] = saved.config;
    }
    const keylessErr = await settle(keyless.compute());
    expect(keylessErr).toBeInstanceOf(NoWorkersError);
    expect((keylessErr as Error).message).toContain('taskfarm keygen');

    // 4. Raw clients that speak the protocol but do not prove the key: gRPC code 16, every time,
    //    even though the worker is busy (authentication comes before the busy check).
    const c = await raw(d);
    const attempts: [string, Promise<unknown>][] = [
      ['no proof', c.recruit({ client_proof: Buffer.alloc(0) })],
      ['garbage proof', c.recruit({ client_proof: randomBytes(32) })],
      ['truncated proof', c.recruit({ client_proof: randomBytes(16) })],
      ['proof with another key', c.recruit({}, 5000, Buffer.from(otherKey, 'base64url'))],
      [
        'no handshake at all',
        c.client.recruit(
          {
            client_id: 'x',
            protocol_version: PROTOCOL_VERSION,
            client_host: '',
            lease_timeout_ms: 0,
            heartbeat_ms: 0,
            max_message_bytes: 0,
            client_nonce: Buffer.alloc(0),
            worker_nonce: Buffer.alloc(0),
            client_proof: Buffer.alloc(0),
          },
          5000,
        ),
      ],
      [
        'made-up worker nonce',
        c.client.recruit(
          {
            client_id: 'x',
            protocol_version: PROTOCOL_VERSION,
            client_host: '',
            lease_timeout_ms: 0,
            heartbeat_ms: 0,
            max_message_bytes: 0,
            client_nonce: newClientNonce(),
            worker_nonce: randomBytes(40),
            client_proof: randomBytes(32),
          },
          5000,
        ),
      ],
    ];
    const outcomes = await Promise.all(attempts.map(([, p]) => settle(p)));
    for (const [i, [what]] of attempts.entries()) {
      const err = outcomes[i] as grpc.ServiceError;
      expect(err, what).toBeInstanceOf(Error);
      expect(err.code, what).toBe(grpc.status.UNAUTHENTICATED);
      expect(err.code, what).toBe(16);
    }
    // Without a lease, nothing else works either.
    expect(((await settle(c.install('x', { hashes: [], bundles: [] }, 2000))) as grpc.ServiceError).code).toBe(grpc.status.UNAUTHENTICATED);
    expect(((await settle(c.release('x', 2000))) as grpc.ServiceError).code).toBe(grpc.status.UNAUTHENTICATED);

    // All of that happened while the legitimate run was computing on the same daemon.
    expect(legitFinished).toBe(false);
    // The legitimate run: complete, correct, on this daemon, never interrupted.
    const outputs = await legitDone;
    expect(outputs).toEqual(Array.from({ length: n }, (_, v) => v * 2));
    expect(legit.stats().workers.map((w) => [w.id, w.completed, w.lost])).toEqual([[d.id, n, undefined]]);
    expect(legitLost).toEqual([]);
    expect((await c.describe(2000)).state).toBe('free');
    expect(alive(d.pid)).toBe(true);

    // The daemon logged each refusal (and why), and never the key: not at debug level, not in
    // any client error or log line.
    const stderr = d.stderr();
    // Refusals are logged, rate-limited (at most one line a second, with a count of the rest).
    const lines = stderr.match(/refused a recruit[^\n]*/g) ?? [];
    const counted = lines.reduce((n, l) => n + 1 + Number(/and (\d+) more refused/.exec(l)?.[1] ?? 0), 0);
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(counted).toBeLessThanOrEqual(attempts.length);
    expect(stderr).not.toMatch(/recruited client=x\b/);
    const keys = [TEST_KEY_TEXT(), otherKey];
    expectNoKey('daemon stderr', stderr, keys);
    expectNoKey('wrong-key client error', `${(wrong as Error).message} ${(wrong as Error).stack}`, keys);
    expectNoKey('insecure client error', `${(noKey as Error).message} ${(noKey as Error).stack}`, keys);
    expectNoKey('keyless client error', `${(keylessErr as Error).message} ${(keylessErr as Error).stack}`, keys);
    expectNoKey('client logs', [...legitLog.lines, ...wrongLog.lines].join('\n'), keys);
    // The wrong-key client logged why it did not use the worker.
    expect(wrongLog.lines.some((l) => l.startsWith('warn not using worker'))).toBe(true);
  });

  it('a daemon with no key refuses to start (exit 2, pointing at `taskfarm keygen`); a malformed key is refused without being echoed; --insecure starts with a loud warning and Describe says secure=false', async () => {
    const config = daemons.tempDir();
    const env = envWithoutKey(config);
    const base = ['worker', '--host', '127.0.0.1', '--port', '0', '--no-advertise', '--threads', '1'];

    const none = daemons.spawnCli([...base, '--cache-dir', daemons.tempDir()], env);
    expect(await none.exited).toBe(2);
    expect(none.stderr()).toContain('taskfarm keygen');
    expect(none.stderr()).toMatch(/--insecure/);
    expect(none.stdout()).not.toMatch(/READY/);

    const garbageKey = 'SECRET-LOOKING-NOT-A-KEY-' + randomUUID();
    const badEnv = daemons.spawnCli([...base, '--cache-dir', daemons.tempDir()], { ...env, TASKFARM_KEY: garbageKey });
    expect(await badEnv.exited).toBe(2);
    expect(badEnv.stderr()).toContain('taskfarm keygen');
    expect(badEnv.stderr()).not.toContain(garbageKey);
    expect(badEnv.stderr()).not.toContain('SECRET-LOOKING');

    // --insecure and a key at once is a usage error.
    const both = daemons.spawnCli([...base, '--cache-dir', daemons.tempDir(), '--insecure', '--key-file', join(config, 'x.key')], env);
    expect(await both.exited).toBe(2);

    const insecure = daemons.spawnCli([...base, '--cache-dir', daemons.tempDir(), '--insecure'], env);
    const ready = await waitForLine(insecure.child.stdout!, /^READY port=(\d+) id=(\S+)/, 15_000);
    expect(insecure.stderr()).toMatch(/WARNING: --insecure/);
    expect(insecure.stderr()).toMatch(/run any code/);
    const plain = createWorkerClient(`127.0.0.1:${ready[1]}`, 1000, { kind: 'plaintext' });
    clients.push(plain);
    const desc = await plain.describe({ client_nonce: newClientNonce() }, 3000);
    expect(desc.secure).toBe(false);
    expect(desc.id).toBe(ready[2]);
    // No handshake material from a daemon without a key.
    expect(desc.worker_nonce).toHaveLength(0);
    expect(desc.worker_proof).toHaveLength(0);
  });

  it('rogue daemons (another key; --insecure) next to a legitimate one in `peers` never get a task or a bundle; the run completes on the legitimate one', async () => {
    const [legit, rogue, open] = await Promise.all([
      daemons.start({ inherit: true }),
      daemons.start({ key: generateFarmKey() }, ['--log-level', 'debug']),
      daemons.start({ insecure: true }, ['--log-level', 'debug']),
    ]);
    const log = capturingLogger();
    const n = 40;
    const farm = new TaskFarm<number, number>(
      fixture('double.ts'),
      Array.from({ length: n }, (_, i) => i),
      {
        peers: [rogue.address, open.address, legit.address],
        localFallback: false,
        logger: log,
      },
    );
    const recruited: string[] = [];
    farm.on('recruited', (w) => recruited.push(w.id));
    expect(await farm.compute()).toEqual(Array.from({ length: n }, (_, i) => i * 2));
    expect(recruited).toEqual([legit.id]);
    expect(farm.stats().workers.map((w) => [w.id, w.completed])).toEqual([[legit.id, n]]);

    // The legitimate daemon got the bundle; the rogues got nothing at all.
    expect(legit.bundles()).toHaveLength(1);
    expect(rogue.bundles()).toEqual([]);
    expect(open.bundles()).toEqual([]);
    // Not even a Recruit reached them: the client checked the worker's proof first.
    for (const r of [rogue, open]) {
      expect(r.stderr()).not.toMatch(/recruit/i);
      expect(r.stderr()).not.toMatch(/lease/i);
      expect(alive(r.pid)).toBe(true);
    }
    // The client said why it skipped each one.
    const skipped = log.lines.filter((l) => /not using worker|could not recruit worker/.test(l));
    expect(skipped.some((l) => l.includes(rogue.address) && /could not prove the farm key/.test(l))).toBe(true);
    expect(skipped.some((l) => l.includes(open.address) && /no TLS connection/.test(l))).toBe(true);
    expect(skipped.some((l) => l.includes(legit.address))).toBe(false);

    // And an `insecure: true` client uses the --insecure daemon only (never the keyed ones).
    const insecureFarm = new TaskFarm<number, number>(fixture('double.ts'), [5, 6], {
      peers: [rogue.address, legit.address, open.address],
      localFallback: false,
      insecure: true,
    });
    expect(await insecureFarm.compute()).toEqual([10, 12]);
    expect(insecureFarm.stats().workers.map((w) => w.id)).toEqual([open.id]);
  });

  it('a captured Recruit cannot be replayed, moved to another daemon, altered, or used after --handshake-ms', async () => {
    const [a, b, slow] = await Promise.all([
      daemons.start({ inherit: true }),
      daemons.start({ inherit: true }),
      daemons.start({ inherit: true }, ['--handshake-ms', '300']),
    ]);
    expect(a.id).not.toBe(b.id);
    const ra = await raw(a);
    const rb = await raw(b);
    expect(ra.fingerprint).not.toBe(rb.fingerprint);
    const code = async (p: Promise<unknown>): Promise<number | undefined> => ((await settle(p)) as grpc.ServiceError).code;

    // Replay on the same daemon: the first use succeeds, the same bytes again are refused, while
    // the lease is held and after it was released.
    const { request, workerProofOk } = await ra.handshake();
    expect(workerProofOk).toBe(true);
    const lease = await ra.client.recruit(request, 3000);
    expect(lease.worker_id).toBe(a.id);
    expect(await code(ra.client.recruit(request, 3000))).toBe(grpc.status.UNAUTHENTICATED);
    await ra.release(lease.token, 3000);
    expect(await code(ra.client.recruit(request, 3000))).toBe(grpc.status.UNAUTHENTICATED);
    expect(await code(ra.client.recruit({ ...request }, 3000))).toBe(16);

    // A fresh, never used request for A, sent to B (another worker id and certificate) instead.
    const forA = await ra.handshake();
    expect(await code(rb.client.recruit(forA.request, 3000))).toBe(grpc.status.UNAUTHENTICATED);
    // B's own nonce, but the proof made for A's identity (worker id and certificate): refused too.
    const hb = await rb.handshake();
    const boundToA = clientProof(
      testKey(),
      { workerId: a.id, clientNonce: hb.request.client_nonce, workerNonce: hb.request.worker_nonce, certFingerprint: ra.fingerprint },
      hb.request.client_id,
    );
    expect(await code(rb.client.recruit({ ...hb.request, client_proof: boundToA }, 3000))).toBe(grpc.status.UNAUTHENTICATED);
    // Fields changed after the proof was computed: client id, client nonce.
    const h1 = await rb.handshake();
    expect(await code(rb.client.recruit({ ...h1.request, client_id: 'someone-else' }, 3000))).toBe(grpc.status.UNAUTHENTICATED);
    const h2 = await rb.handshake();
    expect(await code(rb.client.recruit({ ...h2.request, client_nonce: newClientNonce() }, 3000))).toBe(grpc.status.UNAUTHENTICATED);
    // The unused request for A is still good on A (nothing above consumed it), once.
    const leaseA = await ra.client.recruit(forA.request, 3000);
    await ra.release(leaseA.token, 3000);
    // And B is free and usable by an honest handshake.
    const leaseB = await rb.recruit();
    await rb.release(leaseB.token, 3000);

    // Expiry: with --handshake-ms 300, a request built now and sent after 450 ms is refused. (A
    // deliberate, bounded wait: the handshake must be older than its lifetime.)
    const rs = await raw(slow);
    const old = await rs.handshake();
    const builtAt = performance.now();
    await new Promise((r) => setTimeout(r, 450));
    expect(performance.now() - builtAt).toBeGreaterThan(300);
    expect(await code(rs.client.recruit(old.request, 3000))).toBe(grpc.status.UNAUTHENTICATED);
    // A prompt one on the same daemon succeeds.
    const prompt = await rs.recruit();
    expect(prompt.worker_id).toBe(slow.id);
    await rs.release(prompt.token, 3000);
    const stderr = slow.stderr();
    expect(stderr).toMatch(/expired/);
    expectNoKey('daemon stderr', a.stderr() + b.stderr() + stderr, [TEST_KEY_TEXT()]);
  });
});

describe.skipIf(!netnsAvailable)('`taskfarm ls --json` on a virtual LAN never shows the key', () => {
  it('lists a keyed daemon (secure) and an --insecure one without any key text', { timeout: 40_000 }, async () => {
    if (!netnsAvailable) throw new Error(netnsSkipReason);
    const lan = await createLan(2, { prefix: 'sec' });
    const daemons = new SecurityDaemons();
    try {
      const dirs = [daemons.tempDir(), daemons.tempDir(), daemons.tempDir()];
      const cli = join(new URL('../../', import.meta.url).pathname, 'dist/client/cli.js');
      const keyed = lan.exec(lan.hosts[0]!, process.execPath, [cli, 'worker', '--cache-dir', dirs[0]!, '--threads', '1', '--log-level', 'debug']);
      const open = lan.exec(lan.hosts[0]!, process.execPath, [cli, 'worker', '--cache-dir', dirs[1]!, '--threads', '1', '--insecure'], {
        env: envWithoutKey(dirs[2]!),
      });
      let stderr = '';
      for (const p of [keyed, open]) p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const [k, o] = await Promise.all([
        waitForLine(keyed.stdout!, /^READY port=(\d+) id=(\S+)/, 15_000),
        waitForLine(open.stdout!, /^READY port=(\d+) id=(\S+)/, 15_000),
      ]);
      const ls = lan.exec(lan.hosts[1]!, process.execPath, [cli, 'ls', '--json', '--timeout', '1500']);
      let out = '';
      let err = '';
      ls.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      ls.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      const exitCode = await new Promise<number | null>((r) => ls.once('close', (c) => r(c)));
      expect(exitCode).toBe(0);
      const rows = out
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as { id: string; secure: boolean; state: string });
      expect(rows.map((r) => [r.id, r.secure, r.state]).sort()).toEqual(
        [
          [k[2], true, 'free'],
          [o[2], false, 'free'],
        ].sort(),
      );
      expectNoKey('taskfarm ls --json', out + err, [TEST_KEY_TEXT()]);
      expectNoKey('daemon stderr', stderr, [TEST_KEY_TEXT()]);
    } finally {
      await lan.destroy();
      await daemons.stopAll();
    }
  });
});

// Regression (opt-in, ~65,000 handshakes: TASKFARM_SECURITY_SLOW=1): the table of used worker nonces
// once filled up with the nonces of failed recruits, after which honest recruits were refused. Only a
// client that proves the key uses up a nonce now.
describe.runIf(process.env['TASKFARM_SECURITY_SLOW'] === '1')('slow: the used-nonce table', () => {
  const daemons = new SecurityDaemons();
  afterEach(async () => {
    await daemons.stopAll();
  });

  it('cannot be filled by a client without the key (honest recruits still succeed)', { timeout: 180_000 }, async () => {
    const d = await daemons.start({ inherit: true }, ['--handshake-ms', '120000', '--log-level', 'error']);
    const first = await connectRaw(d.address);
    const channels = [first, ...(await Promise.all(Array.from({ length: 7 }, () => connectRaw(d.address))))];
    try {
      const t0 = performance.now();
      let sent = 0;
      const lane = async (c: RawWorker): Promise<void> => {
        while (sent < 65_536 && performance.now() - t0 < 120_000) {
          sent++;
          const nonce = newClientNonce();
          const desc = await c.client.describe({ client_nonce: nonce }, 5000);
          await settle(
            c.client.recruit(
              {
                client_id: 'attacker',
                protocol_version: PROTOCOL_VERSION,
                client_host: '',
                lease_timeout_ms: 0,
                heartbeat_ms: 0,
                max_message_bytes: 0,
                client_nonce: nonce,
                worker_nonce: desc.worker_nonce,
                client_proof: randomBytes(32),
              },
              5000,
            ),
          );
        }
      };
      await Promise.all(channels.flatMap((c) => Array.from({ length: 8 }, () => lane(c))));
      console.log(`[slow] ${sent} keyless Describe+Recruit pairs in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      const honest = await settle(first.recruit());
      console.log(`[slow] then an honest recruit: ${honest instanceof Error ? `refused: ${(honest as grpc.ServiceError).details}` : 'accepted'}`);
      expect(honest).not.toBeInstanceOf(Error);
    } finally {
      for (const c of channels) c.close();
    }
  });
});
