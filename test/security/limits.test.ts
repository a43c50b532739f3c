/**
 * The daemon's limits (issue 4, test 7): exceeding each gives the documented error, and nothing
 * else breaks — the same daemon serves a normal run right after. (--handshake-ms is covered in
 * auth.test.ts, --idle-timeout-ms in fuzz-daemon.test.ts.) Real daemons on 127.0.0.1.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidStageError, TaskFarm, UnsendableInputError } from '../../dist/src/index.js';
import { grpc } from '../../dist/src/protocol/grpc.js';
import { fixture, until } from '../helpers/daemons.js';
import { ComputeSession, DOUBLE_BUNDLE, installBundle, sha256, taskBatch } from '../helpers/raw-compute.js';
import { connectRaw, type RawWorker } from '../helpers/raw-worker.js';
import { SecurityDaemons, alive, settle, type SecurityDaemon } from '../helpers/security-daemons.js';

/** A stage module that appends one byte to `x.log` when it starts, then spins `x.ms` ms. */
const COUNTING_BUNDLE = Buffer.from(
  "import { appendFileSync } from 'node:fs';\n" +
    'export default (x) => { appendFileSync(x.log, "."); const end = Date.now() + x.ms; while (Date.now() < end) {} return x.ms; };\n',
);

describe('daemon limits', () => {
  const daemons = new SecurityDaemons();
  const raws: RawWorker[] = [];
  const sessions: ComputeSession[] = [];
  const sockets: Socket[] = [];

  async function raw(d: SecurityDaemon): Promise<RawWorker> {
    const c = await connectRaw(d.address);
    raws.push(c);
    return c;
  }

  afterEach(async () => {
    for (const s of sessions.splice(0)) s.close();
    for (const c of raws.splice(0)) c.close();
    for (const s of sockets.splice(0)) s.destroy();
    await daemons.stopAll();
  });

  /** A normal run on `d` completes, and the daemon process is alive. */
  async function stillServes(d: SecurityDaemon): Promise<void> {
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3, 4], { peers: [d.address], localFallback: false, workerWaitMs: 5000 });
    expect(await farm.compute()).toEqual([2, 4, 6, 8]);
    expect(farm.stats().workers.map((w) => w.id)).toEqual([d.id]);
    expect(alive(d.pid)).toBe(true);
  }

  it('--max-message-mb 1: a 2 MB input fails the run with UnsendableInputError naming its index; a 0.9 MB one goes through; an oversized raw message is refused; a normal run follows', async () => {
    const d = await daemons.start({ inherit: true }, ['--max-message-mb', '1']);
    const lengthOf = (x: unknown): number => (typeof x === 'string' ? x.length : -1);

    const big = 'x'.repeat(2 * 1024 * 1024);
    const err = await settle(new TaskFarm<unknown, number>(lengthOf, [1, 'small', big, 'small'], { peers: [d.address], localFallback: false }).compute());
    expect(err).toBeInstanceOf(UnsendableInputError);
    expect((err as UnsendableInputError).code).toBe('FARM_ERR_UNSENDABLE_INPUT');
    expect((err as UnsendableInputError).index).toBe(2);

    // Just under the limit: input and output both fit.
    const nearly = 'y'.repeat(900 * 1024);
    expect(await new TaskFarm<unknown, number>(lengthOf, ['a', nearly], { peers: [d.address], localFallback: false }).compute()).toEqual([1, nearly.length]);

    // The daemon itself refuses a message over 1 MiB (gRPC RESOURCE_EXHAUSTED), and stays up.
    const c = await raw(d);
    expect((await c.describe(2000)).max_message_bytes).toBe(1024 * 1024);
    const lease = await c.recruit();
    const code = randomBytes(1536 * 1024);
    const tooBig = (await settle(c.install(lease.token, { hashes: [sha256(code)], bundles: [{ hash: sha256(code), code }] }, 5000))) as grpc.ServiceError;
    expect(tooBig.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    await c.release(lease.token, 2000);
    expect(d.bundles()).toHaveLength(1); // only the stage of the runs above
    await stillServes(d);
  });

  it('--max-bundle-mb 1: a stage that bundles to more fails the run with InvalidStageError before anything is sent; a raw Install of it is refused (INVALID_ARGUMENT)', async () => {
    const d = await daemons.start({ inherit: true }, ['--max-bundle-mb', '1']);
    const dir = daemons.tempDir();
    const stage = join(dir, 'big-stage.mjs');
    writeFileSync(stage, `export const BIG = ${JSON.stringify(randomBytes(900 * 1024).toString('base64'))};\nexport default (x) => x + BIG.length;\n`);

    const t0 = performance.now();
    // A short lease (300 ms), so that the lease the failed run leaves behind expires quickly.
    const err = await settle(new TaskFarm<number, number>(stage, [1, 2], { peers: [d.address], localFallback: false, leaseTimeoutMs: 300 }).compute());
    expect(err).toBeInstanceOf(InvalidStageError);
    expect((err as InvalidStageError).code).toBe('FARM_ERR_INVALID_STAGE');
    expect((err as InvalidStageError).stageIndex).toBe(0);
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(d.bundles()).toEqual([]);

    const c = await raw(d);
    expect((await c.describe(2000)).max_bundle_bytes).toBe(1024 * 1024);
    await until('the daemon to be free', async () => (await c.describe(1000)).state === 'free', 3000, 25);
    const lease = await c.recruit();
    const code = Buffer.concat([Buffer.from('export default (x) => x; // '), Buffer.alloc(1024 * 1024 + 10, 0x61)]);
    const refused = (await settle(c.install(lease.token, { hashes: [sha256(code)], bundles: [{ hash: sha256(code), code }] }, 5000))) as grpc.ServiceError;
    expect(refused.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(d.bundles()).toEqual([]);
    await c.release(lease.token, 2000);
    await stillServes(d);
  });

  // Regression: the Release once raced the closing of the channel and never reached the daemon, so
  // the worker stayed recruited until its lease expired.
  it('after a run fails with InvalidStageError, the worker is released at once', async () => {
    const d = await daemons.start({ inherit: true }, ['--max-bundle-mb', '1']);
    const dir = daemons.tempDir();
    const stage = join(dir, 'big-stage.mjs');
    writeFileSync(stage, `export const BIG = ${JSON.stringify(randomBytes(900 * 1024).toString('base64'))};\nexport default (x) => x + BIG.length;\n`);
    const err = await settle(new TaskFarm<number, number>(stage, [1], { peers: [d.address], localFallback: false, leaseTimeoutMs: 10_000 }).compute());
    expect(err).toBeInstanceOf(InvalidStageError);
    const c = await raw(d);
    const t0 = performance.now();
    const freed = await settle(until('the daemon to be free', async () => (await c.describe(1000)).state === 'free', 1000, 50));
    console.log(
      `after InvalidStageError the worker was ${freed === true ? `free after ${(performance.now() - t0).toFixed(0)} ms` : 'still recruited after 1000 ms'}`,
    );
    expect(freed).toBe(true);
  });

  it('--max-in-flight 4: a TaskFarm run stays within it and completes; a raw client sending 10 tasks at once gets RESOURCE_EXHAUSTED on its stream; the daemon keeps serving', async () => {
    const d = await daemons.start({ inherit: true }, ['--max-in-flight', '4', '--threads', '2']);
    const n = 200;
    const farm = new TaskFarm<unknown, number>(
      fixture('spin.ts'),
      Array.from({ length: n }, (_, v) => ({ v, ms: 1 })),
      { peers: [d.address], localFallback: false },
    );
    let maxInFlight = 0;
    farm.on('progress', (p) => (maxInFlight = Math.max(maxInFlight, p.inFlight)));
    expect(await farm.compute()).toEqual(Array.from({ length: n }, (_, v) => v * 2));
    expect(farm.stats().workers.map((w) => w.lost)).toEqual([undefined]);
    expect(maxInFlight).toBeLessThanOrEqual(4);

    const c = await raw(d);
    expect((await c.describe(2000)).max_in_flight).toBe(4);
    const lease = await c.recruit();
    const hash = await installBundle(c, lease.token, DOUBLE_BUNDLE);
    const s = new ComputeSession(c, lease.token);
    sessions.push(s);
    expect((await s.start([hash])).body).toBe('ready');
    // Within the limit: fine.
    s.write(taskBatch([1, 2, 3, 4], [1, 2, 3, 4]));
    await s.until('4 results', () => s.results.length === 4);
    expect(s.results.map((r) => [r.seq, r.value])).toEqual(
      expect.arrayContaining([
        [1, 2],
        [2, 4],
        [3, 6],
        [4, 8],
      ]),
    );
    // Ten at once (one batch of 10): the stream fails with RESOURCE_EXHAUSTED.
    s.write(
      taskBatch(
        Array.from({ length: 10 }, (_, i) => 100 + i),
        Array.from({ length: 10 }, (_, i) => i),
      ),
    );
    await s.until('the stream to fail', () => s.error !== undefined);
    expect(s.error!.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    // The lease ended with the stream; the daemon is free and serves a normal run.
    await until('the daemon to be free', async () => (await c.describe(1000)).state === 'free', 5000);
    await stillServes(d);
  });

  // Regression: the limit once counted distinct seqs, so repeating one seq queued any number of tasks.
  it('--max-in-flight 4 cannot be bypassed by repeating a seq', async () => {
    const d = await daemons.start({ inherit: true }, ['--max-in-flight', '4']);
    const log = join(daemons.tempDir(), 'executions.log');
    writeFileSync(log, '');
    const c = await raw(d);
    const lease = await c.recruit();
    const hash = await installBundle(c, lease.token, COUNTING_BUNDLE);
    const s = new ComputeSession(c, lease.token);
    sessions.push(s);
    expect((await s.start([hash])).body).toBe('ready');
    // The first task holds the only thread for 300 ms; every other one is queued behind it.
    s.write(
      taskBatch(
        [1, 1, 1],
        [300, 0, 0].map((ms) => ({ log, ms })),
      ),
    );
    for (let b = 0; b < 9; b++)
      s.write(
        taskBatch(
          [1, 1, 1],
          [0, 0, 0].map((ms) => ({ log, ms })),
        ),
      );
    // Either the stream fails (expected), or all 30 tasks run (the bug).
    const executions = (): number => readFileSync(log, 'utf8').length;
    await until('the stream to fail or all 30 tasks to run', () => s.error !== undefined || executions() >= 30, 5000, 20);
    console.log(`repeated seq: stream error ${s.error?.code ?? 'none'}; ${executions()} tasks ran on one lease (limit 4)`);
    // The daemon refuses a seq that is already in flight (FAILED_PRECONDITION), before the limit matters.
    expect([grpc.status.RESOURCE_EXHAUSTED, grpc.status.FAILED_PRECONDITION]).toContain(s.error?.code);
    expect(executions()).toBeLessThanOrEqual(4);
  });

  // Regression: the idle timer once sat on the raw socket, which sees no traffic once TLS and HTTP/2
  // take it over, so every connection was cut idleTimeoutMs after it was opened.
  it('--idle-timeout-ms 1000: a connection busy with a run is not idle', async () => {
    const d = await daemons.start({ inherit: true }, ['--idle-timeout-ms', '1000']);
    const farm = new TaskFarm<unknown, number>(
      fixture('spin.ts'),
      Array.from({ length: 16 }, (_, v) => ({ v, ms: 100 })),
      { peers: [d.address], localFallback: false },
    );
    const lost: string[] = [];
    farm.on('lost', (e) => lost.push(e.reason));
    const t0 = performance.now();
    expect(await farm.compute()).toEqual(Array.from({ length: 16 }, (_, v) => v * 2));
    console.log(
      `a 1.6 s run on a daemon with --idle-timeout-ms 1000 took ${(performance.now() - t0).toFixed(0)} ms and lost its worker ${lost.length}x: ${lost[0] ?? ''}`,
    );
    expect(lost).toEqual([]);
  });

  it('--max-connections 4: connections beyond it are closed by the server at once; once the others close, a run completes', async () => {
    const d = await daemons.start({ inherit: true }, ['--max-connections', '4']);
    const closedAt = new Map<number, number>();
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) {
      const s = connect({ host: '127.0.0.1', port: d.port });
      sockets.push(s);
      s.on('error', () => {});
      s.on('close', () => closedAt.set(i, performance.now() - t0));
      await new Promise<void>((resolve, reject) => {
        s.once('connect', () => resolve());
        s.once('error', reject);
      });
    }
    await until('6 connections to be closed by the server', () => closedAt.size >= 6, 3000, 10);
    expect([...closedAt.keys()].sort((a, b) => a - b)).toEqual([4, 5, 6, 7, 8, 9]);
    expect(Math.max(...closedAt.values())).toBeLessThan(1500);
    // The first four are still open (the idle timeout is 30 s).
    expect(sockets.slice(0, 4).every((s) => !s.destroyed && s.readyState === 'open')).toBe(true);
    // While full, a client cannot connect at all.
    const c = await settle(connectRaw(d.address));
    expect(c).toBeInstanceOf(Error);

    for (const s of sockets.slice(0, 4)) s.destroy();
    await until('our sockets to close', () => closedAt.size === 10, 3000, 10);
    await stillServes(d);
    console.log(
      `max-connections 4: 6 of 10 connections closed by the server within ${Math.max(...[...closedAt.entries()].filter(([i]) => i >= 4).map(([, t]) => t)).toFixed(0)} ms of the first connect`,
    );
  });
});
