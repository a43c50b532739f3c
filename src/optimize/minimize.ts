import { EventEmitter } from 'node:events';
import { FarmAbortError, InvalidCostError, InvalidOptionError } from '../errors.js';
import { describeValue, expectInteger, expectNumber } from '../util/validate.js';
import { Bfgs, type BfgsOptions } from './bfgs.js';
import { DifferentialEvolution, type DifferentialEvolutionOptions } from './de.js';
import { checkPopulation, resolveSpace } from './space.js';
import type { Evaluator, JsonValue, Optimizer, OptimizerDone, Population, ResolvedSpace, Space } from './types.js';

/**
 * The convergence rules on the optimiser's current population (see {@link Optimizer.current}) and
 * on the best cost. Each is checked after every generation; the first that holds ends the run
 * with `reason` set to its name (`'tolerance.fun'`, …) and `converged: true`.
 */
export interface ToleranceOptions {
  /**
   * Rule `'tolerance.fun'` (the population's cost spread, as SciPy's `tol`): holds when the
   * current population has at least 2 members and `std(costs) ≤ fun · |mean(costs)| + funAbs`
   * (population standard deviation). `0` (with `funAbs: 0`) holds only when all costs are equal.
   * @default 1e-8
   */
  readonly fun?: number;
  /** The absolute part of rule `'tolerance.fun'` (SciPy's `atol`), in cost units. @default 0 */
  readonly funAbs?: number;
  /**
   * Rule `'tolerance.x'` (the population's spread in parameter space): holds when the current
   * population has at least 2 members and, for every parameter i, `max − min` of its values over
   * the population `≤ x · (hi_i − lo_i)`.
   * @default off
   */
  readonly x?: number;
  /**
   * Rule `'tolerance.improvement'` (stagnation): holds when, after at least `window` generations,
   * the best cost improved over the last `window` generations by at most
   * `improvement · max(1, |best|)`. `0` means "did not improve at all in `window` generations".
   * @default off
   */
  readonly improvement?: number;
  /** Generations over which rule `'tolerance.improvement'` looks. @default 20 */
  readonly window?: number;
}

/** Which rule ended a run. */
export type StopReason = 'target' | 'tolerance.fun' | 'tolerance.x' | 'tolerance.improvement' | 'maxGenerations' | 'maxEvaluations' | 'maxTimeMs' | 'optimizer';

/** Options of {@link Minimization} (the optimisation core; the farm's options are added by `minimize`). */
export interface MinimizeOptions {
  /**
   * `'de'` ({@link DifferentialEvolution}), `'bfgs'` ({@link Bfgs}) or your own {@link Optimizer}.
   * @default 'de'
   */
  readonly optimizer?: 'de' | 'bfgs' | Optimizer;
  /** Options of the built-in optimiser named by `optimizer` (JSON, so a service can pass them on). */
  readonly optimizerOptions?: DifferentialEvolutionOptions | BfgsOptions;
  /** Members per population, for optimisers that have one (DE: at least 5). @default DE: max(10, 4 × dimension) */
  readonly populationSize?: number;
  /**
   * Seed of the optimiser's random generator: the same seed, space and options give the same
   * result, whatever the order in which evaluations complete. Without one a random seed is drawn
   * (and reported in the result, to replay the run).
   */
  readonly seed?: number;
  /** Stop after this many generations (the initial population counts as one). @default 1000 */
  readonly maxGenerations?: number;
  /** Never evaluate more points than this: a generation that would go past it is not started. @default no limit */
  readonly maxEvaluations?: number;
  /**
   * Stop when this much time has passed, in ms: the generation in flight is abandoned (its results
   * unused) and the best point so far is the result. Runs limited by time are not reproducible.
   * @default no limit
   */
  readonly maxTimeMs?: number;
  /** Convergence rules on the population (a number is shorthand for `{ fun: number }`). @default { fun: 1e-8 } */
  readonly tolerance?: number | ToleranceOptions;
  /** Stop (converged) as soon as a cost at most this is found. @default none */
  readonly target?: number;
  /**
   * A member whose objective threw, or returned something other than a finite number: `'fail'`
   * ends the run (it rejects with the objective's error, or with {@link InvalidCostError}), and
   * `'penalty'` gives it the cost `penalty` instead (counted in the result's `penalized`).
   * @default 'fail'
   */
  readonly invalidCost?: 'fail' | 'penalty';
  /** The cost given to an invalid member under `invalidCost: 'penalty'` (finite). @default Number.MAX_VALUE */
  readonly penalty?: number;
  /** Aborts the run: `run()` rejects with {@link FarmAbortError}; `best` keeps the best point found. */
  readonly signal?: AbortSignal;
  /** Continue a run from its checkpoint (see {@link Minimization.checkpoint}) instead of starting anew. */
  readonly resume?: MinimizeCheckpoint;
}

/** One entry per generation in {@link MinimizeResult.history}. */
export interface HistoryEntry {
  /** Generation index (0 is the initial population). */
  readonly generation: number;
  /** Points evaluated so far. */
  readonly evaluations: number;
  /** Best cost so far. */
  readonly fun: number;
  /** Time since the run started, in ms. */
  readonly elapsedMs: number;
}

/** The best point found. */
export interface BestPoint {
  readonly x: readonly number[];
  readonly fun: number;
  /** The generation in which it was evaluated. */
  readonly generation: number;
}

/** What a run ends with. */
export interface MinimizeResult {
  /** The best point found (over every point evaluated). */
  readonly x: number[];
  /** Its cost. */
  readonly fun: number;
  /** Points evaluated (penalised ones included). */
  readonly evaluations: number;
  /** Generations evaluated (the initial population counts as one). */
  readonly generations: number;
  /** True when a convergence rule ended the run (`target`, `tolerance.*`, or the optimiser's own); false for a budget. */
  readonly converged: boolean;
  /** The rule that ended the run. */
  readonly reason: StopReason;
  /** What happened, in a sentence. */
  readonly message: string;
  /** The best cost after each generation. */
  readonly history: readonly HistoryEntry[];
  /** The seed used (the option's, or the one drawn). */
  readonly seed: number;
  /** Members given the `penalty` cost. */
  readonly penalized: number;
  /** Duration of the run (with a resumed run: of all its parts), in ms. */
  readonly elapsedMs: number;
}

/** The payload of events `generation`, `improved` and `progress`. */
export interface GenerationEvent {
  /** Index of the generation just evaluated (0 is the initial population). */
  readonly generation: number;
  /** The best cost so far. */
  readonly fun: number;
  /** The best point so far. */
  readonly x: readonly number[];
  /** Points evaluated so far. */
  readonly evaluations: number;
  /** Time since the run started, in ms. */
  readonly elapsedMs: number;
  /** True when this generation lowered the best cost. */
  readonly improved: boolean;
}

/**
 * Events of {@link Minimization}: `generation` after every generation; `improved` when the best
 * cost fell; `progress` (PARK's progress event) when the best cost fell or another 10 % of the
 * budget (the most advanced of maxGenerations, maxEvaluations and maxTimeMs) went by.
 * Listeners run synchronously between generations; one that throws fails the run.
 */
export interface MinimizationEvents {
  generation: [GenerationEvent];
  improved: [GenerationEvent];
  progress: [GenerationEvent];
}

/**
 * A run's state after a generation, as JSON data: give it back as option `resume` (with the same
 * objective, space and optimiser options) and the run continues as if it had not stopped.
 */
export interface MinimizeCheckpoint {
  readonly version: 1;
  /** `Optimizer.name` of the optimiser. */
  readonly optimizer: string;
  /** `Optimizer.state()`. */
  readonly state: JsonValue;
  readonly seed: number;
  /** The space it was taken in (resolved bounds), checked on resume. */
  readonly space: { readonly lower: readonly number[]; readonly upper: readonly number[]; readonly integer: readonly boolean[] };
  readonly generations: number;
  readonly evaluations: number;
  readonly penalized: number;
  readonly elapsedMs: number;
  readonly best: BestPoint;
  readonly history: readonly HistoryEntry[];
  /** Budget tenths already reported by `progress`. */
  readonly milestone: number;
}

interface Resolved {
  readonly optimizer: Optimizer;
  readonly populationSize: number | undefined;
  readonly seed: number;
  readonly maxGenerations: number;
  readonly maxEvaluations: number;
  readonly maxTimeMs: number;
  readonly fun: number;
  readonly funAbs: number;
  readonly xTol: number | undefined;
  readonly improvement: number | undefined;
  readonly window: number;
  readonly target: number;
  readonly penalize: boolean;
  readonly penalty: number;
  readonly signal: AbortSignal | undefined;
  readonly resume: MinimizeCheckpoint | undefined;
}

function expectLimit(name: string, value: unknown, integer: boolean): number {
  if (value === undefined || value === Infinity) return Infinity;
  if (integer) expectInteger(name, value, 1);
  else expectNumber(name, value, 0);
  return value;
}

function isOptimizer(o: unknown): o is Optimizer {
  if (typeof o !== 'object' || o === null) return false;
  const r = o as Record<string, unknown>;
  return typeof r['name'] === 'string' && ['configure', 'start', 'update', 'next'].every((m) => typeof r[m] === 'function');
}

function resolveOptions(options: MinimizeOptions): Resolved {
  if (typeof options !== 'object' || options === null) throw new InvalidOptionError(`Expected the options to be an object, got ${describeValue(options)}`);
  const given: unknown = options.optimizer ?? 'de';
  const optimizerOptions: unknown = options.optimizerOptions;
  if (optimizerOptions !== undefined && (typeof optimizerOptions !== 'object' || optimizerOptions === null)) {
    throw new InvalidOptionError(`Expected \`optimizerOptions\` to be an object, got ${describeValue(optimizerOptions)}`);
  }
  let optimizer: Optimizer;
  if (given === 'de') optimizer = new DifferentialEvolution(optimizerOptions);
  else if (given === 'bfgs') optimizer = new Bfgs(optimizerOptions);
  else if (isOptimizer(given)) {
    if (optimizerOptions !== undefined)
      throw new InvalidOptionError('`optimizerOptions` applies to the built-in optimizers only: pass options to your optimizer directly');
    optimizer = given;
  } else {
    throw new InvalidOptionError(
      `Expected \`optimizer\` to be 'de', 'bfgs' or an Optimizer (name, configure, start, update, next), got ${describeValue(given)}`,
    );
  }
  if (options.populationSize !== undefined) expectInteger('populationSize', options.populationSize, 1);
  const resume = options.resume;
  let seed: number;
  if (options.seed !== undefined) {
    expectInteger('seed', options.seed, Number.MIN_SAFE_INTEGER);
    seed = options.seed;
  } else seed = resume?.seed ?? Math.floor(Math.random() * 2 ** 32);
  if (resume !== undefined && resume.seed !== seed) {
    throw new InvalidOptionError(`Expected \`seed\` to be the checkpoint's (${resume.seed}) when resuming, got ${describeValue(options.seed)}`);
  }
  const tol: unknown = options.tolerance ?? {};
  const t: ToleranceOptions = typeof tol === 'number' ? { fun: tol } : (tol as ToleranceOptions);
  if (typeof t !== 'object' || t === null) throw new InvalidOptionError(`Expected \`tolerance\` to be a number or an object, got ${describeValue(tol)}`);
  const fun = t.fun ?? 1e-8;
  expectNumber('tolerance.fun', fun, 0);
  const funAbs = t.funAbs ?? 0;
  expectNumber('tolerance.funAbs', funAbs, 0);
  if (t.x !== undefined) expectNumber('tolerance.x', t.x, 0);
  if (t.improvement !== undefined) expectNumber('tolerance.improvement', t.improvement, 0);
  const window = t.window ?? 20;
  expectInteger('tolerance.window', window, 1);
  const target = options.target ?? -Infinity;
  if (options.target !== undefined && (typeof target !== 'number' || Number.isNaN(target))) {
    throw new InvalidOptionError(`Expected \`target\` to be a number, got ${describeValue(target)}`);
  }
  const invalid: unknown = options.invalidCost ?? 'fail';
  if (invalid !== 'fail' && invalid !== 'penalty')
    throw new InvalidOptionError(`Expected \`invalidCost\` to be 'fail' or 'penalty', got ${describeValue(invalid)}`);
  const penalty = options.penalty ?? Number.MAX_VALUE;
  expectNumber('penalty', penalty, -Number.MAX_VALUE);
  const signal: unknown = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new InvalidOptionError(`Expected \`signal\` to be an AbortSignal, got ${describeValue(signal)}`);
  if (resume !== undefined && (typeof resume !== 'object' || resume === null || resume.version !== 1)) {
    throw new InvalidOptionError(`Expected \`resume\` to be a version-1 checkpoint from Minimization.checkpoint(), got ${describeValue(resume)}`);
  }
  return {
    optimizer,
    populationSize: options.populationSize,
    seed,
    maxGenerations: options.maxGenerations === undefined ? 1000 : expectLimit('maxGenerations', options.maxGenerations, true),
    maxEvaluations: expectLimit('maxEvaluations', options.maxEvaluations, true),
    maxTimeMs: expectLimit('maxTimeMs', options.maxTimeMs, false),
    fun,
    funAbs,
    xTol: t.x,
    improvement: t.improvement,
    window,
    target,
    penalize: invalid === 'penalty',
    penalty,
    signal: signal,
    resume,
  };
}

const copy = (p: readonly (readonly number[])[]): number[][] => p.map((x) => [...x]);
const TIME_UP = Symbol('time up');

/**
 * One minimisation: drives an {@link Optimizer} over a {@link Space}, generation by generation,
 * computing each population's costs through an {@link Evaluator} (in-process, or `pool.map` on a
 * farm), until a stopping rule holds. The rules live here, not in the optimisers (PARK's
 * generalised convergence conditions): `target`, `tolerance.fun`, `tolerance.x`,
 * `tolerance.improvement`, `maxGenerations`, `maxEvaluations`, `maxTimeMs`, and the optimiser's
 * own "nothing more to propose" (`reason: 'optimizer'`). Checked after every generation in that
 * order (`maxEvaluations` when the next population is known: a generation that would exceed it is
 * not started).
 *
 * Reproducible: the optimiser alone consumes the seeded generator, and costs come back in
 * population order, so the same seed gives the same result whatever the order in which
 * evaluations complete, or how many workers compute them.
 *
 * Validation happens in the constructor (it throws {@link InvalidOptionError} naming the field);
 * `run()` rejects with the objective's error, {@link InvalidCostError} or {@link FarmAbortError}.
 *
 * @example
 * const sphere = (x: number[]) => x.reduce((s, v) => s + v * v, 0);
 * const m = new Minimization(localEvaluator(sphere), { bounds: [[-5, 5], [-5, 5]] }, { seed: 1, maxEvaluations: 2000 });
 * m.on('improved', (e) => console.log(`generation ${e.generation}: ${e.fun}`));
 * const { x, fun, reason } = await m.run();
 */
export class Minimization extends EventEmitter<MinimizationEvents> {
  readonly #evaluate: Evaluator;
  readonly #space: ResolvedSpace;
  readonly #o: Resolved;
  #running: Promise<MinimizeResult> | undefined;
  #generations = 0;
  #evaluations = 0;
  #penalized = 0;
  #elapsedBefore = 0;
  #startedAt = 0;
  #best: BestPoint | undefined;
  #history: HistoryEntry[] = [];
  #milestone = 0;
  #state: JsonValue | undefined;

  constructor(evaluate: Evaluator, space: Space, options: MinimizeOptions = {}) {
    super();
    if (typeof evaluate !== 'function') throw new InvalidOptionError(`Expected the evaluator to be a function, got ${describeValue(evaluate)}`);
    this.#evaluate = evaluate;
    this.#space = resolveSpace(space);
    this.#o = resolveOptions(options);
    const cp = this.#o.resume;
    if (cp !== undefined) {
      if (cp.optimizer !== this.#o.optimizer.name) {
        throw new InvalidOptionError(`Cannot resume: the checkpoint is of optimizer '${cp.optimizer}', this run's is '${this.#o.optimizer.name}'`);
      }
      const sameSpace =
        Array.isArray(cp.space?.lower) &&
        cp.space.lower.length === this.#space.dimension &&
        this.#space.lower.every(
          (v, i) => v === cp.space.lower[i] && this.#space.upper[i] === cp.space.upper[i] && this.#space.integer[i] === cp.space.integer[i],
        );
      if (!sameSpace) throw new InvalidOptionError('Cannot resume: the checkpoint was taken in another space (bounds or integer parameters differ)');
      if (this.#o.optimizer.restore === undefined) throw new InvalidOptionError(`Cannot resume: optimizer '${cp.optimizer}' has no restore()`);
    }
  }

  /** The best point found so far (also after a failed or aborted run), or undefined before the first generation. */
  get best(): BestPoint | undefined {
    return this.#best;
  }

  /**
   * The run's state after its last completed generation, as JSON data (give it as option `resume`
   * to continue), or undefined before the first generation or when the optimiser has no `state()`.
   * Take it in a `generation` listener to commit every generation.
   */
  checkpoint(): MinimizeCheckpoint | undefined {
    if (this.#state === undefined || this.#best === undefined) return undefined;
    return {
      version: 1,
      optimizer: this.#o.optimizer.name,
      state: this.#state,
      seed: this.#o.seed,
      space: { lower: [...this.#space.lower], upper: [...this.#space.upper], integer: [...this.#space.integer] },
      generations: this.#generations,
      evaluations: this.#evaluations,
      penalized: this.#penalized,
      elapsedMs: this.#elapsed(),
      best: { x: [...this.#best.x], fun: this.#best.fun, generation: this.#best.generation },
      history: [...this.#history],
      milestone: this.#milestone,
    };
  }

  /** Runs to the end (once: later calls return the same promise). */
  run(): Promise<MinimizeResult> {
    this.#running ??= this.#run();
    return this.#running;
  }

  #elapsed(): number {
    return this.#elapsedBefore + (this.#startedAt === 0 ? 0 : performance.now() - this.#startedAt);
  }

  async #run(): Promise<MinimizeResult> {
    const o = this.#o;
    const opt = o.optimizer;
    const signal = o.signal;
    if (signal?.aborted === true) throw new FarmAbortError('The minimization was aborted before it started', { cause: signal.reason });
    this.#startedAt = performance.now();
    opt.configure({ seed: o.seed, populationSize: o.populationSize });
    let population: Population | undefined;
    const cp = o.resume;
    if (cp !== undefined) {
      (opt.restore as NonNullable<Optimizer['restore']>).call(opt, this.#space, cp.state);
      this.#generations = cp.generations;
      this.#evaluations = cp.evaluations;
      this.#penalized = cp.penalized;
      this.#elapsedBefore = cp.elapsedMs;
      this.#best = { x: [...cp.best.x], fun: cp.best.fun, generation: cp.best.generation };
      this.#history = [...cp.history];
      this.#milestone = cp.milestone;
      this.#state = cp.state;
    } else {
      population = opt.start(this.#space);
      checkPopulation(population, this.#space, opt.name);
      if (population.length > o.maxEvaluations) {
        throw new InvalidOptionError(
          `Expected \`maxEvaluations\` (${o.maxEvaluations}) to allow at least the initial population (${population.length} members): raise it or lower populationSize`,
        );
      }
    }

    // One controller for the evaluations: the user's abort, or the time budget running out.
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (Number.isFinite(o.maxTimeMs)) {
      timer = setTimeout(() => controller.abort(TIME_UP), Math.max(0, o.maxTimeMs - this.#elapsed()));
      timer.unref();
    }
    try {
      for (;;) {
        if (population !== undefined) {
          const costs = await this.#evaluateGeneration(population, controller.signal);
          if (costs === undefined)
            return this.#finish('maxTimeMs', false, `The time budget (maxTimeMs = ${o.maxTimeMs}) ran out during generation ${this.#generations}`);
          opt.update(population, costs);
          this.#afterGeneration(population, costs);
        }
        const stop = this.#checkRules();
        if (stop !== undefined) return stop;
        const next = opt.next();
        if (!Array.isArray(next)) {
          const done = next as Partial<OptimizerDone> | null;
          if (done === null || typeof done !== 'object' || done.done !== true) {
            throw new InvalidOptionError(
              `Optimizer '${opt.name}' returned ${describeValue(next)} from next(): expected a population or { done: true, converged, message }`,
            );
          }
          return this.#finish(
            'optimizer',
            done.converged === true,
            typeof done.message === 'string' ? done.message : `Optimizer '${opt.name}' has nothing more to propose`,
          );
        }
        checkPopulation(next, this.#space, opt.name);
        if (this.#evaluations + next.length > o.maxEvaluations) {
          return this.#finish(
            'maxEvaluations',
            false,
            `The evaluation budget (maxEvaluations = ${o.maxEvaluations}) does not allow the next generation (${this.#evaluations} done, ${next.length} more needed)`,
          );
        }
        population = next;
      }
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** The costs of `population` (validated, penalties applied), or undefined when the time ran out. */
  async #evaluateGeneration(population: Population, signal: AbortSignal): Promise<number[] | undefined> {
    const generation = this.#generations;
    let settle: (() => void) | undefined;
    const aborted = new Promise<typeof TIME_UP | FarmAbortError>((resolve) => {
      settle = (): void => resolve(signal.reason === TIME_UP ? TIME_UP : new FarmAbortError('The minimization was aborted', { cause: signal.reason }));
      if (signal.aborted) settle();
      else signal.addEventListener('abort', settle, { once: true });
    });
    const evaluation = Promise.resolve().then(() => this.#evaluate(copy(population), { generation, signal, errors: this.#o.penalize ? 'collect' : 'fail' }));
    // An evaluation abandoned on abort may still reject later: that is expected, not unhandled.
    evaluation.catch(() => undefined);
    let raw: unknown;
    try {
      raw = await Promise.race([evaluation, aborted]);
    } catch (err) {
      // An evaluator that rejects because the run was aborted (or ran out of time): the abort wins.
      if (!signal.aborted) throw err;
      raw = undefined;
    } finally {
      signal.removeEventListener('abort', settle as () => void);
    }
    if (raw === TIME_UP) return undefined;
    if (raw instanceof FarmAbortError) throw raw;
    if (signal.aborted) {
      if (signal.reason === TIME_UP) return undefined;
      throw new FarmAbortError('The minimization was aborted', { cause: signal.reason });
    }
    const values = raw as readonly unknown[];
    if (!Array.isArray(values) || values.length !== population.length) {
      throw new InvalidOptionError(
        `The evaluator returned ${Array.isArray(values) ? `${values.length} costs` : describeValue(values)} for generation ${generation} of ${population.length} members: expected one cost per member, in population order`,
      );
    }
    return values.map((v: unknown, index) => {
      if (typeof v === 'number' && Number.isFinite(v)) return v;
      if (this.#o.penalize) {
        this.#penalized++;
        return this.#o.penalty;
      }
      const x = population[index] as number[];
      if (v instanceof Error) throw v;
      throw new InvalidCostError(
        `The objective returned ${describeValue(v)} for member ${index} of generation ${generation} (x = ${JSON.stringify(x)}): a cost must be a finite number ` +
          `(or set invalidCost: 'penalty', with taskfarm optimize --invalid-cost penalty, to give such points the penalty cost)`,
        { generation, index, x },
      );
    });
  }

  #afterGeneration(population: Population, costs: readonly number[]): void {
    const generation = this.#generations;
    this.#generations++;
    this.#evaluations += population.length;
    let improved = false;
    for (let i = 0; i < costs.length; i++) {
      const c = costs[i] as number;
      if (this.#best === undefined || c < this.#best.fun) {
        this.#best = { x: [...(population[i] as number[])], fun: c, generation };
        improved = true;
      }
    }
    const best = this.#best as BestPoint;
    const elapsedMs = this.#elapsed();
    this.#history.push({ generation, evaluations: this.#evaluations, fun: best.fun, elapsedMs });
    this.#state = this.#o.optimizer.state?.();
    const tenth = Math.min(10, Math.floor(this.#budgetFraction() * 10 + 1e-9));
    const milestone = tenth > this.#milestone;
    this.#milestone = Math.max(this.#milestone, tenth);
    const event: GenerationEvent = { generation, fun: best.fun, x: [...best.x], evaluations: this.#evaluations, elapsedMs, improved };
    this.emit('generation', event);
    if (improved) this.emit('improved', event);
    if (improved || milestone) this.emit('progress', event);
  }

  #budgetFraction(): number {
    const o = this.#o;
    let f = 0;
    if (Number.isFinite(o.maxGenerations)) f = Math.max(f, this.#generations / o.maxGenerations);
    if (Number.isFinite(o.maxEvaluations)) f = Math.max(f, this.#evaluations / o.maxEvaluations);
    if (Number.isFinite(o.maxTimeMs) && o.maxTimeMs > 0) f = Math.max(f, this.#elapsed() / o.maxTimeMs);
    return f;
  }

  #checkRules(): MinimizeResult | undefined {
    const o = this.#o;
    const best = this.#best as BestPoint;
    if (best.fun <= o.target) return this.#finish('target', true, `Found a cost ${best.fun} ≤ target ${o.target}`);
    const cur = this.#o.optimizer.current?.();
    if (cur !== undefined && cur.costs.length >= 2) {
      // Computed on costs scaled by the largest magnitude, so that penalties near Number.MAX_VALUE do not overflow.
      const m = cur.costs.length;
      const scale = cur.costs.reduce((s, c) => Math.max(s, Math.abs(c)), 0) || 1;
      const meanS = cur.costs.reduce((s, c) => s + c / scale, 0) / m;
      const stdS = Math.sqrt(cur.costs.reduce((s, c) => s + (c / scale - meanS) ** 2, 0) / m);
      const mean = meanS * scale;
      const std = stdS * scale;
      if (stdS <= o.fun * Math.abs(meanS) + o.funAbs / scale) {
        return this.#finish(
          'tolerance.fun',
          true,
          `The population's costs converged: std ${std.toPrecision(3)} ≤ ${o.fun} × |mean ${mean.toPrecision(6)}| + ${o.funAbs}`,
        );
      }
      if (o.xTol !== undefined) {
        const xTol = o.xTol;
        const within = this.#space.lower.every((lo, i) => {
          let min = Infinity;
          let max = -Infinity;
          for (const x of cur.x) {
            min = Math.min(min, x[i] as number);
            max = Math.max(max, x[i] as number);
          }
          return max - min <= xTol * ((this.#space.upper[i] as number) - lo);
        });
        if (within) return this.#finish('tolerance.x', true, `The population converged in parameter space: every parameter's spread ≤ ${xTol} × its range`);
      }
    }
    if (o.improvement !== undefined && this.#history.length > o.window) {
      const then = (this.#history[this.#history.length - 1 - o.window] as HistoryEntry).fun;
      if (then - best.fun <= o.improvement * Math.max(1, Math.abs(best.fun))) {
        return this.#finish(
          'tolerance.improvement',
          true,
          `The best cost improved by ${then - best.fun} over the last ${o.window} generations: ≤ ${o.improvement} × max(1, |${best.fun}|)`,
        );
      }
    }
    if (this.#generations >= o.maxGenerations) return this.#finish('maxGenerations', false, `Reached maxGenerations = ${o.maxGenerations}`);
    if (this.#elapsed() >= o.maxTimeMs) return this.#finish('maxTimeMs', false, `The time budget (maxTimeMs = ${o.maxTimeMs}) ran out`);
    return undefined;
  }

  #finish(reason: StopReason, converged: boolean, message: string): MinimizeResult {
    const best = this.#best;
    if (best === undefined) {
      // Only the time budget can end a run before its first generation completed.
      throw new FarmAbortError(`${message}, before any point was evaluated`);
    }
    return {
      x: [...best.x],
      fun: best.fun,
      evaluations: this.#evaluations,
      generations: this.#generations,
      converged,
      reason,
      message,
      history: [...this.#history],
      seed: this.#o.seed,
      penalized: this.#penalized,
      elapsedMs: this.#elapsed(),
    };
  }
}

/** `new Minimization(evaluate, space, options).run()`, rejecting (not throwing) on bad options. */
export async function minimizeWith(evaluate: Evaluator, space: Space, options: MinimizeOptions = {}): Promise<MinimizeResult> {
  return new Minimization(evaluate, space, options).run();
}
