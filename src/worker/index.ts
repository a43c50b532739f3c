export { WorkerServer, type WorkerServerEvents, type WorkerServerStats, type WorkerState } from './server.js';
export { registerWorkerMetrics, startMetricsServer, workerRegistry, type MetricsServer, type MetricsServerOptions } from './metrics.js';
export { defaultCacheDir } from '../util/paths.js';
export type { WorkerServerOptions } from './options.js';
export { Executor, ExecutorStartError } from './executor.js';
export { CodeCache } from './code-cache.js';
