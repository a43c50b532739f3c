/** Batch sizing and windows from measured task times, as pure functions. */

/** Most tasks in one batch. */
export const MAX_BATCH = 4096;
/** Work per batch a worker thread runs, in ms: big enough to amortise a message, small enough to balance. */
export const BATCH_TARGET_MS = 4;

/** Tasks per batch for tasks that take `avgTaskMs` (unknown, < 0: one). */
export function batchSizeFor(avgTaskMs: number): number {
  if (avgTaskMs < 0) return 1;
  return Math.max(1, Math.min(MAX_BATCH, Math.floor(BATCH_TARGET_MS / Math.max(avgTaskMs, 0.0001))));
}

/** Batches a worker keeps in flight: every thread has one running and one queued, and one more hides the round trip. */
export function windowFor(threads: number): number {
  return Math.max(1, threads) * 2 + 1;
}

/** Exponentially weighted moving average (`previous` < 0: none yet). */
export function ewma(previous: number, sample: number, alpha: number): number {
  return previous < 0 ? sample : previous * (1 - alpha) + sample * alpha;
}
