/** Pure policies of the pool: each a function of plain data, unit-tested without sockets or timers. */
export { allocate, type JobDemand } from './allocation.js';
export { decideRetry, type FailureKind } from './retry.js';
export { batchSizeFor, windowFor, ewma, MAX_BATCH } from './batching.js';
export { isSmallJob, shareRoom, WHOLE_JOB_MS } from './fair-share.js';
export { recruitBackoffMs, recruitFailureOf } from './backoff.js';
export { stragglerThresholdMs, isStuck } from './speculation.js';
