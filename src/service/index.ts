/**
 * The job service of `taskfarm serve` (issue 11), below the HTTP layer: the {@link JobService}
 * contract, its implementation over a job store and a pool, the store-backed task repository, the
 * in-process service for `connect()` without a URL, and the service's errors.
 */
export type {
  Caller,
  SubmittedStage,
  JobSpec,
  InputLine,
  InputBatch,
  JobStatus as ServiceJobStatus,
  ResultLine,
  ServiceEvent,
  ServiceWorker,
  ServiceWorkerDetail,
  ServicePage,
  TaskRowView,
  JobService,
} from './types.js';
export {
  createJobService,
  StoreJobService,
  type JobServiceOptions,
  type JobServiceOptions as JobServiceFactoryOptions,
  type JobServiceLimits,
} from './job-service.js';
export { StoreTaskRepository, type StoreTaskRepositoryOptions } from './store-repository.js';
export type { JobStatsView, DurationHistogram, Throughput, JobWorkerStats, WorkerLoss } from './job-stats.js';
export type { WorkerDetailView } from './service-stats.js';
export { mapJobHandler, type JobKindHandler, type JobRunContext, type JobRun, type JobOutcome } from './kinds.js';
export { optimizeJobHandler, checkOptimizeParams, type OptimizeJobParams, type OptimizeSharedValue, type CheckedOptimizeParams } from './optimize-kind.js';
export { openLocalService, localCaller, type LocalServiceOptions, type LocalJobService } from './local.js';
export { lockStore, type StoreLock } from './store-lock.js';
export { TokenMinter, type TokenRequest } from './tokens.js';
export { toJsonText } from './json.js';
export {
  InvalidRequestError,
  InvalidInputError,
  ForbiddenError,
  NotFoundError,
  TooLargeError,
  ShuttingDownError,
  CertificateMismatchError,
  ServiceUnreachableError,
  httpStatusOf,
  type RequestErrorContext,
} from './errors.js';
export { ServiceHttpServer, statusToJson, SESSION_COOKIE, CSRF_HEADER, type ServiceHttpOptions } from './http/index.js';
export { tokenProof, type TokenProofFields } from './token-proof.js';
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
} from './metrics.js';
export {
  connect,
  connectToService,
  type ServiceClient,
  type ServiceJob,
  type ServiceResult,
  type ServiceSubmitOptions,
  type JobStatusView,
  type ConnectOptions,
} from './client/connect.js';
export { ServiceHttpClient, errorFromBody, type ServiceHttpClientOptions } from './client/http-client.js';
export { configPath, defaultKnownManagersPath, pinnedFingerprint, checkOrPin } from './client/known-managers.js';
