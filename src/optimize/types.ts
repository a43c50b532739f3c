/**
 * The contracts of the optimisation core: the search space, the {@link Optimizer} interface
 * (PARK's configure / start / update / next) and the {@link Evaluator} seam through which a
 * population's costs are computed (in-process now, on a `FarmPool` later).
 */

export type { JsonValue } from '../util/json.js';
import type { JsonValue } from '../util/json.js';

/** A population: one parameter vector (`number[]`, one entry per parameter) per member. */
export type Population = number[][];

/**
 * The search space, as the user gives it.
 *
 * @example
 * const space: Space = { bounds: [[0, 10], [-1, 1], [1, 8]], names: ['amplitude', 'shift', 'order'], integer: ['order'], x0: [5, 0, 2] };
 */
export interface Space {
  /** `[lo, hi]` for each parameter: finite numbers with `lo < hi`. Its length is the dimension. */
  readonly bounds: readonly (readonly number[])[];
  /** Names of the parameters (unique, non-empty), used in messages. @default `x[0]`, `x[1]`, … */
  readonly names?: readonly string[];
  /**
   * The parameters that take only integer values, by index or by name. Their bounds are rounded
   * inwards (`[ceil(lo), floor(hi)]`) and every proposed point has integers there.
   * @default none
   */
  readonly integer?: readonly (number | string)[];
  /** An initial guess, within the bounds: DE puts it in its initial population, BFGS starts from it. */
  readonly x0?: readonly number[];
}

/** A validated {@link Space}: what optimisers receive in {@link Optimizer.start}. Frozen. */
export interface ResolvedSpace {
  /** Number of parameters. */
  readonly dimension: number;
  /** Lower bounds (rounded up for integer parameters). */
  readonly lower: readonly number[];
  /** Upper bounds (rounded down for integer parameters). */
  readonly upper: readonly number[];
  /** Parameter names (the user's, or `x[i]`). */
  readonly names: readonly string[];
  /** `integer[i]` is true when parameter i takes integer values only. */
  readonly integer: readonly boolean[];
  /** The initial guess (rounded at integer parameters), if one was given. */
  readonly x0: readonly number[] | undefined;
}

/** Run-level settings handed to {@link Optimizer.configure} once, before `start` or `restore`. */
export interface OptimizerConfig {
  /** Seed of the run: an optimiser that needs randomness draws it from a generator seeded with this (and nothing else). */
  readonly seed: number;
  /** The population size the user asked for (option `populationSize`), or undefined for the optimiser's default. */
  readonly populationSize: number | undefined;
}

/** What {@link Optimizer.next} returns when the optimiser has nothing more to propose. */
export interface OptimizerDone {
  readonly done: true;
  /** True when the optimiser stopped because it converged (e.g. a small gradient); false when it gave up. */
  readonly converged: boolean;
  /** Why, in a sentence (it becomes the result's `message`). */
  readonly message: string;
}

/** The optimiser's current population and its costs (the survivors, not the last proposals), for the runner's spread rules. */
export interface CurrentPopulation {
  readonly x: readonly (readonly number[])[];
  readonly costs: readonly number[];
}

/**
 * An optimiser, in PARK's shape. The runner ({@link Minimization}) drives it:
 *
 * ```
 * optimizer.configure({ seed, populationSize });
 * population = optimizer.start(space);                 // or optimizer.restore(space, checkpoint)
 * loop:
 *   costs = await evaluate(population);                // in parallel; costs in population order
 *   optimizer.update(population, costs);
 *   if a stopping rule holds: stop                      // the rules live in the runner
 *   population = optimizer.next();                      // or { done: true, ... }
 * ```
 *
 * Contract:
 * - Calls come in that order, one at a time, synchronously; `update` always gets exactly the
 *   population last returned by `start`/`next` (same members, same order) and one finite cost per
 *   member (a member whose objective failed gets the `penalty` cost, or the run fails first).
 * - Every member proposed is an array of `space.dimension` finite numbers within the bounds,
 *   integral at integer parameters, and a population has at least one member; the runner checks
 *   this and fails the run with an {@link InvalidOptionError} naming the member otherwise.
 * - Deterministic: given the same `seed` and the same costs, the same proposals. All randomness
 *   comes from a generator seeded by `configure` (see `SeededRandom` in src/util/rng.ts), consumed
 *   only inside `start`/`next` (never in response to timing).
 * - Nothing more to propose (converged, or stuck): `next()` returns an {@link OptimizerDone}
 *   object; the run ends with `reason: 'optimizer'`.
 * - Optional `state()` / `restore()` make the optimiser resumable: `state()` after `update()`
 *   returns plain JSON data (no aliasing of internal arrays) from which `restore()` on a new,
 *   identically configured instance continues exactly as the original would have.
 *
 * @example A random search in a dozen lines
 * ```ts
 * import { SeededRandom, type Optimizer, type OptimizerConfig, type ResolvedSpace } from 'taskfarm';
 *
 * class RandomSearch implements Optimizer {
 *   readonly name = 'random';
 *   #rng = new SeededRandom(0);
 *   #space!: ResolvedSpace;
 *   #size = 20;
 *   configure({ seed, populationSize }: OptimizerConfig) {
 *     this.#rng = new SeededRandom(seed);
 *     this.#size = populationSize ?? 20;
 *   }
 *   start(space: ResolvedSpace) {
 *     this.#space = space;
 *     return this.next();
 *   }
 *   update() {} // the runner keeps the best point; a random search learns nothing
 *   next() {
 *     const { lower, upper, integer } = this.#space;
 *     return Array.from({ length: this.#size }, () =>
 *       lower.map((lo, i) => (integer[i] ? lo + this.#rng.int(upper[i]! - lo + 1) : this.#rng.uniform(lo, upper[i]!))),
 *     );
 *   }
 * }
 * ```
 */
export interface Optimizer {
  /** Short name (`'de'`, `'bfgs'`, …): recorded in checkpoints, checked on restore. */
  readonly name: string;
  /** Prepares the optimiser for a run (PARK's `configure`). Called once, first. */
  configure(config: OptimizerConfig): void;
  /** The initial population for `space`. */
  start(space: ResolvedSpace): Population;
  /** Records the costs of the population last proposed (`costs[i]` is the cost of `population[i]`). */
  update(population: readonly (readonly number[])[], costs: readonly number[]): void;
  /** The next population to evaluate, or {@link OptimizerDone} when there is nothing more to propose. */
  next(): Population | OptimizerDone;
  /**
   * The current population and costs (for DE: the survivors), used by the rules `tolerance.fun` and
   * `tolerance.x`. Without it (or with fewer than 2 members) those rules do not apply.
   */
  current?(): CurrentPopulation | undefined;
  /** The optimiser's whole state after `update()`, as JSON data. */
  state?(): JsonValue;
  /** Continues from `state` (from `state()` of an identically configured optimiser) instead of `start`. */
  restore?(space: ResolvedSpace, state: JsonValue): void;
}

/** What an {@link Evaluator} is told about the population it evaluates. */
export interface EvaluationContext {
  /** Index of the generation (0 is the initial population). */
  readonly generation: number;
  /** Aborted when the run is aborted or its time is up: stop evaluating, the results are not used. */
  readonly signal: AbortSignal;
  /**
   * `'collect'` (option `invalidCost: 'penalty'`): a member whose objective threw gets the error in
   * its place in the returned array. `'fail'`: the evaluator may instead reject with the first error.
   */
  readonly errors: 'fail' | 'collect';
}

/**
 * Computes the costs of a population: resolves with one entry per member, **in population order**
 * (whatever the order in which evaluations completed), each the objective's return value (the
 * runner checks it is a finite number) or an `Error` where the objective threw. For example
 * `(population, { signal, errors }) => pool.map(objective, population, { signal, errors })`.
 */
export type Evaluator = (population: Population, context: EvaluationContext) => Promise<readonly unknown[]>;
