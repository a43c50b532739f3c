/**
 * The error family of taskfarm. Every error a user can see is a {@link FarmError} with a stable
 * `code` (see the table in README.md), a `retryable` flag and, where it has one, a `cause`.
 * Tests and callers should branch on `code` or the class, not on message text.
 */

/** Stable machine-readable error codes. */
export const FarmErrorCode = {
  INVALID_OPTION: 'FARM_ERR_INVALID_OPTION',
  INVALID_STAGE: 'FARM_ERR_INVALID_STAGE',
  UNSENDABLE_INPUT: 'FARM_ERR_UNSENDABLE_INPUT',
  TASK: 'FARM_ERR_TASK',
  TASK_CRASHED: 'FARM_ERR_TASK_CRASHED',
  TASK_TIMEOUT: 'FARM_ERR_TASK_TIMEOUT',
  STAGE_SETUP: 'FARM_ERR_STAGE_SETUP',
  WORKER_LOST: 'FARM_ERR_WORKER_LOST',
  WORKER_BUSY: 'FARM_ERR_WORKER_BUSY',
  NO_WORKERS: 'FARM_ERR_NO_WORKERS',
  ABORTED: 'FARM_ERR_ABORTED',
  PROTOCOL: 'FARM_ERR_PROTOCOL',
  UNAUTHENTICATED: 'FARM_ERR_UNAUTHENTICATED',
  INVALID_COST: 'FARM_ERR_INVALID_COST',
  STORE: 'FARM_ERR_STORE',
  JOB_NOT_FOUND: 'FARM_ERR_JOB_NOT_FOUND',
  JOB_STATE: 'FARM_ERR_JOB_STATE',
  // ---- the job service's HTTP API (docs/API.md; classes in src/service/errors.ts)
  INVALID_INPUT: 'FARM_ERR_INVALID_INPUT',
  FORBIDDEN: 'FARM_ERR_FORBIDDEN',
  NOT_FOUND: 'FARM_ERR_NOT_FOUND',
  TOO_LARGE: 'FARM_ERR_TOO_LARGE',
  SHUTTING_DOWN: 'FARM_ERR_SHUTTING_DOWN',
  CERT_MISMATCH: 'FARM_ERR_CERT_MISMATCH',
  SERVICE_UNREACHABLE: 'FARM_ERR_SERVICE_UNREACHABLE',
  INTERNAL: 'FARM_ERR_INTERNAL',
} as const;

/** One of the values of {@link FarmErrorCode}. */
export type FarmErrorCode = (typeof FarmErrorCode)[keyof typeof FarmErrorCode];

/** Options shared by every {@link FarmError} constructor. */
export interface FarmErrorOptions extends ErrorOptions {
  /**
   * True when running the same thing again (elsewhere) may succeed. Read by the pool's recruit
   * backoff (a retryable failure is retried soon, another one slowly) and by the job service's
   * client (it reconnects on a retryable error). @default false
   */
  readonly retryable?: boolean;
}

/** Base class of every error taskfarm raises. */
export class FarmError extends Error {
  override name = 'FarmError';
  /** Stable code; see {@link FarmErrorCode}. */
  readonly code: FarmErrorCode;
  /** True when running the same thing again (elsewhere) may succeed. */
  readonly retryable: boolean;

  constructor(code: FarmErrorCode, message: string, options: FarmErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

/** An option, argument or program given by the user is not valid. Never retryable. */
export class InvalidOptionError extends FarmError {
  override name = 'InvalidOptionError';
  constructor(message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.INVALID_OPTION, message, options);
  }
}

/** A stage cannot be used: not self-contained, not found, fails to bundle, wrong shape. */
export class InvalidStageError extends FarmError {
  override name = 'InvalidStageError';
  /** Position of the stage in the normal-form chain, when known. */
  readonly stageIndex: number | undefined;
  constructor(message: string, options: FarmErrorOptions & { stageIndex?: number } = {}) {
    super(FarmErrorCode.INVALID_STAGE, message, options);
    this.stageIndex = options.stageIndex;
  }
}

/** An input cannot be sent to a worker (a function, a symbol, a class instance with methods). */
export class UnsendableInputError extends FarmError {
  override name = 'UnsendableInputError';
  /** Index of the offending input. */
  readonly index: number;
  /** Where inside the input the problem is, e.g. `input.callbacks[2]`. */
  readonly path: string;
  constructor(index: number, path: string, what: string, hint?: string) {
    super(
      FarmErrorCode.UNSENDABLE_INPUT,
      `Input ${index} cannot be sent to a worker: ${path} is ${what}. ` +
        (hint ?? 'Inputs must be structured-clonable data (numbers, strings, arrays, plain objects, typed arrays, ' + 'Buffers, Maps, Sets, Dates, bigint).'),
    );
    this.index = index;
    this.path = path;
  }
}

/** What the worker reported about a failed task. */
export interface RemoteErrorInfo {
  /** Error class name on the worker, e.g. `RangeError`. */
  readonly name: string;
  /** The error's message on the worker. */
  readonly message: string;
  /** The stack trace on the worker (may be empty). */
  readonly stack: string;
  /** The error's `code` property on the worker, if it had a string one. */
  readonly code: string;
}

/** Context that every task-level error carries. */
export interface TaskErrorContext {
  /** Index of the input whose task failed. */
  readonly index: number;
  /** Id of the worker that reported the failure (`local` for in-process threads). */
  readonly workerId: string;
  /** How many times the task was started. */
  readonly attempts: number;
}

/** A stage threw (or rejected) while computing one input. Carries the remote error. */
export class TaskError extends FarmError {
  override name = 'TaskError';
  readonly index: number;
  readonly workerId: string;
  readonly attempts: number;
  /** The error as the worker saw it. */
  readonly remote: RemoteErrorInfo;
  /** The stack trace on the worker. */
  readonly remoteStack: string;
  constructor(context: TaskErrorContext, remote: RemoteErrorInfo, code: FarmErrorCode = FarmErrorCode.TASK) {
    super(code, `Task for input ${context.index} failed on worker ${context.workerId}: ${remote.name}: ${remote.message}`);
    this.index = context.index;
    this.workerId = context.workerId;
    this.attempts = context.attempts;
    this.remote = remote;
    this.remoteStack = remote.stack;
  }
}

/**
 * The execution of a task crashed its thread (process.exit, out of memory) `maxAttempts` times:
 * the task is presumed poisonous and the job fails rather than kill the farm one thread at a time.
 */
export class TaskCrashedError extends TaskError {
  override name = 'TaskCrashedError';
  constructor(context: TaskErrorContext, remote: RemoteErrorInfo) {
    super(context, remote, FarmErrorCode.TASK_CRASHED);
    this.message =
      `Task for input ${context.index} crashed its worker thread ${context.attempts} time(s) ` +
      `(last on worker ${context.workerId}: ${remote.message}); giving up (see option maxAttempts).`;
  }
}

/** A task ran longer than `taskTimeoutMs`: it was stopped on its worker (the thread replaced). */
export class TaskTimeoutError extends TaskError {
  override name = 'TaskTimeoutError';
  constructor(context: TaskErrorContext, remote: RemoteErrorInfo, timeoutMs: number) {
    super(context, remote, FarmErrorCode.TASK_TIMEOUT);
    this.message = `Task for input ${context.index} ran longer than ${timeoutMs} ms on worker ${context.workerId} (taskTimeoutMs); it was stopped there`;
  }
}

/** Loading the stage chain or a stage's `setup()` failed on a worker. */
export class StageSetupError extends FarmError {
  override name = 'StageSetupError';
  readonly workerId: string;
  readonly remote: RemoteErrorInfo;
  readonly remoteStack: string;
  constructor(workerId: string, remote: RemoteErrorInfo) {
    super(FarmErrorCode.STAGE_SETUP, `Loading the stages failed on worker ${workerId}: ${remote.name}: ${remote.message}`);
    this.workerId = workerId;
    this.remote = remote;
    this.remoteStack = remote.stack;
  }
}

/** A worker was lost (died, hung, dropped off the network). Retryable: its tasks go elsewhere. */
export class WorkerLostError extends FarmError {
  override name = 'WorkerLostError';
  readonly workerId: string;
  /** Why the worker was declared lost, without the worker id. */
  readonly reason: string;
  constructor(workerId: string, reason: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.WORKER_LOST, `Worker ${workerId} lost: ${reason}`, { retryable: true, ...options });
    this.workerId = workerId;
    this.reason = reason;
  }
}

/** A worker refused to be recruited because another client holds its lease. */
export class WorkerBusyError extends FarmError {
  override name = 'WorkerBusyError';
  constructor(message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.WORKER_BUSY, message, { retryable: true, ...options });
  }
}

/** Why one worker (a peer, or a worker found by discovery) could not be used. */
export interface WorkerRefusal {
  /** Its address, `host:port`. */
  readonly target: string;
  /** What went wrong, e.g. `127.0.0.1:7000: connection refused (…)`. */
  readonly reason: string;
}

/** No worker could be used and local fallback is off. */
export class NoWorkersError extends FarmError {
  override name = 'NoWorkersError';
  /** Why each worker that was tried could not be used (empty when none was found). */
  readonly refused: readonly WorkerRefusal[];
  constructor(message: string, options: FarmErrorOptions & { refused?: readonly WorkerRefusal[] } = {}) {
    super(FarmErrorCode.NO_WORKERS, message, options);
    this.refused = options.refused ?? [];
  }
}

/** The run was cancelled through its AbortSignal. */
export class FarmAbortError extends FarmError {
  override name = 'FarmAbortError';
  constructor(message = 'The run was aborted', options?: FarmErrorOptions) {
    super(FarmErrorCode.ABORTED, message, options);
  }
}

/** The peer broke the protocol: version mismatch, malformed message, unexpected reply. */
export class ProtocolError extends FarmError {
  override name = 'ProtocolError';
  constructor(message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.PROTOCOL, message, options);
  }
}

/**
 * The farm-key handshake failed: a worker could not prove the farm key (not part of this farm, a
 * spoofed advert), or it refused ours. Nothing was sent to that worker.
 */
export class AuthenticationError extends FarmError {
  override name = 'AuthenticationError';
  constructor(message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.UNAUTHENTICATED, message, options);
  }
}

/**
 * An optimisation's objective gave something other than a finite number as the cost of a point
 * (`NaN`, `Infinity`, a string, nothing), and the run's `invalidCost` policy is `'fail'`.
 */
export class InvalidCostError extends FarmError {
  override name = 'InvalidCostError';
  /** Index of the generation (0 is the initial population). */
  readonly generation: number;
  /** Index of the member in its population. */
  readonly index: number;
  /** The parameter vector whose cost was invalid. */
  readonly x: readonly number[];
  constructor(message: string, context: { generation: number; index: number; x: readonly number[] }, options?: FarmErrorOptions) {
    super(FarmErrorCode.INVALID_COST, message, options);
    this.generation = context.generation;
    this.index = context.index;
    this.x = context.x;
  }
}

// ---- Job store

/**
 * The job store failed: the database cannot be opened or written (disk full, permissions, a
 * PostgreSQL server that went away), or it holds a schema this version does not know. `cause`
 * carries the driver's error.
 */
export class StoreError extends FarmError {
  override name = 'StoreError';
  constructor(message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.STORE, message, options);
  }
}

/** No job with this ticket in the store (never submitted, removed, or its submit never committed). */
export class JobNotFoundError extends FarmError {
  override name = 'JobNotFoundError';
  /** The ticket asked for. */
  readonly ticket: string;
  constructor(ticket: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.JOB_NOT_FOUND, `No job with ticket ${JSON.stringify(ticket.slice(0, 80))}`, options);
    this.ticket = ticket;
  }
}

/** The job is not in a state that allows the operation (e.g. inputs appended after the submit committed). */
export class JobStateError extends FarmError {
  override name = 'JobStateError';
  /** The job's ticket. */
  readonly ticket: string;
  /** The state the job is in. */
  readonly state: string;
  constructor(ticket: string, state: string, message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.JOB_STATE, message, options);
    this.ticket = ticket;
    this.state = state;
  }
}
