/**
 * One execution of a TaskFarm: discovery → recruiting → one control loop per recruited worker, all
 * pulling from one task repository → outputs by input index. Every wait has an owner that ends it:
 * the last output, the first fatal error, the abort signal, or the wait for workers.
 */
import { randomUUID } from 'node:crypto';
import PQueue from 'p-queue';
import {
  AuthenticationError,
  FarmAbortError,
  InvalidStageError,
  UnsendableInputError,
  FarmError,
  NoWorkersError,
  ProtocolError,
  StageSetupError,
  TaskCrashedError,
  TaskError,
  TaskTimeoutError,
  WorkerBusyError,
  WorkerLostError,
  type RemoteErrorInfo,
} from '../errors.js';
import { componentLogger, type Logger } from '../log.js';
import { findUnsendable } from '../protocol/codec.js';
import { asRemoteError, decodeOutcomes, encodeInputs } from '../protocol/batch.js';
import { StaticDiscovery, endpointKey, formatTarget, type Discovery, type WorkerEndpoint } from '../discovery/index.js';
import { MdnsDiscovery } from '../discovery/mdns.js';
import { PROTOCOL_VERSION } from '../protocol/version.js';
import { NO_KEY_HELP } from '../security/farm-key.js';
import type { ExecResults } from '../worker/executor.js';
import type { PreparedStage } from './bundler.js';
import type { PreparedShared } from './shared.js';
import type { LinkHandlers, WorkerInfo, WorkerLink } from './link.js';
import { LocalLink } from './local-link.js';
import { RemoteLink } from './remote-link.js';
import type { ResolvedTaskFarmOptions } from './options.js';
import type { TaskRecord, TaskRepository } from './repository.js';
import { firstComeFirstServed, type WorkerView } from './scheduling.js';
import { noWorkerReason, refusalReason } from './no-workers.js';

/** Progress of a run, as the `progress` event reports it. */
export interface FarmProgress {
  /** Tasks settled: outputs received, plus failed tasks with `errors: 'collect'`. */
  readonly done: number;
  /** Tasks settled as failed (`errors: 'collect'`; always 0 otherwise). */
  readonly failed: number;
  /** Number of inputs, when known (array inputs). */
  readonly total: number | undefined;
  /** Tasks sent to workers and not yet answered. */
  readonly inFlight: number;
  /** Workers computing now. */
  readonly workers: number;
}

/** Payload of the `lost` event. */
export interface WorkerLostEvent {
  readonly worker: WorkerInfo;
  /** Why the worker was declared lost: `worker left (draining)` when it shut down gracefully. */
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
  /** Code bundles sent to it (0 when it had every stage cached). */
  readonly bundlesSent: number;
  /** Bytes of shared data uploaded to it (0 when it had them cached). */
  readonly sharedBytesSent: number;
  /** True when it already held the run's code and shared data (nothing had to be sent). */
  readonly cached: boolean;
  /** Its recent task time in ms (-1 while unknown). */
  readonly avgTaskMs: number;
  /** Backup copies of stragglers it was given. */
  readonly speculative: number;
  /** Why it was lost, if it was. */
  readonly lost?: string;
}

/** What {@link TaskFarm.stats} returns. */
export interface FarmStats {
  readonly elapsedMs: number;
  /** Outputs delivered (failed tasks not included). */
  readonly completed: number;
  /** Indices of the inputs whose tasks failed for good, sorted (`errors: 'collect'`; empty otherwise). */
  readonly failed: readonly number[];
  readonly requeued: number;
  /** Straggling tasks re-issued to another worker (backup copies). */
  readonly speculated: number;
  /** Median task time over the recent tasks, in ms (-1 before the first result). */
  readonly medianTaskMs: number;
  readonly workers: readonly WorkerStats[];
}

/** Payload of the `fallback` event: the run computes on local threads instead of workers. */
export interface FallbackEvent {
  /**
   * Why, in one line: `no farm key (…how to fix…)`, `worker w1 at 10.0.0.5:7000 could not prove the
   * farm key: …`, `no worker of farm "physcis" answered; farms seen: physics`, `no worker answered
   * within 3000 ms`, or the refusal of each worker tried.
   */
  readonly reason: string;
}

/** The events a run reports through its TaskFarm. */
export interface RunEvents {
  recruited: [worker: WorkerInfo];
  lost: [event: WorkerLostEvent];
  progress: [progress: FarmProgress];
  /** The run computes on local threads instead of workers (also logged as a warning). */
  fallback: [event: FallbackEvent];
}

/** Where a run delivers each settled task: its output, or (errors: 'collect') the error it failed with. */
export type RunSink = (index: number, output: unknown, error?: TaskError) => void;

/** Where a run sends what it observes. */
export interface RunObserver {
  emit<K extends keyof RunEvents>(event: K, ...args: RunEvents[K]): void;
}

interface Session {
  readonly link: WorkerLink;
  readonly info: WorkerInfo;
  readonly key: string | undefined;
  readonly inFlight: Map<number, TaskRecord>;
  nextSeq: number;
  /** Tasks in flight at most. */
  window: number;
  /** Tasks per message. */
  batchSize: number;
  /** Tasks sent to it so far (including ones sent again). */
  assigned: number;
  avgTaskMs: number;
  completed: number;
  speculative: number;
  /** When it last delivered results (or was given work while it had none), Date.now(). */
  lastResultAt: number;
  alive: boolean;
  draining: boolean;
  /** Tasks the worker gave back unfinished while draining (requeued one by one). */
  drainRequeued: number;
  lost: string | undefined;
}

interface EndpointState {
  endpoint: WorkerEndpoint;
  connecting: boolean;
  session: Session | undefined;
  nextTry: number;
  failures: number;
  /** Removed by discovery or unusable: do not retry. */
  retired: boolean;
  /** Its first recruit attempt has not finished yet (it holds a share of a known-size workload). */
  firstAttempt: boolean;
}

/** Error kinds a worker reports (RemoteErrorKind); anything else is a broken worker. */
const KNOWN_KINDS = new Set(['thrown', 'crashed', 'timeout', 'setup', 'unserializable', 'cancelled', 'bad-input']);

/** True for an error outcome as workers produce it: a plain object whose `kind` is one we know. */
function isRemoteError(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) return false;
  const kind = (v as { kind?: unknown }).kind;
  return typeof kind === 'string' && KNOWN_KINDS.has(kind);
}

/** How many of an overdue worker's oldest in-flight tasks speculation looks at. */
const SPECULATION_SCAN = 64;

/**
 * A task in flight longer than this many times the longest task time seen (and than STUCK_MIN_MS)
 * is stuck, not straggling: a backup copy would only burn a second core (taskTimeoutMs stops it).
 */
const STUCK_MULTIPLE = 10;
const STUCK_MIN_MS = 2000;

/** How many recent task times the median is taken over. */
const RECENT = 512;

/** Most tasks in one batch. */
const MAX_BATCH = 4096;
/** Work per batch a worker thread runs, in ms: big enough to amortise a message, small enough to balance. */
const BATCH_TARGET_MS = 4;
const PROGRESS_EVERY_MS = 100;

/** See the module comment. */
export class Run {
  readonly #o: ResolvedTaskFarmOptions;
  readonly #log: Logger;
  readonly #stages: readonly PreparedStage[];
  readonly #shared: readonly PreparedShared[];
  readonly #repo: TaskRepository;
  readonly #observer: RunObserver;
  readonly #sink: RunSink;
  /** Input indices settled as failed (errors: 'collect'). */
  readonly #failed: number[] = [];
  readonly #clientId = randomUUID();
  readonly #sessions = new Set<Session>();
  /** Workers with room in their window that the repository could not fill. */
  readonly #hungry = new Set<Session>();
  /** Endpoints whose first recruit attempt is under way. */
  #firstAttempts = 0;
  /** Recent task time over all workers (ms; -1 until known): sizes a new worker's first batches. */
  #runAvgTaskMs = -1;
  /** The last task times (ms), for the median that speculation compares against. */
  readonly #recent = new Float64Array(RECENT);
  #recentCount = 0;
  #median: { at: number; value: number } = { at: 0, value: -1 };
  /** Tasks with a backup copy in flight: where each copy is. */
  readonly #copies = new Map<TaskRecord, { s: Session; seq: number }[]>();
  #speculated = 0;
  /** The longest task time seen (ms). */
  #maxTaskMs = 0;
  /** Tasks found stuck (see STUCK_MULTIPLE): never copied again. */
  readonly #stuck = new WeakSet<TaskRecord>();
  readonly #canPullNew: () => boolean;
  readonly #history: Session[] = [];
  readonly #endpoints = new Map<string, EndpointState>();
  readonly #recruitQueue = new PQueue({ concurrency: 16 });
  readonly #started = Date.now();
  #discovery: Discovery | undefined;
  #local: Promise<void> | undefined;
  #waitTimer: NodeJS.Timeout | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #progressTimer: NodeJS.Timeout | undefined;
  #lastProgress = 0;
  #finished = false;
  #result: { resolve: () => void; reject: (err: unknown) => void } | undefined;
  #abortListener: (() => void) | undefined;
  #pumping = false;
  #lastErrors = new Map<string, string>();
  /** Discovery's recent warnings (skipped adverts), for the reason of a fallback. */
  readonly #warnings: string[] = [];

  constructor(
    options: ResolvedTaskFarmOptions,
    stages: readonly PreparedStage[],
    shared: readonly PreparedShared[],
    repo: TaskRepository,
    observer: RunObserver,
    sink: RunSink,
    canPullNew: () => boolean = () => true,
  ) {
    this.#canPullNew = canPullNew;
    this.#o = options;
    this.#log = componentLogger('farm', options.logger);
    this.#stages = stages;
    this.#shared = shared;
    this.#repo = repo;
    this.#observer = observer;
    this.#sink = sink;
    repo.onAvailable = () => this.#pump();
  }

  /** Runs to the end. Resolves when every output is in; rejects with the first fatal error. */
  execute(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#result = { resolve, reject };
      const signal = this.#o.signal;
      if (signal !== undefined) {
        if (signal.aborted) return this.#finish(new FarmAbortError('The run was aborted before it started', { cause: signal.reason }));
        this.#abortListener = () => this.#finish(new FarmAbortError('The run was aborted', { cause: signal.reason }));
        signal.addEventListener('abort', this.#abortListener, { once: true });
      }
      this.#progressTimer = setInterval(() => {
        this.#emitProgress(false);
        // Idle workers re-check for stragglers even when no result arrives to wake them.
        if (this.#hungry.size > 0 && this.#o.speculation !== false) this.#pump();
        if (this.#copies.size > 0) this.#dropStuckCopies();
      }, PROGRESS_EVERY_MS);
      this.#progressTimer.unref();
      if (this.#checkComplete()) return;
      this.#begin().catch((err: unknown) => this.#finish(err));
    });
  }

  async #begin(): Promise<void> {
    const d = this.#o.discovery;
    if (d === 'local') {
      this.#startLocal();
      return;
    }
    if (this.#o.key === undefined && !this.#o.insecure) {
      // Without the farm key no worker would accept us (nor would we trust one): do not even look.
      if (this.#o.localFallback) {
        this.#fallBack(`no farm key (${NO_KEY_HELP})`);
      } else {
        const why =
          typeof d === 'object' && 'peers' in d
            ? 'a run given peers computes on local threads only when asked to (localFallback: true)'
            : 'localFallback is off';
        this.#finish(new NoWorkersError(`No farm key, so no worker can be used, and ${why}. ${NO_KEY_HELP}`));
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
    this.#armWait();
    // Not unref'd: while a run waits for workers, this timer is what keeps the process alive.
    this.#retryTimer = setInterval(() => this.#retry(), 250);
    try {
      const snapshot = await discovery.start();
      for (const e of snapshot) this.#onUp(e);
    } catch (err) {
      this.#log.warn('discovery failed to start', { error: (err as Error).message });
    }
  }

  // ---------------------------------------------------------------- recruiting

  #onUp(endpoint: WorkerEndpoint): void {
    if (this.#finished) return;
    const key = endpointKey(endpoint);
    let st = this.#endpoints.get(key);
    if (st === undefined) {
      st = { endpoint, connecting: false, session: undefined, nextTry: 0, failures: 0, retired: false, firstAttempt: true };
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
    if (st !== undefined && st.session === undefined && !st.connecting) st.retired = true;
  }

  #retry(): void {
    if (this.#finished) return;
    const now = Date.now();
    for (const [key, st] of this.#endpoints) {
      if (!st.retired && now >= st.nextTry) this.#tryRecruit(key, st);
    }
  }

  #tryRecruit(key: string, st: EndpointState): void {
    if (this.#finished || st.connecting || st.session !== undefined || st.retired) return;
    if (this.#repo.isComplete) return;
    st.connecting = true;
    void this.#recruitQueue.add(async () => {
      try {
        if (this.#finished) return;
        await this.#recruit(key, st);
      } finally {
        st.connecting = false;
        if (st.firstAttempt) {
          st.firstAttempt = false;
          this.#firstAttempts--;
          // Shares held for workers still being recruited are released: everyone may take more.
          if (this.#firstAttempts === 0) for (const s of this.#sessions) this.#hungry.add(s);
          const expired = this.#waitExpired;
          if (this.#firstAttempts === 0 && expired !== undefined) {
            this.#waitExpired = undefined;
            if (!this.#finished && this.#sessions.size === 0 && this.#local === undefined) this.#noWorker(Date.now() - expired.since);
          }
          this.#pump();
        }
      }
    });
  }

  async #recruit(key: string, st: EndpointState): Promise<void> {
    const e = st.endpoint;
    const target = formatTarget(e.host, e.port);
    let session: Session | undefined;
    const handlers: LinkHandlers = {
      onResults: (results) => session !== undefined && this.#onResults(session, results),
      onLost: (err) => session !== undefined && this.#onLost(session, err),
      onDraining: () => {
        if (session !== undefined) session.draining = true;
      },
    };
    let link: RemoteLink;
    try {
      link = await RemoteLink.open(
        e,
        this.#stages,
        this.#shared,
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
          taskTimeoutMs: this.#o.taskTimeoutMs,
          logger: this.#log,
        },
        handlers,
        (desc) => ![...this.#sessions].some((s) => s.info.id === desc.id),
      );
    } catch (err) {
      const fe = err instanceof FarmError ? err : new WorkerLostError(e.id ?? target, String(err));
      st.failures++;
      this.#lastErrors.set(target, refusalReason(target, fe, this.#o.insecure));
      if ((fe instanceof StageSetupError || fe instanceof InvalidStageError) && this.#sessions.size === 0 && this.#local === undefined) {
        // The same code runs everywhere: a stage that cannot load is the program's fault. Fail fast.
        this.#finish(fe);
        return;
      }
      // Busy workers are polled; unreachable ones back off up to 5 s; protocol mismatches are slow to change.
      const backoff =
        fe instanceof WorkerBusyError
          ? 500
          : fe instanceof ProtocolError || fe instanceof AuthenticationError
            ? 10_000
            : Math.min(5000, 250 * 2 ** Math.min(st.failures, 5));
      st.nextTry = Date.now() + backoff;
      if (fe instanceof AuthenticationError) this.#log.warn('not using worker', { target, error: fe.message });
      else if (st.failures === 1 || !(fe instanceof WorkerBusyError)) this.#log.info('could not recruit worker', { target, error: fe.message });
      return;
    }
    if (this.#finished) {
      await link.close();
      return;
    }
    session = this.#addSession(link, key);
    st.session = session;
    st.failures = 0;
  }

  #addSession(link: WorkerLink, key: string | undefined): Session {
    const threads = Math.max(1, link.info.threads);
    const session: Session = {
      link,
      info: link.info,
      key,
      inFlight: new Map(),
      nextSeq: 1,
      window: threads * 2 + 1,
      batchSize: 1,
      assigned: 0,
      speculative: 0,
      lastResultAt: Date.now(),
      avgTaskMs: -1,
      completed: 0,
      alive: true,
      draining: false,
      drainRequeued: 0,
      lost: undefined,
    };
    this.#sessions.add(session);
    this.#hungry.add(session);
    this.#history.push(session);
    clearTimeout(this.#waitTimer);
    this.#waitTimer = undefined;
    this.#log.info('recruited', { worker: link.info.id, host: link.info.host, address: link.info.address, threads });
    this.#observer.emit('recruited', link.info);
    this.#pump();
    return session;
  }

  /** The wait for workers ran out while first recruit attempts were under way: decide when they end. */
  #waitExpired: { since: number } | undefined;

  #armWait(): void {
    if (this.#waitTimer !== undefined || this.#finished || this.#local !== undefined) return;
    const since = Date.now();
    this.#waitExpired = undefined;
    this.#waitTimer = setTimeout(() => {
      this.#waitTimer = undefined;
      if (this.#finished || this.#sessions.size > 0) return;
      // A worker whose first recruit attempt is still under way (connecting, loading the stages,
      // receiving shared data) has not said no yet: wait for it (each step is bounded) before
      // saying that none could be used.
      if (this.#firstAttempts > 0) {
        this.#waitExpired = { since };
        return;
      }
      this.#noWorker(this.#o.workerWaitMs);
    }, this.#o.workerWaitMs);
  }

  /** No worker for the whole wait: fall back to local threads, or fail with NoWorkersError. */
  #noWorker(waitedMs: number): void {
    const d = this.#o.discovery;
    const reason = noWorkerReason({
      waitedMs,
      discovery: d === 'mdns' ? 'mdns' : typeof d === 'object' && 'peers' in d ? 'peers' : 'custom',
      farm: this.#o.farm,
      farmsSeen: this.#discovery instanceof MdnsDiscovery ? this.#discovery.farmsSeen() : [],
      refusals: this.#lastErrors,
      warnings: this.#warnings,
      allLost: this.#history.length > 0,
    });
    if (this.#o.localFallback) {
      this.#fallBack(reason);
      return;
    }
    const peers = typeof d === 'object' && 'peers' in d;
    this.#finish(
      new NoWorkersError(
        `No worker could be used: ${reason}. ` +
          (peers
            ? 'A run given peers does not compute on local threads unless asked to (localFallback: true, or --local-fallback).'
            : 'Start `taskfarm worker` on some machines, check `peers`, or enable localFallback.'),
        { refused: [...this.#lastErrors].map(([target, why]) => ({ target, reason: why })) },
      ),
    );
  }

  /** Computes on local threads instead of workers, and says why (event + warning). */
  #fallBack(reason: string): void {
    if (this.#local !== undefined || this.#finished) return;
    this.#log.warn(`computing on local threads: ${reason}`);
    this.#observer.emit('fallback', { reason });
    this.#startLocal();
  }

  #startLocal(): void {
    if (this.#local !== undefined) return;
    let session: Session | undefined;
    this.#local = LocalLink.open(
      this.#stages,
      this.#shared,
      { threads: this.#o.threads, cacheDir: this.#o.cacheDir, threadMemoryMb: undefined, taskTimeoutMs: this.#o.taskTimeoutMs, logger: this.#log },
      {
        onResults: (results) => session !== undefined && this.#onResults(session, results),
        onLost: (err) => session !== undefined && this.#onLost(session, err),
        onDraining: () => {},
      },
    ).then(
      async (link) => {
        if (this.#finished) return link.close();
        session = this.#addSession(link, undefined);
      },
      (err: unknown) => this.#finish(err instanceof FarmError ? err : new StageSetupError('local', remoteOf(err))),
    );
  }

  // ---------------------------------------------------------------- dispatch

  /**
   * Gives work to workers with room: first `first` (whose results just arrived), then the workers
   * that went hungry earlier, until the repository runs dry. O(1) per call plus the tasks sent: no
   * per-task loop over all workers, so dispatch cost does not grow with the farm.
   */
  #pump(first?: Session): void {
    if (this.#finished || this.#pumping) return;
    this.#pumping = true;
    try {
      let dry = first !== undefined && !this.#fill(first);
      if (!dry) {
        for (const s of this.#byPolicy(this.#hungry)) {
          if (this.#finished) return;
          if (!this.#fill(s)) {
            dry = true;
            // Nothing left to hand out. A worker with tasks of its own in flight may be the straggler
            // itself (speculation gives it none of its own tasks): a worker after it may still take a
            // backup copy, so go on; stop at the first dry worker that holds nothing.
            if (s.inFlight.size > 0 && this.#repo.isSourceDrained && this.#o.speculation !== false) continue;
            break;
          }
        }
      }
    } catch (err) {
      this.#finish(err);
      return;
    } finally {
      this.#pumping = false;
    }
    if (this.#finished) return;
    if (this.#repo.sourceError !== undefined) {
      const err = this.#repo.sourceError;
      this.#finish(err instanceof FarmError ? err : new FarmError('FARM_ERR_INVALID_OPTION', `Reading the inputs failed: ${String(err)}`, { cause: err }));
      return;
    }
    // Taking may have discovered the end of an iterable source.
    this.#checkComplete();
  }

  /** Fills one worker's window. False when the repository ran dry first (the worker is then hungry). */
  #fill(s: Session): boolean {
    if (!s.alive || s.draining) {
      this.#hungry.delete(s);
      return true;
    }
    // A worker with no task times of its own starts from the farm's (its own soon take over).
    if (s.avgTaskMs < 0 && this.#runAvgTaskMs >= 0) this.#resize(s, this.#runAvgTaskMs);
    for (;;) {
      let free = Math.min(s.window, s.link.maxInFlight) - s.inFlight.size;
      const total = this.#repo.total;
      if (total !== undefined) {
        // A known-size workload is shared: no worker holds more than its share of what is left, so a
        // short run of tiny tasks is not swallowed whole by the worker that was ready first...
        const contenders = this.#sessions.size + this.#firstAttempts;
        const share = Math.ceil((total - this.#repo.done) / contenders);
        free = Math.min(free, Math.max(Math.max(1, s.info.threads) * 2 + 1, share) - s.inFlight.size);
        // ...and while workers found together are still being recruited, each keeps its share for them.
        if (this.#firstAttempts > 0) free = Math.min(free, Math.ceil(total / contenders) - s.assigned);
        if (free <= 0) {
          // At its share: its own results (or the end of the first recruits) make room again.
          this.#hungry.delete(s);
          return true;
        }
      }
      // Full, or a full batch still out and not room for another: wait for results.
      if (free <= 0 || (free < s.batchSize && s.inFlight.size >= s.batchSize)) {
        this.#hungry.delete(s);
        return true;
      }
      const recs = this.#repo.take(Math.min(free, s.batchSize), this.#canPullNew());
      if (recs.length === 0) {
        // Nothing left to hand out: perhaps a straggler elsewhere deserves a backup copy here.
        if (this.#repo.isSourceDrained && this.#speculate(s, Math.min(free, s.batchSize))) continue;
        this.#hungry.add(s);
        return false;
      }
      if (!this.#send(s, recs)) return true;
    }
  }

  /** Workers in the order the scheduling policy gives them work. */
  #byPolicy(sessions: Set<Session>): Iterable<Session> {
    if (sessions.size < 2 || this.#o.scheduling === firstComeFirstServed) return sessions;
    const view = (s: Session): WorkerView => ({
      id: s.info.id,
      host: s.info.host,
      threads: s.info.threads,
      cached: s.link.bundlesSent === 0 && s.link.sharedBytesSent === 0,
      avgTaskMs: s.avgTaskMs,
      inFlight: s.inFlight.size,
    });
    const policy = this.#o.scheduling;
    return [...sessions]
      .map((s) => ({ s, v: view(s) }))
      .sort((a, b) => policy.compare(a.v, b.v))
      .map((x) => x.s);
  }

  /** Median of the recent task times (ms), recomputed at most every 50 ms. */
  #medianTaskMs(): number {
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

  /**
   * Gives an idle worker backup copies of the tasks that have been in flight longest elsewhere,
   * beyond `multiplier` × the median task time (and `minMs`). At most one extra copy per task.
   * Returns true when it sent any.
   */
  #speculate(target: Session, max: number): boolean {
    const spec = this.#o.speculation;
    if (spec === false || max <= 0 || this.#finished) return false;
    const median = this.#medianTaskMs();
    if (median < 0) return false;
    const threshold = Math.max(spec.minMs, spec.multiplier * median);
    const stuckAfter = this.#stuckAfterMs();
    const now = Date.now();
    const candidates: { s: Session; seq: number; rec: TaskRecord }[] = [];
    for (const s of this.#overdue(threshold, now)) {
      if (s === target || !s.alive) continue;
      let taken = 0;
      let looked = 0;
      // In-flight maps keep send order: the oldest tasks come first. Look at a few only: a worker
      // that is overdue is slow at its head, and the scan must not grow with its window.
      for (const [seq, rec] of s.inFlight) {
        if (++looked > SPECULATION_SCAN) break;
        if (rec.done || rec.copies > 1 || this.#stuck.has(rec)) continue;
        if (now - rec.sentAt < threshold) break;
        if (now - rec.sentAt > stuckAfter) {
          this.#markStuck(rec, now - rec.sentAt, s);
          continue;
        }
        candidates.push({ s, seq, rec });
        if (++taken >= max) break;
      }
    }
    if (candidates.length === 0) return false;
    candidates.sort((a, b) => a.rec.sentAt - b.rec.sentAt);
    const picked = candidates.slice(0, max);
    for (const c of picked) this.#copies.set(c.rec, [{ s: c.s, seq: c.seq }]);
    const seqBefore = target.nextSeq;
    const recs = picked.map((c) => c.rec);
    if (!this.#send(target, recs)) return false;
    // Remember where the new copies went (the seqs #send just assigned, in order).
    let seq = seqBefore;
    for (const c of picked) {
      this.#copies.get(c.rec)!.push({ s: target, seq });
      seq = seq >= 0xffffffff ? 1 : seq + 1;
    }
    target.speculative += picked.length;
    this.#speculated += picked.length;
    this.#log.info('re-issued straggling tasks to an idle worker', { worker: target.info.id, tasks: picked.length, thresholdMs: Math.round(threshold) });
    return true;
  }

  /** How long a task may be in flight before it counts as stuck (ms). */
  #stuckAfterMs(): number {
    return Math.max(STUCK_MIN_MS, STUCK_MULTIPLE * this.#maxTaskMs);
  }

  #markStuck(rec: TaskRecord, ms: number, s: Session): void {
    this.#stuck.add(rec);
    this.#log.warn('a task looks stuck: no backup copy of it (set taskTimeoutMs to stop such tasks)', {
      index: rec.index,
      worker: s.info.id,
      inFlightMs: Math.round(ms),
      longestTaskMs: Math.round(this.#maxTaskMs),
    });
  }

  /**
   * A task whose backup copy has itself run far beyond every task time seen is stuck on both
   * workers: the backup copy is cancelled (its thread is stopped there), the first one carries on.
   */
  #dropStuckCopies(): void {
    const stuckAfter = this.#stuckAfterMs();
    const now = Date.now();
    for (const [rec, copies] of this.#copies) {
      if (rec.done || copies.length < 2 || now - rec.sentAt <= stuckAfter) continue;
      const backup = copies[copies.length - 1]!;
      this.#copies.delete(rec);
      if (backup.s.inFlight.get(backup.seq) !== rec) continue;
      backup.s.inFlight.delete(backup.seq);
      rec.copies--;
      backup.s.link.cancel([backup.seq]);
      this.#markStuck(rec, now - rec.sentAt, backup.s);
      this.#hungry.add(backup.s);
    }
  }

  #overdueCache: { at: number; threshold: number; sessions: Session[] } = { at: 0, threshold: 0, sessions: [] };

  /**
   * Workers that look slow: tasks in flight, and nothing delivered for longer than the speculation
   * threshold. Healthy workers deliver batches every few ms, so this is usually empty; recomputed at
   * most every 20 ms, so idle workers asking for work do not each scan the whole farm.
   */
  #overdue(threshold: number, now: number): Session[] {
    const c = this.#overdueCache;
    if (now - c.at < 20 && c.threshold === threshold) return c.sessions;
    const sessions: Session[] = [];
    for (const s of this.#sessions) {
      if (s.inFlight.size > 0 && now - s.lastResultAt > threshold) sessions.push(s);
    }
    this.#overdueCache = { at: now, threshold, sessions };
    return sessions;
  }

  /** Cancels the in-flight copies of a settled task on their workers. */
  #cancelCopies(rec: TaskRecord): void {
    const copies = this.#copies.get(rec);
    this.#copies.delete(rec);
    if (copies === undefined) return;
    for (const { s, seq } of copies) {
      if (s.inFlight.get(seq) !== rec) continue;
      s.inFlight.delete(seq);
      rec.copies--;
      s.link.cancel([seq]);
    }
  }

  /** Dispatch may continue after backpressure (the consumer of results() caught up). */
  resume(): void {
    this.#pump();
  }

  /** Packs and sends tasks to one worker, halving batches that exceed its message size. False when the run ended. */
  #send(s: Session, recs: TaskRecord[]): boolean {
    let inputs: Uint8Array;
    try {
      inputs = encodeInputs(recs.map((r) => r.input));
    } catch (err) {
      const bad = recs.map((r) => [r, findUnsendable(r.input)] as const).find(([, why]) => why !== undefined);
      this.#finish(
        bad !== undefined
          ? new UnsendableInputError(bad[0].index, bad[1]![0], bad[1]![1])
          : new UnsendableInputError(recs[0]!.index, 'input', `not serializable (${(err as Error).message})`),
      );
      return false;
    }
    if (inputs.byteLength > s.link.maxPayloadBytes) {
      if (recs.length === 1) {
        this.#finish(
          new UnsendableInputError(
            recs[0]!.index,
            'input',
            `${inputs.byteLength} bytes encoded`,
            `Worker ${s.info.id} accepts at most ${s.link.maxPayloadBytes} bytes of inputs in one message (daemon option ` +
              '--max-message-mb): split the input, or raise the limit on the workers.',
          ),
        );
        return false;
      }
      const half = recs.length >> 1;
      return this.#send(s, recs.slice(0, half)) && this.#send(s, recs.slice(half));
    }
    const seqs = new Uint32Array(recs.length);
    const now = Date.now();
    for (let i = 0; i < recs.length; i++) {
      const seq = s.nextSeq;
      const rec = recs[i]!;
      s.nextSeq = s.nextSeq >= 0xffffffff ? 1 : s.nextSeq + 1;
      s.inFlight.set(seq, rec);
      rec.copies++;
      rec.sentAt = now;
      seqs[i] = seq;
    }
    // A worker given work while it had none has not been slow yet: its clock starts now.
    if (s.inFlight.size === recs.length) s.lastResultAt = now;
    s.assigned += recs.length;
    s.link.send({ seqs, inputs });
    return true;
  }

  #onResults(s: Session, r: ExecResults): void {
    if (this.#finished || !s.alive) return;
    s.lastResultAt = Date.now();
    let decoded: { flags: Uint8Array; values: unknown[] };
    try {
      if (r.durations.length !== r.seqs.length) throw new TypeError('durations do not match seqs');
      decoded = decodeOutcomes(r.outcomes, r.seqs.length);
    } catch (err) {
      // A worker that sends garbage is not trusted with more work; its tasks go elsewhere.
      this.#drop(s, new ProtocolError(`sent outcomes that cannot be decoded (${(err as Error).message})`));
      return;
    }
    const { flags, values } = decoded;
    let sum = 0;
    let n = 0;
    for (let i = 0; i < r.seqs.length; i++) {
      const seq = r.seqs[i]!;
      const rec = s.inFlight.get(seq);
      if (rec === undefined) continue; // a seq we did not send, or already settled: dropped
      s.inFlight.delete(seq);
      rec.copies--;
      const d = r.durations[i]!;
      sum += d;
      n++;
      this.#recent[this.#recentCount++ % RECENT] = d;
      if (d > this.#maxTaskMs) this.#maxTaskMs = d;
      if (rec.done) continue;
      // The first copy to answer settles the task; any other copy is cancelled on its worker.
      if (rec.copies > 0) this.#cancelCopies(rec);
      const flag = flags[i];
      const value = values[i];
      if (flag === 0) {
        this.#repo.complete(rec);
        s.completed++;
        this.#sink(rec.index, value);
        continue;
      }
      if (flag !== 1 || !isRemoteError(value)) {
        // Not an outcome this protocol produces: the worker is broken or hostile. Its tasks (this one
        // included) go elsewhere; one bad worker must not fail the run.
        s.inFlight.set(seq, rec);
        this.#drop(s, new ProtocolError(`sent a malformed outcome for input ${rec.index}`));
        return;
      }
      if (!this.#onTaskError(s, rec, asRemoteError(value))) return;
    }
    if (n > 0) this.#resize(s, sum / n);
    this.#pump(s);
  }

  /** Sizes a worker's batches and window from its recent task time. */
  #resize(s: Session, avg: number): void {
    s.avgTaskMs = s.avgTaskMs < 0 ? avg : s.avgTaskMs * 0.7 + avg * 0.3;
    this.#runAvgTaskMs = this.#runAvgTaskMs < 0 ? avg : this.#runAvgTaskMs * 0.9 + avg * 0.1;
    const threads = Math.max(1, s.info.threads);
    s.batchSize = Math.max(1, Math.min(MAX_BATCH, Math.floor(BATCH_TARGET_MS / Math.max(s.avgTaskMs, 0.0001))));
    // Enough batches that every thread has one running and one queued, and the round trip is hidden.
    s.window = s.batchSize * (threads * 2 + 1);
  }

  /** Handles one failed task; returns false when the run ended. */
  #onTaskError(s: Session, rec: TaskRecord, e: RemoteErrorInfo & { kind: string }): boolean {
    const ctx = { index: rec.index, workerId: s.info.id, attempts: rec.crashes + rec.errors + 1 };
    switch (e.kind) {
      case 'cancelled':
        if (s.draining) s.drainRequeued++;
        this.#repo.requeue([rec]);
        return true;
      case 'crashed':
        rec.crashes++;
        if (rec.crashes >= this.#o.maxAttempts) return this.#taskFailed(rec, new TaskCrashedError({ ...ctx, attempts: rec.crashes }, e));
        this.#log.warn('a task crashed its thread; retrying it', { index: rec.index, worker: s.info.id, crashes: rec.crashes });
        this.#repo.requeue([rec]);
        return true;
      case 'thrown':
      case 'timeout':
        rec.errors++;
        if (rec.errors <= this.#o.retries) {
          this.#repo.requeue([rec]);
          return true;
        }
        return this.#taskFailed(rec, e.kind === 'timeout' ? new TaskTimeoutError(ctx, e, this.#o.taskTimeoutMs) : new TaskError(ctx, e));
      case 'setup':
        this.#finish(new StageSetupError(s.info.id, e));
        return false;
      default: // 'unserializable', 'bad-input': the task itself is at fault, wherever it runs
        return this.#taskFailed(rec, new TaskError(ctx, e));
    }
  }

  /**
   * A task failed for good: with errors 'collect' it is settled as failed and the run goes on
   * (returns true); otherwise the run fails with `err` (returns false).
   */
  #taskFailed(rec: TaskRecord, err: TaskError): boolean {
    if (this.#o.errors !== 'collect') {
      this.#finish(err);
      return false;
    }
    if (!this.#repo.fail(rec)) return true;
    this.#failed.push(rec.index);
    this.#log.warn('a task failed; keeping going (errors: collect)', { index: rec.index, error: err.message });
    this.#sink(rec.index, undefined, err);
    return true;
  }

  /** Ends a session on our side (the worker misbehaved) and handles it as lost. */
  #drop(s: Session, err: FarmError): void {
    this.#log.warn('dropping a worker', { worker: s.info.id, reason: err.message });
    void s.link.close();
    this.#onLost(s, err);
  }

  #onLost(s: Session, err: FarmError): void {
    if (!s.alive) return;
    s.alive = false;
    // A drained worker ends its stream after giving back what it did not finish: it left, it was not lost.
    s.lost = s.draining ? 'worker left (draining)' : err instanceof WorkerLostError ? err.reason : err.message;
    this.#sessions.delete(s);
    this.#hungry.delete(s);
    const requeue: TaskRecord[] = [];
    for (const rec of s.inFlight.values()) {
      rec.copies--;
      if (rec.done) continue;
      const copies = this.#copies.get(rec);
      if (copies !== undefined) {
        const rest = copies.filter((c) => c.s !== s);
        if (rest.length > 0) this.#copies.set(rec, rest);
        else this.#copies.delete(rec);
      }
      if (rec.copies > 0) continue; // its backup copy elsewhere carries on
      rec.losses++;
      requeue.push(rec);
    }
    s.inFlight.clear();
    if (this.#finished) return;
    const poison = requeue.find((r) => r.losses >= this.#o.maxWorkerLosses);
    this.#repo.requeue(requeue);
    this.#observer.emit('lost', { worker: s.info, reason: s.lost, requeued: requeue.length + s.drainRequeued, draining: s.draining });
    if (poison !== undefined) {
      this.#finish(
        new WorkerLostError(
          s.info.id,
          `input ${poison.index} was in flight on ${poison.losses} workers that were all lost; giving up on it (see option maxWorkerLosses)`,
        ),
      );
      return;
    }
    if (s.key !== undefined) {
      const st = this.#endpoints.get(s.key);
      if (st !== undefined && st.session === s) {
        st.session = undefined;
        // A worker dropped for breaking the protocol is not retried at once.
        st.nextTry = Date.now() + (err instanceof ProtocolError ? 10_000 : 250);
      }
    }
    if (this.#sessions.size === 0) this.#armWait();
    this.#pump();
  }

  // ---------------------------------------------------------------- end

  #checkComplete(): boolean {
    if (!this.#repo.isComplete) return false;
    this.#finish(undefined);
    return true;
  }

  #finish(error: unknown): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#waitTimer);
    clearInterval(this.#retryTimer);
    clearInterval(this.#progressTimer);
    if (this.#abortListener !== undefined) this.#o.signal?.removeEventListener('abort', this.#abortListener);
    if (error === undefined) this.#emitProgress(true);
    this.#repo.close();
    this.#recruitQueue.clear();
    const links = [...this.#sessions].map((s) => {
      s.alive = false;
      return s.link.close();
    });
    this.#sessions.clear();
    const closing = Promise.allSettled([...links, this.#discovery?.close() ?? Promise.resolve(), this.#local?.catch(() => {}) ?? Promise.resolve()]);
    void closing.then(() => {
      if (error === undefined) this.#result?.resolve();
      else this.#result?.reject(error);
    });
  }

  #emitProgress(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.#lastProgress < PROGRESS_EVERY_MS) return;
    this.#lastProgress = now;
    let inFlight = 0;
    for (const s of this.#sessions) inFlight += s.inFlight.size;
    this.#observer.emit('progress', { done: this.#repo.done, failed: this.#failed.length, total: this.#repo.total, inFlight, workers: this.#sessions.size });
  }

  /** Figures so far. */
  stats(): FarmStats {
    return {
      elapsedMs: Date.now() - this.#started,
      completed: this.#repo.done - this.#failed.length,
      failed: [...this.#failed].sort((a, b) => a - b),
      requeued: this.#repo.requeued,
      speculated: this.#speculated,
      medianTaskMs: this.#medianTaskMs(),
      workers: this.#history.map((s) => ({
        id: s.info.id,
        host: s.info.host,
        address: s.info.address,
        threads: s.info.threads,
        completed: s.completed,
        bundlesSent: s.link.bundlesSent,
        sharedBytesSent: s.link.sharedBytesSent,
        cached: s.link.bundlesSent === 0 && s.link.sharedBytesSent === 0,
        avgTaskMs: s.avgTaskMs,
        speculative: s.speculative,
        ...(s.lost === undefined ? {} : { lost: s.lost }),
      })),
    };
  }
}

function remoteOf(err: unknown): RemoteErrorInfo {
  return err instanceof Error
    ? { name: err.name, message: err.message, stack: err.stack ?? '', code: '' }
    : { name: 'Error', message: String(err), stack: '', code: '' };
}
