/**
 * Fair share of a known-size job between workers, as a pure function: no worker holds more than its
 * share of what is left, so a short run of tiny tasks is not swallowed whole by the worker that was
 * ready first; and while workers found together are still being recruited, each keeps a share for them.
 */

/** What the share of one worker in one job depends on. */
export interface ShareInput {
  /** Inputs of the job (known size). */
  readonly total: number;
  /** Tasks of the job settled. */
  readonly done: number;
  /** Workers computing the job plus workers still being recruited. */
  readonly contenders: number;
  /** Workers still in their first recruit attempt. */
  readonly recruiting: number;
  readonly threads: number;
  /** The job's tasks in flight on this worker. */
  readonly inFlight: number;
  /** The job's tasks sent to this worker so far. */
  readonly assigned: number;
  /** The job's recent task time in ms, or -1 while unknown. */
  readonly avgTaskMs?: number;
  /** Tasks of every job in flight on this worker. */
  readonly workerInFlight?: number;
  /** The fewest tasks in flight on any worker that could take the job's tasks now (this one included). */
  readonly fewestInFlight?: number;
}

/**
 * Work left (ms, by the known task time) that one batch on one worker computes faster than a split
 * between workers would: each message costs more than that much work (see docs/PERFORMANCE.md).
 */
export const WHOLE_JOB_MS = 2;

/** True when `left` tasks of `taskMs` each (-1: unknown) are less work than a message costs (see {@link WHOLE_JOB_MS}). */
export function isSmallJob(left: number, taskMs: number): boolean {
  return taskMs >= 0 && left * taskMs <= WHOLE_JOB_MS;
}

/** How many more of the job's tasks this worker may take now (≥ 0). */
export function shareRoom(s: ShareInput): number {
  const left = s.total - s.done;
  // What is left is less work than a message costs (the next generation of an optimisation with a
  // cheap objective, say): the least loaded worker takes it whole, in one message, unless workers
  // are still being recruited (they keep their share). Another takes its share, so that jobs like
  // it arriving together (concurrent optimisations) spread over the workers.
  if (s.recruiting === 0 && isSmallJob(left, s.avgTaskMs ?? -1) && (s.workerInFlight ?? 0) <= (s.fewestInFlight ?? 0)) {
    return Math.max(0, left - s.inFlight);
  }
  const contenders = Math.max(1, s.contenders);
  const share = Math.ceil(left / contenders);
  let room = Math.max(Math.max(1, s.threads) * 2 + 1, share) - s.inFlight;
  if (s.recruiting > 0) room = Math.min(room, Math.ceil(s.total / contenders) - s.assigned);
  return Math.max(0, room);
}
