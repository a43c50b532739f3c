/**
 * Fuzzing a daemon (issue 4, test 5), bounded in count and time. Two real daemons:
 *   H (--idle-timeout-ms 1000) takes transport-level abuse: random bytes on its TCP port, random
 *     bytes after a TLS handshake (with and without the HTTP/2 preface), half-open connections that
 *     send nothing (closed by the idle timeout), slow connections trickling bytes;
 *   G takes protocol-level abuse: malformed and truncated protobuf bodies on every method (a gRPC
 *     client whose serializers send raw bytes), garbage packed task inputs on a valid lease, bundles
 *     whose hash does not match, Installs of things that are not modules followed by Start,
 *     Compute without a lease, a flood of Describe calls.
 * Afterwards both still complete a real TaskFarm run and their processes are alive. The counts of
 * every hostile input are printed. TASKFARM_FUZZ_SEED=<n> replays a run's random choices.
 */
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { serialize } from 'node:v8';
import { encodeInputs } from '../../dist/src/protocol/batch.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION, TaskFarm, certFingerprint } from '../../dist/src/index.js';
import { createWorkerClient, fetchServerCertificate, grpc, workerServiceDefinition, type WorkerClient } from '../../dist/src/protocol/grpc.js';
import type { RecruitRequest } from '../../dist/src/protocol/messages.js';
import { fixture } from '../helpers/daemons.js';
import { Counts, Rng, bounded } from '../helpers/fuzz.js';
import { ComputeSession, DOUBLE_BUNDLE, installBundle, rawTaskBatch, sha256, taskBatch } from '../helpers/raw-compute.js';
import { connectRaw, type RawWorker } from '../helpers/raw-worker.js';
import { SecurityDaemons, alive, settle, type SecurityDaemon } from '../helpers/security-daemons.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
/** Whole fuzzing budget (the loops stop at their count or at this, whichever comes first). */
const FUZZ_BUDGET_MS = 20_000;

type RawBytesClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

/**
 * A gRPC client of the Worker service whose serializers pass raw Buffers through, so any bytes can
 * be sent as a request body. TLS with the daemon's certificate pinned, like test/helpers/raw-worker.ts.
 */
function rawBytesClient(address: string, certPem: string): RawBytesClient {
  const def = workerServiceDefinition();
  const identity = (b: Buffer): Buffer => b;
  const rawDef: grpc.ServiceDefinition = Object.fromEntries(
    Object.entries(def).map(([name, m]) => [
      name,
      { ...m, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
    ]),
  );
  const Ctor = grpc.makeGenericClientConstructor(rawDef, 'RawBytesWorker');
  const expected = certFingerprint(certPem);
  const creds = grpc.credentials.createSsl(Buffer.from(certPem), null, null, {
    checkServerIdentity: (_host, cert) => (String(cert.fingerprint256).toUpperCase() === expected ? undefined : new Error('not the pinned certificate')),
  });
  return new Ctor(address, creds, { 'grpc.ssl_target_name_override': 'taskfarm-worker' }) as RawBytesClient;
}

function unaryRaw(client: RawBytesClient, method: string, body: Buffer, md: grpc.Metadata, ms = 3000): Promise<{ code: number; body?: Buffer }> {
  return new Promise((resolve) => {
    const fn = client[method] as (b: Buffer, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => void;
    fn.call(client, body, md, { deadline: Date.now() + ms }, (err, res) => resolve(err === null ? { code: 0, body: res! } : { code: err.code }));
  });
}

/**
 * Resolves true when `s` is closed (by the server) within `ms`, false otherwise. Whatever the server
 * sends is read and dropped: a socket with unread data never reports the server's FIN.
 */
function closedWithin(s: Socket, ms: number): Promise<boolean> {
  s.resume();
  if (s.destroyed && s.closed) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    s.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

describe('fuzzing a daemon (bounded)', () => {
  const daemons = new SecurityDaemons();
  const rng = Rng.fromEnv();
  const counts = new Counts();
  const sockets = new Set<Socket>();
  const closers: (() => void | Promise<unknown>)[] = [];
  let h: SecurityDaemon;
  let g: SecurityDaemon;
  let gCert = '';
  let fuzzStart = 0;

  const track = <S extends Socket>(s: S): S => {
    sockets.add(s);
    s.on('error', () => {});
    s.once('close', () => sockets.delete(s));
    return s;
  };
  /** A section's deadline: its own budget, within what is left of the whole fuzzing budget. */
  const sectionDeadline = (budgetMs: number): number => Math.min(performance.now() + budgetMs, fuzzStart + FUZZ_BUDGET_MS);

  async function raw(d: SecurityDaemon): Promise<RawWorker> {
    const c = await connectRaw(d.address);
    closers.push(() => c.close());
    return c;
  }

  beforeAll(async () => {
    [h, g] = await Promise.all([
      daemons.start({ inherit: true }, ['--idle-timeout-ms', '1000', '--log-level', 'warn']),
      daemons.start({ inherit: true }, ['--threads', '2', '--log-level', 'warn']),
    ]);
    gCert = await fetchServerCertificate('127.0.0.1', g.port, 5000);
    fuzzStart = performance.now();
    console.log(`[fuzz] seed ${rng.seed} (replay with TASKFARM_FUZZ_SEED=${rng.seed})`);
  });

  afterEach(async () => {
    for (const s of sockets) s.destroy();
    sockets.clear();
    // Last opened, first closed (a lease is released before its client is closed).
    for (const c of closers.splice(0).reverse()) await c();
  });

  afterAll(async () => {
    await daemons.stopAll();
  });

  it('random bytes on the TCP port, over many connections: each is closed by the server', async () => {
    const deadline = sectionDeadline(4000);
    let stillOpen = 0;
    const n = await bounded(250, 25, deadline, async (i) => {
      const s = track(tcpConnect({ host: '127.0.0.1', port: h.port }));
      const connected = await new Promise<boolean>((resolve) => {
        s.once('connect', () => resolve(true));
        s.once('error', () => resolve(false));
      });
      if (!connected) return void counts.add('tcp-junk.refused');
      // Sometimes the start of a TLS record, so that the TLS layer waits for more.
      const junk = i % 4 === 0 ? Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), rng.bytes(rng.int(0, 300))]) : rng.bytes(rng.int(1, 2048));
      s.write(junk);
      if (i % 3 === 0) s.end();
      if (await closedWithin(s, 3000)) counts.add('tcp-junk.closed-by-server');
      else stillOpen++;
      s.destroy();
    });
    counts.add('tcp-junk', n);
    expect(n).toBeGreaterThanOrEqual(50);
    expect(stillOpen).toBe(0);
    expect(alive(h.pid)).toBe(true);
  });

  it('random bytes after a completed TLS handshake, with and without a valid HTTP/2 preface: each is closed by the server', async () => {
    const deadline = sectionDeadline(5000);
    let stillOpen = 0;
    let handshakes = 0;
    const n = await bounded(150, 15, deadline, async (i) => {
      const s = track(tlsConnect({ host: '127.0.0.1', port: h.port, rejectUnauthorized: false, ALPNProtocols: ['h2'], servername: 'taskfarm-worker' }));
      const ok = await new Promise<boolean>((resolve) => {
        s.once('secureConnect', () => resolve(true));
        s.once('error', () => resolve(false));
        s.once('close', () => resolve(false));
      });
      if (!ok) return void counts.add('tls-junk.handshake-failed');
      handshakes++;
      const preface = i % 2 === 0;
      s.write(Buffer.concat([preface ? PREFACE : Buffer.alloc(0), rng.bytes(rng.int(1, 1024))]));
      counts.add(preface ? 'tls-junk.after-preface' : 'tls-junk.no-preface');
      if (await closedWithin(s, 4000)) counts.add('tls-junk.closed-by-server');
      else stillOpen++;
      s.destroy();
    });
    counts.add('tls-junk', n);
    expect(handshakes).toBeGreaterThanOrEqual(Math.floor(n * 0.9));
    expect(stillOpen).toBe(0);
    expect(alive(h.pid)).toBe(true);
  });

  it('half-open connections that send nothing are closed by the idle timeout (1 s); slow ones trickling bytes do not stop the daemon serving others', async () => {
    const t0 = performance.now();
    // Silent TCP connections, and silent TLS connections (handshake done, then nothing).
    const silentTcp = Array.from({ length: 8 }, () => track(tcpConnect({ host: '127.0.0.1', port: h.port })));
    const silentTls = Array.from({ length: 4 }, () =>
      track(tlsConnect({ host: '127.0.0.1', port: h.port, rejectUnauthorized: false, ALPNProtocols: ['h2'], servername: 'taskfarm-worker' })),
    );
    const closeTimes = (list: Socket[]) =>
      Promise.all(list.map(async (s) => ((await closedWithin(s, 4000)) ? performance.now() - t0 : Number.POSITIVE_INFINITY)));
    const silentTcpClosed = closeTimes(silentTcp);
    const silentTlsClosed = closeTimes(silentTls);
    // Slow connections: a byte every 150 ms, either random bytes or the start of a TLS record
    // that never completes (a "slowloris").
    const tricklers = Array.from({ length: 6 }, (_, i) => {
      const s = track(tcpConnect({ host: '127.0.0.1', port: h.port }));
      const bytes = i < 3 ? rng.bytes(40) : Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]), rng.bytes(40)]);
      let at = 0;
      const timer = setInterval(() => {
        if (s.destroyed || at >= bytes.length) return clearInterval(timer);
        s.write(bytes.subarray(at, ++at));
      }, 150);
      closers.push(() => clearInterval(timer));
      return { s, slowloris: i >= 3, closed: closedWithin(s, 3000).then((c) => (c ? performance.now() - t0 : Number.POSITIVE_INFINITY)) };
    });
    counts.add('half-open.tcp', silentTcp.length);
    counts.add('half-open.tls', silentTls.length);
    counts.add('slow', tricklers.length);

    // Meanwhile the daemon answers a client (a fresh connection each time) without delay.
    const c = await raw(h);
    for (let i = 0; i < 5; i++) expect((await c.describe(1000)).id).toBe(h.id);

    const tcpTimes = await silentTcpClosed;
    const tlsTimes = await silentTlsClosed;
    for (const t of tcpTimes) {
      expect(t).toBeGreaterThanOrEqual(900);
      expect(t).toBeLessThan(3000);
    }
    for (const t of tlsTimes) expect(t).toBeLessThan(4000);
    const trickled = await Promise.all(tricklers.map((t) => t.closed));
    // Random bytes are not TLS: those connections are closed.
    for (const t of trickled.slice(0, 3)) expect(t).toBeLessThan(3000);
    console.log(
      `[fuzz] silent TCP closed after ${tcpTimes.map((t) => t.toFixed(0)).join(',')} ms; silent TLS after ${tlsTimes.map((t) => t.toFixed(0)).join(',')} ms; ` +
        `trickling junk closed after ${trickled
          .slice(0, 3)
          .map((t) => t.toFixed(0))
          .join(',')} ms; trickling a TLS record (slowloris) closed after ${trickled
          .slice(3)
          .map((t) => (Number.isFinite(t) ? t.toFixed(0) : 'still open at 3000'))
          .join(',')} ms`,
    );
    expect(alive(h.pid)).toBe(true);
  });

  it('malformed, truncated and mutated protobuf bodies on every method, with no, a garbage or a valid lease token: never a lease, never a crash', async () => {
    const deadline = sectionDeadline(5000);
    const def = workerServiceDefinition();
    const client = rawBytesClient(g.address, gCert);
    closers.push(() => client.close());
    const holder = await raw(g);
    const lease = await holder.recruit({ lease_timeout_ms: 30_000 });
    closers.push(() => holder.release(lease.token, 1000).catch(() => {}));
    const badRecruit = (): RecruitRequest => ({
      client_id: `fuzz-${rng.int(0, 1e6)}`,
      protocol_version: rng.pick([PROTOCOL_VERSION, 0, 999]),
      client_host: 'fuzz',
      lease_timeout_ms: rng.int(0, 100_000),
      heartbeat_ms: rng.int(0, 10_000),
      max_message_bytes: rng.int(0, 2 ** 31),
      client_nonce: rng.bytes(rng.pick([0, 16, 64, 65])),
      worker_nonce: rng.bytes(rng.pick([0, 40])),
      client_proof: rng.bytes(rng.pick([0, 32])), // never a valid proof: nobody here uses the key
    });
    const valid: Record<string, () => Buffer> = {
      Describe: () => def['Describe']!.requestSerialize({ client_nonce: rng.bytes(rng.int(0, 80)) }),
      Recruit: () => def['Recruit']!.requestSerialize(badRecruit()),
      Install: () => {
        const code = rng.bytes(rng.int(0, 64));
        return def['Install']!.requestSerialize({
          hashes: [sha256(code), 'zz'],
          bundles: [{ hash: rng.pick([sha256(code), sha256(Buffer.alloc(1)), '../x']), code }],
        });
      },
      Release: () => def['Release']!.requestSerialize({}),
    };
    const body = (method: string, i: number): Buffer => {
      switch (i % 6) {
        case 0:
          return rng.bytes(rng.int(0, 256));
        case 1: {
          const b = valid[method]!();
          return b.subarray(0, rng.int(0, Math.max(0, b.length - 1)));
        }
        case 2:
          return rng.mutate(valid[method]!(), rng.int(1, 4));
        case 3: // an over-long varint, then a length prefix far beyond the message
          return Buffer.concat([Buffer.from([0x08]), Buffer.alloc(11, 0xff), Buffer.from([0x12, 0xff, 0xff, 0xff, 0xff, 0x07]), rng.bytes(8)]);
        case 4: // a wrong wire type for each field
          return Buffer.from([0x0d, 1, 2, 3, 4, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x1b, 0x1c, 0x25, 0, 0, 0, 0]);
        default:
          return valid[method]!();
      }
    };
    const methods = ['Describe', 'Recruit', 'Install', 'Release'];
    let leasesGranted = 0;
    const n = await bounded(400, 16, deadline, async (i) => {
      const method = methods[i % methods.length]!;
      const md = new grpc.Metadata();
      const tokenKind = method === 'Release' ? rng.pick(['none', 'garbage']) : rng.pick(['none', 'garbage', 'valid']);
      if (tokenKind === 'garbage') md.set('taskfarm-lease', rng.bytes(24).toString('base64url'));
      if (tokenKind === 'valid') md.set('taskfarm-lease', lease.token);
      const r = await unaryRaw(client, method, body(method, Math.floor(i / methods.length)), md);
      counts.add(`proto.${method}.${r.code === 0 ? 'ok' : grpc.status[r.code]}`);
      if (method === 'Recruit' && r.code === 0) leasesGranted++;
      // Without the lease token, Install and Release never succeed.
      if ((method === 'Install' || method === 'Release') && tokenKind !== 'valid') expect(r.code, `${method} without a lease`).not.toBe(0);
    });
    counts.add('proto.unary', n);
    expect(leasesGranted).toBe(0);
    // Far too many hashes in one Install, with the valid lease: refused.
    const many = { hashes: Array.from({ length: 300 }, (_, k) => sha256(Buffer.from([k & 0xff, k >> 8]))), bundles: [] };
    expect(((await settle(holder.install(lease.token, many, 3000))) as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    counts.add('proto.install-too-many-hashes');
    // The lease survived all of it.
    expect((await holder.describe(2000)).state).toBe('recruited');
    await holder.release(lease.token, 2000);

    // Compute streams of raw frames, each on a fresh lease (or none).
    // One at a time: a worker holds one lease.
    const streams = await bounded(24, 1, sectionDeadline(4000), async (i) => {
      const md = new grpc.Metadata();
      let token: string | undefined;
      if (i % 3 !== 0) {
        token = (await holder.recruit({ lease_timeout_ms: 2000 })).token;
        md.set('taskfarm-lease', token);
      }
      const call = (client['Compute'] as (md: grpc.Metadata) => grpc.ClientDuplexStream<Buffer, Buffer>).call(client, md);
      const status = new Promise<number>((resolve) => {
        const timer = setTimeout(() => resolve(-1), 3000);
        call.on('data', () => {});
        call.on('error', (e: grpc.ServiceError) => (clearTimeout(timer), resolve(e.code)));
        call.on('status', (s: grpc.StatusObject) => (clearTimeout(timer), resolve(s.code)));
      });
      const frames = rng.int(1, 4);
      for (let f = 0; f < frames; f++) {
        const k = rng.int(0, 3);
        call.write(
          k === 0
            ? rng.bytes(rng.int(0, 200))
            : k === 1
              ? rng.mutate(def['Compute']!.requestSerialize({ start: { chain: [sha256(rng.bytes(4))] } }), 2)
              : k === 2
                ? def['Compute']!.requestSerialize({ tasks: { seqs: [rng.int(0, 2 ** 32 - 1)], inputs: rng.bytes(16) } })
                : Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x7f]),
        );
      }
      call.end();
      const code = await status;
      call.cancel();
      counts.add(`proto.Compute.${code === -1 ? 'no-status-in-3s' : grpc.status[code]}`);
      if (token === undefined) expect(code).toBe(grpc.status.UNAUTHENTICATED);
      if (token !== undefined) await holder.release(token, 2000).catch(() => {});
    });
    counts.add('proto.compute-streams', streams);
    expect((await holder.describe(2000)).state).toBe('free');
    expect(alive(g.pid)).toBe(true);
  });

  it('garbage v8 inputs in task batches on a valid lease: each task comes back as its error (or a value), once; nothing dies', async () => {
    const c = await raw(g);
    const lease = await c.recruit({ lease_timeout_ms: 30_000 });
    closers.push(() => c.release(lease.token, 1000).catch(() => {}));
    const hash = await installBundle(c, lease.token, DOUBLE_BUNDLE);
    const s = new ComputeSession(c, lease.token);
    closers.push(() => s.close());
    expect((await s.start([hash])).body).toBe('ready');
    const valid = { v: 1, s: 'hello', a: [1, 2, 3], m: new Map([[1, 2]]) };
    type Kind = 'no-header' | 'header+junk' | 'not-an-array' | 'wrong-count' | 'mutated';
    // Packed inputs that can never decode to an array of seqs.length values: every task of the
    // batch must come back as a bad-input error.
    const neverDecodes = new Set<Kind>(['no-header', 'not-an-array', 'wrong-count']);
    const sent = new Map<number, Kind>();
    const deadline = sectionDeadline(4000);
    let seq = 1;
    let batches = 0;
    while (seq <= 300 && performance.now() < deadline) {
      // Up to 50 tasks, in batches of 1..10 tasks each with its own garbage inputs.
      for (let k = 0; k < 50 && seq <= 300;) {
        const n = Math.min(rng.int(1, 10), 50 - k, 301 - seq);
        const seqs = Array.from({ length: n }, (_, i) => seq + i);
        const kind = rng.pick(['no-header', 'header+junk', 'not-an-array', 'wrong-count', 'mutated'] as const);
        let inputs: Buffer;
        if (kind === 'no-header') {
          inputs = rng.bytes(rng.int(0, 64));
          if (inputs.length > 0 && inputs[0] === 0xff) inputs[0] = 0;
        } else if (kind === 'header+junk') inputs = Buffer.concat([Buffer.from([0xff, 0x0f]), rng.bytes(rng.int(0, 64))]);
        else if (kind === 'not-an-array') inputs = serialize(rng.pick([valid, 42, 'inputs', null, new Map([[0, valid]])]));
        else if (kind === 'wrong-count') inputs = serialize(Array.from({ length: rng.pick([0, n - 1, n + 1, n * 2]) }, () => valid));
        else inputs = rng.mutate(serialize(Array.from({ length: n }, () => valid)), rng.int(1, 3));
        for (const q of seqs) sent.set(q, kind);
        s.write(rawTaskBatch(seqs, inputs));
        batches++;
        counts.add(`v8.batch.${kind}`);
        k += n;
        seq += n;
      }
      await s.until(`results up to ${seq - 1}`, () => s.results.length >= seq - 1 || s.error !== undefined || s.undecodable.length > 0, 10_000);
    }
    expect(s.error).toBeUndefined();
    expect(s.undecodable).toEqual([]);
    const bySeq = new Map<number, number>();
    for (const r of s.results) bySeq.set(r.seq, (bySeq.get(r.seq) ?? 0) + 1);
    expect(bySeq.size).toBe(sent.size);
    expect([...bySeq.values()].every((v) => v === 1)).toBe(true);
    for (const r of s.results) {
      const kind = sent.get(r.seq)!;
      const outcome = r.error !== undefined ? `error-${r.error.kind}` : 'value';
      counts.add(`v8.${kind}.${outcome}`);
      // Without the v8 header, or not an array of as many values as seqs, decoding the batch always
      // fails: every task of it gets the error of kind bad-input.
      if (neverDecodes.has(kind)) expect(r.error?.kind, `seq ${r.seq} (${kind})`).toBe('bad-input');
    }
    counts.add('v8-batches', batches);
    counts.add('v8-tasks', sent.size);
    // The stream and the lease are fine: a real task still computes.
    s.write(taskBatch([100_000], [21]));
    await s.until('the real task', () => s.results.some((r) => r.seq === 100_000));
    expect(s.results.find((r) => r.seq === 100_000)!.value).toBe(42);
    s.close();
    await c.release(lease.token, 2000).catch(() => {});
    expect(alive(g.pid)).toBe(true);
  });

  it('bundles whose hash does not match are refused; Installing something that is not a module then Start gives start_failed, and the daemon is fine', async () => {
    const c = await raw(g);
    const lease = await c.recruit({ lease_timeout_ms: 30_000 });
    closers.push(() => c.release(lease.token, 1000).catch(() => {}));
    const code = Buffer.from('export default (x) => x + 1;\n');
    const other = Buffer.from('export default (x) => x - 1;\n');
    const badHashes = [
      sha256(other),
      sha256(code).toUpperCase(),
      sha256(code).slice(1),
      `${sha256(code)}0`,
      '',
      '../../../../etc/passwd',
      'g'.repeat(64),
      `${sha256(code).slice(0, 63)}\n`,
    ];
    for (const hash of badHashes) {
      const err = (await settle(c.install(lease.token, { hashes: [], bundles: [{ hash, code }] }, 3000))) as grpc.ServiceError;
      expect(err.code, JSON.stringify(hash)).toBe(grpc.status.INVALID_ARGUMENT);
      counts.add('bundle.bad-hash');
    }
    expect(g.bundles().some((f) => f.startsWith(sha256(other)) || f.startsWith(sha256(code)))).toBe(false);
    await c.release(lease.token, 2000);

    const notModules: [string, Buffer][] = [
      ['random binary', rng.bytes(512)],
      ['syntax error', Buffer.from('this is not javascript {{{ (')],
      ['JSON', Buffer.from('{"stage": true}')],
      ['throws on import', Buffer.from('throw new Error("boom at import");\n')],
      ['default export not a function', Buffer.from('export default 42;\n')],
      ['no default export', Buffer.from('export const x = 1;\n')],
    ];
    for (const [what, bytes] of notModules) {
      const l = await c.recruit({ lease_timeout_ms: 30_000 });
      const h = await installBundle(c, l.token, bytes);
      const s = new ComputeSession(c, l.token);
      closers.push(() => s.close());
      const reply = await s.start([h]);
      expect(reply.body, what).toBe('start_failed');
      if (reply.body === 'start_failed') expect(reply.start_failed.error.kind, what).toBe('setup');
      counts.add('bundle.not-a-module');
      // Protocol 3: a program that fails to load fails alone; the lease goes on, and a good
      // program still runs on it.
      expect((await c.describe(2000)).state, what).toBe('recruited');
      const good = await installBundle(c, l.token, DOUBLE_BUNDLE);
      s.write({ start: { chain: [good], task_timeout_ms: 0, shared: [], program: 2 } });
      s.write({ tasks: { seqs: [1], inputs: encodeInputs([21]), program: 2, priority: 0 } });
      await s.until('the good program computes', () => s.results.some((r) => r.seq === 1));
      expect(s.results.find((r) => r.seq === 1)?.value, what).toBe(42);
      await c.release(l.token, 2000);
      expect((await c.describe(2000)).state, what).toBe('free');
      s.close();
    }
    expect(alive(g.pid)).toBe(true);
  });

  it('Compute without a valid lease is refused with UNAUTHENTICATED (no token, garbage, a released lease’s token, two tokens)', async () => {
    const c = await raw(g);
    const released = await c.recruit();
    await c.release(released.token, 2000);
    const cases: [string, (md: grpc.Metadata) => void][] = [
      ['no token', () => {}],
      ['garbage token', (md) => md.set('taskfarm-lease', 'garbage')],
      ['empty token', (md) => md.set('taskfarm-lease', '')],
      ['released lease', (md) => md.set('taskfarm-lease', released.token)],
      ['binary-looking key', (md) => md.set('taskfarm-lease-bin', Buffer.from(released.token))],
    ];
    const live = await c.recruit({ lease_timeout_ms: 30_000 });
    cases.push(['the live token twice', (md) => (md.add('taskfarm-lease', live.token), md.add('taskfarm-lease', live.token))]);
    cases.push(['the live token with a suffix', (md) => md.set('taskfarm-lease', `${live.token}x`)]);
    const client = rawBytesClient(g.address, gCert);
    closers.push(() => client.close());
    for (const [what, set] of cases) {
      const md = new grpc.Metadata();
      set(md);
      const call = (client['Compute'] as (md: grpc.Metadata) => grpc.ClientDuplexStream<Buffer, Buffer>).call(client, md);
      const code = await new Promise<number>((resolve) => {
        call.on('data', () => {});
        call.on('error', (e: grpc.ServiceError) => resolve(e.code));
        call.on('status', (st: grpc.StatusObject) => resolve(st.code));
      });
      call.cancel();
      expect(code, what).toBe(grpc.status.UNAUTHENTICATED);
      counts.add('compute-without-lease');
    }
    // None of them disturbed the live lease.
    expect((await c.describe(2000)).state).toBe('recruited');
    await c.release(live.token, 2000);
  });

  it('a flood of Describe calls (thousands, at most 64 at once over 4 channels): all answered; honest handshakes still work', async () => {
    const fp = certFingerprint(gCert);
    expect(fp.length).toBeGreaterThan(0);
    const channels: WorkerClient[] = Array.from({ length: 4 }, () => createWorkerClient(g.address, 1000, { kind: 'pinned', certPem: gCert }));
    closers.push(() => channels.forEach((ch) => ch.close()));
    let failures = 0;
    let withNonce = 0;
    const t0 = performance.now();
    const n = await bounded(1800, 64, sectionDeadline(6000), async (i) => {
      const nonce = rng.bytes(rng.pick([0, 8, 16, 32, 64, 65, 200]));
      try {
        const desc = await channels[i % channels.length]!.describe({ client_nonce: nonce }, 5000);
        if (desc.worker_nonce.length > 0) withNonce++;
        // A nonce is issued only for client nonces of 16..64 bytes.
        expect(desc.worker_nonce.length > 0).toBe(nonce.length >= 16 && nonce.length <= 64);
      } catch {
        failures++;
      }
    });
    const ms = performance.now() - t0;
    counts.add('describe-flood', n);
    expect(n).toBeGreaterThanOrEqual(500);
    expect(failures).toBe(0);
    console.log(`[fuzz] ${n} Describe calls in ${ms.toFixed(0)} ms (${Math.round((n / ms) * 1000)}/s), ${withNonce} with a worker nonce`);
    const c = await raw(g);
    const lease = await c.recruit();
    await c.release(lease.token, 2000);
  });

  it('afterwards both daemons complete a real TaskFarm run and are alive', async () => {
    for (const d of [h, g]) {
      const farm = new TaskFarm<number, number>(
        fixture('double.ts'),
        Array.from({ length: 50 }, (_, i) => i),
        { peers: [d.address], localFallback: false, workerWaitMs: 5000 },
      );
      expect(await farm.compute()).toEqual(Array.from({ length: 50 }, (_, i) => i * 2));
      expect(farm.stats().workers[0]!.id).toBe(d.id);
      expect(alive(d.pid)).toBe(true);
      expect(d.child.exitCode).toBeNull();
    }
    const total =
      counts.get('tcp-junk') +
      counts.get('tls-junk') +
      counts.get('half-open.tcp') +
      counts.get('half-open.tls') +
      counts.get('slow') +
      counts.get('proto.unary') +
      counts.get('proto.install-too-many-hashes') +
      counts.get('proto.compute-streams') +
      counts.get('v8-batches') +
      counts.sum('bundle.') +
      counts.get('compute-without-lease') +
      counts.get('describe-flood');
    console.log(`[fuzz] seed ${rng.seed}: ${total} hostile inputs in ${((performance.now() - fuzzStart) / 1000).toFixed(1)} s: ${counts.toString()}`);
    expect(total).toBeLessThanOrEqual(3000);
  });
});
