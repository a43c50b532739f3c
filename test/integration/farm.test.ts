import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskFarm, TaskError, TaskCrashedError, UnsendableInputError, type WorkerInfo } from '../../dist/src/index.js';
import { Daemons, fixture, tempDir, type LocalDaemon } from '../helpers/daemons.js';

describe('a farm of 3 worker daemons on 127.0.0.1', () => {
  const daemons = new Daemons();
  const cache = tempDir();
  let peers: string[] = [];
  let started: LocalDaemon[] = [];

  beforeAll(async () => {
    started = await daemons.start(3);
    peers = started.map((d) => d.address);
  });
  afterAll(async () => {
    await daemons.stopAll();
    cache.remove();
  });

  it('computes 10,000 small tasks: every output, in input order, with work on all 3 daemons', async () => {
    const inputs = Array.from({ length: 10_000 }, (_, i) => i);
    const farm = new TaskFarm<number, number>(fixture('double.ts'), inputs, { peers, localFallback: false });
    const recruited: WorkerInfo[] = [];
    farm.on('recruited', (w) => recruited.push(w));
    const t0 = performance.now();
    const outputs = await farm.compute();
    const ms = performance.now() - t0;
    expect(outputs).toHaveLength(10_000);
    expect(outputs.every((o, i) => o === i * 2)).toBe(true);
    const stats = farm.stats();
    expect(stats.completed).toBe(10_000);
    expect(new Set(recruited.map((w) => w.id))).toEqual(new Set(started.map((d) => d.id)));
    for (const w of stats.workers) expect(w.completed, `worker ${w.id}`).toBeGreaterThan(0);
    expect(stats.workers.reduce((n, w) => n + w.completed, 0)).toBe(10_000);
    console.log(
      `10,000 tiny tasks on 3 daemons: ${ms.toFixed(0)} ms (${Math.round(10_000 / (ms / 1000))} tasks/s); per worker ${stats.workers.map((w) => w.completed).join(', ')}`,
    );
  });

  it('computes the same 10,000 tasks on local threads', async () => {
    const inputs = Array.from({ length: 10_000 }, (_, i) => i);
    const farm = new TaskFarm<number, number>(fixture('double.ts'), inputs, { discovery: 'local', cacheDir: cache.path });
    const t0 = performance.now();
    const outputs = await farm.compute();
    const ms = performance.now() - t0;
    expect(outputs.every((o, i) => o === i * 2)).toBe(true);
    console.log(`10,000 tiny tasks on 'local': ${ms.toFixed(0)} ms (${Math.round(10_000 / (ms / 1000))} tasks/s)`);
  });

  it('fails with TaskError carrying the input index and the remote stack when a stage throws', async () => {
    const inputs = Array.from({ length: 50 }, (_, v) => ({ v, throwOn: 17 }));
    const err = await new TaskFarm(fixture('throws.ts'), inputs, { peers, localFallback: false }).compute().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TaskError);
    const te = err as TaskError;
    expect(te.code).toBe('FARM_ERR_TASK');
    expect(te.index).toBe(17);
    expect(te.remote.name).toBe('RangeError');
    expect(te.remote.message).toBe('value 17 is out of range');
    // The remote stack names the function that threw, in the stage's own source file.
    expect(te.remoteStack).toMatch(/checkValue/);
    expect(te.remoteStack).toMatch(/throws\.ts/);
    expect(started.map((d) => d.id)).toContain(te.workerId);
  });

  it('retries a throwing task when asked to (option retries)', async () => {
    // The stage throws on every attempt, so with retries: 2 it is tried 3 times, then fails.
    const err = (await new TaskFarm(fixture('throws.ts'), [{ v: 1, throwOn: 1 }], { peers, localFallback: false, retries: 2 })
      .compute()
      .catch((e: unknown) => e)) as TaskError;
    expect(err).toBeInstanceOf(TaskError);
    expect(err.attempts).toBe(3);
  });

  it('fails a task that kills its thread after maxAttempts, naming the index; the daemons keep serving', async () => {
    const inputs = Array.from({ length: 40 }, (_, v) => ({ v, exitOn: 23 }));
    const err = await new TaskFarm(fixture('exit-on.ts'), inputs, { peers, localFallback: false, maxAttempts: 3 }).compute().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskCrashedError);
    const tc = err as TaskCrashedError;
    expect(tc.code).toBe('FARM_ERR_TASK_CRASHED');
    expect(tc.index).toBe(23);
    expect(tc.attempts).toBe(3);
    expect(tc.message).toMatch(/input 23/);
    // Each daemon lost only a thread, which was replaced: every one of them still computes.
    for (const d of started) {
      const again = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [d.address], localFallback: false });
      expect(await again.compute()).toEqual([2, 4, 6]);
      expect(again.stats().workers.map((w) => w.id)).toEqual([d.id]);
    }
  });

  it('rejects an input that cannot be sent before anything runs, naming its index', async () => {
    class Point {
      readonly x: number;
      constructor(x: number) {
        this.x = x;
      }
      norm(): number {
        return Math.abs(this.x);
      }
    }
    const cases: [unknown[], number, RegExp][] = [
      [[1, 2, () => 3], 2, /function/],
      [[{ a: 1 }, { a: Symbol('s') }], 1, /symbol/],
      [[0, 0, 0, new Point(1)], 3, /class Point/],
    ];
    for (const [inputs, index, what] of cases) {
      const farm = new TaskFarm(fixture('double.ts'), inputs, { peers, localFallback: false });
      let recruited = 0;
      farm.on('recruited', () => recruited++);
      const err = (await farm.compute().catch((e: unknown) => e)) as UnsendableInputError;
      expect(err).toBeInstanceOf(UnsendableInputError);
      expect(err.index).toBe(index);
      expect(err.message).toMatch(what);
      expect(recruited).toBe(0);
    }
  });
});
