import { describe, expect, it } from 'vitest';
import { Bfgs, Minimization, localEvaluator, resolveSpace } from '../../../src/optimize/index.js';
import { InvalidOptionError } from '../../../src/errors.js';
import { rosenbrock, sphere } from '../../../bench/test-functions.js';

const bfgs = (f: (x: number[]) => number, bounds: number[][], x0: number[], options: ConstructorParameters<typeof Bfgs>[0] = {}) =>
  new Minimization(localEvaluator(f), { bounds, x0 }, { optimizer: new Bfgs(options), maxEvaluations: 50_000 }).run();

describe('Bfgs', () => {
  it('finds the minimum of a 10-D sphere in a few iterations', async () => {
    const r = await bfgs(
      sphere.f,
      Array.from({ length: 10 }, () => [-5, 5]),
      Array.from({ length: 10 }, (_, i) => i / 3 - 1.5),
    );
    expect(r.reason).toBe('optimizer');
    expect(r.converged).toBe(true);
    expect(r.fun).toBeLessThan(1e-12);
    expect(r.generations).toBeLessThan(20);
  });

  it.each(['central', 'forward'] as const)('finds the minimum of the 2-D Rosenbrock function from (-1.2, 1) (%s differences)', async (gradient) => {
    const r = await bfgs(
      rosenbrock.f,
      [
        [-5, 5],
        [-5, 5],
      ],
      [-1.2, 1],
      { gradient },
    );
    expect(r.converged).toBe(true);
    expect(r.x[0]).toBeCloseTo(1, 4);
    expect(r.x[1]).toBeCloseTo(1, 4);
    expect(r.fun).toBeLessThan(1e-8);
  });

  it('respects the bounds: a minimum outside the box is found on its edge', async () => {
    // (x - 3)² + (y + 1)² on [0, 2] × [0, 5]: the constrained minimum is (2, 0), both parameters at a bound.
    const seen: number[][] = [];
    const f = (x: number[]): number => {
      seen.push(x);
      return (x[0]! - 3) ** 2 + (x[1]! + 1) ** 2;
    };
    const r = await bfgs(
      f,
      [
        [0, 2],
        [0, 5],
      ],
      [1, 4],
    );
    expect(r.converged).toBe(true);
    expect(r.x).toEqual([2, 0]);
    for (const [a, b] of seen) {
      expect(a).toBeGreaterThanOrEqual(0);
      expect(a).toBeLessThanOrEqual(2);
      expect(b).toBeGreaterThanOrEqual(0);
      expect(b).toBeLessThanOrEqual(5);
    }
  });

  it('proposes parallel generations: x and 2n difference points, then line-search steps, then 2n points', () => {
    const space = resolveSpace({
      bounds: [
        [-5, 5],
        [-5, 5],
        [-5, 5],
      ],
      x0: [1, 2, 3],
    });
    const opt = new Bfgs({ lineSearchPoints: 4 });
    opt.configure({ seed: 0, populationSize: undefined });
    const first = opt.start(space);
    expect(first).toHaveLength(1 + 6);
    expect(first[0]).toEqual([1, 2, 3]);
    opt.update(first, first.map(sphere.f));
    const line = opt.next() as number[][];
    expect(line).toHaveLength(4);
    opt.update(line, line.map(sphere.f));
    expect(opt.next()).toHaveLength(6);
    const forward = new Bfgs({ gradient: 'forward' });
    forward.configure({ seed: 0, populationSize: undefined });
    expect(forward.start(space)).toHaveLength(1 + 3);
  });

  it('saves and restores its state: a restored copy continues exactly as the original', () => {
    const space = resolveSpace({
      bounds: [
        [-5, 5],
        [-5, 5],
        [-5, 5],
      ],
      x0: [-1.2, 1, 0.5],
    });
    const f = rosenbrock.f as (x: number[]) => number;
    const run = (opt: Bfgs, pop: number[][], generations: number): number[][][] => {
      const seen: number[][][] = [];
      for (let g = 0; g < generations; g++) {
        opt.update(pop, pop.map(f));
        const next = opt.next();
        if (!Array.isArray(next)) break;
        seen.push(next);
        pop = next;
      }
      return seen;
    };
    const a = new Bfgs();
    a.configure({ seed: 0, populationSize: undefined });
    const whole = run(a, a.start(space), 30);

    const b = new Bfgs();
    b.configure({ seed: 0, populationSize: undefined });
    const head = run(b, b.start(space), 11);
    const c = new Bfgs();
    c.configure({ seed: 0, populationSize: undefined });
    c.restore(space, JSON.parse(JSON.stringify(b.state())));
    const tail = run(c, head[head.length - 1]!, 19);
    expect(whole.length).toBeGreaterThan(20);
    expect([...head, ...tail]).toEqual(whole);
  });

  it('refuses integer parameters and bad options', () => {
    const opt = new Bfgs();
    opt.configure({ seed: 0, populationSize: undefined });
    expect(() => opt.start(resolveSpace({ bounds: [[0, 9]], names: ['k'], integer: ['k'] }))).toThrow(
      /'bfgs' optimizer needs continuous parameters, but k is integer/,
    );
    expect(() => new Bfgs({ gradient: 'backward' as 'forward' })).toThrow(InvalidOptionError);
    expect(() => new Bfgs({ lineSearchPoints: 0 })).toThrow(/`lineSearchPoints`/);
    expect(() => new Bfgs({ gtol: -1 })).toThrow(/`gtol`/);
  });
});
