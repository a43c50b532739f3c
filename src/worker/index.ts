export { WorkerServer, type WorkerServerEvents, type WorkerServerStats, type WorkerState } from './server.js';
export { registerWorkerMetrics, startMetricsServer, workerRegistry, type MetricsServer, type MetricsServerOptions } from './metrics.js';
export { defaultCacheDir } from '../util/paths.js';
export { resolveWorkerServerOptions, type WorkerServerOptions, type ResolvedWorkerServerOptions } from './options.js';
export { Executor, ExecutorStartError, type ExecSubmission, type ExecutorOptions, type ProgramSpec } from './executor.js';
export { CodeCache, BundleRejectedError } from './code-cache.js';
export type { ChainEntry } from './thread-protocol.js';
