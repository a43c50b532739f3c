export { TaskFarm, type RunEvents } from './task-farm.js';
export { FarmPool, bundleProgram, type BundledProgram, type FallbackEvent, type PoolEvents, type PoolWorker } from './pool.js';
export {
  FarmJob,
  type FarmProgress,
  type FarmStats,
  type WorkerStats,
  type WorkerLostEvent,
  type IndexedOutput,
  type IndexedSuccess,
  type IndexedFailure,
  type ResultsOptions,
  type JobEvents,
  type JobStatus,
} from './job.js';
export { resolvePoolOptions, resolveJobOptions, type TaskFarmOptions, type FarmPoolOptions, type JobOptions, type ResolvedPoolOptions } from './options.js';
export type { WorkerInfo } from './link.js';
export { describeWorker } from './remote-link.js';
export { preferCachedThenFastest, firstComeFirstServed, type SchedulingPolicy, type WorkerView } from './scheduling.js';
export { MemoryTaskRepository, type InputSource, type TaskRecord, type TaskRepository, type TaskTiming, type ResultSink } from './repository.js';
export { sharedFile, SharedFile, sharedValue, SharedValue } from './shared.js';
