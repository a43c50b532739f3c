import { EventEmitter } from 'node:events';
import { normalForm, type NormalForm, type Program } from '../skeleton/index.js';
import { resolveTaskFarmOptions, type JobOptions, type ResolvedPoolOptions, type TaskFarmOptions } from './options.js';
import { FarmPool, type FallbackEvent } from './pool.js';
import type { FarmJob, FarmProgress, FarmStats, IndexedOutput, ResultsOptions, WorkerLostEvent } from './job.js';
import type { InputSource } from './repository.js';
import type { WorkerInfo } from './link.js';

/** The events a {@link TaskFarm} reports. */
export interface RunEvents {
  recruited: [worker: WorkerInfo];
  lost: [event: WorkerLostEvent];
  progress: [progress: FarmProgress];
  /** The run computes on local threads instead of workers, and why (no farm key, no worker answered, …). */
  fallback: [event: FallbackEvent];
}

const POOL_KEYS = new Set<string>([
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
]);

/**
 * A task farm: computes `program` on every input, on the workers it finds, and gives the outputs
 * back in input order. A one-shot facade over a private {@link FarmPool}: one job, then the pool closes.
 *
 * The program is reduced to its normal form `farm(seq(s1; …; sn))` first, so every worker runs the
 * whole chain of stages on each task. Workers are recruited as they are found (also mid-run);
 * a worker that dies, hangs or drops off the network is detected and its tasks computed elsewhere;
 * each input gets exactly one output.
 *
 * Events: `recruited` (WorkerInfo), `lost` ({ worker, reason, requeued, released }), `progress`
 * ({ done, total, inFlight, workers }), `fallback` ({ reason }).
 *
 * @example
 * const farm = new TaskFarm('./render-tile.ts', tiles, { peers: ['node1:7000', 'node2:7000'] });
 * farm.on('progress', (p) => console.log(`${p.done}/${p.total}`));
 * const images = await farm.compute();
 */
export class TaskFarm<I = unknown, O = unknown> extends EventEmitter<RunEvents> {
  /** The normal form that is run. */
  readonly program: NormalForm;
  readonly #inputs: InputSource<I>;
  readonly #pool: ResolvedPoolOptions;
  readonly #job: JobOptions;
  #current: FarmJob<O> | undefined;

  /**
   * @param program - a skeleton (`farm`, `pipeline`, `seq`), a bare stage, or an array of stages
   * @param inputs - an array, an iterable or an async iterable of inputs (iterables are consumed once)
   * @param options - see {@link TaskFarmOptions}
   * @throws InvalidOptionError when the program's shape or an option is invalid
   */
  constructor(program: Program, inputs: InputSource<I>, options: TaskFarmOptions = {}) {
    super();
    this.program = normalForm(program);
    // Validates everything now, and resolves the farm key now (from the environment as it is).
    const resolved = resolveTaskFarmOptions(options);
    if (inputs === null || typeof inputs !== 'object' || !(Symbol.iterator in inputs || Symbol.asyncIterator in inputs)) {
      throw new TypeError('Expected `inputs` to be an array, an iterable or an async iterable');
    }
    this.#inputs = inputs;
    const job: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(options)) if (!POOL_KEYS.has(k)) job[k] = v;
    this.#pool = resolved.pool;
    this.#job = job;
  }

  /** Opens the private pool and starts the one job, forwarding the pool's and the job's events. */
  #start(): { pool: FarmPool; job: FarmJob<O> } {
    const pool = new FarmPool(this.#pool);
    pool.on('recruited', (w) => this.emit('recruited', w));
    pool.on('lost', (e) => this.emit('lost', e));
    pool.on('fallback', (e) => this.emit('fallback', e));
    const job = pool.run<I, O>(this.program, this.#inputs, this.#job);
    job.on('progress', (p) => this.emit('progress', p));
    this.#current = job;
    return { pool, job };
  }

  /**
   * Computes every input. Resolves with the outputs in input order (with errors: 'collect', a
   * TaskError in place of each failed output); rejects with the first fatal error (TaskError,
   * TaskCrashedError, NoWorkersError, FarmAbortError, …), after releasing the workers.
   */
  async compute(): Promise<O[]> {
    const { pool, job } = this.#start();
    try {
      return await job.compute();
    } finally {
      await pool.close();
    }
  }

  /**
   * Computes every input and yields `{ index, output }` as outputs arrive (`{ index, error }` for a
   * failed task with errors: 'collect'), or in input order with `{ ordered: true }`. Memory stays
   * bounded: when `highWater` results wait for the consumer, no new input is pulled. Breaking out of
   * the loop cancels the run and releases the workers.
   */
  async *results(options: ResultsOptions = {}): AsyncGenerator<IndexedOutput<O>, void, undefined> {
    const { pool, job } = this.#start();
    try {
      yield* job.results(options);
    } finally {
      await pool.close();
    }
  }

  /** Figures of the current (or last) run. */
  stats(): FarmStats {
    return this.#current?.stats() ?? { elapsedMs: 0, completed: 0, failed: [], requeued: 0, speculated: 0, medianTaskMs: -1, workers: [] };
  }
}
