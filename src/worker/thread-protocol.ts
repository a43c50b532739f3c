/** Messages between the executor (main thread) and its worker threads. */
import type { RemoteErrorMessage } from '../protocol/index.js';

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

/** A program as a thread loads it: a stage chain and the shared values its stages see. */
export interface ThreadProgram {
  /** The executor's number for it (unique within the executor, never reused). */
  readonly id: number;
  readonly chain: readonly ChainEntry[];
  readonly shared: readonly SharedEntry[];
}

/** workerData of every thread. */
export interface ThreadInit {
  /** Programs to load before the thread reports ready (a replacement thread gets the loaded ones). */
  readonly programs: readonly ThreadProgram[];
  readonly workerId: string;
  readonly hostname: string;
  /** Shared with the executor; layout: the STATE_* indexes below. */
  readonly state: SharedArrayBuffer;
  /** Results are flushed to the main thread at least this often while a batch runs (ms). */
  readonly flushMs: number;
  /** Nice value the thread sets for itself before anything else (0: left as is). */
  readonly nice: number;
  /** The daemon's thread runs as SCHED_BATCH: a thread that inherited it goes back to the normal policy first (sched.ts). */
  readonly leaveBatch: boolean;
}

/** Bytes of the shared state of one thread. */
export const STATE_BYTES = 48;
/** Int32 index: 1 while a task runs. */
export const STATE_RUNNING = 0;
/** Int32 index: seq of the task running (or last run). */
export const STATE_SEQ = 1;
/**
 * Int32 index: the gate a thread passes before it starts a task. 0 open; 1 the thread is starting a
 * task (a few instructions); 2 cut: the executor took back every task the thread has not started
 * (see {@link STATE_VOID}); the thread reopens it once it has dropped them; 3 held: the executor is
 * taking back batches the thread has not started (a few instructions, see {@link STATE_SKIP_FROM}):
 * the thread waits for it to reopen.
 */
export const STATE_GATE = 2;
/** Int32 index: batches numbered up to this were taken back by the executor: the thread skips them. */
export const STATE_VOID = 3;
/** Float64 index: when the running task started (Date.now(), for time limits). */
export const STATE_STARTED = 2;
/** Int32 index: number of the batch whose task started last (0: none yet). */
export const STATE_BATCH = 6;
/**
 * Int32 indexes: batches numbered from STATE_SKIP_FROM to STATE_SKIP_TO were taken back before any
 * of their tasks started (they run on another thread): the thread skips them without a result.
 */
export const STATE_SKIP_FROM = 7;
export const STATE_SKIP_TO = 8;

export const GATE_OPEN = 0;
export const GATE_BUSY = 1;
export const GATE_CUT = 2;
export const GATE_HELD = 3;

/** Main → thread. */
export type MainMessage =
  | {
      /** Run these tasks in order. */
      readonly type: 'batch';
      /** Batch number, increasing per thread (see STATE_VOID). */
      readonly no: number;
      /** Which loaded program runs them. */
      readonly program: number;
      readonly seqs: Uint32Array;
      /** The inputs, packed (see protocol/batch.ts). */
      readonly inputs: Uint8Array;
      /** Result messages must stay below this many bytes. */
      readonly maxResultBytes: number;
    }
  | { readonly type: 'load'; readonly program: ThreadProgram }
  | { readonly type: 'unload'; readonly program: number };

/** Thread → main. */
export type ThreadMessage =
  | { readonly type: 'ready'; readonly niceError?: string; readonly schedError?: string }
  | { readonly type: 'failed'; readonly error: RemoteErrorMessage }
  | { readonly type: 'loaded'; readonly program: number }
  | { readonly type: 'load-failed'; readonly program: number; readonly error: RemoteErrorMessage }
  | {
      readonly type: 'results';
      readonly seqs: Uint32Array;
      /** The outcomes, packed (see protocol/batch.ts). */
      readonly outcomes: Uint8Array;
      readonly durations: Float32Array;
      /** True when this message ends a batch. */
      readonly batchDone: boolean;
    };
