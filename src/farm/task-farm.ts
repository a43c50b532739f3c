import { EventEmitter } from 'node:events';
import { FarmAbortError, type TaskError } from '../errors.js';
import { expectInteger } from '../util/validate.js';
import { normalForm, stagesOf, type NormalForm, type Program } from '../skeleton/index.js';
import { checkStages, prepareStages } from './bundler.js';
import { prepareShared } from './shared.js';
import { resolveTaskFarmOptions, type ResolvedTaskFarmOptions, type TaskFarmOptions } from './options.js';
import { TaskRepository, type InputSource } from './repository.js';
import { Run, type FarmStats, type RunEvents, type RunSink } from './run.js';

/** Options of {@link TaskFarm.results}. */
export interface ResultsOptions {
  /** Yield outputs in input order (through a bounded reorder buffer). @default false */
  readonly ordered?: boolean;
  /** Outputs waiting for the consumer before no new input is pulled. @default 10000 */
  readonly highWater?: number;
}

/** A task that produced its output, as {@link TaskFarm.results} yields it. */
export interface IndexedSuccess<O> {
  /** Index of the input this output belongs to. */
  readonly index: number;
  readonly output: O;
  /** Never set on a success: `error` is the discriminant of {@link IndexedOutput}. */
  readonly error?: undefined;
}

/** A task that failed for good, as {@link TaskFarm.results} yields it with `errors: 'collect'`. */
export interface IndexedFailure {
  /** Index of the input whose task failed. */
  readonly index: number;
  /** Why: TaskError (the stage threw), TaskTimeoutError, TaskCrashedError. */
  readonly error: TaskError;
  /**
   * There is no output (the property is absent). Typed `never` so that code written for the
   * default `errors: 'fail'`, which never sees a failure, still reads `output` as `O`.
   */
  readonly output: never;
}

/**
 * What {@link TaskFarm.results} yields: `{ index, output }`, or with `errors: 'collect'` also
 * `{ index, error }` for a failed task. The discriminant is `error`: it is set exactly on failures.
 * @example
 * for await (const r of farm.results()) {
 *   if (r.error !== undefined) console.error(`input ${r.index} failed: ${r.error.message}`);
 *   else save(r.index, r.output);
 * }
 */
export type IndexedOutput<O> = IndexedSuccess<O> | IndexedFailure;

/**
 * A task farm: computes `program` on every input, on the workers it finds, and gives the outputs
 * back in input order.
 *
 * The program is reduced to its normal form `farm(seq(s1; …; sn))` first, so every worker runs the
 * whole chain of stages on each task. Workers are recruited as they are found (also mid-run);
 * a worker that dies, hangs or drops off the network is detected and its tasks computed elsewhere;
 * each input gets exactly one output.
 *
 * Events: `recruited` (WorkerInfo), `lost` ({ worker, reason, requeued }), `progress`
 * ({ done, failed, total, inFlight, workers }), `fallback` ({ reason }: it computes on local threads
 * instead of workers, and why).
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
  readonly #options: ResolvedTaskFarmOptions;
  #run: Run | undefined;

  /**
   * @param program - a skeleton (`farm`, `pipeline`, `seq`), a bare stage, or an array of stages
   * @param inputs - an array, an iterable or an async iterable of inputs (iterables are consumed once)
   * @param options - see {@link TaskFarmOptions}
   * @throws InvalidOptionError when the program's shape or an option is invalid
   */
  constructor(program: Program, inputs: InputSource<I>, options: TaskFarmOptions = {}) {
    super();
    this.program = normalForm(program);
    this.#options = resolveTaskFarmOptions(options);
    if (inputs === null || typeof inputs !== 'object' || !(Symbol.iterator in inputs || Symbol.asyncIterator in inputs)) {
      throw new TypeError('Expected `inputs` to be an array, an iterable or an async iterable');
    }
    this.#inputs = inputs;
  }

  async #execute(sink: RunSink, signal?: AbortSignal, canPullNew?: () => boolean): Promise<void> {
    const stages = stagesOf(this.program);
    const o = this.#options;
    const repo = new TaskRepository(this.#inputs as InputSource<unknown>);
    // Everything that can be checked without running anything is checked first.
    repo.validateArray();
    checkStages(stages, o.cwd);
    const prepared = await prepareStages(stages, o.cwd);
    const shared = await prepareShared(o.shared);
    const combined = signal === undefined ? o.signal : o.signal === undefined ? signal : AbortSignal.any([o.signal, signal]);
    const run = new Run({ ...o, signal: combined }, prepared, shared, repo, this, sink, canPullNew);
    this.#run = run;
    await run.execute();
  }

  /**
   * Computes every input. Resolves with the outputs in input order; rejects with the first fatal
   * error (TaskError, TaskCrashedError, NoWorkersError, FarmAbortError, …), after releasing the workers.
   * With `errors: 'collect'`, a failed task's TaskError stands in place of its output (test with
   * `instanceof TaskError`; `stats().failed` lists those indices).
   */
  async compute(): Promise<O[]> {
    const outputs: O[] = [];
    await this.#execute((index, output, error) => {
      outputs[index] = (error ?? output) as O;
    });
    return outputs;
  }

  /**
   * Computes every input and yields `{ index, output }` as outputs arrive, or in input order with
   * `{ ordered: true }`; with `errors: 'collect'`, a failed task yields `{ index, error }` (see
   * {@link IndexedOutput}). Memory stays bounded: when `highWater` outputs wait for the consumer (or,
   * ordered, wait behind an earlier input that is still computing), no new input is pulled until
   * the consumer catches up. Breaking out of the loop cancels the run and releases the workers.
   */
  async *results(options: ResultsOptions = {}): AsyncGenerator<IndexedOutput<O>, void, undefined> {
    const ordered = options.ordered ?? false;
    const highWater = options.highWater ?? 10_000;
    expectInteger('highWater', highWater, 1);
    const queue: IndexedOutput<O>[] = [];
    let head = 0;
    const early = new Map<number, IndexedOutput<O>>(); // ordered: outputs that arrived before their turn
    let next = 0;
    let wake: (() => void) | undefined;
    let ended = false;
    let failure: unknown;
    let paused = false;
    const waiting = (): number => queue.length - head + early.size;
    const controller = new AbortController();
    const done = this.#execute(
      (index, output, error) => {
        const item: IndexedOutput<O> = error === undefined ? { index, output: output as O } : ({ index, error } as IndexedFailure);
        if (ordered) {
          early.set(index, item);
          for (let at = early.get(next); at !== undefined; at = early.get(next)) {
            queue.push(at);
            early.delete(next);
            next++;
          }
        } else queue.push(item);
        wake?.();
      },
      controller.signal,
      () => {
        paused = waiting() >= highWater;
        return !paused;
      },
    ).then(
      () => {
        ended = true;
        wake?.();
      },
      (err: unknown) => {
        ended = true;
        failure = err;
        wake?.();
      },
    );
    try {
      for (;;) {
        while (head < queue.length) {
          const item = queue[head]!;
          queue[head++] = undefined as unknown as IndexedOutput<O>;
          if (head > 1024 && head * 2 > queue.length) {
            queue.splice(0, head);
            head = 0;
          }
          if (paused && waiting() < highWater / 2) {
            paused = false;
            this.#run?.resume();
          }
          yield item;
        }
        if (ended) break;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
      if (failure !== undefined) throw failure;
    } finally {
      if (!ended) {
        controller.abort(new FarmAbortError('results() consumer stopped early'));
        await done;
      }
    }
  }

  /** Figures of the current (or last) run. */
  stats(): FarmStats {
    return this.#run?.stats() ?? { elapsedMs: 0, completed: 0, failed: [], requeued: 0, speculated: 0, medianTaskMs: -1, workers: [] };
  }
}
