import { describe, expect, it } from 'vitest';
import { InvalidOptionError } from '../../../src/errors.js';
import { FarmPool, resolvePoolOptions } from '../../../src/farm/index.js';
import { FarmMinimization, minimize } from '../../../src/optimize/index.js';

const sphere = (x: number[]): number => x.reduce((s, v) => s + v * v, 0);
const space = { bounds: [[-1, 1]] };

/** The pool's own option names, from its "Unknown option" message. */
function poolOptionNames(): string[] {
  try {
    resolvePoolOptions({ notAnOption: 1 } as never);
  } catch (err) {
    const m = /known options: (.*)$/.exec((err as Error).message);
    if (m !== null) return m[1]!.split(', ');
  }
  throw new Error('resolvePoolOptions did not list its options');
}

describe('FarmMinimization options (no farm needed)', () => {
  it('accepts every option of FarmPool (the list cannot drift from the pool’s)', () => {
    const names = poolOptionNames();
    expect(names.length).toBeGreaterThan(10);
    for (const name of names) expect(() => new FarmMinimization(sphere, space, { [name]: undefined })).not.toThrow();
  });

  it('refuses unknown options, listing the known ones, and pool options beside a pool', async () => {
    expect(() => new FarmMinimization(sphere, space, { populationSiz: 5 } as never)).toThrow(
      /Unknown option `populationSiz`; known options: optimizer, .*populationSize/,
    );
    const pool = new FarmPool({ discovery: 'local', threads: 1 });
    try {
      expect(() => new FarmMinimization(sphere, space, { pool, threads: 2, localFallback: false })).toThrow(
        /Pool options \(`threads`, `localFallback`\) configure the pool minimize opens/,
      );
      expect(() => new FarmMinimization(sphere, space, { pool: {} as FarmPool })).toThrow(/Expected `pool` to be a FarmPool/);
      // cwd is also where the objective is bundled from: allowed with a pool.
      expect(() => new FarmMinimization(sphere, space, { pool, cwd: process.cwd() })).not.toThrow();
    } finally {
      await pool.close();
    }
  });

  it('validates the job options and the callbacks at construction; minimize() rejects rather than throws', async () => {
    expect(() => new FarmMinimization(sphere, space, { priority: 1.5 })).toThrow(InvalidOptionError);
    expect(() => new FarmMinimization(sphere, space, { shared: [] as never })).toThrow(/Expected `shared` to be an object/);
    expect(() => new FarmMinimization(sphere, space, { onImproved: 'log' as never })).toThrow(/Expected `onImproved` to be a function/);
    expect(() => new FarmMinimization(sphere, space, { threads: 0 })).toThrow(/threads/);
    const p = minimize(sphere, { bounds: [[1, 0]] });
    await expect(p).rejects.toBeInstanceOf(InvalidOptionError);
  });

  it('names a shared value that cannot be sent, before any pool is opened', async () => {
    const run = minimize(sphere, space, { discovery: 'local', shared: { data: new Float64Array(4), model: { f: () => 1 } } });
    await expect(run).rejects.toBeInstanceOf(InvalidOptionError);
    await expect(run).rejects.toThrow(/Option `shared\.model`: The shared value cannot be sent to workers: value\.f is/);
  });
});
