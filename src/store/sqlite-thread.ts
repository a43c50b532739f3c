/**
 * The SQLite job store on a thread of its own: the store `taskfarm serve` opens for a file path.
 *
 * better-sqlite3 runs every statement on the calling thread. In the manager that thread also runs
 * the pool (gRPC, dispatch, results), and on tiny tasks the database's share of it — inserting the
 * outputs, reading the claimed inputs — was about 40 % of the manager's time. Here the database
 * lives on a worker thread: the manager's thread only sends each call and receives its answer, and
 * the two run on different cores.
 *
 * Every call is a message; the worker runs them one at a time, in order, on a
 * {@link SqliteJobStore} (so each is atomic with respect to the others, as on one thread). The hot
 * calls travel packed — a batch of outputs or failures as one JSON text, a claim's inputs as the
 * one JSON array text {@link JobStore.claimBatch} returns — since structured cloning thousands of
 * small objects per batch would cost the manager's thread about what the database did. Errors come
 * back as the same `FarmError` classes, with their fields.
 */
import { Worker } from 'node:worker_threads';
import { FarmError, FarmErrorCode, InvalidOptionError, JobNotFoundError, JobStateError, StoreError } from '../errors.js';
import { describeValue } from '../util/validate.js';
import { defaultStorePath, type SqliteJobStoreOptions } from './sqlite.js';
import type {
  Bundle,
  ClaimedBatch,
  ClaimedTask,
  FailureEntry,
  FailureRow,
  JobError,
  JobEvent,
  JobListOptions,
  JobRecord,
  JobStore,
  JsonValue,
  NewEvent,
  NewJob,
  NewToken,
  OptimizerState,
  OutputEntry,
  Page,
  ReadResultsOptions,
  RecoveryReport,
  ResultRow,
  SettleResult,
  StoreSummary,
  TaskCounts,
  TaskPageOptions,
  TaskRow,
  TokenRecord,
  Transition,
} from './types.js';

/** Options of {@link ThreadedSqliteJobStore.open}: those of {@link SqliteJobStore.open} that can cross to a thread (no clock). */
export type ThreadedSqliteJobStoreOptions = Omit<SqliteJobStoreOptions, 'now'>;

/** A call to the store's thread. */
export interface StoreCall {
  readonly id: number;
  readonly method: string;
  readonly args: readonly unknown[];
  /** `args[packed]` is JSON text to parse on the thread (a batch of entries). */
  readonly packed?: number;
  /** `args[1]` is a batch of outputs as {@link PackedOutputs}. */
  readonly outputs?: true;
}

/** A batch of outputs as it crosses to the thread: indices, and the texts joined, cut by their lengths. */
export interface PackedOutputs {
  readonly indices: Float64Array;
  readonly lengths: Uint32Array;
  readonly texts: string;
}

/** The entries of a {@link PackedOutputs}. */
export function unpackOutputs(p: PackedOutputs): OutputEntry[] {
  const out: OutputEntry[] = [];
  let at = 0;
  for (let k = 0; k < p.indices.length; k++) {
    const end = at + (p.lengths[k] as number);
    out.push({ index: p.indices[k] as number, output: p.texts.slice(at, end) });
    at = end;
  }
  return out;
}

/** An error as it crosses from the store's thread. */
export interface StoreErrorData {
  readonly name: string;
  readonly code: string | undefined;
  readonly message: string;
  readonly ticket?: string;
  readonly state?: string;
  readonly cause?: { readonly message: string; readonly code: unknown };
}

/** The store thread's answer to a {@link StoreCall} (`id` 0: the answer to opening). */
export type StoreReply = { readonly id: number; readonly value: unknown } | { readonly id: number; readonly error: StoreErrorData };

/** Rebuilds an error sent by the store's thread as the class it was there. */
export function errorFromData(e: StoreErrorData): FarmError {
  const cause = e.cause === undefined ? undefined : Object.assign(new Error(e.cause.message), { code: e.cause.code });
  const options = cause === undefined ? {} : { cause };
  switch (e.code) {
    case FarmErrorCode.JOB_NOT_FOUND:
      return new JobNotFoundError(e.ticket ?? '', options);
    case FarmErrorCode.JOB_STATE:
      return new JobStateError(e.ticket ?? '', e.state ?? '', e.message, options);
    case FarmErrorCode.INVALID_OPTION:
      return new InvalidOptionError(e.message, options);
    case FarmErrorCode.STORE:
      return new StoreError(e.message, options);
    default:
      return e.code !== undefined && (Object.values(FarmErrorCode) as string[]).includes(e.code)
        ? new FarmError(e.code as FarmErrorCode, e.message, options)
        : new StoreError(`SQLite job store thread: ${e.name}: ${e.message}`, options);
  }
}

/** Describes an error so that {@link errorFromData} can rebuild it on the other side. */
export function errorToData(err: unknown): StoreErrorData {
  if (!(err instanceof Error)) return { name: 'Error', code: undefined, message: String(err) };
  const f = err as Error & { code?: unknown; ticket?: unknown; state?: unknown };
  const c = err.cause as { message?: unknown; code?: unknown } | undefined;
  return {
    name: err.name,
    code: err instanceof FarmError ? err.code : undefined,
    message: err.message,
    ...(typeof f.ticket === 'string' ? { ticket: f.ticket } : {}),
    ...(typeof f.state === 'string' ? { state: f.state } : {}),
    ...(c !== undefined && c !== null
      ? { cause: { message: typeof c.message === 'string' ? c.message : describeValue(c), code: typeof c.code === 'string' ? c.code : undefined } }
      : {}),
  };
}

/** Rows per {@link ThreadedSqliteJobStore.readResults} call to the thread when the caller does not say. */
const READ_CHUNK = 10_000;

/**
 * {@link JobStore} on a SQLite file, run on a worker thread (see the module comment). Same file
 * format, same rules and same errors as {@link SqliteJobStore}, which it runs; open it with
 * {@link ThreadedSqliteJobStore.open}. The thread keeps the process alive only while a call is
 * under way, so a store left open does not hold the process at exit.
 */
export class ThreadedSqliteJobStore implements JobStore {
  readonly backend = 'sqlite' as const;
  /** The database file (or `:memory:`). */
  readonly path: string;
  readonly #worker: Worker;
  readonly #calls = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  #next = 1;
  #closed = false;
  #broken: FarmError | undefined;

  private constructor(worker: Worker, path: string) {
    this.#worker = worker;
    this.path = path;
    worker.on('message', (m: StoreReply) => this.#reply(m));
    worker.on('error', (err) => this.#fail(new StoreError(`The SQLite job store's thread failed: ${err.message}`, { cause: err })));
    worker.on('exit', (code) => this.#fail(new StoreError(`The SQLite job store's thread exited (code ${code})`)));
    worker.unref();
  }

  /**
   * Starts the store's thread and opens (creating it, mode 0600, and its folder, mode 0700, when
   * missing) the store at `path` there; rejects as {@link SqliteJobStore.open} does.
   * @param path the file, `:memory:` for a private in-memory store. @default {@link defaultStorePath}()
   */
  static async open(path: string = defaultStorePath(), options: ThreadedSqliteJobStoreOptions = {}): Promise<ThreadedSqliteJobStore> {
    if (typeof path !== 'string') throw new InvalidOptionError(`Expected \`path\` to be a file path, got ${describeValue(path)}`);
    const worker = new Worker(new URL('./sqlite-thread-worker.js', import.meta.url), { workerData: { path, options: { ...options } } });
    const opened = await new Promise<StoreReply>((resolve, reject) => {
      const onExit = (code: number): void => reject(new StoreError(`The SQLite job store's thread exited (code ${code}) while opening ${path}`));
      worker.once('error', (err) => {
        worker.off('exit', onExit);
        reject(new StoreError(`Cannot start the SQLite job store's thread for ${path}: ${err.message}`, { cause: err }));
      });
      worker.once('exit', onExit);
      worker.once('message', (m: StoreReply) => {
        worker.off('exit', onExit);
        worker.removeAllListeners('error');
        resolve(m);
      });
    });
    if ('error' in opened) {
      await worker.terminate();
      throw errorFromData(opened.error);
    }
    return new ThreadedSqliteJobStore(worker, path);
  }

  #reply(m: StoreReply): void {
    const call = this.#calls.get(m.id);
    if (call === undefined) return;
    this.#calls.delete(m.id);
    if (this.#calls.size === 0) this.#worker.unref();
    if ('error' in m) call.reject(errorFromData(m.error));
    else call.resolve(m.value);
  }

  #fail(err: FarmError): void {
    this.#broken ??= err;
    const calls = [...this.#calls.values()];
    this.#calls.clear();
    for (const c of calls) c.reject(this.#broken);
  }

  #call<T>(method: string, args: readonly unknown[], packed?: number, outputs?: true): Promise<T> {
    if (this.#closed) return Promise.reject(new StoreError('The job store is closed'));
    if (this.#broken !== undefined) return Promise.reject(this.#broken);
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      if (this.#calls.size === 0) this.#worker.ref();
      this.#calls.set(id, { resolve: resolve as (v: unknown) => void, reject });
      const call: StoreCall = { id, method, args, ...(packed === undefined ? {} : { packed }), ...(outputs === undefined ? {} : { outputs }) };
      try {
        this.#worker.postMessage(call);
      } catch (err) {
        // An argument that cannot be cloned (a function, a symbol): bad input, nothing was sent.
        this.#calls.delete(id);
        if (this.#calls.size === 0) this.#worker.unref();
        reject(new InvalidOptionError(`Cannot pass the arguments of ${method} to the store: ${(err as Error).message}`, { cause: err }));
      }
    });
  }

  /** A batch of entries as one JSON text (see the module comment); entries JSON cannot hold are refused as the store would refuse them. */
  #packed<T>(method: string, ticket: string, entries: unknown): Promise<T> {
    let text: string | undefined;
    try {
      text = JSON.stringify(entries);
    } catch (err) {
      return Promise.reject(new InvalidOptionError(`Expected an array of entries that JSON can hold: ${(err as Error).message}`, { cause: err }));
    }
    if (!Array.isArray(entries) || text === undefined)
      return Promise.reject(new InvalidOptionError(`Expected an array of entries, got ${describeValue(entries)}`));
    return this.#call<T>(method, [ticket, text], 1);
  }

  putBundles(bundles: readonly Bundle[]): Promise<number> {
    return this.#call('putBundles', [bundles]);
  }
  missingBundles(hashes: readonly string[]): Promise<string[]> {
    return this.#call('missingBundles', [hashes]);
  }
  getBundles(hashes: readonly string[]): Promise<Bundle[]> {
    return this.#call('getBundles', [hashes]);
  }
  createJob(job: NewJob): Promise<string> {
    return this.#call('createJob', [job]);
  }
  appendInputs(ticket: string, inputs: readonly string[]): Promise<number> {
    return this.#call('appendInputs', [ticket, inputs]);
  }
  commitSubmit(ticket: string): Promise<JobRecord> {
    return this.#call('commitSubmit', [ticket]);
  }
  abortSubmit(ticket: string): Promise<void> {
    return this.#call('abortSubmit', [ticket]);
  }
  getJob(ticket: string): Promise<JobRecord | undefined> {
    return this.#call('getJob', [ticket]);
  }
  listJobs(options?: JobListOptions): Promise<Page<JobRecord, string>> {
    return this.#call('listJobs', [options]);
  }
  startJob(ticket: string): Promise<Transition> {
    return this.#call('startJob', [ticket]);
  }
  holdJob(ticket: string): Promise<Transition> {
    return this.#call('holdJob', [ticket]);
  }
  releaseJob(ticket: string): Promise<Transition> {
    return this.#call('releaseJob', [ticket]);
  }
  cancelJob(ticket: string): Promise<Transition> {
    return this.#call('cancelJob', [ticket]);
  }
  finishJob(ticket: string, outcome: 'done' | 'failed', error?: JobError): Promise<Transition> {
    return this.#call('finishJob', [ticket, outcome, error]);
  }
  resubmitJob(ticket: string, options: { readonly failedOnly: boolean }): Promise<Transition> {
    return this.#call('resubmitJob', [ticket, options]);
  }
  removeJob(ticket: string): Promise<boolean> {
    return this.#call('removeJob', [ticket]);
  }
  setJobResult(ticket: string, result: JsonValue): Promise<void> {
    return this.#call('setJobResult', [ticket, result]);
  }
  claimTasks(ticket: string, max: number): Promise<ClaimedTask[]> {
    return this.#call('claimTasks', [ticket, max]);
  }
  claimBatch(ticket: string, max: number): Promise<ClaimedBatch> {
    return this.#call('claimBatch', [ticket, max]);
  }
  commitOutputs(ticket: string, outputs: readonly OutputEntry[]): Promise<SettleResult> {
    // The usual batch (integer indices, string outputs) as typed arrays and one string: copied, not
    // cloned entry by entry. Anything else goes as JSON, for the store to refuse naming the field.
    const given: unknown = outputs;
    if (!Array.isArray(given)) return this.#packed('commitOutputs', ticket, outputs);
    const n = outputs.length;
    const indices = new Float64Array(n);
    const lengths = new Uint32Array(n);
    const texts: string[] = new Array<string>(n);
    for (let k = 0; k < n; k++) {
      const e: OutputEntry | undefined = outputs[k];
      if (typeof e !== 'object' || e === null || !Number.isInteger(e.index) || typeof e.output !== 'string')
        return this.#packed('commitOutputs', ticket, outputs);
      indices[k] = e.index;
      lengths[k] = e.output.length;
      texts[k] = e.output;
    }
    const packed: PackedOutputs = { indices, lengths, texts: texts.join('') };
    return this.#call('commitOutputs', [ticket, packed], undefined, true);
  }
  failTasks(ticket: string, failures: readonly FailureEntry[]): Promise<SettleResult> {
    return this.#packed('failTasks', ticket, failures);
  }
  requeueTasks(ticket: string, indices: readonly number[]): Promise<number> {
    return this.#call('requeueTasks', [ticket, indices]);
  }
  recover(): Promise<RecoveryReport> {
    return this.#call('recover', []);
  }
  listTasks(ticket: string, options?: TaskPageOptions): Promise<Page<TaskRow, number>> {
    return this.#call('listTasks', [ticket, options]);
  }
  listFailures(ticket: string, options?: { readonly after?: number; readonly limit?: number }): Promise<Page<FailureRow, number>> {
    return this.#call('listFailures', [ticket, options]);
  }

  /** Each chunk is one call to the thread (one read there), as {@link SqliteJobStore.readResults} reads chunk by chunk. */
  async *readResults(ticket: string, options: ReadResultsOptions = {}): AsyncIterable<ResultRow> {
    const chunk = options.chunkSize ?? READ_CHUNK;
    let after = options.after;
    for (;;) {
      const rows = await this.#call<ResultRow[]>('readResultsChunk', [ticket, { ...options, chunkSize: chunk, ...(after === undefined ? {} : { after }) }]);
      yield* rows;
      if (rows.length < chunk) return;
      after = (rows[rows.length - 1] as ResultRow).index;
    }
  }

  recount(ticket: string): Promise<TaskCounts> {
    return this.#call('recount', [ticket]);
  }
  appendEvents(ticket: string, events: readonly NewEvent[]): Promise<number> {
    return this.#call('appendEvents', [ticket, events]);
  }
  readEvents(ticket: string, options?: { readonly after?: number; readonly limit?: number }): Promise<JobEvent[]> {
    return this.#call('readEvents', [ticket, options]);
  }
  createToken(spec: { readonly user: string; readonly admin?: boolean; readonly label?: string }): Promise<NewToken> {
    return this.#call('createToken', [spec]);
  }
  findToken(token: string): Promise<TokenRecord | undefined> {
    return this.#call('findToken', [token]);
  }
  listTokens(): Promise<TokenRecord[]> {
    return this.#call('listTokens', []);
  }
  revokeToken(id: string): Promise<boolean> {
    return this.#call('revokeToken', [id]);
  }
  saveOptimizerState(ticket: string, state: OptimizerState, result?: JsonValue): Promise<boolean> {
    return this.#call('saveOptimizerState', result === undefined ? [ticket, state] : [ticket, state, result]);
  }
  loadOptimizerState(ticket: string): Promise<OptimizerState | undefined> {
    return this.#call('loadOptimizerState', [ticket]);
  }
  saveJobStats(ticket: string, stats: string): Promise<void> {
    return this.#call('saveJobStats', [ticket, stats]);
  }
  loadJobStats(ticket: string): Promise<string | undefined> {
    return this.#call('loadJobStats', [ticket]);
  }
  summary(): Promise<StoreSummary> {
    return this.#call('summary', []);
  }
  /** Runs SQLite's `pragma integrity_check`; resolves to `['ok']` for a sound file. */
  integrityCheck(): Promise<string[]> {
    return this.#call('integrityCheck', []);
  }

  /** Closes the database (calls already sent finish first), then ends the thread. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    const closing = this.#broken === undefined ? this.#call<void>('close', []) : Promise.resolve();
    this.#closed = true;
    try {
      await closing;
    } finally {
      this.#worker.removeAllListeners('exit');
      await this.#worker.terminate();
    }
  }
}
