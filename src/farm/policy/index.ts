/** Pure policies of the pool: each a function of plain data, unit-tested without sockets or timers. */
export { allocate, type JobDemand } from './allocation.js';
export { decideRetry, type FailureKind, type RetryDecision, type RetrySettings, type TaskAttempts } from './retry.js';
export { batchSizeFor, windowFor, ewma, MAX_BATCH, BATCH_TARGET_MS } from './batching.js';
export { shareRoom, type ShareInput } from './fair-share.js';
export { recruitBackoffMs, type RecruitFailure } from './backoff.js';
export { stragglerThresholdMs, isStuck, STUCK_FACTOR, type SpeculationSettings } from './speculation.js';
