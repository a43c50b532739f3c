import { describe, expect, it } from 'vitest';
import { DifferentialEvolution, Minimization, localEvaluator, resolveSpace, type DeStrategy, type Optimizer, type Space } from '../../../src/optimize/index.js';
import { InvalidOptionError } from '../../../src/errors.js';
import { rosenbrock, sphere, boxOf } from '../../../bench/test-functions.js';

/** Drives an optimiser by hand for `generations` generations; returns every population proposed. */
function drive(opt: Optimizer, f: (x: number[]) => number, generations: number, from?: { population: number[][] }): number[][][] {
  const seen: number[][][] = [];
  let pop = from?.population;
  for (let g = 0; g < generations; g++) {
    if (pop === undefined) throw new Error('no population');
    seen.push(pop);
    opt.update(pop, pop.map(f));
    const next = opt.next();
    if (!Array.isArray(next)) break;
    pop = next;
  }
  return seen;
}

describe('DifferentialEvolution', () => {
  const strategies: DeStrategy[] = ['best1bin', 'rand1bin', 'currentToBest1bin'];
  it.each(strategies)('%s finds the minimum of a 5-D sphere', async (strategy) => {
    const r = await new Minimization(
      localEvaluator(sphere.f),
      { bounds: boxOf(sphere, 5) },
      { optimizer: new DifferentialEvolution({ strategy }), seed: 3, maxGenerations: 600, target: 1e-10 },
    ).run();
    expect(r.reason).toBe('target');
    expect(r.fun).toBeLessThanOrEqual(1e-10);
    for (const v of r.x) expect(Math.abs(v)).toBeLessThan(1e-4);
  });

  it('finds the minimum of a 4-D Rosenbrock function', async () => {
    const r = await new Minimization(
      localEvaluator(rosenbrock.f),
      { bounds: boxOf(rosenbrock, 4) },
      { seed: 1, maxEvaluations: 40_000, tolerance: { fun: 0 } },
    ).run();
    expect(r.fun).toBeLessThan(1e-6);
    for (const v of r.x) expect(v).toBeCloseTo(1, 2);
  });

  it('finds the global minimum of a 1-D multimodal function, not one of its local minima', async () => {
    // sin(x) + sin(10x/3) on [2.7, 7.5]: three local minima; the global one is at x ≈ 5.145735, f ≈ -1.899599.
    const f = (x: number[]): number => Math.sin(x[0]!) + Math.sin((10 * x[0]!) / 3);
    for (const seed of [1, 2, 3, 4, 5]) {
      const r = await new Minimization(localEvaluator(f), { bounds: [[2.7, 7.5]] }, { seed, maxGenerations: 200 }).run();
      expect(r.x[0]).toBeCloseTo(5.145735, 4);
      expect(r.fun).toBeCloseTo(-1.899599, 5);
    }
  });

  it('handles integer parameters: every point proposed is integral there', async () => {
    const space: Space = {
      bounds: [
        [-10, 10],
        [0, 20],
      ],
      names: ['x', 'k'],
      integer: ['k'],
    };
    const seen: number[] = [];
    const f = (x: number[]): number => {
      seen.push(x[1]!);
      return (x[0]! - 3.3) ** 2 + (x[1]! - 7.4) ** 2;
    };
    const r = await new Minimization(localEvaluator(f), space, { seed: 2, maxGenerations: 100 }).run();
    expect(r.x[1]).toBe(7);
    expect(r.x[0]).toBeCloseTo(3.3, 3);
    expect(seen.every(Number.isInteger)).toBe(true);
  });

  it('gives the end values of an integer range the same share as the others', () => {
    // The box of an integer parameter is widened by ½ on each side: 21 Latin-hypercube strata over
    // [-0.5, 20.5] round to each of 0…20 exactly once.
    const de = new DifferentialEvolution();
    de.configure({ seed: 5, populationSize: 21 });
    const pop = de.start(resolveSpace({ bounds: [[0, 20]], integer: [0] }));
    expect(pop.map((x) => x[0]).sort((a, b) => a! - b!)).toEqual(Array.from({ length: 21 }, (_, i) => i));
  });

  it('starts from a Latin hypercube: one member in each of the N strata of every parameter, x0 as member 0', () => {
    const space = resolveSpace({
      bounds: [
        [0, 10],
        [-1, 1],
        [100, 200],
      ],
      x0: [1, 0, 150],
    });
    const de = new DifferentialEvolution();
    de.configure({ seed: 7, populationSize: 12 });
    const pop = de.start(space);
    expect(pop).toHaveLength(12);
    expect(pop[0]).toEqual([1, 0, 150]);
    const noGuess = new DifferentialEvolution();
    noGuess.configure({ seed: 7, populationSize: 12 });
    const lhs = noGuess.start(
      resolveSpace({
        bounds: [
          [0, 10],
          [-1, 1],
          [100, 200],
        ],
      }),
    );
    for (let j = 0; j < 3; j++) {
      const lo = space.lower[j]!;
      const w = space.upper[j]! - lo;
      const strata = lhs.map((x) => Math.floor(((x[j]! - lo) / w) * 12)).sort((a, b) => a - b);
      expect(strata).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    }
  });

  it.each(['reflect', 'resample'] as const)('keeps every trial inside the bounds (%s)', (boundary) => {
    const space = resolveSpace({
      bounds: [
        [0, 1],
        [-5, -4],
      ],
    });
    const de = new DifferentialEvolution({ boundary, mutation: 2 });
    de.configure({ seed: 1, populationSize: 8 });
    const pops = drive(de, (x) => -x[0]! - x[1]!, 50, { population: de.start(space) });
    for (const pop of pops)
      for (const x of pop) {
        expect(x[0]).toBeGreaterThanOrEqual(0);
        expect(x[0]).toBeLessThanOrEqual(1);
        expect(x[1]).toBeGreaterThanOrEqual(-5);
        expect(x[1]).toBeLessThanOrEqual(-4);
      }
  });

  it('saves and restores its state: a restored copy continues exactly as the original', () => {
    const space = resolveSpace({ bounds: boxOf(rosenbrock, 3) });
    const f = rosenbrock.f as (x: number[]) => number;
    for (const options of [{}, { strategy: 'rand1bin', dither: 'member', boundary: 'reflect' }] as const) {
      const a = new DifferentialEvolution(options);
      a.configure({ seed: 11, populationSize: 15 });
      const whole = drive(a, f, 40, { population: a.start(space) });

      const b = new DifferentialEvolution(options);
      b.configure({ seed: 11, populationSize: 15 });
      let pop = b.start(space);
      for (let g = 0; g < 15; g++) {
        b.update(pop, pop.map(f));
        pop = b.next();
      }
      // Serialise after update(), as the runner does, then continue in a new object.
      const c = new DifferentialEvolution(options);
      b.update(pop, pop.map(f));
      const saved = JSON.parse(JSON.stringify(b.state())) as ReturnType<DifferentialEvolution['state']>;
      c.configure({ seed: 999, populationSize: 15 }); // the seed comes from the state, not from configure
      c.restore(space, saved);
      const rest = drive(c, f, 24, { population: c.next() });
      expect(rest).toEqual(whole.slice(16));
    }
  });

  it('refuses a checkpoint of another size or kind', () => {
    const space = resolveSpace({ bounds: boxOf(sphere, 2) });
    const a = new DifferentialEvolution();
    a.configure({ seed: 1, populationSize: 10 });
    const pop = a.start(space);
    a.update(pop, pop.map(sphere.f));
    const b = new DifferentialEvolution();
    b.configure({ seed: 1, populationSize: 12 });
    expect(() => b.restore(space, a.state())).toThrow(/10 members, this run's 12/);
    expect(() => b.restore(space, { kind: 'bfgs' })).toThrow(InvalidOptionError);
  });

  it('validates its options', () => {
    expect(() => new DifferentialEvolution({ strategy: 'best2' as DeStrategy })).toThrow(/`strategy`/);
    expect(() => new DifferentialEvolution({ mutation: 3 })).toThrow(/`mutation`/);
    expect(() => new DifferentialEvolution({ mutation: [0.9, 0.5] })).toThrow(/`mutation\[1\]`/);
    expect(() => new DifferentialEvolution({ crossover: 1.5 })).toThrow(/`crossover`/);
    expect(() => new DifferentialEvolution().configure({ seed: 1, populationSize: 3 })).toThrow(/`populationSize` to be an integer >= 5/);
  });
});
