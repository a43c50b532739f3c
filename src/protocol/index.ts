export { PROTOCOL_VERSION, PACKAGE_VERSION } from './version.js';
export {
  createWorkerClient,
  fetchServerCertificate,
  pemFingerprint,
  type ChannelSecurity,
  workerServiceDefinition,
  channelOptions,
  isServiceError,
  grpc,
  MAX_MESSAGE_BYTES,
  type WorkerClient,
} from './grpc.js';
export { fromServiceError, type WorkerOperation } from './status.js';
export { Liveness, type LivenessOptions } from './liveness.js';
export { INLINE_BUNDLE_MARKER, bundleHash } from './bundle.js';
export { encodeValue, decodeValue, encodeInput, findUnsendable } from './codec.js';
export * from './messages.js';
export {
  encodeInputs,
  decodeInputs,
  encodeOutcomes,
  decodeOutcomes,
  encodeFailures,
  asRemoteError,
  ownBytes,
  type Outcome,
  type ExecBatch,
  type ExecResults,
} from './batch.js';
