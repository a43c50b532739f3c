/**
 * Optimize jobs on the service core (issue 13, item 6), in this process on a SQLite file and local
 * worker threads: submit checks naming the field, a graceful close mid-run (the generation in
 * flight may finish and is committed) and a reopen that continues, hold and release, cancel, an objective
 * that throws or returns a non-number, penalties, and the `generation` / `improved` events. The
 * manager SIGKILLed mid-run is test/system/service-optimize.test.ts.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Minimization, createJobService, localEvaluator, type StoreJobService } from '../../dist/src/index.js';
import { tempDir, until } from '../helpers/daemons.js';

const caller = { user: 'ada', admin: false };
/** The sphere, busy for `ms` per evaluation (so that a run takes a while). */
const sphere = (ms: number): string =>
  `export default (x) => { const end = performance.now() + ${ms}; while (performance.now() < end); return x.reduce((s, v) => s + v * v, 0); }`;
const sphereFn = (x: number[]): number => x.reduce((s, v) => s + v * v, 0);

interface OptStatus {
  state: string;
  generation: number | null;
  error: { code: string; message: string } | null;
  result: null | {
    fun: number;
    x: number[];
    evaluations: number;
    generations: number;
    reason?: string;
    penalized?: number;
    history?: { generation: number; evaluations: number; fun: number }[];
  };
}

describe('optimize jobs on the job service (in process, SQLite, local threads)', () => {
  const dirs: { remove: () => void }[] = [];
  const services: StoreJobService[] = [];
  afterEach(async () => {
    for (const s of services.splice(0)) await s.close(2000);
    for (const d of dirs.splice(0)) d.remove();
  });

  async function open(path: string): Promise<StoreJobService> {
    const s = await createJobService({ store: path, local: true, poolOptions: { threads: 2 } });
    services.push(s);
    return s;
  }
  async function fresh(): Promise<{ svc: StoreJobService; path: string }> {
    const d = tempDir();
    dirs.push(d);
    const path = join(d.path, 'jobs.db');
    return { svc: await open(path), path };
  }
  const status = async (svc: StoreJobService, t: string): Promise<OptStatus> => (await svc.status(caller, t)) as unknown as OptStatus;
  const finished = (svc: StoreJobService, t: string): Promise<OptStatus> =>
    until(
      'the job finished',
      async () => {
        const s = await status(svc, t);
        return s.state === 'done' || s.state === 'failed' ? s : undefined;
      },
      30_000,
    );
  const submit = (svc: StoreJobService, source: string, params: unknown, inputs: { text: string; line: number }[] = []): Promise<string> =>
    svc.submit(caller, { kind: 'optimize', stages: [{ source }], params: params as never }, inputs);

  it('a submit is checked before anything is stored: errors name the field', async () => {
    const { svc } = await fresh();
    const bad = async (params: unknown, inputs: { text: string; line: number }[] = []): Promise<{ field?: string; message: string }> => {
      const err = (await submit(svc, sphere(0), params, inputs).then(
        () => undefined,
        (e: unknown) => e,
      )) as { field?: string; message: string } | undefined;
      expect(err).toBeDefined();
      return err!;
    };
    expect(
      await bad({
        space: {
          bounds: [
            [0, 1],
            [2, 1],
          ],
          names: ['a', 'b'],
        },
      }),
    ).toMatchObject({
      field: 'params.space.bounds[1]',
      message: expect.stringMatching(/space\.bounds\[1\] \(b\)` to be `\[lo, hi\]` with lo < hi/) as unknown,
    });
    expect(await bad({ bounds: [[0, 1]] })).toMatchObject({ field: 'params.bounds' });
    expect(await bad({ space: { bounds: [[0, 1]] }, populationSize: 2 })).toMatchObject({ field: 'params.populationSize' });
    expect(await bad({ space: { bounds: [[0, 1]] }, maxEvaluations: 3 })).toMatchObject({ field: 'params.maxEvaluations' });
    expect(await bad({ space: { bounds: [[0, 1]] }, optimizer: 'nelder-mead' })).toMatchObject({ field: 'params.optimizer' });
    expect(await bad({ space: { bounds: [[0, 1]] }, optimizerOptions: { strategy: 'nope' } })).toMatchObject({ field: 'params.optimizerOptions.strategy' });
    expect(await bad({ space: { bounds: [[0, 1]] }, optimizer: 'bfgs', optimizerOptions: { gtol: -1 } })).toMatchObject({
      field: expect.stringMatching(/^params\.optimizerOptions\./) as unknown,
    });
    expect(await bad({ space: { bounds: [[0, 1]] }, shared: { d: { text: 'x' } } })).toMatchObject({ field: 'params.shared.d' });
    expect(await bad({ space: { bounds: [[0, 1]] } }, [{ text: '[0.5]', line: 1 }])).toMatchObject({ field: 'inputs' });
    expect((await svc.list(caller)).items).toEqual([]);
  });

  it('a graceful close mid-run; reopened, the job continues from its last committed generation; hold and release; the result is the uninterrupted run’s', async () => {
    const { svc: first, path } = await fresh();
    const params = {
      space: {
        bounds: [
          [-5, 5],
          [-5, 5],
        ],
      },
      seed: 3,
      maxGenerations: 25,
      tolerance: 0,
    };
    const t = await submit(first, sphere(10), params);
    const before = await until(
      'two committed generations',
      async () => {
        const s = await status(first, t);
        return s.generation !== null && s.generation >= 1 ? s : undefined;
      },
      30_000,
    );
    await first.close(10_000);
    services.splice(services.indexOf(first), 1);
    let svc = await open(path);
    const reopened = await status(svc, t);
    expect(reopened.state).toBe('running');
    // Nothing committed is lost (the close lets a generation in flight finish and commits it first).
    expect(reopened.generation!).toBeGreaterThanOrEqual(before.generation!);
    await until('another generation', async () => ((await status(svc, t)).generation ?? 0) > reopened.generation! || undefined, 30_000);
    const held = (await svc.hold(caller, t)) as unknown as OptStatus;
    expect(held.state).toBe('held');
    await svc.close(2000);
    services.splice(services.indexOf(svc), 1);
    svc = await open(path);
    expect((await status(svc, t)).generation).toBe(held.generation);
    await svc.release(caller, t);
    const done = await finished(svc, t);
    expect(done.state).toBe('done');
    const reference = await new Minimization(localEvaluator(sphereFn), params.space, { seed: 3, maxGenerations: 25, tolerance: 0 }).run();
    expect({ x: done.result!.x, fun: done.result!.fun, evaluations: done.result!.evaluations, reason: done.result!.reason }).toEqual({
      x: reference.x,
      fun: reference.fun,
      evaluations: reference.evaluations,
      reason: reference.reason,
    });
    expect(done.result!.history!.map((h) => h.fun)).toEqual(reference.history.map((h) => h.fun));
    expect(done.generation).toBe(24);
  });

  it('events: one `generation` per committed generation (the best so far) and `improved` when the best cost fell; status has the history', async () => {
    const { svc } = await fresh();
    const t = await submit(svc, sphere(0), {
      space: {
        bounds: [
          [-5, 5],
          [-5, 5],
        ],
        names: ['a', 'b'],
      },
      seed: 1,
      maxGenerations: 12,
    });
    const done = await finished(svc, t);
    expect(done.result).toMatchObject({ generations: 12, reason: 'maxGenerations' });
    const ac = new AbortController();
    const events: { type: string; data: unknown }[] = [];
    for await (const e of svc.events(caller, t, { signal: ac.signal })) {
      events.push(e);
      if (e.type === 'state' && (e.data as { state: string }).state === 'done') break;
    }
    ac.abort();
    const gens = events.filter((e) => e.type === 'generation').map((e) => e.data as { generation: number; result: { fun: number; x: number[] } });
    expect(gens.map((g) => g.generation)).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect(gens.map((g) => g.result.fun)).toEqual(done.result!.history!.map((h) => h.fun));
    const improved = events.filter((e) => e.type === 'improved').map((e) => e.data as { generation: number; fun: number; names: string[] });
    expect(improved.length).toBeGreaterThan(0);
    expect(improved[0]).toMatchObject({ generation: 0, names: ['a', 'b'] });
    for (const i of improved) expect(i.fun).toBe(gens[i.generation]!.result.fun);
  });

  it('an objective that throws or returns a non-number fails the job, naming generation and member; with invalidCost "penalty" it goes on', async () => {
    const { svc } = await fresh();
    const throws = await submit(svc, 'export default (x) => { if (x[0] > 0) throw new RangeError("out of range"); return x[0] ** 2; }', {
      space: { bounds: [[-1, 1]] },
      seed: 1,
    });
    const f = await finished(svc, throws);
    expect(f.state).toBe('failed');
    expect(f.error!.message).toMatch(/^The objective failed in generation 0, member \d+: .*RangeError: out of range/);
    const nan = await submit(svc, 'export default () => "not a cost"', { space: { bounds: [[-1, 1]] }, seed: 1 });
    const n = await finished(svc, nan);
    expect(n).toMatchObject({ state: 'failed', error: { code: 'FARM_ERR_INVALID_COST' } });
    const penalised = await submit(svc, 'export default (x) => (x[0] > 0 ? "no" : x[0] ** 2)', {
      space: { bounds: [[-1, 1]] },
      seed: 1,
      maxGenerations: 5,
      invalidCost: 'penalty',
      penalty: 1e6,
    });
    const p = await finished(svc, penalised);
    expect(p.state).toBe('done');
    expect(p.result!.penalized).toBeGreaterThan(0);
    expect(p.result!.fun).toBeLessThan(1);
  });

  it('cancel stops the run at once; the job keeps its last committed state', async () => {
    const { svc } = await fresh();
    const t = await submit(svc, sphere(5), { space: { bounds: [[-5, 5]] }, seed: 1, maxGenerations: 1000, tolerance: 0 });
    await until('a committed generation', async () => ((await status(svc, t)).generation ?? -1) >= 0 || undefined, 30_000);
    const c = (await svc.cancel(caller, t)) as unknown as OptStatus;
    expect(c.state).toBe('cancelled');
    expect(c.result!.fun).toBeGreaterThanOrEqual(0);
    expect(c.result!.history!.length).toBe(c.generation! + 1);
  });
});
