/**
 * The service's statistics and metrics (issue 12), beside the scheduler: per-job statistics saved in
 * the store (`GET …/stats`), per-worker histories (`GET /api/v1/workers/{id}`), and the Prometheus
 * series of {@link registerServiceMetrics} fed from the pool's events, the running jobs'
 * repositories and a timing wrapper around the store's writes.
 */
import type { FarmPool, WorkerLostEvent } from '../farm/index.js';
import type { Logger } from '../log.js';
import type { JobRecord, JobStore, SettleResult, TaskCounts } from '../store/index.js';
import { JobStatsTracker, WorkerHistory, statsViewOf, workerOfFailure, type DurationHistogram, type JobStatsView, type WorkerLoss } from './job-stats.js';
import { registerServiceMetrics, type LossReason, type ServiceMetricsRecorder, type StateCounts, type WorkerMetricState } from './metrics.js';
import type { RepositoryObserver } from './store-repository.js';

/** A Registry as prom-client has it (checked by shape: the service does not require prom-client's class identity). */
type RegistryLike = Parameters<typeof registerServiceMetrics>[0];

/** Running jobs' statistics are saved this often, ms. */
const SAVE_MS = 5_000;
/** Worker histories kept. */
const MAX_WORKERS = 512;

/** The store's writes, by the kind of commit they are (for `taskfarm_store_commit_duration_seconds`). */
const TIMED: Readonly<Record<string, 'outputs' | 'inputs' | 'transition'>> = {
  commitOutputs: 'outputs',
  failTasks: 'outputs',
  requeueTasks: 'outputs',
  claimTasks: 'outputs',
  claimBatch: 'outputs',
  appendInputs: 'inputs',
  commitSubmit: 'inputs',
  startJob: 'transition',
  holdJob: 'transition',
  releaseJob: 'transition',
  cancelJob: 'transition',
  finishJob: 'transition',
  resubmitJob: 'transition',
};

/** A loss reason (the pool's text) as the label of `taskfarm_worker_losses_total`. */
export function lossReasonOf(e: Pick<WorkerLostEvent, 'reason' | 'draining'>): LossReason {
  const r = e.reason.toLowerCase();
  if (e.draining || /draining|left/.test(r)) return 'drained';
  if (/heartbeat|silent|nothing heard/.test(r)) return 'silent';
  if (/malformed|protocol|decoded|garbage/.test(r)) return 'protocol';
  if (/crash|exited|killed|signal/.test(r)) return 'crashed';
  if (/lease|expired|released/.test(r)) return 'expired';
  if (/stream|connect|closed|reset|econn|unavailable|tls|refused|writing/.test(r)) return 'connection';
  return 'other';
}

/** A job the statistics know (for naming it on a worker's page, and who may see it). */
interface JobRef {
  readonly ticket: string;
  readonly name: string;
  readonly owner: string;
}

/** What `GET /api/v1/workers/{id}` says besides the worker itself. */
export interface WorkerDetailView {
  readonly jobs: readonly { readonly ticket: string; readonly name: string; readonly done: number; readonly failed: number; readonly avgTaskMs: number }[];
  readonly durations: DurationHistogram;
  readonly losses: readonly WorkerLoss[];
}

/** See the module comment. Owned by the job service. */
export class ServiceStats {
  readonly #store: JobStore;
  readonly #log: Logger;
  readonly #metrics: ServiceMetricsRecorder | undefined;
  readonly #jobs = new Map<string, { ref: JobRef; tracker: JobStatsTracker; counts: TaskCounts }>();
  readonly #workers = new Map<string, WorkerHistory>();
  readonly #hosts = new Map<string, string>();
  readonly #owners = new Map<string, string>();
  #summary: { at: number; value: ReturnType<JobStore['summary']> } | undefined;
  readonly #timer: NodeJS.Timeout;
  /** The store, its writes timed. */
  readonly store: JobStore;

  constructor(options: {
    readonly store: JobStore;
    readonly pool: FarmPool;
    readonly logger: Logger;
    /** Where the Prometheus series go; none: no metrics. */
    readonly registry?: unknown;
    /** The pool's workers per state, for `taskfarm_workers`. */
    readonly workersByState: () => StateCounts<WorkerMetricState>;
  }) {
    this.#store = options.store;
    this.#log = options.logger;
    const registry = options.registry as RegistryLike | undefined;
    if (registry !== undefined && registry !== null && typeof (registry as { getSingleMetric?: unknown }).getSingleMetric === 'function') {
      if (registry.getSingleMetric('taskfarm_jobs') === undefined) {
        this.#metrics = registerServiceMetrics(registry, {
          jobsByState: async () => (await this.#storeSummary()).jobs,
          tasksByState: async () => (await this.#storeSummary()).tasks,
          workersByState: options.workersByState,
        });
      } else this.#log.warn('the metrics registry already has the service series: this service records none');
    }
    this.store = this.#metrics === undefined ? options.store : this.#timed(options.store, this.#metrics);
    options.pool.on('recruited', (w) => {
      this.#hosts.set(w.id, w.host);
      this.#metrics?.recruited();
    });
    options.pool.on('lost', (e) => {
      this.#hosts.set(e.worker.id, e.worker.host);
      this.#metrics?.lost(lossReasonOf(e));
      this.#history(e.worker.id)?.lost({ at: Date.now(), reason: e.reason, requeued: e.requeued });
    });
    this.#timer = setInterval(() => void this.saveDirty(), SAVE_MS);
    this.#timer.unref();
  }

  /** One scrape reads the summary once for both gauges. */
  #storeSummary(): ReturnType<JobStore['summary']> {
    const now = Date.now();
    if (this.#summary === undefined || now - this.#summary.at > 1000) {
      const value = this.#store.summary();
      value.catch(() => {
        if (this.#summary?.value === value) this.#summary = undefined;
      });
      this.#summary = { at: now, value };
    }
    return this.#summary.value;
  }

  #timed(store: JobStore, metrics: ServiceMetricsRecorder): JobStore {
    return new Proxy(store, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target) as unknown;
        if (typeof value !== 'function') return value;
        const kind = typeof prop === 'string' ? TIMED[prop] : undefined;
        if (kind === undefined) return (value as (...a: unknown[]) => unknown).bind(target);
        return async (...args: unknown[]) => {
          const t0 = performance.now();
          const out = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          metrics.storeCommit(performance.now() - t0, kind);
          return out;
        };
      },
    });
  }

  #history(id: string): WorkerHistory | undefined {
    let h = this.#workers.get(id);
    if (h === undefined) {
      if (this.#workers.size >= MAX_WORKERS) this.#workers.delete(this.#workers.keys().next().value!);
      h = new WorkerHistory();
      this.#workers.set(id, h);
    }
    return h;
  }

  /** The host of a worker the manager has seen ('' when unknown). */
  hostOf = (id: string): string => this.#hosts.get(id) ?? '';

  /** Who owns a job the statistics know of (running now or run since the manager started). */
  ownerOf(ticket: string): string | undefined {
    return this.#owners.get(ticket);
  }

  /**
   * A job's run starts: its saved statistics are loaded and it gets an observer for its repository
   * and a commit hook for its throughput.
   */
  async begin(job: JobRecord): Promise<{ observer: RepositoryObserver; commit: (result: SettleResult) => void }> {
    let saved: string | undefined;
    try {
      saved = await this.#store.loadJobStats(job.ticket);
    } catch (err) {
      this.#log.warn('loading a job’s statistics failed: they start again empty', { ticket: job.ticket, error: String(err) });
    }
    const ref: JobRef = { ticket: job.ticket, name: job.name, owner: job.owner };
    this.#owners.set(job.ticket, job.owner);
    if (this.#owners.size > 100_000) this.#owners.delete(this.#owners.keys().next().value!);
    const entry = { ref, tracker: new JobStatsTracker(saved), counts: job.counts };
    this.#jobs.set(job.ticket, entry);
    const m = this.#metrics;
    const observer: RepositoryObserver = {
      completed: (timing, outputBytes) => {
        m?.shipped('received', outputBytes);
        if (timing === undefined) return;
        entry.tracker.timed(timing);
        this.#history(timing.workerId)?.timed(ref, timing.durationMs);
        m?.taskDurations([timing.durationMs]);
      },
      failed: (error) => {
        const w = workerOfFailure(error);
        if (w === undefined) return;
        entry.tracker.failedOn(w);
        this.#history(w)?.failed(ref);
      },
      requeued: (n) => m?.requeued(n),
      sent: (bytes, speculative) => {
        m?.shipped('sent', bytes);
        if (speculative) m?.speculated(1);
      },
    };
    const commit = (result: SettleResult): void => {
      const done = result.counts.done - entry.counts.done;
      const failed = result.counts.failed - entry.counts.failed;
      entry.counts = result.counts;
      entry.tracker.settled(done, failed);
      if (done > 0) m?.tasksSettled('done', done);
      if (failed > 0) m?.tasksSettled('failed', failed);
    };
    return { observer, commit };
  }

  /** A job's run ended: its statistics are saved and dropped from memory. */
  async end(ticket: string): Promise<void> {
    const e = this.#jobs.get(ticket);
    if (e === undefined) return;
    this.#jobs.delete(ticket);
    await this.#save(ticket, e.tracker);
  }

  /** Every task of the job runs again: its statistics start again empty. */
  async reset(ticket: string): Promise<void> {
    this.#jobs.delete(ticket);
    const empty = new JobStatsTracker();
    empty.dirty = true;
    await this.#save(ticket, empty);
  }

  /** The job was removed: nothing more to save. */
  forget(ticket: string): void {
    this.#jobs.delete(ticket);
  }

  /** Saves the statistics of running jobs that changed (every few seconds, and on close). */
  async saveDirty(): Promise<void> {
    for (const [ticket, e] of this.#jobs) if (e.tracker.dirty) await this.#save(ticket, e.tracker);
  }

  async #save(ticket: string, tracker: JobStatsTracker): Promise<void> {
    if (!tracker.dirty) return;
    tracker.dirty = false;
    try {
      await this.#store.saveJobStats(ticket, tracker.toJSON(this.hostOf));
    } catch (err) {
      tracker.dirty = true;
      this.#log.warn('saving a job’s statistics failed', { ticket, error: String(err) });
    }
  }

  /** `GET …/stats` of a job: live for a running job, else what the store kept. */
  async view(job: JobRecord): Promise<JobStatsView> {
    const e = this.#jobs.get(job.ticket);
    if (e !== undefined) return e.tracker.view(this.hostOf);
    return statsViewOf(await this.#store.loadJobStats(job.ticket), this.hostOf, job.startedAt ?? job.createdAt);
  }

  /** What a worker ran (only `visible` jobs), its task times and losses; undefined for a worker never seen. */
  worker(id: string, visible: (owner: string) => boolean): WorkerDetailView | undefined {
    const h = this.#workers.get(id);
    if (h === undefined) return undefined;
    return {
      jobs: [...h.jobs.values()]
        .filter((j) => visible(j.owner))
        .reverse()
        .map((j) => ({ ticket: j.ticket, name: j.name, done: j.done, failed: j.failed, avgTaskMs: j.done > 0 ? j.sumMs / j.done : -1 })),
      durations: h.durations.view(),
      losses: [...h.losses],
    };
  }

  /** A histogram with nothing in it. */
  emptyHistogram(): DurationHistogram {
    return new JobStatsTracker().durations.view();
  }

  /** Stops the save timer and saves what changed. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.saveDirty();
  }
}
