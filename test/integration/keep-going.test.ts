/**
 * Issue 9, item 2 (library): `errors: 'collect'` keeps a sweep going past failed tasks. Failed tasks
 * (after their retries) become `{ index, error }` in results(), a TaskError in place of the output in
 * compute(), and `stats().failed` lists their indices; stages that cannot load still fail the run.
 * Real daemons on 127.0.0.1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidOptionError, StageSetupError, TaskCrashedError, TaskError, TaskFarm, TaskTimeoutError, type IndexedOutput } from '../../dist/src/index.js';
import { Daemons, fixture, type LocalDaemon } from '../helpers/daemons.js';

const BAD = [137, 1500];
const N = 2000;
/** Inputs of throws.ts: it throws a RangeError on the inputs whose `throwOn` is their own value. */
const sweep = Array.from({ length: N }, (_, v) => ({ v, throwOn: BAD.includes(v) ? v : -1 }));

describe("errors: 'collect'", () => {
  const daemons = new Daemons();
  let peers: string[] = [];
  let ds: LocalDaemon[] = [];
  beforeAll(async () => {
    ds = await daemons.start(2);
    peers = ds.map((d) => d.address);
  });
  afterAll(async () => {
    await daemons.stopAll();
  });

  it('a stage throwing on two inputs of 2,000: compute() resolves with 1,998 outputs and two TaskErrors in their places; stats().failed lists them', async () => {
    const farm = new TaskFarm<(typeof sweep)[number], number>(fixture('throws.ts'), sweep, { peers, errors: 'collect' });
    const outputs = await farm.compute();
    expect(outputs).toHaveLength(N);
    for (let i = 0; i < N; i++) {
      if (BAD.includes(i)) {
        const e = outputs[i] as unknown as TaskError;
        expect(e).toBeInstanceOf(TaskError);
        expect(e.code).toBe('FARM_ERR_TASK');
        expect(e.index).toBe(i);
        expect(e.remote.name).toBe('RangeError');
        expect(e.remote.message).toBe(`value ${i} is out of range`);
        expect(ds.map((d) => d.id)).toContain(e.workerId);
      } else expect(outputs[i]).toBe(i);
    }
    const stats = farm.stats();
    expect(stats.failed).toEqual(BAD);
    expect(stats.completed).toBe(N - BAD.length);
  });

  it('results() yields { index, error } for the failed inputs and { index, output } for the rest; ordered keeps input order', async () => {
    for (const ordered of [false, true]) {
      const seen: IndexedOutput<number>[] = [];
      const farm = new TaskFarm<(typeof sweep)[number], number>(fixture('throws.ts'), sweep, { peers, errors: 'collect' });
      for await (const r of farm.results({ ordered })) seen.push(r);
      expect(seen, `ordered: ${ordered}`).toHaveLength(N);
      expect(new Set(seen.map((r) => r.index)).size).toBe(N);
      if (ordered) expect(seen.map((r) => r.index)).toEqual(Array.from({ length: N }, (_, i) => i));
      const failures = seen.filter((r) => r.error !== undefined);
      expect(failures.map((r) => r.index).sort((a, b) => a - b)).toEqual(BAD);
      for (const f of failures) {
        expect(f.error).toBeInstanceOf(TaskError);
        expect('output' in f).toBe(false);
      }
      for (const r of seen) if (r.error === undefined) expect(r.output).toBe(r.index);
    }
  });

  it('retries come first: a task that throws is tried 1 + retries times before it is settled as failed', async () => {
    const farm = new TaskFarm<(typeof sweep)[number], number>(fixture('throws.ts'), sweep.slice(130, 140), { peers, errors: 'collect', retries: 2 });
    const outputs = await farm.compute();
    const err = outputs[137 - 130] as unknown as TaskError;
    expect(err).toBeInstanceOf(TaskError);
    expect(err.index).toBe(7);
    expect(err.attempts).toBe(3);
    expect(farm.stats().failed).toEqual([7]);
  });

  it('a task over taskTimeoutMs and a task that crashes its thread maxAttempts times are settled as failed too', async () => {
    const loops = new TaskFarm<{ v: number; loopOn: number }, number>(
      fixture('loop-on.ts'),
      Array.from({ length: 6 }, (_, v) => ({ v, loopOn: 2 })),
      { peers, errors: 'collect', taskTimeoutMs: 300 },
    );
    const out1 = await loops.compute();
    expect(out1[2]).toBeInstanceOf(TaskTimeoutError);
    expect(out1.filter((_, i) => i !== 2)).toEqual([0, 1, 3, 4, 5]);
    expect(loops.stats().failed).toEqual([2]);

    const crashes = new TaskFarm<{ v: number; exitOn: number }, number>(
      fixture('exit-on.ts'),
      Array.from({ length: 6 }, (_, v) => ({ v, exitOn: 4 })),
      { peers, errors: 'collect', maxAttempts: 2 },
    );
    const out2 = await crashes.compute();
    expect(out2[4]).toBeInstanceOf(TaskCrashedError);
    expect((out2[4] as unknown as TaskCrashedError).attempts).toBe(2);
    expect(out2.filter((_, i) => i !== 4)).toEqual([0, 1, 2, 3, 5]);
    expect(crashes.stats().failed).toEqual([4]);
  });

  it('a stage that cannot load still fails the whole run (StageSetupError), with collect too', async () => {
    const err = await new TaskFarm<number, number>(fixture('setup-throws.ts'), [1, 2, 3], { peers, errors: 'collect' }).compute().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StageSetupError);
  });

  it("the default is 'fail': the first failed task fails the run; an unknown value is refused", async () => {
    const err = await new TaskFarm(fixture('throws.ts'), sweep.slice(130, 140), { peers }).compute().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskError);
    expect((err as TaskError).index).toBe(7);
    expect(() => new TaskFarm((x: number) => x, [1], { errors: 'ignore' as 'fail' })).toThrow(InvalidOptionError);
    expect(() => new TaskFarm((x: number) => x, [1], { errors: 'ignore' as 'fail' })).toThrow(/Expected `errors` to be 'fail' or 'collect'/);
  });
});
