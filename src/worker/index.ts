export { WorkerServer, type WorkerServerEvents, type WorkerState } from './server.js';
export { resolveWorkerServerOptions, defaultCacheDir, type WorkerServerOptions, type ResolvedWorkerServerOptions } from './options.js';
export { Executor, ExecutorStartError, type ExecSubmission, type ExecutorOptions, type ProgramSpec } from './executor.js';
export { CodeCache, bundleHash, BundleRejectedError } from './code-cache.js';
export { INLINE_BUNDLE_MARKER, type ChainEntry } from './thread-protocol.js';
