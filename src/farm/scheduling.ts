/**
 * Scheduling policy: when several workers could take the next tasks, which goes first. Pure
 * functions of a view of each worker, so a policy is easy to test and to replace.
 */

/** What a policy knows about a worker. */
export interface WorkerView {
  readonly id: string;
  readonly host: string;
  readonly threads: number;
  /** True when the worker already held this run's code and shared data (nothing had to be sent). */
  readonly cached: boolean;
  /** Its recent task time in ms (EWMA), or -1 while unknown. */
  readonly avgTaskMs: number;
  /** Tasks it has in flight now. */
  readonly inFlight: number;
}

/** Orders candidate workers: `compare(a, b) < 0` means `a` gets work before `b`. */
export interface SchedulingPolicy {
  readonly name: string;
  compare(a: WorkerView, b: WorkerView): number;
}

/** Recent turnaround of one task on a worker (task time ÷ threads), unknown last. */
function turnaround(w: WorkerView): number {
  return w.avgTaskMs < 0 ? Number.POSITIVE_INFINITY : w.avgTaskMs / Math.max(1, w.threads);
}

/**
 * The default (Work Queue's cached-files, then fastest-time policies): workers that already held
 * the run's code and shared data first, then the fastest by recent turnaround, then the least loaded.
 */
export const preferCachedThenFastest: SchedulingPolicy = Object.freeze({
  name: 'prefer-cached-then-fastest',
  compare(a: WorkerView, b: WorkerView): number {
    if (a.cached !== b.cached) return a.cached ? -1 : 1;
    const ta = turnaround(a);
    const tb = turnaround(b);
    if (ta !== tb) return ta < tb ? -1 : 1;
    return a.inFlight - b.inFlight;
  },
});

/** First come, first served: the order in which workers asked for work. */
export const firstComeFirstServed: SchedulingPolicy = Object.freeze({
  name: 'first-come-first-served',
  compare: (): number => 0,
});
