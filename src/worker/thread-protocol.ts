/** Messages between the executor (main thread) and its worker threads. */
import type { RemoteErrorMessage } from '../protocol/messages.js';

/** Marker on the first line of a bundle made from an inline function. */
export const INLINE_BUNDLE_MARKER = '// taskfarm:inline';

/** One stage of the chain, as a thread loads it. */
export interface ChainEntry {
  /** sha256 of the bundle. */
  readonly hash: string;
  /** Absolute path of the bundle (an ES module) on this machine. */
  readonly path: string;
  /** True when the stage was an inline function (a ReferenceError then gets a hint). */
  readonly inline?: boolean;
}

/** One shared value, as a thread loads it (see SharedRef in the proto). */
export interface SharedEntry {
  readonly name: string;
  /** `bytes`: `data` is the content, shared by all threads; `value`: `path` holds a v8-serialized value. */
  readonly kind: 'bytes' | 'value';
  readonly data?: SharedArrayBuffer;
  readonly path?: string;
}

/** workerData of every thread. */
export interface ThreadInit {
  readonly chain: readonly ChainEntry[];
  readonly shared: readonly SharedEntry[];
  readonly workerId: string;
  readonly hostname: string;
  /**
   * 16 bytes shared with the executor: Int32 [0] = 1 while a task runs, Int32 [1] = seq of the task
   * running (or last run), Float64 [1] = when it started (Date.now(), for the task time limit).
   */
  readonly state: SharedArrayBuffer;
  /** Results are flushed to the main thread at least this often while a batch runs (ms). */
  readonly flushMs: number;
}

/** Index of the "a task is running" flag in the shared state. */
export const STATE_RUNNING = 0;
/** Index of the running task's seq in the shared state. */
export const STATE_SEQ = 1;
/** Index of the running task's start time in the Float64 view of the shared state. */
export const STATE_STARTED = 1;

/** Main → thread: run these tasks in order. */
export interface BatchMessage {
  readonly type: 'batch';
  readonly seqs: Uint32Array;
  /** The inputs, packed (see protocol/batch.ts). */
  readonly inputs: Uint8Array;
  /** Result messages must stay below this many bytes. */
  readonly maxResultBytes: number;
}

/** Thread → main. */
export type ThreadMessage =
  | { readonly type: 'ready' }
  | { readonly type: 'failed'; readonly error: RemoteErrorMessage }
  | {
      readonly type: 'results';
      readonly seqs: Uint32Array;
      /** The outcomes, packed (see protocol/batch.ts). */
      readonly outcomes: Uint8Array;
      readonly durations: Float32Array;
      /** True when this message ends a batch. */
      readonly batchDone: boolean;
    };
