/**
 * What the dashboard plots and `GET /metrics` counts, kept by the service as results arrive (never
 * a task scan): per job, the task-duration histogram, tasks settled per interval and per-worker
 * figures ({@link JobStatsTracker}, saved in the store's one stats row per job); per worker, the
 * jobs it ran, its task times and its losses ({@link WorkerHistory}, in memory).
 */
import { TaskError, type FarmError } from '../errors.js';
import type { TaskTiming } from '../farm/index.js';
import { TASK_DURATION_BUCKETS } from './metrics.js';

/** A histogram of durations in seconds: `counts[i]` of them were in (`bounds[i-1]`, `bounds[i]`]; the last count is above the last bound. */
export interface DurationHistogram {
  readonly bounds: readonly number[];
  readonly counts: readonly number[];
  readonly count: number;
  /** Sum of the durations, seconds. */
  readonly sum: number;
}

/** Tasks settled per interval, oldest first. */
export interface Throughput {
  readonly intervalSeconds: number;
  /** Start of the first interval (ms since the epoch; the HTTP layer shows ISO 8601). */
  readonly start: number;
  readonly done: readonly number[];
  readonly failed: readonly number[];
}

/** One worker's share of a job. */
export interface JobWorkerStats {
  readonly id: string;
  readonly host: string;
  readonly done: number;
  readonly failed: number;
  /** Mean run time of its done tasks of the job, ms (-1 before the first). */
  readonly avgTaskMs: number;
}

/** `GET /api/v1/jobs/{ticket}/stats`. */
export interface JobStatsView {
  readonly durations: DurationHistogram;
  readonly throughput: Throughput;
  readonly workers: readonly JobWorkerStats[];
}

/** At most this many throughput intervals are kept: past it, intervals are merged two by two (the interval doubles). */
export const MAX_INTERVALS = 720;
/** The first throughput interval, seconds. */
export const FIRST_INTERVAL_S = 1;
/** Workers kept per job (the busiest). */
const MAX_JOB_WORKERS = 1000;

/** A mutable histogram over {@link TASK_DURATION_BUCKETS}. */
export class Histogram {
  readonly counts: number[] = new Array<number>(TASK_DURATION_BUCKETS.length + 1).fill(0);
  count = 0;
  sum = 0;

  /** Adds one duration, in ms. */
  observe(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    const s = ms / 1000;
    let i = 0;
    // 18 bounds: a linear walk is as fast as a binary search.
    while (i < TASK_DURATION_BUCKETS.length && s > TASK_DURATION_BUCKETS[i]!) i++;
    this.counts[i]!++;
    this.count++;
    this.sum += s;
  }

  view(): DurationHistogram {
    return { bounds: TASK_DURATION_BUCKETS, counts: [...this.counts], count: this.count, sum: this.sum };
  }

  /** Restores one from a view (saved stats); ignores a view of other bounds. */
  static from(v: unknown): Histogram {
    const h = new Histogram();
    const o = v as Partial<DurationHistogram> | undefined;
    if (
      o !== undefined &&
      Array.isArray(o.counts) &&
      o.counts.length === h.counts.length &&
      Array.isArray(o.bounds) &&
      o.bounds.every((b, i) => b === TASK_DURATION_BUCKETS[i])
    ) {
      o.counts.forEach((c, i) => (h.counts[i] = typeof c === 'number' && c >= 0 ? c : 0));
      h.count = typeof o.count === 'number' ? o.count : 0;
      h.sum = typeof o.sum === 'number' ? o.sum : 0;
    }
    return h;
  }
}

interface WorkerAcc {
  done: number;
  failed: number;
  sumMs: number;
  timed: number;
}

/** The worker that failed a task, when the error says (a TaskError names it). */
export function workerOfFailure(error: FarmError): string | undefined {
  return error instanceof TaskError && error.workerId !== 'manager' ? error.workerId : undefined;
}

/** A job's statistics while it runs; {@link toJSON} is what the store keeps. */
export class JobStatsTracker {
  readonly durations: Histogram;
  #interval: number;
  #start: number;
  #done: number[];
  #failed: number[];
  readonly #workers = new Map<string, WorkerAcc>();
  /** Something changed since the last save. */
  dirty = false;

  constructor(saved?: string, now = Date.now()) {
    let o: Record<string, unknown> = {};
    if (saved !== undefined) {
      try {
        const parsed = JSON.parse(saved) as unknown;
        if (typeof parsed === 'object' && parsed !== null) o = parsed as Record<string, unknown>;
      } catch {
        // unreadable stats start again empty
      }
    }
    this.durations = Histogram.from(o['durations']);
    const t = o['throughput'] as { intervalSeconds?: unknown; start?: unknown; done?: unknown; failed?: unknown } | undefined;
    const nums = (xs: unknown): number[] | undefined =>
      Array.isArray(xs) && xs.every((x) => typeof x === 'number' && x >= 0) ? (xs as number[]).slice(0, MAX_INTERVALS) : undefined;
    const done = nums(t?.done);
    const failed = nums(t?.failed);
    if (t !== undefined && typeof t.intervalSeconds === 'number' && t.intervalSeconds > 0 && typeof t.start === 'number' && done && failed) {
      this.#interval = t.intervalSeconds;
      this.#start = t.start;
      this.#done = done;
      this.#failed = failed;
    } else {
      this.#interval = FIRST_INTERVAL_S;
      this.#start = now;
      this.#done = [];
      this.#failed = [];
    }
    const ws = o['workers'];
    if (Array.isArray(ws)) {
      for (const w of ws as Partial<JobWorkerStats & { timed: number }>[]) {
        if (typeof w?.id !== 'string') continue;
        const timed = typeof w.timed === 'number' ? w.timed : 0;
        this.#workers.set(w.id, { done: w.done ?? 0, failed: w.failed ?? 0, timed, sumMs: timed * Math.max(0, w.avgTaskMs ?? 0) });
      }
    }
  }

  /** A done task's run time on its worker. */
  timed(t: TaskTiming): void {
    this.durations.observe(t.durationMs);
    const w = this.#worker(t.workerId);
    if (w !== undefined) {
      w.sumMs += t.durationMs;
      w.timed++;
      w.done++;
    }
    this.dirty = true;
  }

  /** A task failed on this worker. */
  failedOn(workerId: string): void {
    const w = this.#worker(workerId);
    if (w !== undefined) w.failed++;
    this.dirty = true;
  }

  /** Tasks settled (committed) now. */
  settled(done: number, failed: number, now = Date.now()): void {
    if (done <= 0 && failed <= 0) return;
    let i = Math.floor((now - this.#start) / (this.#interval * 1000));
    if (i < 0) i = 0;
    while (i >= MAX_INTERVALS) {
      this.#widen();
      i = Math.floor((now - this.#start) / (this.#interval * 1000));
    }
    while (this.#done.length <= i) {
      this.#done.push(0);
      this.#failed.push(0);
    }
    this.#done[i]! += Math.max(0, done);
    this.#failed[i]! += Math.max(0, failed);
    this.dirty = true;
  }

  #widen(): void {
    const merge = (xs: number[]): number[] => {
      const out: number[] = [];
      for (let k = 0; k < xs.length; k += 2) out.push(xs[k]! + (xs[k + 1] ?? 0));
      return out;
    };
    this.#done = merge(this.#done);
    this.#failed = merge(this.#failed);
    this.#interval *= 2;
  }

  #worker(id: string): WorkerAcc | undefined {
    let w = this.#workers.get(id);
    if (w === undefined) {
      if (this.#workers.size >= MAX_JOB_WORKERS) return undefined;
      w = { done: 0, failed: 0, sumMs: 0, timed: 0 };
      this.#workers.set(id, w);
    }
    return w;
  }

  /** The view of `GET …/stats`; `hostOf` names workers. */
  view(hostOf: (id: string) => string): JobStatsView {
    return {
      durations: this.durations.view(),
      throughput: { intervalSeconds: this.#interval, start: this.#start, done: [...this.#done], failed: [...this.#failed] },
      workers: [...this.#workers].map(([id, w]) => ({
        id,
        host: hostOf(id),
        done: w.done,
        failed: w.failed,
        avgTaskMs: w.timed > 0 ? w.sumMs / w.timed : -1,
      })),
    };
  }

  /** JSON text for the store (the view, with each worker's timed count). */
  toJSON(hostOf: (id: string) => string): string {
    const v = this.view(hostOf);
    return JSON.stringify({ ...v, workers: v.workers.map((w) => ({ ...w, timed: this.#workers.get(w.id)?.timed ?? 0 })) });
  }
}

/** A view of saved stats text, for a job that is not running (empty when none were saved). */
export function statsViewOf(saved: string | undefined, hostOf: (id: string) => string, createdAt: number): JobStatsView {
  return new JobStatsTracker(saved, createdAt).view(hostOf);
}

/** A loss of a worker. */
export interface WorkerLoss {
  readonly at: number;
  readonly reason: string;
  readonly requeued: number;
}

/** What a worker ran for one job. */
export interface WorkerJobEntry {
  readonly ticket: string;
  readonly name: string;
  readonly owner: string;
  done: number;
  failed: number;
  sumMs: number;
}

/** Losses kept per worker. */
const MAX_LOSSES = 100;
/** Jobs kept per worker (the latest). */
const MAX_WORKER_JOBS = 200;

/** A worker's history as the manager saw it since it started. */
export class WorkerHistory {
  readonly durations = new Histogram();
  readonly jobs = new Map<string, WorkerJobEntry>();
  readonly losses: WorkerLoss[] = [];

  timed(job: { ticket: string; name: string; owner: string }, ms: number): void {
    this.durations.observe(ms);
    const e = this.#job(job);
    e.done++;
    e.sumMs += ms;
  }

  failed(job: { ticket: string; name: string; owner: string }): void {
    this.#job(job).failed++;
  }

  lost(loss: WorkerLoss): void {
    this.losses.push(loss);
    if (this.losses.length > MAX_LOSSES) this.losses.splice(0, this.losses.length - MAX_LOSSES);
  }

  #job(job: { ticket: string; name: string; owner: string }): WorkerJobEntry {
    let e = this.jobs.get(job.ticket);
    if (e === undefined) {
      e = { ticket: job.ticket, name: job.name, owner: job.owner, done: 0, failed: 0, sumMs: 0 };
      this.jobs.set(job.ticket, e);
      if (this.jobs.size > MAX_WORKER_JOBS) this.jobs.delete(this.jobs.keys().next().value!);
    }
    return e;
  }
}
