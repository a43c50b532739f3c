import { hostname } from 'node:os';
import { threadId } from 'node:worker_threads';
import { InvalidOptionError, TaskError } from '../errors.js';
import { describeValue, expectInteger } from '../util/validate.js';
import type { StageContext } from '../skeleton/index.js';
import type { Evaluator } from './types.js';

/** An objective: a taskfarm stage that maps a parameter vector to its cost. */
export type Objective = (x: number[], ctx: StageContext) => unknown;

/** A stage module's namespace: `import * as objective from './objective.ts'`. */
export interface ObjectiveModule {
  readonly default: Objective;
  /** Runs once (awaited) before the first evaluation, as on each worker thread of a farm. */
  readonly setup?: (ctx: StageContext) => unknown;
}

/** Options of {@link localEvaluator}. */
export interface LocalEvaluatorOptions {
  /**
   * Data the objective reads as `ctx.shared[name]`, as on a farm: Buffers and Uint8Arrays are
   * seen as a Uint8Array, other values as a structured clone made once.
   * @default {}
   */
  readonly shared?: Readonly<Record<string, unknown>>;
  /** Evaluations in flight at once (matters for async objectives). @default no limit */
  readonly concurrency?: number;
}

/**
 * An {@link Evaluator} that computes the objective in this thread: for tests, for cheap
 * objectives, and for running a farm objective (a stage module) without a farm. A member whose
 * objective throws gets a {@link TaskError} (worker `local`) in its place, as `pool.map` with
 * `errors: 'collect'` would give; with `errors: 'fail'` the evaluation rejects with it.
 *
 * @example
 * import * as objective from './fit-gaussians.ts';
 * const evaluate = localEvaluator(objective, { shared: { spectrum } });
 */
export function localEvaluator(objective: Objective | ObjectiveModule, options: LocalEvaluatorOptions = {}): Evaluator {
  const fn = typeof objective === 'function' ? objective : objective?.default;
  if (typeof fn !== 'function')
    throw new InvalidOptionError(`Expected an objective function or a module with a default export, got ${describeValue(objective)}`);
  const setup = typeof objective === 'function' ? undefined : objective.setup;
  const concurrency = options.concurrency ?? Infinity;
  if (concurrency !== Infinity) expectInteger('concurrency', concurrency, 1);
  const shared: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(options.shared ?? {})) {
    shared[name] = value instanceof Uint8Array ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength) : structuredClone(value);
  }
  const ctx: StageContext = Object.freeze({ workerId: 'local', hostname: hostname(), threadId, stageIndex: 0, shared: Object.freeze(shared) });
  let ready: Promise<unknown> | undefined;

  return async (population, { signal, errors }) => {
    ready ??= Promise.resolve().then(() => setup?.(ctx));
    await ready;
    const out = new Array<unknown>(population.length);
    let next = 0;
    let failed = false;
    const lane = async (): Promise<void> => {
      while (next < population.length && !signal.aborted && !failed) {
        const index = next++;
        try {
          out[index] = await fn(population[index] as number[], ctx);
        } catch (err) {
          const e = err instanceof Error ? err : new Error(String(err));
          const code = (e as { code?: unknown }).code;
          const error = new TaskError(
            { index, workerId: 'local', attempts: 1 },
            { name: e.name, message: e.message, stack: e.stack ?? '', code: typeof code === 'string' ? code : '' },
          );
          if (errors === 'fail') {
            failed = true;
            throw error;
          }
          out[index] = error;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, population.length) }, lane));
    return out;
  };
}
