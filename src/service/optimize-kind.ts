/**
 * `optimize` jobs (issue 13, item 6): a {@link Minimization} run by the manager on its warm pool,
 * one pool job per generation (its members are the tasks), with the run's checkpoint committed to
 * the store after every generation (`saveOptimizerState`). A manager that stops (SIGTERM, or
 * SIGKILL) continues the job from its last committed generation when it starts again: the
 * generation in flight is evaluated again, and a seeded run ends with the same result as if it had
 * never stopped (the optimiser's proposals depend on the seed and the costs only).
 *
 * Per generation the store gets, in order: the checkpoint with a small result (`{fun, x, names,
 * evaluations, generations, seed}`, which the store's `generation` event carries), the job's
 * result with the convergence history (what `GET /api/v1/jobs/{ticket}` shows), and an `improved`
 * event when the best cost fell. When the run ends the result is the run's
 * `{x, fun, evaluations, generations, converged, reason, message, history, seed, penalized,
 * elapsedMs, names}` and the job is `done`; an objective that throws (or returns a non-finite
 * cost, without `invalidCost: 'penalty'`) fails the job.
 */
import { FarmAbortError, FarmError, InvalidCostError, InvalidOptionError, StoreError, TaskError } from '../errors.js';
import { sharedValue, type FarmJob, type SharedValue } from '../farm/index.js';
import {
  Bfgs,
  DifferentialEvolution,
  Minimization,
  resolveSpace,
  type BfgsOptions,
  type DifferentialEvolutionOptions,
  type EvaluationContext,
  type GenerationEvent,
  type MinimizeCheckpoint,
  type MinimizeOptions,
  type MinimizeResult,
  type Population,
  type ResolvedSpace,
  type Space,
  type ToleranceOptions,
} from '../optimize/index.js';
import type { JsonValue } from '../util/json.js';
import { describeValue } from '../util/validate.js';
import { InvalidRequestError } from './errors.js';
import type { JobKindHandler, JobOutcome, JobRun, JobRunContext } from './kinds.js';
import type { JobSpec } from './types.js';

/** A shared value of an optimize job: a JSON value, or bytes in base64 (a Uint8Array on the workers). */
export type OptimizeSharedValue = { readonly json: JsonValue } | { readonly base64: string };

/**
 * The `params` of an `optimize` job (docs/API.md): the space, the optimiser and its settings, the
 * stopping rules and the objective's shared data. Every field but `space` is optional; the
 * defaults are `minimize()`'s.
 */
export interface OptimizeJobParams {
  /** `{ bounds: [[lo, hi], …], names?, integer?, x0? }`. */
  readonly space: Space;
  /** @default 'de' */
  readonly optimizer?: 'de' | 'bfgs';
  /** Options of the optimiser (DE: strategy, mutation, crossover, …; BFGS: step, gtol, …). */
  readonly optimizerOptions?: Readonly<Record<string, JsonValue>>;
  readonly populationSize?: number;
  /** Without one, a seed is drawn when the job starts; it is in the result (and kept across a restart). */
  readonly seed?: number;
  /** @default 1000 */
  readonly maxGenerations?: number;
  readonly maxEvaluations?: number;
  /** Time of the run itself: the time the manager was down does not count. */
  readonly maxTimeMs?: number;
  /** @default { fun: 1e-8 } */
  readonly tolerance?: number | ToleranceOptions;
  readonly target?: number;
  /** @default 'fail' */
  readonly invalidCost?: 'fail' | 'penalty';
  readonly penalty?: number;
  /** The objective's `ctx.shared`, by name. */
  readonly shared?: Readonly<Record<string, OptimizeSharedValue>>;
}

const PARAM_KEYS = [
  'space',
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
  'shared',
] as const;
const CORE_KEYS = PARAM_KEYS.filter((k) => k !== 'space' && k !== 'shared');
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const SHARED_NAME = /^[A-Za-z_$][\w$-]{0,99}$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The field an InvalidOptionError of the optimisation core names (its first `…` quote), under `params`. */
function fieldOf(err: Error, under: string): string {
  const m = /`([A-Za-z][\w.[\]]*)/.exec(err.message);
  return m === null ? under : `${under}.${m[1]}`;
}

/** An InvalidOptionError of the core as a 400 naming its field under `under` (`params`, or `params.optimizerOptions` for the optimiser's own settings). */
function asRequestError(err: unknown, under = 'params'): never {
  if (err instanceof InvalidRequestError) throw err;
  if (err instanceof InvalidOptionError) {
    throw new InvalidRequestError(`Invalid optimize job (\`${under}\`): ${err.message}`, { field: fieldOf(err, under) }, { cause: err });
  }
  throw err;
}

/** A validated optimize job: the resolved space and the core's options. */
export interface CheckedOptimizeParams {
  readonly space: Space;
  readonly resolved: ResolvedSpace;
  readonly core: MinimizeOptions;
  readonly shared: Readonly<Record<string, OptimizeSharedValue>>;
}

/**
 * Checks an optimize job's `params`: known fields, a valid space (bounds with lo < hi, named
 * parameters, integer parameters, an initial guess within the bounds), valid stopping rules and
 * optimiser settings (the checks `minimize()` makes), shared values of the documented shape.
 * @throws InvalidRequestError naming the field (`params.space.bounds[1] (b)`, `params.maxEvaluations`, …)
 */
export function checkOptimizeParams(params: unknown): CheckedOptimizeParams {
  if (!isObject(params)) {
    throw new InvalidRequestError(
      `Expected \`params\` of an optimize job to be an object with at least \`space\` ({"space": {"bounds": [[lo, hi], …]}}), got ${describeValue(params)}`,
      { field: 'params' },
    );
  }
  for (const k of Object.keys(params)) {
    if (!(PARAM_KEYS as readonly string[]).includes(k))
      throw new InvalidRequestError(`Unknown field \`params.${k}\`; an optimize job takes ${PARAM_KEYS.join(', ')}`, { field: `params.${k}` });
  }
  if (params['space'] === undefined)
    throw new InvalidRequestError('An optimize job needs `params.space` ({"bounds": [[lo, hi], …]})', { field: 'params.space' });
  const optimizer = params['optimizer'];
  if (optimizer !== undefined && optimizer !== 'de' && optimizer !== 'bfgs') {
    throw new InvalidRequestError(`Expected \`params.optimizer\` to be "de" or "bfgs", got ${describeValue(optimizer)}`, { field: 'params.optimizer' });
  }
  const space = params['space'] as Space;
  let resolved: ResolvedSpace;
  try {
    resolved = resolveSpace(space);
  } catch (err) {
    asRequestError(err);
  }
  const core: Record<string, unknown> = {};
  for (const k of CORE_KEYS) if (params[k] !== undefined) core[k] = params[k];
  let opt: Bfgs | DifferentialEvolution;
  try {
    // The optimiser's settings first, so that their errors name the field under `params.optimizerOptions`.
    opt =
      optimizer === 'bfgs'
        ? new Bfgs(core['optimizerOptions'] as BfgsOptions)
        : new DifferentialEvolution(core['optimizerOptions'] as DifferentialEvolutionOptions);
  } catch (err) {
    asRequestError(err, 'params.optimizerOptions');
  }
  try {
    // The constructor makes every check a run makes before it starts (options, the space).
    new Minimization(() => Promise.resolve([]), space, core);
    // The optimiser's checks of the population size, and the initial population against the budget.
    opt.configure({ seed: 0, populationSize: core['populationSize'] as number | undefined });
    const size = opt.start(resolved!).length;
    const max = core['maxEvaluations'];
    if (typeof max === 'number' && size > max) {
      throw new InvalidOptionError(
        `Expected \`maxEvaluations\` (${max}) to allow at least the initial population (${size} members): raise it or lower populationSize`,
      );
    }
  } catch (err) {
    asRequestError(err);
  }
  const shared = params['shared'] ?? {};
  if (!isObject(shared))
    throw new InvalidRequestError(`Expected \`params.shared\` to be an object of named values, got ${describeValue(shared)}`, { field: 'params.shared' });
  for (const [name, v] of Object.entries(shared)) {
    const field = `params.shared.${name}`;
    if (!SHARED_NAME.test(name)) throw new InvalidRequestError(`Expected the shared value's name ${JSON.stringify(name)} to be an identifier`, { field });
    const keys = isObject(v) ? Object.keys(v) : [];
    const ok =
      isObject(v) && keys.length === 1 && (keys[0] === 'json' || (keys[0] === 'base64' && typeof v['base64'] === 'string' && BASE64.test(v['base64'])));
    if (!ok) throw new InvalidRequestError(`Expected \`${field}\` to be {"json": value} or {"base64": "…"}, got ${describeValue(v)}`, { field });
  }
  return { space, resolved: resolved!, core: core, shared: shared as Record<string, OptimizeSharedValue> };
}

/** The result an optimize job shows while it runs (the `generation` events carry it without `history`). */
function runningResult(cp: MinimizeCheckpoint, names: readonly string[], withHistory: boolean): JsonValue {
  return {
    fun: cp.best.fun,
    x: [...cp.best.x],
    names: [...names],
    bestGeneration: cp.best.generation,
    evaluations: cp.evaluations,
    generations: cp.generations,
    seed: cp.seed,
    ...(withHistory ? { history: cp.history.map((h) => ({ ...h })) } : {}),
  };
}

function finalResult(r: MinimizeResult, names: readonly string[]): JsonValue {
  return {
    x: r.x,
    fun: r.fun,
    names: [...names],
    evaluations: r.evaluations,
    generations: r.generations,
    converged: r.converged,
    reason: r.reason,
    message: r.message,
    history: r.history.map((h) => ({ ...h })),
    seed: r.seed,
    penalized: r.penalized,
    elapsedMs: r.elapsedMs,
  };
}

/** One optimize job's run on the pool. */
class OptimizeRun implements JobRun {
  readonly outcome: Promise<JobOutcome>;
  readonly #ctx: JobRunContext;
  readonly #abort = new AbortController();
  #stopping = false;
  #draining = false;
  #poolJob: FarmJob<unknown> | undefined;
  /** The commits of the generations so far, in order. */
  #commit: Promise<void> = Promise.resolve();
  #commitError: Error | undefined;
  /** The generation being evaluated. */
  #generation = 0;
  /** Resolved when the evaluator is parked by a drain (or the run ended). */
  #parked: (() => void) | undefined;
  readonly #parkedPromise: Promise<void>;

  constructor(ctx: JobRunContext) {
    this.#ctx = ctx;
    this.#parkedPromise = new Promise<void>((resolve) => (this.#parked = resolve));
    this.outcome = this.#run().then(
      (o) => o,
      (err: unknown) => this.#outcomeOf(err),
    );
    void this.outcome.finally(() => this.#parked?.());
  }

  poolJobIds(): readonly string[] {
    const j = this.#poolJob;
    return j === undefined || j.status === 'done' || j.status === 'failed' || j.status === 'cancelled' ? [] : [j.id];
  }

  async drain(signal: AbortSignal): Promise<void> {
    this.#draining = true;
    if (signal.aborted) return;
    await new Promise<void>((resolve) => {
      signal.addEventListener('abort', () => resolve(), { once: true });
      void this.#parkedPromise.then(resolve);
    });
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#abort.abort(new FarmAbortError('The job service stopped the job'));
    await this.outcome;
  }

  /** An optimize job claims no tasks in the store. */
  returnClaimed(): Promise<number> {
    return Promise.resolve(0);
  }

  async #run(): Promise<JobOutcome> {
    const { store, job } = this.#ctx;
    const checked = checkOptimizeParams(job.params);
    const saved = await store.loadOptimizerState(job.ticket);
    let resume: MinimizeCheckpoint | undefined;
    if (saved !== undefined) {
      try {
        resume = JSON.parse(saved.state) as MinimizeCheckpoint;
      } catch (err) {
        throw new StoreError(`The optimisation state of job ${job.ticket} (generation ${saved.generation}) is not JSON`, { cause: err });
      }
    }
    const shared: Record<string, SharedValue> = {};
    for (const [name, v] of Object.entries(checked.shared)) {
      try {
        shared[name] = sharedValue('json' in v ? v.json : new Uint8Array(Buffer.from(v.base64, 'base64')));
      } catch (err) {
        throw new InvalidRequestError(`\`params.shared.${name}\`: ${(err as Error).message}`, { field: `params.shared.${name}` }, { cause: err });
      }
    }
    const names = checked.resolved.names;
    const m = new Minimization((population, ctx) => this.#evaluate(population, ctx, shared), checked.space, {
      ...checked.core,
      signal: this.#abort.signal,
      ...(resume === undefined ? {} : { resume }),
    });
    m.on('generation', (e) => this.#committed(m.checkpoint(), e, names));
    const result = await m.run();
    await this.#commit;
    if (this.#commitError !== undefined) throw this.#commitError;
    await store.setJobResult(job.ticket, finalResult(result, names));
    this.#ctx.notify();
    return { type: 'done' };
  }

  /** Queues the commit of a generation (in order; the next generation starts once it is committed). */
  #committed(cp: MinimizeCheckpoint | undefined, e: GenerationEvent, names: readonly string[]): void {
    if (cp === undefined) return;
    const { store, job } = this.#ctx;
    const state = JSON.stringify(cp);
    this.#commit = this.#commit.then(async () => {
      if (this.#commitError !== undefined) return;
      try {
        await store.saveOptimizerState(job.ticket, { generation: e.generation, state }, runningResult(cp, names, false));
        await store.setJobResult(job.ticket, runningResult(cp, names, true));
        if (e.improved) {
          await store.appendEvents(job.ticket, [
            { type: 'improved', data: { generation: e.generation, fun: e.fun, x: [...e.x], evaluations: e.evaluations, names: [...names] } },
          ]);
        }
        this.#ctx.notify();
      } catch (err) {
        this.#commitError = err instanceof Error ? err : new Error(String(err));
      }
    });
  }

  async #evaluate(population: Population, { generation, signal, errors }: EvaluationContext, shared: Record<string, SharedValue>): Promise<readonly unknown[]> {
    // The previous generation is committed before this one starts.
    await this.#commit;
    if (this.#commitError !== undefined) throw this.#commitError;
    if (this.#draining) {
      // A graceful stop: no new generation; the service stops the run next.
      this.#parked?.();
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        else signal.addEventListener('abort', () => resolve(), { once: true });
      });
      throw new FarmAbortError('The job service stopped the job');
    }
    this.#generation = generation;
    const o = this.#ctx.options;
    const poolJob = this.#ctx.pool.run(this.#ctx.program, population, {
      ...o,
      name: `${o.name ?? this.#ctx.job.ticket}/g${generation}`,
      shared,
      signal,
      errors,
    });
    this.#poolJob = poolJob;
    try {
      return await poolJob.compute();
    } finally {
      if (this.#poolJob === poolJob) this.#poolJob = undefined;
    }
  }

  async #outcomeOf(error: unknown): Promise<JobOutcome> {
    await this.#commit.catch(() => {});
    if (this.#stopping) return { type: 'stopped' };
    if (error instanceof StoreError || this.#commitError !== undefined) return { type: 'interrupted', error: this.#commitError ?? error };
    // The pool closed under the run (the service is closing): the job continues at the next start.
    if (error instanceof FarmAbortError) return { type: 'interrupted', error };
    if (error instanceof TaskError) {
      return {
        type: 'failed',
        error: {
          code: error.code,
          message: `The objective failed in generation ${this.#generation}, member ${error.index}: ${error.message}`,
        },
      };
    }
    if (error instanceof InvalidCostError) return { type: 'failed', error: { code: error.code, message: error.message } };
    if (error instanceof FarmError) return { type: 'failed', error: { code: error.code, message: error.message } };
    return { type: 'failed', error: { code: 'FARM_ERR_PROTOCOL', message: error instanceof Error ? error.message : String(error) } };
  }
}

/** `optimize` jobs (see the module comment). */
export const optimizeJobHandler: JobKindHandler = {
  kind: 'optimize',
  validate(spec: JobSpec): void {
    checkOptimizeParams(spec.params);
  },
  start(ctx: JobRunContext): JobRun {
    return new OptimizeRun(ctx);
  },
};
