/** How long to wait before trying to recruit an endpoint again, as a pure function. */

/** Why the last attempt failed. */
export type RecruitFailure = 'busy' | 'refused' | 'unreachable';

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
