/**
 * minimize() on a FarmPool, on real daemons over real sockets (127.0.0.1): known minima, one job per
 * generation with nothing re-sent after the first, seeded runs identical on 1 and 3 workers and in
 * this process, a worker SIGKILLed mid-generation, concurrent optimisations sharing one pool,
 * events, bad input, a user-written optimiser. The objective is test/fixtures/optimize-objective.ts
 * (configured by `shared.config`), or an inline function.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import {
  FarmMinimization,
  FarmPool,
  InvalidCostError,
  InvalidOptionError,
  InvalidStageError,
  FarmAbortError,
  Minimization,
  SeededRandom,
  TaskError,
  bundleProgram,
  localEvaluator,
  minimize,
  type EvaluatedEvent,
  type FarmMinimizeResult,
  type GenerationEvent,
  type MinimizeOptions,
  type MinimizeResult,
  type Optimizer,
  type OptimizerConfig,
  type ResolvedSpace,
  type Space,
} from '../../dist/src/index.js';
import { Daemons, fixture, tempDir, until } from '../helpers/daemons.js';
import * as objectiveModule from '../fixtures/optimize-objective.js';
import type { ObjectiveConfig } from '../fixtures/optimize-objective.js';

const objective = fixture('optimize-objective.ts');
const box = (n: number, b: number): number[][] => Array.from({ length: n }, () => [-b, b]);

/** What must be identical between two runs of the same seed (everything but timings). */
function outcome(r: MinimizeResult): unknown {
  return {
    x: r.x,
    fun: r.fun,
    evaluations: r.evaluations,
    generations: r.generations,
    reason: r.reason,
    converged: r.converged,
    penalized: r.penalized,
    history: r.history.map((h) => [h.generation, h.evaluations, h.fun]),
  };
}

/** The same run in this process (the reference). */
function inProcess(space: Space, config: ObjectiveConfig, options: MinimizeOptions): Promise<MinimizeResult> {
  return new Minimization(localEvaluator(objectiveModule, { shared: { config } }), space, options).run();
}

interface Exec {
  tag: string;
  start: number;
  end: number;
  worker: string;
}

function executions(dir: string): Exec[] {
  const out: Exec[] = [];
  for (const f of readdirSync(dir)) {
    if (!f.startsWith('exec-')) continue;
    for (const line of readFileSync(`${dir}/${f}`, 'utf8').split('\n')) if (line.length > 0) out.push(JSON.parse(line) as Exec);
  }
  return out;
}

/** The random search of the README: a user-written Optimizer. */
class RandomSearch implements Optimizer {
  readonly name = 'random';
  #rng = new SeededRandom(0);
  #space!: ResolvedSpace;
  #size = 20;
  configure({ seed, populationSize }: OptimizerConfig): void {
    this.#rng = new SeededRandom(seed);
    this.#size = populationSize ?? 20;
  }
  start(space: ResolvedSpace): number[][] {
    this.#space = space;
    return this.next();
  }
  update(): void {}
  next(): number[][] {
    const { lower, upper, integer } = this.#space;
    return Array.from({ length: this.#size }, () =>
      lower.map((lo, i) => (integer[i] ? lo + this.#rng.int(upper[i]! - lo + 1) : this.#rng.uniform(lo, upper[i]!))),
    );
  }
}

describe('minimize() on a farm', () => {
  const daemons = new Daemons();
  const pools: FarmPool[] = [];
  const dirs: { remove: () => void }[] = [];
  const open = (peers: string[]): FarmPool => {
    const p = new FarmPool({ peers, localFallback: false });
    pools.push(p);
    return p;
  };
  const dir = (): string => {
    const d = tempDir();
    dirs.push(d);
    return d.path;
  };
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.close()));
    await daemons.stopAll();
    for (const d of dirs.splice(0)) d.remove();
  });

  it('finds known minima (sphere, Rosenbrock, a 1-D multimodal function; DE and BFGS), one job per generation, nothing re-sent after the first', async () => {
    const ds = await daemons.start(2);
    const pool = open(ds.map((d) => d.address));
    // Both workers recruited before the first generation: each gets the objective in generation 0.
    await pool.map((x: number) => x, [1, 2, 3, 4]);
    await until('both workers recruited', () => pool.workers().length === 2);

    const sphere = new FarmMinimization(
      objective,
      { bounds: box(4, 5) },
      { pool, shared: { config: { fn: 'sphere' } }, seed: 1, target: 1e-8, maxEvaluations: 20_000 },
    );
    const evaluated: EvaluatedEvent[] = [];
    sphere.on('evaluated', (e) => evaluated.push(e));
    const s = await sphere.run();
    expect(s.reason).toBe('target');
    expect(s.converged).toBe(true);
    expect(s.fun).toBeLessThanOrEqual(1e-8);
    for (const v of s.x) expect(Math.abs(v)).toBeLessThan(1e-3);
    // One job per generation, on both workers; the objective and its shared data went to each worker once.
    expect(s.farm.jobs).toBe(s.generations);
    expect(evaluated.map((e) => e.generation)).toEqual(Array.from({ length: s.generations }, (_, g) => g));
    expect(s.farm.workers.map((w) => w.id).sort()).toEqual(ds.map((d) => d.id).sort());
    expect(s.farm.workers.reduce((n, w) => n + w.evaluations, 0)).toBe(s.evaluations);
    const first = evaluated[0]!.stats.workers;
    expect(first).toHaveLength(2);
    for (const w of first) {
      expect(w.bundlesSent).toBe(1);
      expect(w.sharedBytesSent).toBeGreaterThan(0);
    }
    for (const e of evaluated.slice(1)) {
      for (const w of e.stats.workers) {
        expect(w.bundlesSent).toBe(0);
        expect(w.sharedBytesSent).toBe(0);
        expect(w.cached).toBe(true);
      }
    }
    expect(s.farm.bundlesSent).toBe(2);

    // The same objective and data again on the warm pool: nothing is sent at all.
    const again = await minimize(
      objective,
      { bounds: box(4, 5) },
      { pool, shared: { config: { fn: 'sphere' } }, seed: 2, target: 1e-8, maxEvaluations: 20_000 },
    );
    expect(again.fun).toBeLessThanOrEqual(1e-8);
    expect(again.farm.bundlesSent).toBe(0);
    expect(again.farm.sharedBytesSent).toBe(0);

    const rosen = await minimize(
      objective,
      { bounds: box(2, 5) },
      { pool, shared: { config: { fn: 'rosenbrock' } }, seed: 3, target: 1e-10, maxEvaluations: 20_000 },
    );
    expect(rosen.reason).toBe('target');
    expect(rosen.x[0]).toBeCloseTo(1, 3);
    expect(rosen.x[1]).toBeCloseTo(1, 3);
    expect(rosen.farm.bundlesSent).toBe(0); // same module: only the new shared config was sent

    // 1-D Rastrigin: a local minimum at every integer, the global one at 0.
    const multi = await minimize(
      objective,
      { bounds: [[-5.12, 5.12]] },
      { pool, shared: { config: { fn: 'rastrigin' } }, seed: 4, target: 1e-10, maxEvaluations: 5_000 },
    );
    expect(multi.reason).toBe('target');
    expect(Math.abs(multi.x[0]!)).toBeLessThan(1e-4);

    // BFGS: the finite-difference gradient's 2n points are one parallel generation.
    const bfgs = await minimize(
      objective,
      { bounds: box(2, 5), x0: [-1.2, 1] },
      { pool, optimizer: 'bfgs', shared: { config: { fn: 'rosenbrock' } }, maxEvaluations: 20_000 },
    );
    expect(bfgs.reason).toBe('optimizer');
    expect(bfgs.converged).toBe(true);
    expect(bfgs.x[0]).toBeCloseTo(1, 4);
    expect(bfgs.x[1]).toBeCloseTo(1, 4);
    // minimize leaves a pool it was given open.
    expect(await pool.map((x: number) => x + 1, [1])).toEqual([2]);
  }, 120_000);

  it('a seeded run gives the same result on 1 worker, on 3 workers and in this process', async () => {
    const ds = await daemons.start(3);
    const space = { bounds: box(3, 5.12) };
    const config: ObjectiveConfig = { fn: 'rastrigin', ms: 2 };
    const options = { seed: 11, populationSize: 12, maxGenerations: 12, tolerance: 0 };
    const reference = await inProcess(space, config, options);
    const one = await minimize(objective, space, { ...options, peers: [ds[0]!.address], localFallback: false, shared: { config } });
    const three = await minimize(objective, space, { ...options, peers: ds.map((d) => d.address), localFallback: false, shared: { config } });
    expect(one.farm.workers).toHaveLength(1);
    expect(three.farm.workers.length).toBeGreaterThanOrEqual(2);
    expect(outcome(one)).toEqual(outcome(reference));
    expect(outcome(three)).toEqual(outcome(reference));
    expect(reference.generations).toBe(12);
  }, 120_000);

  it('a worker SIGKILLed mid-generation changes nothing in the result of a seeded run', async () => {
    const ds = await daemons.start(3);
    const pool = open(ds.map((d) => d.address));
    const space = { bounds: box(2, 5.12) };
    const options = { seed: 5, populationSize: 15, maxGenerations: 10, tolerance: 0 };
    const victim = ds[1]!;
    const lost: { id: string; requeued: number }[] = [];
    pool.on('lost', (e) => lost.push({ id: e.worker.id, requeued: e.requeued }));
    let killed = false;
    let poll: NodeJS.Timeout | undefined;
    const run = new FarmMinimization(objective, space, { ...options, pool, shared: { config: { fn: 'rastrigin', ms: 10 } }, speculation: false });
    run.on('generation', (e) => {
      if (e.generation !== 2 || poll !== undefined) return;
      // Kill it while it computes members of generation 3 (evaluations in flight on it).
      poll = setInterval(() => {
        if (killed) return;
        if ((pool.workers().find((w) => w.id === victim.id)?.inFlight ?? 0) > 0) {
          killed = true;
          clearInterval(poll);
          victim.child.kill('SIGKILL');
        }
      }, 1);
    });
    let result: FarmMinimizeResult;
    try {
      result = await run.run();
    } finally {
      clearInterval(poll);
    }
    expect(killed).toBe(true);
    expect(lost.map((l) => l.id)).toContain(victim.id);
    expect(lost.find((l) => l.id === victim.id)!.requeued).toBeGreaterThan(0);
    expect(result.farm.requeued).toBeGreaterThan(0);
    const reference = await inProcess(space, { fn: 'rastrigin' }, options);
    expect(outcome(result)).toEqual(outcome(reference));
  }, 120_000);

  it('concurrent optimisations on one pool: each result as if alone, and each one’s gaps between generations filled with the others’ evaluations', async () => {
    const ds = await daemons.start(2);
    const pool = open(ds.map((d) => d.address));
    const log = dir();
    const space = { bounds: box(2, 5) };
    const runs = ['a', 'b', 'c'].map((tag, k) => ({
      tag,
      config: { fn: k === 1 ? ('rosenbrock' as const) : ('sphere' as const), ms: 5, dir: log, tag },
      options: { seed: 20 + k, populationSize: 6, maxGenerations: 8, tolerance: 0 },
    }));
    const order: string[] = [];
    const results = await Promise.all(
      runs.map((r) =>
        minimize(objective, space, {
          ...r.options,
          pool,
          shared: { config: r.config },
          speculation: false,
          name: r.tag,
          onGeneration: () => order.push(r.tag),
        }),
      ),
    );
    for (let k = 0; k < runs.length; k++) {
      const { dir: _dir, tag: _tag, ...config } = runs[k]!.config;
      expect(outcome(results[k]!)).toEqual(outcome(await inProcess(space, config, runs[k]!.options)));
      // Every run used both workers.
      expect(results[k]!.farm.workers).toHaveLength(2);
    }
    // The runs progressed together: between the first and the last generation of each, the others' generations ended.
    for (const { tag } of runs) {
      const first = order.indexOf(tag);
      const last = order.lastIndexOf(tag);
      expect(order.slice(first, last).some((t) => t !== tag)).toBe(true);
    }
    // Gaps: between two generations of a run (its last evaluation ended, its next population not yet
    // started), the workers evaluated other runs' members.
    const execs = executions(log);
    expect(execs).toHaveLength(3 * 6 * 8);
    for (const { tag } of runs) {
      const mine = execs.filter((e) => e.tag === tag).sort((x, y) => x.start - y.start);
      const others = execs.filter((e) => e.tag !== tag);
      let filled = 0;
      for (let g = 0; g + 1 < 8; g++) {
        const gapStart = Math.max(...mine.slice(g * 6, g * 6 + 6).map((e) => e.end));
        const gapEnd = Math.min(...mine.slice(g * 6 + 6, g * 6 + 12).map((e) => e.start));
        if (others.some((o) => o.start < gapEnd && o.end > gapStart)) filled++;
      }
      expect(filled).toBeGreaterThan(0);
    }
  }, 120_000);

  it('posts events: evaluated then generation after every generation, improved when the best cost fell, progress; the callbacks too', async () => {
    const ds = await daemons.start(2);
    const pool = open(ds.map((d) => d.address));
    const seen: string[] = [];
    const generations: GenerationEvent[] = [];
    const improved: GenerationEvent[] = [];
    const progress: GenerationEvent[] = [];
    const callbacks: number[] = [];
    const run = new FarmMinimization(
      objective,
      { bounds: box(2, 5) },
      {
        pool,
        shared: { config: { fn: 'rosenbrock' } },
        seed: 9,
        populationSize: 10,
        maxGenerations: 20,
        tolerance: 0,
        onImproved: (e) => callbacks.push(e.generation),
      },
    );
    run.on('evaluated', (e) => seen.push(`evaluated ${e.generation}`));
    run.on('generation', (e) => {
      seen.push(`generation ${e.generation}`);
      generations.push(e);
      // The checkpoint after each generation is there (a job service commits it here).
      expect(run.checkpoint()?.generations).toBe(e.generation + 1);
    });
    run.on('improved', (e) => improved.push(e));
    run.on('progress', (e) => progress.push(e));
    const r = await run.run();
    expect(r.reason).toBe('maxGenerations');
    expect(seen).toEqual(Array.from({ length: 20 }, (_, g) => [`evaluated ${g}`, `generation ${g}`]).flat());
    expect(generations.map((e) => e.evaluations)).toEqual(Array.from({ length: 20 }, (_, g) => (g + 1) * 10));
    expect(r.history.map((h) => h.fun)).toEqual(generations.map((e) => e.fun));
    // improved: exactly the generations that lowered the best cost, each lower than the last.
    expect(improved.map((e) => e.generation)).toEqual(generations.filter((e) => e.improved).map((e) => e.generation));
    expect(improved[0]!.generation).toBe(0);
    for (let i = 1; i < improved.length; i++) expect(improved[i]!.fun).toBeLessThan(improved[i - 1]!.fun);
    expect(callbacks).toEqual(improved.map((e) => e.generation));
    // progress: every improvement, and every 10 % of the budget (2 generations of 20).
    for (let g = 1; g < 20; g += 2) expect(progress.some((e) => e.generation === g)).toBe(true);
    expect(generations.at(-1)!.fun).toBe(r.fun);
    expect(run.best?.fun).toBe(r.fun);
  }, 120_000);

  it('bad input gives a clear error: lo > hi, a non-numeric cost, a throwing objective, a missing module, conflicting options; its own pool is closed', async () => {
    const ds = await daemons.start(2);
    const peers = ds.map((d) => d.address);
    // Bounds with lo > hi: rejected before anything runs, naming the parameter.
    const bounds = minimize(
      objective,
      {
        bounds: [
          [0, 1],
          [5, 1],
        ],
        names: ['a', 'width'],
      },
      { peers, localFallback: false },
    );
    await expect(bounds).rejects.toBeInstanceOf(InvalidOptionError);
    await expect(bounds).rejects.toThrow(/space\.bounds\[1\] \(width\).*lo < hi/);
    // A cost that is not a number: InvalidCostError naming the generation, the member and its x.
    const bad = minimize(objective, { bounds: [[-1, 1]] }, { peers, localFallback: false, shared: { config: { fn: 'bad' } }, seed: 1 });
    const err = (await bad.catch((e: unknown) => e)) as InvalidCostError;
    expect(err).toBeInstanceOf(InvalidCostError);
    expect(err.code).toBe('FARM_ERR_INVALID_COST');
    expect(err.x[0]).toBeGreaterThan(0);
    expect(err.message).toContain(`member ${err.index} of generation ${err.generation}`);
    expect(err.message).toContain('"not a cost"');
    // The pool minimize opened is closed: another client recruits both daemons at once.
    const after = open(peers);
    expect(await after.map((x: number) => x * 3, [1, 2, 3, 4])).toEqual([3, 6, 9, 12]);
    await until('both daemons recruited by the next client', () => after.workers().length === 2);
    await after.close();
    // An objective that throws: its TaskError, unless invalidCost is 'penalty'.
    const thrown = minimize(objective, { bounds: [[-1, 1]] }, { peers, localFallback: false, shared: { config: { fn: 'throw' } }, seed: 1 });
    await expect(thrown).rejects.toBeInstanceOf(TaskError);
    await expect(thrown).rejects.toThrow(/RangeError: x\[0\] = .* is out of the model's range/);
    const penalised = await minimize(
      objective,
      { bounds: [[-1, 1]] },
      {
        peers,
        localFallback: false,
        shared: { config: { fn: 'throw' } },
        seed: 1,
        invalidCost: 'penalty',
        maxGenerations: 10,
      },
    );
    expect(penalised.penalized).toBeGreaterThan(0);
    expect(penalised.x[0]).toBeLessThanOrEqual(0);
    // A module that does not exist; an objective of the wrong type; pool options beside a pool; an unknown option.
    await expect(minimize('./no/such/objective.ts', { bounds: [[0, 1]] }, { peers })).rejects.toBeInstanceOf(InvalidStageError);
    await expect(minimize(42 as unknown as string, { bounds: [[0, 1]] }, { peers })).rejects.toThrow(/Expected the objective to be a stage/);
    const pool = open(peers);
    await expect(minimize(objective, { bounds: [[0, 1]] }, { pool, peers })).rejects.toThrow(/Pool options \(`peers`\).*set them on that FarmPool/);
    await expect(minimize(objective, { bounds: [[0, 1]] }, { pool, maxGeneration: 3 } as never)).rejects.toThrow(/Unknown option `maxGeneration`/);
  }, 120_000);

  it('runs a user-written Optimizer on the farm, as in this process', async () => {
    const ds = await daemons.start(2);
    const pool = open(ds.map((d) => d.address));
    const space = { bounds: box(3, 5) };
    const options = { seed: 3, populationSize: 16, maxEvaluations: 16 * 30 };
    const r = await minimize(objective, space, { ...options, pool, optimizer: new RandomSearch(), shared: { config: { fn: 'sphere' } } });
    expect(r.reason).toBe('maxEvaluations');
    expect(r.evaluations).toBe(480);
    expect(r.fun).toBeLessThan(3);
    expect(outcome(r)).toEqual(outcome(await inProcess(space, { fn: 'sphere' }, { ...options, optimizer: new RandomSearch() })));
    // The objective as a BundledProgram (what a job service stores and runs): the same run.
    const bundled = await bundleProgram(objective);
    const b = await minimize(bundled, space, { ...options, pool, optimizer: new RandomSearch(), shared: { config: { fn: 'sphere' } } });
    expect(outcome(b)).toEqual(outcome(r));
    expect(b.farm.bundlesSent).toBe(0); // the same code, already on both workers
  }, 120_000);

  it('runs on local threads with discovery: local (a pool opened for the run and closed at its end)', async () => {
    const r = await minimize(
      objective,
      { bounds: box(2, 5) },
      { discovery: 'local', threads: 1, shared: { config: { fn: 'sphere' } }, seed: 1, target: 1e-6, maxEvaluations: 5000 },
    );
    expect(r.reason).toBe('target');
    expect(r.farm.workers.map((w) => w.id)).toEqual(['local']);
    expect(r.farm.jobs).toBe(r.generations);
  }, 60_000);

  it('an abort (signal) stops the run: FarmAbortError, the best point so far kept, the pool still usable', async () => {
    const ds = await daemons.start(2);
    const pool = open(ds.map((d) => d.address));
    const controller = new AbortController();
    const run = new FarmMinimization(
      objective,
      { bounds: box(2, 5) },
      { pool, shared: { config: { fn: 'sphere', ms: 5 } }, seed: 1, signal: controller.signal },
    );
    run.on('generation', (e) => {
      if (e.generation === 2) controller.abort();
    });
    await expect(run.run()).rejects.toBeInstanceOf(FarmAbortError);
    expect(run.best?.generation).toBeLessThanOrEqual(2);
    expect(pool.jobs()).toHaveLength(0);
    expect(await pool.map((x: number) => x - 1, [1])).toEqual([0]);
  }, 120_000);
});

describe('the fitting example on a farm (client/fit-gaussians.ts)', () => {
  const daemons = new Daemons();
  afterEach(async () => {
    await daemons.stopAll();
  });
  const example = new URL('../../dist/client/fit-gaussians.js', import.meta.url).pathname;
  const small = ['--peaks', '1', '--points', '300', '--max-evaluations', '2000', '--seed', '2'];
  const run = (args: string[]): Promise<{ stdout: string }> => promisify(execFile)(process.execPath, [example, ...args], { timeout: 90_000 });
  /** The result block (the final χ² line without its time, and the table of peaks). */
  const fitted = (out: string): string => out.slice(out.lastIndexOf('\nχ² =')).replace(/ in [\d.]+ s/, '');

  it('fits the same peaks on worker daemons (--peers), the spectrum uploaded once per worker, as on local threads', async () => {
    const ds = await daemons.start(2);
    const farm = await run([...small, '--peers', ds.map((d) => d.address).join(',')]);
    expect(farm.stdout).toMatch(/fitting 4 parameters on the farm at 127\.0\.0\.1/);
    // Each worker got the objective once and the spectrum's (1 + 3 × 300) float64s once.
    expect(farm.stdout).toContain(`de: objective bundles sent 2, spectrum bytes uploaded ${2 * (1 + 3 * 300) * 8}, evaluations requeued 0`);
    expect(farm.stdout).toMatch(/bfgs: objective bundles sent 0, spectrum bytes uploaded 0/);
    for (const d of ds) expect(farm.stdout).toContain(d.id);
    const local = await run([...small, '--threads', '1']);
    expect(local.stdout).toMatch(/on local threads/);
    expect(fitted(local.stdout)).toBe(fitted(farm.stdout));
    const reduced = Number(/χ²\/dof = ([\d.]+)/.exec(farm.stdout)?.[1]);
    expect(reduced).toBeGreaterThan(0.7);
    expect(reduced).toBeLessThan(1.3);
  }, 120_000);
});
