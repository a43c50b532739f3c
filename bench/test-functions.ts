/**
 * Standard test functions of global optimisation, with their usual domains (the same box in every
 * dimension) and their global minima (all 0). Used by bench/optimize-quality.ts and the tests;
 * bench/scipy-de.py defines the same functions for SciPy.
 */

/** A test function: the cost, its box `[-b, b]` per parameter, and where its minimum (0) is. */
export interface TestFunction {
  readonly name: string;
  readonly f: (x: readonly number[]) => number;
  /** Half-width of the box: each parameter in [-bound, bound]. */
  readonly bound: number;
  /** The global minimiser, as a function of the dimension. */
  readonly argmin: (n: number) => number[];
}

export const sphere: TestFunction = {
  name: 'sphere',
  f: (x) => x.reduce((s, v) => s + v * v, 0),
  bound: 5.12,
  argmin: (n) => new Array<number>(n).fill(0),
};

export const rosenbrock: TestFunction = {
  name: 'rosenbrock',
  f: (x) => {
    let s = 0;
    for (let i = 0; i < x.length - 1; i++) s += 100 * ((x[i + 1] as number) - (x[i] as number) ** 2) ** 2 + (1 - (x[i] as number)) ** 2;
    return s;
  },
  bound: 5,
  argmin: (n) => new Array<number>(n).fill(1),
};

export const rastrigin: TestFunction = {
  name: 'rastrigin',
  f: (x) => 10 * x.length + x.reduce((s, v) => s + v * v - 10 * Math.cos(2 * Math.PI * v), 0),
  bound: 5.12,
  argmin: (n) => new Array<number>(n).fill(0),
};

export const ackley: TestFunction = {
  name: 'ackley',
  f: (x) => {
    const n = x.length;
    const a = x.reduce((s, v) => s + v * v, 0) / n;
    const b = x.reduce((s, v) => s + Math.cos(2 * Math.PI * v), 0) / n;
    return -20 * Math.exp(-0.2 * Math.sqrt(a)) - Math.exp(b) + 20 + Math.E;
  },
  bound: 32.768,
  argmin: (n) => new Array<number>(n).fill(0),
};

export const griewank: TestFunction = {
  name: 'griewank',
  f: (x) => 1 + x.reduce((s, v) => s + v * v, 0) / 4000 - x.reduce((p, v, i) => p * Math.cos(v / Math.sqrt(i + 1)), 1),
  bound: 600,
  argmin: (n) => new Array<number>(n).fill(0),
};

export const schwefel: TestFunction = {
  name: 'schwefel',
  f: (x) => 418.9828872724338 * x.length - x.reduce((s, v) => s + v * Math.sin(Math.sqrt(Math.abs(v))), 0),
  bound: 500,
  argmin: (n) => new Array<number>(n).fill(420.9687463),
};

/** Every test function, by name. */
export const TEST_FUNCTIONS: Readonly<Record<string, TestFunction>> = { sphere, rosenbrock, rastrigin, ackley, griewank, schwefel };

/** `[[-b, b], …]` for `n` parameters. */
export function boxOf(fn: TestFunction, n: number): number[][] {
  return Array.from({ length: n }, () => [-fn.bound, fn.bound]);
}
