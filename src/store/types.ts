/**
 * The job store contract: the database layer of `taskfarm serve`. Two backends implement it
 * (`SqliteJobStore`, `PostgresJobStore`) and one conformance suite tests both
 * (test/helpers/store-conformance.ts).
 *
 * Rules every implementation keeps:
 * - every method is one transaction (a few say plainly where they are several: chunked deletes);
 * - batch methods take arrays, and a batch is one transaction: never one transaction per task;
 * - the per-job task counters change in the same transaction as the transitions they count, so
 *   {@link JobStore.getJob} never scans tasks;
 * - inputs and outputs are JSON *text*: the service receives NDJSON lines and streams NDJSON results,
 *   so text goes in and comes out untouched (no parse or re-serialisation in the store);
 * - every method is async and rejects (never throws synchronously); errors are `FarmError`s:
 *   {@link JobNotFoundError} for an unknown ticket, `InvalidOptionError` for bad arguments (naming
 *   the field), `JobStateError` for an operation the job's state forbids, `StoreError` for the
 *   database itself.
 */

export type { JsonValue } from '../util/json.js';
import type { JsonValue } from '../util/json.js';

/** States of a job. `queued` → `running` → `done` | `failed`; `held` and `cancelled` by the user. */
export const JOB_STATES = ['queued', 'running', 'held', 'done', 'failed', 'cancelled'] as const;
/** One of {@link JOB_STATES}. */
export type JobState = (typeof JOB_STATES)[number];
/** Job states in which the job is finished (history). */
export const FINISHED_JOB_STATES: readonly JobState[] = ['done', 'failed', 'cancelled'];
/** Job states in which the job is not finished. */
export const ACTIVE_JOB_STATES: readonly JobState[] = ['queued', 'running', 'held'];

/** States of a task. */
export const TASK_STATES = ['pending', 'running', 'done', 'failed'] as const;
/** One of {@link TASK_STATES}. */
export type TaskState = (typeof TASK_STATES)[number];

/** What a job computes: a map over its inputs, or an optimisation (issue 13) whose state is committed per generation. */
export type JobKind = 'map' | 'optimize';

/** Tasks of a job per state. `pending + running + done + failed === total` always. */
export interface TaskCounts {
  readonly pending: number;
  readonly running: number;
  readonly done: number;
  readonly failed: number;
}

/** A stage of a job's program: its name and the sha256 (hex) of its bundle, stored with {@link JobStore.putBundles}. */
export interface StageRef {
  readonly name: string;
  readonly hash: string;
}

/** A stage bundle: ES module text and its sha256 (hex, of the UTF-8 text). */
export interface Bundle {
  readonly hash: string;
  readonly code: string;
}

/** The options a job was submitted with (issue 11 §3); the scheduler reads them, the store keeps them. */
export interface StoredJobOptions {
  /** Integer, higher first. @default 0 */
  readonly priority?: number;
  /** Share among jobs of equal priority, > 0. @default 1 */
  readonly weight?: number;
  /** Times a task whose stage threw is run again. */
  readonly retries?: number;
  /** Times a task may crash its thread. */
  readonly maxAttempts?: number;
  /** Per-task time limit in ms. */
  readonly taskTimeoutMs?: number;
  /** `fail`: the first task failure fails the job; `collect`: failures are recorded and the job goes on. */
  readonly errors?: 'fail' | 'collect';
}

/** What {@link JobStore.createJob} needs. */
export interface NewJob {
  /** Who submitted it (the token's user). */
  readonly owner: string;
  /** A name for people (`--name`); may be empty. At most 200 characters. */
  readonly name: string;
  /** @default 'map' */
  readonly kind?: JobKind;
  /** The stages, in order; every hash must have been stored with {@link JobStore.putBundles}. */
  readonly program: readonly StageRef[];
  /** The job's options. */
  readonly options: StoredJobOptions;
  /** Kind-specific parameters (an optimisation's bounds and optimiser settings), JSON. @default null */
  readonly params?: JsonValue;
  /** The state the job takes when its submit commits (`held`: submitted on hold). @default 'queued' */
  readonly state?: 'queued' | 'held';
}

/** Why a job failed (set by {@link JobStore.finishJob}). */
export interface JobError {
  readonly code: string;
  readonly message: string;
  /** The input whose task failed the job, when one did. */
  readonly index?: number;
}

/** A job as the store knows it, with its counters. Times are ms since the epoch. */
export interface JobRecord {
  /** Random 128-bit id (UUID text, version 4). */
  readonly ticket: string;
  readonly owner: string;
  readonly name: string;
  readonly kind: JobKind;
  readonly state: JobState;
  readonly program: readonly StageRef[];
  readonly options: StoredJobOptions;
  readonly params: JsonValue;
  /** Number of inputs. */
  readonly total: number;
  readonly counts: TaskCounts;
  readonly createdAt: number;
  readonly updatedAt: number;
  /** When it first went `running`, or null. */
  readonly startedAt: number | null;
  /** When it reached `done`, `failed` or `cancelled`, or null. */
  readonly finishedAt: number | null;
  readonly error: JobError | null;
  /** Result metadata (an optimisation's best cost and parameters), JSON, or null. */
  readonly result: JsonValue;
  /** Last optimiser generation committed, or null. */
  readonly generation: number | null;
  /** Sequence number of the job's last event (0 before the first). */
  readonly lastEventSeq: number;
}

/** The outcome of a job state change. */
export interface Transition {
  /** False when the job was not in a state the change applies to (nothing was written). */
  readonly changed: boolean;
  /** The job after the call. */
  readonly job: JobRecord;
}

/** A task handed out by {@link JobStore.claimTasks}. */
export interface ClaimedTask {
  readonly index: number;
  /** The input, JSON text. */
  readonly input: string;
}

/** Tasks handed out by {@link JobStore.claimBatch}: their indices, and their inputs as one JSON array text in the same order. */
export interface ClaimedBatch {
  /** The claimed tasks' indices (requeued ones first, then fresh ones in increasing order). */
  readonly indices: readonly number[];
  /**
   * The inputs, one JSON array `[input0,input1,…]` with `indices.length` elements: one `JSON.parse`
   * decodes them all. The store joins the stored texts with commas, so the array is well formed
   * only when every stored input is one JSON value (the service parses each input before it
   * appends it); a caller checks the parsed length.
   */
  readonly inputs: string;
}

/** One output to commit. */
export interface OutputEntry {
  readonly index: number;
  /** The output, JSON text. */
  readonly output: string;
}

/** What a worker reported about a failed task (issue 11: input index, name, message, stack). */
export interface TaskFailure {
  readonly name: string;
  readonly message: string;
  readonly stack: string;
  /** The error's `code` (e.g. `FARM_ERR_TASK_TIMEOUT`), or empty. */
  readonly code: string;
  /** Times the task was started. */
  readonly attempts: number;
}

/** One failure to record. */
export interface FailureEntry {
  readonly index: number;
  readonly error: TaskFailure;
}

/** The outcome of {@link JobStore.commitOutputs} / {@link JobStore.failTasks}. */
export interface SettleResult {
  /** Entries written. */
  readonly accepted: number;
  /** Indices that were already settled (done or failed) before the call, or repeated within it: nothing changed for them. */
  readonly rejected: readonly number[];
  /** The job's counters after the call. */
  readonly counts: TaskCounts;
}

/** A row of a task page. */
export interface TaskRow {
  readonly index: number;
  readonly state: TaskState;
  /** JSON text. */
  readonly input: string;
  /** JSON text when done, else null. */
  readonly output: string | null;
  /** When failed, else null. */
  readonly error: TaskFailure | null;
}

/** A keyset page: `next` is the `after` to pass for the following page, null at the end. */
export interface Page<T, C> {
  readonly items: readonly T[];
  readonly next: C | null;
}

/** Options of {@link JobStore.listTasks}. */
export interface TaskPageOptions {
  /** Only tasks in this state. */
  readonly state?: TaskState;
  /** Only indices above this one (the previous page's `next`). @default -1 */
  readonly after?: number;
  /** Rows per page, 1–1000. @default 100 */
  readonly limit?: number;
}

/** A failure as {@link JobStore.listFailures} returns it. */
export interface FailureRow {
  readonly index: number;
  readonly error: TaskFailure;
}

/** A settled task as {@link JobStore.readResults} yields it: its output, or its error. */
export type ResultRow = { readonly index: number; readonly output: string } | { readonly index: number; readonly error: TaskFailure };

/** Options of {@link JobStore.readResults}. */
export interface ReadResultsOptions {
  /** Start after this index. @default -1 */
  readonly after?: number;
  /** Only failures. @default false */
  readonly failedOnly?: boolean;
  /** Rows read per query (each chunk is one short read transaction). @default 10000 */
  readonly chunkSize?: number;
}

/** Options of {@link JobStore.listJobs}. */
export interface JobListOptions {
  /** Only this owner's jobs. */
  readonly owner?: string;
  /** Only jobs in these states (e.g. {@link FINISHED_JOB_STATES} for a history). */
  readonly states?: readonly JobState[];
  /** The previous page's `next`. */
  readonly after?: string;
  /** Jobs per page, 1–1000. @default 100 */
  readonly limit?: number;
}

/** An event to append (progress, a failure, anything the service streams over SSE). */
export interface NewEvent {
  /** Short name, e.g. `progress`, `failure`. The store itself writes `state` and `generation`. */
  readonly type: string;
  readonly data: JsonValue;
}

/** A stored event. `seq` counts from 1 per job, without gaps. */
export interface JobEvent {
  readonly seq: number;
  /** ms since the epoch. */
  readonly at: number;
  readonly type: string;
  readonly data: JsonValue;
}

/** A bearer token's record (never the token itself: only its sha256 is stored). */
export interface TokenRecord {
  /** Random id, for revocation and listings. */
  readonly id: string;
  readonly user: string;
  readonly admin: boolean;
  readonly label: string;
  readonly createdAt: number;
}

/** What {@link JobStore.createToken} returns: the record, and the raw token — shown once, never stored. */
export interface NewToken extends TokenRecord {
  readonly token: string;
}

/** An optimisation's committed state (issue 13). */
export interface OptimizerState {
  /** Generation number, increasing. */
  readonly generation: number;
  /** The optimiser's state, JSON text (population, RNG state, …). */
  readonly state: string;
}

/** What {@link JobStore.recover} did. */
export interface RecoveryReport {
  /** Tasks that were running and are pending again. */
  readonly requeued: number;
  /** Submits that never committed (their client or the manager died), removed. */
  readonly abandonedSubmits: number;
  /** Removals that were interrupted and have now been finished. */
  readonly purged: number;
}

/**
 * The persistent job store. See the module comment for the rules every method keeps.
 *
 * Task life: inputs are appended while the job is being submitted; a running job's pending tasks
 * are claimed in index order (requeued ones first) and become running; an output or a failure
 * settles a task (done or failed) — the first one wins and later ones change nothing.
 */
export interface JobStore {
  /** Which backend: `sqlite` or `postgres`. */
  readonly backend: 'sqlite' | 'postgres';

  // ---- programs

  /** Stores bundles that are not stored yet, verifying each sha256 first (`InvalidOptionError` naming the hash on a mismatch: nothing is stored). One transaction. Resolves to the number newly stored. */
  putBundles(bundles: readonly Bundle[]): Promise<number>;
  /** The hashes among `hashes` that are not stored. One read. */
  missingBundles(hashes: readonly string[]): Promise<string[]>;
  /** The stored bundles among `hashes` (missing ones are left out). One read. */
  getBundles(hashes: readonly string[]): Promise<Bundle[]>;

  // ---- submitting

  /**
   * Starts a submit: creates the job, invisible to every read (`getJob`, `listJobs`) until
   * {@link commitSubmit}. Every bundle of the program must be stored (`InvalidOptionError` naming
   * the missing hash). One transaction. Resolves to the job's new ticket.
   */
  createJob(job: NewJob): Promise<string>;
  /**
   * Appends inputs (JSON text each, not parsed here) to a job being submitted; they get the next
   * indices. One transaction per call: pass batches (10,000 is a good size), never one input at a
   * time. `JobStateError` once the submit has committed. Resolves to the job's total so far.
   */
  appendInputs(ticket: string, inputs: readonly string[]): Promise<number>;
  /** Commits the submit: the job becomes visible in its initial state (`queued` or `held`) and durable. One transaction (writes a `state` event). */
  commitSubmit(ticket: string): Promise<JobRecord>;
  /** Abandons a submit (a malformed line, a client gone): the job and its inputs are deleted, as if never created. Deletes in chunks, each its own transaction; the job is invisible throughout and a crash midway is finished by {@link recover}. */
  abortSubmit(ticket: string): Promise<void>;

  // ---- jobs

  /** The job, or undefined (unknown, removed, or its submit not committed). One read; never scans tasks. */
  getJob(ticket: string): Promise<JobRecord | undefined>;
  /** Jobs newest first, keyset-paged. One read. */
  listJobs(options?: JobListOptions): Promise<Page<JobRecord, string>>;
  /** `queued` → `running` (the scheduler started it). One transaction (writes a `state` event). */
  startJob(ticket: string): Promise<Transition>;
  /** `queued` | `running` → `held`: no more claims; running tasks become pending. One transaction (writes a `state` event). */
  holdJob(ticket: string): Promise<Transition>;
  /** `held` → `queued`. One transaction (writes a `state` event). */
  releaseJob(ticket: string): Promise<Transition>;
  /** `queued` | `running` | `held` → `cancelled`: no more claims; running tasks become pending. One transaction (writes a `state` event). */
  cancelJob(ticket: string): Promise<Transition>;
  /** `queued` | `running` → `done` or `failed` (with `error`); running tasks become pending. One transaction (writes a `state` event). */
  finishJob(ticket: string, outcome: 'done' | 'failed', error?: JobError): Promise<Transition>;
  /**
   * A finished job (`done`, `failed`, `cancelled`) → `queued` again: with `failedOnly` only its
   * failed tasks become pending (their failures are forgotten); otherwise every task does (outputs
   * deleted). One transaction (writes a `state` event).
   */
  resubmitJob(ticket: string, options: { readonly failedOnly: boolean }): Promise<Transition>;
  /** Removes a job and everything of it. One transaction makes it invisible; its rows are then deleted in chunks, each its own transaction (a crash midway is finished by {@link recover}). Resolves to false when there was no such job. */
  removeJob(ticket: string): Promise<boolean>;
  /** Sets a job's result metadata (an optimisation's best cost). One transaction. */
  setJobResult(ticket: string, result: JsonValue): Promise<void>;

  // ---- dispatch

  /**
   * Claims up to `max` pending tasks of a `running` job, lowest index first (requeued tasks
   * before fresh ones): they become running. Resolves to [] when the job is not running or nothing
   * is pending. One transaction; the claim writes no row per task (a claim frontier and a requeue
   * set are kept per job), so claiming costs a read of the inputs.
   */
  claimTasks(ticket: string, max: number): Promise<ClaimedTask[]>;
  /**
   * {@link claimTasks} with the inputs as one JSON array text (a contiguous range of fresh tasks
   * comes out of the database as one string, and the caller parses the whole batch at once): the
   * claim the job service's dispatch uses. Same rules, same transaction.
   */
  claimBatch(ticket: string, max: number): Promise<ClaimedBatch>;
  /**
   * Commits outputs: each task not yet settled becomes done with its output; the first result
   * wins, and entries for settled tasks (or repeated within the batch) change nothing and are
   * reported in `rejected`. Accepted whatever the task's state (a late result for a task that was
   * requeued still counts). `InvalidOptionError` (nothing written) for an index that is not a task
   * of the job. One transaction for the batch.
   */
  commitOutputs(ticket: string, outputs: readonly OutputEntry[]): Promise<SettleResult>;
  /** Records failures: each task not yet settled becomes failed with its error. Same rules as {@link commitOutputs}. One transaction. */
  failTasks(ticket: string, failures: readonly FailureEntry[]): Promise<SettleResult>;
  /** Running tasks → pending (claimed again before fresh ones). Indices that are not running are ignored. One transaction. Resolves to the number requeued. */
  requeueTasks(ticket: string, indices: readonly number[]): Promise<number>;
  /**
   * Recovery at start: every running task of every job is pending again (it was in flight when
   * the manager died); abandoned submits and interrupted removals are deleted. One transaction for
   * the requeue, then chunked deletes.
   */
  recover(): Promise<RecoveryReport>;

  // ---- pages and results

  /** A page of tasks by index (keyset: `after`), optionally of one state; never loads all tasks. One read; `running` (and, on PostgreSQL, `pending`) pages examine at most 50,000 indices per call, so such a page may come back short with a non-null `next`: keep paging. */
  listTasks(ticket: string, options?: TaskPageOptions): Promise<Page<TaskRow, number>>;
  /** A page of failures by index. One read. */
  listFailures(ticket: string, options?: { readonly after?: number; readonly limit?: number }): Promise<Page<FailureRow, number>>;
  /** Settled tasks in input order (outputs, and errors of failed tasks), read in chunks of `chunkSize` (each chunk one read). Pending and running tasks are skipped. */
  readResults(ticket: string, options?: ReadResultsOptions): AsyncIterable<ResultRow>;
  /** Counts tasks per state by scanning them: the slow truth the counters must equal (tests, `fsck`). One read. */
  recount(ticket: string): Promise<TaskCounts>;

  // ---- events

  /** Appends events to the job's log; they get the next sequence numbers. One transaction. Resolves to the last sequence number. */
  appendEvents(ticket: string, events: readonly NewEvent[]): Promise<number>;
  /** Events with `seq > after` in order, at most `limit` (1–10,000, default 1000). One read. Resume with the last seq seen (SSE `Last-Event-ID`). */
  readEvents(ticket: string, options?: { readonly after?: number; readonly limit?: number }): Promise<JobEvent[]>;

  // ---- tokens

  /** Mints a bearer token (256 random bits); stores its sha256 only. One transaction. */
  createToken(spec: { readonly user: string; readonly admin?: boolean; readonly label?: string }): Promise<NewToken>;
  /** The token's record, or undefined. One read (by the token's sha256). */
  findToken(token: string): Promise<TokenRecord | undefined>;
  /** Every token's record. One read. */
  listTokens(): Promise<TokenRecord[]>;
  /** Revokes a token by id. One transaction. Resolves to false when there was none. */
  revokeToken(id: string): Promise<boolean>;

  // ---- optimisation (issue 13)

  /**
   * Commits an optimisation's state for a generation, with the job's result metadata when given.
   * A generation not above the stored one changes nothing (resolves to false). One transaction
   * (writes a `generation` event with the generation and the result).
   */
  saveOptimizerState(ticket: string, state: OptimizerState, result?: JsonValue): Promise<boolean>;
  /** The last committed optimisation state, or undefined. One read. */
  loadOptimizerState(ticket: string): Promise<OptimizerState | undefined>;

  // ---- statistics (issue 12: the dashboard's plots, `GET /metrics`)

  /**
   * Stores a job's statistics (what the service keeps as results arrive: the task-duration
   * histogram, throughput per interval, per-worker figures), JSON text of at most 1 MiB, replacing
   * what was stored. One transaction, one row per job (never a row per task). Removed with the job.
   */
  saveJobStats(ticket: string, stats: string): Promise<void>;
  /** The job's stored statistics (JSON text), or undefined when none were saved. One read. */
  loadJobStats(ticket: string): Promise<string | undefined>;
  /**
   * Jobs per state over the whole store, and the tasks per state summed over the unfinished jobs
   * (queued, running, held) from their counters. One read of the job rows: never a task scan.
   */
  summary(): Promise<StoreSummary>;

  /** Closes the database (pending calls finish first). Idempotent. */
  close(): Promise<void>;
}

/** What {@link JobStore.summary} returns. */
export interface StoreSummary {
  /** Jobs per state (every state present, 0 when none). */
  readonly jobs: Readonly<Record<JobState, number>>;
  /** Tasks per state of the jobs that are not finished. */
  readonly tasks: TaskCounts;
}
