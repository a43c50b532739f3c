import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { InvalidStageError, TaskFarm, farm, pipeline, seq } from '../../dist/src/index.js';
import { Daemons, fixture, type LocalDaemon } from '../helpers/daemons.js';

describe('stage forms, computed by real daemons', () => {
  const daemons = new Daemons();
  let ds: LocalDaemon[] = [];
  let peers: string[] = [];
  beforeAll(async () => {
    ds = await daemons.start(2, ['--threads', '2']);
    peers = ds.map((d) => d.address);
  });
  afterAll(() => daemons.stopAll());

  it('a TypeScript module stage with an npm import (bundled by the client, nothing installed on the worker)', async () => {
    const outputs = await new TaskFarm(fixture('ts-npm.ts'), [1, '2', 'x', null], { peers, localFallback: false }).compute();
    expect(outputs).toEqual([
      { value: 1, numeric: true },
      { value: '2', numeric: true },
      { value: 'x', numeric: false },
      { value: null, numeric: false },
    ]);
  });

  it('a module stage given as a file: URL, and one given as a relative path', async () => {
    const viaUrl = await new TaskFarm(pathToFileURL(fixture('double.ts')), [21], { peers, localFallback: false }).compute();
    expect(viaUrl).toEqual([42]);
    const viaRelative = await new TaskFarm('test/fixtures/double.ts', [5], { peers, localFallback: false, cwd: process.cwd() }).compute();
    expect(viaRelative).toEqual([10]);
  });

  it('a JJPF-style class (setData, run, getData), as a module and inline', async () => {
    expect(await new TaskFarm(fixture('jjpf-square.ts'), [1, 2, 3], { peers, localFallback: false }).compute()).toEqual([1, 4, 9]);
    class Cube {
      x = 0;
      y = 0;
      setData(x: number): void {
        this.x = x;
      }
      run(): void {
        this.y = this.x ** 3;
      }
      getData(): number {
        return this.y;
      }
    }
    expect(await new TaskFarm(Cube, [1, 2, 3], { peers, localFallback: false }).compute()).toEqual([1, 8, 27]);
  });

  it('an inline function, async ones included, composed in a pipeline of farms', async () => {
    const program = pipeline(
      farm(seq((x: number) => x + 1)),
      farm(async (x: number) => {
        await new Promise((r) => setTimeout(r, 1));
        return x * 10;
      }),
    );
    expect(await new TaskFarm(program, [0, 1, 2], { peers, localFallback: false }).compute()).toEqual([10, 20, 30]);
  });

  it('an inline function capturing a variable fails before anything runs, saying inline stages must be self-contained', async () => {
    const factor = 3;
    const f = new TaskFarm((x: number) => x * factor, [1], { peers, localFallback: false });
    let recruited = 0;
    f.on('recruited', () => recruited++);
    const err = await f.compute().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidStageError);
    expect((err as InvalidStageError).code).toBe('FARM_ERR_INVALID_STAGE');
    expect((err as Error).message).toMatch(/must be self-contained/);
    expect((err as Error).message).toMatch(/`factor`/);
    expect(recruited).toBe(0);
  });

  it('setup(ctx) runs once per worker thread, before its first task', async () => {
    const inputs = Array.from({ length: 400 }, (_, i) => i);
    const outputs = await new TaskFarm<number, { threadId: number; setups: number; setupThread: number; workerId: string; pid: number }>(
      fixture('setup-count.ts'),
      inputs,
      { peers, localFallback: false },
    ).compute();
    expect(outputs.map((o) => o.setups).every((n) => n === 1)).toBe(true);
    expect(outputs.every((o) => o.setupThread === o.threadId)).toBe(true);
    const threads = new Set(outputs.map((o) => `${o.pid}/${o.threadId}`));
    expect(threads.size).toBeGreaterThan(1);
    for (const o of outputs) expect(ds.map((d) => d.id)).toContain(o.workerId);
  });

  it('a missing module is a clear error naming the path', async () => {
    const err = await new TaskFarm('test/fixtures/no-such-stage.ts', [1], { peers, localFallback: false }).compute().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidStageError);
    expect((err as Error).message).toMatch(/module not found: .*no-such-stage\.ts/);
  });

  it('workers cache bundles by hash: only what a worker lacks is installed', async () => {
    // A stage no daemon has seen yet: written fresh, so its hash is new.
    const dir = mkdtempSync(join(tmpdir(), 'taskfarm-stage-'));
    const stage = join(dir, 'fresh.ts');
    writeFileSync(stage, `// ${process.pid}-${Date.now()}\nexport default (x: number): number => x + 1;\n`);
    try {
      for (const d of ds) {
        const first = new TaskFarm<number, number>(stage, [1, 2], { peers: [d.address], localFallback: false });
        expect(await first.compute()).toEqual([2, 3]);
        expect(first.stats().workers.map((w) => w.bundlesSent)).toEqual([1]);
        const second = new TaskFarm<number, number>(stage, [3], { peers: [d.address], localFallback: false });
        expect(await second.compute()).toEqual([4]);
        expect(second.stats().workers.map((w) => w.bundlesSent)).toEqual([0]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
