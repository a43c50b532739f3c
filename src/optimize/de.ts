import { InvalidOptionError } from '../errors.js';
import { SeededRandom, type RandomState } from '../util/rng.js';
import { describeValue, expectInteger, expectNumber } from '../util/validate.js';
import type { CurrentPopulation, JsonValue, Optimizer, OptimizerConfig, Population, ResolvedSpace } from './types.js';

/** Mutation strategies of {@link DifferentialEvolution} (all with binomial crossover). */
export const DeStrategy = {
  /** DE/rand/1/bin: `v = x[r0] + F·(x[r1] − x[r2])`. Robust, explores most. */
  RAND1: 'rand1bin',
  /** DE/best/1/bin: `v = x[best] + F·(x[r1] − x[r2])`. Converges fastest (SciPy's default). */
  BEST1: 'best1bin',
  /** DE/current-to-best/1/bin: `v = x[i] + F·(x[best] − x[i]) + F·(x[r1] − x[r2])`. */
  CURRENT_TO_BEST1: 'currentToBest1bin',
} as const;

/** One of the values of {@link DeStrategy}. */
export type DeStrategy = (typeof DeStrategy)[keyof typeof DeStrategy];

/** Options of {@link DifferentialEvolution}. The population size is the run's option `populationSize`. */
export interface DifferentialEvolutionOptions {
  /** Mutation strategy. @default 'currentToBest1bin' */
  readonly strategy?: DeStrategy;
  /**
   * The mutation factor F: a number in (0, 2], or `[min, max]` for dithering (a fresh F drawn
   * uniformly from that range, see `dither`).
   * @default [0.5, 1]
   */
  readonly mutation?: number | readonly [number, number];
  /** With a dithered `mutation`: a new F for each generation (`'generation'`, SciPy's way) or for each member (`'member'`). @default 'generation' */
  readonly dither?: 'generation' | 'member';
  /** Crossover probability CR in [0, 1]: the chance that a parameter comes from the mutant. @default 0.7 */
  readonly crossover?: number;
  /**
   * What happens to a mutant's parameter outside its bounds: `'resample'` draws it uniformly
   * within the bounds (SciPy's way: it also keeps diversity, which helps a lot on deceptive
   * functions such as Schwefel's), `'reflect'` mirrors it back inside (repeatedly, as in a hall of
   * mirrors: it stays near where it was heading).
   * @default 'resample'
   */
  readonly boundary?: 'reflect' | 'resample';
  /**
   * Self-adaptive F and CR (jDE, Brest et al. 2006): each member carries its own F and CR
   * (starting at 0.5 and 0.9); a trial redraws them with probability 0.1 (F uniform in
   * [0.1, 1], CR in [0, 1]) and the values survive with the trial that beats its target. The
   * options `mutation`, `dither` and `crossover` are then unused. Robust across separable and
   * non-separable functions without tuning (see bench/optimize-quality.ts).
   * @default true, unless `mutation`, `dither` or `crossover` is given
   */
  readonly selfAdaptive?: boolean;
  /** Initial population: Latin hypercube (each parameter's range cut in N strata, one member in each) or uniform random. @default 'latinhypercube' */
  readonly init?: 'latinhypercube' | 'random';
}

/** The default population size for `dimension` parameters: max(10, 4 × dimension) (tuned, see bench/optimize-quality.ts). */
export function defaultDePopulationSize(dimension: number): number {
  return Math.max(10, 4 * dimension);
}

interface DeState {
  readonly kind: 'de';
  readonly version: 1;
  readonly dimension: number;
  readonly rng: RandomState;
  readonly population: number[][];
  readonly costs: number[];
  readonly trials: number[][] | null;
  /** jDE only: F and CR of the members and of the pending trials. */
  readonly adaptive?: { readonly f: number[]; readonly cr: number[]; readonly trialF: number[]; readonly trialCr: number[] };
}

const STRATEGIES: readonly string[] = Object.values(DeStrategy);

/**
 * Differential evolution (Storn & Price), generational ("deferred" updating: a whole population of
 * trial vectors is proposed at once, so they are evaluated in parallel): strategies DE/rand/1/bin,
 * DE/best/1/bin and DE/current-to-best/1/bin, dithered or self-adaptive (jDE) F and CR, bounds by
 * re-sampling or reflection, a Latin-hypercube initial population (the space's `x0` replaces its
 * first member) and integer parameters (rounded at evaluation).
 *
 * The defaults (current-to-best/1/bin, jDE self-adaptation, max(10, 4n) members, re-sampling)
 * were tuned on sphere, Rosenbrock, Rastrigin, Ackley, Griewank and Schwefel in 10 dimensions
 * at 2,000 and 10,000 evaluations per parameter, against SciPy's `differential_evolution`
 * (bench/optimize-quality.ts). Classic DE/rand/1/bin with dithered F:
 * `new DifferentialEvolution({ strategy: 'rand1bin', mutation: [0.5, 1] })`.
 *
 * Internally members live in the unit cube; integer parameter `i` maps `[0, 1]` onto
 * `[lower − ½, upper + ½]` and is rounded, so each integer value gets the same share.
 *
 * @example
 * const de = new DifferentialEvolution({ strategy: 'rand1bin', mutation: [0.5, 1], crossover: 0.9 }); // fixed CR, dithered F
 */
export class DifferentialEvolution implements Optimizer {
  readonly name = 'de';
  readonly #strategy: DeStrategy;
  readonly #fMin: number;
  readonly #fMax: number;
  readonly #ditherMember: boolean;
  readonly #cr0: number;
  readonly #resample: boolean;
  readonly #lhs: boolean;
  readonly #jde: boolean;
  #rng = new SeededRandom(0);
  #requestedSize: number | undefined;
  #space: ResolvedSpace | undefined;
  #size = 0;
  #pop: number[][] = [];
  #costs: number[] = [];
  #trials: number[][] | undefined;
  /** The members and the trials as points of the space (rounded at integer parameters). */
  #popX: number[][] = [];
  #trialX: number[][] = [];
  /** jDE: each member's F and CR, and those of the pending trials. */
  #f: number[] = [];
  #cr: number[] = [];
  #trialF: number[] = [];
  #trialCr: number[] = [];
  #boxLo: number[] = [];
  #boxWidth: number[] = [];
  // Plain (unfrozen) copies of the space's arrays for the hot loops: V8 reads frozen arrays slower.
  #lower: number[] = [];
  #upper: number[] = [];
  #integer: boolean[] = [];

  constructor(options: DifferentialEvolutionOptions = {}) {
    const strategy: unknown = options.strategy ?? DeStrategy.CURRENT_TO_BEST1;
    if (typeof strategy !== 'string' || !STRATEGIES.includes(strategy)) {
      throw new InvalidOptionError(`Expected \`strategy\` to be one of ${STRATEGIES.map((s) => `'${s}'`).join(', ')}, got ${describeValue(strategy)}`);
    }
    this.#strategy = strategy as DeStrategy;
    const mutation: unknown = options.mutation ?? [0.5, 1];
    if (Array.isArray(mutation)) {
      const [lo, hi] = mutation as unknown[];
      if (mutation.length !== 2) throw new InvalidOptionError(`Expected \`mutation\` to be a number or [min, max], got ${describeValue(mutation)}`);
      expectNumber('mutation[0]', lo, Number.MIN_VALUE, 2);
      expectNumber('mutation[1]', hi, lo, 2);
      this.#fMin = lo;
      this.#fMax = hi;
    } else {
      expectNumber('mutation', mutation, Number.MIN_VALUE, 2);
      this.#fMin = this.#fMax = mutation;
    }
    const dither: unknown = options.dither ?? 'generation';
    if (dither !== 'generation' && dither !== 'member')
      throw new InvalidOptionError(`Expected \`dither\` to be 'generation' or 'member', got ${describeValue(dither)}`);
    this.#ditherMember = dither === 'member';
    const cr = options.crossover ?? 0.7;
    expectNumber('crossover', cr, 0, 1);
    this.#cr0 = cr;
    const boundary: unknown = options.boundary ?? 'resample';
    if (boundary !== 'reflect' && boundary !== 'resample') {
      throw new InvalidOptionError(`Expected \`boundary\` to be 'reflect' or 'resample', got ${describeValue(boundary)}`);
    }
    this.#resample = boundary === 'resample';
    const init: unknown = options.init ?? 'latinhypercube';
    if (init !== 'latinhypercube' && init !== 'random')
      throw new InvalidOptionError(`Expected \`init\` to be 'latinhypercube' or 'random', got ${describeValue(init)}`);
    this.#lhs = init === 'latinhypercube';
    const adaptive: unknown = options.selfAdaptive ?? (options.mutation === undefined && options.dither === undefined && options.crossover === undefined);
    if (typeof adaptive !== 'boolean') throw new InvalidOptionError(`Expected \`selfAdaptive\` to be a boolean, got ${describeValue(adaptive)}`);
    this.#jde = adaptive;
  }

  /** Seeds the generator; takes the population size (at least 5). */
  configure(config: OptimizerConfig): void {
    if (config.populationSize !== undefined) expectInteger('populationSize', config.populationSize, 5);
    this.#rng = new SeededRandom(config.seed);
    this.#requestedSize = config.populationSize;
  }

  #setSpace(space: ResolvedSpace): void {
    this.#space = space;
    this.#size = this.#requestedSize ?? defaultDePopulationSize(space.dimension);
    this.#boxLo = space.lower.map((lo, i) => (space.integer[i] === true ? lo - 0.5 : lo));
    this.#boxWidth = space.upper.map((hi, i) => (space.integer[i] === true ? hi + 0.5 : hi) - (this.#boxLo[i] as number));
    this.#lower = [...space.lower];
    this.#upper = [...space.upper];
    this.#integer = [...space.integer];
  }

  /** The initial population: Latin hypercube (or uniform), with `space.x0` as member 0. */
  start(space: ResolvedSpace): Population {
    this.#setSpace(space);
    const n = space.dimension;
    const np = this.#size;
    const pop = Array.from({ length: np }, () => new Array<number>(n).fill(0));
    for (let j = 0; j < n; j++) {
      const strata = this.#lhs ? this.#rng.shuffle(Array.from({ length: np }, (_, i) => i)) : undefined;
      for (let i = 0; i < np; i++) (pop[i] as number[])[j] = strata === undefined ? this.#rng.next() : ((strata[i] as number) + this.#rng.next()) / np;
    }
    if (space.x0 !== undefined) pop[0] = space.x0.map((v, j) => (v - (this.#boxLo[j] as number)) / (this.#boxWidth[j] as number));
    this.#pop = [];
    this.#costs = [];
    this.#trials = pop;
    this.#f = new Array<number>(np).fill(0.5);
    this.#cr = new Array<number>(np).fill(0.9);
    this.#popX = [];
    this.#trialX = pop.map((u) => this.#toPoint(u));
    return this.#trialX.map((x) => [...x]);
  }

  /** Records the costs: the initial population's, or the trials' (each replaces its target when no worse). */
  update(population: readonly (readonly number[])[], costs: readonly number[]): void {
    const trials = this.#trials;
    if (trials === undefined) throw new Error('DifferentialEvolution.update() called without a pending population');
    if (costs.length !== trials.length || population.length !== trials.length) {
      throw new Error(`DifferentialEvolution.update() got ${costs.length} costs for a population of ${trials.length}`);
    }
    if (this.#pop.length === 0) {
      this.#pop = trials;
      this.#popX = this.#trialX;
      this.#costs = [...costs];
    } else {
      for (let i = 0; i < trials.length; i++) {
        const c = costs[i] as number;
        if (c <= (this.#costs[i] as number)) {
          this.#pop[i] = trials[i] as number[];
          this.#popX[i] = this.#trialX[i] as number[];
          this.#costs[i] = c;
          if (this.#jde) {
            this.#f[i] = this.#trialF[i] as number;
            this.#cr[i] = this.#trialCr[i] as number;
          }
        }
      }
    }
    this.#trials = undefined;
  }

  /** The trial population of the next generation. DE never stops by itself: the runner's rules end it. */
  next(): Population {
    const n = this.#space?.dimension ?? 0;
    const pop = this.#pop;
    const costs = this.#costs;
    const np = pop.length;
    if (np === 0) throw new Error('DifferentialEvolution.next() called before the initial population was evaluated');
    const rng = this.#rng;
    const rand1 = this.#strategy === DeStrategy.RAND1;
    const best1 = this.#strategy === DeStrategy.BEST1;
    const jde = this.#jde;
    let best = 0;
    for (let i = 1; i < np; i++) if ((costs[i] as number) < (costs[best] as number)) best = i;
    const xb = pop[best] as number[];
    const generationF = this.#drawF();
    const trials: number[][] = [];
    this.#trialF = [];
    this.#trialCr = [];
    const picked: number[] = [];
    for (let i = 0; i < np; i++) {
      let f = this.#ditherMember ? this.#drawF() : generationF;
      let cr = this.#cr0;
      if (jde) {
        f = rng.next() < 0.1 ? 0.1 + 0.9 * rng.next() : (this.#f[i] as number);
        cr = rng.next() < 0.1 ? rng.next() : (this.#cr[i] as number);
        this.#trialF.push(f);
        this.#trialCr.push(cr);
      }
      this.#distinct(i, rand1 ? 3 : 2, picked);
      const target = pop[i] as number[];
      const a = pop[picked[0] as number] as number[];
      const b = pop[picked[1] as number] as number[];
      const c = rand1 ? (pop[picked[2] as number] as number[]) : target;
      const jRand = rng.int(n);
      const trial: number[] = [];
      for (let j = 0; j < n; j++) {
        const t = target[j] as number;
        if (!(rng.next() < cr || j === jRand)) {
          trial.push(t);
          continue;
        }
        const diff = f * ((a[j] as number) - (b[j] as number));
        let v: number;
        if (rand1) v = (c[j] as number) + diff;
        else if (best1) v = (xb[j] as number) + diff;
        else v = t + f * ((xb[j] as number) - t) + diff;
        trial.push(v >= 0 && v <= 1 ? v : this.#inside(v));
      }
      trials.push(trial);
    }
    this.#trials = trials;
    this.#trialX = trials.map((u) => this.#toPoint(u));
    return this.#trialX.map((x) => [...x]);
  }

  /** The survivors and their costs (read-only views of the optimiser's own arrays: do not modify). */
  current(): CurrentPopulation | undefined {
    if (this.#pop.length === 0) return undefined;
    return { x: this.#popX, costs: this.#costs };
  }

  /** `{ kind: 'de', version, dimension, rng, population, costs, trials }`, in unit-cube coordinates. */
  state(): JsonValue {
    const s: DeState = {
      kind: 'de',
      version: 1,
      dimension: this.#space?.dimension ?? 0,
      rng: this.#rng.state(),
      population: this.#pop.map((u) => [...u]),
      costs: [...this.#costs],
      trials: this.#trials === undefined ? null : this.#trials.map((u) => [...u]),
      ...(this.#jde ? { adaptive: { f: [...this.#f], cr: [...this.#cr], trialF: [...this.#trialF], trialCr: [...this.#trialCr] } } : {}),
    };
    return s as unknown as JsonValue;
  }

  /** Continues from {@link DifferentialEvolution.state}'s output (same space and population size). */
  restore(space: ResolvedSpace, state: JsonValue): void {
    const s = state as unknown as Partial<DeState> | null;
    const bad = (why: string): never => {
      throw new InvalidOptionError(`Cannot restore the differential evolution from this checkpoint: ${why}`);
    };
    if (s === null || typeof s !== 'object' || s.kind !== 'de' || s.version !== 1) bad('it is not a version-1 DE state');
    this.#setSpace(space);
    const st = s as DeState;
    if (st.dimension !== space.dimension) bad(`it has ${st.dimension} parameters, the space ${space.dimension}`);
    const isVectors = (v: unknown): v is number[][] =>
      Array.isArray(v) && v.every((u) => Array.isArray(u) && u.length === space.dimension && u.every((x) => typeof x === 'number'));
    if (!Array.isArray(st.rng) || st.rng.length !== 4) bad('its generator state is malformed');
    if (!isVectors(st.population) || !Array.isArray(st.costs) || st.costs.length !== st.population.length) bad('its population is malformed');
    if (st.trials !== null && !isVectors(st.trials)) bad('its trial population is malformed');
    const size = st.population.length > 0 ? st.population.length : (st.trials?.length ?? 0);
    if (size !== this.#size) bad(`its population has ${size} members, this run's ${this.#size} (option populationSize)`);
    this.#rng = SeededRandom.fromState(st.rng);
    this.#pop = st.population.map((u) => [...u]);
    this.#costs = [...st.costs];
    this.#trials = st.trials === null ? undefined : st.trials.map((u) => [...u]);
    this.#popX = this.#pop.map((u) => this.#toPoint(u));
    this.#trialX = this.#trials === undefined ? [] : this.#trials.map((u) => this.#toPoint(u));
    if (this.#jde) {
      const a = st.adaptive;
      if (a === undefined || !Array.isArray(a.f) || a.f.length !== size || !Array.isArray(a.cr) || a.cr.length !== size)
        return bad('it has no self-adaptive F and CR (option selfAdaptive)');
      this.#f = [...a.f];
      this.#cr = [...a.cr];
      this.#trialF = [...a.trialF];
      this.#trialCr = [...a.trialCr];
    }
  }

  #drawF(): number {
    return this.#fMin === this.#fMax ? this.#fMin : this.#rng.uniform(this.#fMin, this.#fMax);
  }

  /** `k` distinct member indices, all different from `i`, into `out`. */
  #distinct(i: number, k: number, out: number[]): void {
    out.length = 0;
    const np = this.#pop.length;
    while (out.length < k) {
      const r = this.#rng.int(np);
      if (r !== i && !out.includes(r)) out.push(r);
    }
  }

  /** Brings a unit-cube coordinate back into [0, 1]. */
  #inside(v: number): number {
    if (v >= 0 && v <= 1) return v;
    if (this.#resample || !Number.isFinite(v)) return this.#rng.next();
    const m = Math.abs(v) % 2; // reflection has period 2
    return m <= 1 ? m : 2 - m;
  }

  #toPoint(u: readonly number[]): number[] {
    const lower = this.#lower;
    const upper = this.#upper;
    const integer = this.#integer;
    const boxLo = this.#boxLo;
    const boxWidth = this.#boxWidth;
    const x = new Array<number>(u.length);
    for (let j = 0; j < u.length; j++) {
      let v = (boxLo[j] as number) + (u[j] as number) * (boxWidth[j] as number);
      if (integer[j] === true) v = Math.round(v);
      const lo = lower[j] as number;
      const hi = upper[j] as number;
      x[j] = (v < lo ? lo : v > hi ? hi : v) + 0; // + 0: no -0 from Math.round(-0.3)
    }
    return x;
  }
}
