import type { FarmError } from '../errors.js';
import type { ExecBatch, ExecResults } from '../worker/executor.js';

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

/** What a link tells the control loop. Called on the event loop, never re-entrantly from `send`. */
export interface LinkHandlers {
  onResults(results: ExecResults): void;
  /** The worker is gone (died, silent, stream broken, drained). Called at most once. */
  onLost(error: FarmError): void;
  /** The worker is shutting down: send it nothing more. */
  onDraining(): void;
}

/** A recruited worker, ready to compute: the control loop's view of it. */
export interface WorkerLink {
  readonly info: WorkerInfo;
  /** Code bundles this client had to send to the worker (0 when it had them all cached). */
  readonly bundlesSent: number;
  /** Bytes of shared data this client had to upload to the worker (0 when it had them cached). */
  readonly sharedBytesSent: number;
  /** The most tasks the worker accepts in flight. */
  readonly maxInFlight: number;
  /** The largest packed batch of inputs this worker accepts in one message, in bytes. */
  readonly maxPayloadBytes: number;
  /** Sends a packed batch of tasks (seqs unique on this link; at most maxPayloadBytes of inputs). */
  send(batch: ExecBatch): void;
  /** Asks the worker to drop these tasks (no result will come for them). */
  cancel(seqs: readonly number[]): void;
  /** Ends the lease and closes the connection. Never rejects. */
  close(): Promise<void>;
}
