/**
 * The body of one executor thread: loads the stage chain, runs setup() once, then computes the
 * tasks it is sent, one at a time, in order. Results flow back in batches.
 */
import { parentPort, receiveMessageOnPort, threadId, workerData } from 'node:worker_threads';
import { deserialize, serialize } from 'node:v8';
import { readFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { leaveBatchPolicy } from './sched.js';
import { decodeInputs, encodeOutcomes } from '../protocol/batch.js';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import type { RemoteErrorMessage } from '../protocol/index.js';
import {
  GATE_BUSY,
  GATE_CUT,
  GATE_HELD,
  GATE_OPEN,
  STATE_BATCH,
  STATE_GATE,
  STATE_RUNNING,
  STATE_SEQ,
  STATE_SKIP_FROM,
  STATE_SKIP_TO,
  STATE_STARTED,
  STATE_VOID,
  type MainMessage,
  type ThreadInit,
  type ThreadMessage,
  type ThreadProgram,
} from './thread-protocol.js';

process.setSourceMapsEnabled(true);

type StageFn = (input: unknown, ctx: unknown) => unknown;

const init = workerData as ThreadInit;
const port = parentPort;
if (port === null) throw new Error('taskfarm thread started outside a worker thread');
// Before any task: back to the normal scheduling policy if this thread inherited SCHED_BATCH from the
// daemon's thread (see sched.ts); then, on Linux, a nice value for this thread alone.
const schedError = init.leaveBatch ? leaveBatchPolicy() : undefined;
let niceError: string | undefined;
if (init.nice > 0) {
  try {
    setPriority(init.nice);
  } catch (err) {
    niceError = (err as Error).message;
  }
}
const state = new Int32Array(init.state);
const startedAt = new Float64Array(init.state);

function errorInfo(err: unknown, kind: string, hint?: string): RemoteErrorMessage {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return {
      kind,
      name: err.name,
      message: hint === undefined ? err.message : `${err.message} (${hint})`,
      stack: err.stack ?? '',
      code: typeof code === 'string' ? code : '',
    };
  }
  let message: string;
  try {
    message = `a non-Error value was thrown: ${typeof err === 'string' ? err : JSON.stringify(err)}`;
  } catch {
    message = `a non-Error value was thrown: ${String(err)}`;
  }
  return { kind, name: 'Error', message, stack: '', code: '' };
}

function isClass(fn: unknown): boolean {
  return typeof fn === 'function' && /^class[\s{]/.test(Function.prototype.toString.call(fn));
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

interface ProcessLike {
  setData(task: unknown): void;
  run(): unknown;
  getData(): unknown;
}

function asStage(exported: unknown, index: number): StageFn {
  if (isClass(exported)) {
    const Ctor = exported as new () => ProcessLike;
    const proto = Ctor.prototype as Partial<ProcessLike>;
    for (const m of ['setData', 'run', 'getData'] as const) {
      if (typeof proto[m] !== 'function') {
        throw new TypeError(`Stage ${index}: a class stage must have methods setData(task), run() and getData(); \`${m}\` is missing`);
      }
    }
    return (input) => {
      const obj = new Ctor();
      obj.setData(input);
      const ran = obj.run();
      return isThenable(ran) ? Promise.resolve(ran).then(() => obj.getData()) : obj.getData();
    };
  }
  if (typeof exported !== 'function') {
    throw new TypeError(
      `Stage ${index}: the module's default export must be a function (input, ctx) => output or a class with setData/run/getData, got ${
        exported === null ? 'null' : typeof exported
      }`,
    );
  }
  return exported as StageFn;
}

interface LoadedProgram {
  readonly stages: StageFn[];
  readonly contexts: object[];
  readonly inline: boolean[];
}

const programs = new Map<number, LoadedProgram>();

async function load(program: ThreadProgram): Promise<void> {
  const shared: Record<string, unknown> = {};
  for (const s of program.shared) {
    shared[s.name] = s.kind === 'bytes' ? new Uint8Array(s.data!) : deserialize(readFileSync(s.path!));
  }
  Object.freeze(shared);
  const loaded: LoadedProgram = { stages: [], contexts: [], inline: [] };
  for (let i = 0; i < program.chain.length; i++) {
    const entry = program.chain[i]!;
    const mod = (await import(pathToFileURL(entry.path).href)) as { default?: unknown; setup?: unknown };
    const ctx = Object.freeze({ workerId: init.workerId, hostname: init.hostname, threadId, stageIndex: i, shared });
    loaded.stages.push(asStage(mod.default, i));
    loaded.contexts.push(ctx);
    loaded.inline.push(entry.inline === true);
    if (typeof mod.setup === 'function') await (mod.setup as (ctx: unknown) => unknown)(ctx);
  }
  programs.set(program.id, loaded);
}

type BatchMessage = Extract<MainMessage, { type: 'batch' }>;

const queue: MainMessage[] = [];
let running = false;

// Outcomes of the batch that runs, not yet sent.
let outSeqs: number[] = [];
let outFlags: number[] = [];
let outValues: unknown[] = [];
let outDurations: number[] = [];
let lastFlush = 0;

const TOO_LARGE = (bytes: number, max: number): RemoteErrorMessage => ({
  kind: 'unserializable',
  name: 'OutputTooLarge',
  message: `the output is ${bytes} bytes, more than the largest message between worker and client (${max} bytes)`,
  stack: '',
  code: '',
});

function post(seqs: number[], durations: number[], bytes: Uint8Array, batchDone: boolean): void {
  const msg: ThreadMessage = {
    type: 'results',
    seqs: Uint32Array.from(seqs),
    outcomes: bytes,
    durations: Float32Array.from(durations),
    batchDone,
  };
  // Transferring costs more than copying for small messages (measured: +5–8 µs per message).
  if (bytes.byteLength < 64 * 1024) port!.postMessage(msg);
  else port!.postMessage(msg, [msg.seqs.buffer as ArrayBuffer, msg.durations.buffer as ArrayBuffer, bytes.buffer as ArrayBuffer]);
}

/**
 * Sends the outcomes gathered so far. The fast path serializes them all at once; when that fails
 * (an output that cannot be cloned) or is too large for one message, each output is serialized on
 * its own, the bad ones become errors, and the rest go out in messages below the limit.
 */
function flush(batchDone: boolean, maxBytes: number): void {
  lastFlush = performance.now();
  if (outSeqs.length === 0 && !batchDone) return;
  const seqs = outSeqs;
  const flags = outFlags;
  const values = outValues;
  const durations = outDurations;
  outSeqs = [];
  outFlags = [];
  outValues = [];
  outDurations = [];
  let bytes: Uint8Array | undefined;
  try {
    bytes = encodeOutcomes(Uint8Array.from(flags), values);
  } catch {
    bytes = undefined;
  }
  if (bytes !== undefined && bytes.byteLength <= maxBytes) {
    post(seqs, durations, bytes, batchDone);
    return;
  }
  // Slow path: one output at a time.
  let chunk = { seqs: [] as number[], flags: [] as number[], values: [] as unknown[], durations: [] as number[], size: 0 };
  const send = (done: boolean): void => {
    post(chunk.seqs, chunk.durations, encodeOutcomes(Uint8Array.from(chunk.flags), chunk.values), done);
    chunk = { seqs: [], flags: [], values: [], durations: [], size: 0 };
  };
  for (let i = 0; i < seqs.length; i++) {
    let flag = flags[i]!;
    let value = values[i];
    let size = 256;
    if (flag === 0) {
      try {
        size = serialize(value).byteLength + 16;
        if (size > maxBytes) {
          flag = 1;
          value = TOO_LARGE(size, maxBytes);
          size = 256;
        }
      } catch (err) {
        flag = 1;
        value = errorInfo(err, 'unserializable', 'the output of the last stage must be structured-clonable data');
        size = 1024;
      }
    }
    if (chunk.seqs.length > 0 && chunk.size + size > maxBytes) send(false);
    chunk.seqs.push(seqs[i]!);
    chunk.flags.push(flag);
    chunk.values.push(value);
    chunk.durations.push(durations[i]!);
    chunk.size += size;
  }
  send(batchDone);
}

function failureOf(err: unknown, program: LoadedProgram, stage: number): RemoteErrorMessage {
  if (program.inline[stage] === true && err instanceof ReferenceError) {
    return errorInfo(err, 'thrown', 'inline stages must be self-contained: they run on the worker without their enclosing scope');
  }
  return errorInfo(err, 'thrown');
}

function record(seq: number, ok: boolean, value: unknown, started: number): void {
  Atomics.store(state, STATE_RUNNING, 0);
  outSeqs.push(seq);
  outFlags.push(ok ? 0 : 1);
  outValues.push(value);
  outDurations.push(performance.now() - started);
}

/** True when the executor took back this batch before any of its tasks started (see STATE_SKIP_FROM). */
function isSkipped(no: number): boolean {
  return no >= Atomics.load(state, STATE_SKIP_FROM) && no <= Atomics.load(state, STATE_SKIP_TO);
}

/** True when the executor took back this batch (its tasks run elsewhere). */
function isVoid(batch: BatchMessage): boolean {
  return batch.no <= Atomics.load(state, STATE_VOID) || isSkipped(batch.no);
}

/**
 * Passes the gate before a task of batch `no` starts: `cut` when the executor has cut this thread's
 * work (the task and everything queued behind it were taken back), `skip` when it took back this
 * batch before it started. See STATE_GATE.
 */
function enter(seq: number, no: number): 'run' | 'cut' | 'skip' {
  for (;;) {
    const gate = Atomics.compareExchange(state, STATE_GATE, GATE_OPEN, GATE_BUSY);
    if (gate === GATE_OPEN) break;
    // Held: the executor is taking back unstarted batches, for a few instructions.
    if (gate !== GATE_HELD) return 'cut';
  }
  if (isSkipped(no)) {
    Atomics.store(state, STATE_GATE, GATE_OPEN);
    return 'skip';
  }
  Atomics.store(state, STATE_SEQ, seq | 0);
  Atomics.store(state, STATE_BATCH, no);
  startedAt[STATE_STARTED] = Date.now();
  Atomics.store(state, STATE_RUNNING, 1);
  Atomics.store(state, STATE_GATE, GATE_OPEN);
  return 'run';
}

/** After a cut: everything queued was taken back; the gate opens for batches sent from now on. */
function acceptCut(): void {
  for (let i = queue.length - 1; i >= 0; i--) {
    const m = queue[i]!;
    if (m.type === 'batch' && isVoid(m)) queue.splice(i, 1);
  }
  Atomics.store(state, STATE_GATE, GATE_OPEN);
}

/** Runs one batch; synchronous stages run without a single await. */
async function runBatch(batch: BatchMessage): Promise<void> {
  const n = batch.seqs.length;
  const max = batch.maxResultBytes;
  if (isVoid(batch)) return;
  const program = programs.get(batch.program);
  let inputs: unknown[];
  try {
    if (program === undefined) throw new Error(`program ${batch.program} is not loaded on this thread`);
    inputs = decodeInputs(batch.inputs, n);
  } catch (err) {
    // The batch's failures are its results: it passes the gate like a batch whose first task starts,
    // so that the executor does not also take it back and send it elsewhere (results twice).
    const gate = enter(batch.seqs[0] ?? 0, batch.no);
    if (gate === 'skip') return;
    if (gate === 'cut') {
      acceptCut();
      return;
    }
    const e = errorInfo(err, program === undefined ? 'setup' : 'bad-input');
    for (let i = 0; i < n; i++) record(batch.seqs[i]!, false, e, performance.now());
    flush(true, max);
    if (Atomics.load(state, STATE_GATE) === GATE_CUT) acceptCut();
    return;
  }
  const { stages, contexts } = program;
  const last = stages.length;
  // Results are held at most flushMs from the batch's start (not from the previous batch's flush,
  // which would send its first result alone), and the last one goes with the batch's end.
  lastFlush = performance.now();
  for (let i = 0; i < n; i++) {
    const seq = batch.seqs[i]!;
    const gate = enter(seq, batch.no);
    // Taken back before it started (only ever a batch none of whose tasks ran): no result for it.
    if (gate === 'skip') return;
    if (gate === 'cut') {
      // Cut: the rest of this batch (and the batches queued behind it) run elsewhere. The executor
      // still tracks this batch only if a task of it ran (the one it saw running at the cut).
      if (i > 0) flush(true, max);
      acceptCut();
      return;
    }
    const started = performance.now();
    let v = inputs[i];
    inputs[i] = undefined;
    let stage = 0;
    try {
      for (; stage < last; stage++) {
        v = stages[stage]!(v, contexts[stage]);
        if (isThenable(v)) v = await v;
      }
      record(seq, true, v, started);
    } catch (err) {
      record(seq, false, failureOf(err, program, stage), started);
    }
    if (i + 1 < n && performance.now() - lastFlush >= init.flushMs) flush(false, max);
  }
  flush(true, max);
  if (Atomics.load(state, STATE_GATE) === GATE_CUT) acceptCut();
}

async function handle(msg: MainMessage): Promise<void> {
  switch (msg.type) {
    case 'batch':
      return runBatch(msg);
    case 'load':
      try {
        await load(msg.program);
        port!.postMessage({ type: 'loaded', program: msg.program.id } satisfies ThreadMessage);
      } catch (err) {
        port!.postMessage({ type: 'load-failed', program: msg.program.id, error: errorInfo(err, 'setup') } satisfies ThreadMessage);
      }
      return;
    case 'unload':
      programs.delete(msg.program);
      return;
  }
}

async function drain(): Promise<void> {
  running = true;
  for (;;) {
    while (queue.length > 0) await handle(queue.shift()!);
    // The batch the main thread posted while this one ran (a thread holds its next one), taken now
    // rather than after a turn of the event loop: the thread starts it without a gap.
    const next = receiveMessageOnPort(port!);
    if (next === undefined) break;
    queue.push(next.message as MainMessage);
  }
  running = false;
}

port.on('message', (msg: MainMessage) => {
  queue.push(msg);
  if (!running) void drain();
});

(async () => {
  for (const program of init.programs) await load(program);
})().then(
  () =>
    port.postMessage({
      type: 'ready',
      ...(niceError === undefined ? {} : { niceError }),
      ...(schedError === undefined ? {} : { schedError }),
    } satisfies ThreadMessage),
  (err: unknown) => port.postMessage({ type: 'failed', error: errorInfo(err, 'setup') } satisfies ThreadMessage),
);
