import { InvalidOptionError } from '../errors.js';
import { describeValue } from '../util/validate.js';
import type { ResolvedSpace, Space } from './types.js';

function fail(field: string, expected: string, value: unknown): never {
  throw new InvalidOptionError(`Expected \`${field}\` to be ${expected}, got ${describeValue(value)}`);
}

/**
 * Validates a {@link Space} and resolves it: names default to `x[i]`, integer parameters get
 * their bounds rounded inwards, `x0` is checked against the bounds. Throws
 * {@link InvalidOptionError} naming the field (e.g. `space.bounds[2]`).
 */
export function resolveSpace(space: Space): ResolvedSpace {
  if (typeof space !== 'object' || space === null) fail('space', 'an object `{ bounds: [[lo, hi], …] }`', space);
  const bounds: unknown = space.bounds;
  if (!Array.isArray(bounds) || bounds.length === 0) fail('space.bounds', 'a non-empty array of `[lo, hi]` pairs', bounds);
  const n = bounds.length;

  const names: string[] = [];
  if (space.names !== undefined) {
    const given: unknown = space.names;
    if (!Array.isArray(given) || given.length !== n) fail('space.names', `an array of ${n} names (one per bound)`, given);
    const seen = new Set<string>();
    given.forEach((name: unknown, i) => {
      if (typeof name !== 'string' || name.length === 0) fail(`space.names[${i}]`, 'a non-empty string', name);
      if (seen.has(name)) fail(`space.names[${i}]`, 'a name not used by another parameter', name);
      seen.add(name);
      names.push(name);
    });
  } else {
    for (let i = 0; i < n; i++) names.push(`x[${i}]`);
  }
  const label = (i: number): string => (space.names !== undefined ? ` (${names[i]})` : '');

  const integer: boolean[] = new Array<boolean>(n).fill(false);
  if (space.integer !== undefined) {
    const given: unknown = space.integer;
    if (!Array.isArray(given)) fail('space.integer', 'an array of parameter indices or names', given);
    given.forEach((p: unknown, k) => {
      let i: number;
      if (typeof p === 'number' && Number.isInteger(p) && p >= 0 && p < n) i = p;
      else if (typeof p === 'string' && names.includes(p)) i = names.indexOf(p);
      else fail(`space.integer[${k}]`, `a parameter index in [0, ${n - 1}] or one of space.names`, p);
      integer[i] = true;
    });
  }

  const lower: number[] = [];
  const upper: number[] = [];
  bounds.forEach((b: unknown, i) => {
    const field = `space.bounds[${i}]${label(i)}`;
    if (!Array.isArray(b) || b.length !== 2) fail(field, '`[lo, hi]`', b);
    const [lo, hi] = b as unknown[];
    if (typeof lo !== 'number' || !Number.isFinite(lo) || typeof hi !== 'number' || !Number.isFinite(hi)) fail(field, '`[lo, hi]` with finite numbers', b);
    if (!(lo < hi)) fail(field, '`[lo, hi]` with lo < hi', b);
    if (integer[i] === true) {
      const l = Math.ceil(lo);
      const h = Math.floor(hi);
      if (l > h) fail(field, 'bounds containing at least one integer (the parameter is in `space.integer`)', b);
      lower.push(l);
      upper.push(h);
    } else {
      lower.push(lo);
      upper.push(hi);
    }
  });

  let x0: number[] | undefined;
  if (space.x0 !== undefined) {
    const given: unknown = space.x0;
    if (!Array.isArray(given) || given.length !== n) fail('space.x0', `an array of ${n} numbers (one per bound)`, given);
    x0 = given.map((v: unknown, i) => {
      const field = `space.x0[${i}]${label(i)}`;
      if (typeof v !== 'number' || !Number.isFinite(v)) fail(field, 'a finite number', v);
      const lo = (bounds[i] as number[])[0] as number;
      const hi = (bounds[i] as number[])[1] as number;
      if (v < lo || v > hi) fail(field, `within its bounds [${lo}, ${hi}]`, v);
      return integer[i] === true ? Math.min(upper[i] as number, Math.max(lower[i] as number, Math.round(v))) : v;
    });
  }

  return Object.freeze({
    dimension: n,
    lower: Object.freeze(lower),
    upper: Object.freeze(upper),
    names: Object.freeze(names),
    integer: Object.freeze(integer),
    x0: x0 === undefined ? undefined : Object.freeze(x0),
  });
}

/**
 * Checks that `population` (from an optimiser) is a non-empty array of points in `space`: throws
 * {@link InvalidOptionError} naming the optimiser, the member and the parameter otherwise.
 */
export function checkPopulation(population: unknown, space: ResolvedSpace, who: string): asserts population is number[][] {
  if (!Array.isArray(population) || population.length === 0) {
    throw new InvalidOptionError(
      `Optimizer '${who}' proposed ${describeValue(population)} as a population: expected a non-empty array of parameter vectors ` +
        `(return { done: true, converged, message } from next() to stop)`,
    );
  }
  const { dimension, lower, upper, integer, names } = space;
  // Plain loops: this runs on every generation.
  for (let m = 0; m < population.length; m++) {
    const x: unknown = population[m];
    if (!Array.isArray(x) || x.length !== dimension) {
      throw new InvalidOptionError(`Optimizer '${who}' proposed member ${m} = ${describeValue(x)}: expected an array of ${dimension} numbers`);
    }
    for (let i = 0; i < dimension; i++) {
      const v: unknown = x[i];
      const lo = lower[i] as number;
      const hi = upper[i] as number;
      if (typeof v === 'number' && v >= lo && v <= hi && (integer[i] !== true || Number.isInteger(v))) continue;
      throw new InvalidOptionError(
        `Optimizer '${who}' proposed member ${m} with ${names[i]} = ${describeValue(v)}: expected ${integer[i] === true ? 'an integer' : 'a number'} in [${lo}, ${hi}]`,
      );
    }
  }
}
