export { TaskFarm, type IndexedOutput, type IndexedSuccess, type IndexedFailure, type ResultsOptions } from './task-farm.js';
export { resolveTaskFarmOptions, type TaskFarmOptions, type ResolvedTaskFarmOptions } from './options.js';
export type { FarmProgress, FarmStats, WorkerStats, WorkerLostEvent, FallbackEvent, RunEvents } from './run.js';
export type { WorkerInfo } from './link.js';
export { preferCachedThenFastest, firstComeFirstServed, type SchedulingPolicy, type WorkerView } from './scheduling.js';
export type { InputSource } from './repository.js';
export { prepareStages, type PreparedStage } from './bundler.js';
export { sharedFile, SharedFile } from './shared.js';
