/** How long to wait before trying to recruit an endpoint again, as a pure function. */
import { FarmErrorCode, type FarmError } from '../../errors.js';

/** Why the last attempt failed. */
export type RecruitFailure = 'busy' | 'refused' | 'unreachable';

/**
 * Classifies a failed recruit by its error: a worker leased to another client is `busy`; an error
 * that is `retryable` (the worker could not be reached, or was lost on the way) is `unreachable`;
 * anything else (a wrong key, another farm, another protocol version) is a `refusal`, which the
 * same attempt would meet again.
 */
export function recruitFailureOf(error: FarmError): RecruitFailure {
  if (error.code === FarmErrorCode.WORKER_BUSY) return 'busy';
  return error.retryable ? 'unreachable' : 'refused';
}

/** Delay in ms before the next attempt after `failures` consecutive failures of this kind. */
export function recruitBackoffMs(kind: RecruitFailure, failures: number): number {
  switch (kind) {
    case 'busy':
      return 500; // recruited by someone else: poll
    case 'refused':
      return 10_000; // wrong farm, wrong key, other protocol: slow to change
    case 'unreachable':
      return Math.min(5000, 250 * 2 ** Math.min(Math.max(0, failures), 5));
  }
}
