/**
 * What happens to a task whose attempt failed, as a pure function (Work Queue's lesson: infrastructure
 * failures are retried elsewhere without counting against the task, the task's own failures count).
 */

import type { RemoteErrorKind } from '../../protocol/index.js';

/** How a task's attempt failed, as a worker reported it (a {@link RemoteErrorKind}) or as the pool saw it (`lost`). */
export type FailureKind = RemoteErrorKind | 'lost';

/** What a task went through so far (after counting this failure). */
export interface TaskAttempts {
  /** Times its stage threw or it ran over its time limit. */
  readonly errors: number;
  /** Times its execution crashed a thread. */
  readonly crashes: number;
  /** Times it was in flight on a worker that was lost. */
  readonly losses: number;
}

/** The job's retry settings. */
export interface RetrySettings {
  readonly retries: number;
  readonly maxAttempts: number;
  readonly maxWorkerLosses: number;
}

/**
 * `requeue`: run it again (elsewhere). `fail`: the task is given up (the job fails, or with
 * errors: 'collect' the task is settled as failed), with the reason. `fatal`: the job cannot go on
 * whatever its error mode (its stages do not load).
 */
export type RetryDecision = { readonly action: 'requeue' } | { readonly action: 'fail' | 'fatal'; readonly reason: FailureKind };

/** Decides; `attempts` already counts this failure. */
export function decideRetry(kind: FailureKind, attempts: TaskAttempts, settings: RetrySettings): RetryDecision {
  switch (kind) {
    case 'cancelled':
      return { action: 'requeue' };
    case 'lost':
      return attempts.losses >= settings.maxWorkerLosses ? { action: 'fail', reason: 'lost' } : { action: 'requeue' };
    case 'crashed':
      return attempts.crashes >= settings.maxAttempts ? { action: 'fail', reason: 'crashed' } : { action: 'requeue' };
    case 'thrown':
    case 'timeout':
      return attempts.errors <= settings.retries ? { action: 'requeue' } : { action: 'fail', reason: kind };
    case 'setup':
      return { action: 'fatal', reason: 'setup' };
    case 'unserializable':
    case 'bad-input':
      // The task itself is at fault, wherever it runs.
      return { action: 'fail', reason: kind };
  }
}
