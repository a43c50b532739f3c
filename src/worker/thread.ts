/**
 * The body of one executor thread: loads the stage chain, runs setup() once, then computes the
 * tasks it is sent, one at a time, in order. Results flow back in batches.
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { deserialize, serialize } from 'node:v8';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import type { RemoteErrorMessage } from '../protocol/messages.js';
import { STATE_RUNNING, STATE_SEQ, type BatchMessage, type ThreadInit, type ThreadMessage } from './thread-protocol.js';

process.setSourceMapsEnabled(true);

type StageFn = (input: unknown, ctx: unknown) => unknown;

const init = workerData as ThreadInit;
const port = parentPort;
if (port === null) throw new Error('taskfarm thread started outside a worker thread');
const state = new Int32Array(init.state);

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

const stages: StageFn[] = [];
const contexts: object[] = [];
const inline: boolean[] = [];

async function load(): Promise<void> {
  for (let i = 0; i < init.chain.length; i++) {
    const entry = init.chain[i]!;
    const mod = (await import(pathToFileURL(entry.path).href)) as { default?: unknown; setup?: unknown };
    const ctx = Object.freeze({ workerId: init.workerId, hostname: init.hostname, threadId, stageIndex: i });
    stages.push(asStage(mod.default, i));
    contexts.push(ctx);
    inline.push(entry.inline === true);
    if (typeof mod.setup === 'function') await (mod.setup as (ctx: unknown) => unknown)(ctx);
  }
}

const queue: BatchMessage[] = [];
let running = false;

let outSeqs: number[] = [];
let outValues: (Uint8Array | null)[] = [];
let outErrors: (RemoteErrorMessage | null)[] = [];
let outDurations: number[] = [];
let lastFlush = 0;

function flush(batchDone: boolean): void {
  if (outSeqs.length === 0 && !batchDone) return;
  const msg: ThreadMessage = { type: 'results', seqs: outSeqs, values: outValues, errors: outErrors, durations: outDurations, batchDone };
  outSeqs = [];
  outValues = [];
  outErrors = [];
  outDurations = [];
  port!.postMessage(msg);
  lastFlush = performance.now();
}

function failureOf(err: unknown, stage: number): RemoteErrorMessage {
  if (inline[stage] === true && err instanceof ReferenceError) {
    return errorInfo(err, 'thrown', 'inline stages must be self-contained: they run on the worker without their enclosing scope');
  }
  return errorInfo(err, 'thrown');
}

async function runOne(seq: number, payload: Uint8Array): Promise<void> {
  const started = performance.now();
  Atomics.store(state, STATE_SEQ, seq | 0);
  Atomics.store(state, STATE_RUNNING, 1);
  let value: Uint8Array | null = null;
  let error: RemoteErrorMessage | null = null;
  let v: unknown;
  try {
    v = deserialize(payload);
  } catch (err) {
    error = errorInfo(err, 'bad-input');
  }
  if (error === null) {
    let stage = 0;
    try {
      for (; stage < stages.length; stage++) {
        v = stages[stage]!(v, contexts[stage]);
        if (isThenable(v)) v = await v;
      }
    } catch (err) {
      error = failureOf(err, stage);
    }
  }
  if (error === null) {
    try {
      value = serialize(v);
    } catch (err) {
      error = errorInfo(err, 'unserializable', 'the output of the last stage must be structured-clonable data');
    }
  }
  Atomics.store(state, STATE_RUNNING, 0);
  outSeqs.push(seq);
  outValues.push(value);
  outErrors.push(error);
  outDurations.push(performance.now() - started);
}

async function drain(): Promise<void> {
  running = true;
  while (queue.length > 0) {
    const batch = queue.shift()!;
    for (let i = 0; i < batch.seqs.length; i++) {
      await runOne(batch.seqs[i]!, batch.payloads[i]!);
      if (performance.now() - lastFlush >= init.flushMs) flush(false);
    }
    flush(true);
  }
  running = false;
}

port.on('message', (msg: BatchMessage) => {
  queue.push(msg);
  if (!running) void drain();
});

load().then(
  () => port.postMessage({ type: 'ready' } satisfies ThreadMessage),
  (err: unknown) => port.postMessage({ type: 'failed', error: errorInfo(err, 'setup') } satisfies ThreadMessage),
);
