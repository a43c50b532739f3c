/**
 * The manager's Prometheus series (`GET /metrics` of `taskfarm serve`), with prom-client.
 *
 * Two kinds of data, two ways in:
 * - levels (jobs, tasks and workers per state) are read when Prometheus scrapes, from
 *   {@link ServiceMetricsSources} — counters the store and the pool keep anyway, never a task scan;
 * - happenings (tasks settled and their durations, recruits, losses, requeues, speculative copies,
 *   bytes shipped, store commits) are pushed by the service core through the
 *   {@link ServiceMetricsRecorder} that {@link registerServiceMetrics} returns.
 *
 * Names follow the Prometheus conventions: a `taskfarm_` prefix, base units (`_seconds`,
 * `_bytes`), `_total` on counters, and a label for the state rather than a series per state.
 */
import { Counter, Gauge, Histogram, type MetricValueWithName, type Registry } from 'prom-client';
import { JOB_STATES, TASK_STATES, type JobState, type TaskState } from '../store/index.js';

/** Worker states as `GET /api/v1/workers` reports them. */
export const WORKER_METRIC_STATES = ['idle', 'busy', 'draining', 'lost'] as const;
/** One of {@link WORKER_METRIC_STATES}. */
export type WorkerMetricState = (typeof WORKER_METRIC_STATES)[number];

/** A count per state; a missing state counts 0. */
export type StateCounts<S extends string> = Readonly<Partial<Record<S, number>>>;

/**
 * What the manager's levels are read from at each scrape. Each call should be cheap (counters
 * kept by the store and the pool): Prometheus may scrape every few seconds. A source that throws
 * or rejects leaves its series out of that scrape (the others are still served).
 */
export interface ServiceMetricsSources {
  /** Jobs per state, over the whole store (the store's job rows, not their tasks). */
  jobsByState(): StateCounts<JobState> | Promise<StateCounts<JobState>>;
  /** Tasks per state, summed over the jobs that are not finished (queued, running, held): their per-job counters. */
  tasksByState(): StateCounts<TaskState> | Promise<StateCounts<TaskState>>;
  /** The pool's workers per state (lost ones the manager still remembers included). */
  workersByState(): StateCounts<WorkerMetricState> | Promise<StateCounts<WorkerMetricState>>;
}

/**
 * Why a worker was lost, as a short label value: its stream broke (`connection`), it missed
 * heartbeats (`silent`), it broke the protocol, its daemon crashed, its lease expired or was
 * released, it left on purpose (`drained`: its daemon was stopped); anything else is `other`.
 */
export const LOSS_REASONS = ['connection', 'silent', 'protocol', 'crashed', 'expired', 'drained', 'other'] as const;
/** One of {@link LOSS_REASONS}. */
export type LossReason = (typeof LOSS_REASONS)[number];

/** What the service core calls as things happen. Every method is synchronous and cheap. */
export interface ServiceMetricsRecorder {
  /** Tasks settled: committed outputs (`done`) or recorded failures (`failed`). */
  tasksSettled(outcome: 'done' | 'failed', n?: number): void;
  /** Run times of tasks, in ms, as workers reported them. */
  taskDurations(durationsMs: ArrayLike<number>): void;
  /** A worker was recruited into the pool. */
  recruited(): void;
  /** A worker was lost (its tasks requeued); `reason` is one of {@link LOSS_REASONS} (others count as `other`). */
  lost(reason: string): void;
  /** Tasks put back to be run again (a lost worker's, a timed-out attempt's). */
  requeued(n: number): void;
  /** Speculative (backup) copies of slow tasks sent. */
  speculated(n: number): void;
  /** Bytes of batches (inputs, bundles, shared data) sent to workers, or results received from them. */
  shipped(direction: 'sent' | 'received', bytes: number): void;
  /** One store commit (a batch of outputs, a submit's inputs, a transition) took this long, in ms. */
  storeCommit(ms: number, kind?: 'outputs' | 'inputs' | 'transition'): void;
}

/** Bucket bounds, in seconds, of task durations: 1 ms to 10 min. */
export const TASK_DURATION_BUCKETS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
/** Bucket bounds, in seconds, of store commits: 0.1 ms to 5 s. */
export const STORE_COMMIT_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

function stateGauge<S extends string>(
  registry: Registry,
  name: string,
  help: string,
  states: readonly S[],
  read: () => StateCounts<S> | Promise<StateCounts<S>>,
): Gauge<'state'> {
  return new Gauge({
    name,
    help,
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      // Every state is written each scrape, so a state that empties reads 0 instead of its last value;
      // a source that fails leaves the series out (stale numbers would look true).
      let counts: StateCounts<S>;
      try {
        counts = await read();
      } catch {
        this.reset();
        return;
      }
      for (const s of states) this.set({ state: s }, counts[s] ?? 0);
    },
  });
}

/**
 * Registers the manager's series on `registry` (the one `GET /metrics` serves) and returns the
 * recorder the service core feeds. Call it once per registry (prom-client refuses a name twice).
 * @example
 * const registry = new Registry();
 * const metrics = registerServiceMetrics(registry, { jobsByState, tasksByState, workersByState });
 * metrics.tasksSettled('done', batch.length);
 */
export function registerServiceMetrics(registry: Registry, sources: ServiceMetricsSources): ServiceMetricsRecorder {
  stateGauge(registry, 'taskfarm_jobs', 'Jobs in the store, by state', JOB_STATES, () => sources.jobsByState());
  stateGauge(registry, 'taskfarm_tasks', 'Tasks of unfinished jobs (queued, running, held), by state', TASK_STATES, () => sources.tasksByState());
  stateGauge(registry, 'taskfarm_workers', "The pool's workers, by state", WORKER_METRIC_STATES, () => sources.workersByState());
  const settled = new Counter({
    name: 'taskfarm_tasks_completed_total',
    help: 'Tasks settled since the manager started: outputs committed (outcome="done") or failures recorded (outcome="failed")',
    labelNames: ['outcome'],
    registers: [registry],
  });
  settled.inc({ outcome: 'done' }, 0);
  settled.inc({ outcome: 'failed' }, 0);
  const durations = new CountingHistogram('taskfarm_task_duration_seconds', 'Run time of tasks on the workers', TASK_DURATION_BUCKETS);
  registry.registerMetric(durations as unknown as Histogram);
  const recruits = new Counter({ name: 'taskfarm_recruits_total', help: 'Workers recruited into the pool', registers: [registry] });
  const losses = new Counter({
    name: 'taskfarm_worker_losses_total',
    help: 'Workers lost (stream broken or silent), by reason; their tasks were requeued',
    labelNames: ['reason'],
    registers: [registry],
  });
  for (const r of LOSS_REASONS) losses.inc({ reason: r }, 0);
  const requeued = new Counter({ name: 'taskfarm_tasks_requeued_total', help: 'Tasks put back to be run again', registers: [registry] });
  const speculated = new Counter({
    name: 'taskfarm_tasks_speculated_total',
    help: 'Speculative copies of slow tasks sent to another worker',
    registers: [registry],
  });
  // Bytes are counted per task: summed here and handed to prom-client when it is scraped (its inc()
  // hashes the labels each call, too dear per task).
  const pendingBytes = { sent: 0, received: 0 };
  new Counter({
    name: 'taskfarm_shipped_bytes_total',
    help: 'Bytes shipped between the manager and its workers (direction="sent": batches, bundles, shared data; "received": results)',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      this.inc({ direction: 'sent' }, pendingBytes.sent);
      this.inc({ direction: 'received' }, pendingBytes.received);
      pendingBytes.sent = 0;
      pendingBytes.received = 0;
    },
  });
  const commits = new Histogram({
    name: 'taskfarm_store_commit_duration_seconds',
    help: 'Latency of store commits (outputs, inputs, transitions)',
    labelNames: ['kind'],
    buckets: [...STORE_COMMIT_BUCKETS],
    registers: [registry],
  });

  const nonNegative = (n: number): number => (Number.isFinite(n) && n > 0 ? n : 0);
  return {
    tasksSettled(outcome, n = 1) {
      settled.inc({ outcome }, nonNegative(n));
    },
    taskDurations(durationsMs) {
      for (let i = 0; i < durationsMs.length; i++) {
        const d = durationsMs[i];
        if (d !== undefined && Number.isFinite(d) && d >= 0) durations.observe(d / 1000);
      }
    },
    recruited() {
      recruits.inc();
    },
    lost(reason) {
      losses.inc({ reason: (LOSS_REASONS as readonly string[]).includes(reason) ? reason : 'other' });
    },
    requeued(n) {
      requeued.inc(nonNegative(n));
    },
    speculated(n) {
      speculated.inc(nonNegative(n));
    },
    shipped(direction, bytes) {
      pendingBytes[direction === 'sent' ? 'sent' : 'received'] += nonNegative(bytes);
    },
    storeCommit(ms, kind = 'outputs') {
      if (Number.isFinite(ms) && ms >= 0) commits.observe({ kind }, ms / 1000);
    },
  };
}

/**
 * A histogram without labels, counted in place (one array increment per observation) and read by
 * prom-client's registry at each scrape, like its own metrics (`get()`). prom-client's Histogram
 * costs about 0.4 µs per `observe` (it validates and hashes labels each call): at 230,000 tasks/s
 * that was a tenth of the manager's time (docs/PERFORMANCE.md).
 */
class CountingHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #bounds: readonly number[];
  /** Observations per bucket, not cumulative; the last one is +Inf. */
  #counts: Float64Array;
  #sum = 0;
  #count = 0;

  constructor(name: string, help: string, bounds: readonly number[]) {
    this.name = name;
    this.help = help;
    this.#bounds = bounds;
    this.#counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.#counts[i]!++;
    this.#sum += value;
    this.#count++;
  }

  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: MetricValueWithName<string>[] }> {
    const values: MetricValueWithName<string>[] = [];
    let cumulative = 0;
    for (let i = 0; i <= this.#bounds.length; i++) {
      cumulative += this.#counts[i]!;
      values.push({ metricName: `${this.name}_bucket`, labels: { le: i < this.#bounds.length ? this.#bounds[i]! : '+Inf' }, value: cumulative });
    }
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.#sum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: this.#count });
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }

  reset(): void {
    this.#counts = new Float64Array(this.#bounds.length + 1);
    this.#sum = 0;
    this.#count = 0;
  }
}
