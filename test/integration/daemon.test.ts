/**
 * The `taskfarm worker` daemon as clients see it: graceful SIGTERM, one lease at a time, protocol
 * checks on the raw gRPC service, lease expiry, bundle verification, a thread running out of memory.
 * Real daemons in child processes on 127.0.0.1.
 */
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NoWorkersError, PROTOCOL_VERSION, TaskCrashedError, TaskFarm, type WorkerLostEvent } from '../../dist/src/index.js';
import { grpc } from '../../dist/src/protocol/grpc.js';
import { connectRaw, type RawWorker } from '../helpers/raw-worker.js';
import { Daemons, alive, fixture, tempDir, until, waitForLine, type LocalDaemon } from '../helpers/daemons.js';
import { killAll, startCli } from '../helpers/cli.js';

/** Settles `p` into the value or the error, for asserting on rejections. */
function settle<T>(p: Promise<T>): Promise<unknown> {
  return p.then(
    (v) => v,
    (e: unknown) => e,
  );
}

describe('the taskfarm worker daemon', () => {
  const daemons = new Daemons();
  const clients: RawWorker[] = [];
  const dirs: { remove: () => void }[] = [];

  /** A raw gRPC client of one daemon (TLS, pinned; recruit() does the key handshake), closed after the test. */
  async function raw(d: LocalDaemon): Promise<RawWorker> {
    const c = await connectRaw(d.address);
    clients.push(c);
    return c;
  }

  function recruitRequest(overrides: Partial<{ protocol_version: number; lease_timeout_ms: number; heartbeat_ms: number }> = {}) {
    return { client_id: `test-${randomUUID()}`, ...overrides };
  }

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await daemons.stopAll();
    await killAll();
    for (const d of dirs.splice(0)) d.remove();
  });

  it('SIGTERM with tasks in flight: no new work, in-flight tasks finish, the run completes elsewhere exactly once, exit 0 within the grace period', async () => {
    const graceMs = 5000;
    const [a, b] = await daemons.start(2, ['--threads', '1', '--grace-ms', String(graceMs)]);
    const n = 10;
    const inputs = Array.from({ length: n }, (_, v) => ({ v, ms: 300 }));
    const farm = new TaskFarm<unknown, number>(fixture('spin.ts'), inputs, { peers: [a!.address, b!.address], localFallback: false });
    const lost: WorkerLostEvent[] = [];
    farm.on('lost', (e) => lost.push(e));
    const completedOnA = (): number => farm.stats().workers.find((w) => w.id === a!.id)?.completed ?? 0;

    let termAt = 0;
    let completedAtTerm = -1;
    let drainingSeen: Promise<unknown> | undefined;
    const exited = a!.exited.then(() => performance.now() - termAt);
    const announced = settle(waitForLine(a!.child.stderr!, /SIGTERM: finishing in-flight tasks \(grace 5000 ms\)/, 15_000));
    farm.on('progress', () => {
      // Once A has delivered a task it is mid-stream: it runs one task and has the next queued.
      if (termAt === 0 && completedOnA() >= 1) {
        completedAtTerm = completedOnA();
        termAt = performance.now();
        a!.child.kill('SIGTERM');
        // While it finishes its in-flight tasks it says it is draining, and refuses new clients.
        drainingSeen = settle(
          (async () => {
            const c = await raw(a!);
            await until('A to describe itself as draining', async () => (await c.describe(1000)).state === 'draining', 3000);
            const refused = (await settle(c.recruit(recruitRequest(), 1000))) as grpc.ServiceError;
            return refused.code;
          })(),
        );
      }
    });

    const seen = new Map<number, number[]>();
    for await (const { index, output } of farm.results()) seen.set(index, [...(seen.get(index) ?? []), output]);

    expect(termAt).toBeGreaterThan(0);
    expect(await announced).toBeInstanceOf(Array); // the line was printed
    expect(await drainingSeen).toBe(grpc.status.UNAVAILABLE);
    // Every output exactly once, and correct.
    expect(seen.size).toBe(n);
    for (let i = 0; i < n; i++) expect(seen.get(i), `input ${i}`).toEqual([i * 2]);
    // A finished what it had in flight (at least the task it was running), and then nothing more:
    // for tasks this long the client keeps at most 2 per thread + 1 in flight, so with one thread, 3.
    const finishedAfterTerm = completedOnA() - completedAtTerm;
    expect(finishedAfterTerm).toBeGreaterThanOrEqual(1);
    expect(finishedAfterTerm).toBeLessThanOrEqual(3);
    // A's end was graceful: when its stream ended, none of its tasks had to be requeued.
    expect(lost.map((e) => e.worker.id)).toEqual([a!.id]);
    expect(lost[0]!.requeued).toBe(0);
    // B did the rest.
    expect(farm.stats().workers.find((w) => w.id === b!.id)!.completed).toBe(n - completedOnA());
    // A exited by itself with status 0, within its grace period.
    const exitedAfter = await exited;
    expect(a!.child.exitCode).toBe(0);
    expect(a!.child.signalCode).toBeNull();
    expect(exitedAfter).toBeLessThan(graceMs);
    expect(alive(a!.pid)).toBe(false);
    console.log(`SIGTERM: daemon finished ${finishedAfterTerm} in-flight task(s) and exited 0 after ${exitedAfter.toFixed(0)} ms (grace ${graceMs} ms)`);
  });

  it('a worker recruited by one client refuses another (NoWorkersError saying it is busy) and serves it once free', async () => {
    const [d] = await daemons.start(1);
    const first = new TaskFarm<unknown, number>(
      fixture('spin.ts'),
      Array.from({ length: 10 }, (_, v) => ({ v, ms: 150 })),
      { peers: [d!.address], localFallback: false },
    );
    const recruited = new Promise<void>((r) => first.once('recruited', () => r()));
    const firstDone = first.compute();
    firstDone.catch(() => {}); // awaited below; a failure before that must not be an unhandled rejection
    await recruited;
    expect((await (await raw(d!)).describe(1000)).state).toBe('recruited');

    const t0 = performance.now();
    const refused = await settle(
      new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [d!.address], localFallback: false, workerWaitMs: 500 }).compute(),
    );
    expect(refused).toBeInstanceOf(NoWorkersError);
    expect((refused as NoWorkersError).code).toBe('FARM_ERR_NO_WORKERS');
    // The message is what a user reads to understand why: the worker is busy with another client.
    expect((refused as NoWorkersError).message).toMatch(/busy/);
    expect((refused as NoWorkersError).message).toContain(d!.address);
    expect(performance.now() - t0).toBeLessThan(3000);

    // A client that is willing to wait gets the worker as soon as the first run releases it.
    const patient = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [d!.address], localFallback: false, workerWaitMs: 10_000 });
    const patientDone = patient.compute();
    patientDone.catch(() => {});
    expect(await firstDone).toEqual(Array.from({ length: 10 }, (_, v) => v * 2));
    const firstEndedAt = performance.now();
    expect(await patientDone).toEqual([2, 4, 6]);
    expect(patient.stats().workers.map((w) => w.id)).toEqual([d!.id]);
    // It is polled every 500 ms while busy.
    expect(performance.now() - firstEndedAt).toBeLessThan(2000);

    // And a new client right after recruits it at once.
    const after = new TaskFarm<number, number>(fixture('double.ts'), [4], { peers: [d!.address], localFallback: false, workerWaitMs: 1000 });
    expect(await after.compute()).toEqual([8]);
  });

  it('Describe tells who the worker is; Recruit with another protocol version is refused with FAILED_PRECONDITION naming both versions', async () => {
    const [d] = await daemons.start(1, ['--threads', '2', '--id', 'worker-under-test']);
    const c = await raw(d!);
    const desc = await c.describe(2000);
    expect(desc.id).toBe('worker-under-test');
    expect(desc.id).toBe(d!.id);
    expect(typeof desc.hostname).toBe('string');
    expect(desc.hostname.length).toBeGreaterThan(0);
    expect(desc.threads).toBe(2);
    expect(desc.protocol_version).toBe(PROTOCOL_VERSION);
    expect(desc.state).toBe('free');

    const err = (await settle(c.recruit(recruitRequest({ protocol_version: 999 }), 2000))) as grpc.ServiceError;
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(err.code).toBe(9);
    expect(err.details).toMatch(new RegExp(`\\b${PROTOCOL_VERSION}\\b`));
    expect(err.details).toMatch(/\b999\b/);
    // Refused means refused: the worker is still free for a client that speaks its version.
    expect((await c.describe(2000)).state).toBe('free');
    const lease = await c.recruit(recruitRequest(), 2000);
    expect(lease.worker_id).toBe('worker-under-test');
    expect(lease.threads).toBe(2);
    expect((await c.describe(2000)).state).toBe('recruited');
    await c.release(lease.token, 2000);
    expect((await c.describe(2000)).state).toBe('free');
  });

  it('a lease whose client never opens a Compute stream and goes silent expires after its lease timeout', async () => {
    const [d] = await daemons.start(1);
    const c = await raw(d!);
    const leaseTimeoutMs = 500;
    const lease = await c.recruit(recruitRequest({ lease_timeout_ms: leaseTimeoutMs, heartbeat_ms: 100 }), 2000);
    const recruitedAt = performance.now();
    expect(lease.lease_timeout_ms).toBe(leaseTimeoutMs);
    expect((await c.describe(1000)).state).toBe('recruited');
    // Describe is not a sign of life from the lease holder: polling it does not keep the lease.
    await until('the lease to expire', async () => (await c.describe(1000)).state === 'free', 5000, 25);
    const expiredAfter = performance.now() - recruitedAt;
    expect(expiredAfter).toBeGreaterThanOrEqual(leaseTimeoutMs - 50);
    expect(expiredAfter).toBeLessThan(leaseTimeoutMs + 1500);
    // The old token is worthless now.
    const stale = (await settle(c.install(lease.token, { hashes: [], bundles: [] }, 2000))) as grpc.ServiceError;
    expect(stale.code).toBe(grpc.status.UNAUTHENTICATED);
    // And a TaskFarm recruits the worker.
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [d!.address], localFallback: false, workerWaitMs: 2000 });
    expect(await farm.compute()).toEqual([2, 4, 6]);
    expect(farm.stats().workers.map((w) => w.id)).toEqual([d!.id]);
    console.log(`an unused lease of ${leaseTimeoutMs} ms expired after ${expiredAfter.toFixed(0)} ms`);
  });

  it('Install refuses a bundle whose sha256 does not match its content; calls without a valid lease are refused', async () => {
    const [d] = await daemons.start(1);
    const c = await raw(d!);

    // Without any lease.
    const noLease = (await settle(c.install('not-a-lease', { hashes: [], bundles: [] }, 2000))) as grpc.ServiceError;
    expect(noLease.code).toBe(grpc.status.UNAUTHENTICATED);
    const noLeaseRelease = (await settle(c.release('not-a-lease', 2000))) as grpc.ServiceError;
    expect(noLeaseRelease.code).toBe(grpc.status.UNAUTHENTICATED);
    const stream = c.compute('not-a-lease');
    const streamErr = await new Promise<grpc.ServiceError>((resolve) => {
      stream.on('error', resolve);
      stream.on('data', () => {});
    });
    expect(streamErr.code).toBe(grpc.status.UNAUTHENTICATED);

    // With someone else's lease held: a wrong token is still refused, and does not disturb the lease.
    const lease = await c.recruit(recruitRequest(), 2000);
    const wrong = (await settle(c.install(`${lease.token}x`, { hashes: [], bundles: [] }, 2000))) as grpc.ServiceError;
    expect(wrong.code).toBe(grpc.status.UNAUTHENTICATED);
    expect((await c.describe(1000)).state).toBe('recruited');

    // A bundle that is not what its hash says.
    const code = Buffer.from('export default (x) => x;\n');
    const hash = createHash('sha256').update(code).digest('hex');
    const forged = Buffer.from('export default (x) => { throw new Error("forged"); };\n');
    const mismatch = (await settle(c.install(lease.token, { hashes: [hash], bundles: [{ hash, code: forged }] }, 2000))) as grpc.ServiceError;
    expect(mismatch.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(mismatch.details).toContain(hash);
    // It was not stored; the genuine bundle is accepted.
    expect((await c.install(lease.token, { hashes: [hash], bundles: [] }, 2000)).missing).toEqual([hash]);
    expect((await c.install(lease.token, { hashes: [hash], bundles: [{ hash, code }] }, 2000)).missing).toEqual([]);
    // A hash that is not a sha256 digest is refused too.
    const badHash = (await settle(c.install(lease.token, { hashes: ['../../etc/passwd'], bundles: [] }, 2000))) as grpc.ServiceError;
    expect(badHash.code).toBe(grpc.status.INVALID_ARGUMENT);
    await c.release(lease.token, 2000);
    expect((await c.describe(1000)).state).toBe('free');
  });

  it('a task that runs its thread out of memory kills only that thread; the job fails naming it; the daemon keeps serving', async () => {
    const [d] = await daemons.start(1, ['--threads', '2', '--thread-memory-mb', '64']);
    const n = 30;
    const inputs = Array.from({ length: n }, (_, v) => ({ v, oomOn: 7 }));
    const t0 = performance.now();
    const err = await settle(new TaskFarm(fixture('oom-on.ts'), inputs, { peers: [d!.address], localFallback: false, maxAttempts: 2 }).compute());
    const ms = performance.now() - t0;
    expect(err).toBeInstanceOf(TaskCrashedError);
    const tc = err as TaskCrashedError;
    expect(tc.code).toBe('FARM_ERR_TASK_CRASHED');
    expect(tc.index).toBe(7);
    expect(tc.attempts).toBe(2);
    expect(tc.workerId).toBe(d!.id);
    expect(tc.message).toMatch(/input 7\b/);
    console.log(`out-of-memory task failed the job after ${tc.attempts} attempts in ${ms.toFixed(0)} ms: ${tc.remote.message}`);

    // The daemon process survived and still has its threads.
    expect(d!.child.exitCode).toBeNull();
    expect(alive(d!.pid)).toBe(true);
    const desc = await (await raw(d!)).describe(2000);
    expect(desc.state).toBe('free');
    expect(desc.threads).toBe(2);

    // A task that runs out of memory once (and not on its retry): the other tasks, the retry and the
    // replacement thread all complete on the same daemon.
    const dir = tempDir();
    dirs.push(dir);
    const marker = join(dir.path, 'oom-once');
    const again = new TaskFarm<unknown, number>(
      fixture('oom-on.ts'),
      Array.from({ length: n }, (_, v) => ({ v, oomOn: 3, marker })),
      { peers: [d!.address], localFallback: false, maxAttempts: 2 },
    );
    expect(await again.compute()).toEqual(Array.from({ length: n }, (_, v) => v * 2));
    const stats = again.stats();
    expect(stats.workers.map((w) => [w.id, w.completed, w.lost])).toEqual([[d!.id, n, undefined]]);
    expect(stats.requeued).toBeGreaterThanOrEqual(1);

    // And an ordinary run afterwards.
    const plain = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [d!.address], localFallback: false });
    expect(await plain.compute()).toEqual([2, 4, 6]);
    expect(alive(d!.pid)).toBe(true);
  });
  it.runIf(process.platform === 'linux')('--nice N lowers the priority of the task threads only; the daemon thread keeps its own', async () => {
    const [d] = await daemons.start(1, ['--threads', '2', '--nice', '7']);
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [d!.address], localFallback: false });
    expect(await farm.compute()).toEqual([2, 4, 6]);
    // /proc/PID/task/TID/stat: the 19th field (the 17th after the command's closing parenthesis) is the nice value.
    const niceOf = (tid: string): number | undefined => {
      try {
        const stat = readFileSync(`/proc/${d!.pid}/task/${tid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      } catch {
        return undefined; // the thread ended meanwhile
      }
    };
    const niced = readdirSync(`/proc/${d!.pid}/task`).filter((tid) => niceOf(tid) === 7);
    expect(niced).toHaveLength(2); // the two task threads (the threads run on after the job: the daemon keeps them)
    expect(niceOf(String(d!.pid))).toBe(0);

    // Out of range: a clear error, no daemon.
    const bad = await daemons.start(1, ['--nice', '25']).catch((err: unknown) => err);
    expect(String(bad)).toMatch(/exited before it was ready \(code 2[\s\S]*`nice` to be an integer in \[0, 19\]/);
  });
  it.runIf(process.platform === 'linux')(
    "the daemon's own thread runs as SCHED_BATCH and the task threads under the normal policy; --no-sched-batch leaves the daemon's thread normal",
    async () => {
      // /proc/PID/task/TID/stat after the command's closing parenthesis: field 17 is the nice value, field 39 the policy (0 SCHED_OTHER, 3 SCHED_BATCH).
      const fieldsOf = (pid: number, tid: string): string[] | undefined => {
        try {
          const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
          return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        } catch {
          return undefined; // the thread ended meanwhile
        }
      };
      const policies = async (args: string[]): Promise<{ main: string | undefined; tasks: (string | undefined)[] }> => {
        // --nice 7 marks the task threads, to tell them from Node's own threads.
        const [d] = await daemons.start(1, ['--threads', '2', '--nice', '7', ...args]);
        const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [d!.address], localFallback: false });
        expect(await farm.compute()).toEqual([2, 4, 6]);
        const tasks = readdirSync(`/proc/${d!.pid}/task`)
          .map((tid) => fieldsOf(d!.pid, tid))
          .filter((f) => f?.[16] === '7')
          .map((f) => f?.[38]);
        return { main: fieldsOf(d!.pid, String(d!.pid))?.[38], tasks };
      };
      expect(await policies([])).toEqual({ main: '3', tasks: ['0', '0'] });
      expect(await policies(['--no-sched-batch'])).toEqual({ main: '0', tasks: ['0', '0'] });
    },
  );
  it.runIf(process.platform === 'linux')('without chrt on its PATH the daemon warns, keeps the normal policy and computes as before', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const daemon = startCli(['worker', '--host', '127.0.0.1', '--port', '0', '--no-advertise', '--threads', '1', '--cache-dir', dir.path], {
      env: { ...process.env, PATH: join(dir.path, 'no-such-bin') },
    });
    await daemon.waitFor('READY and the warning', (out, err) => /^READY port=\d+/m.test(out) && /keeps the normal scheduling policy/.test(err), 20_000);
    const port = /^READY port=(\d+)/m.exec(daemon.stdout())![1]!;
    expect(daemon.stderr()).toMatch(/the daemon's thread keeps the normal scheduling policy[^\n]*chrt --batch failed/);
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [`127.0.0.1:${port}`], localFallback: false });
    expect(await farm.compute()).toEqual([2, 4, 6]);
    const stat = readFileSync(`/proc/${daemon.child.pid!}/stat`, 'utf8');
    expect(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]).toBe('0');
  });
});
