/**
 * One job on a pool: what dies with it (its task repository, attempts, stats, outputs), apart from
 * what outlives it (the pool's workers). {@link FarmJob} is the handle users hold; {@link JobState} is
 * the pool's working state of the job.
 */
import { EventEmitter } from 'node:events';
import { FarmAbortError, InvalidOptionError, type TaskError, type FarmError } from '../errors.js';
import { expectInteger } from '../util/validate.js';
import { deferred, type Deferred } from '../util/deferred.js';
import type { LinkProgram, WorkerInfo } from './link.js';
import type { ResolvedJobOptions } from './options.js';
import type { TaskRecord, TaskRepository } from './repository.js';

/** Progress of a job, as the `progress` event reports it. */
export interface FarmProgress {
  /** Tasks settled (outputs, and failures with errors: 'collect'). */
  readonly done: number;
  /** Tasks settled as failed (errors: 'collect'; always 0 otherwise). */
  readonly failed: number;
  /** Number of inputs, when known (array inputs). */
  readonly total: number | undefined;
  /** Tasks sent to workers and not yet answered. */
  readonly inFlight: number;
  /** Workers computing the job now. */
  readonly workers: number;
}

/** Payload of the `lost` event. */
export interface WorkerLostEvent {
  readonly worker: WorkerInfo;
  /** Why the worker was lost, or why it left (`worker left (draining)`). */
  readonly reason: string;
  /** Its in-flight tasks that went back to the repository (with a drain: those it did not finish). */
  readonly requeued: number;
  /** True when the worker left gracefully (its daemon was stopped: SIGTERM/SIGINT), not lost to a fault. */
  readonly draining: boolean;
}

/** Per-worker figures in {@link FarmStats}. */
export interface WorkerStats {
  readonly id: string;
  readonly host: string;
  readonly address: string;
  readonly threads: number;
  /** Outputs this worker delivered (that made it into the results). */
  readonly completed: number;
  /** Code bundles sent to it for this job (0 when it had every stage cached). */
  readonly bundlesSent: number;
  /** Bytes of shared data uploaded to it for this job (0 when it had them cached). */
  readonly sharedBytesSent: number;
  /** True when it already held the job's code and shared data (nothing had to be sent). */
  readonly cached: boolean;
  /** Its recent task time in ms (-1 while unknown). */
  readonly avgTaskMs: number;
  /** Backup copies of stragglers it was given. */
  readonly speculative: number;
  /** Why it was lost, if it was. */
  readonly lost?: string;
}

/** Figures of a job ({@link FarmJob.stats}, {@link TaskFarm.stats}). */
export interface FarmStats {
  readonly elapsedMs: number;
  /** Tasks settled with an output. */
  readonly completed: number;
  /** Indices of the inputs whose task failed (errors: 'collect'), ascending. */
  readonly failed: readonly number[];
  readonly requeued: number;
  /** Straggling tasks re-issued to another worker (backup copies). */
  readonly speculated: number;
  /** Median task time over the recent tasks, in ms (-1 before the first result). */
  readonly medianTaskMs: number;
  readonly workers: readonly WorkerStats[];
}

/** A task that produced its output, as `results()` yields it. */
export interface IndexedSuccess<O> {
  /** Index of the input this output belongs to. */
  readonly index: number;
  readonly output: O;
  /** Never set on a success: `error` is the discriminant of {@link IndexedOutput}. */
  readonly error?: undefined;
}

/** A task that failed for good, as `results()` yields it with `errors: 'collect'`. */
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
 * What `results()` yields: `{ index, output }`, or with `errors: 'collect'` also `{ index, error }`
 * for a failed task. The discriminant is `error`: it is set exactly on failures.
 * @example
 * for await (const r of job.results()) {
 *   if (r.error !== undefined) console.error(`input ${r.index} failed: ${r.error.message}`);
 *   else save(r.index, r.output);
 * }
 */
export type IndexedOutput<O> = IndexedSuccess<O> | IndexedFailure;

/** Options of `results()`. */
export interface ResultsOptions {
  /** Yield in input order (through a bounded reorder buffer). @default false */
  readonly ordered?: boolean;
  /** Results waiting for the consumer before no new input is pulled. @default 10000 */
  readonly highWater?: number;
}

/** The events of a job. */
export interface JobEvents {
  progress: [progress: FarmProgress];
  /** Every task settled; the outputs are in. */
  done: [stats: FarmStats];
  /** The job failed or was cancelled (a FarmAbortError). */
  failed: [error: unknown];
}

/** State of a job. */
export type JobStatus = 'starting' | 'running' | 'done' | 'failed' | 'cancelled';

/** A job's part on one worker. */
export interface Lane {
  readonly worker: WorkerInfo;
  state: 'preparing' | 'ready' | 'failed';
  inFlight: number;
  /** Tasks sent so far (including ones sent again). */
  assigned: number;
  avgTaskMs: number;
  batchSize: number;
  completed: number;
  speculative: number;
  bundlesSent: number;
  sharedBytesSent: number;
  /** True once it is known that the worker already held the program (nothing was sent). */
  cached: boolean;
  lost: string | undefined;
}

/**
 * `a[i] = v`, growing `a` by pushes. Results arrive out of order (each worker's batches), and a
 * write far past an array's end turns V8's elements into a dictionary: at 1,000,000 outputs that cost
 * ~1.1 µs per output, a third of the client's CPU per tiny task (docs/PERFORMANCE.md).
 */
function storeAt(a: unknown[], i: number, v: unknown): void {
  if (i < a.length) {
    a[i] = v;
    return;
  }
  while (a.length < i) a.push(undefined);
  a.push(v);
}

/** How many recent task times the median is taken over. */
const RECENT = 512;

/** The pool's working state of one job. */
export class JobState {
  readonly id: string;
  readonly name: string;
  readonly options: ResolvedJobOptions;
  readonly repo: TaskRepository;
  readonly started = Date.now();
  readonly result: Deferred<void> = deferred<void>();
  status: JobStatus = 'starting';
  program: LinkProgram | undefined;
  /** Batches of this job in flight on all workers (its use of the pool's capacity). */
  batches = 0;
  /** Live workers on which the job's program is ready. */
  readyWorkers = 0;
  /** Live workers on which the job's program is being installed and started (they hold a share). */
  preparingWorkers = 0;
  /** Tasks of this job in flight on all workers (copies counted). */
  inFlight = 0;
  /** Lanes, for stats (also of workers that are gone). */
  readonly lanes: Lane[] = [];
  /** Tasks with a backup copy in flight: where each copy is (worker key, seq). */
  readonly copies = new Map<TaskRecord, { member: object; seq: number }[]>();
  speculated = 0;
  /** Tasks found stuck (far beyond every task time seen): never copied, warned about once. */
  readonly stuck = new WeakSet<TaskRecord>();
  /** Recent task time over all workers (ms; -1 until known): sizes a new worker's first batches. */
  avgTaskMs = -1;
  /** Workers' time its tasks took so far (sum of task times, ms): its share of the pool. */
  workMs = 0;
  /** Longest task time seen (ms). */
  maxTaskMs = 0;
  readonly failedIndices: number[] = [];
  /** Pump round in which `take` came up empty (the job is skipped for the rest of that round). */
  dryRound = -1;
  readonly #recent = new Float64Array(RECENT);
  #recentCount = 0;
  #median: { at: number; value: number } = { at: 0, value: -1 };
  /** Set by the job's handle: false while the consumer of its results lags (backpressure). */
  canPullNew: () => boolean = () => true;
  /** Set by the job's handle: told of every progress event. */
  onProgress: (p: FarmProgress) => void = () => {};

  constructor(id: string, name: string, options: ResolvedJobOptions, repo: TaskRepository) {
    this.id = id;
    this.name = name;
    this.options = options;
    this.repo = repo;
    this.result.promise.catch(() => {}); // observed through the handle
  }

  get finished(): boolean {
    return this.status === 'done' || this.status === 'failed' || this.status === 'cancelled';
  }

  /** Records one task time (ms). */
  sample(ms: number): void {
    this.#recent[this.#recentCount++ % RECENT] = ms;
    if (ms > this.maxTaskMs) this.maxTaskMs = ms;
  }

  /** Median of the recent task times (ms), recomputed at most every 50 ms. */
  medianTaskMs(): number {
    const now = Date.now();
    if (now - this.#median.at < 50) return this.#median.value;
    const n = Math.min(this.#recentCount, RECENT);
    let value = -1;
    if (n > 0) {
      const xs = this.#recent.slice(0, n).sort();
      value = n % 2 === 1 ? xs[n >> 1]! : (xs[(n >> 1) - 1]! + xs[n >> 1]!) / 2;
    }
    this.#median = { at: now, value };
    return value;
  }

  progress(workers: number): FarmProgress {
    return { done: this.repo.done, failed: this.failedIndices.length, total: this.repo.total, inFlight: this.inFlight, workers };
  }

  stats(): FarmStats {
    return {
      elapsedMs: Date.now() - this.started,
      completed: this.repo.done - this.failedIndices.length,
      failed: [...this.failedIndices].sort((a, b) => a - b),
      requeued: this.repo.requeued,
      speculated: this.speculated,
      medianTaskMs: this.medianTaskMs(),
      workers: this.lanes.map((l) => ({
        id: l.worker.id,
        host: l.worker.host,
        address: l.worker.address,
        threads: l.worker.threads,
        completed: l.completed,
        bundlesSent: l.bundlesSent,
        sharedBytesSent: l.sharedBytesSent,
        cached: l.cached,
        avgTaskMs: l.avgTaskMs,
        speculative: l.speculative,
        ...(l.lost === undefined ? {} : { lost: l.lost }),
      })),
    };
  }
}

/** What a {@link FarmJob} needs from its pool. */
export interface JobHost {
  /** Stops the job (its tasks stop on the workers) with `reason`. */
  cancel(job: JobState, reason: FarmError): void;
  /** Dispatch may continue (the consumer caught up). */
  resume(): void;
}

/**
 * A job running on a {@link FarmPool}: started at once by {@link FarmPool.run}. Its outputs are
 * consumed by exactly one of {@link FarmJob.compute} (all of them, in input order) or
 * {@link FarmJob.results} (streamed). Until one is called, at most `highWater` (10,000) settled tasks
 * are buffered and no more inputs are pulled.
 *
 * Events: `progress` ({@link FarmProgress}), `done` ({@link FarmStats}), `failed` (the error).
 */
export class FarmJob<O = unknown> extends EventEmitter<JobEvents> {
  /** Unique id of the job within its pool. */
  readonly id: string;
  /** The job's name (option `name`). */
  readonly name: string;
  readonly #state: JobState;
  readonly #host: JobHost;
  #mode: 'buffer' | 'compute' | 'stream' = 'buffer';
  /** compute mode: outputs (or TaskErrors) by index. */
  #outputs: unknown[] = [];
  /** buffer and stream modes: settled tasks waiting for the consumer. */
  #queue: IndexedOutput<O>[] = [];
  #head = 0;
  /** ordered stream: results that arrived before their turn. */
  readonly #early = new Map<number, IndexedOutput<O>>();
  #next = 0;
  #ordered = false;
  #highWater = 10_000;
  #paused = false;
  #wake: (() => void) | undefined;
  #computing: Promise<O[]> | undefined;

  /** @internal Created by {@link FarmPool.run}. */
  constructor(state: JobState, host: JobHost) {
    super();
    this.id = state.id;
    this.name = state.name;
    this.#state = state;
    this.#host = host;
    state.canPullNew = () => {
      if (this.#mode === 'compute') return true;
      this.#paused = this.#waiting() >= this.#highWater;
      return !this.#paused;
    };
    state.onProgress = (p) => this.emit('progress', p);
    state.result.promise.then(
      () => {
        this.#wake?.();
        this.emit('done', state.stats());
      },
      (err: unknown) => {
        this.#wake?.();
        if (this.listenerCount('failed') > 0) this.emit('failed', err);
      },
    );
  }

  /** @internal Where the job's repository delivers settled tasks. */
  get sink(): { output(index: number, value: unknown): void; failure(index: number, error: FarmError): void } {
    return {
      output: (index, value) => this.#deliver({ index, output: value as O }),
      failure: (index, error) => {
        this.#state.failedIndices.push(index);
        this.#deliver({ index, error: error as TaskError } as IndexedFailure);
      },
    };
  }

  #waiting(): number {
    return this.#queue.length - this.#head + this.#early.size;
  }

  #deliver(r: IndexedOutput<O>): void {
    if (this.#mode === 'compute') {
      storeAt(this.#outputs, r.index, r.error !== undefined ? r.error : r.output);
      return;
    }
    if (this.#ordered) {
      this.#early.set(r.index, r);
      while (this.#early.has(this.#next)) {
        this.#queue.push(this.#early.get(this.#next)!);
        this.#early.delete(this.#next);
        this.#next++;
      }
    } else this.#queue.push(r);
    this.#wake?.();
  }

  /** State of the job now. */
  get status(): JobStatus {
    return this.#state.status;
  }

  /**
   * Waits for every task and resolves with the outputs in input order (with errors: 'collect', the
   * error in place of a failed task's output). Rejects with the job's fatal error (TaskError,
   * TaskCrashedError, NoWorkersError, FarmAbortError when cancelled, …). Idempotent.
   */
  compute(): Promise<O[]> {
    if (this.#computing !== undefined) return this.#computing;
    if (this.#mode === 'stream') return Promise.reject(new InvalidOptionError('compute() after results(): the outputs are consumed by results()'));
    this.#mode = 'compute';
    for (let i = this.#head; i < this.#queue.length; i++) {
      const r = this.#queue[i]!;
      storeAt(this.#outputs, r.index, r.error !== undefined ? r.error : r.output);
    }
    this.#queue = [];
    this.#head = 0;
    if (this.#paused) {
      this.#paused = false;
      this.#host.resume();
    }
    this.#computing = this.#state.result.promise.then(() => this.#outputs as O[]);
    return this.#computing;
  }

  /**
   * Yields settled tasks as they arrive — `{ index, output }`, or `{ index, error }` for a failed
   * task with errors: 'collect' — or in input order with `{ ordered: true }`. Memory stays bounded:
   * while `highWater` results wait for the consumer, no new input is pulled. Breaking out of the
   * loop cancels the job. Throws the job's fatal error at the end.
   */
  async *results(options: ResultsOptions = {}): AsyncGenerator<IndexedOutput<O>, void, undefined> {
    if (this.#mode !== 'buffer')
      throw new InvalidOptionError(`results() after ${this.#mode === 'compute' ? 'compute()' : 'results()'}: the outputs are consumed once`);
    this.#mode = 'stream';
    this.#ordered = options.ordered ?? false;
    this.#highWater = options.highWater ?? 10_000;
    expectInteger('highWater', this.#highWater, 1);
    if (this.#ordered) {
      // What was buffered before the call goes through the reorder buffer.
      const buffered = this.#queue.slice(this.#head);
      this.#queue = [];
      this.#head = 0;
      for (const r of buffered) this.#deliver(r);
    }
    try {
      for (;;) {
        while (this.#head < this.#queue.length) {
          const item = this.#queue[this.#head]!;
          this.#queue[this.#head++] = undefined as unknown as IndexedOutput<O>;
          if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
            this.#queue.splice(0, this.#head);
            this.#head = 0;
          }
          if (this.#paused && this.#waiting() < this.#highWater / 2) {
            this.#paused = false;
            this.#host.resume();
          }
          yield item;
        }
        // Every settled task is delivered before the job's status becomes final.
        if (this.#state.finished) break;
        await new Promise<void>((r) => (this.#wake = r));
        this.#wake = undefined;
      }
      await this.#state.result.promise; // throws the job's fatal error
    } finally {
      if (!this.#state.finished) this.#host.cancel(this.#state, new FarmAbortError('results() consumer stopped early'));
      await this.#state.result.promise.catch(() => {});
    }
  }

  /** Stops the job: its tasks stop on the workers, `compute()` rejects with FarmAbortError. */
  cancel(reason = 'the job was cancelled'): void {
    if (this.#state.finished) return;
    this.#host.cancel(this.#state, new FarmAbortError(reason));
  }

  /** Figures so far. */
  stats(): FarmStats {
    return this.#state.stats();
  }

  /** Resolves when the job ended (done, failed or cancelled); never rejects. */
  async settled(): Promise<JobStatus> {
    await this.#state.result.promise.catch(() => {});
    return this.#state.status;
  }
}
