/**
 * A pool of worker threads that all run one stage chain. Work arrives in packed batches (many
 * tasks' inputs in one buffer); each batch goes whole to the least-loaded thread, which runs its
 * tasks in order and sends their outcomes back packed. A thread that dies (process.exit, out of
 * memory) is replaced; the task it was running is reported as crashed and the tasks queued behind
 * it are run by the other threads.
 */
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { silentLogger, type Logger } from '../log.js';
import { decodeInputs, encodeFailures, encodeInputs, ownBytes } from '../protocol/batch.js';
import type { RemoteErrorMessage } from '../protocol/messages.js';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import {
  STATE_RUNNING,
  STATE_SEQ,
  STATE_STARTED,
  type BatchMessage,
  type ChainEntry,
  type SharedEntry,
  type ThreadInit,
  type ThreadMessage,
} from './thread-protocol.js';

/** Tasks to run: their seqs and their inputs, packed in the same order (protocol/batch.ts). */
export interface ExecBatch {
  readonly seqs: Uint32Array;
  readonly inputs: Uint8Array;
}

/** Outcomes of some tasks: seqs, packed outcomes in the same order, and run times in ms. */
export interface ExecResults {
  readonly seqs: Uint32Array;
  readonly outcomes: Uint8Array;
  readonly durations: Float32Array;
}

/** Options of an {@link Executor}. */
export interface ExecutorOptions {
  /** Number of worker threads. */
  readonly threads: number;
  /** The stage chain every task runs through. */
  readonly chain: readonly ChainEntry[];
  /** Shared values the stages see as `ctx.shared` (files in the shared-data cache). */
  readonly shared?: readonly { readonly name: string; readonly kind: 'bytes' | 'value'; readonly path: string }[];
  /** Worker id shown to stages as `ctx.workerId`. */
  readonly workerId: string;
  /** Hostname shown to stages as `ctx.hostname`. */
  readonly hostname: string;
  /** Limits of each thread (a thread over its heap limit dies alone and is replaced). */
  readonly resourceLimits?: ResourceLimits;
  /** Called with every batch of outcomes, in the order the threads produced them. */
  readonly onResults: (results: ExecResults) => void;
  readonly logger?: Logger;
}

interface Outstanding {
  readonly batch: ExecBatch;
  /** How many of its tasks the thread has answered. */
  done: number;
}

interface Slot {
  readonly worker: Worker;
  readonly state: Int32Array;
  readonly startedAt: Float64Array;
  /** Batches sent to the thread and not fully answered, in the order it runs them. */
  readonly outstanding: Outstanding[];
  tasks: number;
  ready: boolean;
  /** Set when we terminate the thread ourselves: its exit is not a crash. */
  retiring: boolean;
  lastError: Error | undefined;
}

const threadUrl = new URL('./thread.js', import.meta.url);
/**
 * Batches a thread may hold: two keep a thread busy through the hand-over when tasks are short;
 * with long tasks one, so that the last ones are not stuck behind a busy thread while another idles.
 */
const MAX_BATCHES_SHORT = 2;
const MAX_BATCHES_LONG = 1;
const LONG_TASK_MS = 1;
const MAX_RESPAWNS_WITHOUT_PROGRESS = 5;

/** The setup of a chain failed on a thread. */
export class ExecutorStartError extends Error {
  override name = 'ExecutorStartError';
  readonly remote: RemoteErrorMessage;
  constructor(remote: RemoteErrorMessage) {
    super(remote.message);
    this.remote = remote;
  }
}

/** The subset of a batch at the given positions, repacked (rare paths: crashes, cancellations). */
function subBatch(batch: ExecBatch, keep: readonly number[]): ExecBatch {
  const inputs = decodeInputs(batch.inputs, batch.seqs.length);
  return { seqs: Uint32Array.from(keep, (i) => batch.seqs[i]!), inputs: encodeInputs(keep.map((i) => inputs[i])) };
}

/** A pool of threads running one chain. See the module comment. */
export class Executor {
  readonly #options: ExecutorOptions;
  readonly #log: Logger;
  readonly #slots = new Set<Slot>();
  #queue: ExecBatch[] = [];
  #queuedTasks = 0;
  #closed = false;
  #respawnsWithoutProgress = 0;
  #idleWaiters: (() => void)[] = [];
  #crashed = 0;
  #maxResultBytes = 4 * 1024 * 1024;
  #avgTaskMs = 0;
  #taskTimeoutMs = 0;
  #watchdog: NodeJS.Timeout | undefined;

  constructor(options: ExecutorOptions) {
    this.#options = options;
    this.#log = options.logger ?? silentLogger;
  }

  /** Number of threads. */
  get threads(): number {
    return this.#options.threads;
  }

  /** Tasks queued or running. */
  get load(): number {
    let n = this.#queuedTasks;
    for (const s of this.#slots) n += s.tasks;
    return n;
  }

  /** How many threads crashed and were replaced so far. */
  get crashedThreads(): number {
    return this.#crashed;
  }

  /** Result messages from now on stay below this size (the current client's and our limit). */
  set maxResultBytes(bytes: number) {
    this.#maxResultBytes = bytes;
  }

  /**
   * A task running longer than this (ms; 0: no limit) is stopped: its thread is terminated and
   * replaced (an infinite loop must not keep a core), and it is reported with kind `timeout`.
   */
  set taskTimeoutMs(ms: number) {
    this.#taskTimeoutMs = ms;
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    if (ms > 0 && !this.#closed) {
      this.#watchdog = setInterval(() => this.#checkTimeouts(), Math.max(10, Math.min(250, Math.floor(ms / 4))));
      this.#watchdog.unref();
    }
  }

  #checkTimeouts(): void {
    const limit = this.#taskTimeoutMs;
    const now = Date.now();
    for (const slot of [...this.#slots]) {
      if (!slot.ready || slot.retiring || Atomics.load(slot.state, STATE_RUNNING) !== 1) continue;
      const ran = now - slot.startedAt[STATE_STARTED]!;
      if (ran <= limit) continue;
      const seq = Atomics.load(slot.state, STATE_SEQ) >>> 0;
      this.#stop(slot, seq, {
        kind: 'timeout',
        name: 'TaskTimeout',
        message: `the task ran for more than ${limit} ms (taskTimeoutMs); its thread was stopped and replaced`,
        stack: '',
        code: '',
      });
    }
  }

  #sharedEntries: SharedEntry[] = [];

  /** Starts every thread; resolves when all have loaded the chain and run setup(). */
  async start(): Promise<void> {
    // Shared bytes are read once, into memory every thread sees (no copy per thread).
    this.#sharedEntries = (this.#options.shared ?? []).map((s) => {
      if (s.kind !== 'bytes') return { name: s.name, kind: s.kind, path: s.path };
      const size = statSync(s.path).size;
      const data = new SharedArrayBuffer(size);
      const fd = openSync(s.path, 'r');
      try {
        let off = 0;
        while (off < size)
          off += readSync(fd, new Uint8Array(data, off, Math.min(size - off, 16 * 1024 * 1024)), 0, Math.min(size - off, 16 * 1024 * 1024), off);
      } finally {
        closeSync(fd);
      }
      return { name: s.name, kind: s.kind, data };
    });
    const starts: Promise<void>[] = [];
    for (let i = 0; i < this.#options.threads; i++) starts.push(this.#spawn());
    const outcomes = await Promise.allSettled(starts);
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed !== undefined) {
      await this.close();
      throw failed.reason;
    }
  }

  #spawn(): Promise<void> {
    return new Promise((resolve, reject) => {
      const sab = new SharedArrayBuffer(16);
      const init: ThreadInit = {
        chain: this.#options.chain,
        shared: this.#sharedEntries,
        workerId: this.#options.workerId,
        hostname: this.#options.hostname,
        state: sab,
        flushMs: 1,
      };
      const worker = new Worker(threadUrl, {
        workerData: init,
        ...(this.#options.resourceLimits === undefined ? {} : { resourceLimits: this.#options.resourceLimits }),
      });
      const slot: Slot = {
        worker,
        state: new Int32Array(sab),
        startedAt: new Float64Array(sab),
        outstanding: [],
        tasks: 0,
        ready: false,
        retiring: false,
        lastError: undefined,
      };
      this.#slots.add(slot);
      let settled = false;
      worker.on('message', (msg: ThreadMessage) => {
        switch (msg.type) {
          case 'ready':
            slot.ready = true;
            settled = true;
            resolve();
            this.#pump();
            return;
          case 'failed':
            settled = true;
            slot.retiring = true;
            void worker.terminate();
            reject(new ExecutorStartError(msg.error));
            return;
          case 'results':
            this.#onResults(slot, msg);
            return;
        }
      });
      worker.on('error', (err) => {
        slot.lastError = err;
      });
      worker.on('exit', (code) => {
        this.#slots.delete(slot);
        if (!settled) {
          settled = true;
          const err = slot.lastError;
          reject(
            new ExecutorStartError({
              kind: 'setup',
              name: err?.name ?? 'Error',
              message: err?.message ?? `worker thread exited with code ${code} while loading the stages`,
              stack: err?.stack ?? '',
              code: '',
            }),
          );
          return;
        }
        if (!slot.retiring && !this.#closed) this.#onCrash(slot, code);
      });
    });
  }

  #onResults(slot: Slot, msg: Extract<ThreadMessage, { type: 'results' }>): void {
    const n = msg.seqs.length;
    const head = slot.outstanding[0];
    if (head !== undefined) {
      head.done += n;
      if (msg.batchDone) slot.outstanding.shift();
    }
    slot.tasks -= n;
    if (n > 0) {
      this.#respawnsWithoutProgress = 0;
      let sum = 0;
      for (let i = 0; i < n; i++) sum += msg.durations[i]!;
      this.#avgTaskMs = this.#avgTaskMs * 0.7 + (sum / n) * 0.3;
    }
    if (n > 0) this.#options.onResults({ seqs: msg.seqs, outcomes: msg.outcomes, durations: msg.durations });
    this.#pump();
    this.#checkIdle();
  }

  /** Tasks of the slot's batches that it has not answered, as (batch, positions) pairs. */
  #unanswered(slot: Slot): { batch: ExecBatch; positions: number[] }[] {
    return slot.outstanding.map((o) => ({
      batch: o.batch,
      positions: Array.from({ length: o.batch.seqs.length - o.done }, (_, k) => o.done + k),
    }));
  }

  #onCrash(slot: Slot, code: number): void {
    this.#crashed++;
    const running = Atomics.load(slot.state, STATE_RUNNING) === 1;
    const err = slot.lastError;
    const failed = this.#takeUnanswered(slot, running ? Atomics.load(slot.state, STATE_SEQ) >>> 0 : undefined);
    this.#log.warn('worker thread died; replacing it', { exitCode: code, crashedTask: failed });
    if (failed !== undefined) {
      const error: RemoteErrorMessage = {
        kind: 'crashed',
        name: err?.name ?? 'ThreadExit',
        message:
          err !== undefined ? `the worker thread died running this task: ${err.message}` : `the worker thread exited with code ${code} while running this task`,
        stack: err?.stack ?? '',
        code: (err as { code?: string } | undefined)?.code ?? '',
      };
      this.#options.onResults({ seqs: Uint32Array.of(failed), outcomes: encodeFailures(1, error), durations: Float32Array.of(0) });
    }
    this.#respawn();
    this.#pump();
  }

  /** Stops a thread that runs `seq` too long: it is terminated and replaced, `seq` fails with `error`. */
  #stop(slot: Slot, seq: number, error: RemoteErrorMessage): void {
    const failed = this.#takeUnanswered(slot, seq);
    this.#log.warn('stopping a worker thread whose task ran over its time limit', { task: seq });
    this.#retire(slot);
    if (failed !== undefined) {
      this.#options.onResults({ seqs: Uint32Array.of(failed), outcomes: encodeFailures(1, error), durations: Float32Array.of(this.#taskTimeoutMs) });
    }
    this.#pump();
  }

  /**
   * Empties a dead or stopped thread's outstanding batches: every task but `failedSeq` goes back to
   * the front of the queue. Returns `failedSeq` if it was among them.
   */
  #takeUnanswered(slot: Slot, failedSeq: number | undefined): number | undefined {
    const again: ExecBatch[] = [];
    let failed: number | undefined;
    for (const { batch, positions } of this.#unanswered(slot)) {
      const keep = positions.filter((p) => batch.seqs[p] !== failedSeq);
      if (keep.length < positions.length) failed = failedSeq;
      if (keep.length === 0) continue;
      again.push(keep.length === batch.seqs.length ? batch : subBatch(batch, keep));
    }
    slot.outstanding.length = 0;
    slot.tasks = 0;
    if (again.length > 0) this.#requeueFront(again);
    return failed;
  }

  #respawn(afterCrash = true): void {
    if (this.#closed) return;
    if (afterCrash && ++this.#respawnsWithoutProgress > MAX_RESPAWNS_WITHOUT_PROGRESS * this.#options.threads) {
      this.#log.error('worker threads keep dying without finishing a task; not replacing more', {});
      this.#failQueue('worker threads keep dying without finishing a task');
      return;
    }
    this.#spawn().catch((err: unknown) => {
      if (this.#closed) return; // shutting down: the replacement was terminated while it loaded
      this.#log.error('replacing a worker thread failed', { error: err instanceof Error ? err.message : String(err) });
      if (this.#slots.size === 0) this.#failQueue(`replacing a crashed worker thread failed: ${err instanceof Error ? err.message : String(err)}`);
      else this.#respawnsWithoutProgress++;
    });
  }

  #failQueue(message: string): void {
    const batches = this.#takeQueue();
    for (const b of batches) {
      this.#options.onResults({
        seqs: b.seqs,
        outcomes: encodeFailures(b.seqs.length, { kind: 'crashed', name: 'ThreadExit', message, stack: '', code: '' }),
        durations: new Float32Array(b.seqs.length),
      });
    }
    this.#checkIdle();
  }

  #requeueFront(batches: ExecBatch[]): void {
    this.#queue = batches.concat(this.#queue);
    for (const b of batches) this.#queuedTasks += b.seqs.length;
  }

  #takeQueue(): ExecBatch[] {
    const q = this.#queue;
    this.#queue = [];
    this.#queuedTasks = 0;
    return q;
  }

  /** Queues a batch; batches run in submission order as threads free up. */
  submit(batch: ExecBatch): void {
    if (this.#closed) throw new Error('executor is closed');
    if (batch.seqs.length === 0) return;
    this.#queue.push({ seqs: batch.seqs, inputs: ownBytes(batch.inputs) });
    this.#queuedTasks += batch.seqs.length;
    this.#pump();
  }

  #pump(): void {
    const perThread = this.#avgTaskMs >= LONG_TASK_MS ? MAX_BATCHES_LONG : MAX_BATCHES_SHORT;
    while (this.#queue.length > 0) {
      let best: Slot | undefined;
      for (const s of this.#slots) {
        if (!s.ready || s.retiring || s.outstanding.length >= perThread) continue;
        if (best === undefined || s.tasks < best.tasks) best = s;
      }
      if (best === undefined) return;
      const batch = this.#queue.shift()!;
      this.#queuedTasks -= batch.seqs.length;
      best.outstanding.push({ batch, done: 0 });
      best.tasks += batch.seqs.length;
      // The thread gets its own copy of the inputs (transferring would take them from us, and a
      // crash needs them to requeue what the thread had not run).
      const msg: BatchMessage = { type: 'batch', seqs: batch.seqs, inputs: batch.inputs, maxResultBytes: this.#maxResultBytes };
      best.worker.postMessage(msg);
    }
  }

  /**
   * Drops the given tasks: queued ones are removed, a thread running one of them is terminated and
   * replaced (an infinite loop must not keep a core). No result is reported for them.
   */
  cancel(seqs: ReadonlySet<number>): void {
    if (seqs.size === 0) return;
    const queue = this.#takeQueue();
    const kept: ExecBatch[] = [];
    for (const b of queue) {
      const keep: number[] = [];
      for (let i = 0; i < b.seqs.length; i++) if (!seqs.has(b.seqs[i]!)) keep.push(i);
      if (keep.length === b.seqs.length) kept.push(b);
      else if (keep.length > 0) kept.push(subBatch(b, keep));
    }
    this.#requeueFront(kept);
    for (const slot of [...this.#slots]) {
      const unanswered = this.#unanswered(slot);
      if (!unanswered.some(({ batch, positions }) => positions.some((p) => seqs.has(batch.seqs[p]!)))) continue;
      const again: ExecBatch[] = [];
      for (const { batch, positions } of unanswered) {
        const keep = positions.filter((p) => !seqs.has(batch.seqs[p]!));
        if (keep.length > 0) again.push(keep.length === batch.seqs.length ? batch : subBatch(batch, keep));
      }
      slot.outstanding.length = 0;
      slot.tasks = 0;
      this.#retire(slot);
      this.#requeueFront(again);
    }
    this.#pump();
    this.#checkIdle();
  }

  /** Drops every queued and running task (see {@link cancel}). */
  cancelAll(): void {
    this.#takeQueue();
    for (const slot of [...this.#slots]) {
      if (slot.tasks === 0) continue;
      slot.outstanding.length = 0;
      slot.tasks = 0;
      this.#retire(slot);
    }
    this.#checkIdle();
  }

  #retire(slot: Slot): void {
    slot.retiring = true;
    this.#slots.delete(slot);
    void slot.worker.terminate();
    this.#respawn(false);
  }

  /** Resolves when no task is queued or running. */
  onIdle(): Promise<void> {
    if (this.load === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #checkIdle(): void {
    if (this.#idleWaiters.length === 0 || this.load > 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Terminates every thread. Queued tasks are dropped without results. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#watchdog);
    this.#takeQueue();
    const slots = [...this.#slots];
    this.#slots.clear();
    for (const s of slots) s.retiring = true;
    await Promise.all(slots.map((s) => s.worker.terminate()));
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }
}
