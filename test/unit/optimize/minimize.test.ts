import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  Minimization,
  localEvaluator,
  minimizeWith,
  type Evaluator,
  type GenerationEvent,
  type MinimizeCheckpoint,
  type MinimizeOptions,
  type MinimizeResult,
  type Optimizer,
  type OptimizerConfig,
  type ResolvedSpace,
  type Space,
} from '../../../src/optimize/index.js';
import { FarmAbortError, FarmErrorCode, InvalidCostError, InvalidOptionError, TaskError } from '../../../src/errors.js';
import { SeededRandom } from '../../../src/util/rng.js';
import { deferred } from '../../../src/util/deferred.js';
import { boxOf, rastrigin, rosenbrock, sphere } from '../../../bench/test-functions.js';

const f = (fn: (x: readonly number[]) => number) => fn as (x: number[]) => number;
const run = (objective: (x: number[]) => unknown, space: Space, options: MinimizeOptions = {}): Promise<MinimizeResult> =>
  new Minimization(localEvaluator(objective), space, options).run();
/** The result without its timings (which differ from run to run). */
const untimed = (r: MinimizeResult) => ({ ...r, elapsedMs: 0, history: r.history.map((h) => ({ ...h, elapsedMs: 0 })) });

/** The random search of the Optimizer interface's TSDoc (and the README), verbatim. */
class RandomSearch implements Optimizer {
  readonly name = 'random';
  #rng = new SeededRandom(0);
  #space!: ResolvedSpace;
  #size = 20;
  configure({ seed, populationSize }: OptimizerConfig) {
    this.#rng = new SeededRandom(seed);
    this.#size = populationSize ?? 20;
  }
  start(space: ResolvedSpace) {
    this.#space = space;
    return this.next();
  }
  update() {} // the runner keeps the best point; a random search learns nothing
  next() {
    const { lower, upper, integer } = this.#space;
    return Array.from({ length: this.#size }, () =>
      lower.map((lo, i) => (integer[i] ? lo + this.#rng.int(upper[i]! - lo + 1) : this.#rng.uniform(lo, upper[i]!))),
    );
  }
}

/** Proposes the same population every generation (nothing ever improves after generation 0). */
class Constant implements Optimizer {
  readonly name = 'constant';
  readonly points: number[][];
  readonly doneAfter: number;
  #n = 0;
  constructor(points: number[][], doneAfter = Infinity) {
    this.points = points;
    this.doneAfter = doneAfter;
  }
  configure() {}
  start() {
    return this.points.map((p) => [...p]);
  }
  update() {
    this.#n++;
  }
  next() {
    return this.#n >= this.doneAfter ? { done: true as const, converged: false, message: 'constant: done' } : this.points.map((p) => [...p]);
  }
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Minimization: stopping rules', () => {
  const sphere3 = { bounds: boxOf(sphere, 3) };

  it('target: stops as soon as a cost at most the target is found', async () => {
    const r = await run(f(sphere.f), sphere3, { seed: 1, target: 1e-6 });
    expect(r.reason).toBe('target');
    expect(r.converged).toBe(true);
    expect(r.fun).toBeLessThanOrEqual(1e-6);
    expect(r.history.at(-2)!.fun).toBeGreaterThan(1e-6);
  });

  it("tolerance.fun: stops when the population's costs agree (std ≤ fun·|mean| + funAbs)", async () => {
    const r = await run((x) => sphere.f(x) + 1, sphere3, { seed: 1, tolerance: 1e-6 });
    expect(r.reason).toBe('tolerance.fun');
    expect(r.converged).toBe(true);
    expect(r.fun).toBeCloseTo(1, 5);
    expect(r.message).toMatch(/std .* ≤ 0.000001 × \|mean/);
    const abs = await run(f(sphere.f), sphere3, { seed: 1, tolerance: { fun: 0, funAbs: 1e-3 } });
    expect(abs.reason).toBe('tolerance.fun');
  });

  it('tolerance.x: stops when every parameter has converged across the population', async () => {
    const r = await run(f(sphere.f), sphere3, { seed: 1, tolerance: { fun: 0, x: 1e-4 } });
    expect(r.reason).toBe('tolerance.x');
    for (const v of r.x) expect(Math.abs(v)).toBeLessThan(1e-3);
  });

  it('tolerance.improvement: stops when the best cost did not improve over `window` generations', async () => {
    const r = await run(f(sphere.f), { bounds: [[-1, 1]] }, { optimizer: new Constant([[0.5], [0.25]]), tolerance: { improvement: 0, window: 5 } });
    expect(r.reason).toBe('tolerance.improvement');
    expect(r.generations).toBe(6);
    expect(r.fun).toBe(0.0625);
  });

  it('maxGenerations: evaluates exactly that many populations (the initial one included)', async () => {
    const r = await run(f(sphere.f), sphere3, { seed: 1, maxGenerations: 7, populationSize: 10 });
    expect(r).toMatchObject({ reason: 'maxGenerations', converged: false, generations: 7, evaluations: 70 });
    expect(r.history.map((h) => h.generation)).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it('maxEvaluations: never evaluates more points than the budget', async () => {
    let count = 0;
    const r = await run(
      (x) => {
        count++;
        return sphere.f(x);
      },
      sphere3,
      { seed: 1, maxEvaluations: 95, populationSize: 10 },
    );
    expect(r).toMatchObject({ reason: 'maxEvaluations', converged: false, evaluations: 90, generations: 9 });
    expect(count).toBe(90);
  });

  it('maxTimeMs: abandons the generation in flight when the time is up and returns the best so far', async () => {
    vi.useFakeTimers();
    const hanging = deferred<void>();
    const evaluate: Evaluator = async (pop, { generation, signal }) => {
      if (generation < 2) return pop.map(f(sphere.f));
      hanging.resolve();
      return new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('abandoned'))));
    };
    const m = new Minimization(evaluate, sphere3, { seed: 1, maxTimeMs: 1_000 });
    let settled = false;
    const result = m.run().finally(() => (settled = true));
    await hanging.promise;
    await vi.advanceTimersByTimeAsync(999);
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const r = await result;
    expect(r).toMatchObject({ reason: 'maxTimeMs', converged: false, generations: 2 });
    expect(r.fun).toBe(m.best!.fun);
  });

  it("optimizer: ends when the optimiser has nothing more to propose, with the optimiser's verdict", async () => {
    const bfgs = await run(f(sphere.f), { ...sphere3, x0: [1, 2, 3] }, { optimizer: 'bfgs' });
    expect(bfgs).toMatchObject({ reason: 'optimizer', converged: true });
    expect(bfgs.message).toMatch(/BFGS converged/);
    const own = await run(f(sphere.f), sphere3, { optimizer: new Constant([[1, 1, 1]], 3) });
    expect(own).toMatchObject({ reason: 'optimizer', converged: false, message: 'constant: done', generations: 3 });
  });

  it('signal: rejects with FarmAbortError, promptly even mid-evaluation; best keeps the best point found', async () => {
    const ac = new AbortController();
    const inFlight = deferred<void>();
    const evaluate: Evaluator = async (pop, { generation }) => {
      if (generation < 3) return pop.map(f(sphere.f));
      inFlight.resolve();
      return new Promise(() => undefined); // an evaluator that ignores the signal: the runner must not wait for it
    };
    const m = new Minimization(evaluate, sphere3, { seed: 1, signal: ac.signal });
    const result = m.run();
    await inFlight.promise;
    ac.abort(new Error('user stop'));
    await expect(result).rejects.toBeInstanceOf(FarmAbortError);
    expect(m.best?.fun).toBeGreaterThanOrEqual(0);
    expect(m.best?.generation).toBeLessThan(3);
    const pre = new AbortController();
    pre.abort();
    await expect(minimizeWith(localEvaluator(f(sphere.f)), sphere3, { signal: pre.signal })).rejects.toMatchObject({ code: FarmErrorCode.ABORTED });
  });
});

describe('Minimization: reproducibility', () => {
  const space = { bounds: boxOf(rastrigin, 4) };
  const options = { seed: 42, maxGenerations: 60 };

  it('the same seed gives the same result; another seed another', async () => {
    const a = await run(f(rastrigin.f), space, options);
    const b = await run(f(rastrigin.f), space, options);
    expect(untimed(b)).toEqual(untimed(a));
    const c = await run(f(rastrigin.f), space, { ...options, seed: 43 });
    expect(c.x).not.toEqual(a.x);
  });

  it('the same result whatever the order in which evaluations complete, on 1 or 3 "workers"', async () => {
    const reference = await run(f(rastrigin.f), space, options);
    for (const [concurrency, seed] of [
      [1, 1],
      [3, 2],
      [3, 3],
      [Infinity, 4],
    ] as const) {
      // An async objective that finishes after a random number of turns of the event loop: evaluations
      // complete in a shuffled order (the delays come from their own generator, not the optimiser's).
      const delays = new SeededRandom(seed);
      const slow = async (x: number[]): Promise<number> => {
        for (let k = delays.int(4); k > 0; k--) await new Promise<void>((resolve) => setImmediate(resolve));
        return rastrigin.f(x);
      };
      const r = await new Minimization(localEvaluator(slow, { concurrency }), space, options).run();
      expect(untimed(r)).toEqual(untimed(reference));
    }
  });

  it('costs that arrive in reverse order are still matched to their members', async () => {
    const reference = await run(f(sphere.f), { bounds: boxOf(sphere, 3) }, { seed: 9, maxGenerations: 30 });
    const reversed: Evaluator = async (pop) => {
      const out = new Array<number>(pop.length);
      const pending = pop.map(() => deferred<void>());
      const done = pop.map((x, i) => pending[i]!.promise.then(() => (out[i] = sphere.f(x))));
      for (let i = pop.length - 1; i >= 0; i--) pending[i]!.resolve();
      await Promise.all(done);
      return out;
    };
    const r = await new Minimization(reversed, { bounds: boxOf(sphere, 3) }, { seed: 9, maxGenerations: 30 }).run();
    expect(untimed(r)).toEqual(untimed(reference));
  });
});

describe('Minimization: your own optimiser', () => {
  it('runs the random search of the README', async () => {
    const r = await run(
      f(sphere.f),
      {
        bounds: [
          [-5, 5],
          [-5, 5],
        ],
      },
      { optimizer: new RandomSearch(), seed: 3, maxEvaluations: 4_000 },
    );
    expect(r.reason).toBe('maxEvaluations');
    expect(r.evaluations).toBe(4_000);
    expect(r.fun).toBeLessThan(0.05);
    const again = await run(
      f(sphere.f),
      {
        bounds: [
          [-5, 5],
          [-5, 5],
        ],
      },
      { optimizer: new RandomSearch(), seed: 3, maxEvaluations: 4_000 },
    );
    expect(again.x).toEqual(r.x);
  });

  it('handles integer parameters in a user-written optimiser', async () => {
    const r = await run(
      (x) => (x[0]! - 3) ** 2 + x[1]! ** 2,
      {
        bounds: [
          [0, 10],
          [-1, 1],
        ],
        integer: [0],
      },
      { optimizer: new RandomSearch(), seed: 1, maxGenerations: 50 },
    );
    expect(r.x[0]).toBe(3);
  });

  it('refuses a population outside the space, naming the member and the parameter', async () => {
    const bad = new Constant([
      [0.5, 0.5],
      [0.5, 7],
    ]);
    await expect(
      run(
        f(sphere.f),
        {
          bounds: [
            [0, 1],
            [0, 1],
          ],
          names: ['a', 'b'],
        },
        { optimizer: bad },
      ),
    ).rejects.toThrow("Optimizer 'constant' proposed member 1 with b = `7` (number): expected a number in [0, 1]");
    await expect(run(f(sphere.f), { bounds: [[0, 1]] }, { optimizer: new Constant([]) })).rejects.toThrow(/return \{ done: true/);
    await expect(run(f(sphere.f), { bounds: [[0, 3]], integer: [0] }, { optimizer: new Constant([[1.5]]) })).rejects.toThrow(/expected an integer in \[0, 3\]/);
  });
});

describe('Minimization: events', () => {
  it('posts generation after every generation, improved when the best fell, progress on improvement or each 10 % of the budget', async () => {
    const m = new Minimization(localEvaluator(f(sphere.f)), { bounds: [[-1, 1]] }, { optimizer: new Constant([[0.5], [0.2]]), maxGenerations: 50 });
    const events: Record<string, GenerationEvent[]> = { generation: [], improved: [], progress: [] };
    m.on('generation', (e) => events['generation']!.push(e));
    m.on('improved', (e) => events['improved']!.push(e));
    m.on('progress', (e) => events['progress']!.push(e));
    const r = await m.run();
    expect(events['generation']!.map((e) => e.generation)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(events['improved']!.map((e) => e.generation)).toEqual([0]);
    expect(events['progress']!.map((e) => e.generation)).toEqual([0, 4, 9, 14, 19, 24, 29, 34, 39, 44, 49]);
    expect(events['progress']![3]).toMatchObject({ generation: 14, x: [0.2], evaluations: 30, improved: false });
    expect(events['progress']![3]!.fun).toBe(r.fun);
  });

  it('improved carries a strictly falling best cost, and the best point with it', async () => {
    const m = new Minimization(localEvaluator(f(rosenbrock.f)), { bounds: boxOf(rosenbrock, 3) }, { seed: 2, maxGenerations: 100 });
    const improved: GenerationEvent[] = [];
    m.on('improved', (e) => improved.push(e));
    const r = await m.run();
    expect(improved.length).toBeGreaterThan(5);
    for (let i = 1; i < improved.length; i++) expect(improved[i]!.fun).toBeLessThan(improved[i - 1]!.fun);
    for (const e of improved) expect(rosenbrock.f(e.x)).toBe(e.fun);
    expect(improved.at(-1)!.fun).toBe(r.fun);
  });
});

describe('Minimization: invalid costs and bad input', () => {
  const space = {
    bounds: [
      [-2, 2],
      [-2, 2],
    ],
  };

  it('fails with InvalidCostError naming the member, the generation and x when a cost is not a finite number', async () => {
    for (const bad of [Number.NaN, Infinity, 'abc', undefined, null]) {
      const err = await run((x) => (x[0]! > 1 ? bad : sphere.f(x)), space, { seed: 1 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidCostError);
      const e = err as InvalidCostError;
      expect(e.code).toBe(FarmErrorCode.INVALID_COST);
      expect(e.x[0]).toBeGreaterThan(1);
      expect(e.message).toContain(`member ${e.index} of generation ${e.generation}`);
      expect(e.message).toContain("invalidCost: 'penalty'");
      // The bad value as it was (JSON would show NaN and Infinity as null).
      if (typeof bad === 'number') expect(e.message).toContain(`returned \`${String(bad)}\` (number)`);
    }
  });

  it("fails with the objective's TaskError when it throws", async () => {
    const err = await run(
      (x) => {
        if (x[0]! > 1) throw new RangeError('model undefined there');
        return sphere.f(x);
      },
      space,
      { seed: 1 },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskError);
    expect((err as TaskError).remote).toMatchObject({ name: 'RangeError', message: 'model undefined there' });
  });

  it("with invalidCost: 'penalty', gives such points the penalty cost and carries on", async () => {
    const objective = (x: number[]): number => {
      if (x[0]! > 1) throw new Error('boom');
      if (x[1]! > 1) return Number.NaN;
      return sphere.f(x);
    };
    const r = await run(objective, space, { seed: 1, invalidCost: 'penalty', maxGenerations: 80 });
    expect(r.penalized).toBeGreaterThan(0);
    expect(r.fun).toBeLessThan(1e-6);
    const custom = await run(objective, space, { seed: 1, invalidCost: 'penalty', penalty: 1e6, maxGenerations: 5 });
    expect(custom.penalized).toBeGreaterThan(0);
  });

  const badOptions: [string, Space, MinimizeOptions, RegExp][] = [
    [
      'bounds with lo > hi',
      {
        bounds: [
          [0, 1],
          [3, -3],
        ],
      },
      {},
      /`space\.bounds\[1\]` to be `\[lo, hi\]` with lo < hi/,
    ],
    ['an unknown optimizer', space, { optimizer: 'nelder-mead' as 'de' }, /`optimizer` to be 'de', 'bfgs' or an Optimizer/],
    ['a population of 3', space, { populationSize: 3 }, /`populationSize` to be an integer >= 5/],
    ['maxGenerations 0', space, { maxGenerations: 0 }, /`maxGenerations`/],
    [
      'maxEvaluations below the initial population',
      space,
      { maxEvaluations: 5 },
      /`maxEvaluations` \(5\) to allow at least the initial population \(10 members\)/,
    ],
    ['a negative tolerance', space, { tolerance: -1 }, /`tolerance\.fun`/],
    ['a tolerance window of 0', space, { tolerance: { improvement: 0, window: 0 } }, /`tolerance\.window`/],
    ['a target that is not a number', space, { target: '0' as unknown as number }, /`target`/],
    ['an unknown invalidCost policy', space, { invalidCost: 'ignore' as 'fail' }, /`invalidCost`/],
    ['an infinite penalty', space, { penalty: Infinity }, /`penalty`/],
    ['a fractional seed', space, { seed: 1.5 }, /`seed`/],
    ['optimizerOptions with your own optimizer', space, { optimizer: new RandomSearch(), optimizerOptions: {} }, /built-in optimizers only/],
    ['bad DE options', space, { optimizerOptions: { crossover: 2 } }, /`crossover`/],
  ];
  it.each(badOptions)('refuses %s with an InvalidOptionError naming the field', async (_what, sp, options, message) => {
    const err = await minimizeWith(localEvaluator(f(sphere.f)), sp, options).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidOptionError);
    expect((err as Error).message).toMatch(message);
  });

  it('refuses an evaluator that returns the wrong number of costs', async () => {
    await expect(minimizeWith(async (pop) => pop.slice(1).map(f(sphere.f)), space, { seed: 1 })).rejects.toThrow(
      /returned 9 costs for generation 0 of 10 members/,
    );
  });
});

describe('Minimization: checkpoint and resume', () => {
  const cases: [string, (x: number[]) => number, Space, MinimizeOptions][] = [
    ['de', f(rosenbrock.f), { bounds: boxOf(rosenbrock, 3) }, { seed: 5, maxGenerations: 40 }],
    [
      'de (classic rand1bin)',
      f(rastrigin.f),
      { bounds: boxOf(rastrigin, 3) },
      { seed: 5, maxGenerations: 40, optimizerOptions: { strategy: 'rand1bin', mutation: [0.5, 1] } },
    ],
    ['bfgs', f(rosenbrock.f), { bounds: boxOf(rosenbrock, 3), x0: [-1.2, 1, 0.5] }, { optimizer: 'bfgs', seed: 5, maxGenerations: 40 }],
  ];
  it.each(cases)(
    '%s: a run stopped after k generations and resumed from its JSON checkpoint ends as an uninterrupted one',
    async (_name, objective, space, options) => {
      const whole = await run(objective, space, options);
      expect(whole.generations).toBe(40);

      const first = new Minimization(localEvaluator(objective), space, { ...options, maxGenerations: 13 });
      const committed: string[] = [];
      first.on('generation', () => committed.push(JSON.stringify(first.checkpoint())));
      await first.run();
      expect(committed).toHaveLength(13);
      // A restarted manager reads the last committed generation back.
      const checkpoint = JSON.parse(committed.at(-1)!) as MinimizeCheckpoint;
      expect(checkpoint.generations).toBe(13);
      const rest = await run(objective, space, { ...options, resume: checkpoint });
      expect(untimed(rest)).toEqual(untimed(whole));
    },
  );

  it('refuses a checkpoint of another optimiser, another space or another seed', async () => {
    const m = new Minimization(localEvaluator(f(sphere.f)), { bounds: boxOf(sphere, 2) }, { seed: 1, maxGenerations: 3 });
    await m.run();
    const cp = m.checkpoint()!;
    const ev = localEvaluator(f(sphere.f));
    expect(() => new Minimization(ev, { bounds: boxOf(sphere, 2) }, { optimizer: 'bfgs', resume: cp })).toThrow(
      /checkpoint is of optimizer 'de', this run's is 'bfgs'/,
    );
    expect(() => new Minimization(ev, { bounds: boxOf(sphere, 3) }, { resume: cp })).toThrow(/another space/);
    expect(() => new Minimization(ev, { bounds: boxOf(sphere, 2) }, { resume: cp, seed: 2 })).toThrow(/checkpoint's \(1\)/);
    expect(() => new Minimization(ev, { bounds: boxOf(sphere, 2) }, { optimizer: new RandomSearch(), resume: { ...cp, optimizer: 'random' } })).toThrow(
      /has no restore\(\)/,
    );
    expect(new Minimization(ev, { bounds: boxOf(sphere, 2) }, { optimizer: new RandomSearch() }).checkpoint()).toBeUndefined();
  });
});

describe('localEvaluator', () => {
  it('gives the objective ctx.shared (bytes as a Uint8Array) and runs setup() once first', async () => {
    const calls: string[] = [];
    const module = {
      setup: (ctx: { shared: Readonly<Record<string, unknown>> }) => calls.push(`setup ${(ctx.shared['bytes'] as Uint8Array).length}`),
      default: (x: number[], ctx: { shared: Readonly<Record<string, unknown>>; workerId: string }) => {
        calls.push('run');
        expect(ctx.workerId).toBe('local');
        expect(ctx.shared['bytes']).toBeInstanceOf(Uint8Array);
        return x[0]! * (ctx.shared['scale'] as { k: number }).k;
      },
    };
    const evaluate = localEvaluator(module, { shared: { bytes: Buffer.from([1, 2, 3]), scale: { k: 2 } } });
    const signal = new AbortController().signal;
    expect(await evaluate([[1], [2]], { generation: 0, signal, errors: 'fail' })).toEqual([2, 4]);
    expect(await evaluate([[3]], { generation: 1, signal, errors: 'fail' })).toEqual([6]);
    expect(calls).toEqual(['setup 3', 'run', 'run', 'run']);
  });
});
