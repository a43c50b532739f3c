export { PROTOCOL_VERSION, PACKAGE_VERSION } from './version.js';
export {
  createWorkerClient,
  fetchServerCertificate,
  type ChannelSecurity,
  workerServiceDefinition,
  channelOptions,
  grpc,
  MAX_MESSAGE_BYTES,
  type WorkerClient,
} from './grpc.js';
export { fromServiceError } from './status.js';
export { Liveness } from './liveness.js';
export { INLINE_BUNDLE_MARKER, bundleHash } from './bundle.js';
export { findUnsendable } from './codec.js';
export * from './messages.js';
export { encodeInputs, decodeInputs, decodeOutcomes, encodeFailures, asRemoteError, ownBytes, type ExecBatch, type ExecResults } from './batch.js';
