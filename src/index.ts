/**
 * taskfarm: a task farm for networks of workstations.
 * @packageDocumentation
 */

// ---- Running programs
export {
  TaskFarm,
  type IndexedOutput,
  type IndexedSuccess,
  type IndexedFailure,
  type ResultsOptions,
  type TaskFarmOptions,
  type FarmProgress,
  type FarmStats,
  type WorkerStats,
  type WorkerLostEvent,
  type FallbackEvent,
  type WorkerInfo,
  type InputSource,
  type RunEvents,
} from './farm/index.js';
export { preferCachedThenFastest, firstComeFirstServed, sharedFile, SharedFile, type SchedulingPolicy, type WorkerView } from './farm/index.js';

// ---- Skeletons and the normal form
export { seq, farm, pipeline, normalForm, stagesOf, describeSkeleton } from './skeleton/index.js';
export type {
  Stage,
  InlineStage,
  ProcessObject,
  ProcessClass,
  StageContext,
  Skeleton,
  SeqSkeleton,
  FarmSkeleton,
  PipelineSkeleton,
  NormalForm,
  Program,
} from './skeleton/index.js';

// ---- Worker daemon
export { WorkerServer, defaultCacheDir, type WorkerServerOptions, type WorkerServerEvents, type WorkerState } from './worker/index.js';

// ---- Discovery
export {
  StaticDiscovery,
  MemoryDiscovery,
  MdnsDiscovery,
  type Discovery,
  type DiscoveryEvents,
  type WorkerEndpoint,
  type MdnsDiscoveryOptions,
  type AdvertisedWorker,
  type WorkerAdvert,
} from './discovery/index.js';
export { describeWorker } from './farm/remote-link.js';

// ---- Errors
export {
  FarmError,
  FarmErrorCode,
  InvalidOptionError,
  InvalidStageError,
  UnsendableInputError,
  TaskError,
  TaskCrashedError,
  TaskTimeoutError,
  StageSetupError,
  WorkerLostError,
  WorkerBusyError,
  NoWorkersError,
  FarmAbortError,
  ProtocolError,
  AuthenticationError,
  type FarmErrorOptions,
  type WorkerRefusal,
  type RemoteErrorInfo,
  type TaskErrorContext,
} from './errors.js';

// ---- Farm keys
export { generateFarmKey, resolveFarmKey, defaultKeyPath, writeNewKeyFile, keyFileTooOpen, NO_KEY_HELP, type ResolvedFarmKey } from './security/index.js';

// ---- Logging and protocol
export { silentLogger, streamLogger, type Logger, type LogFields, type LogLevel } from './log.js';
export { PROTOCOL_VERSION, PACKAGE_VERSION } from './protocol/version.js';
