/**
 * `minimize(objective, space, options)`: the optimisation core on a {@link FarmPool}. Each
 * generation is one job on the pool (`pool.run(...).compute()`) whose tasks are the population's
 * members; the workers stay recruited between generations, and the objective's code and shared
 * data reach each worker once (the program's key is the same for every generation: the objective
 * is bundled once when the run starts, the shared data snapshot and hashed once).
 *
 * Uses the pool only through its public API (src/farm/index.ts), so a job service can run the same
 * class on its own pool, with a bundled objective it received and a checkpoint to resume from.
 */
import { EventEmitter } from 'node:events';
import { InvalidOptionError } from '../errors.js';
import {
  FarmPool,
  SharedFile,
  bundleProgram,
  resolveJobOptions,
  resolvePoolOptions,
  sharedValue,
  type BundledProgram,
  type FarmPoolOptions,
  type FarmStats,
  type JobOptions,
  type ResolvedPoolOptions,
} from '../farm/index.js';
import type { Stage } from '../skeleton/index.js';
import { describeValue } from '../util/validate.js';
import {
  Minimization,
  type BestPoint,
  type GenerationEvent,
  type MinimizationEvents,
  type MinimizeCheckpoint,
  type MinimizeOptions,
  type MinimizeResult,
} from './minimize.js';
import type { EvaluationContext, Population, Space } from './types.js';

/**
 * The objective on a farm: a stage — a module path or `file:` URL whose default export is
 * `(x: number[], ctx) => cost` (with an optional `setup(ctx)`), an inline self-contained function,
 * or a JJPF-style class — or a program already bundled with `bundleProgram` (what a job service
 * receives). `ctx.shared` carries the option `shared`.
 */
export type FarmObjective = Stage | BundledProgram;

/** The job options of {@link FarmMinimizeOptions}: they apply to every generation's job. */
export type MinimizeJobOptions = Pick<
  JobOptions,
  'name' | 'priority' | 'weight' | 'retries' | 'maxAttempts' | 'maxWorkerLosses' | 'taskTimeoutMs' | 'speculation' | 'shared'
>;

/**
 * Options of {@link minimize} and {@link FarmMinimization}: the optimisation's (see
 * {@link MinimizeOptions}), the jobs' (applied to every generation), `pool`, the event callbacks,
 * and — when no `pool` is given — the options of the pool that is opened for the run and closed
 * at its end (`peers`, `discovery`, `key`, `threads`, `localFallback`, …; see `FarmPoolOptions`).
 */
export interface FarmMinimizeOptions extends MinimizeOptions, MinimizeJobOptions, FarmPoolOptions {
  /**
   * The pool to evaluate on (it is left open). Without one, a pool is opened with the pool options
   * given (defaults as for `TaskFarm`: mDNS discovery, local fallback) and closed when the run ends.
   */
  readonly pool?: FarmPool;
  /**
   * Data the objective reads as `ctx.shared[name]`, shipped once per worker and cached there by
   * content. Snapshot when the run starts (bytes copied, values encoded, hashed once): changing
   * them during the run has no effect. `sharedFile(path)` entries are read from the file.
   * @default {}
   */
  readonly shared?: Readonly<Record<string, unknown>>;
  /**
   * Name of the run: its jobs are named `<name>/g<generation>` in stats and logs.
   * @default 'minimize'
   */
  readonly name?: string;
  /** Called after every generation (event `generation`). */
  readonly onGeneration?: (event: GenerationEvent) => void;
  /** Called when the best cost fell (event `improved`). */
  readonly onImproved?: (event: GenerationEvent) => void;
  /** Called when the best cost fell or another 10 % of the budget went by (event `progress`). */
  readonly onProgress?: (event: GenerationEvent) => void;
}

/** What a run on a farm did on the farm, summed over its generations' jobs. */
export interface FarmSummary {
  /** Jobs run on the pool: one per generation evaluated (plus one abandoned when the time ran out). */
  readonly jobs: number;
  /** Code bundles sent to workers (each worker gets the objective once: later generations send none). */
  readonly bundlesSent: number;
  /** Bytes of shared data uploaded to workers (once per worker that did not have them cached). */
  readonly sharedBytesSent: number;
  /** Evaluations re-queued because their worker was lost. */
  readonly requeued: number;
  /** Backup copies of straggling evaluations. */
  readonly speculated: number;
  /** The workers that evaluated members, with how many evaluations each delivered. */
  readonly workers: readonly { readonly id: string; readonly host: string; readonly evaluations: number }[];
}

/** What a run on a farm ends with: the core's result and what it did on the farm. */
export interface FarmMinimizeResult extends MinimizeResult {
  readonly farm: FarmSummary;
}

/** Payload of the `evaluated` event: a generation's job finished. */
export interface EvaluatedEvent {
  /** Index of the generation whose population was evaluated. */
  readonly generation: number;
  /** Id of its job on the pool. */
  readonly jobId: string;
  /** The job's stats (per worker: evaluations delivered, bundles and shared bytes sent). */
  readonly stats: FarmStats;
}

/** The events of a {@link FarmMinimization}: the core's, and `evaluated` (before `generation`). */
export interface FarmMinimizationEvents extends MinimizationEvents {
  evaluated: [EvaluatedEvent];
}

const CORE_KEYS = [
  'optimizer',
  'optimizerOptions',
  'populationSize',
  'seed',
  'maxGenerations',
  'maxEvaluations',
  'maxTimeMs',
  'tolerance',
  'target',
  'invalidCost',
  'penalty',
  'signal',
  'resume',
] as const;
const JOB_KEYS = ['name', 'priority', 'weight', 'retries', 'maxAttempts', 'maxWorkerLosses', 'taskTimeoutMs', 'speculation', 'shared'] as const;
const OWN_KEYS = ['pool', 'onGeneration', 'onImproved', 'onProgress'] as const;
/** The options of `FarmPool` (checked against resolvePoolOptions by a unit test). `cwd` is also where the objective is bundled from. */
const POOL_OPTION_KEYS = [
  'peers',
  'discovery',
  'farm',
  'interface',
  'key',
  'keyFile',
  'insecure',
  'threads',
  'localFallback',
  'workerWaitMs',
  'scheduling',
  'heartbeatMs',
  'heartbeatTimeoutMs',
  'leaseTimeoutMs',
  'connectTimeoutMs',
  'setupTimeoutMs',
  'cacheDir',
  'cwd',
  'logger',
] as const;
const KNOWN = new Set<string>([...CORE_KEYS, ...JOB_KEYS, ...OWN_KEYS, ...POOL_OPTION_KEYS]);

function pick(input: object, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (k in input && (input as Record<string, unknown>)[k] !== undefined) out[k] = (input as Record<string, unknown>)[k];
  return out;
}

function isBundled(p: unknown): p is BundledProgram {
  return typeof p === 'object' && p !== null && (p as { kind?: unknown }).kind === 'bundled' && Array.isArray((p as { stages?: unknown }).stages);
}

function checkObjective(objective: unknown): asserts objective is FarmObjective {
  if (typeof objective === 'string' && objective.length > 0) return;
  if (objective instanceof URL || typeof objective === 'function' || isBundled(objective)) return;
  throw new InvalidOptionError(
    `Expected the objective to be a stage (a module path or file: URL, an inline function or class) or a BundledProgram, got ${describeValue(objective)}`,
  );
}

/**
 * A minimisation on a farm: {@link Minimization} (the optimiser, the stopping rules, events,
 * checkpoints) whose populations are evaluated on a {@link FarmPool}, one job per generation.
 * {@link minimize} is `new FarmMinimization(objective, space, options).run()`; use the class for
 * its events, {@link FarmMinimization.best} and {@link FarmMinimization.checkpoint} (take one in a
 * `generation` listener to commit every generation, and give it back as option `resume`).
 *
 * Reproducible: with a seed, the result is the same on any number of workers, whatever the order
 * in which evaluations complete, and when workers are lost mid-generation (their evaluations are
 * computed again elsewhere) — provided the objective is deterministic.
 *
 * Events: `evaluated` ({@link EvaluatedEvent}), then `generation`, `improved`, `progress`
 * ({@link GenerationEvent}), after every generation; listeners run synchronously between generations.
 *
 * @example
 * await using pool = new FarmPool({ peers: ['node1:7000', 'node2:7000'] });
 * const run = new FarmMinimization('./chi2.ts', { bounds: [[0, 10], [-1, 1]] }, { pool, shared: { data }, seed: 1, maxEvaluations: 20_000 });
 * run.on('generation', () => store.save(run.checkpoint()));
 * const { x, fun, reason } = await run.run();
 */
export class FarmMinimization extends EventEmitter<FarmMinimizationEvents> {
  readonly #objective: FarmObjective;
  readonly #core: Minimization;
  /** The caller's pool (left open), or undefined: one is opened from #poolOptions for the run. */
  readonly #givenPool: FarmPool | undefined;
  readonly #poolOptions: ResolvedPoolOptions | undefined;
  readonly #job: JobOptions;
  readonly #shared: Readonly<Record<string, unknown>>;
  readonly #name: string;
  readonly #cwd: string;
  #running: Promise<FarmMinimizeResult> | undefined;
  #pool: FarmPool | undefined;
  #program: BundledProgram | undefined;
  #sharedSnapshot: Readonly<Record<string, unknown>> = {};
  #jobs = 0;
  #bundlesSent = 0;
  #sharedBytesSent = 0;
  #requeued = 0;
  #speculated = 0;
  readonly #workers = new Map<string, { id: string; host: string; evaluations: number }>();

  /**
   * @param objective - the stage computing a member's cost (see {@link FarmObjective})
   * @param space - the bounds (and optionally names, integer parameters, an initial guess)
   * @param options - see {@link FarmMinimizeOptions}
   * @throws InvalidOptionError when the objective, the space or an option is invalid
   */
  constructor(objective: FarmObjective, space: Space, options: FarmMinimizeOptions = {}) {
    super();
    if (typeof options !== 'object' || options === null) throw new InvalidOptionError(`Expected the options to be an object, got ${describeValue(options)}`);
    for (const key of Object.keys(options)) {
      if (!KNOWN.has(key)) throw new InvalidOptionError(`Unknown option \`${key}\`; known options: ${[...KNOWN].join(', ')}`);
    }
    checkObjective(objective);
    this.#objective = objective;
    const poolGiven = options.pool;
    const poolOptions = pick(
      options,
      POOL_OPTION_KEYS.filter((k) => k !== 'cwd'),
    );
    if (poolGiven !== undefined) {
      if (!(poolGiven instanceof FarmPool)) throw new InvalidOptionError(`Expected \`pool\` to be a FarmPool, got ${describeValue(poolGiven)}`);
      const extra = Object.keys(poolOptions);
      if (extra.length > 0) {
        throw new InvalidOptionError(
          `Pool options (${extra.map((k) => `\`${k}\``).join(', ')}) configure the pool minimize opens, but a \`pool\` was given: set them on that FarmPool instead`,
        );
      }
      this.#givenPool = poolGiven;
    } else {
      this.#poolOptions = resolvePoolOptions(pick(options, POOL_OPTION_KEYS));
    }
    this.#cwd = options.cwd ?? process.cwd();
    this.#name = options.name ?? 'minimize';
    const job = pick(options, JOB_KEYS) as JobOptions;
    // Validated now (the same checks every generation's job makes), so a bad option fails before anything runs.
    resolveJobOptions({ ...job, name: this.#name }, this.#cwd);
    const { shared, name: _name, ...rest } = job;
    this.#shared = shared ?? {};
    this.#job = rest;
    for (const [k, f] of [
      ['onGeneration', options.onGeneration],
      ['onImproved', options.onImproved],
      ['onProgress', options.onProgress],
    ] as const) {
      if (f !== undefined && typeof f !== 'function') throw new InvalidOptionError(`Expected \`${k}\` to be a function, got ${describeValue(f)}`);
    }
    this.#core = new Minimization((population, ctx) => this.#evaluate(population, ctx), space, pick(options, CORE_KEYS));
    for (const event of ['generation', 'improved', 'progress'] as const) this.#core.on(event, (e) => this.emit(event, e));
    if (options.onGeneration !== undefined) this.on('generation', options.onGeneration);
    if (options.onImproved !== undefined) this.on('improved', options.onImproved);
    if (options.onProgress !== undefined) this.on('progress', options.onProgress);
  }

  /** The best point found so far (also after a failed or aborted run), or undefined before the first generation. */
  get best(): BestPoint | undefined {
    return this.#core.best;
  }

  /** The run's state after its last completed generation (see {@link Minimization.checkpoint}). */
  checkpoint(): MinimizeCheckpoint | undefined {
    return this.#core.checkpoint();
  }

  /**
   * Runs to the end (once: later calls return the same promise). Rejects with the objective's
   * error (a TaskError naming the member), InvalidCostError (a cost that is not a finite number),
   * InvalidStageError (the objective cannot be bundled), FarmAbortError (aborted, or the pool was
   * closed), NoWorkersError, …; the pool it opened is closed in every case.
   */
  run(): Promise<FarmMinimizeResult> {
    this.#running ??= this.#run();
    return this.#running;
  }

  async #run(): Promise<FarmMinimizeResult> {
    const objective = this.#objective;
    // Bundled once: every generation is the same program (same key), so no worker installs anything twice.
    this.#program = isBundled(objective) ? objective : await bundleProgram(objective, { cwd: this.#cwd });
    const snapshot: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(this.#shared)) {
      try {
        snapshot[name] = value instanceof SharedFile ? value : sharedValue(value);
      } catch (err) {
        throw new InvalidOptionError(`Option \`shared.${name}\`: ${(err as Error).message}`, { cause: err });
      }
    }
    this.#sharedSnapshot = snapshot;
    const pool = this.#givenPool ?? new FarmPool(this.#poolOptions);
    this.#pool = pool;
    try {
      const result = await this.#core.run();
      return { ...result, farm: this.#summary() };
    } finally {
      if (this.#givenPool === undefined) await pool.close();
    }
  }

  async #evaluate(population: Population, { generation, signal, errors }: EvaluationContext): Promise<readonly unknown[]> {
    const job = (this.#pool as FarmPool).run(this.#program as BundledProgram, population, {
      ...this.#job,
      name: `${this.#name}/g${generation}`,
      shared: this.#sharedSnapshot,
      signal,
      errors,
    });
    this.#jobs++;
    let outputs: unknown[];
    try {
      outputs = await job.compute();
    } finally {
      this.#account(job.stats());
    }
    this.emit('evaluated', { generation, jobId: job.id, stats: job.stats() });
    return outputs;
  }

  #account(stats: FarmStats): void {
    this.#requeued += stats.requeued;
    this.#speculated += stats.speculated;
    for (const w of stats.workers) {
      this.#bundlesSent += w.bundlesSent;
      this.#sharedBytesSent += w.sharedBytesSent;
      const seen = this.#workers.get(w.id) ?? { id: w.id, host: w.host, evaluations: 0 };
      seen.evaluations += w.completed;
      this.#workers.set(w.id, seen);
    }
  }

  #summary(): FarmSummary {
    return {
      jobs: this.#jobs,
      bundlesSent: this.#bundlesSent,
      sharedBytesSent: this.#sharedBytesSent,
      requeued: this.#requeued,
      speculated: this.#speculated,
      workers: [...this.#workers.values()].filter((w) => w.evaluations > 0).map((w) => ({ ...w })),
    };
  }
}

/**
 * Minimises `objective` over `space` on a farm: an optimiser (differential evolution by default,
 * BFGS, or your own {@link Optimizer}) proposes a population, the pool's workers evaluate its
 * members in parallel (one job per generation), until a stopping rule holds; `reason` in the
 * result names it. Rejects (never throws) on bad input.
 *
 * @param objective - a stage `(x: number[], ctx) => cost`: a module path, an inline function or a class (see {@link FarmObjective})
 * @param space - `{ bounds: [[lo, hi], …], names?, integer?, x0? }`
 * @param options - see {@link FarmMinimizeOptions}
 *
 * @example
 * import { minimize, sharedFile } from 'taskfarm';
 * const { x, fun, reason } = await minimize('./chi2.ts', { bounds: [[0, 10], [0, 10], [0.1, 5]] }, {
 *   peers: ['node1:7000', 'node2:7000'], shared: { data: sharedFile('spectrum.bin') },
 *   seed: 1, maxEvaluations: 30_000, onImproved: (e) => console.log(e.generation, e.fun),
 * });
 */
export async function minimize(objective: FarmObjective, space: Space, options: FarmMinimizeOptions = {}): Promise<FarmMinimizeResult> {
  return new FarmMinimization(objective, space, options).run();
}
