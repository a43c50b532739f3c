/**
 * taskfarm: a task farm for networks of workstations.
 * @packageDocumentation
 */

// ---- Running programs
export { TaskFarm, type TaskFarmOptions, type RunEvents } from './farm/index.js';
export type { FarmProgress, FarmStats, WorkerStats, WorkerLostEvent, WorkerInfo, InputSource } from './farm/index.js';
export type { IndexedOutput, IndexedSuccess, IndexedFailure, ResultsOptions } from './farm/index.js';
export {
  preferCachedThenFastest,
  firstComeFirstServed,
  sharedFile,
  SharedFile,
  sharedValue,
  SharedValue,
  type SchedulingPolicy,
  type WorkerView,
} from './farm/index.js';

// ---- A warm pool serving many jobs
export { FarmPool, FarmJob, bundleProgram, type BundledProgram, type FallbackEvent, type PoolEvents, type PoolWorker } from './farm/index.js';
export type { FarmPoolOptions, JobOptions, JobEvents, JobStatus } from './farm/index.js';
export { MemoryTaskRepository, type TaskRecord, type TaskRepository, type ResultSink } from './farm/index.js';

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

// ---- Optimisation: minimize() on a FarmPool (one job per generation); the core underneath (an
// Optimizer driven generation by generation through an Evaluator)
export {
  minimize,
  FarmMinimization,
  type FarmObjective,
  type FarmMinimizeOptions,
  type MinimizeJobOptions,
  type FarmMinimizeResult,
  type FarmSummary,
  type EvaluatedEvent,
  type FarmMinimizationEvents,
  Minimization,
  minimizeWith,
  localEvaluator,
  DifferentialEvolution,
  DeStrategy,
  Bfgs,
  resolveSpace,
  type MinimizeOptions,
  type MinimizeResult,
  type MinimizeCheckpoint,
  type MinimizationEvents,
  type GenerationEvent,
  type HistoryEntry,
  type BestPoint,
  type StopReason,
  type ToleranceOptions,
  type DifferentialEvolutionOptions,
  type BfgsOptions,
  type Objective,
  type ObjectiveModule,
  type LocalEvaluatorOptions,
  type Optimizer,
  type OptimizerConfig,
  type OptimizerDone,
  type CurrentPopulation,
  type Population,
  type Space,
  type ResolvedSpace,
  type Evaluator,
  type EvaluationContext,
} from './optimize/index.js';
export { SeededRandom, type RandomState } from './util/rng.js';

// ---- Worker daemon
export { WorkerServer, defaultCacheDir, type WorkerServerOptions, type WorkerServerEvents, type WorkerState } from './worker/index.js';

// ---- Metrics (Prometheus): the worker daemon's (`--metrics-port`) and the manager's (`GET /metrics`)
export {
  registerWorkerMetrics,
  startMetricsServer,
  workerRegistry,
  type WorkerServerStats,
  type MetricsServer,
  type MetricsServerOptions,
} from './worker/index.js';
export {
  registerServiceMetrics,
  TASK_DURATION_BUCKETS,
  STORE_COMMIT_BUCKETS,
  LOSS_REASONS,
  WORKER_METRIC_STATES,
  type ServiceMetricsSources,
  type ServiceMetricsRecorder,
  type StateCounts,
  type LossReason,
  type WorkerMetricState,
} from './service/index.js';

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
export { describeWorker } from './farm/index.js';

// ---- Job store (the database of `taskfarm serve`)
export {
  SqliteJobStore,
  ThreadedSqliteJobStore,
  PostgresJobStore,
  openJobStore,
  defaultStorePath,
  JOB_STATES,
  TASK_STATES,
  FINISHED_JOB_STATES,
  ACTIVE_JOB_STATES,
} from './store/index.js';
export type {
  JobStore,
  SqliteJobStoreOptions,
  ThreadedSqliteJobStoreOptions,
  PostgresJobStoreOptions,
  OpenJobStoreOptions,
  JsonValue,
  JobState,
  TaskState,
  JobKind,
  TaskCounts,
  StageRef,
  Bundle,
  StoredJobOptions,
  NewJob,
  JobError,
  JobRecord,
  Transition,
  ClaimedBatch,
  ClaimedTask,
  OutputEntry,
  TaskFailure,
  FailureEntry,
  SettleResult,
  TaskRow,
  Page,
  TaskPageOptions,
  FailureRow,
  ResultRow,
  ReadResultsOptions,
  JobListOptions,
  NewEvent,
  JobEvent,
  TokenRecord,
  NewToken,
  OptimizerState,
  RecoveryReport,
  StoreSummary,
} from './store/index.js';

// ---- Job service (`taskfarm serve`, `connect()`)
export {
  connect,
  connectToService,
  createJobService,
  ServiceHttpServer,
  ServiceHttpClient,
  errorFromBody,
  statusToJson,
  tokenProof,
  configPath,
  defaultKnownManagersPath,
  pinnedFingerprint,
  checkOrPin,
  httpStatusOf,
  SESSION_COOKIE,
  CSRF_HEADER,
  StoreJobService,
  StoreTaskRepository,
  mapJobHandler,
  optimizeJobHandler,
  checkOptimizeParams,
  openLocalService,
  localCaller,
  lockStore,
  TokenMinter,
  toJsonText,
  InvalidRequestError,
  InvalidInputError,
  ForbiddenError,
  NotFoundError,
  TooLargeError,
  ShuttingDownError,
  CertificateMismatchError,
  ServiceUnreachableError,
} from './service/index.js';
export type {
  ServiceClient,
  ServiceJob,
  ServiceResult,
  ServiceSubmitOptions,
  JobStatusView,
  ConnectOptions,
  ServiceHttpOptions,
  ServiceHttpClientOptions,
  JobServiceFactoryOptions,
  JobService,
  Caller,
  JobSpec,
  SubmittedStage,
  InputLine,
  InputBatch,
  ServiceJobStatus,
  ResultLine,
  ServiceEvent,
  ServiceWorker,
  ServicePage,
  TaskRowView,
  TokenProofFields,
  JobServiceOptions,
  JobServiceLimits,
  StoreTaskRepositoryOptions,
  JobKindHandler,
  JobRunContext,
  JobRun,
  JobOutcome,
  OptimizeJobParams,
  OptimizeSharedValue,
  CheckedOptimizeParams,
  LocalServiceOptions,
  LocalJobService,
  StoreLock,
  TokenRequest,
  RequestErrorContext,
  ServiceWorkerDetail,
  JobStatsView,
  DurationHistogram,
  Throughput,
  JobWorkerStats,
  WorkerLoss,
  WorkerDetailView,
} from './service/index.js';

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
  InvalidCostError,
  StoreError,
  JobNotFoundError,
  JobStateError,
  type FarmErrorOptions,
  type WorkerRefusal,
  type RemoteErrorInfo,
  type TaskErrorContext,
} from './errors.js';

// ---- Farm keys
export { generateFarmKey, resolveFarmKey, defaultKeyPath, writeNewKeyFile, keyFileTooOpen, NO_KEY_HELP, type ResolvedFarmKey } from './security/index.js';
export { loadOrCreateTlsIdentity, certFingerprint, type TlsIdentity } from './security/index.js';

// ---- Logging and protocol
export { silentLogger, streamLogger, type Logger, type LogFields, type LogLevel } from './log.js';
export { PROTOCOL_VERSION, PACKAGE_VERSION } from './protocol/index.js';
