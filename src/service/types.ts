/**
 * The job service's contract (`taskfarm serve`, issue 11): what the HTTP routes, the in-process
 * `connect()` and the tests call. The implementation (src/service/job-service.ts) owns the store and
 * the pool, and nothing else owns either; routes validate, call one method, map the result. Every
 * method rejects (never throws synchronously) with a FarmError: InvalidOptionError (400, naming the
 * field), AuthenticationError (401), ForbiddenError (403), JobNotFoundError (404: also for another
 * user's job), JobStateError (409), TooLargeError (413), ShuttingDownError (503), StoreError (500).
 *
 * Times are ms since the epoch here; the HTTP layer turns them into ISO strings (docs/API.md).
 */
import type { JsonValue } from '../util/json.js';
import type { JobKind, JobState, TaskCounts, TaskFailure, TaskState } from '../store/index.js';
import type { JobStatsView } from './job-stats.js';
import type { WorkerDetailView } from './service-stats.js';

/** Who is calling: resolved from a bearer token (or a session cookie) by the HTTP layer. */
export interface Caller {
  readonly user: string;
  readonly admin: boolean;
}

/** A stage of a submitted program: an uploaded bundle by hash, or inline ES module source the service bundles. */
export type SubmittedStage = { readonly bundle: string; readonly name?: string } | { readonly source: string; readonly name?: string };

/** A job to submit (docs/API.md `POST /api/v1/jobs`), without its inputs. */
export interface JobSpec {
  readonly stages: readonly SubmittedStage[];
  readonly name?: string;
  readonly priority?: number;
  readonly weight?: number;
  readonly retries?: number;
  readonly maxAttempts?: number;
  readonly taskTimeoutMs?: number;
  readonly errors?: 'fail' | 'collect';
  /** Submitted on hold. @default false */
  readonly hold?: boolean;
  /** `optimize` jobs carry their space and optimiser settings in `params` (issue 13). @default 'map' */
  readonly kind?: JobKind;
  readonly params?: JsonValue;
}

/**
 * One input line of a streamed submit: the JSON text (already checked to be JSON by the caller, or
 * checked by the service) and its 1-based line number in the request, for error messages.
 */
export interface InputLine {
  readonly text: string;
  readonly line: number;
}

/**
 * Consecutive lines of a streamed submit in one item (what the HTTP layer hands the service, so a
 * million-line body costs a few hundred iterations, not a million): `texts[k]` is line `line + k`.
 * Blank texts (white space only) are no input but count as lines, for the line numbers of errors.
 */
export interface InputBatch {
  readonly texts: readonly string[];
  readonly line: number;
}

/** A job's status (docs/API.md `GET /api/v1/jobs/{ticket}`), built from counters: never a task scan. */
export interface JobStatus {
  readonly ticket: string;
  readonly name: string;
  readonly owner: string;
  readonly kind: JobKind;
  readonly state: JobState;
  readonly total: number;
  readonly counts: TaskCounts;
  /** Tasks per second over the last 10 s, or null when unknown. */
  readonly rate: number | null;
  readonly etaSeconds: number | null;
  /** The first failures (at most 10). */
  readonly failures: readonly { readonly index: number; readonly error: { readonly name: string; readonly message: string } }[];
  readonly options: Readonly<Record<string, JsonValue>>;
  readonly createdAt: number;
  readonly startedAt: number | null;
  readonly finishedAt: number | null;
  readonly error: { readonly code: string; readonly message: string; readonly index?: number } | null;
  /** An optimisation's best cost and parameters so far (issue 13), or null. */
  readonly result: JsonValue;
  readonly generation: number | null;
  /** Sequence number of the job's last event (0 before the first): a live view follows the events from there. (Always set by the store's service.) */
  readonly lastEventSeq?: number;
}

/** A settled task as `results` yields it: the output as JSON text, or the failure. */
export type ResultLine = { readonly index: number; readonly output: string } | { readonly index: number; readonly error: TaskFailure };

/** A job event (docs/API.md SSE): `seq` per job from 1, without gaps. */
export interface ServiceEvent {
  readonly seq: number;
  readonly at: number;
  /** `state`, `progress`, `failure`, `generation`. */
  readonly type: string;
  readonly data: JsonValue;
}

/** A worker as `GET /api/v1/workers` reports it (the pool's `workers()`, plus the manager's history). */
export interface ServiceWorker {
  readonly id: string;
  readonly host: string;
  readonly address: string;
  readonly threads: number;
  readonly local: boolean;
  readonly state: 'idle' | 'busy' | 'draining' | 'lost';
  readonly inFlight: number;
  readonly completed: number;
  readonly avgTaskMs: number;
  /** Tickets of the jobs it computes now. */
  readonly jobs: readonly string[];
  /** Why it was lost, for a worker that is gone. */
  readonly lost?: string;
}

/** `GET /api/v1/workers/{id}`. */
export interface ServiceWorkerDetail extends WorkerDetailView {
  readonly worker: ServiceWorker;
}

/** A page of rows (keyset): `next` is what to pass as `after` for the following page, null at the end. */
export interface ServicePage<T, C> {
  readonly items: readonly T[];
  readonly next: C | null;
}

/** A row of the task table (dashboard). */
export interface TaskRowView {
  readonly index: number;
  readonly state: TaskState;
  readonly input: string;
  readonly output: string | null;
  readonly error: TaskFailure | null;
}

/** See the module comment. */
export interface JobService {
  // ---- programs
  /** Which of these bundle hashes the service lacks. */
  missingBundles(caller: Caller, hashes: readonly string[]): Promise<string[]>;
  /** Stores a bundle after checking its sha256 (400 naming the hash on a mismatch). True when it was new. */
  putBundle(caller: Caller, hash: string, code: string): Promise<boolean>;

  // ---- jobs
  /**
   * Submits a job: validates the spec (400 naming the field), bundles inline sources, stores the
   * job and streams its inputs into the store in batches. Resolves with the ticket once the job
   * and every input are committed (the job is durable); a malformed line or a source that fails
   * leaves no job (400 with `line` and `index`).
   */
  submit(caller: Caller, spec: JobSpec, inputs: AsyncIterable<InputLine | InputBatch> | Iterable<InputLine | InputBatch>): Promise<string>;
  status(caller: Caller, ticket: string): Promise<JobStatus>;
  /** The caller's jobs (or everyone's with `all`: admins only, 403 otherwise), newest first. */
  list(
    caller: Caller,
    options?: { readonly all?: boolean; readonly states?: readonly JobState[]; readonly after?: string; readonly limit?: number },
  ): Promise<ServicePage<JobStatus, string>>;
  cancel(caller: Caller, ticket: string): Promise<JobStatus>;
  hold(caller: Caller, ticket: string): Promise<JobStatus>;
  release(caller: Caller, ticket: string): Promise<JobStatus>;
  resubmit(caller: Caller, ticket: string, options?: { readonly failedOnly?: boolean }): Promise<JobStatus>;
  remove(caller: Caller, ticket: string): Promise<void>;
  /** Settled tasks in input order (outputs, or with `failedOnly` failures), read from the store in chunks. */
  results(caller: Caller, ticket: string, options?: { readonly after?: number; readonly failedOnly?: boolean }): AsyncIterable<ResultLine>;
  /** The job's events after `after`, then new ones as they happen, until `signal` aborts. */
  events(caller: Caller, ticket: string, options: { readonly after?: number; readonly signal: AbortSignal }): AsyncIterable<ServiceEvent>;
  tasks(
    caller: Caller,
    ticket: string,
    options?: { readonly state?: TaskState; readonly after?: number; readonly limit?: number },
  ): Promise<ServicePage<TaskRowView, number>>;
  failures(
    caller: Caller,
    ticket: string,
    options?: { readonly after?: number; readonly limit?: number },
  ): Promise<ServicePage<{ readonly index: number; readonly error: TaskFailure }, number>>;

  /**
   * What the job page plots (docs/API.md `GET …/stats`): the task-duration histogram, tasks settled
   * per interval, per-worker figures; kept as results arrive, never a task scan. Optional: a service
   * without it answers 404 on the route.
   */
  jobStats?(caller: Caller, ticket: string): Promise<JobStatsView>;

  // ---- farm
  /** The pool's workers and the lost ones the manager remembers; a non-admin's `jobs` name only their own jobs. */
  workers(caller: Caller): Promise<ServiceWorker[]>;
  /**
   * One worker (docs/API.md `GET /api/v1/workers/{id}`): what it ran (the caller's jobs; an
   * admin's: all), its task times, its losses with their reasons. NotFoundError for an id the
   * manager never saw. Optional, like {@link jobStats}.
   */
  worker?(caller: Caller, id: string): Promise<ServiceWorkerDetail>;

  // ---- tokens
  /** Resolves a bearer token to its caller, or undefined (unknown or revoked). */
  authenticate(token: string): Promise<Caller | undefined>;
  /** A fresh challenge for minting a token with the farm key (docs/API.md Tokens). */
  tokenChallenge(): Promise<string>;
  /** Mints a token when `proof` proves the farm key over the challenge (401 otherwise); the raw token is returned once. */
  createToken(request: {
    readonly user: string;
    readonly admin: boolean;
    readonly label?: string;
    readonly nonce: string;
    readonly proof: string;
  }): Promise<{ readonly token: string; readonly id: string; readonly user: string; readonly admin: boolean }>;

  // ---- life
  /** True while the service accepts requests and its store answers. */
  healthy(): Promise<boolean>;
  /**
   * Graceful stop (SIGTERM): no new jobs or dispatch, batches in flight finish within `graceMs`,
   * their outputs are committed, the pool is released, the store closed.
   */
  close(graceMs?: number): Promise<void>;
}
