/**
 * TypeScript shapes of the messages in proto/taskfarm.proto, as @grpc/proto-loader decodes them
 * (keepCase, defaults, oneofs: a oneof's name holds the name of the member that is set).
 */

export interface WorkerDescription {
  id: string;
  hostname: string;
  threads: number;
  protocol_version: number;
  state: string;
  version: string;
  farm: string;
  secure: boolean;
  worker_nonce: Uint8Array;
  worker_proof: Uint8Array;
  max_message_bytes: number;
  max_bundle_bytes: number;
  max_in_flight: number;
  max_shared_bytes: number;
  max_programs: number;
}

export interface DescribeRequest {
  client_nonce: Uint8Array;
}

export interface RecruitRequest {
  client_id: string;
  protocol_version: number;
  client_host: string;
  lease_timeout_ms: number;
  heartbeat_ms: number;
  client_nonce: Uint8Array;
  worker_nonce: Uint8Array;
  client_proof: Uint8Array;
  max_message_bytes: number;
}

export interface LeaseReply {
  token: string;
  lease_timeout_ms: number;
  worker_id: string;
  threads: number;
}

export interface BundleMessage {
  hash: string;
  code: Uint8Array;
}

export interface InstallRequest {
  hashes: string[];
  bundles: BundleMessage[];
  shared?: string[];
}

export interface InstallReply {
  missing: string[];
  missing_shared: string[];
}

export interface UploadChunk {
  hash: string;
  total_bytes: number;
  data: Uint8Array;
}

export interface UploadReply {
  received: number;
}

/** A shared value: `bytes` (a Uint8Array shared by the threads) or `value` (v8-serialized). */
export interface SharedRef {
  name: string;
  hash: string;
  kind: string;
}

/** Packed tasks (see batch.ts). */
export interface TaskBatchMessage {
  seqs: number[];
  inputs: Uint8Array;
  program: number;
  priority: number;
}

/** Packed outcomes (see batch.ts). */
export interface ResultBatchMessage {
  seqs: number[];
  outcomes: Uint8Array;
  durations_ms: number[];
}

export interface RemoteErrorMessage {
  kind: string;
  name: string;
  message: string;
  stack: string;
  code: string;
}

export type ClientMessage =
  | { body?: 'start'; start: { chain: string[]; task_timeout_ms: number; shared: SharedRef[]; program: number } }
  | { body?: 'tasks'; tasks: TaskBatchMessage }
  | { body?: 'heartbeat'; heartbeat: { sent_at_ms: number } }
  | { body?: 'cancel'; cancel: { seqs: number[] } }
  | { body?: 'unload'; unload: { programs: number[] } };

export type WorkerMessage =
  | { body?: 'ready'; ready: { threads: number; program: number } }
  | { body?: 'results'; results: ResultBatchMessage }
  | { body?: 'heartbeat'; heartbeat: { sent_at_ms: number } }
  | { body?: 'draining'; draining: { grace_ms: number } }
  | { body?: 'start_failed'; start_failed: { error: RemoteErrorMessage; program: number } }
  | { body?: 'goodbye'; goodbye: { reason: string; detail: string } };

/** Why a worker ended a lease itself ({@link WorkerMessage} `goodbye`). */
export const GoodbyeReason = {
  RELEASED: 'released',
  DRAINING: 'draining',
  EXPIRED: 'expired',
  PROTOCOL_ERROR: 'protocol-error',
} as const;
export type GoodbyeReason = (typeof GoodbyeReason)[keyof typeof GoodbyeReason];

/** Metadata key that carries the lease token on every call after Recruit. */
export const LEASE_METADATA_KEY = 'taskfarm-lease';

/** Kinds of {@link RemoteErrorMessage}. */
export const RemoteErrorKind = {
  /** The stage threw or rejected. */
  THROWN: 'thrown',
  /** The thread running the task died (process.exit, out of memory). */
  CRASHED: 'crashed',
  /** The task ran over its time limit. */
  TIMEOUT: 'timeout',
  /** Loading the chain or setup() failed. */
  SETUP: 'setup',
  /** The stage's output cannot be serialized. */
  UNSERIALIZABLE: 'unserializable',
  /** The task was cancelled on the worker (lease ended, drain) and never completed. */
  CANCELLED: 'cancelled',
  /** The payload could not be decoded on the worker. */
  BAD_INPUT: 'bad-input',
} as const;
export type RemoteErrorKind = (typeof RemoteErrorKind)[keyof typeof RemoteErrorKind];
