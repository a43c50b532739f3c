/**
 * FarmPool: one warm pool serving many jobs at once, on real daemons over real sockets.
 * Executions are counted by the stage itself (test/fixtures/chaos-mark.ts appends one line per
 * execution to a folder of the test's).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { FarmAbortError, FarmPool, NoWorkersError, TaskError, TaskFarm, describeWorker, type FarmJob } from '../../dist/src/index.js';
import { Daemons, fixture, tempDir, until } from '../helpers/daemons.js';
import { FakeWorker } from '../helpers/fake-worker.js';
import { testKey } from '../helpers/raw-worker.js';

interface Exec {
  v: number;
  exec: string;
  worker: string;
  start: number;
  end: number;
}

/** Every execution the mark stage recorded in `dir`. */
function executions(dir: string): Exec[] {
  const out: Exec[] = [];
  for (const f of readdirSync(dir)) {
    if (!f.startsWith('exec-')) continue;
    for (const line of readFileSync(`${dir}/${f}`, 'utf8').split('\n')) if (line.length > 0) out.push(JSON.parse(line) as Exec);
  }
  return out;
}

const mark = fixture('chaos-mark.ts');
const marks = (n: number, ms: number, dir: string): { v: number; ms: number; dir: string }[] => Array.from({ length: n }, (_, v) => ({ v, ms, dir }));

describe('FarmPool: one warm pool, many jobs', () => {
  const daemons = new Daemons();
  const dirs: { remove: () => void }[] = [];
  const pools: FarmPool[] = [];
  const open = (options: ConstructorParameters<typeof FarmPool>[0]): FarmPool => {
    const p = new FarmPool(options);
    pools.push(p);
    return p;
  };
  const dir = (): string => {
    const d = tempDir();
    dirs.push(d);
    return d.path;
  };
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.close()));
    await daemons.stopAll();
    for (const d of dirs.splice(0)) d.remove();
  });

  it('runs concurrent jobs with different programs: every output correct, each job executing only its own tasks', async () => {
    const ds = await daemons.start(3, ['--threads', '2']);
    const pool = open({ peers: ds.map((d) => d.address), localFallback: false });
    const [da, db] = [dir(), dir()];
    const a = pool.run<unknown, { r: number }>(mark, marks(300, 1, da), { name: 'a' });
    const b = pool.run<unknown, { r: number }>(mark, marks(200, 1, db), { name: 'b' });
    const c = pool.run<number, number>(
      fixture('double.ts'),
      Array.from({ length: 5000 }, (_, i) => i),
      { name: 'c' },
    );
    const d = pool.run<number, number>(
      (x: number) => x + 0.5,
      Array.from({ length: 1000 }, (_, i) => i),
    );
    const [ra, rb, rc, rd] = await Promise.all([a.compute(), b.compute(), c.compute(), d.compute()]);
    expect(ra.map((o) => o.r)).toEqual(Array.from({ length: 300 }, (_, v) => v * 2));
    expect(rb.map((o) => o.r)).toEqual(Array.from({ length: 200 }, (_, v) => v * 2));
    expect(rc).toEqual(Array.from({ length: 5000 }, (_, i) => i * 2));
    expect(rd).toEqual(Array.from({ length: 1000 }, (_, i) => i + 0.5));
    // Each job's executions are its own inputs, each exactly once (no failures here).
    expect(
      executions(da)
        .map((e) => e.v)
        .sort((x, y) => x - y),
    ).toEqual(Array.from({ length: 300 }, (_, v) => v));
    expect(
      executions(db)
        .map((e) => e.v)
        .sort((x, y) => x - y),
    ).toEqual(Array.from({ length: 200 }, (_, v) => v));
    expect(a.status).toBe('done');
    expect(pool.workers()).toHaveLength(3);
    // The workers stay recruited: a second job of a program they hold sends no code.
    const again = pool.run<number, number>(fixture('double.ts'), [1, 2, 3]);
    expect(await again.compute()).toEqual([2, 4, 6]);
    expect(again.stats().workers.every((w) => w.bundlesSent === 0)).toBe(true);
  });

  it('a daemon SIGKILLed while three jobs run: every job exact, no output lost or doubled', async () => {
    const ds = await daemons.start(3, ['--threads', '1']);
    const pool = open({ peers: ds.map((d) => d.address), localFallback: false });
    const folders = [dir(), dir(), dir()];
    const jobs = folders.map((f, k) => pool.run<unknown, { r: number; exec: string }>(mark, marks(150 + k * 20, 5, f), { speculation: false }));
    let killed = false;
    jobs[0]!.on('progress', (p) => {
      if (!killed && p.done >= 20) {
        killed = true;
        ds[1]!.child.kill('SIGKILL');
      }
    });
    const lost: string[] = [];
    pool.on('lost', (e) => lost.push(e.worker.id));
    const outs = await Promise.all(jobs.map((j) => j.compute()));
    expect(killed).toBe(true);
    expect(lost).toContain(ds[1]!.id);
    outs.forEach((out, k) => {
      expect(out.map((o) => o.r)).toEqual(Array.from({ length: 150 + k * 20 }, (_, v) => v * 2));
      // Each output is one execution's (first result wins); re-executions only of tasks in flight on the lost worker.
      const execs = executions(folders[k]!);
      const ids = new Set(execs.map((e) => e.exec));
      expect(out.every((o) => ids.has(o.exec))).toBe(true);
      expect(execs.length - out.length).toBeLessThanOrEqual(10);
    });
  });

  it('cancel() of one of three jobs: its tasks stop on the workers (executions counted), compute() rejects with FarmAbortError, the others complete', async () => {
    const ds = await daemons.start(2, ['--threads', '2']);
    const pool = open({ peers: ds.map((d) => d.address), localFallback: false });
    const [dc, d1, d2] = [dir(), dir(), dir()];
    const victim = pool.run<unknown, unknown>(mark, marks(400, 20, dc), { speculation: false });
    const others = [pool.run<unknown, { r: number }>(mark, marks(60, 20, d1)), pool.run<unknown, { r: number }>(mark, marks(60, 20, d2))];
    const rejected = victim.compute().then(
      () => 'resolved',
      (err: unknown) => err,
    );
    await until('10 outputs of the job to cancel', () => victim.stats().completed >= 10, 20_000);
    victim.cancel();
    const doneAtCancel = victim.stats().completed;
    expect(await rejected).toBeInstanceOf(FarmAbortError);
    expect(victim.status).toBe('cancelled');
    const outs = await Promise.all(others.map((j) => j.compute()));
    for (const o of outs) expect(o.map((x) => x.r)).toEqual(Array.from({ length: 60 }, (_, v) => v * 2));
    // What ran of the cancelled job: what was done plus at most what was in flight when it was
    // cancelled (2 workers × (2 × 2 threads + 1) one-task batches), never the rest.
    const ran = executions(dc).length;
    expect(ran).toBeLessThanOrEqual(doneAtCancel + 10);
    // And nothing of it runs later: the count is the same once the others have finished.
    expect(executions(dc).length).toBe(ran);
  });

  it('a job whose stage throws fails alone; its neighbours complete', async () => {
    const ds = await daemons.start(2, ['--threads', '1']);
    const pool = open({ peers: ds.map((d) => d.address), localFallback: false });
    const bad = pool.run<unknown, number>(
      fixture('throws.ts'),
      Array.from({ length: 100 }, (_, v) => ({ v, throwOn: 37 })),
    );
    const good = pool.run<number, number>(
      fixture('double.ts'),
      Array.from({ length: 3000 }, (_, i) => i),
    );
    const failure = await bad.compute().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(TaskError);
    expect((failure as TaskError).index).toBe(37);
    expect(bad.status).toBe('failed');
    expect(await good.compute()).toEqual(Array.from({ length: 3000 }, (_, i) => i * 2));
  });

  it("errors: 'collect' keeps a pool job going: failures in place, listed in stats", async () => {
    const ds = await daemons.start(1, ['--threads', '2']);
    const pool = open({ peers: ds.map((d) => d.address), localFallback: false });
    const job = pool.run<unknown, number>(
      fixture('throws.ts'),
      Array.from({ length: 50 }, (_, v) => ({ v, throwOn: 7 })),
      { errors: 'collect' },
    );
    const out = await job.compute();
    expect(out[7]).toBeInstanceOf(TaskError);
    expect(out.filter((o) => typeof o === 'number')).toHaveLength(49);
    expect(job.stats().failed).toEqual([7]);
  });

  it('priorities: a priority-10 job started while a priority-0 job saturates the pool gets the workers as soon as their batches finish', async () => {
    const ds = await daemons.start(2, ['--threads', '1']);
    const pool = open({ peers: ds.map((d) => d.address), localFallback: false });
    const [dl, dh] = [dir(), dir()];
    const low = pool.run<unknown, unknown>(mark, marks(300, 10, dl), { speculation: false });
    await until('the low job computes', () => low.stats().completed >= 20, 20_000);
    const high = pool.run<unknown, unknown>(mark, marks(60, 10, dh), { priority: 10, speculation: false });
    await high.compute();
    const highs = executions(dh);
    const first = Math.min(...highs.map((e) => e.start));
    const last = Math.max(...highs.map((e) => e.end));
    // Low-priority executions that started while the high job ran: only what was already queued on
    // the workers when it arrived (a window of 2 × 1 + 1 per worker).
    const interleaved = executions(dl).filter((e) => e.start > first && e.start < last).length;
    expect(interleaved).toBeLessThanOrEqual(6);
    low.cancel();
    await low.settled();
  });

  it('weights: two jobs of equal priority share the workers in proportion to their weights', async () => {
    const ds = await daemons.start(2, ['--threads', '2']);
    const pool = open({ peers: ds.map((d) => d.address), localFallback: false });
    const [d1, d3] = [dir(), dir()];
    const one = pool.run<unknown, unknown>(mark, marks(2000, 5, d1), { weight: 1, speculation: false });
    const three = pool.run<unknown, unknown>(mark, marks(2000, 5, d3), { weight: 3, speculation: false });
    await until('400 tasks done', () => one.stats().completed + three.stats().completed >= 400, 30_000);
    const [a, b] = [executions(d1).length, executions(d3).length];
    one.cancel();
    three.cancel();
    const share = b / (a + b);
    console.log(`weights 1:3 → executions ${a}:${b} (share of the weight-3 job ${(share * 100).toFixed(1)} %)`);
    expect(share).toBeGreaterThan(0.65);
    expect(share).toBeLessThan(0.85);
  });

  it('close() cancels the running jobs and frees every worker at once: another client recruits them immediately', async () => {
    const ds = await daemons.start(2, ['--threads', '1']);
    const pool = open({ peers: ds.map((d) => d.address), localFallback: false });
    const job: FarmJob<unknown> = pool.run(mark, marks(1000, 10, dir()));
    const rejected = job.compute().catch((err: unknown) => err);
    await until('both workers recruited', () => pool.workers().length === 2, 20_000);
    await pool.close();
    expect(await rejected).toBeInstanceOf(FarmAbortError);
    for (const d of ds) expect((await describeWorker(d.address, 2000)).state).toBe('free');
    const other = new TaskFarm<number, number>(fixture('double.ts'), [1, 2], { peers: ds.map((d) => d.address), localFallback: false, workerWaitMs: 5000 });
    const recruited: string[] = [];
    other.on('recruited', (w) => recruited.push(w.id));
    expect(await other.compute()).toEqual([2, 4]);
    expect(recruited.length).toBeGreaterThan(0);
    expect(() => pool.run(fixture('double.ts'), [1])).toThrow(FarmAbortError);
  });

  it('a worker speaking protocol 2 is refused with an error naming both versions', async () => {
    const fake = await FakeWorker.start({
      key: testKey(),
      dir: dir(),
      behaviour: {
        describe: (d) => ({ ...d, protocol_version: 2 }),
        onTasks: () => {},
      },
    });
    try {
      const pool = open({ peers: [fake.address], localFallback: false, workerWaitMs: 600 });
      const err = await pool.map(fixture('double.ts'), [1]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NoWorkersError);
      expect((err as Error).message).toMatch(/protocol 2\b/);
      expect((err as Error).message).toMatch(/protocol 3\b/);
    } finally {
      await fake.close();
    }
  });
});
