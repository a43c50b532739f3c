/**
 * A warm pool of workers serving many jobs at once (PARK's Mapper). The pool owns what outlives a
 * job: discovery, recruiting, the live links, local fallback. Each job ({@link JobState}) owns its
 * task repository, attempts and stats. Between them sits one pure allocation policy (priority, then
 * weight, with backfill): whenever a worker has room for a batch, the job furthest below its share
 * gets it. A lease carries several programs at once (protocol 3), so switching jobs costs nothing
 * and a higher-priority job never waits for a recruit. Every wait has an owner that ends it: the
 * last output, the first fatal error, the abort signal, the wait for workers, or close().
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import PQueue from 'p-queue';
import {
  AuthenticationError,
  FarmAbortError,
  FarmError,
  InvalidStageError,
  NoWorkersError,
  ProtocolError,
  StageSetupError,
  TaskCrashedError,
  TaskError,
  TaskTimeoutError,
  UnsendableInputError,
  WorkerBusyError,
  WorkerLostError,
  type RemoteErrorInfo,
} from '../errors.js';
import { componentLogger, type Logger } from '../log.js';
import {
  asRemoteError,
  decodeOutcomes,
  encodeInputs,
  bundleHash,
  findUnsendable,
  INLINE_BUNDLE_MARKER,
  PROTOCOL_VERSION,
  RemoteErrorKind,
  type ExecResults,
} from '../protocol/index.js';
import { MdnsDiscovery, StaticDiscovery, endpointKey, formatTarget, type Discovery, type WorkerEndpoint } from '../discovery/index.js';
import { NO_KEY_HELP } from '../security/index.js';
import { noWorkerReason, refusalReason } from './no-workers.js';
import { normalForm, stagesOf, type Program } from '../skeleton/index.js';
import { checkStages, prepareStages, type PreparedStage } from './bundler.js';
import { prepareShared } from './shared.js';
import { FarmJob, JobState, type FarmProgress, type Lane, type WorkerLostEvent } from './job.js';
import type { LinkHandlers, WorkerInfo, WorkerLink } from './link.js';
import { LocalLink } from './local-link.js';
import { RemoteLink } from './remote-link.js';
import { isResolvedPoolOptions, resolveJobOptions, resolvePoolOptions, type FarmPoolOptions, type JobOptions, type ResolvedPoolOptions } from './options.js';
import { MemoryTaskRepository, type InputSource, type TaskRecord, type TaskRepository } from './repository.js';
import { firstComeFirstServed, type WorkerView } from './scheduling.js';
import {
  allocate,
  batchSizeFor,
  decideRetry,
  ewma,
  isStuck,
  recruitBackoffMs,
  recruitFailureOf,
  isSmallJob,
  shareRoom,
  stragglerThresholdMs,
  windowFor,
  type FailureKind,
  type JobDemand,
} from './policy/index.js';

/** A program already bundled: stage modules as code, content-addressed (what a job service receives). */
export interface BundledProgram {
  readonly kind: 'bundled';
  readonly stages: readonly { readonly name: string; readonly hash: string; readonly code: string | Uint8Array }[];
}

/**
 * Bundles a program's stages (normal form first) into ES modules with their sha256, as a pool ships
 * them; the result can be stored and run later with {@link FarmPool.run}.
 */
export async function bundleProgram(program: Program, options: { readonly cwd?: string } = {}): Promise<BundledProgram> {
  const stages = stagesOf(normalForm(program));
  const cwd = options.cwd ?? process.cwd();
  checkStages(stages, cwd);
  const prepared = await prepareStages(stages, cwd);
  return { kind: 'bundled', stages: prepared.map((s) => ({ name: s.name, hash: s.hash, code: s.code.toString('utf8') })) };
}

/** Payload of the pool's `fallback` event. */
export interface FallbackEvent {
  /** Why the pool computes on local threads instead of (or besides) workers. */
  readonly reason: string;
}

/** The events of a {@link FarmPool}. */
export interface PoolEvents {
  recruited: [worker: WorkerInfo];
  lost: [event: WorkerLostEvent];
  /** The pool started computing on local threads, and why. */
  fallback: [event: FallbackEvent];
}

/** A worker of the pool, as {@link FarmPool.workers} reports it. */
export interface PoolWorker extends WorkerInfo {
  /** `idle`: nothing in flight; `busy`: computing; `draining`: shutting down. */
  readonly state: 'idle' | 'busy' | 'draining';
  /** Tasks in flight on it now. */
  readonly inFlight: number;
  /** Tasks it completed since it joined the pool. */
  readonly completed: number;
  /** Its recent task time in ms (-1 while unknown). */
  readonly avgTaskMs: number;
  /** Ids of the jobs it computes now. */
  readonly jobs: readonly string[];
}

/**
 * Results processed back to back in one turn of the event loop, at most (ms); the rest wait for the
 * next turn (see FarmPool.#receive).
 */
const RESULTS_SLICE_MS = 1;
/**
 * Messages of results waiting, at most: past it the pool is not keeping up (many workers, a busy
 * process) and the waiting ones are processed without a time limit until half are left, so that
 * the slices never starve the results (and with them the dispatch).
 */
const RESULTS_BACKLOG = 64;
/** Results settled between two looks at the clock while a turn's budget lasts (see FarmPool.#onResults). */
const RESULTS_CHUNK = 64;

/** A message of results waiting for its turn; `from` is where its processing resumes. */
interface DeferredResults {
  readonly m: Member;
  readonly r: ExecResults;
  from: number;
  decoded: { flags: Uint8Array; values: unknown[] } | undefined;
}

interface BatchCount {
  left: number;
}

interface Flight {
  readonly rec: TaskRecord;
  readonly job: JobState;
  readonly lane: Lane;
  readonly batch: BatchCount;
}

interface Member {
  readonly link: WorkerLink;
  /** Endpoint key (undefined for local threads). */
  readonly key: string | undefined;
  readonly inFlight: Map<number, Flight>;
  readonly lanes: Map<JobState, Lane>;
  /** Programs started on the link, by key, with when last used (to unload the least recently used). */
  readonly programs: Map<string, number>;
  nextSeq: number;
  /** Batches in flight. */
  batches: number;
  /** Batches in flight at most. */
  window: number;
  completed: number;
  avgTaskMs: number;
  /** When it last delivered results (or was given work while it had none), Date.now(). */
  lastResultAt: number;
  alive: boolean;
  draining: boolean;
  /** Tasks a draining worker gave back (`cancelled`) and that went back to their jobs. */
  drainRequeued: number;
}

interface EndpointState {
  endpoint: WorkerEndpoint;
  connecting: boolean;
  member: Member | undefined;
  nextTry: number;
  failures: number;
  /** Removed by discovery or unusable: do not retry. */
  retired: boolean;
  /** Its first recruit attempt has not finished yet (it holds a share of a known-size workload). */
  firstAttempt: boolean;
}

/** Error kinds a worker reports; anything else is a broken worker. */
const KNOWN_KINDS: ReadonlySet<string> = new Set<string>(Object.values(RemoteErrorKind));

/** True for an error outcome as workers produce it: a plain object whose `kind` is one we know. */
function isRemoteError(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) return false;
  const kind = (v as { kind?: unknown }).kind;
  return typeof kind === 'string' && KNOWN_KINDS.has(kind);
}

/** How many of an overdue worker's oldest in-flight tasks speculation looks at. */
const SPECULATION_SCAN = 64;
const PROGRESS_EVERY_MS = 100;

let jobCounter = 0;

/**
 * A pool of workers kept recruited and warm, serving many jobs at once. Workers are found and
 * recruited as for a {@link TaskFarm} (mDNS, `peers` or a Discovery; hot-join, loss, rejoin, local
 * fallback) and kept until {@link FarmPool.close}. Jobs share them by priority, then weight, with
 * backfill; a job whose program the workers already hold starts at once.
 *
 * Events: `recruited` (WorkerInfo), `lost` (WorkerLostEvent), `fallback` ({ reason }).
 *
 * @example
 * await using pool = new FarmPool({ peers: ['node1:7000', 'node2:7000'] });
 * const squares = await pool.map((x: number) => x * x, [1, 2, 3]);
 * const urgent = pool.run('./fit.ts', params, { priority: 10 });
 * const fits = await urgent.compute();
 */
export class FarmPool extends EventEmitter<PoolEvents> {
  readonly #o: ResolvedPoolOptions;
  readonly #log: Logger;
  readonly #clientId = randomUUID();
  readonly #members = new Set<Member>();
  /** Members with room that no job could fill. */
  readonly #hungry = new Set<Member>();
  readonly #jobs = new Set<JobState>();
  readonly #handles = new Map<JobState, FarmJob>();
  readonly #endpoints = new Map<string, EndpointState>();
  readonly #recruitQueue = new PQueue({ concurrency: 16 });
  readonly #lastErrors = new Map<string, string>();
  /** Endpoints whose first recruit attempt is under way. */
  #firstAttempts = 0;
  #discovery: Discovery | undefined;
  #local: Promise<void> | undefined;
  #waitTimer: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #progressTimer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Results waiting for the next turn of the event loop (see #receive): `#deferred[#deferredHead…]`. */
  #deferred: DeferredResults[] = [];
  #deferredHead = 0;
  /** When this turn's results began to be processed (performance.now()), or -1. */
  #sliceStart = -1;
  /** A #nextSlice is scheduled (setImmediate). */
  #sliceScheduled = false;
  #closing: Promise<void> | undefined;
  #pumping = false;
  #round = 0;
  #started = false;
  #overdueCache: { at: number; threshold: number; members: Member[] } = { at: 0, threshold: 0, members: [] };
  /** Batch slots of the members that take work (alive, not draining). */
  #capacity = 0;
  /** When the wait for workers ran out while first recruit attempts were still under way. */
  #waitExpired: number | undefined;
  /** Discovery's recent warnings (skipped adverts), for the reason of a fallback. */
  readonly #warnings: string[] = [];
  /** True once any worker joined (a later wait is "every worker was lost"). */
  #everRecruited = false;
  /** Recent task time (ms) of each program's last job, by program key: a new job of it sizes its first batches from it. */
  readonly #taskMsByProgram = new Map<string, number>();

  /**
   * @param options - see {@link FarmPoolOptions}
   * @throws InvalidOptionError when an option is invalid
   */
  constructor(options: FarmPoolOptions | ResolvedPoolOptions = {}) {
    super();
    this.#o = isResolvedPoolOptions(options) ? options : resolvePoolOptions(options);
    this.#log = componentLogger('farm', this.#o.logger);
  }

  // ---------------------------------------------------------------- public API

  /**
   * Starts a job at once: computes `program` on every input on the pool's workers. `inputs` is an
   * array, an iterable, an async iterable (pulled lazily), or a {@link TaskRepository}. Consume its
   * outputs with `compute()` or `results()`.
   * @throws InvalidOptionError when the program's shape or an option is invalid, or the pool is closed
   */
  run<I = unknown, O = unknown>(program: Program | BundledProgram, inputs: InputSource<I> | TaskRepository, options: JobOptions = {}): FarmJob<O> {
    if (this.#closed) throw new FarmAbortError('The pool is closed');
    const jo = resolveJobOptions(options, this.#o.cwd);
    const bundled = isBundled(program);
    const stages = bundled ? undefined : stagesOf(normalForm(program));
    const id = `job-${++jobCounter}`;
    let repo: TaskRepository;
    let handle: FarmJob<O>;
    let state: JobState;
    if (isRepository(inputs)) {
      repo = inputs;
      state = new JobState(id, jo.name ?? id, jo, repo);
      handle = new FarmJob<O>(state, this.#host);
    } else {
      if (inputs === null || typeof inputs !== 'object' || !(Symbol.iterator in inputs || Symbol.asyncIterator in inputs)) {
        throw new TypeError('Expected `inputs` to be an array, an iterable, an async iterable or a TaskRepository');
      }
      let sink: FarmJob<O>['sink'] | undefined;
      const memory = new MemoryTaskRepository(inputs as InputSource<unknown>, {
        output: (i, v) => sink!.output(i, v),
        failure: (i, e) => sink!.failure(i, e),
      });
      repo = memory;
      state = new JobState(id, jo.name ?? id, jo, repo);
      handle = new FarmJob<O>(state, this.#host);
      sink = handle.sink;
    }
    this.#jobs.add(state);
    this.#handles.set(state, handle);
    repo.onAvailable = () => this.#pump();
    const signal = jo.signal;
    if (signal !== undefined) {
      if (signal.aborted) {
        this.#endJob(state, new FarmAbortError('The job was aborted before it started', { cause: signal.reason }));
        return handle;
      }
      const onAbort = (): void => this.#endJob(state, new FarmAbortError('The job was aborted', { cause: signal.reason }));
      signal.addEventListener('abort', onAbort, { once: true });
      void state.result.promise.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => {});
    }
    this.#prepareJob(state, stages, bundled ? program : undefined, repo).catch((err: unknown) => this.#endJob(state, err));
    return handle;
  }

  /** `run(program, inputs, options).compute()`: the outputs in input order. */
  async map<I = unknown, O = unknown>(program: Program | BundledProgram, inputs: InputSource<I> | TaskRepository, options: JobOptions = {}): Promise<O[]> {
    // async: a bad call to run() rejects, never throws.
    return await this.run<I, O>(program, inputs, options).compute();
  }

  /** The workers of the pool now. */
  workers(): PoolWorker[] {
    return [...this.#members].map((m) => ({
      ...m.link.info,
      state: m.draining ? 'draining' : m.inFlight.size > 0 ? 'busy' : 'idle',
      inFlight: m.inFlight.size,
      completed: m.completed,
      avgTaskMs: m.avgTaskMs,
      jobs: [...m.lanes].filter(([job, lane]) => lane.inFlight > 0 && !job.finished).map(([job]) => job.id),
    }));
  }

  /** Jobs running now. */
  jobs(): FarmJob[] {
    return [...this.#jobs].map((j) => this.#handles.get(j)!);
  }

  /**
   * Cancels the running jobs (FarmAbortError), releases every worker at once (so another client can
   * recruit it) and stops discovery. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---------------------------------------------------------------- jobs

  readonly #host = {
    cancel: (job: JobState, reason: FarmError): void => this.#endJob(job, reason),
    resume: (): void => this.#pump(),
  };

  async #prepareJob(job: JobState, stages: ReturnType<typeof stagesOf> | undefined, bundled: BundledProgram | undefined, repo: TaskRepository): Promise<void> {
    const jo = job.options;
    let prepared: PreparedStage[];
    if (bundled !== undefined) {
      prepared = verifiedBundles(bundled);
    } else {
      // Everything that can be checked without running anything is checked first; prepareStages
      // checks module paths and inline stages before it bundles (and remembers both).
      if (repo instanceof MemoryTaskRepository) repo.validateArray();
      prepared = await prepareStages(stages!, jo.cwd);
    }
    const shared = await prepareShared(jo.shared);
    if (job.finished) return;
    const key = [...prepared.map((s) => s.hash), ...shared.map((s) => `${s.name}=${s.kind}:${s.hash}`), `t=${jo.taskTimeoutMs}`].join(',');
    job.program = { key, stages: prepared, shared, taskTimeoutMs: jo.taskTimeoutMs };
    // A program the pool ran before (the next generation of an optimisation, say) starts with the
    // batch size its tasks' time calls for, not one task per batch.
    const knownMs = this.#taskMsByProgram.get(key);
    if (knownMs !== undefined && job.avgTaskMs < 0) job.avgTaskMs = knownMs;
    job.status = 'running';
    this.#begin();
    for (const m of this.#members) if (m.alive) this.#prepareLane(m, job);
    if (this.#members.size === 0) this.#armWait();
    this.#ensureProgressTimer();
    if (this.#checkJob(job)) return;
    this.#pump();
  }

  /** Gets a job's program started on a worker; its lane is ready once it is. */
  #prepareLane(m: Member, job: JobState): void {
    const program = job.program;
    if (program === undefined || job.finished || m.lanes.has(job)) return;
    const lane: Lane = {
      worker: m.link.info,
      state: 'preparing',
      inFlight: 0,
      assigned: 0,
      avgTaskMs: -1,
      batchSize: batchSizeFor(job.avgTaskMs),
      completed: 0,
      speculative: 0,
      bundlesSent: 0,
      sharedBytesSent: 0,
      cached: false,
      lost: undefined,
    };
    m.lanes.set(job, lane);
    job.lanes.push(lane);
    if (m.link.isReady(program.key)) {
      lane.state = 'ready';
      lane.cached = true;
      job.readyWorkers++;
      m.programs.set(program.key, performance.now());
      return;
    }
    this.#makeRoomForProgram(m);
    m.programs.set(program.key, performance.now());
    job.preparingWorkers++;
    m.link.prepare(program).then(
      (cost) => {
        lane.bundlesSent = cost.bundlesSent;
        lane.sharedBytesSent = cost.sharedBytesSent;
        lane.cached = cost.bundlesSent === 0 && cost.sharedBytesSent === 0;
        if (job.finished || !m.alive) return;
        job.preparingWorkers--;
        lane.state = 'ready';
        job.readyWorkers++;
        this.#hungry.add(m);
        this.#pump(m);
      },
      (err: unknown) => {
        m.programs.delete(program.key);
        if (lane.state === 'failed' || !m.alive) return;
        job.preparingWorkers--;
        lane.state = 'failed';
        const fe = err instanceof FarmError ? err : new StageSetupError(m.link.info.id, remoteOf(err));
        lane.lost = fe.message;
        if (job.finished) return;
        if (fe instanceof WorkerLostError) return; // the member's loss is handled by onLost
        // The same code runs everywhere: a stage that cannot load is the program's fault. Fail fast
        // unless another worker computes the job (or may yet).
        if (!job.lanes.some((l) => l !== lane && l.state !== 'failed' && l.lost === undefined)) {
          this.#endJob(job, fe);
          return;
        }
        this.#log.warn('a job cannot run on a worker', { job: job.id, worker: m.link.info.id, error: fe.message });
      },
    );
  }

  /** Unloads the least recently used programs of finished jobs when a link has no room for one more. */
  #makeRoomForProgram(m: Member): void {
    if (m.programs.size < m.link.maxPrograms) return;
    const active = new Set([...this.#jobs].map((j) => j.program?.key));
    const idle = [...m.programs].filter(([key]) => !active.has(key)).sort((a, b) => a[1] - b[1]);
    for (const [key] of idle) {
      if (m.programs.size < m.link.maxPrograms) break;
      m.programs.delete(key);
      m.link.unload(key);
    }
  }

  /** Ends a job: done (`error` undefined), failed, or cancelled (FarmAbortError). */
  #endJob(job: JobState, error: unknown): void {
    if (job.finished) return;
    const workers = job.readyWorkers;
    job.status = error === undefined ? 'done' : error instanceof FarmAbortError ? 'cancelled' : 'failed';
    this.#jobs.delete(job);
    this.#handles.delete(job);
    // Its tasks still in flight stop on their workers.
    for (const m of this.#members) {
      const seqs: number[] = [];
      for (const [seq, f] of m.inFlight) {
        if (f.job !== job) continue;
        seqs.push(seq);
        m.inFlight.delete(seq);
        this.#release(m, f);
      }
      if (seqs.length > 0 && m.alive) m.link.cancel(seqs);
      m.lanes.delete(job);
      if (m.alive && !m.draining) this.#hungry.add(m);
    }
    job.copies.clear();
    job.repo.close();
    if (job.program !== undefined && job.avgTaskMs >= 0) {
      const key = job.program.key;
      this.#taskMsByProgram.delete(key);
      this.#taskMsByProgram.set(key, job.avgTaskMs);
      if (this.#taskMsByProgram.size > 256) this.#taskMsByProgram.delete(this.#taskMsByProgram.keys().next().value!);
    }
    if (error === undefined) job.onProgress(job.progress(workers));
    if (error === undefined) job.result.resolve();
    else job.result.reject(error);
    if (this.#jobs.size === 0) {
      clearTimeout(this.#waitTimer);
      this.#waitTimer = undefined;
    }
    if (!this.#closed) this.#pump();
  }

  /** Ends the job if its source failed or every task is settled. True when it ended. */
  #checkJob(job: JobState): boolean {
    if (job.finished) return true;
    if (job.status !== 'running') return false;
    if (job.repo.sourceError !== undefined) {
      const err: unknown = job.repo.sourceError;
      this.#endJob(
        job,
        err instanceof FarmError
          ? err
          : new FarmError('FARM_ERR_INVALID_OPTION', `Reading the inputs failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }),
      );
      return true;
    }
    if (!job.repo.isComplete) return false;
    this.#endJob(job, undefined);
    return true;
  }

  #ensureProgressTimer(): void {
    if (this.#progressTimer !== undefined) return;
    this.#progressTimer = setInterval(() => {
      for (const job of this.#jobs) {
        if (job.status !== 'running') continue;
        job.onProgress(job.progress(this.#workersOf(job)));
        if (job.copies.size > 0) this.#dropStuckCopies(job);
      }
      // Idle workers re-check for stragglers even when no result arrives to wake them.
      if (this.#hungry.size > 0) this.#pump();
    }, PROGRESS_EVERY_MS);
    this.#progressTimer.unref();
  }

  #workersOf(job: JobState): number {
    return job.readyWorkers;
  }

  // ---------------------------------------------------------------- discovery and recruiting

  /** Starts finding workers (once, with the first job). */
  #begin(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    const d = this.#o.discovery;
    if (d === 'local') {
      this.#startLocal(undefined);
      return;
    }
    if (this.#o.key === undefined && !this.#o.insecure) {
      // Without the farm key no worker would accept us (nor would we trust one): do not even look.
      if (this.#o.localFallback) this.#startLocal(`no farm key (${NO_KEY_HELP})`);
      else {
        const why =
          typeof d === 'object' && 'peers' in d
            ? 'a run given peers computes on local threads only when asked to (localFallback: true)'
            : 'localFallback is off';
        this.#failAll(new NoWorkersError(`No farm key, so no worker can be used, and ${why}. ${NO_KEY_HELP}`));
      }
      return;
    }
    const discovery =
      d === 'mdns'
        ? new MdnsDiscovery({
            farm: this.#o.farm,
            ...(this.#o.interface === undefined ? {} : { interface: this.#o.interface }),
            protocolVersion: PROTOCOL_VERSION,
            secure: this.#o.key !== undefined,
            logger: this.#log,
          })
        : 'peers' in d
          ? new StaticDiscovery(d.peers)
          : d;
    this.#discovery = discovery;
    discovery.on('up', (e) => this.#onUp(e));
    discovery.on('down', (e) => this.#onDown(e));
    discovery.on('warning', (m) => {
      this.#log.warn(m);
      if (this.#warnings.push(m) > 10) this.#warnings.shift();
    });
    // Not unref'd while jobs wait: this timer is what keeps the process alive (see #refTimers).
    this.#retryTimer = setInterval(() => this.#retry(), 250);
    this.#refTimers();
    discovery.start().then(
      (snapshot) => {
        for (const e of snapshot) this.#onUp(e);
      },
      (err: unknown) => this.#log.warn('discovery failed to start', { error: (err as Error).message }),
    );
  }

  /** While jobs run, the retry timer keeps the process alive; an idle pool does not. */
  #refTimers(): void {
    if (this.#retryTimer === undefined) return;
    if (this.#jobs.size > 0) this.#retryTimer.ref();
    else this.#retryTimer.unref();
  }

  #failAll(err: FarmError): void {
    for (const job of [...this.#jobs]) this.#endJob(job, err);
  }

  #onUp(endpoint: WorkerEndpoint): void {
    if (this.#closed) return;
    const key = endpointKey(endpoint);
    let st = this.#endpoints.get(key);
    if (st === undefined) {
      st = { endpoint, connecting: false, member: undefined, nextTry: 0, failures: 0, retired: false, firstAttempt: true };
      this.#firstAttempts++;
      this.#endpoints.set(key, st);
    } else {
      // A re-announce may be a restart at a new address: take the new address, try again now.
      st.endpoint = endpoint;
      st.retired = false;
      st.nextTry = 0;
      st.failures = 0;
    }
    this.#tryRecruit(key, st);
  }

  #onDown(endpoint: WorkerEndpoint): void {
    const st = this.#endpoints.get(endpointKey(endpoint));
    // Liveness of a recruited worker is the stream's business; a goodbye only stops retries. The
    // goodbye a worker sends because *we* are recruiting it does not count.
    if (st !== undefined && st.member === undefined && !st.connecting) st.retired = true;
  }

  #retry(): void {
    if (this.#closed) return;
    this.#refTimers();
    const now = Date.now();
    for (const [key, st] of this.#endpoints) {
      if (!st.retired && now >= st.nextTry) this.#tryRecruit(key, st);
    }
  }

  #tryRecruit(key: string, st: EndpointState): void {
    if (this.#closed || st.connecting || st.member !== undefined || st.retired) return;
    st.connecting = true;
    void this.#recruitQueue.add(async () => {
      try {
        if (this.#closed) return;
        await this.#recruit(key, st);
      } finally {
        st.connecting = false;
        if (st.firstAttempt) {
          st.firstAttempt = false;
          this.#firstAttempts--;
          // Shares held for workers still being recruited are released: everyone may take more.
          if (this.#firstAttempts === 0) for (const m of this.#members) this.#hungry.add(m);
          const expired = this.#waitExpired;
          if (this.#firstAttempts === 0 && expired !== undefined) {
            this.#waitExpired = undefined;
            if (!this.#closed && this.#members.size === 0 && this.#local === undefined && this.#jobs.size > 0) this.#noWorker(Date.now() - expired);
          }
          this.#pump();
        }
      }
    });
  }

  async #recruit(key: string, st: EndpointState): Promise<void> {
    const e = st.endpoint;
    const target = formatTarget(e.host, e.port);
    let member: Member | undefined;
    const handlers: LinkHandlers = {
      onResults: (results) => member !== undefined && this.#receive(member, results),
      onLost: (err, goodbye) => member !== undefined && this.#onLost(member, err, goodbye),
      onDraining: () => {
        if (member === undefined || member.draining) return;
        member.draining = true;
        if (member.alive) this.#capacity -= member.window;
      },
    };
    let link: RemoteLink;
    try {
      link = await RemoteLink.open(
        e,
        {
          clientId: this.#clientId,
          connectTimeoutMs: this.#o.connectTimeoutMs,
          heartbeatMs: this.#o.heartbeatMs,
          heartbeatTimeoutMs: this.#o.heartbeatTimeoutMs,
          leaseTimeoutMs: this.#o.leaseTimeoutMs,
          setupTimeoutMs: this.#o.setupTimeoutMs,
          // A farm's name matters where workers are found by advertisement; listed peers are trusted.
          farm: this.#o.discovery === 'mdns' ? this.#o.farm : undefined,
          key: this.#o.key,
          logger: this.#log,
        },
        handlers,
        (desc) => ![...this.#members].some((m) => m.link.info.id === desc.id),
      );
    } catch (err) {
      const fe = err instanceof FarmError ? err : new WorkerLostError(e.id ?? target, String(err));
      st.failures++;
      this.#lastErrors.set(target, refusalReason(target, fe, this.#o.insecure));
      st.nextTry = Date.now() + recruitBackoffMs(recruitFailureOf(fe), st.failures);
      if (fe instanceof AuthenticationError) this.#log.warn('not using worker', { target, error: fe.message });
      else if (st.failures === 1 || !(fe instanceof WorkerBusyError)) this.#log.info('could not recruit worker', { target, error: fe.message });
      return;
    }
    if (this.#closed) {
      await link.close();
      return;
    }
    member = this.#addMember(link, key);
    st.member = member;
    st.failures = 0;
  }

  #addMember(link: WorkerLink, key: string | undefined): Member {
    const threads = Math.max(1, link.info.threads);
    const m: Member = {
      link,
      key,
      inFlight: new Map(),
      lanes: new Map(),
      programs: new Map(),
      nextSeq: 1,
      batches: 0,
      window: windowFor(threads),
      completed: 0,
      avgTaskMs: -1,
      lastResultAt: Date.now(),
      alive: true,
      draining: false,
      drainRequeued: 0,
    };
    this.#members.add(m);
    this.#hungry.add(m);
    this.#capacity += m.window;
    if (!link.info.local) this.#everRecruited = true;
    clearTimeout(this.#waitTimer);
    this.#waitTimer = undefined;
    this.#log.info('recruited', { worker: link.info.id, host: link.info.host, address: link.info.address, threads });
    this.emit('recruited', link.info);
    for (const job of this.#jobs) if (job.status === 'running') this.#prepareLane(m, job);
    this.#pump();
    return m;
  }

  #armWait(): void {
    if (this.#waitTimer !== undefined || this.#closed || this.#local !== undefined || this.#jobs.size === 0) return;
    if (this.#o.workerWaitMs === Number.POSITIVE_INFINITY) return; // jobs wait for workers
    const since = Date.now();
    this.#waitExpired = undefined;
    this.#waitTimer = setTimeout(() => {
      this.#waitTimer = undefined;
      if (this.#closed || this.#members.size > 0 || this.#jobs.size === 0) return;
      // A worker whose first recruit attempt is still under way has not said no yet: wait for it
      // (each step is bounded by the connect timeout) before saying that none could be used.
      if (this.#firstAttempts > 0) {
        this.#waitExpired = since;
        return;
      }
      this.#noWorker(this.#o.workerWaitMs);
    }, this.#o.workerWaitMs);
  }

  /** No worker for the whole wait: fall back to local threads, or fail the jobs with NoWorkersError. */
  #noWorker(waitedMs: number): void {
    const d = this.#o.discovery;
    const peers = typeof d === 'object' && 'peers' in d;
    const reason = noWorkerReason({
      waitedMs,
      discovery: d === 'mdns' ? 'mdns' : peers ? 'peers' : 'custom',
      farm: this.#o.farm,
      farmsSeen: this.#discovery instanceof MdnsDiscovery ? this.#discovery.farmsSeen() : [],
      refusals: this.#lastErrors,
      warnings: this.#warnings,
      allLost: this.#everRecruited,
    });
    if (this.#o.localFallback) {
      this.#startLocal(reason);
      return;
    }
    this.#failAll(
      new NoWorkersError(
        `No worker could be used: ${reason}. ` +
          (peers
            ? 'A run given peers does not compute on local threads unless asked to (localFallback: true, or --local-fallback).'
            : 'Start `taskfarm worker` on some machines, check `peers`, or enable localFallback.'),
        { refused: [...this.#lastErrors].map(([target, why]) => ({ target, reason: why })) },
      ),
    );
  }

  /** Starts the local threads as one more member; `reason` (undefined for 'local') is reported as a fallback. */
  #startLocal(reason: string | undefined): void {
    if (this.#local !== undefined || this.#closed) return;
    if (reason !== undefined) {
      this.#log.warn(`computing on local threads: ${reason}`);
      this.emit('fallback', { reason });
    }
    let member: Member | undefined;
    this.#local = LocalLink.open(
      { threads: this.#o.threads, cacheDir: this.#o.cacheDir, threadMemoryMb: undefined, logger: this.#log },
      {
        onResults: (results) => member !== undefined && this.#receive(member, results),
        onLost: (err, goodbye) => member !== undefined && this.#onLost(member, err, goodbye),
        onDraining: () => {},
      },
    ).then(
      async (link) => {
        if (this.#closed) return link.close();
        member = this.#addMember(link, undefined);
      },
      (err: unknown) => this.#failAll(err instanceof FarmError ? err : new StageSetupError('local', remoteOf(err))),
    );
  }

  // ---------------------------------------------------------------- dispatch

  /** Batch slots per job, from the allocation policy. */
  #allocation(): Map<JobState, number> {
    const capacity = this.#capacity;
    const demands: JobDemand[] = [];
    const byId = new Map<string, JobState>();
    for (const job of this.#jobs) {
      if (job.status !== 'running') continue;
      byId.set(job.id, job);
      const total = job.repo.total;
      let demand: number;
      if (job.repo.isSourceDrained) demand = job.batches;
      else if (total === undefined) demand = Number.POSITIVE_INFINITY;
      else demand = job.batches + Math.ceil(Math.max(0, total - job.repo.done - job.inFlight) / batchSizeFor(job.avgTaskMs));
      demands.push({ id: job.id, priority: job.options.priority, weight: job.options.weight, demand });
    }
    const slots = allocate(demands, capacity);
    const out = new Map<JobState, number>();
    for (const [id, n] of slots) out.set(byId.get(id)!, n);
    return out;
  }

  /**
   * Gives work to members with room: first `first` (whose results just arrived), then the members
   * that went hungry earlier. No per-task loop over all workers: dispatch cost does not grow with the farm.
   */
  #pump(first?: Member): void {
    if (this.#closed || this.#pumping) return;
    this.#pumping = true;
    this.#round++;
    try {
      const alloc = this.#allocation();
      if (first !== undefined) this.#fill(first, alloc);
      for (const m of this.#byPolicy(this.#hungry)) this.#fill(m, alloc);
    } catch (err) {
      // A bug must not leave jobs hanging: fail them with it.
      this.#log.error('dispatch failed', { error: (err as Error).message });
      this.#failAll(err instanceof FarmError ? err : new ProtocolError(`dispatch failed: ${(err as Error).message}`, { cause: err }));
    } finally {
      this.#pumping = false;
    }
    for (const job of [...this.#jobs]) this.#checkJob(job);
  }

  /** Fills one member's window with batches of the jobs that the allocation favours. */
  #fill(m: Member, alloc: Map<JobState, number>): void {
    if (!m.alive || m.draining) {
      this.#hungry.delete(m);
      return;
    }
    for (;;) {
      if (m.batches >= m.window || m.inFlight.size >= m.link.maxInFlight) {
        // Full: its own results make room again.
        this.#hungry.delete(m);
        return;
      }
      if (!this.#fillOne(m, alloc)) {
        this.#hungry.add(m);
        return;
      }
    }
  }

  /** Sends one batch to `m`: of the job furthest below its share that has tasks; else a backup copy. False when there was nothing. */
  #fillOne(m: Member, alloc: Map<JobState, number>): boolean {
    for (;;) {
      let best: JobState | undefined;
      let bestLane: Lane | undefined;
      let bestRoom = 0;
      let bestScore = Number.NEGATIVE_INFINITY;
      for (const job of this.#jobs) {
        if (job.status !== 'running' || job.dryRound === this.#round) continue;
        const lane = m.lanes.get(job);
        if (lane === undefined || lane.state !== 'ready') continue;
        const room = this.#roomFor(m, job, lane);
        if (room <= 0) continue;
        const score = (alloc.get(job) ?? 0) - job.batches;
        if (best === undefined || this.#before(job, score, best, bestScore)) {
          best = job;
          bestLane = lane;
          bestRoom = room;
          bestScore = score;
        }
      }
      if (best === undefined || bestLane === undefined) return this.#speculateAny(m);
      if (bestLane.avgTaskMs < 0 && best.avgTaskMs >= 0) this.#resize(bestLane, best.avgTaskMs);
      let recs: TaskRecord[];
      try {
        recs = best.repo.take(Math.min(bestRoom, bestLane.batchSize), best.canPullNew());
      } catch (err) {
        // An input of an iterable source that cannot be sent, a store that failed: this job only.
        this.#endJob(best, err);
        continue;
      }
      if (recs.length === 0) {
        best.dryRound = this.#round;
        continue;
      }
      return this.#send(m, best, bestLane, recs);
    }
  }

  /**
   * True when `job` (deficit `score`: its allocated slots minus its batches in flight) should get a
   * slot before `best`. Slots are whole batches, so deficits within one slot of each other are a
   * tie among jobs of equal priority; the tie goes to the job that has had less of the workers' time
   * for its weight, which makes the long-run shares follow the weights.
   */
  #before(job: JobState, score: number, best: JobState, bestScore: number): boolean {
    if (job.options.priority === best.options.priority && Math.abs(score - bestScore) < 1) {
      const a = job.workMs / job.options.weight;
      const b = best.workMs / best.options.weight;
      if (a !== b) return a < b;
      return job.started < best.started;
    }
    if (score !== bestScore) return score > bestScore;
    return job.options.priority > best.options.priority;
  }

  /** How many tasks of `job` the member may take now (its fair share of a known-size job). */
  #roomFor(m: Member, job: JobState, lane: Lane): number {
    let room = m.link.maxInFlight - m.inFlight.size;
    const total = job.repo.total;
    if (total !== undefined) {
      // Workers still being recruited, or still installing the job's program, keep a share.
      const waiting = this.#firstAttempts + job.preparingWorkers;
      const contenders = waiting + job.readyWorkers;
      room = Math.min(
        room,
        shareRoom({
          total,
          done: job.repo.done,
          contenders,
          recruiting: waiting,
          threads: m.link.info.threads,
          inFlight: lane.inFlight,
          assigned: lane.assigned,
          avgTaskMs: job.avgTaskMs,
          workerInFlight: m.inFlight.size,
          fewestInFlight: this.#fewestInFlight(job, total),
        }),
      );
    }
    return room;
  }

  /**
   * The fewest tasks in flight on a member whose lane of `job` is ready, when the job's work left
   * is small enough to go whole to one member (see shareRoom), else 0 (not needed). A loop over
   * the members, only for such small jobs.
   */
  #fewestInFlight(job: JobState, total: number): number {
    if (!isSmallJob(total - job.repo.done, job.avgTaskMs)) return 0;
    let fewest = Number.POSITIVE_INFINITY;
    for (const m of this.#members) {
      if (m.alive && !m.draining && m.lanes.get(job)?.state === 'ready' && m.inFlight.size < fewest) fewest = m.inFlight.size;
    }
    return Number.isFinite(fewest) ? fewest : 0;
  }

  /** Members in the order the scheduling policy gives them work. */
  #byPolicy(members: Set<Member>): Iterable<Member> {
    if (members.size < 2 || this.#o.scheduling === firstComeFirstServed) return [...members];
    const view = (m: Member): WorkerView => {
      let cached = true;
      for (const l of m.lanes.values()) if (!l.cached) cached = false;
      return { id: m.link.info.id, host: m.link.info.host, threads: m.link.info.threads, cached, avgTaskMs: m.avgTaskMs, inFlight: m.inFlight.size };
    };
    const policy = this.#o.scheduling;
    return [...members]
      .map((m) => ({ m, v: view(m) }))
      .sort((a, b) => policy.compare(a.v, b.v))
      .map((x) => x.m);
  }

  /** Packs and sends tasks to one member, halving batches that exceed its message size. False when the job ended. */
  #send(m: Member, job: JobState, lane: Lane, recs: TaskRecord[]): boolean {
    let inputs: Uint8Array;
    try {
      inputs = encodeInputs(recs.map((r) => r.input));
    } catch (err) {
      const bad = recs.map((r) => [r, findUnsendable(r.input)] as const).find(([, why]) => why !== undefined);
      this.#endJob(
        job,
        bad !== undefined
          ? new UnsendableInputError(bad[0].index, bad[1]![0], bad[1]![1])
          : new UnsendableInputError(recs[0]!.index, 'input', `not serializable (${(err as Error).message})`),
      );
      return true;
    }
    if (inputs.byteLength > m.link.maxPayloadBytes) {
      if (recs.length === 1) {
        this.#endJob(
          job,
          new UnsendableInputError(
            recs[0]!.index,
            'input',
            `${inputs.byteLength} bytes encoded`,
            `Worker ${m.link.info.id} accepts at most ${m.link.maxPayloadBytes} bytes of inputs in one message (daemon option ` +
              '--max-message-mb): split the input, or raise the limit on the workers.',
          ),
        );
        return true;
      }
      const half = recs.length >> 1;
      return this.#send(m, job, lane, recs.slice(0, half)) && this.#send(m, job, lane, recs.slice(half));
    }
    const seqs = new Uint32Array(recs.length);
    const now = Date.now();
    const batch: BatchCount = { left: recs.length };
    for (let i = 0; i < recs.length; i++) {
      const seq = m.nextSeq;
      const rec = recs[i]!;
      m.nextSeq = m.nextSeq >= 0xffffffff ? 1 : m.nextSeq + 1;
      m.inFlight.set(seq, { rec, job, lane, batch });
      rec.copies++;
      rec.sentAt = now;
      seqs[i] = seq;
    }
    // A worker given work while it had none has not been slow yet: its clock starts now.
    if (m.inFlight.size === recs.length) m.lastResultAt = now;
    m.batches++;
    job.batches++;
    job.inFlight += recs.length;
    lane.inFlight += recs.length;
    lane.assigned += recs.length;
    m.programs.set(job.program!.key, performance.now());
    m.link.send(job.program!.key, { seqs, inputs }, job.options.priority);
    return true;
  }

  /** Forgets one in-flight task of a member (answered, cancelled or lost). */
  #release(m: Member, f: Flight): void {
    f.job.inFlight--;
    f.lane.inFlight--;
    if (--f.batch.left === 0) {
      m.batches--;
      f.job.batches--;
    }
  }

  /**
   * A message of results: processed now, unless this turn of the event loop already spent
   * RESULTS_SLICE_MS on results (a burst: many messages read at once after a busy spell); then it
   * waits, in order, for the next turn, so that other I/O — a job service's HTTP requests, say —
   * is served in between instead of behind the whole burst. A big message is itself cut: the
   * budget is checked every RESULTS_CHUNK results, and the rest of the message waits at the head.
   */
  #receive(m: Member, r: ExecResults): void {
    const entry: DeferredResults = { m, r, from: 0, decoded: undefined };
    if (this.#deferredHead < this.#deferred.length) {
      this.#deferred.push(entry);
      if (this.#deferred.length - this.#deferredHead > RESULTS_BACKLOG) this.#drain(RESULTS_BACKLOG >> 1);
      return;
    }
    if (this.#sliceStart < 0) {
      this.#sliceStart = performance.now();
      this.#scheduleSlice();
    } else if (performance.now() - this.#sliceStart >= RESULTS_SLICE_MS) {
      this.#deferred.push(entry);
      return;
    }
    if (!this.#onResults(entry, true)) this.#deferred.push(entry);
  }

  #scheduleSlice(): void {
    if (this.#sliceScheduled) return;
    this.#sliceScheduled = true;
    setImmediate(this.#nextSlice);
  }

  /**
   * After the turn's I/O: the results that waited, within what is left of this turn's
   * RESULTS_SLICE_MS (the budget counts from the turn's first results, read in its I/O phase or
   * here); the next turn starts a new budget.
   */
  readonly #nextSlice = (): void => {
    this.#sliceScheduled = false;
    if (this.#deferredHead < this.#deferred.length) {
      if (this.#sliceStart < 0) this.#sliceStart = performance.now();
      while (this.#deferredHead < this.#deferred.length && performance.now() - this.#sliceStart < RESULTS_SLICE_MS) this.#processOne(true);
    }
    this.#sliceStart = -1;
    if (this.#deferredHead >= this.#deferred.length) {
      this.#deferred = [];
      this.#deferredHead = 0;
    } else this.#scheduleSlice();
  };

  /** Processes waiting results until at most `left` wait. */
  #drain(left: number): void {
    while (this.#deferred.length - this.#deferredHead > left) this.#processOne(false);
  }

  /** The oldest waiting message of results, or its next part when `budgeted` and the turn's budget runs out. */
  #processOne(budgeted: boolean): void {
    const entry = this.#deferred[this.#deferredHead]!;
    if (!this.#onResults(entry, budgeted)) return; // the rest of it stays at the head
    this.#deferred[this.#deferredHead++] = undefined as unknown as DeferredResults;
    // Under a lasting backlog the queue never empties: drop the processed slots now and then.
    if (this.#deferredHead > 1024 && this.#deferredHead * 2 > this.#deferred.length) {
      this.#deferred.splice(0, this.#deferredHead);
      this.#deferredHead = 0;
    }
  }

  /**
   * Settles a message's results from `entry.from` on. With `budgeted`, it stops after a chunk once
   * this turn's results budget is spent, records where in `entry`, and answers false (the rest is
   * for a later turn); otherwise it answers true (all processed, or the message dropped).
   */
  #onResults(entry: DeferredResults, budgeted: boolean): boolean {
    const { m, r } = entry;
    if (this.#closed || !m.alive) return true;
    m.lastResultAt = Date.now();
    let decoded = entry.decoded;
    if (decoded === undefined) {
      try {
        if (r.durations.length !== r.seqs.length) throw new TypeError('durations do not match seqs');
        decoded = decodeOutcomes(r.outcomes, r.seqs.length);
      } catch (err) {
        // A worker that sends garbage is not trusted with more work; its tasks go elsewhere.
        this.#drop(m, new ProtocolError(`sent outcomes that cannot be decoded (${(err as Error).message})`));
        return true;
      }
      entry.decoded = decoded;
    }
    const { flags, values } = decoded;
    const touched = new Set<Lane>();
    const sums = new Map<Lane, { sum: number; n: number; job: JobState }>();
    const count = r.seqs.length;
    let i = entry.from;
    for (; i < count; i++) {
      if (budgeted && i > entry.from && (i - entry.from) % RESULTS_CHUNK === 0 && performance.now() - this.#sliceStart >= RESULTS_SLICE_MS) break;
      const seq = r.seqs[i]!;
      const f = m.inFlight.get(seq);
      if (f === undefined) continue; // a seq we did not send, or already settled: dropped
      const flag = flags[i];
      const value = values[i];
      if (flag !== 0 && (flag !== 1 || !isRemoteError(value))) {
        // Not an outcome this protocol produces: the worker is broken or hostile. Its tasks (this one
        // included) go elsewhere; one bad worker must not fail the job.
        this.#drop(m, new ProtocolError(`sent a malformed outcome for input ${f.rec.index}`));
        return true;
      }
      const { rec, job, lane } = f;
      m.inFlight.delete(seq);
      this.#release(m, f);
      rec.copies--;
      if (job.finished) continue;
      const d = r.durations[i]!;
      const acc = sums.get(lane) ?? { sum: 0, n: 0, job };
      acc.sum += d;
      acc.n++;
      sums.set(lane, acc);
      job.sample(d);
      job.workMs += d;
      touched.add(lane);
      if (rec.done) continue;
      // The first copy to answer settles the task; any other copy is cancelled on its worker.
      if (rec.copies > 0) this.#cancelCopies(job, rec);
      if (flag === 0) {
        if (job.repo.complete(rec, value, { durationMs: d, workerId: m.link.info.id })) {
          lane.completed++;
          m.completed++;
        }
        continue;
      }
      this.#onTaskError(m, job, rec, asRemoteError(value));
    }
    for (const [lane, { sum, n, job }] of sums) {
      this.#resize(lane, sum / n);
      job.avgTaskMs = ewma(job.avgTaskMs, sum / n, 0.1);
      m.avgTaskMs = ewma(m.avgTaskMs, sum / n, 0.3);
    }
    this.#pump(m);
    entry.from = i;
    return i >= count;
  }

  /** Sizes a lane's batches from its recent task time. */
  #resize(lane: Lane, avg: number): void {
    lane.avgTaskMs = ewma(lane.avgTaskMs, avg, 0.3);
    lane.batchSize = batchSizeFor(lane.avgTaskMs);
  }

  /** Handles one failed task by the retry policy. */
  #onTaskError(m: Member, job: JobState, rec: TaskRecord, e: RemoteErrorInfo & { kind: string }): void {
    const kind = e.kind as FailureKind;
    if (kind === 'crashed') rec.crashes++;
    if (kind === 'thrown' || kind === 'timeout') rec.errors++;
    const decision = decideRetry(kind, rec, job.options);
    if (decision.action === 'requeue') {
      if (kind === 'cancelled' && m.draining) m.drainRequeued++;
      if (kind === 'crashed') this.#log.warn('a task crashed its thread; retrying it', { index: rec.index, worker: m.link.info.id, crashes: rec.crashes });
      job.repo.requeue([rec]);
      return;
    }
    const ctx = {
      index: rec.index,
      workerId: m.link.info.id,
      attempts: rec.crashes + rec.errors + (kind === 'crashed' || kind === 'thrown' || kind === 'timeout' ? 0 : 1),
    };
    if (decision.action === 'fatal') {
      this.#endJob(job, new StageSetupError(m.link.info.id, e));
      return;
    }
    const err =
      kind === 'crashed'
        ? new TaskCrashedError({ ...ctx, attempts: rec.crashes }, e)
        : kind === 'timeout'
          ? new TaskTimeoutError(ctx, e, job.options.taskTimeoutMs)
          : new TaskError(ctx, e);
    this.#failTask(job, rec, err);
  }

  /** A task is given up: the job fails, or (errors: 'collect') the task is settled as failed. */
  #failTask(job: JobState, rec: TaskRecord, err: FarmError): void {
    if (job.options.errors === 'collect' && err instanceof TaskError) {
      if (job.repo.fail(rec, err)) this.#log.warn('a task failed; keeping going (errors: collect)', { job: job.id, index: rec.index, error: err.message });
      return;
    }
    this.#endJob(job, err);
  }

  // ---------------------------------------------------------------- speculation

  /** Backup copies for an idle member: of the highest-priority job with stragglers elsewhere. */
  #speculateAny(m: Member): boolean {
    const jobs = [...this.#jobs].filter((j) => j.status === 'running' && j.options.speculation !== false && j.repo.isSourceDrained);
    if (jobs.length === 0) return false;
    jobs.sort((a, b) => b.options.priority - a.options.priority);
    const free = m.window - m.batches;
    for (const job of jobs) {
      const lane = m.lanes.get(job);
      if (lane === undefined || lane.state !== 'ready') continue;
      if (this.#speculate(m, job, lane, Math.max(1, Math.min(free * lane.batchSize, lane.batchSize)))) return true;
    }
    return false;
  }

  /**
   * Gives an idle member backup copies of the job's tasks that have been in flight longest elsewhere,
   * beyond `multiplier` × the median task time (and `minMs`) but not so far beyond every task time
   * seen that they are stuck. At most one extra copy per task. True when it sent any.
   */
  #speculate(target: Member, job: JobState, lane: Lane, max: number): boolean {
    const spec = job.options.speculation;
    if (spec === false || max <= 0) return false;
    const threshold = stragglerThresholdMs(spec, job.medianTaskMs());
    if (threshold < 0) return false;
    const now = Date.now();
    const candidates: { m: Member; seq: number; rec: TaskRecord }[] = [];
    for (const m of this.#overdue(threshold, now)) {
      if (m === target || !m.alive) continue;
      let taken = 0;
      let looked = 0;
      // In-flight maps keep send order: the oldest tasks come first. Look at a few only: a worker
      // that is overdue is slow at its head, and the scan must not grow with its window.
      for (const [seq, f] of m.inFlight) {
        if (++looked > SPECULATION_SCAN) break;
        if (f.job !== job) continue;
        const rec = f.rec;
        if (rec.done || rec.copies > 1) continue;
        const age = now - rec.sentAt;
        if (age < threshold) break;
        if (isStuck(age, job.maxTaskMs)) {
          this.#markStuck(job, rec, age, m);
          continue;
        }
        candidates.push({ m, seq, rec });
        if (++taken >= max) break;
      }
    }
    if (candidates.length === 0) return false;
    candidates.sort((a, b) => a.rec.sentAt - b.rec.sentAt);
    const picked = candidates.slice(0, max);
    for (const c of picked) job.copies.set(c.rec, [{ member: c.m, seq: c.seq }]);
    const seqBefore = target.nextSeq;
    if (
      !this.#send(
        target,
        job,
        lane,
        picked.map((c) => c.rec),
      ) ||
      job.finished
    )
      return true;
    // Remember where the new copies went (the seqs #send just assigned, in order).
    let seq = seqBefore;
    for (const c of picked) {
      job.copies.get(c.rec)?.push({ member: target, seq });
      seq = seq >= 0xffffffff ? 1 : seq + 1;
    }
    lane.speculative += picked.length;
    job.speculated += picked.length;
    this.#log.info('re-issued straggling tasks to an idle worker', {
      job: job.id,
      worker: target.link.info.id,
      tasks: picked.length,
      thresholdMs: Math.round(threshold),
    });
    return true;
  }

  /** Warns once per task that looks stuck (no backup copy for it). */
  #markStuck(job: JobState, rec: TaskRecord, ms: number, m: Member): void {
    if (job.stuck.has(rec)) return;
    job.stuck.add(rec);
    this.#log.warn('a task looks stuck: no backup copy of it (set taskTimeoutMs to stop such tasks)', {
      job: job.id,
      index: rec.index,
      worker: m.link.info.id,
      inFlightMs: Math.round(ms),
      longestTaskMs: Math.round(job.maxTaskMs),
    });
  }

  /**
   * A task whose backup copy has itself run far beyond every task time seen is stuck on both
   * workers: the backup copy is cancelled (its thread is stopped there), the first one carries on.
   */
  #dropStuckCopies(job: JobState): void {
    const now = Date.now();
    for (const [rec, copies] of job.copies) {
      if (rec.done || copies.length < 2 || !isStuck(now - rec.sentAt, job.maxTaskMs)) continue;
      const backup = copies[copies.length - 1]!;
      job.copies.delete(rec);
      const m = backup.member as Member;
      const f = m.inFlight.get(backup.seq);
      if (f === undefined || f.rec !== rec) continue;
      m.inFlight.delete(backup.seq);
      this.#release(m, f);
      rec.copies--;
      m.link.cancel([backup.seq]);
      this.#markStuck(job, rec, now - rec.sentAt, m);
      if (m.alive && !m.draining) this.#hungry.add(m);
    }
  }

  /**
   * Members that look slow: tasks in flight, and nothing delivered for longer than the threshold.
   * Healthy members deliver batches every few ms, so this is usually empty; recomputed at most every
   * 20 ms, so idle members asking for work do not each scan the whole farm.
   */
  #overdue(threshold: number, now: number): Member[] {
    const c = this.#overdueCache;
    if (now - c.at < 20 && c.threshold === threshold) return c.members;
    const members: Member[] = [];
    for (const m of this.#members) if (m.inFlight.size > 0 && now - m.lastResultAt > threshold) members.push(m);
    this.#overdueCache = { at: now, threshold, members };
    return members;
  }

  /** Cancels the in-flight copies of a settled task on their members. */
  #cancelCopies(job: JobState, rec: TaskRecord): void {
    const copies = job.copies.get(rec);
    job.copies.delete(rec);
    if (copies === undefined) return;
    for (const { member, seq } of copies) {
      const m = member as Member;
      const f = m.inFlight.get(seq);
      if (f === undefined || f.rec !== rec) continue;
      m.inFlight.delete(seq);
      this.#release(m, f);
      rec.copies--;
      m.link.cancel([seq]);
    }
  }

  // ---------------------------------------------------------------- losses

  /** Ends a member on our side (the worker misbehaved) and handles it as lost. */
  #drop(m: Member, err: FarmError): void {
    this.#log.warn('dropping a worker', { worker: m.link.info.id, reason: err.message });
    void m.link.close();
    this.#onLost(m, err, undefined);
  }

  /** A member is gone; `goodbye` is the reason the worker gave when it ended the lease itself. */
  #onLost(m: Member, err: FarmError, goodbye: string | undefined): void {
    if (!m.alive) return;
    m.alive = false;
    if (!m.draining) this.#capacity -= m.window;
    const draining = goodbye === 'draining' || (m.draining && goodbye === undefined);
    // A drained worker ends its stream after giving back what it did not finish: it left, it was not lost.
    const reason = draining ? 'worker left (draining)' : err instanceof WorkerLostError ? err.reason : err.message;
    // Only a worker lost to a fault counts against its tasks (maxWorkerLosses); one that ended the lease itself does not.
    const fault = goodbye === undefined && !draining;
    this.#members.delete(m);
    this.#hungry.delete(m);
    for (const [job, lane] of m.lanes) {
      lane.lost = reason;
      if (lane.state === 'ready') job.readyWorkers--;
      if (lane.state === 'preparing') job.preparingWorkers--;
      lane.state = 'failed';
    }
    const byJob = new Map<JobState, TaskRecord[]>();
    for (const f of m.inFlight.values()) {
      const { rec, job } = f;
      this.#release(m, f);
      rec.copies--;
      if (rec.done || job.finished) continue;
      const copies = job.copies.get(rec);
      if (copies !== undefined) {
        const rest = copies.filter((c) => c.member !== m);
        if (rest.length > 0) job.copies.set(rec, rest);
        else job.copies.delete(rec);
      }
      if (rec.copies > 0) continue; // its backup copy elsewhere carries on
      if (fault) rec.losses++;
      const list = byJob.get(job) ?? [];
      list.push(rec);
      byJob.set(job, list);
    }
    m.inFlight.clear();
    m.lanes.clear();
    if (this.#closed) return;
    let requeued = 0;
    for (const [job, recs] of byJob) {
      const poison = recs.find((r) => decideRetry('lost', r, job.options).action === 'fail');
      job.repo.requeue(recs);
      requeued += recs.length;
      if (poison !== undefined) {
        this.#endJob(
          job,
          new WorkerLostError(
            m.link.info.id,
            `input ${poison.index} was in flight on ${poison.losses} workers that were all lost; giving up on it (see option maxWorkerLosses)`,
          ),
        );
      }
    }
    this.emit('lost', { worker: m.link.info, reason, requeued: requeued + m.drainRequeued, draining });
    if (m.key !== undefined) {
      const st = this.#endpoints.get(m.key);
      if (st !== undefined && st.member === m) {
        st.member = undefined;
        // A worker dropped for a reason that is not retryable (it broke the protocol) is not retried at once.
        st.nextTry = Date.now() + recruitBackoffMs(recruitFailureOf(err), 0);
      }
    }
    if (this.#members.size === 0) this.#armWait();
    this.#pump();
  }

  // ---------------------------------------------------------------- end

  async #close(): Promise<void> {
    for (const job of [...this.#jobs]) this.#endJob(job, new FarmAbortError('The pool was closed'));
    this.#closed = true;
    clearTimeout(this.#waitTimer);
    clearInterval(this.#retryTimer);
    clearInterval(this.#progressTimer);
    this.#recruitQueue.clear();
    const links = [...this.#members].map((m) => {
      m.alive = false;
      return m.link.close();
    });
    this.#members.clear();
    this.#hungry.clear();
    await Promise.allSettled([...links, this.#discovery?.close() ?? Promise.resolve(), this.#local?.catch(() => {}) ?? Promise.resolve()]);
    // Recruits under way when we closed release what they got.
    await this.#recruitQueue.onIdle();
  }

  /** @internal Progress of every job now (for the facade's final event). */
  progressOf(job: FarmJob): FarmProgress | undefined {
    for (const j of this.#jobs) if (j.id === job.id) return j.progress(this.#workersOf(j));
    return undefined;
  }
}

/** A bundled program's stages, their hashes checked once per program object. */
const verified = new WeakMap<BundledProgram, PreparedStage[]>();

function verifiedBundles(bundled: BundledProgram): PreparedStage[] {
  const known = verified.get(bundled);
  if (known !== undefined) return known;
  const prepared = bundled.stages.map((s) => {
    const code = typeof s.code === 'string' ? Buffer.from(s.code, 'utf8') : Buffer.from(s.code);
    const hash = bundleHash(code);
    if (hash !== s.hash) throw new InvalidStageError(`Bundled stage ${s.name}: its code does not match its hash ${s.hash}`);
    return { name: s.name, hash, code, inline: code.toString('utf8', 0, INLINE_BUNDLE_MARKER.length) === INLINE_BUNDLE_MARKER };
  });
  verified.set(bundled, prepared);
  return prepared;
}

function isBundled(p: unknown): p is BundledProgram {
  return typeof p === 'object' && p !== null && (p as { kind?: unknown }).kind === 'bundled' && Array.isArray((p as { stages?: unknown }).stages);
}

function isRepository(x: unknown): x is TaskRepository {
  return (
    typeof x === 'object' &&
    x !== null &&
    !Array.isArray(x) &&
    typeof (x as TaskRepository).take === 'function' &&
    typeof (x as TaskRepository).complete === 'function' &&
    typeof (x as TaskRepository).requeue === 'function'
  );
}

function remoteOf(err: unknown): RemoteErrorInfo {
  return err instanceof Error
    ? { name: err.name, message: err.message, stack: err.stack ?? '', code: '' }
    : { name: 'Error', message: String(err), stack: '', code: '' };
}
