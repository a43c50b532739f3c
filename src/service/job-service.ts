/**
 * The job service core (issue 11): the scheduler that owns the store and the pool. Everything below
 * the HTTP layer: submits, the per-job state machine (hold, release, cancel, resubmit, remove), the
 * jobs' runs on the pool, status from counters with rate and ETA, coalesced progress and failure
 * events with one notifier per job, workers, tokens, recovery on start and a graceful close.
 *
 * Rules it keeps: the store is the truth (commit, then act); a job is durable when `submit`
 * resolves; an output is committed before its task counts as done; per job, actions and the end of
 * a run are serialised (one at a time, in order); the manager holds a window of each running job's
 * tasks, never the job.
 */
import { AuthenticationError, FarmError, InvalidOptionError, JobNotFoundError, JobStateError, StoreError } from '../errors.js';
import { FarmPool, type BundledProgram, type FarmPoolOptions, type JobOptions, type WorkerLostEvent } from '../farm/index.js';
import { componentLogger, type Logger } from '../log.js';
import { parseFarmKey, resolveFarmKey } from '../security/index.js';
import {
  SqliteJobStore,
  ThreadedSqliteJobStore,
  defaultStorePath,
  openJobStore,
  FINISHED_JOB_STATES,
  JOB_STATES,
  TASK_STATES,
  type FailureEntry,
  type JobKind,
  type JobRecord,
  type JobState,
  type JobStore,
  type NewEvent,
  type SettleResult,
  type StageRef,
  type StoredJobOptions,
  type TaskCounts,
  type TaskFailure,
  type TaskState,
  type Transition,
} from '../store/index.js';
import type { JsonValue } from '../util/json.js';
import { describeValue } from '../util/validate.js';
import { EventHub } from './event-hub.js';
import { lockStore, type StoreLock } from './store-lock.js';
import { ForbiddenError, InvalidRequestError, InvalidInputError, NotFoundError, ShuttingDownError, TooLargeError } from './errors.js';
import { bundleSource } from './inline-source.js';
import { mapJobHandler, type JobKindHandler, type JobOutcome, type JobRun } from './kinds.js';
import { optimizeJobHandler } from './optimize-kind.js';
import type { StoreTaskRepositoryOptions } from './store-repository.js';
import type { JobStatsView } from './job-stats.js';
import { ServiceStats } from './service-stats.js';
import { TokenMinter } from './tokens.js';
import type {
  Caller,
  InputBatch,
  InputLine,
  JobService,
  JobSpec,
  JobStatus,
  ResultLine,
  ServiceEvent,
  ServicePage,
  ServiceWorker,
  ServiceWorkerDetail,
  SubmittedStage,
  TaskRowView,
} from './types.js';

/** Limits on what callers send (docs/API.md, Limits). */
export interface JobServiceLimits {
  /** Largest input line, in bytes. @default 1 MiB */
  readonly maxLineBytes?: number;
  /** Largest bundle (uploaded, or an inline source), in bytes. @default 16 MiB */
  readonly maxBundleBytes?: number;
  /** Most stages in a program. @default 64 */
  readonly maxStages?: number;
}

/**
 * Options of {@link createJobService}. `taskfarm serve` passes `store` as its `--store` text and the
 * pool shortcuts (`peers`, `farm`, `key`/`keyFile`, `insecure`); a program embedding the service
 * may pass an open store and a pool (or full `poolOptions`) instead.
 */
export interface JobServiceOptions {
  /**
   * The job store: an open {@link JobStore}, or where to open one (a SQLite path, or a
   * `postgres://` URL). The service owns it from now on: it runs `recover()` at start and closes it
   * in `close()`. A SQLite file the service opens itself is locked for this process (`<path>.lock`).
   * @default the embedded SQLite store at defaultStorePath()
   */
  readonly store?: JobStore | string;
  /** The pool to run jobs on; the service owns it (closes it in `close()`). Else one is made from `poolOptions` and the shortcuts below. */
  readonly pool?: FarmPool;
  /** Options of the pool the service makes. `workerWaitMs` defaults to Infinity here: jobs wait for workers. @default {} */
  readonly poolOptions?: FarmPoolOptions;
  /** Workers by address (`host:port`), instead of mDNS. */
  readonly peers?: readonly string[];
  /** The farm's name (mDNS). */
  readonly farm?: string;
  /**
   * The farm key (bytes, or its text): the pool recruits with it and token proofs are checked
   * against it. @default `keyFile`, else what the pool finds ($TASKFARM_KEY, the default key file)
   */
  readonly key?: Uint8Array | string;
  /** The farm key's file. */
  readonly keyFile?: string;
  /** Workers without the farm key or TLS (and no token can be minted over the API). @default false */
  readonly insecure?: boolean;
  /** Compute on this process's threads only (no workers). @default false */
  readonly local?: boolean;
  /** The manager's TLS certificate fingerprint (`AB:CD:…`), bound into token proofs; '' over plain HTTP. @default '' */
  readonly certFingerprint?: string | (() => string);
  /** A prom-client Registry: the service registers its series on it (src/service/metrics.ts; `GET /metrics` serves it). @default no metrics */
  readonly registry?: unknown;
  /** @see JobServiceLimits */
  readonly limits?: JobServiceLimits;
  /** Jobs running on the pool at once; more wait `queued`, highest priority first. @default 32 */
  readonly maxRunningJobs?: number;
  /** Tuning of each running job's window and commit batches. */
  readonly repository?: StoreTaskRepositoryOptions;
  /** At most one `progress` event per job this often, in ms. @default 250 */
  readonly progressMs?: number;
  /** Handlers of job kinds besides `map` and `optimize` (registered by default; a handler given here replaces the default of its kind). */
  readonly handlers?: readonly JobKindHandler[];
  /** @default silentLogger */
  readonly logger?: Logger;
}

/** Inputs per appendInputs transaction. */
const SUBMIT_BATCH = 10_000;
/** Failure events per job per progress tick; the failures page has them all. */
const FAILURE_EVENTS_PER_TICK = 10;
/** Workers lost, kept for `workers()`. */
const LOST_HISTORY = 256;
/** Delays before a run the store interrupted starts again. */
const RESTART_MS = [1_000, 2_000, 5_000, 10_000, 30_000];
const HASH = /^[0-9a-f]{64}$/;
const TICKET = /^[0-9a-fA-F-]{36}$/;
const SPEC_KEYS = new Set(['stages', 'name', 'priority', 'weight', 'retries', 'maxAttempts', 'taskTimeoutMs', 'errors', 'hold', 'kind', 'params', 'inputs']);
const NO_SUCH_TICKET = '00000000-0000-4000-8000-000000000000';

/** (time, settled) samples of a running job, for its rate. */
class RateRing {
  readonly #t = new Float64Array(64);
  readonly #v = new Float64Array(64);
  #n = 0;

  add(t: number, v: number): void {
    this.#t[this.#n % 64] = t;
    this.#v[this.#n % 64] = v;
    this.#n++;
  }

  /** Tasks per second over the last `windowMs` (null with too few samples). */
  rate(now: number, value: number, windowMs = 10_000): number | null {
    const k = Math.min(this.#n, 64);
    let oldest = -1;
    for (let i = 1; i <= k; i++) {
      const j = (this.#n - i) % 64;
      if (now - this.#t[j]! > windowMs) break;
      oldest = j;
    }
    if (oldest < 0) return null;
    const dt = (now - this.#t[oldest]!) / 1000;
    if (dt < 0.5) return null;
    return Math.max(0, (value - this.#v[oldest]!) / dt);
  }
}

/** A job of this service on the pool. */
interface Running {
  readonly ticket: string;
  readonly run: JobRun;
  readonly errors: 'fail' | 'collect';
  counts: TaskCounts;
  total: number;
  readonly samples: RateRing;
  /** Progress not yet reported as an event. */
  dirty: boolean;
  failures: FailureEntry[];
  stopping: boolean;
  /** The last append of its events (appends of one job go in order). */
  reporting: Promise<void>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function intField(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new InvalidRequestError(`Expected \`${field}\` to be an integer in [${min}, ${max}], got ${describeValue(v)}`, { field: field });
  }
  return v;
}

function settledOf(c: TaskCounts): number {
  return c.done + c.failed;
}

/** A validated submit. */
interface CheckedSpec {
  readonly stages: readonly SubmittedStage[];
  readonly name: string;
  readonly kind: JobKind;
  readonly options: StoredJobOptions;
  readonly hold: boolean;
  readonly params: JsonValue;
}

/**
 * The job service. Make one with {@link createJobService}: it recovers the store and resumes the
 * jobs it finds before it resolves.
 */
export class StoreJobService implements JobService {
  readonly #store: JobStore;
  readonly #pool: FarmPool;
  readonly #log: Logger;
  readonly #minter: TokenMinter;
  readonly #maxLine: number;
  readonly #maxBundle: number;
  readonly #maxStages: number;
  readonly #maxRunning: number;
  readonly #repository: StoreTaskRepositoryOptions;
  readonly #progressMs: number;
  readonly #handlers = new Map<JobKind, JobKindHandler>();
  readonly #running = new Map<string, Running>();
  readonly #locks = new Map<string, Promise<void>>();
  readonly #hubs = new Map<string, EventHub>();
  readonly #failuresCache = new Map<string, { failed: number; items: JobStatus['failures'] }>();
  readonly #restarts = new Map<string, { timer: NodeJS.Timeout | undefined; attempts: number }>();
  readonly #lost: { worker: ServiceWorker; at: number }[] = [];
  readonly #submits = new Set<Promise<unknown>>();
  readonly #lock: StoreLock | undefined;
  /** Statistics of jobs and workers, and the metrics (issue 12). */
  readonly #stats: ServiceStats;
  #progressTimer: NodeJS.Timeout | undefined;
  #scheduling: Promise<void> | undefined;
  #scheduleAgain = false;
  #closing = false;
  #storeClosed = false;
  #closed: Promise<void> | undefined;

  /** @internal Use {@link createJobService}. */
  constructor(options: JobServiceOptions, store: JobStore, pool: FarmPool, farmKey: Uint8Array | undefined, lock: StoreLock | undefined) {
    this.#pool = pool;
    this.#lock = lock;
    this.#log = componentLogger('service', options.logger);
    this.#stats = new ServiceStats({ store, pool, logger: this.#log, registry: options.registry, workersByState: () => this.#workersByState() });
    this.#store = this.#stats.store;
    const fp = options.certFingerprint;
    this.#minter = new TokenMinter(farmKey, typeof fp === 'function' ? fp : () => fp ?? '');
    this.#maxLine = options.limits?.maxLineBytes ?? 1024 * 1024;
    this.#maxBundle = options.limits?.maxBundleBytes ?? 16 * 1024 * 1024;
    this.#maxStages = options.limits?.maxStages ?? 64;
    this.#maxRunning = options.maxRunningJobs ?? 32;
    this.#repository = options.repository ?? {};
    this.#progressMs = options.progressMs ?? 250;
    intField('limits.maxLineBytes', this.#maxLine, 16, 2 ** 30);
    intField('limits.maxBundleBytes', this.#maxBundle, 1024, 2 ** 30);
    intField('limits.maxStages', this.#maxStages, 1, 10_000);
    intField('maxRunningJobs', this.#maxRunning, 1, 10_000);
    intField('progressMs', this.#progressMs, 10, 60_000);
    this.#handlers.set('map', mapJobHandler);
    this.#handlers.set('optimize', optimizeJobHandler);
    for (const h of options.handlers ?? []) this.#handlers.set(h.kind, h);
    pool.on('lost', (e) => this.#onLost(e));
    pool.on('recruited', (w) => {
      const i = this.#lost.findIndex((l) => l.worker.id === w.id);
      if (i >= 0) this.#lost.splice(i, 1);
    });
  }

  /** @internal Recovery and resume (called once by {@link createJobService}). */
  async start(): Promise<void> {
    const report = await this.#store.recover();
    if (report.requeued > 0 || report.abandonedSubmits > 0) this.#log.info('recovered the store', { ...report });
    this.#progressTimer = setInterval(() => this.#tick(), this.#progressMs);
    this.#progressTimer.unref();
    // Jobs that were running when the manager stopped continue first, then the queue.
    for (const job of await this.#allJobs(['running'])) await this.#locked(job.ticket, () => this.#startRun(job.ticket));
    this.#schedule();
  }

  // ------------------------------------------------------------------ programs

  async missingBundles(caller: Caller, hashes: readonly string[]): Promise<string[]> {
    this.#checkCaller(caller);
    this.#checkOpen();
    if (!Array.isArray(hashes) || hashes.length > 1000)
      throw new InvalidRequestError('Expected `hashes` to be an array of at most 1000 sha256 hex digests', { field: 'hashes' });
    hashes.forEach((h, i) => {
      if (typeof h !== 'string' || !HASH.test(h))
        throw new InvalidRequestError(`Expected \`hashes[${i}]\` to be a sha256 hex digest, got ${describeValue(h)}`, { field: `hashes[${i}]` });
    });
    return this.#store.missingBundles(hashes);
  }

  async putBundle(caller: Caller, hash: string, code: string): Promise<boolean> {
    this.#checkCaller(caller);
    this.#checkOpen();
    if (typeof hash !== 'string' || !HASH.test(hash))
      throw new InvalidRequestError(`Expected the bundle's hash to be a sha256 hex digest, got ${describeValue(hash)}`, { field: 'hash' });
    if (typeof code !== 'string') throw new InvalidRequestError('Expected the bundle to be ES module text', { field: 'code' });
    if (code.length > this.#maxBundle || Buffer.byteLength(code) > this.#maxBundle) {
      throw new TooLargeError(`The bundle is larger than the manager's limit of ${this.#maxBundle} bytes (--max-bundle)`, { limit: this.#maxBundle });
    }
    try {
      return (await this.#store.putBundles([{ hash, code }])) === 1;
    } catch (err) {
      if (err instanceof InvalidOptionError) throw new InvalidRequestError(err.message, { field: 'hash' }, { cause: err });
      throw err;
    }
  }

  // ------------------------------------------------------------------ submit

  async submit(caller: Caller, spec: JobSpec, inputs: AsyncIterable<InputLine | InputBatch> | Iterable<InputLine | InputBatch>): Promise<string> {
    this.#checkCaller(caller);
    this.#checkOpen();
    const work = this.#submit(caller, spec, inputs);
    this.#submits.add(work);
    try {
      return await work;
    } finally {
      this.#submits.delete(work);
    }
  }

  async #submit(caller: Caller, spec: JobSpec, inputs: AsyncIterable<InputLine | InputBatch> | Iterable<InputLine | InputBatch>): Promise<string> {
    const checked = this.#checkSpec(spec);
    const handler = this.#handlers.get(checked.kind);
    if (handler === undefined) throw new InvalidRequestError(`This manager cannot run \`${checked.kind}\` jobs yet`, { field: 'kind' });
    handler.validate?.(spec);
    if (inputs === null || typeof inputs !== 'object' || !(Symbol.asyncIterator in inputs || Symbol.iterator in inputs)) {
      throw new InvalidRequestError('Expected the inputs to be an iterable of {text, line}', { field: 'inputs' });
    }
    const program = await this.#program(checked.stages);
    const ticket = await this.#store.createJob({
      owner: caller.user,
      name: checked.name,
      kind: checked.kind,
      program,
      options: checked.options,
      params: checked.params,
      state: checked.hold ? 'held' : 'queued',
    });
    // One append in flight while the next batch is read and checked (PostgreSQL works meanwhile; SQLite's calls are synchronous anyway).
    let appending: Promise<unknown> | undefined;
    const append = async (texts: string[]): Promise<void> => {
      if (appending !== undefined) await appending;
      appending = this.#store.appendInputs(ticket, texts);
      appending.catch(() => {}); // awaited before the next append or the commit
    };
    try {
      let batch: string[] = [];
      let index = 0;
      const add = (text: string, line: number): void => {
        if (checked.kind === 'optimize' && text.trim().length > 0)
          throw new InvalidRequestError('An optimize job takes no inputs: its populations come from the optimiser (`params`)', { field: 'inputs', line });
        if (text.length > this.#maxLine / 4 && Buffer.byteLength(text) > this.#maxLine) {
          throw new TooLargeError(`Line ${line} is longer than the manager's limit of ${this.#maxLine} bytes per input (--max-line)`, {
            limit: this.#maxLine,
            line,
          });
        }
        let json = text;
        const first = text.charCodeAt(0);
        const last = text.charCodeAt(text.length - 1);
        // Surrounding white space (a CRLF line end) is dropped; a blank line is no input.
        if (text.length === 0 || first <= 32 || last <= 32) {
          json = text.trim();
          if (json.length === 0) return;
        }
        try {
          JSON.parse(json);
        } catch (err) {
          throw new InvalidInputError(`Line ${line} is not JSON: ${(err as Error).message}`, { line: line, index: index }, { cause: err });
        }
        batch.push(json);
        index++;
      };
      for await (const item of inputs) {
        if (this.#closing) throw new ShuttingDownError();
        const texts = (item as Partial<InputBatch> | undefined)?.texts;
        if (Array.isArray(texts)) {
          const from = (item as InputBatch).line;
          for (let k = 0; k < texts.length; k++) {
            const text: unknown = texts[k];
            if (typeof text !== 'string')
              throw new InvalidRequestError(`Expected line ${from + k} of a batch to be the input's JSON text`, { field: 'inputs' });
            add(text, from + k);
            if (batch.length >= SUBMIT_BATCH) {
              await append(batch);
              batch = [];
            }
          }
          continue;
        }
        const text = (item as InputLine | undefined)?.text;
        const line = (item as InputLine | undefined)?.line ?? index + 1;
        if (typeof text !== 'string')
          throw new InvalidRequestError(`Expected input ${index} to be {text, line} with the input's JSON text, or {texts, line}`, { field: 'inputs' });
        add(text, line);
        if (batch.length >= SUBMIT_BATCH) {
          await append(batch);
          batch = [];
        }
      }
      if (this.#closing) throw new ShuttingDownError();
      if (batch.length > 0) await append(batch);
      await appending;
      await this.#store.commitSubmit(ticket);
    } catch (err) {
      await appending?.catch(() => {}); // the store is not written to while the submit is abandoned
      await this.#store.abortSubmit(ticket).catch((e: unknown) => this.#log.warn('abandoning a submit failed (recovery will finish it)', { error: String(e) }));
      if (err instanceof FarmError) throw err;
      throw new InvalidOptionError(`Reading the inputs failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    this.#log.info('job submitted', { ticket, owner: caller.user, kind: checked.kind });
    this.#poke(ticket);
    this.#schedule();
    return ticket;
  }

  #checkSpec(spec: JobSpec): CheckedSpec {
    if (!isObject(spec)) throw new InvalidRequestError(`Expected the job description to be an object, got ${describeValue(spec)}`, { field: 'body' });
    for (const k of Object.keys(spec)) {
      if (!SPEC_KEYS.has(k))
        throw new InvalidRequestError(`Unknown field \`${k}\`; a job takes ${[...SPEC_KEYS].filter((x) => x !== 'inputs').join(', ')}`, { field: k });
    }
    const s = spec as Record<string, unknown>;
    const stages = s['stages'];
    if (!Array.isArray(stages) || stages.length === 0 || stages.length > this.#maxStages) {
      throw new InvalidRequestError(`Expected \`stages\` to be an array of 1 to ${this.#maxStages} stages, got ${describeValue(stages)}`, { field: 'stages' });
    }
    const checkedStages = stages.map((st: unknown, i: number): SubmittedStage => {
      const f = `stages[${i}]`;
      if (!isObject(st)) throw new InvalidRequestError(`Expected \`${f}\` to be {"bundle": sha256} or {"source": "…"}, got ${describeValue(st)}`, { field: f });
      for (const k of Object.keys(st))
        if (k !== 'bundle' && k !== 'source' && k !== 'name') throw new InvalidRequestError(`Unknown field \`${f}.${k}\``, { field: `${f}.${k}` });
      const name = st['name'];
      if (name !== undefined && (typeof name !== 'string' || name.length > 200)) {
        throw new InvalidRequestError(`Expected \`${f}.name\` to be a string of at most 200 characters, got ${describeValue(name)}`, { field: `${f}.name` });
      }
      const named = name === undefined ? {} : { name };
      if ('bundle' in st && 'source' in st) throw new InvalidRequestError(`Give \`${f}.bundle\` or \`${f}.source\`, not both`, { field: f });
      if ('bundle' in st) {
        const b = st['bundle'];
        if (typeof b !== 'string' || !HASH.test(b))
          throw new InvalidRequestError(`Expected \`${f}.bundle\` to be a sha256 hex digest, got ${describeValue(b)}`, { field: `${f}.bundle` });
        return { bundle: b, ...named };
      }
      const src = st['source'];
      if (typeof src !== 'string' || src.trim().length === 0) {
        throw new InvalidRequestError(`Expected \`${f}.source\` to be ES module source text (a default export), got ${describeValue(src)}`, {
          field: `${f}.source`,
        });
      }
      if (Buffer.byteLength(src) > this.#maxBundle)
        throw new TooLargeError(`\`${f}.source\` is larger than the manager's limit of ${this.#maxBundle} bytes`, { limit: this.#maxBundle });
      return { source: src, ...named };
    });
    const name = s['name'] ?? '';
    if (typeof name !== 'string' || name.length > 200)
      throw new InvalidRequestError(`Expected \`name\` to be a string of at most 200 characters, got ${describeValue(name)}`, { field: 'name' });
    const options: { -readonly [K in keyof StoredJobOptions]: StoredJobOptions[K] } = {};
    if (s['priority'] !== undefined) options.priority = intField('priority', s['priority'], -1_000_000, 1_000_000);
    if (s['weight'] !== undefined) {
      const w = s['weight'];
      if (typeof w !== 'number' || !Number.isFinite(w) || w <= 0 || w > 1_000_000) {
        throw new InvalidRequestError(`Expected \`weight\` to be a number in (0, 1000000], got ${describeValue(w)}`, { field: 'weight' });
      }
      options.weight = w;
    }
    if (s['retries'] !== undefined) options.retries = intField('retries', s['retries'], 0, 1000);
    if (s['maxAttempts'] !== undefined) options.maxAttempts = intField('maxAttempts', s['maxAttempts'], 1, 1000);
    if (s['taskTimeoutMs'] !== undefined) options.taskTimeoutMs = intField('taskTimeoutMs', s['taskTimeoutMs'], 1, 2 ** 31 - 1);
    if (s['errors'] !== undefined) {
      if (s['errors'] !== 'fail' && s['errors'] !== 'collect')
        throw new InvalidRequestError(`Expected \`errors\` to be "fail" or "collect", got ${describeValue(s['errors'])}`, { field: 'errors' });
      options.errors = s['errors'];
    }
    const hold = s['hold'] ?? false;
    if (typeof hold !== 'boolean') throw new InvalidRequestError(`Expected \`hold\` to be a boolean, got ${describeValue(hold)}`, { field: 'hold' });
    const kind = s['kind'] ?? 'map';
    if (kind !== 'map' && kind !== 'optimize')
      throw new InvalidRequestError(`Expected \`kind\` to be "map" or "optimize", got ${describeValue(kind)}`, { field: 'kind' });
    const params = s['params'] ?? null;
    try {
      if (JSON.stringify(params) === undefined) throw new TypeError('not a JSON value');
    } catch (err) {
      throw new InvalidRequestError('Expected `params` to be a JSON value', { field: 'params' }, { cause: err });
    }
    return { stages: checkedStages, name, kind, options, hold, params: params as JsonValue };
  }

  /** Bundles inline sources (stored content-addressed) and checks that uploaded bundles are here. */
  async #program(stages: readonly SubmittedStage[]): Promise<StageRef[]> {
    const refs: StageRef[] = [];
    const made: { hash: string; code: string }[] = [];
    for (let i = 0; i < stages.length; i++) {
      const st = stages[i]!;
      if ('source' in st) {
        const b = await bundleSource(st.source, `stages[${i}].source`);
        made.push(b);
        refs.push({ name: st.name ?? `inline-${i}`, hash: b.hash });
      } else refs.push({ name: st.name ?? `stage-${i}`, hash: st.bundle });
    }
    if (made.length > 0) await this.#store.putBundles(made);
    const missing = new Set(await this.#store.missingBundles(refs.map((r) => r.hash)));
    const bad = stages.findIndex((st, i) => 'bundle' in st && missing.has(refs[i]!.hash));
    if (bad >= 0) {
      const hash = refs[bad]!.hash;
      throw new InvalidRequestError(`Bundle ${hash} is not on the manager: upload it first (PUT /api/v1/bundles/${hash})`, { field: `stages[${bad}].bundle` });
    }
    return refs;
  }

  // ------------------------------------------------------------------ reading jobs

  async status(caller: Caller, ticket: string): Promise<JobStatus> {
    this.#checkCaller(caller);
    this.#checkNotClosed();
    return this.#statusOf(await this.#visible(caller, ticket));
  }

  async list(
    caller: Caller,
    options: { readonly all?: boolean; readonly states?: readonly JobState[]; readonly after?: string; readonly limit?: number } = {},
  ): Promise<ServicePage<JobStatus, string>> {
    this.#checkCaller(caller);
    this.#checkNotClosed();
    if (typeof options !== 'object' || options === null) throw new InvalidRequestError('Expected the list options to be an object', { field: 'options' });
    if (options.all !== undefined && typeof options.all !== 'boolean') throw new InvalidRequestError('Expected `all` to be a boolean', { field: 'all' });
    if (options.all === true && !caller.admin) throw new ForbiddenError("Only an admin may list every user's jobs (`all`): your token is not an admin's");
    if (options.states !== undefined) {
      const states: unknown = options.states;
      if (!Array.isArray(states)) throw new InvalidRequestError('Expected `state` to be a list of job states', { field: 'state' });
      for (const st of states as readonly unknown[]) {
        if (typeof st !== 'string' || !(JOB_STATES as readonly string[]).includes(st))
          throw new InvalidRequestError(`Expected \`state\` entries to be job states (${JOB_STATES.join(', ')}), got ${describeValue(st)}`, { field: 'state' });
      }
    }
    if (options.after !== undefined && (typeof options.after !== 'string' || options.after.length > 200))
      throw new InvalidRequestError('Expected `after` to be the `next` cursor of the previous page', { field: 'after' });
    if (options.limit !== undefined) intField('limit', options.limit, 1, 1000);
    let page;
    try {
      page = await this.#store.listJobs({
        ...(options.all === true ? {} : { owner: caller.user }),
        ...(options.states === undefined ? {} : { states: options.states }),
        ...(options.after === undefined ? {} : { after: options.after }),
        ...(options.limit === undefined ? {} : { limit: options.limit }),
      });
    } catch (err) {
      if (err instanceof InvalidOptionError && !(err instanceof InvalidRequestError))
        throw new InvalidRequestError(err.message, { field: 'after' }, { cause: err });
      throw err;
    }
    const items: JobStatus[] = [];
    for (const job of page.items) items.push(await this.#statusOf(job));
    return { items, next: page.next };
  }

  async *results(caller: Caller, ticket: string, options: { readonly after?: number; readonly failedOnly?: boolean } = {}): AsyncIterable<ResultLine> {
    this.#checkCaller(caller);
    this.#checkNotClosed();
    const after = options.after ?? -1;
    intField('after', after, -1, Number.MAX_SAFE_INTEGER);
    const failedOnly = options.failedOnly ?? false;
    if (typeof failedOnly !== 'boolean') throw new InvalidRequestError('Expected `failed` to be a boolean', { field: 'failed' });
    const job = await this.#visible(caller, ticket);
    yield* this.#store.readResults(job.ticket, { after, failedOnly });
  }

  async *events(caller: Caller, ticket: string, options: { readonly after?: number; readonly signal: AbortSignal }): AsyncIterable<ServiceEvent> {
    this.#checkCaller(caller);
    this.#checkNotClosed();
    const after = options.after ?? 0;
    intField('after', after, 0, Number.MAX_SAFE_INTEGER);
    if (!(options.signal instanceof AbortSignal))
      throw new InvalidRequestError('Expected `signal` to be an AbortSignal (events follow the job until it aborts)', { field: 'signal' });
    const job = await this.#visible(caller, ticket);
    let hub = this.#hubs.get(job.ticket);
    if (hub === undefined || hub.closed) {
      hub = new EventHub(this.#store, job.ticket);
      this.#hubs.set(job.ticket, hub);
    }
    try {
      yield* hub.subscribe(after, options.signal);
    } finally {
      if (hub.subscribers === 0 && this.#hubs.get(job.ticket) === hub && !this.#running.has(job.ticket)) this.#hubs.delete(job.ticket);
    }
  }

  async tasks(
    caller: Caller,
    ticket: string,
    options: { readonly state?: TaskState; readonly after?: number; readonly limit?: number } = {},
  ): Promise<ServicePage<TaskRowView, number>> {
    this.#checkCaller(caller);
    this.#checkNotClosed();
    if (options.state !== undefined && !(TASK_STATES as readonly string[]).includes(options.state)) {
      throw new InvalidRequestError(`Expected \`state\` to be a task state (${TASK_STATES.join(', ')}), got ${describeValue(options.state)}`, {
        field: 'state',
      });
    }
    if (options.after !== undefined) intField('after', options.after, -1, Number.MAX_SAFE_INTEGER);
    if (options.limit !== undefined) intField('limit', options.limit, 1, 1000);
    const job = await this.#visible(caller, ticket);
    return this.#store.listTasks(job.ticket, options);
  }

  async jobStats(caller: Caller, ticket: string): Promise<JobStatsView> {
    this.#checkCaller(caller);
    this.#checkNotClosed();
    return this.#stats.view(await this.#visible(caller, ticket));
  }

  async failures(
    caller: Caller,
    ticket: string,
    options: { readonly after?: number; readonly limit?: number } = {},
  ): Promise<ServicePage<{ readonly index: number; readonly error: TaskFailure }, number>> {
    this.#checkCaller(caller);
    this.#checkNotClosed();
    if (options.after !== undefined) intField('after', options.after, -1, Number.MAX_SAFE_INTEGER);
    if (options.limit !== undefined) intField('limit', options.limit, 1, 1000);
    const job = await this.#visible(caller, ticket);
    return this.#store.listFailures(job.ticket, options);
  }

  // ------------------------------------------------------------------ actions

  async cancel(caller: Caller, ticket: string): Promise<JobStatus> {
    return this.#act(caller, ticket, ['queued', 'running', 'held'], 'cancelled', (t) => this.#store.cancelJob(t));
  }

  async hold(caller: Caller, ticket: string): Promise<JobStatus> {
    return this.#act(caller, ticket, ['queued', 'running'], 'held', (t) => this.#store.holdJob(t));
  }

  async release(caller: Caller, ticket: string): Promise<JobStatus> {
    const status = await this.#act(caller, ticket, ['held'], 'released', (t) => this.#store.releaseJob(t));
    this.#schedule();
    return status;
  }

  async resubmit(caller: Caller, ticket: string, options: { readonly failedOnly?: boolean } = {}): Promise<JobStatus> {
    const failedOnly = options.failedOnly ?? false;
    if (typeof failedOnly !== 'boolean') throw new InvalidRequestError('Expected `failed` to be a boolean', { field: 'failed' });
    const status = await this.#act(caller, ticket, FINISHED_JOB_STATES, 'resubmitted', async (t) => {
      this.#failuresCache.delete(t);
      const done = await this.#store.resubmitJob(t, { failedOnly });
      // Every task runs again: the plots start again too (a resubmit of the failed ones adds to them).
      if (done.changed && !failedOnly) await this.#stats.reset(t);
      return done;
    });
    this.#schedule();
    return status;
  }

  async remove(caller: Caller, ticket: string): Promise<void> {
    this.#checkCaller(caller);
    this.#checkOpen();
    const job = await this.#visible(caller, ticket);
    await this.#locked(job.ticket, async () => {
      await this.#stopRun(job.ticket);
      this.#cancelRestart(job.ticket);
      if (!(await this.#store.removeJob(job.ticket))) throw new JobNotFoundError(job.ticket);
      this.#failuresCache.delete(job.ticket);
      this.#stats.forget(job.ticket);
      const hub = this.#hubs.get(job.ticket);
      this.#hubs.delete(job.ticket);
      hub?.close();
    });
    this.#log.info('job removed', { ticket: job.ticket });
    this.#schedule();
  }

  /** One state change: its run stopped first (tasks in flight cancelled, settlements committed), then the store's transition. */
  async #act(caller: Caller, ticket: string, from: readonly JobState[], verb: string, transition: (ticket: string) => Promise<Transition>): Promise<JobStatus> {
    this.#checkCaller(caller);
    this.#checkOpen();
    const visible = await this.#visible(caller, ticket);
    const job = await this.#locked(visible.ticket, async () => {
      const now = (await this.#store.getJob(visible.ticket)) ?? visible;
      if (!from.includes(now.state)) throw this.#stateError(now, verb, from);
      await this.#stopRun(now.ticket);
      this.#cancelRestart(now.ticket);
      const t = await transition(now.ticket);
      this.#poke(now.ticket);
      if (!t.changed) throw this.#stateError(t.job, verb, from);
      return t.job;
    });
    this.#log.info(`job ${verb}`, { ticket: job.ticket, state: job.state });
    return this.#statusOf(job);
  }

  #stateError(job: JobRecord, verb: string, from: readonly JobState[]): JobStateError {
    const article = /^[aeiou]/.test(from[0] ?? '') ? 'an' : 'a';
    return new JobStateError(
      job.ticket,
      job.state,
      `Job ${job.ticket} is ${job.state}: only ${article} ${from.join(', ').replace(/, ([^,]*)$/, ' or $1')} job can be ${verb}`,
    );
  }

  // ------------------------------------------------------------------ farm

  // eslint-disable-next-line @typescript-eslint/require-await -- async so that a bad call rejects, never throws
  async workers(caller: Caller): Promise<ServiceWorker[]> {
    this.#checkCaller(caller);
    this.#checkNotClosed();
    const tickets = new Map<string, string>();
    for (const r of this.#running.values()) for (const id of r.run.poolJobIds()) tickets.set(id, r.ticket);
    const live: ServiceWorker[] = this.#pool.workers().map((w) => ({
      id: w.id,
      host: w.host,
      address: w.address,
      threads: w.threads,
      local: w.local,
      state: w.state,
      inFlight: w.inFlight,
      completed: w.completed,
      avgTaskMs: w.avgTaskMs,
      jobs: w.jobs.flatMap((id) => {
        const t = tickets.get(id);
        // A user is told of their own jobs only (another's ticket is not theirs to know).
        return t === undefined || (!caller.admin && this.#stats.ownerOf(t) !== caller.user) ? [] : [t];
      }),
    }));
    const ids = new Set(live.map((w) => w.id));
    return [...live, ...this.#lost.filter((l) => !ids.has(l.worker.id)).map((l) => l.worker)];
  }

  async worker(caller: Caller, id: string): Promise<ServiceWorkerDetail> {
    if (typeof id !== 'string' || id.length === 0 || id.length > 200) throw new NotFoundError(`No worker ${String(id).slice(0, 200)}`);
    const worker = (await this.workers(caller)).find((w) => w.id === id);
    const detail = this.#stats.worker(id, (owner) => caller.admin || owner === caller.user);
    if (worker === undefined) throw new NotFoundError(`No worker ${id} (GET /api/v1/workers lists them)`);
    return { worker, jobs: detail?.jobs ?? [], durations: detail?.durations ?? this.#stats.emptyHistogram(), losses: detail?.losses ?? [] };
  }

  #workersByState(): Record<'idle' | 'busy' | 'draining' | 'lost', number> {
    const counts = { idle: 0, busy: 0, draining: 0, lost: 0 };
    const ids = new Set<string>();
    for (const w of this.#pool.workers()) {
      counts[w.state]++;
      ids.add(w.id);
    }
    for (const l of this.#lost) if (!ids.has(l.worker.id)) counts.lost++;
    return counts;
  }

  #onLost(e: WorkerLostEvent): void {
    const i = this.#lost.findIndex((l) => l.worker.id === e.worker.id);
    if (i >= 0) this.#lost.splice(i, 1);
    this.#lost.push({
      at: Date.now(),
      worker: {
        id: e.worker.id,
        host: e.worker.host,
        address: e.worker.address,
        threads: e.worker.threads,
        local: e.worker.local,
        state: 'lost',
        inFlight: 0,
        completed: 0,
        avgTaskMs: -1,
        jobs: [],
        lost: e.reason,
      },
    });
    if (this.#lost.length > LOST_HISTORY) this.#lost.splice(0, this.#lost.length - LOST_HISTORY);
  }

  // ------------------------------------------------------------------ tokens

  async authenticate(token: string): Promise<Caller | undefined> {
    this.#checkNotClosed();
    if (typeof token !== 'string' || token.length === 0 || token.length > 512) return undefined;
    const record = await this.#store.findToken(token);
    return record === undefined ? undefined : { user: record.user, admin: record.admin };
  }

  // eslint-disable-next-line @typescript-eslint/require-await -- async so that a bad call rejects, never throws
  async tokenChallenge(): Promise<string> {
    this.#checkOpen();
    return this.#minter.challenge();
  }

  async createToken(request: {
    readonly user: string;
    readonly admin: boolean;
    readonly label?: string;
    readonly nonce: string;
    readonly proof: string;
  }): Promise<{ readonly token: string; readonly id: string; readonly user: string; readonly admin: boolean }> {
    this.#checkOpen();
    const ok = this.#minter.verify(request);
    const t = await this.#store.createToken(ok);
    this.#log.info('token minted', { user: t.user, admin: t.admin, id: t.id });
    return { token: t.token, id: t.id, user: t.user, admin: t.admin };
  }

  // ------------------------------------------------------------------ life

  async healthy(): Promise<boolean> {
    if (this.#closing) return false;
    try {
      await this.#store.getJob(NO_SUCH_TICKET);
      return true;
    } catch {
      return false;
    }
  }

  close(graceMs = 10_000): Promise<void> {
    this.#closed ??= this.#close(graceMs);
    return this.#closed;
  }

  async #close(graceMs: number): Promise<void> {
    this.#closing = true;
    clearInterval(this.#progressTimer);
    for (const r of this.#restarts.values()) clearTimeout(r.timer);
    this.#restarts.clear();
    const grace = new AbortController();
    const timer = setTimeout(() => grace.abort(), Math.max(0, graceMs));
    try {
      // A scheduling pass under way starts no more runs (it checks #closing) but may be finishing one.
      await this.#scheduling?.catch(() => {});
      // No new dispatch; what is in flight finishes within the grace period.
      const runs = [...this.#running.values()];
      for (const r of runs) r.stopping = true;
      await Promise.all(runs.map((r) => r.run.drain(grace.signal)));
      await Promise.race([Promise.allSettled([...this.#submits]), new Promise((r) => grace.signal.addEventListener('abort', r, { once: true }))]);
      await Promise.all(runs.map((r) => r.run.stop()));
      await this.#pool.close();
      // Actions and ends of runs already under way finish before the store closes.
      await Promise.all([...this.#locks.values()]);
      for (const r of runs) {
        await this.#report(r).catch(() => {});
        await r.run
          .returnClaimed()
          .catch((err: unknown) => this.#log.warn('handing claimed tasks back failed (recovery will)', { ticket: r.ticket, error: String(err) }));
        this.#poke(r.ticket);
      }
      this.#running.clear();
    } finally {
      clearTimeout(timer);
      // The statistics of the runs stopped above are saved before the store closes.
      await this.#stats.close().catch((err: unknown) => this.#log.warn('saving statistics on close failed', { error: String(err) }));
      for (const hub of this.#hubs.values()) hub.close();
      this.#hubs.clear();
      this.#storeClosed = true;
      try {
        await this.#store.close();
      } finally {
        this.#lock?.release();
      }
    }
  }

  // ------------------------------------------------------------------ scheduling

  /** Starts queued jobs while there is room, highest priority first (then oldest). Coalesced: one pass at a time. */
  #schedule(): void {
    if (this.#closing) return;
    if (this.#scheduling !== undefined) {
      this.#scheduleAgain = true;
      return;
    }
    this.#scheduling = (async () => {
      do {
        this.#scheduleAgain = false;
        if (this.#running.size >= this.#maxRunning) break;
        const queued = (await this.#allJobs(['queued'])).sort((a, b) => (b.options.priority ?? 0) - (a.options.priority ?? 0) || a.createdAt - b.createdAt);
        for (const job of queued) {
          if (this.#closing || this.#running.size >= this.#maxRunning) break;
          if (this.#running.has(job.ticket)) continue;
          await this.#locked(job.ticket, () => this.#startRun(job.ticket));
        }
      } while (this.#scheduleAgain && !this.#closing);
    })()
      .catch((err: unknown) => this.#log.error('scheduling failed', { error: String(err) }))
      .finally(() => {
        this.#scheduling = undefined;
      });
  }

  /** Every job in these states (keyset pages). */
  async #allJobs(states: readonly JobState[]): Promise<JobRecord[]> {
    const out: JobRecord[] = [];
    let after: string | undefined;
    for (let pages = 0; pages < 100; pages++) {
      const page = await this.#store.listJobs({ states, limit: 1000, ...(after === undefined ? {} : { after }) });
      out.push(...page.items);
      if (page.next === null) break;
      after = page.next;
    }
    return out;
  }

  /** Starts a queued or running job's run on the pool. Call under the job's lock. */
  async #startRun(ticket: string): Promise<void> {
    if (this.#closing || this.#running.has(ticket)) return;
    let job = await this.#store.getJob(ticket);
    if (job === undefined || (job.state !== 'queued' && job.state !== 'running')) return;
    if (job.state === 'queued') {
      const t = await this.#store.startJob(ticket);
      this.#poke(ticket);
      if (!t.changed) return;
      job = t.job;
    }
    const handler = this.#handlers.get(job.kind);
    if (handler === undefined) {
      await this.#finish(job.ticket, { type: 'failed', error: { code: 'FARM_ERR_INVALID_OPTION', message: `This manager cannot run \`${job.kind}\` jobs` } });
      return;
    }
    const errors = job.options.errors ?? 'fail';
    if (errors === 'fail' && job.counts.failed > 0) {
      // The manager stopped between recording a failure and failing the job: finish what it started.
      const first = (await this.#store.listFailures(ticket, { limit: 1 })).items[0];
      await this.#finish(job.ticket, {
        type: 'failed',
        error: {
          code: first?.error.code || 'FARM_ERR_TASK',
          message: `Task for input ${first?.index ?? '?'} failed: ${first?.error.name}: ${first?.error.message}`,
          ...(first === undefined ? {} : { index: first.index }),
        },
      });
      return;
    }
    let program: BundledProgram;
    try {
      program = await this.#bundled(job.program);
    } catch (err) {
      await this.#finish(job.ticket, { type: 'failed', error: { code: (err as FarmError).code ?? 'FARM_ERR_INVALID_STAGE', message: (err as Error).message } });
      return;
    }
    const o = job.options;
    const options: JobOptions = {
      name: job.name === '' ? job.ticket : job.name,
      ...(o.priority === undefined ? {} : { priority: o.priority }),
      ...(o.weight === undefined ? {} : { weight: o.weight }),
      ...(o.retries === undefined ? {} : { retries: o.retries }),
      ...(o.maxAttempts === undefined ? {} : { maxAttempts: o.maxAttempts }),
      ...(o.taskTimeoutMs === undefined ? {} : { taskTimeoutMs: o.taskTimeoutMs }),
      errors,
    };
    const r: Running = {
      ticket,
      errors,
      counts: job.counts,
      total: job.total,
      samples: new RateRing(),
      dirty: false,
      failures: [],
      stopping: false,
      reporting: Promise.resolve(),
      run: undefined as unknown as JobRun,
    };
    r.samples.add(Date.now(), settledOf(job.counts));
    const live = await this.#stats.begin(job);
    const run = handler.start({
      store: this.#store,
      pool: this.#pool,
      job,
      program,
      options,
      repository: { ...this.#repository, observer: live.observer },
      onCommit: (result: SettleResult, failures: readonly FailureEntry[]) => {
        live.commit(result);
        r.counts = result.counts;
        r.dirty = true;
        for (const f of failures) if (r.failures.length < FAILURE_EVENTS_PER_TICK) r.failures.push(f);
      },
      notify: () => this.#poke(ticket),
    });
    (r as { run: JobRun }).run = run;
    this.#running.set(ticket, r);
    if (job.kind === 'optimize') {
      // After a restart (or a release, a resubmit) the run continues from the last committed generation.
      if (job.generation === null) this.#log.info('job started', { ticket, kind: job.kind });
      else this.#log.info('job resumed', { ticket, kind: job.kind, fromGeneration: job.generation + 1, lastCommitted: job.generation });
    } else this.#log.info('job started', { ticket, total: job.total, done: job.counts.done, failed: job.counts.failed });
    void run.outcome.then((outcome) =>
      this.#locked(ticket, () => this.#ended(r, outcome)).catch((err: unknown) => this.#log.error('ending a job failed', { ticket, error: String(err) })),
    );
  }

  /** A run ended by itself (every task settled, a failure, an interruption). Under the job's lock. */
  async #ended(r: Running, outcome: JobOutcome): Promise<void> {
    if (this.#running.get(r.ticket) !== r || r.stopping) return; // an action stopped it and made the transition
    this.#running.delete(r.ticket);
    await this.#stats.end(r.ticket);
    if (outcome.type === 'stopped') return;
    if (outcome.type === 'interrupted') {
      this.#log.warn('a job was interrupted; it starts again shortly', { ticket: r.ticket, error: String(outcome.error) });
      this.#restartLater(r);
      return;
    }
    this.#restarts.delete(r.ticket);
    try {
      await this.#report(r);
      await this.#finish(r.ticket, outcome);
    } catch (err) {
      // The store refused the end of the job: it is still running there, and a new run finds it complete.
      this.#log.warn('finishing a job failed; trying again shortly', { ticket: r.ticket, error: String(err) });
      this.#restartLater(r);
      return;
    }
    this.#schedule();
  }

  /** Records the outcome in the store: `failTasks` for the task that failed the job, then `finishJob`. */
  async #finish(ticket: string, outcome: JobOutcome): Promise<void> {
    if (outcome.type === 'failed') {
      if (outcome.failure !== undefined) await this.#store.failTasks(ticket, [outcome.failure]);
      await this.#store.finishJob(ticket, 'failed', outcome.error);
    } else if (outcome.type === 'done') await this.#store.finishJob(ticket, 'done');
    this.#poke(ticket);
    this.#log.info(`job ${outcome.type}`, { ticket });
  }

  /** An interrupted run (the store failed): its claimed tasks go back, and the job starts again after a backoff. */
  #restartLater(r: Running): void {
    if (this.#closing) return;
    const st = this.#restarts.get(r.ticket) ?? { timer: undefined, attempts: 0 };
    const wait = RESTART_MS[Math.min(st.attempts, RESTART_MS.length - 1)]!;
    st.attempts++;
    st.timer = setTimeout(() => {
      st.timer = undefined;
      void this.#locked(r.ticket, async () => {
        if (this.#closing) return;
        try {
          await r.run.returnClaimed();
        } catch (err) {
          this.#restartLater(r);
          return;
        }
        await this.#startRun(r.ticket);
      }).catch((err: unknown) => {
        this.#log.warn('restarting a job failed', { ticket: r.ticket, error: String(err) });
        this.#restartLater(r);
      });
    }, wait);
    st.timer.unref();
    this.#restarts.set(r.ticket, st);
  }

  #cancelRestart(ticket: string): void {
    const st = this.#restarts.get(ticket);
    if (st !== undefined) clearTimeout(st.timer);
    this.#restarts.delete(ticket);
  }

  /** Stops a job's run if it has one (its tasks in flight cancelled, what it settled committed, its claims handed back). Under the job's lock. */
  async #stopRun(ticket: string): Promise<void> {
    const r = this.#running.get(ticket);
    if (r === undefined) return;
    r.stopping = true;
    await r.run.stop();
    this.#running.delete(ticket);
    await this.#report(r).catch(() => {});
    await this.#stats.end(ticket);
  }

  /** The stages of a stored program, as the pool runs them. */
  async #bundled(program: readonly StageRef[]): Promise<BundledProgram> {
    const bundles = new Map((await this.#store.getBundles(program.map((s) => s.hash))).map((b) => [b.hash, b.code]));
    return {
      kind: 'bundled',
      stages: program.map((s) => {
        const code = bundles.get(s.hash);
        if (code === undefined) throw new StoreError(`The job's bundle ${s.hash} (${s.name}) is missing from the store`);
        return { name: s.name, hash: s.hash, code };
      }),
    };
  }

  // ------------------------------------------------------------------ progress and events

  /** Every progress period: samples each running job's rate and appends its coalesced events. */
  #tick(): void {
    const now = Date.now();
    for (const r of this.#running.values()) {
      r.samples.add(now, settledOf(r.counts));
      if (r.dirty) void this.#report(r).catch((err: unknown) => this.#log.warn('appending progress failed', { ticket: r.ticket, error: String(err) }));
    }
  }

  /** Appends a job's pending progress and failure events (one transaction) and wakes its subscribers. */
  #report(r: Running): Promise<void> {
    // Appends of one job are chained, so the final progress lands before the state change that follows it.
    r.reporting = r.reporting
      .catch(() => {})
      .then(async () => {
        if (!r.dirty && r.failures.length === 0) return;
        r.dirty = false;
        const failures = r.failures;
        r.failures = [];
        const rate = r.samples.rate(Date.now(), settledOf(r.counts));
        const left = r.total - settledOf(r.counts);
        const events: NewEvent[] = failures.map((f) => ({
          type: 'failure',
          data: { index: f.index, error: { name: f.error.name, message: f.error.message } },
        }));
        events.push({ type: 'progress', data: { counts: { ...r.counts }, rate, etaSeconds: rate !== null && rate > 0 ? left / rate : null } });
        await this.#store.appendEvents(r.ticket, events);
        this.#poke(r.ticket);
      });
    return r.reporting;
  }

  #poke(ticket: string): void {
    this.#hubs.get(ticket)?.poke();
  }

  // ------------------------------------------------------------------ helpers

  async #statusOf(job: JobRecord): Promise<JobStatus> {
    const r = this.#running.get(job.ticket);
    const rate = r === undefined ? null : r.samples.rate(Date.now(), settledOf(job.counts));
    const left = job.total - settledOf(job.counts);
    return {
      ticket: job.ticket,
      name: job.name,
      owner: job.owner,
      kind: job.kind,
      state: job.state,
      total: job.total,
      counts: job.counts,
      rate,
      etaSeconds: rate !== null && rate > 0 ? left / rate : left === 0 && job.state === 'running' ? 0 : null,
      failures: await this.#firstFailures(job),
      options: job.options as Readonly<Record<string, JsonValue>>,
      createdAt: job.createdAt,
      startedAt: job.startedAt,
      finishedAt: job.finishedAt,
      error:
        job.error === null ? null : { code: job.error.code, message: job.error.message, ...(job.error.index === undefined ? {} : { index: job.error.index }) },
      result: job.result,
      generation: job.generation,
      lastEventSeq: job.lastEventSeq,
    };
  }

  async #firstFailures(job: JobRecord): Promise<JobStatus['failures']> {
    if (job.counts.failed === 0) return [];
    const cached = this.#failuresCache.get(job.ticket);
    if (cached !== undefined && cached.failed === job.counts.failed) return cached.items;
    const page = await this.#store.listFailures(job.ticket, { limit: 10 });
    const items = page.items.map((f) => ({ index: f.index, error: { name: f.error.name, message: f.error.message } }));
    this.#failuresCache.set(job.ticket, { failed: job.counts.failed, items });
    if (this.#failuresCache.size > 10_000) this.#failuresCache.delete(this.#failuresCache.keys().next().value!);
    return items;
  }

  /** The job, if the caller may see it; JobNotFoundError otherwise (another user's job looks exactly like no job). */
  async #visible(caller: Caller, ticket: string): Promise<JobRecord> {
    if (typeof ticket !== 'string' || !TICKET.test(ticket)) throw new JobNotFoundError(typeof ticket === 'string' ? ticket : String(ticket));
    const job = await this.#store.getJob(ticket.toLowerCase());
    if (job === undefined || (!caller.admin && job.owner !== caller.user)) throw new JobNotFoundError(ticket);
    return job;
  }

  #checkCaller(caller: Caller): void {
    if (!isObject(caller) || typeof caller.user !== 'string' || caller.user.length === 0 || typeof caller.admin !== 'boolean') {
      throw new AuthenticationError('No caller: every request needs a token (Authorization: Bearer …)');
    }
  }

  #checkOpen(): void {
    if (this.#closing) throw new ShuttingDownError();
  }

  /** Reads go on while the service drains; once its store is closed they answer 503 too. */
  #checkNotClosed(): void {
    if (this.#storeClosed) throw new ShuttingDownError();
  }

  /** Runs `fn` after every earlier call for the same ticket (actions and the end of runs, in order). */
  #locked<T>(ticket: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(ticket) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    this.#locks.set(ticket, tail);
    void tail.then(() => {
      if (this.#locks.get(ticket) === tail) this.#locks.delete(ticket);
    });
    return run;
  }
}

/**
 * Opens the job service on a store and a pool: runs the store's recovery (tasks that were running
 * are pending again, abandoned submits removed), resumes every running job and starts the queued
 * ones, then resolves. The service owns the store and the pool from then on; `close()` closes both.
 * @example
 * const service = await createJobService({ store: '/var/lib/taskfarm/jobs.db', peers: ['node1:7000', 'node2:7000'] });
 * const ticket = await service.submit({ user: 'ada', admin: false }, { stages: [{ source: 'export default (x) => x * 2' }] }, [{ text: '1', line: 1 }]);
 */
export async function createJobService(options: JobServiceOptions = {}): Promise<StoreJobService> {
  if (typeof options !== 'object' || options === null) throw new InvalidOptionError('Expected the job service options to be an object');
  const shortcuts =
    options.peers !== undefined || options.farm !== undefined || options.keyFile !== undefined || options.insecure !== undefined || options.local !== undefined;
  if (options.pool !== undefined && (options.poolOptions !== undefined || shortcuts)) {
    throw new InvalidOptionError(
      'Give either `pool` or the options of the pool to make (`poolOptions`, `peers`, `farm`, `keyFile`, `insecure`, `local`), not both',
    );
  }
  if (options.insecure === true && (options.key !== undefined || options.keyFile !== undefined)) {
    throw new InvalidOptionError('Give either a farm key (`key`, `keyFile`) or `insecure: true`, not both');
  }
  const keyText = options.key === undefined ? undefined : typeof options.key === 'string' ? options.key : Buffer.from(options.key).toString('base64url');
  const poolOptions: FarmPoolOptions = {
    workerWaitMs: Number.POSITIVE_INFINITY,
    ...options.poolOptions,
    ...(options.local === true ? { discovery: 'local' as const } : {}),
    ...(options.peers === undefined ? {} : { peers: options.peers }),
    ...(options.farm === undefined ? {} : { farm: options.farm }),
    ...(options.insecure === undefined ? {} : { insecure: options.insecure }),
    ...(options.local === true || options.insecure === true
      ? {}
      : keyText !== undefined
        ? { key: keyText }
        : options.keyFile !== undefined
          ? { keyFile: options.keyFile }
          : {}),
  };
  // The minting key: the one given, else what the pool would use.
  const key =
    keyText !== undefined
      ? parseFarmKey(keyText, 'option `key`')
      : resolveFarmKey({ key: poolOptions.key, keyFile: options.keyFile ?? poolOptions.keyFile })?.key;
  const pool = options.pool ?? new FarmPool(poolOptions);
  let store: JobStore;
  let lock: StoreLock | undefined;
  if (typeof options.store === 'object' && options.store !== null) store = options.store;
  else {
    if (options.store !== undefined && typeof options.store !== 'string')
      throw new InvalidOptionError('Expected `store` to be a JobStore, a SQLite path or a postgres:// URL');
    const location = options.store === undefined || options.store === '' ? defaultStorePath() : options.store;
    store = await openJobStore(location);
    if ((store instanceof SqliteJobStore || store instanceof ThreadedSqliteJobStore) && store.path !== ':memory:') {
      try {
        lock = lockStore(store.path);
      } catch (err) {
        await store.close();
        await pool.close();
        throw err;
      }
    }
  }
  let service: StoreJobService;
  try {
    service = new StoreJobService(options, store, pool, key, lock);
  } catch (err) {
    // Bad options: release what was opened here (a store or pool passed in stays the caller's).
    lock?.release();
    if (typeof options.store !== 'object') await store.close().catch(() => {});
    if (options.pool === undefined) await pool.close().catch(() => {});
    throw err;
  }
  try {
    await service.start();
  } catch (err) {
    await service.close(0).catch(() => {});
    throw err;
  }
  return service;
}
