/**
 * The pool's task repository over the job store, for one running job: a bounded window of claimed
 * tasks in memory (refilled from the store in the background), settlements committed in batches.
 * The store is the truth; this is a cache over it that never holds the whole job.
 */
import { StoreError, TaskError, type FarmError } from '../errors.js';
import type { TaskRecord, TaskRepository, TaskTiming } from '../farm/index.js';
import { PostgresJobStore, type FailureEntry, type JobStore, type OutputEntry, type SettleResult, type TaskCounts } from '../store/index.js';
import { expectInteger } from '../util/validate.js';
import { failureOf, toJsonText } from './json.js';

/** Told what happens to a job's tasks (the service's statistics and metrics). Every method is synchronous and cheap. */
export interface RepositoryObserver {
  /** A task was settled with its output; `timing` as the pool reported it (absent when it did not). */
  completed?(timing: TaskTiming | undefined, outputBytes: number): void;
  /** A task was settled as failed. */
  failed?(error: FarmError): void;
  /** Tasks were put back to be run again. */
  requeued?(n: number): void;
  /** A task was sent to a worker (`speculative`: a backup copy of one already in flight), its input this many bytes of JSON. */
  sent?(inputBytes: number, speculative: boolean): void;
}

/** Options of a {@link StoreTaskRepository}. */
export interface StoreTaskRepositoryOptions {
  /** Tasks claimed ahead and held in memory; a refill starts when fewer than half are left. @default 4096 */
  readonly window?: number;
  /** Settlements per commit (one transaction each for outputs and for failures). @default 512; 2048 on a PostgreSQL store */
  readonly commitBatch?: number;
  /** Longest a settlement waits for its batch to fill before it is committed anyway, in ms. @default 4 */
  readonly flushMs?: number;
  /** Settlements waiting for their commit beyond which `take()` hands out nothing (the store sets the pace). @default 4 × commitBatch */
  readonly maxUncommitted?: number;
  /**
   * What an output that cannot be JSON (a cyclic structure) does: `fail` records it as the task's
   * failure and fails the job (the job's `errors` option); `collect` only records it. @default 'fail'
   */
  readonly errors?: 'fail' | 'collect';
  /** Called after every commit, with the store's answer and the failures it committed (for events). */
  readonly onCommit?: (result: SettleResult, failures: readonly FailureEntry[]) => void;
  /** @see RepositoryObserver */
  readonly observer?: RepositoryObserver;
}

/** A task of the window; it notices each send (the pool counts copies in flight) for the observer. */
class StoreTaskRecord implements TaskRecord {
  readonly index: number;
  input: unknown;
  crashes = 0;
  errors = 0;
  losses = 0;
  done = false;
  sentAt = 0;
  readonly #bytes: number;
  readonly #observer: RepositoryObserver | undefined;
  #copies = 0;

  constructor(index: number, input: unknown, bytes: number, observer: RepositoryObserver | undefined) {
    this.index = index;
    this.input = input;
    this.#bytes = bytes;
    this.#observer = observer;
  }

  get copies(): number {
    return this.#copies;
  }

  set copies(n: number) {
    if (n > this.#copies) this.#observer?.sent?.(this.#bytes, this.#copies > 0);
    this.#copies = n;
  }
}

/** The job the repository serves: its ticket, number of inputs and counters when it started. */
export interface StoreRepositoryJob {
  readonly ticket: string;
  readonly total: number;
  readonly counts: TaskCounts;
}

/** Delays between attempts of a commit the store refused (then the job stops and its tasks run again later). */
const COMMIT_RETRY_MS = [50, 250, 1000];

/**
 * {@link TaskRepository} over a {@link JobStore}: what a job of the job service runs on.
 *
 * - `take()` is synchronous, from a window of up to `window` claimed tasks (a claim's inputs come
 *   as one JSON array text, parsed at once); when fewer than half are left a `claimBatch` refill
 *   runs in the background and `onAvailable` is called when it lands.
 * - `complete()` / `fail()` buffer the settlement (outputs as JSON text, mapped like `taskfarm run`);
 *   buffers are committed with `commitOutputs` / `failTasks`, one transaction per batch, when a batch
 *   fills or `flushMs` after the first entry, one commit at a time. `done` counts committed
 *   settlements only (the store's counters), and `isComplete` is true once the counters say every
 *   task is settled and nothing is left to commit.
 * - Requeued tasks stay in memory, at the front, with their attempt counts (the pool's retry rules
 *   need them); once the job is off the pool, {@link returnClaimed} hands every claimed task that
 *   was not settled back to the store (a graceful stop, a restart after a store failure).
 * - A store that fails (claims, or a commit after retries) becomes the `sourceError`: the pool ends
 *   the job with it; settlements not committed are lost and their tasks, still claimed in the
 *   store, run again after the next reset (recovery, or the job's next start).
 *
 * Memory is bounded by `window` + the tasks in flight + `maxUncommitted`, whatever the job's size.
 */
export class StoreTaskRepository implements TaskRepository {
  readonly #store: JobStore;
  readonly #ticket: string;
  readonly #total: number;
  readonly #window: number;
  readonly #commitBatch: number;
  readonly #flushMs: number;
  readonly #maxUncommitted: number;
  readonly #errors: 'fail' | 'collect';
  readonly #onCommit: StoreTaskRepositoryOptions['onCommit'];
  readonly #observer: RepositoryObserver | undefined;
  /** Settled tasks by the store's counters (done + failed), as of the last commit. */
  #settled: number;
  #requeued = 0;
  /** Requeued tasks, sent again before any other. */
  #front: TaskRecord[] = [];
  /** Claimed tasks not yet handed out: `#queue[#head…]`. */
  #queue: TaskRecord[] = [];
  #head = 0;
  /** The store had no more pending tasks at the last claim. */
  #exhausted = false;
  #refill: Promise<void> | undefined;
  #outputs: OutputEntry[] = [];
  #failures: FailureEntry[] = [];
  /** Settlements buffered or being committed. */
  #uncommitted = 0;
  #committing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Tasks handed out and neither settled nor requeued. */
  #outstanding = 0;
  /** Indices claimed from the store and not settled here (window, in flight, requeued). */
  readonly #claimed = new Set<number>();
  #closed = false;
  #paused = false;
  #error: unknown;
  #idleWaiters: (() => void)[] = [];
  /** Set by the pool. */
  onAvailable: () => void = () => {};

  constructor(store: JobStore, job: StoreRepositoryJob, options: StoreTaskRepositoryOptions = {}) {
    this.#store = store;
    this.#ticket = job.ticket;
    this.#total = job.total;
    // A SQLite commit is synchronous: 512 outputs hold the manager's event loop about half a
    // millisecond, so that HTTP requests are answered between commits. A PostgreSQL commit is a round
    // trip the loop does not wait on: bigger batches cost the requests nothing and bought 88k →
    // 108–120k tasks/s (docs/PERFORMANCE.md).
    this.#window = options.window ?? 4096;
    this.#commitBatch = options.commitBatch ?? (store instanceof PostgresJobStore ? 2048 : 512);
    this.#flushMs = options.flushMs ?? 4;
    this.#maxUncommitted = options.maxUncommitted ?? 4 * this.#commitBatch;
    this.#errors = options.errors ?? 'fail';
    this.#onCommit = options.onCommit;
    this.#observer = options.observer;
    expectInteger('window', this.#window, 1, 1_000_000);
    expectInteger('commitBatch', this.#commitBatch, 1, 100_000);
    expectInteger('flushMs', this.#flushMs, 0, 60_000);
    expectInteger('maxUncommitted', this.#maxUncommitted, this.#commitBatch);
    this.#settled = job.counts.done + job.counts.failed;
    if (this.#settled >= this.#total) this.#exhausted = true;
    else this.#startRefill(); // the first take finds tasks waiting
  }

  /** Number of inputs of the job. */
  get total(): number {
    return this.#total;
  }

  /** Tasks settled (done or failed) and committed, by the store's counters. */
  get done(): number {
    return this.#settled;
  }

  /** Tasks put back by the pool (lost worker, crashed thread, retry). */
  get requeued(): number {
    return this.#requeued;
  }

  /** True once the store's counters say every task is settled and nothing waits to be committed. */
  get isComplete(): boolean {
    return this.#settled >= this.#total && this.#uncommitted === 0;
  }

  /** True when nothing is left to take and the store has nothing more pending. */
  get isSourceDrained(): boolean {
    return this.#exhausted && this.#front.length === 0 && this.#head >= this.#queue.length && this.#refill === undefined;
  }

  /** The store failed (a claim, or a commit after its retries), or an output could not be stored: the job ends with it. */
  get sourceError(): unknown {
    return this.#error;
  }

  /** Tasks handed out that are neither settled nor requeued (in flight on the workers). */
  get outstanding(): number {
    return this.#outstanding;
  }

  /** Settlements buffered or being committed. */
  get uncommitted(): number {
    return this.#uncommitted;
  }

  take(max: number, _pullNew: boolean): TaskRecord[] {
    const out: TaskRecord[] = [];
    // Backpressure: when the store lags, the pool waits for a commit (which calls onAvailable).
    if (this.#closed || this.#paused || this.#error !== undefined || this.#uncommitted >= this.#maxUncommitted) return out;
    if (this.#front.length > 0) {
      const k = Math.min(max, this.#front.length);
      for (let i = 0; i < k; i++) out.push(this.#front[i]!);
      this.#front = k === this.#front.length ? [] : this.#front.slice(k);
    }
    while (out.length < max && this.#head < this.#queue.length) {
      out.push(this.#queue[this.#head]!);
      this.#queue[this.#head++] = undefined as unknown as TaskRecord;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    this.#outstanding += out.length;
    if (this.#queue.length - this.#head < this.#window / 2) this.#startRefill();
    return out;
  }

  requeue(recs: readonly TaskRecord[]): void {
    if (recs.length === 0) return;
    this.#requeued += recs.length;
    this.#outstanding -= recs.length;
    this.#observer?.requeued?.(recs.length);
    this.#front = recs.concat(this.#front);
    this.#wakeIdle();
  }

  complete(rec: TaskRecord, output: unknown, timing?: TaskTiming): boolean {
    if (rec.done) return false;
    let text: string;
    try {
      text = toJsonText(output);
    } catch (err) {
      // A value JSON cannot hold: the task's failure (and, errors: 'fail', the job's).
      const error = new TaskError(
        { index: rec.index, workerId: 'manager', attempts: rec.crashes + rec.errors + 1 },
        { name: 'TypeError', message: `its output cannot be stored as JSON (${(err as Error).message})`, stack: '', code: '' },
      );
      if (this.#errors === 'fail' && this.#error === undefined) this.#error = error;
      return this.#settle(rec, undefined, error);
    }
    this.#observer?.completed?.(timing, text.length);
    return this.#settle(rec, text, undefined);
  }

  fail(rec: TaskRecord, error: FarmError): boolean {
    if (rec.done) return false;
    this.#observer?.failed?.(error);
    return this.#settle(rec, undefined, error);
  }

  #settle(rec: TaskRecord, output: string | undefined, error: FarmError | undefined): boolean {
    rec.done = true;
    rec.input = undefined;
    this.#claimed.delete(rec.index);
    this.#outstanding--;
    this.#uncommitted++;
    if (output !== undefined) this.#outputs.push({ index: rec.index, output });
    else this.#failures.push({ index: rec.index, error: failureOf(error) });
    if (this.#outputs.length >= this.#commitBatch || this.#failures.length >= this.#commitBatch) this.#kick();
    else if (this.#timer === undefined && this.#committing === undefined) {
      this.#timer = setTimeout(() => this.#kick(), this.#flushMs);
      this.#timer.unref();
    }
    this.#wakeIdle();
    return true;
  }

  /** The job ended: hands out nothing more; what is buffered is committed (await {@link flush}). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#kick();
  }

  /** Stops handing out tasks (requeued ones included) while the job stays on the pool: a graceful stop lets what is in flight finish. */
  pause(): void {
    this.#paused = true;
  }

  /** Commits everything buffered now and waits for it, and for a refill under way. Rejects with nothing: check `sourceError`. */
  async flush(): Promise<void> {
    for (let rounds = 0; rounds < 1000; rounds++) {
      this.#kick();
      const busy = [this.#committing, this.#refill].filter((p) => p !== undefined);
      if (busy.length === 0 && this.#outputs.length === 0 && this.#failures.length === 0) return;
      if (busy.length === 0) return; // a failed store left entries behind: nothing more to wait for
      await Promise.all(busy);
    }
  }

  /** Resolves once no task is in flight (every task handed out is settled or requeued), or when `signal` aborts. */
  async idle(signal?: AbortSignal): Promise<void> {
    while (this.#outstanding > 0 && signal?.aborted !== true) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          signal?.removeEventListener('abort', done);
          resolve();
        };
        this.#idleWaiters.push(done);
        signal?.addEventListener('abort', done, { once: true });
      });
    }
  }

  #wakeIdle(): void {
    if (this.#idleWaiters.length === 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Hands every task this repository claimed and did not settle (never sent, requeued, or in flight
   * when the job stopped) back to the store as pending, so the store's counters are exact and a later
   * run claims them again. Call it once the job is off the pool (nothing more can settle). Resolves to
   * how many the store put back.
   */
  async returnClaimed(): Promise<number> {
    this.#closed = true;
    await this.#refill?.catch(() => {});
    await this.flush();
    this.#front = [];
    this.#queue = [];
    this.#head = 0;
    const indices = [...this.#claimed].sort((a, b) => a - b);
    let n = 0;
    for (let i = 0; i < indices.length; i += 10_000) n += await this.#store.requeueTasks(this.#ticket, indices.slice(i, i + 10_000));
    this.#claimed.clear();
    return n;
  }

  #startRefill(): void {
    if (this.#refill !== undefined || this.#exhausted || this.#closed || this.#error !== undefined) return;
    const want = Math.min(this.#window - (this.#queue.length - this.#head), 1_000_000);
    if (want <= 0) return;
    this.#refill = this.#store.claimBatch(this.#ticket, want).then(
      (claimed) => {
        this.#refill = undefined;
        const n = claimed.indices.length;
        if (n < want) this.#exhausted = true;
        // The whole batch's inputs in one parse; the bytes each task ships are the batch's average.
        let inputs: unknown;
        try {
          inputs = JSON.parse(claimed.inputs);
        } catch (err) {
          inputs = err;
        }
        if (!Array.isArray(inputs) || inputs.length !== n) {
          const why = inputs instanceof Error ? inputs.message : `${Array.isArray(inputs) ? inputs.length : 'no'} values for ${n} tasks`;
          const span = n === 0 ? '' : ` (claimed ${claimed.indices[0]} … ${claimed.indices[n - 1]})`;
          this.#error = new StoreError(`Inputs of job ${this.#ticket}${span} in the store are not JSON values each: ${why}`, { cause: inputs });
          for (const index of claimed.indices) this.#claimed.add(index);
        } else {
          const bytes = n === 0 ? 0 : Math.max(0, Math.round((claimed.inputs.length - 1 - n) / n));
          for (let k = 0; k < n; k++) {
            const index = claimed.indices[k] as number;
            this.#claimed.add(index);
            this.#queue.push(new StoreTaskRecord(index, inputs[k], bytes, this.#observer));
          }
        }
        this.onAvailable();
      },
      (err: unknown) => {
        this.#refill = undefined;
        this.#error = err;
        this.onAvailable();
      },
    );
  }

  /** Starts committing what is buffered, unless a commit is under way (it takes the rest when it ends). */
  #kick(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#committing !== undefined || (this.#outputs.length === 0 && this.#failures.length === 0)) return;
    this.#committing = this.#commitLoop().finally(() => {
      this.#committing = undefined;
      // What arrived during the last commit waits for its timer, or goes at once when a batch is full.
      if (this.#outputs.length >= this.#commitBatch || this.#failures.length >= this.#commitBatch || this.#closed) this.#kick();
      else if (this.#outputs.length + this.#failures.length > 0 && this.#timer === undefined) {
        this.#timer = setTimeout(() => this.#kick(), this.#flushMs);
        this.#timer.unref();
      }
      this.onAvailable();
    });
  }

  async #commitLoop(): Promise<void> {
    while (this.#outputs.length > 0 || this.#failures.length > 0) {
      if (this.#outputs.length > 0) {
        const batch = this.#cut(this.#outputs);
        this.#outputs = this.#outputs.length > batch.length ? this.#outputs.slice(batch.length) : [];
        const result = await this.#commit(() => this.#store.commitOutputs(this.#ticket, batch), batch);
        if (result === undefined) return;
        this.#onCommit?.(result, []);
      }
      if (this.#failures.length > 0) {
        const batch = this.#cut(this.#failures);
        this.#failures = this.#failures.length > batch.length ? this.#failures.slice(batch.length) : [];
        const result = await this.#commit(() => this.#store.failTasks(this.#ticket, batch), batch);
        if (result === undefined) return;
        this.#onCommit?.(result, batch);
      }
      // Partial batches go one per timer tick, not back to back (unless the job is closing).
      if (!this.#closed && this.#outputs.length < this.#commitBatch && this.#failures.length < this.#commitBatch) return;
    }
  }

  #cut<T>(entries: T[]): T[] {
    return entries.length <= this.#commitBatch ? entries : entries.slice(0, this.#commitBatch);
  }

  /** One batch's commit with retries; undefined when the store kept failing (the job then ends with the error). */
  async #commit(write: () => Promise<SettleResult>, batch: readonly { readonly index: number }[]): Promise<SettleResult | undefined> {
    const n = batch.length;
    for (let attempt = 0; ; attempt++) {
      try {
        const result = await write();
        this.#uncommitted -= n;
        this.#settled = result.counts.done + result.counts.failed;
        return result;
      } catch (err) {
        const wait = COMMIT_RETRY_MS[attempt];
        if (wait === undefined || this.#error !== undefined) {
          this.#error ??= err;
          // What is buffered cannot be committed by this repository any more: the tasks stay claimed
          // in the store, and returnClaimed() hands them back.
          for (const e of batch) this.#claimed.add(e.index);
          for (const e of this.#outputs) this.#claimed.add(e.index);
          for (const e of this.#failures) this.#claimed.add(e.index);
          this.#uncommitted = 0;
          this.#outputs = [];
          this.#failures = [];
          return undefined;
        }
        await new Promise<void>((r) => setTimeout(r, wait).unref());
      }
    }
  }
}
