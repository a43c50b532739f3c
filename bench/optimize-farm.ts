/**
 * Optimisation on a warm pool (issue 13): parallel efficiency of a generation, the per-generation
 * overhead, and concurrent optimisations filling each other's gaps. Used by bench/run.ts (section
 * `optimize`). The objective is an inline stage that busy-waits `ctx.shared.ms` and returns the
 * sphere function's cost; the optimiser is DE with a fixed population and no convergence rule, so
 * every run evaluates exactly `generations` populations.
 */
import { FarmMinimization, FarmPool, bundleProgram, minimize, type FarmStats } from '../src/index.js';

/** The objective: `ms` of CPU work (from `ctx.shared.ms`), then Σ x². */
const spinCost = (x: number[], ctx: { shared: Readonly<Record<string, unknown>> }): number => {
  const ms = ctx.shared['ms'] as number;
  if (ms > 0) {
    const end = performance.now() + ms;
    while (performance.now() < end) {
      // CPU work, like a real objective
    }
  }
  let s = 0;
  for (const v of x) s += v * v;
  return s;
};

const space = (n: number): { bounds: number[][] } => ({ bounds: Array.from({ length: n }, () => [-5, 5]) });

/** The slowest worker's compute time in a generation's job (ms): its evaluations × their mean time. */
function slowestComputeMs(stats: FarmStats): number {
  return Math.max(0, ...stats.workers.map((w) => (w.completed > 0 && w.avgTaskMs > 0 ? w.completed * w.avgTaskMs : 0)));
}

/** Generation times of one run on `pool` (ms; generation 0, which recruits and installs, left out) and the slowest worker's compute time in each. */
async function timedRun(
  pool: FarmPool,
  o: { population: number; taskMs: number; generations: number; seed: number },
): Promise<{ generationMs: number[]; slowestMs: number[] }> {
  const run = new FarmMinimization(spinCost, space(5), {
    pool,
    shared: { ms: o.taskMs },
    seed: o.seed,
    populationSize: o.population,
    maxGenerations: o.generations,
    tolerance: 0,
    speculation: false,
  });
  const slowest: number[] = [];
  const ends: number[] = [];
  run.on('evaluated', (e) => slowest.push(slowestComputeMs(e.stats)));
  run.on('generation', () => ends.push(performance.now()));
  await run.run();
  const generationMs = ends.slice(1).map((t, i) => t - ends[i]!);
  return { generationMs, slowestMs: slowest.slice(1) };
}

/**
 * Parallel efficiency: `population` members of a `taskMs` objective on the pool's workers (2 × 1
 * thread in the setting). Ideal generation time = population × taskMs / threads.
 */
export async function parallelEfficiency(
  peers: string[],
  o: { population: number; taskMs: number; generations: number },
): Promise<{ generationMs: number[]; slowestMs: number[]; idealMs: number; threads: number }> {
  const pool = new FarmPool({ peers, localFallback: false });
  try {
    await minimize(spinCost, space(5), { pool, shared: { ms: o.taskMs }, seed: 0, populationSize: 10, maxGenerations: 2 }); // recruit, install
    const threads = pool.workers().reduce((n, w) => n + w.threads, 0);
    const r = await timedRun(pool, { ...o, seed: 1 });
    return { ...r, idealMs: (o.population * o.taskMs) / threads, threads };
  } finally {
    await pool.close();
  }
}

/**
 * Per-generation overhead on a warm pool with a ~0 cost objective: a generation's wall time (the
 * optimiser's step, the job, its round trips), beside the same population as a bare `pool.map` of
 * the same bundled program (the pool's share of it).
 */
export async function generationOverhead(
  peers: string[],
  o: { population: number; generations: number },
): Promise<{ generationMs: number[]; mapMs: number[] }> {
  const pool = new FarmPool({ peers, localFallback: false });
  try {
    await minimize(spinCost, space(5), { pool, shared: { ms: 0 }, seed: 0, populationSize: o.population, maxGenerations: 5 });
    const { generationMs } = await timedRun(pool, { population: o.population, taskMs: 0, generations: o.generations, seed: 2 });
    const program = await bundleProgram(spinCost);
    const population = Array.from({ length: o.population }, (_, i) => [i / o.population, 1, 2, 3, 4]);
    const mapMs: number[] = [];
    for (let g = 0; g < o.generations; g++) {
      const t0 = performance.now();
      await pool.map(program, population, { shared: { ms: 0 } });
      mapMs.push(performance.now() - t0);
    }
    return { generationMs, mapMs: mapMs.slice(1) };
  } finally {
    await pool.close();
  }
}

/** Evaluation rate (evaluations/s) of `runs` optimisations at once on one pool, and of one alone. */
export async function concurrentRate(
  peers: string[],
  o: { population: number; taskMs: number; generations: number; runs: number },
): Promise<{ one: number; many: number }> {
  const pool = new FarmPool({ peers, localFallback: false });
  const once = (seed: number): Promise<unknown> =>
    minimize(spinCost, space(5), { pool, shared: { ms: o.taskMs }, seed, populationSize: o.population, maxGenerations: o.generations, tolerance: 0 });
  try {
    await once(0); // recruit, install, learn the task time
    let t0 = performance.now();
    await once(1);
    const one = (o.population * o.generations) / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    await Promise.all(Array.from({ length: o.runs }, (_, k) => once(10 + k)));
    const many = (o.runs * o.population * o.generations) / ((performance.now() - t0) / 1000);
    return { one, many };
  } finally {
    await pool.close();
  }
}
