/**
 * The job service (`taskfarm serve`, issue 11): its contract, the HTTP layer over it, the client
 * that talks to it, and the errors both ends share.
 */
export type {
  Caller,
  SubmittedStage,
  JobSpec,
  InputLine,
  JobStatus as ServiceJobStatus,
  ResultLine,
  ServiceEvent,
  ServiceWorker,
  ServicePage,
  TaskRowView,
  JobService,
} from './types.js';
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
export { ServiceHttpServer, statusToJson, errorBody, SESSION_COOKIE, CSRF_HEADER, type ServiceHttpOptions } from './http/index.js';
export { tokenProof, type TokenProofFields } from './token-proof.js';
// TODO(merge svc): export the core's factory instead of the placeholder.
export { createJobService, type JobServiceFactoryOptions } from './pending-core.js';
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
export { ServiceHttpClient, errorFromBody, type ServiceHttpClientOptions, type RequestSpec } from './client/http-client.js';
export { configPath, defaultKnownManagersPath, pinnedFingerprint, checkOrPin } from './client/known-managers.js';
