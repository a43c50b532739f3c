/**
 * A pool of worker threads that all run one stage chain. Tasks are queued, dispatched to threads in
 * adaptive batches (a few ms of work each), and their results reported in batches. A thread that
 * dies (process.exit, out of memory) is replaced; the task it was running is reported as crashed
 * and the tasks queued behind it are run by the other threads.
 */
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { silentLogger, type Logger } from '../log.js';
import type { RemoteErrorMessage } from '../protocol/messages.js';
import { STATE_RUNNING, STATE_SEQ, type ChainEntry, type ThreadInit, type ThreadMessage } from './thread-protocol.js';

/** A task as the executor sees it. */
export interface ExecTask {
  readonly seq: number;
  readonly payload: Uint8Array;
}

/** The outcome of one task. Exactly one of `value` and `error` is set. */
export interface ExecResult {
  readonly seq: number;
  readonly value?: Uint8Array;
  readonly error?: RemoteErrorMessage;
  readonly durationMs: number;
}

/** Options of an {@link Executor}. */
export interface ExecutorOptions {
  /** Number of worker threads. */
  readonly threads: number;
  /** The stage chain every task runs through. */
  readonly chain: readonly ChainEntry[];
  /** Worker id shown to stages as `ctx.workerId`. */
  readonly workerId: string;
  /** Hostname shown to stages as `ctx.hostname`. */
  readonly hostname: string;
  /** Limits of each thread (a thread over its heap limit dies alone and is replaced). */
  readonly resourceLimits?: ResourceLimits;
  /** Called with every batch of results, in the order the threads produced them. */
  readonly onResults: (results: ExecResult[]) => void;
  readonly logger?: Logger;
}

interface Slot {
  readonly worker: Worker;
  readonly state: Int32Array;
  /** Tasks sent to the thread and not yet answered, in the order it runs them. */
  readonly outstanding: ExecTask[];
  batches: number;
  ready: boolean;
  /** Set when we terminate the thread ourselves: its exit is not a crash. */
  retiring: boolean;
  lastError: Error | undefined;
}

const threadUrl = new URL('./thread.js', import.meta.url);

/** Target amount of work per batch sent to a thread, in ms. */
const BATCH_TARGET_MS = 2;
const MAX_BATCH = 256;
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

/** A pool of threads running one chain. See the module comment. */
export class Executor {
  readonly #options: ExecutorOptions;
  readonly #log: Logger;
  readonly #slots = new Set<Slot>();
  #queue: ExecTask[] = [];
  #queueHead = 0;
  #avgTaskMs = 1;
  #closed = false;
  #respawnsWithoutProgress = 0;
  #idleWaiters: (() => void)[] = [];
  #crashed = 0;

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
    let n = this.#queue.length - this.#queueHead;
    for (const s of this.#slots) n += s.outstanding.length;
    return n;
  }

  /** How many threads crashed and were replaced so far. */
  get crashedThreads(): number {
    return this.#crashed;
  }

  /** Starts every thread; resolves when all have loaded the chain and run setup(). */
  async start(): Promise<void> {
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
      const sab = new SharedArrayBuffer(8);
      const init: ThreadInit = {
        chain: this.#options.chain,
        workerId: this.#options.workerId,
        hostname: this.#options.hostname,
        state: sab,
        flushMs: 1,
      };
      const worker = new Worker(threadUrl, {
        workerData: init,
        ...(this.#options.resourceLimits === undefined ? {} : { resourceLimits: this.#options.resourceLimits }),
        stdout: false,
        stderr: false,
      });
      const slot: Slot = {
        worker,
        state: new Int32Array(sab),
        outstanding: [],
        batches: 0,
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
    const results: ExecResult[] = new Array<ExecResult>(msg.seqs.length);
    let total = 0;
    for (let i = 0; i < msg.seqs.length; i++) {
      const seq = msg.seqs[i]!;
      // The thread answers in order, so the head of `outstanding` is this task.
      const head = slot.outstanding[0];
      if (head !== undefined && head.seq === seq) slot.outstanding.shift();
      else {
        const at = slot.outstanding.findIndex((t) => t.seq === seq);
        if (at >= 0) slot.outstanding.splice(at, 1);
      }
      const d = msg.durations[i]!;
      total += d;
      const err = msg.errors[i];
      results[i] =
        err === null || err === undefined ? { seq, value: msg.values[i]!, durationMs: d } : { seq, error: err, durationMs: d };
    }
    if (msg.seqs.length > 0) {
      this.#avgTaskMs = this.#avgTaskMs * 0.7 + (total / msg.seqs.length) * 0.3;
      this.#respawnsWithoutProgress = 0;
    }
    if (msg.batchDone) slot.batches--;
    if (results.length > 0) this.#options.onResults(results);
    this.#pump();
    this.#checkIdle();
  }

  #onCrash(slot: Slot, code: number): void {
    this.#crashed++;
    const running = Atomics.load(slot.state, STATE_RUNNING) === 1;
    const crashedSeq = Atomics.load(slot.state, STATE_SEQ) >>> 0;
    const err = slot.lastError;
    const lost = slot.outstanding.splice(0);
    const requeue: ExecTask[] = [];
    const crashed: ExecResult[] = [];
    for (const task of lost) {
      if (running && (task.seq >>> 0) === crashedSeq) {
        crashed.push({
          seq: task.seq,
          error: {
            kind: 'crashed',
            name: err?.name ?? 'ThreadExit',
            message:
              err !== undefined
                ? `the worker thread died running this task: ${err.message}`
                : `the worker thread exited with code ${code} while running this task`,
            stack: err?.stack ?? '',
            code: (err as { code?: string } | undefined)?.code ?? '',
          },
          durationMs: 0,
        });
      } else requeue.push(task);
    }
    this.#log.warn('worker thread died; replacing it', { exitCode: code, crashedTask: running ? crashedSeq : undefined, requeued: requeue.length });
    if (requeue.length > 0) this.#requeueFront(requeue);
    if (crashed.length > 0) this.#options.onResults(crashed);
    this.#respawn();
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
    const tasks = this.#takeQueue();
    if (tasks.length === 0) return;
    this.#options.onResults(
      tasks.map((t) => ({ seq: t.seq, error: { kind: 'crashed', name: 'ThreadExit', message, stack: '', code: '' }, durationMs: 0 })),
    );
    this.#checkIdle();
  }

  #requeueFront(tasks: ExecTask[]): void {
    const rest = this.#queue.slice(this.#queueHead);
    this.#queue = tasks.concat(rest);
    this.#queueHead = 0;
  }

  #takeQueue(): ExecTask[] {
    const rest = this.#queue.slice(this.#queueHead);
    this.#queue = [];
    this.#queueHead = 0;
    return rest;
  }

  /** Queues tasks; they run in submission order as threads free up. */
  submit(tasks: readonly ExecTask[]): void {
    if (this.#closed) throw new Error('executor is closed');
    for (const t of tasks) this.#queue.push(t);
    this.#pump();
  }

  #pump(): void {
    let queued = this.#queue.length - this.#queueHead;
    if (queued === 0) return;
    let readySlots = 0;
    for (const s of this.#slots) if (s.ready && !s.retiring) readySlots++;
    if (readySlots === 0) return;
    const target = Math.max(1, Math.min(MAX_BATCH, Math.floor(BATCH_TARGET_MS / Math.max(this.#avgTaskMs, 0.001))));
    for (const slot of this.#slots) {
      if (queued === 0) break;
      if (!slot.ready || slot.retiring || slot.batches >= 2) continue;
      const size = Math.min(queued, target, Math.max(1, Math.ceil(queued / readySlots)));
      const seqs = new Array<number>(size);
      const payloads = new Array<Uint8Array>(size);
      for (let i = 0; i < size; i++) {
        const t = this.#queue[this.#queueHead++]!;
        seqs[i] = t.seq;
        payloads[i] = t.payload;
        slot.outstanding.push(t);
      }
      queued -= size;
      slot.batches++;
      slot.worker.postMessage({ type: 'batch', seqs, payloads });
    }
    if (this.#queueHead > 4096 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
  }

  /**
   * Drops the given tasks: queued ones are removed, a thread running one of them is terminated and
   * replaced (an infinite loop must not keep a core). No result is reported for them.
   */
  cancel(seqs: ReadonlySet<number>): void {
    if (seqs.size === 0) return;
    this.#queue = this.#queue.slice(this.#queueHead).filter((t) => !seqs.has(t.seq));
    this.#queueHead = 0;
    for (const slot of [...this.#slots]) {
      if (!slot.outstanding.some((t) => seqs.has(t.seq))) continue;
      const keep = slot.outstanding.filter((t) => !seqs.has(t.seq));
      slot.outstanding.length = 0;
      this.#retire(slot);
      if (keep.length > 0) this.#requeueFront(keep);
    }
    this.#checkIdle();
  }

  /** Drops every queued and running task (see {@link cancel}). */
  cancelAll(): void {
    this.#takeQueue();
    for (const slot of [...this.#slots]) {
      if (slot.outstanding.length === 0) continue;
      slot.outstanding.length = 0;
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
