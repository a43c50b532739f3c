import type { FarmError } from '../errors.js';
import type { ExecBatch, ExecResults } from '../protocol/index.js';
import type { PreparedStage } from './bundler.js';
import type { PreparedShared } from './shared.js';

/** Who a worker is, as events and stats report it. */
export interface WorkerInfo {
  /** The worker's id (stable across daemon restarts; `local` for in-process threads). */
  readonly id: string;
  /** Hostname of the worker's machine. */
  readonly host: string;
  /** The address it was reached at (`host:port`, or `local`). */
  readonly address: string;
  /** Number of threads that run tasks on it. */
  readonly threads: number;
  /** True for the in-process thread pool. */
  readonly local: boolean;
}

/** What a link tells the pool. Called on the event loop, never re-entrantly from `send`. */
export interface LinkHandlers {
  onResults(results: ExecResults): void;
  /**
   * The worker is gone: died, silent, stream broken (`goodbye` undefined), or it ended the lease
   * itself and said why (`goodbye`: `draining`, `expired`, `protocol-error`). Called at most once,
   * never after our own {@link WorkerLink.close}.
   */
  onLost(error: FarmError, goodbye: string | undefined): void;
  /** The worker is shutting down: send it nothing more. */
  onDraining(): void;
}

/** A program as a link installs and starts it: its stages, shared data and the tasks' time limit. */
export interface LinkProgram {
  /** Identity of all of the below: equal keys are the same program on a link. */
  readonly key: string;
  readonly stages: readonly PreparedStage[];
  readonly shared: readonly PreparedShared[];
  readonly taskTimeoutMs: number;
}

/** What preparing a program on a link cost. */
export interface PrepareResult {
  /** Code bundles that had to be sent (0 when the worker had them all). */
  readonly bundlesSent: number;
  /** Bytes of shared data that had to be uploaded (0 when the worker had them). */
  readonly sharedBytesSent: number;
}

/** A recruited worker, ready to compute several programs: the pool's view of it. */
export interface WorkerLink {
  readonly info: WorkerInfo;
  /** The most tasks the worker accepts in flight. */
  readonly maxInFlight: number;
  /** The largest packed batch of inputs this worker accepts in one message, in bytes. */
  readonly maxPayloadBytes: number;
  /** Programs the worker may have started at once on this link. */
  readonly maxPrograms: number;
  /**
   * Installs what the worker lacks of a program and starts it; resolves when its tasks may be sent.
   * Rejects with StageSetupError (it failed to load there), InvalidStageError (too large for the
   * worker), or WorkerLostError. Idempotent per program key while it is started.
   */
  prepare(program: LinkProgram): Promise<PrepareResult>;
  /** True when the program is started on the link (its tasks may be sent). */
  isReady(programKey: string): boolean;
  /** Forgets a started program (the worker may keep it loaded for later). */
  unload(programKey: string): void;
  /** Sends a packed batch of tasks of a ready program (seqs unique on this link; at most maxPayloadBytes of inputs). */
  send(programKey: string, batch: ExecBatch, priority: number): void;
  /** Asks the worker to drop these tasks (no result will come for them). */
  cancel(seqs: readonly number[]): void;
  /** Ends the lease and closes the connection. Never rejects. */
  close(): Promise<void>;
}
