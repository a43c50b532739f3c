/**
 * The task repository of a job: the contract between the pool and whatever holds a job's tasks (a
 * task source and a result sink, in the spirit of BullMQ's backend interface), and the in-memory
 * implementation over an array, an iterable or an async iterable. A persistent store implements the
 * same contract over a window of its tasks; test/helpers/repository-conformance.ts is the suite any
 * implementation must pass.
 */
import { findUnsendable } from '../protocol/index.js';
import { UnsendableInputError, type FarmError } from '../errors.js';

/** One input's task. */
export interface TaskRecord {
  readonly index: number;
  /** The input, kept until the task is done (it may have to be sent again). */
  input: unknown;
  /** Times its execution crashed a thread. */
  crashes: number;
  /** Times its stage threw. */
  errors: number;
  /** Times it was in flight on a worker that was lost. */
  losses: number;
  /** Set once it is settled: its output is in, or (errors: 'collect') its failure recorded. */
  done: boolean;
  /** Copies of it in flight now (2 while speculatively re-issued). */
  copies: number;
  /** When it was last sent to a worker (Date.now()). */
  sentAt: number;
}

/** How long a task ran, as its worker reported it, and where. */
export interface TaskTiming {
  /** Run time on the worker, in ms. */
  readonly durationMs: number;
  /** The worker's id. */
  readonly workerId: string;
}

/** Inputs a TaskFarm accepts. */
export type InputSource<T> = Iterable<T> | AsyncIterable<T>;

/**
 * A job's tasks as the pool sees them. Every method is synchronous and called on the event loop;
 * an implementation that commits to a database does so in the background and reports through
 * {@link TaskRepository.onAvailable}. Invariants the pool relies on (and the conformance suite checks):
 * - `take` hands out each task once until it is requeued; requeued tasks come before new ones;
 * - `complete` and `fail` settle a task at most once (the first call wins, later ones return false);
 * - `done` counts settled tasks whose settlement is durable (committed); `isComplete` is true once
 *   every input was taken and every task's settlement is durable;
 * - memory is bounded: an implementation keeps a window of tasks, never the whole job.
 */
export interface TaskRepository {
  /** Number of inputs, when known in advance. */
  readonly total: number | undefined;
  /** Tasks settled (output or failure) and committed. */
  readonly done: number;
  /** Tasks put back after a worker was lost, a thread crashed or a retry. */
  readonly requeued: number;
  /** True when every input was taken and every task's settlement is committed. */
  readonly isComplete: boolean;
  /** True when nothing is left to take now and no new input will come (all taken, none requeued). */
  readonly isSourceDrained: boolean;
  /** An error from the source (an async iterator that threw, a store that failed), if any: the job fails with it. */
  readonly sourceError: unknown;
  /** Set by the pool: called when `take` may return more than it did, or when a commit finished. */
  onAvailable: () => void;
  /**
   * Up to `max` tasks to send, requeued ones first. With `pullNew` false (backpressure) only
   * requeued tasks and tasks already in memory. May throw {@link UnsendableInputError}.
   */
  take(max: number, pullNew: boolean): TaskRecord[];
  /** Puts tasks back at the front. */
  requeue(recs: readonly TaskRecord[]): void;
  /**
   * Settles a task with its output. False when it was settled already (a duplicate result).
   * `timing`: the run time the worker reported and who ran it (a repository may keep statistics).
   */
  complete(rec: TaskRecord, output: unknown, timing?: TaskTiming): boolean;
  /** Settles a task as failed (errors: 'collect'). False when it was settled already. */
  fail(rec: TaskRecord, error: FarmError): boolean;
  /** The job ended (done, failed or cancelled): stop pulling, release what is held. */
  close(): void;
}

/** Where a {@link MemoryTaskRepository} delivers settled tasks. */
export interface ResultSink {
  output(index: number, value: unknown): void;
  failure(index: number, error: FarmError): void;
}

/** The in-memory repository. See the module comment. */
export class MemoryTaskRepository implements TaskRepository {
  readonly #sync: Iterator<unknown> | undefined;
  readonly #async: AsyncIterator<unknown> | undefined;
  readonly #array: readonly unknown[] | undefined;
  readonly #lookahead: number;
  /** Requeued tasks, sent before new input: `#front[#frontHead…]` (taking and requeueing cost what they move, not the queue's length). */
  #front: TaskRecord[] = [];
  #frontHead = 0;
  #buffer: TaskRecord[] = [];
  #bufferHead = 0;
  #arrayNext = 0;
  #pulled = 0;
  #done = 0;
  #requeued = 0;
  #sourceDone = false;
  #filling = false;
  #error: unknown;
  /** Called when new tasks became available after take() came up short. */
  onAvailable: () => void = () => {};
  readonly #sink: ResultSink;

  constructor(source: InputSource<unknown>, sink: ResultSink, lookahead = 8192) {
    this.#lookahead = lookahead;
    this.#sink = sink;
    if (Array.isArray(source)) {
      this.#array = source;
      this.#sourceDone = source.length === 0;
    } else if (typeof (source as Iterable<unknown>)[Symbol.iterator] === 'function') this.#sync = (source as Iterable<unknown>)[Symbol.iterator]();
    else if (typeof (source as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function') {
      this.#async = (source as AsyncIterable<unknown>)[Symbol.asyncIterator]();
    } else throw new TypeError('inputs must be an array, an iterable or an async iterable');
  }

  /** Number of inputs when known in advance (arrays). */
  get total(): number | undefined {
    return this.#array?.length;
  }

  /** Tasks settled: outputs received, and (errors: 'collect') failures recorded. */
  get done(): number {
    return this.#done;
  }

  /** Tasks put back after a worker was lost or a thread crashed. */
  get requeued(): number {
    return this.#requeued;
  }

  /** True when every input was pulled and every task is done. */
  get isComplete(): boolean {
    return this.#sourceDone && this.#done === this.#pulled && this.#frontHead === this.#front.length;
  }

  /** True when every input was pulled from the source and nothing waits to be sent again. */
  get isSourceDrained(): boolean {
    return this.#sourceDone && this.#frontHead === this.#front.length && this.#bufferHead >= this.#buffer.length;
  }

  /** An error from the source (an async iterator that threw), if any. */
  get sourceError(): unknown {
    return this.#error;
  }

  /**
   * Checks every input of an array source before anything runs.
   * Throws {@link UnsendableInputError} naming the first bad index.
   */
  validateArray(): void {
    const a = this.#array;
    if (a === undefined) return;
    for (let i = 0; i < a.length; i++) {
      const bad = findUnsendable(a[i]);
      if (bad !== undefined) throw new UnsendableInputError(i, bad[0], bad[1]);
    }
  }

  #record(input: unknown): TaskRecord {
    return { index: this.#pulled++, input, crashes: 0, errors: 0, losses: 0, done: false, copies: 0, sentAt: 0 };
  }

  /**
   * Up to `max` tasks to send. Requeued tasks come first. With `pullNew` false (backpressure) no new
   * input is taken from the source, only requeued tasks and inputs already pulled. Throws
   * {@link UnsendableInputError} for an input of an iterable source that cannot be sent (array
   * sources are checked up front).
   */
  take(max: number, pullNew: boolean): TaskRecord[] {
    const out: TaskRecord[] = [];
    if (this.#closed) return out;
    if (this.#frontHead < this.#front.length) {
      const k = Math.min(max, this.#front.length - this.#frontHead);
      for (let i = 0; i < k; i++) {
        out.push(this.#front[this.#frontHead]!);
        this.#front[this.#frontHead++] = undefined as unknown as TaskRecord;
      }
      if (this.#frontHead === this.#front.length) {
        this.#front = [];
        this.#frontHead = 0;
      }
    }
    while (out.length < max) {
      const rec = this.#next(pullNew);
      if (rec === undefined) break;
      if (this.#array === undefined) {
        const bad = findUnsendable(rec.input);
        if (bad !== undefined) throw new UnsendableInputError(rec.index, bad[0], bad[1]);
      }
      out.push(rec);
    }
    return out;
  }

  /** The next input's record; with `pullNew` false only records that already exist (async lookahead). */
  #next(pullNew: boolean): TaskRecord | undefined {
    if (!pullNew && this.#async === undefined) return undefined;
    if (this.#array !== undefined) {
      if (this.#arrayNext >= this.#array.length) {
        this.#sourceDone = true;
        return undefined;
      }
      const rec = this.#record(this.#array[this.#arrayNext++]);
      if (this.#arrayNext >= this.#array.length) this.#sourceDone = true;
      return rec;
    }
    if (this.#sync !== undefined) {
      if (this.#sourceDone) return undefined;
      const r = this.#sync.next();
      if (r.done === true) {
        this.#sourceDone = true;
        return undefined;
      }
      return this.#record(r.value);
    }
    if (this.#bufferHead < this.#buffer.length) {
      const rec = this.#buffer[this.#bufferHead++]!;
      if (this.#bufferHead === this.#buffer.length) {
        this.#buffer = [];
        this.#bufferHead = 0;
      }
      this.#fill();
      return rec;
    }
    this.#fill();
    return undefined;
  }

  #fill(): void {
    const it = this.#async;
    if (it === undefined || this.#filling || this.#sourceDone) return;
    this.#filling = true;
    void (async () => {
      try {
        while (this.#buffer.length - this.#bufferHead < this.#lookahead) {
          const r = await it.next();
          if (r.done === true) {
            this.#sourceDone = true;
            break;
          }
          this.#buffer.push(this.#record(r.value));
          if (this.#buffer.length - this.#bufferHead === 1) this.#announce();
        }
      } catch (err) {
        this.#error = err;
        this.#sourceDone = true;
      } finally {
        this.#filling = false;
        this.onAvailable();
      }
    })();
  }

  #announced = false;

  /**
   * Tells the run that inputs arrived, once per turn of the event loop: an async source that yields
   * many values at once is then sent in full batches, not one message per value.
   */
  #announce(): void {
    if (this.#announced) return;
    this.#announced = true;
    setImmediate(() => {
      this.#announced = false;
      this.onAvailable();
    });
  }

  /** Puts tasks back at the front (they are sent before any new input). */
  requeue(recs: readonly TaskRecord[]): void {
    if (recs.length === 0) return;
    this.#requeued += recs.length;
    if (this.#frontHead >= recs.length) {
      // Room before the head (taken slots): put them there, in order.
      this.#frontHead -= recs.length;
      for (let i = 0; i < recs.length; i++) this.#front[this.#frontHead + i] = recs[i]!;
    } else {
      // Rebuild with free slots before the head, as many as the queue holds: later requeues of a
      // few tasks each (retries) then cost what they move.
      const next: TaskRecord[] = [];
      const slack = Math.max(16, this.#front.length - this.#frontHead);
      for (let i = 0; i < slack; i++) next.push(undefined as unknown as TaskRecord);
      for (const r of recs) next.push(r);
      for (let i = this.#frontHead; i < this.#front.length; i++) next.push(this.#front[i]!);
      this.#front = next;
      this.#frontHead = slack;
    }
  }

  complete(rec: TaskRecord, output: unknown): boolean {
    if (rec.done) return false;
    rec.done = true;
    rec.input = undefined;
    this.#done++;
    this.#sink.output(rec.index, output);
    return true;
  }

  fail(rec: TaskRecord, error: FarmError): boolean {
    if (rec.done) return false;
    rec.done = true;
    rec.input = undefined;
    this.#done++;
    this.#sink.failure(rec.index, error);
    return true;
  }

  #closed = false;

  /** Stops pulling from the source (the job ended). */
  close(): void {
    this.#closed = true;
    this.#sourceDone = true;
    void this.#async?.return?.();
    this.#sync?.return?.();
  }
}
