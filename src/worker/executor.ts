/**
 * A pool of worker threads that runs several programs (stage chains) at once. Programs are loaded
 * on every thread (bounded, least recently used evicted) and stay loaded across leases. Work arrives
 * in packed batches (many tasks' inputs in one buffer) naming their program; each batch goes whole to
 * the least-loaded thread, highest priority first, which runs its tasks in order and sends their
 * outcomes back packed. A thread that dies (process.exit, out of memory) is replaced; the task it
 * was running is reported as crashed and the tasks queued behind it are run by the other threads. A
 * thread stuck in one task far longer than the program's tasks take gives back the tasks it has not
 * started (see STATE_GATE), so they run on the other threads instead of waiting behind it.
 */
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { silentLogger, type Logger } from '../log.js';
import { decodeInputs, encodeFailures, encodeInputs, ownBytes, type ExecBatch, type ExecResults, type RemoteErrorMessage } from '../protocol/index.js';
import {
  GATE_CUT,
  GATE_HELD,
  GATE_OPEN,
  STATE_BATCH,
  STATE_BYTES,
  STATE_GATE,
  STATE_RUNNING,
  STATE_SEQ,
  STATE_SKIP_FROM,
  STATE_SKIP_TO,
  STATE_STARTED,
  STATE_VOID,
  type ChainEntry,
  type MainMessage,
  type SharedEntry,
  type ThreadInit,
  type ThreadMessage,
  type ThreadProgram,
} from './thread-protocol.js';

/** A batch for {@link Executor.submit}: which program runs it, and how urgently. */
export interface ExecSubmission extends ExecBatch {
  /** Key of a loaded program ({@link ProgramSpec.key}). */
  readonly program: string;
  /** Higher runs first; equal priorities run in submission order. @default 0 */
  readonly priority?: number;
  /** A task of this batch running longer is stopped (its thread replaced), in ms; 0: no limit. @default 0 */
  readonly timeoutMs?: number;
}

/** A program to load: its stage chain and the shared values its stages see. */
export interface ProgramSpec {
  /** Identity of the program's content (chain and shared values): equal keys are the same program. */
  readonly key: string;
  readonly chain: readonly ChainEntry[];
  /** Shared values the stages see as `ctx.shared` (files in the shared-data cache). */
  readonly shared?: readonly { readonly name: string; readonly kind: 'bytes' | 'value'; readonly path: string }[];
}

/** Options of an {@link Executor}. */
export interface ExecutorOptions {
  /** Number of worker threads. */
  readonly threads: number;
  /** Worker id shown to stages as `ctx.workerId`. */
  readonly workerId: string;
  /** Hostname shown to stages as `ctx.hostname`. */
  readonly hostname: string;
  /** Limits of each thread (a thread over its heap limit dies alone and is replaced). */
  readonly resourceLimits?: ResourceLimits;
  /** Nice value (CPU priority, 0 … 19) each thread sets for itself as it starts. @default 0 */
  readonly nice?: number;
  /** The calling thread runs as SCHED_BATCH (see sched.ts): each task thread goes back to the normal policy as it starts. @default false */
  readonly leaveBatch?: boolean;
  /** Programs kept loaded at most; beyond it the least recently used idle one is unloaded. @default 16 */
  readonly maxPrograms?: number;
  /** Called with every batch of outcomes, in the order the threads produced them. */
  readonly onResults: (results: ExecResults) => void;
  readonly logger?: Logger;
}

interface Program {
  readonly id: number;
  readonly spec: ProgramSpec;
  readonly thread: ThreadProgram;
  state: 'loading' | 'loaded' | 'failed';
  /** Threads that have not yet answered its load. */
  readonly waiting: Set<Slot>;
  readonly ready: Promise<void>;
  resolve: () => void;
  reject: (err: ExecutorStartError) => void;
  /** Tasks of it queued or running. */
  tasks: number;
  lastUsed: number;
  /** Recent task time (ms; -1 until known). */
  avgTaskMs: number;
}

interface Queued extends ExecBatch {
  readonly program: Program;
  readonly priority: number;
  readonly timeoutMs: number;
}

interface Outstanding {
  batch: Queued;
  /** Its number on the thread (see STATE_VOID). */
  readonly no: number;
  /** How many of its tasks the thread has answered. */
  done: number;
  /**
   * Set when its thread was cut (see #cut): `batch` then holds only the task the thread was running,
   * and the thread may still report tasks that were taken back from it (run elsewhere too): those
   * are passed on (the client keeps the first result) but not counted here.
   */
  cut?: boolean;
}

interface Slot {
  readonly worker: Worker;
  readonly state: Int32Array;
  readonly startedAt: Float64Array;
  /** Batches sent to the thread and not fully answered, in the order it runs them. */
  readonly outstanding: Outstanding[];
  /** Programs loaded on the thread (ids). */
  readonly programs: Set<number>;
  tasks: number;
  nextNo: number;
  ready: boolean;
  /** Set when we terminate the thread ourselves: its exit is not a crash. */
  retiring: boolean;
  lastError: Error | undefined;
}

const threadUrl = new URL('./thread.js', import.meta.url);
/**
 * Batches a thread may hold: two keep it busy through the hand-over (its next batch is there when
 * one ends, without waiting for this main thread). A batch a thread holds but has not started is
 * taken back when another thread goes idle with nothing queued (see #balance), so the last ones are
 * not stuck behind a busy thread while another idles.
 */
const MAX_BATCHES = 2;
const MAX_RESPAWNS_WITHOUT_PROGRESS = 5;
/** A task running this long, and {@link STUCK_FACTOR} × its program's task time, holds its batch-mates no longer. */
const STUCK_MIN_MS = 250;
const STUCK_FACTOR = 20;
const WATCHDOG_MS = 50;

/** The setup of a program failed on a thread. */
export class ExecutorStartError extends Error {
  override name = 'ExecutorStartError';
  readonly remote: RemoteErrorMessage;
  constructor(remote: RemoteErrorMessage) {
    super(remote.message);
    this.remote = remote;
  }
}

/** The subset of a batch at the given positions, repacked (rare paths: crashes, cancellations, cuts). */
function subBatch(batch: Queued, keep: readonly number[]): Queued {
  const inputs = decodeInputs(batch.inputs, batch.seqs.length);
  return {
    seqs: Uint32Array.from(keep, (i) => batch.seqs[i]!),
    inputs: encodeInputs(keep.map((i) => inputs[i])),
    program: batch.program,
    priority: batch.priority,
    timeoutMs: batch.timeoutMs,
  };
}

/** A pool of threads running programs. See the module comment. */
export class Executor {
  readonly #options: ExecutorOptions;
  readonly #log: Logger;
  #niceWarned = false;
  #schedWarned = false;
  readonly #slots = new Set<Slot>();
  readonly #programs = new Map<string, Program>();
  readonly #byId = new Map<number, Program>();
  /** Shared bytes read into memory every thread sees, by file path (one copy for all programs). */
  readonly #sharedBytes = new Map<string, SharedArrayBuffer>();
  #nextProgram = 1;
  #queue: Queued[] = [];
  #queuedTasks = 0;
  #closed = false;
  #respawnsWithoutProgress = 0;
  #idleWaiters: (() => void)[] = [];
  #crashed = 0;
  #replaced = 0;
  #maxResultBytes = 4 * 1024 * 1024;
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

  /** How many threads were replaced so far, for any reason (crashes, time limits, cancelled tasks). */
  get replacedThreads(): number {
    return this.#replaced;
  }

  /** Programs loaded on the threads now. */
  get programsLoaded(): number {
    let n = 0;
    for (const p of this.#programs.values()) if (p.state === 'loaded') n++;
    return n;
  }

  /** Result messages from now on stay below this size (the current client's and our limit). */
  set maxResultBytes(bytes: number) {
    this.#maxResultBytes = bytes;
  }

  /** Starts every thread; resolves when all are ready (with every program loaded so far). */
  async start(): Promise<void> {
    const starts: Promise<void>[] = [];
    for (let i = 0; i < this.#options.threads; i++) starts.push(this.#spawn());
    const outcomes = await Promise.allSettled(starts);
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed !== undefined) {
      await this.close();
      throw failed.reason;
    }
    this.#watchdog = setInterval(() => this.#check(), WATCHDOG_MS);
    this.#watchdog.unref();
  }

  /** True when the program is loaded on the threads. Marks it recently used. */
  isLoaded(key: string): boolean {
    const p = this.#programs.get(key);
    if (p === undefined || p.state !== 'loaded') return false;
    p.lastUsed = performance.now();
    return true;
  }

  /**
   * Loads a program on every thread (import its stages, run their setup()). Resolves at once when
   * it is loaded already; rejects with {@link ExecutorStartError} when it fails to load (it is then
   * not kept). Beyond `maxPrograms` the least recently used program without tasks is unloaded.
   */
  loadProgram(spec: ProgramSpec): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('executor is closed'));
    const existing = this.#programs.get(spec.key);
    if (existing !== undefined) {
      existing.lastUsed = performance.now();
      return existing.ready;
    }
    this.#evict(Math.max(1, this.#options.maxPrograms ?? 16) - 1);
    const shared: SharedEntry[] = (spec.shared ?? []).map((s) =>
      s.kind === 'bytes' ? { name: s.name, kind: s.kind, data: this.#bytesOf(s.path) } : { name: s.name, kind: s.kind, path: s.path },
    );
    const id = this.#nextProgram++;
    let resolve!: () => void;
    let reject!: (err: ExecutorStartError) => void;
    const ready = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    ready.catch(() => {}); // callers get it through the returned promise
    const program: Program = {
      id,
      spec,
      thread: { id, chain: spec.chain, shared },
      state: 'loading',
      waiting: new Set(),
      ready,
      resolve,
      reject,
      tasks: 0,
      lastUsed: performance.now(),
      avgTaskMs: -1,
    };
    this.#programs.set(spec.key, program);
    this.#byId.set(id, program);
    for (const slot of this.#slots) {
      if (!slot.ready || slot.retiring) continue; // threads still starting load it once ready
      program.waiting.add(slot);
      this.#post(slot, { type: 'load', program: program.thread });
    }
    this.#settleLoad(program);
    return ready;
  }

  /** Unloads a program from every thread; its queued tasks fail as cancelled. */
  unloadProgram(key: string): void {
    const p = this.#programs.get(key);
    if (p === undefined) return;
    this.#drop(p);
  }

  #drop(p: Program): void {
    this.#programs.delete(p.spec.key);
    this.#byId.delete(p.id);
    if (p.state === 'loading') {
      p.state = 'failed';
      p.reject(new ExecutorStartError({ kind: 'setup', name: 'Unloaded', message: 'the program was unloaded while it loaded', stack: '', code: '' }));
    }
    for (const slot of this.#slots) {
      if (slot.programs.delete(p.id)) this.#post(slot, { type: 'unload', program: p.id });
    }
    this.#releaseShared();
  }

  #evict(keep: number): void {
    if (this.#programs.size <= keep) return;
    const idle = [...this.#programs.values()].filter((p) => p.tasks === 0 && p.state !== 'loading').sort((a, b) => a.lastUsed - b.lastUsed);
    for (const p of idle) {
      if (this.#programs.size <= keep) break;
      this.#log.debug('unloading the least recently used program', { program: p.id });
      this.#drop(p);
    }
  }

  #bytesOf(path: string): SharedArrayBuffer {
    const known = this.#sharedBytes.get(path);
    if (known !== undefined) return known;
    const size = statSync(path).size;
    const data = new SharedArrayBuffer(size);
    const fd = openSync(path, 'r');
    try {
      const chunk = 16 * 1024 * 1024;
      let off = 0;
      while (off < size) off += readSync(fd, new Uint8Array(data, off, Math.min(size - off, chunk)), 0, Math.min(size - off, chunk), off);
    } finally {
      closeSync(fd);
    }
    this.#sharedBytes.set(path, data);
    return data;
  }

  /** Forgets shared bytes no loaded program uses. */
  #releaseShared(): void {
    const used = new Set<SharedArrayBuffer>();
    for (const p of this.#programs.values()) for (const s of p.thread.shared) if (s.data !== undefined) used.add(s.data);
    for (const [path, data] of this.#sharedBytes) if (!used.has(data)) this.#sharedBytes.delete(path);
  }

  #settleLoad(p: Program): void {
    if (p.state !== 'loading' || p.waiting.size > 0) return;
    p.state = 'loaded';
    p.resolve();
    this.#pump();
  }

  #post(slot: Slot, msg: MainMessage): void {
    slot.worker.postMessage(msg);
  }

  #spawn(): Promise<void> {
    return new Promise((resolve, reject) => {
      const sab = new SharedArrayBuffer(STATE_BYTES);
      const state = new Int32Array(sab);
      Atomics.store(state, STATE_VOID, 0);
      const loaded = [...this.#programs.values()].filter((p) => p.state === 'loaded');
      const init: ThreadInit = {
        programs: loaded.map((p) => p.thread),
        workerId: this.#options.workerId,
        hostname: this.#options.hostname,
        state: sab,
        flushMs: 1,
        nice: this.#options.nice ?? 0,
        leaveBatch: this.#options.leaveBatch ?? false,
      };
      const worker = new Worker(threadUrl, {
        workerData: init,
        ...(this.#options.resourceLimits === undefined ? {} : { resourceLimits: this.#options.resourceLimits }),
      });
      const slot: Slot = {
        worker,
        state,
        startedAt: new Float64Array(sab),
        outstanding: [],
        programs: new Set(loaded.map((p) => p.id)),
        tasks: 0,
        nextNo: 1,
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
            if (msg.niceError !== undefined && !this.#niceWarned) {
              this.#niceWarned = true;
              this.#log.warn('the task threads could not lower their CPU priority; they run at normal priority', {
                nice: this.#options.nice,
                error: msg.niceError,
              });
            }
            if (msg.schedError !== undefined && !this.#schedWarned) {
              this.#schedWarned = true;
              this.#log.warn("a task thread inherited the daemon thread's SCHED_BATCH policy and could not leave it; tasks still run", {
                error: msg.schedError,
              });
            }
            settled = true;
            // Programs loaded since this thread started (or that it lacks) are loaded now.
            for (const p of this.#programs.values()) {
              if (p.state === 'failed' || slot.programs.has(p.id)) continue;
              if (p.state === 'loading') p.waiting.add(slot);
              this.#post(slot, { type: 'load', program: p.thread });
            }
            resolve();
            this.#pump();
            return;
          case 'failed':
            settled = true;
            slot.retiring = true;
            void worker.terminate();
            reject(new ExecutorStartError(msg.error));
            return;
          case 'loaded': {
            slot.programs.add(msg.program);
            const p = this.#byId.get(msg.program);
            if (p === undefined) {
              this.#post(slot, { type: 'unload', program: msg.program }); // unloaded meanwhile
              return;
            }
            p.waiting.delete(slot);
            this.#settleLoad(p);
            this.#pump();
            return;
          }
          case 'load-failed': {
            const p = this.#byId.get(msg.program);
            if (p === undefined) return;
            const wasLoading = p.state === 'loading';
            this.#drop(p);
            if (wasLoading) {
              p.state = 'failed';
              p.reject(new ExecutorStartError(msg.error));
            }
            this.#failQueued((b) => b.program === p, msg.error);
            return;
          }
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
        for (const p of this.#programs.values()) {
          if (p.waiting.delete(slot)) this.#settleLoad(p);
        }
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
    const head = slot.outstanding[0];
    let n = msg.seqs.length;
    if (head?.cut === true) {
      // Only the task it kept counts; the others were taken back (and run elsewhere too).
      const kept = new Set(head.batch.seqs.subarray(head.done));
      n = 0;
      for (const seq of msg.seqs) if (kept.has(seq)) n++;
    }
    if (head !== undefined) {
      head.done += n;
      head.batch.program.tasks -= n;
      if (msg.batchDone) {
        slot.outstanding.shift();
        // Tasks the thread never reported (a cut raced the end of the batch) are no longer its.
        const left = Math.max(0, head.batch.seqs.length - head.done);
        head.batch.program.tasks -= left;
        slot.tasks -= left;
      }
    }
    slot.tasks -= n;
    const m = msg.seqs.length;
    if (m > 0) {
      this.#respawnsWithoutProgress = 0;
      let sum = 0;
      for (let i = 0; i < m; i++) sum += msg.durations[i]!;
      const avg = sum / m;
      if (head !== undefined) {
        const p = head.batch.program;
        p.avgTaskMs = p.avgTaskMs < 0 ? avg : p.avgTaskMs * 0.7 + avg * 0.3;
      }
      this.#options.onResults({ seqs: msg.seqs, outcomes: msg.outcomes, durations: msg.durations });
    }
    this.#pump();
    this.#checkIdle();
  }

  /** Tasks of the slot's batches that it has not answered, as (batch, positions) pairs. */
  #unanswered(slot: Slot): { batch: Queued; positions: number[] }[] {
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
    this.#log.warn('worker thread died; replacing it', { exitCode: code, crashedSeq: failed });
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

  /** Periodic checks of the running tasks: time limits, and tasks stuck far beyond their program's task time. */
  #check(): void {
    const now = Date.now();
    for (const slot of [...this.#slots]) {
      if (!slot.ready || slot.retiring || Atomics.load(slot.state, STATE_RUNNING) !== 1) continue;
      const head = slot.outstanding[0];
      if (head === undefined) continue;
      const ran = now - slot.startedAt[STATE_STARTED]!;
      const limit = head.batch.timeoutMs;
      if (limit > 0 && ran > limit) {
        const seq = Atomics.load(slot.state, STATE_SEQ) >>> 0;
        this.#stop(slot, seq, {
          kind: 'timeout',
          name: 'TaskTimeout',
          message: `the task ran for more than ${limit} ms (taskTimeoutMs); its thread was stopped and replaced`,
          stack: '',
          code: '',
        });
        continue;
      }
      const avg = head.batch.program.avgTaskMs;
      if (ran > Math.max(STUCK_MIN_MS, STUCK_FACTOR * Math.max(avg, 0)) && slot.tasks > 1) this.#cut(slot);
    }
  }

  /**
   * Takes back every task a thread has not started (it is stuck in one): they go to the front of
   * the queue for the other threads. The thread learns it through the gate before its next task.
   */
  #cut(slot: Slot): void {
    if (Atomics.load(slot.state, STATE_GATE) === GATE_CUT) return;
    Atomics.store(slot.state, STATE_VOID, slot.nextNo - 1);
    // The gate is held busy only for the few instructions of a task start: wait those out.
    let acquired = false;
    for (let spins = 0; spins < 100_000; spins++) {
      if (Atomics.compareExchange(slot.state, STATE_GATE, GATE_OPEN, GATE_CUT) === GATE_OPEN) {
        acquired = true;
        break;
      }
    }
    if (!acquired) return; // next watchdog round
    // The thread starts nothing more; `last` is the last task it started.
    const running = Atomics.load(slot.state, STATE_RUNNING) === 1;
    const last = Atomics.load(slot.state, STATE_SEQ) >>> 0;
    let at = -1;
    let pos = -1;
    for (let i = 0; i < slot.outstanding.length && at < 0; i++) {
      const seqs = slot.outstanding[i]!.batch.seqs;
      for (let k = 0; k < seqs.length; k++) {
        if (seqs[k] === last) {
          at = i;
          pos = k;
          break;
        }
      }
    }
    // Batches before `at` were finished by the thread (their end is on its way). Of `last`'s batch,
    // the thread keeps only `last` if it still runs it: the tasks before it may be computed but not
    // yet flushed (a synchronous infinite loop never flushes), so they run again elsewhere too.
    const stolen: Queued[] = [];
    const from = at < 0 ? 0 : at;
    for (const o of slot.outstanding.slice(from)) {
      const keep = Array.from({ length: o.batch.seqs.length - o.done }, (_, k) => o.done + k).filter(
        (k) => !(o === slot.outstanding[at] && running && k === pos),
      );
      o.batch.program.tasks -= o.batch.seqs.length - o.done;
      slot.tasks -= o.batch.seqs.length - o.done;
      if (keep.length > 0) stolen.push(keep.length === o.batch.seqs.length ? o.batch : subBatch(o.batch, keep));
    }
    const record = at >= 0 ? slot.outstanding[at] : undefined;
    slot.outstanding.length = from;
    if (record !== undefined) {
      // The thread ends this batch (it reports it done) when `last` returns or at its next task.
      record.batch = subBatch(record.batch, running ? [pos] : []);
      record.done = 0;
      record.cut = true;
      slot.outstanding.push(record);
      record.batch.program.tasks += record.batch.seqs.length;
      slot.tasks += record.batch.seqs.length;
    }
    let n = 0;
    for (const b of stolen) n += b.seqs.length;
    if (n === 0) return;
    this.#log.info('a task is stuck: its batch-mates go to other threads', { seq: last, tasks: n });
    this.#requeueFront(stolen);
    this.#pump();
  }

  /** Stops a thread that runs `seq` too long: it is terminated and replaced, `seq` fails with `error`. */
  #stop(slot: Slot, seq: number, error: RemoteErrorMessage): void {
    const failed = this.#takeUnanswered(slot, seq);
    this.#log.warn('stopping a worker thread whose task ran over its time limit', { seq });
    this.#retire(slot);
    if (failed !== undefined) {
      this.#options.onResults({
        seqs: Uint32Array.of(failed),
        outcomes: encodeFailures(1, error),
        durations: Float32Array.of(Date.now() - slot.startedAt[STATE_STARTED]!),
      });
    }
    this.#pump();
  }

  /**
   * Empties a dead or stopped thread's outstanding batches: every task but `failedSeq` goes back to
   * the front of the queue. Returns `failedSeq` if it was among them.
   */
  #takeUnanswered(slot: Slot, failedSeq: number | undefined): number | undefined {
    const again: Queued[] = [];
    let failed: number | undefined;
    for (const { batch, positions } of this.#unanswered(slot)) {
      batch.program.tasks -= positions.length;
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
    this.#replaced++;
    if (afterCrash && ++this.#respawnsWithoutProgress > MAX_RESPAWNS_WITHOUT_PROGRESS * this.#options.threads) {
      this.#log.error('worker threads keep dying without finishing a task; not replacing more', {});
      this.#failQueued(() => true, { kind: 'crashed', name: 'ThreadExit', message: 'worker threads keep dying without finishing a task', stack: '', code: '' });
      return;
    }
    this.#spawn().catch((err: unknown) => {
      if (this.#closed) return; // shutting down: the replacement was terminated while it loaded
      this.#log.error('replacing a worker thread failed', { error: err instanceof Error ? err.message : String(err) });
      if (this.#slots.size === 0) {
        this.#failQueued(() => true, {
          kind: 'crashed',
          name: 'ThreadExit',
          message: `replacing a crashed worker thread failed: ${err instanceof Error ? err.message : String(err)}`,
          stack: '',
          code: '',
        });
      } else this.#respawnsWithoutProgress++;
    });
  }

  /** Fails the queued batches that match with `error`. */
  #failQueued(match: (b: Queued) => boolean, error: RemoteErrorMessage): void {
    const failed: Queued[] = [];
    this.#queue = this.#queue.filter((b) => {
      if (!match(b)) return true;
      failed.push(b);
      return false;
    });
    for (const b of failed) {
      this.#queuedTasks -= b.seqs.length;
      b.program.tasks -= b.seqs.length;
      this.#options.onResults({ seqs: b.seqs, outcomes: encodeFailures(b.seqs.length, error), durations: new Float32Array(b.seqs.length) });
    }
    this.#checkIdle();
  }

  #requeueFront(batches: Queued[]): void {
    for (const b of batches) {
      b.program.tasks += b.seqs.length;
      this.#queuedTasks += b.seqs.length;
    }
    // Before every queued batch of the same priority, after those of higher priority.
    for (const b of batches.reverse()) {
      let i = 0;
      while (i < this.#queue.length && this.#queue[i]!.priority > b.priority) i++;
      this.#queue.splice(i, 0, b);
    }
  }

  #takeQueue(): Queued[] {
    const q = this.#queue;
    this.#queue = [];
    this.#queuedTasks = 0;
    for (const b of q) b.program.tasks -= b.seqs.length;
    return q;
  }

  /**
   * Queues a batch; batches run highest priority first, in submission order among equals, as
   * threads free up. A batch for a program that is not loaded fails at once (kind `setup`).
   */
  submit(batch: ExecSubmission): void {
    if (this.#closed) throw new Error('executor is closed');
    if (batch.seqs.length === 0) return;
    const program = this.#programs.get(batch.program);
    if (program === undefined || program.state === 'failed') {
      const error: RemoteErrorMessage = { kind: 'setup', name: 'ProgramNotLoaded', message: 'the program of these tasks is not loaded', stack: '', code: '' };
      this.#options.onResults({ seqs: batch.seqs, outcomes: encodeFailures(batch.seqs.length, error), durations: new Float32Array(batch.seqs.length) });
      return;
    }
    program.lastUsed = performance.now();
    const q: Queued = { seqs: batch.seqs, inputs: ownBytes(batch.inputs), program, priority: batch.priority ?? 0, timeoutMs: batch.timeoutMs ?? 0 };
    program.tasks += q.seqs.length;
    this.#queuedTasks += q.seqs.length;
    let i = this.#queue.length;
    while (i > 0 && this.#queue[i - 1]!.priority < q.priority) i--;
    if (i === this.#queue.length) this.#queue.push(q);
    else this.#queue.splice(i, 0, q);
    this.#pump();
  }

  #pump(): void {
    this.#dispatch();
    // Bounded: every round takes an unstarted batch from a thread that holds two to one that holds none.
    for (let round = 0; round < this.#slots.size && this.#balance(); round++) this.#dispatch();
  }

  #dispatch(): void {
    const perThread = MAX_BATCHES;
    for (let i = 0; i < this.#queue.length;) {
      const batch = this.#queue[i]!;
      let best: Slot | undefined;
      for (const s of this.#slots) {
        if (!s.ready || s.retiring || s.outstanding.length >= perThread || !s.programs.has(batch.program.id)) continue;
        if (Atomics.load(s.state, STATE_GATE) === GATE_CUT) continue;
        if (best === undefined || s.tasks < best.tasks) best = s;
      }
      if (best === undefined) {
        // No thread can take it now. Every other batch waits for the same threads, unless this
        // one's program is still loading on them.
        if (batch.program.state === 'loaded' && this.#hasFreeThread(perThread)) {
          i++;
          continue;
        }
        return;
      }
      this.#queue.splice(i, 1);
      this.#queuedTasks -= batch.seqs.length;
      const no = best.nextNo++;
      best.outstanding.push({ batch, no, done: 0 });
      best.tasks += batch.seqs.length;
      // The thread gets its own copy of the inputs (transferring would take them from us, and a
      // crash needs them to requeue what the thread had not run).
      this.#post(best, { type: 'batch', no, program: batch.program.id, seqs: batch.seqs, inputs: batch.inputs, maxResultBytes: this.#maxResultBytes });
    }
  }

  /**
   * When a thread is idle and nothing is queued for it, takes back the batch another thread holds
   * behind its running one (not started yet), so that the idle thread runs it. True when it did.
   */
  #balance(): boolean {
    if (this.#queue.length > 0 || this.#slots.size < 2) return false;
    const idle = [...this.#slots].filter((s) => s.ready && !s.retiring && s.outstanding.length === 0 && Atomics.load(s.state, STATE_GATE) === GATE_OPEN);
    if (idle.length === 0) return false;
    for (const s of this.#slots) {
      if (s.retiring || s.outstanding.length < 2) continue;
      const next = s.outstanding[s.outstanding.length - 1]!.batch.program.id;
      if (!idle.some((t) => t.programs.has(next))) continue;
      const taken = this.#takeBackUnstarted(s);
      if (taken.length === 0) continue;
      this.#requeueFront(taken);
      return true;
    }
    return false;
  }

  /**
   * Takes back the batches a thread holds but has not started (none of their tasks began), in
   * order; the thread skips them (STATE_SKIP_FROM). Empty when it has none or a cut is under way.
   */
  #takeBackUnstarted(slot: Slot): Queued[] {
    let held = false;
    for (let spins = 0; spins < 100_000 && !held; spins++) {
      const gate = Atomics.compareExchange(slot.state, STATE_GATE, GATE_OPEN, GATE_HELD);
      if (gate === GATE_CUT) return [];
      held = gate === GATE_OPEN;
    }
    if (!held) return [];
    // The thread starts no task while we hold the gate: batches after the last one it started are untouched.
    const last = Atomics.load(slot.state, STATE_BATCH);
    const from = slot.outstanding.findIndex((o) => o.no > last);
    let taken: Outstanding[] = [];
    if (from >= 0) {
      taken = slot.outstanding.splice(from);
      // Batches taken back earlier that the thread has not reached yet stay skipped (the range is
      // contiguous: every batch between them and these was taken back too).
      if (last >= Atomics.load(slot.state, STATE_SKIP_TO)) Atomics.store(slot.state, STATE_SKIP_FROM, taken[0]!.no);
      Atomics.store(slot.state, STATE_SKIP_TO, taken[taken.length - 1]!.no);
    }
    Atomics.store(slot.state, STATE_GATE, GATE_OPEN);
    for (const o of taken) {
      const left = o.batch.seqs.length - o.done;
      slot.tasks -= left;
      o.batch.program.tasks -= left;
    }
    return taken.map((o) => o.batch);
  }

  #hasFreeThread(perThread: number): boolean {
    for (const s of this.#slots) if (s.ready && !s.retiring && s.outstanding.length < perThread) return true;
    return false;
  }

  /**
   * Drops the given tasks: queued ones are removed, a thread running one of them is terminated and
   * replaced (an infinite loop must not keep a core). No result is reported for them.
   */
  cancel(seqs: ReadonlySet<number>): void {
    if (seqs.size === 0) return;
    const queue = this.#takeQueue();
    const kept: Queued[] = [];
    for (const b of queue) {
      const keep: number[] = [];
      for (let i = 0; i < b.seqs.length; i++) if (!seqs.has(b.seqs[i]!)) keep.push(i);
      if (keep.length === b.seqs.length) kept.push(b);
      else if (keep.length > 0) kept.push(subBatch(b, keep));
    }
    this.#requeueFront(kept);
    for (const slot of [...this.#slots]) {
      if (!this.#unanswered(slot).some(({ batch, positions }) => positions.some((p) => seqs.has(batch.seqs[p]!)))) continue;
      // Batches it has not started are taken back (no thread is stopped for them); the rest of them runs elsewhere.
      const unstarted: Queued[] = [];
      for (const b of this.#takeBackUnstarted(slot)) {
        const keep: number[] = [];
        for (let i = 0; i < b.seqs.length; i++) if (!seqs.has(b.seqs[i]!)) keep.push(i);
        if (keep.length === b.seqs.length) unstarted.push(b);
        else if (keep.length > 0) unstarted.push(subBatch(b, keep));
      }
      this.#requeueFront(unstarted);
      const unanswered = this.#unanswered(slot);
      if (!unanswered.some(({ batch, positions }) => positions.some((p) => seqs.has(batch.seqs[p]!)))) continue;
      const again: Queued[] = [];
      for (const { batch, positions } of unanswered) {
        batch.program.tasks -= positions.length;
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
      for (const { batch, positions } of this.#unanswered(slot)) batch.program.tasks -= positions.length;
      slot.outstanding.length = 0;
      slot.tasks = 0;
      this.#retire(slot);
    }
    this.#checkIdle();
  }

  #retire(slot: Slot): void {
    slot.retiring = true;
    this.#slots.delete(slot);
    for (const p of this.#programs.values()) if (p.waiting.delete(slot)) this.#settleLoad(p);
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
    for (const p of this.#programs.values()) {
      if (p.state === 'loading') {
        p.state = 'failed';
        p.reject(new ExecutorStartError({ kind: 'setup', name: 'Closed', message: 'the executor closed while the program loaded', stack: '', code: '' }));
      }
    }
    await Promise.all(slots.map((s) => s.worker.terminate()));
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }
}
