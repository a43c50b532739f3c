/**
 * `taskfarm run <stage>...`: JSON lines in, JSON lines out in input order. Argument parsing, the
 * input stream, the output writer, progress, signals and exit codes; the farm is TaskFarm's.
 */
import { createReadStream, createWriteStream, existsSync, statSync, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { FarmAbortError, type TaskError, TaskFarm, sharedFile, type TaskFarmOptions } from '../src/index.js';

export const RUN_HELP = `Usage: taskfarm run <stage>... [options]

Computes the pipeline of <stage>s (module paths, .ts or .js, whose default export is the stage
function) on every input, on worker daemons, and writes the outputs in input order.

Input and output are JSON lines: one JSON value per line. Inputs are read as they come (a
pipe, a terminal, a file): computing starts with the first line.

Options:
  --inputs FILE|-         where inputs come from (default -: standard input)
  --output FILE|-         where outputs go (default -: standard output)
  --peers H:P,H:P,...     worker daemons to use (default: find the farm's daemons on the LAN
                          over mDNS); with --peers the run never computes locally unless
                          --local-fallback is given
  --farm NAME             farm whose daemons to use (mDNS; default $TASKFARM_FARM or "default")
  --interface ADDR        multi-homed machines: use mDNS on this interface address only
  --key-file FILE         the farm key (default: $TASKFARM_KEY, $TASKFARM_KEY_FILE, or
                          ~/.config/taskfarm/farm.key)
  --insecure              use only daemons run with --insecure (no key, no TLS)
  --local                 compute on threads of this process only
  --threads N             local threads (default: one per core)
  --local-fallback        with no usable worker, compute on local threads (default without --peers)
  --no-local-fallback     with no usable worker, fail (default with --peers)
  --worker-wait-ms MS     wait for a worker before falling back or failing (default 3000)
  --retries N             retries of a task whose stage threw or timed out (default 0)
  --max-attempts N        thread crashes before a task fails (default 3)
  --task-timeout-ms MS    stop a task running longer than this on its worker (default: no limit)
  --no-speculation        no backup copies of straggling tasks
  --shared NAME=FILE      the file's bytes as ctx.shared[NAME] in every task, shipped once per
                          worker (repeatable)
  --keep-going            a failed input does not stop the run: its line in the output is
                          {"index": i, "error": {...}}; exit 1 if any failed
  --failures FILE         with --keep-going (implied), failure records go to FILE instead, and
                          the output holds the successful inputs' lines only (in input order)
  --quiet                 no progress bar and no summary (warnings and errors still show)
  -h, --help              show this help

A progress bar (done, rate, ETA) is drawn on stderr when it is a terminal; a summary is printed on
stderr at the end. When the run computes on local threads instead of workers, stderr says why.
On a failure (without --keep-going) or Ctrl-C, every output already known in input order is
written, and stderr says how many lines, up to which input, and which input failed. A second
Ctrl-C exits at once.
Exit status: 0 on success, 1 when the run failed (or, with --keep-going, any input failed),
2 on bad usage or input, 130 when interrupted (143 on SIGTERM).
`;

class UsageError extends Error {}

/** Parses an integer flag in [min, max], naming the flag when it is not one. */
function int(name: string, v: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`;
    throw new UsageError(`--${name} must be ${range}, got "${v}"`);
  }
  return n;
}

/** Library option names as the flags that set them, for the library's own validation messages. */
const FLAG_OF: Record<string, string> = {
  peers: '--peers',
  farm: '--farm',
  interface: '--interface',
  keyFile: '--key-file',
  key: '--key-file',
  insecure: '--insecure',
  threads: '--threads',
  retries: '--retries',
  maxAttempts: '--max-attempts',
  workerWaitMs: '--worker-wait-ms',
  taskTimeoutMs: '--task-timeout-ms',
  shared: '--shared',
};

/** An InvalidOptionError of the library, worded with the flag the user typed. */
function asFlagMessage(message: string): string {
  return message.replace(/`(\w+)`/g, (all, name: string) => FLAG_OF[name] ?? all);
}

/** JSON has no Map, Set, bigint or typed arrays: map them to the nearest JSON. */
function toJson(value: unknown): string {
  return (
    JSON.stringify(value, (_k, v: unknown) => {
      if (typeof v === 'bigint') return v.toString();
      if (v instanceof Map) return Object.fromEntries(v as Map<PropertyKey, unknown>);
      if (v instanceof Set) return [...(v as Set<unknown>)];
      if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<number>);
      return v;
    }) ?? 'null'
  );
}

/** The failure record of one input, as --keep-going writes it. */
function failureRecord(index: number, e: TaskError): string {
  return toJson({
    index,
    error: {
      name: e.name,
      code: e.code,
      message: e.message,
      workerId: e.workerId,
      attempts: e.attempts,
      remote: { name: e.remote.name, message: e.remote.message, stack: e.remoteStack },
    },
  });
}

/** Where a bad input line was found (the generator sets it before it throws). */
interface InputState {
  bad: UsageError | undefined;
  lines: number;
}

/** Inputs as they arrive, one JSON value per non-blank line. */
async function* readInputs(source: string, state: InputState): AsyncGenerator<unknown> {
  const input = source === '-' ? process.stdin : createReadStream(source);
  const lines = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  try {
    for await (const line of lines) {
      n++;
      if (line.trim().length === 0) continue;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (err) {
        state.bad = new UsageError(`${source === '-' ? 'stdin' : source}:${n}: not valid JSON (${(err as Error).message})`);
        throw state.bad;
      }
      state.lines++;
      yield value;
    }
  } finally {
    lines.close();
    if (source !== '-') input.destroy();
  }
}

/** Non-blank lines of a file (the total for the progress bar), read in chunks. */
async function countLines(path: string): Promise<number> {
  let n = 0;
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  for await (const line of lines) if (line.trim().length > 0) n++;
  return n;
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${Math.ceil(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.ceil(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * The progress line of `taskfarm run`: done/total, failures, workers, the rate since the first
 * worker joined (the wait for workers does not count), and the ETA at that rate. Pure: the caller
 * passes the clock.
 */
export class ProgressLine {
  readonly #total: number | undefined;
  #since: number | undefined;
  #doneAtStart = 0;
  #lastDone = 0;

  constructor(total: number | undefined) {
    this.#total = total;
  }

  /** A worker joined at `now` (ms): the rate counts from the first one. */
  recruited(now: number): void {
    if (this.#since !== undefined) return;
    this.#since = now;
    this.#doneAtStart = this.#lastDone;
  }

  /** The line for a progress report at `now` (ms), starting with a carriage return. */
  line(p: { done: number; failed: number; workers: number }, now: number): string {
    this.#lastDone = p.done;
    const secs = this.#since === undefined ? 0 : (now - this.#since) / 1000;
    const rate = this.#since === undefined || secs < 0.2 ? undefined : (p.done - this.#doneAtStart) / secs;
    return bar(p.done, this.#total, p.failed, p.workers, rate);
  }
}

function bar(done: number, total: number | undefined, failed: number, workers: number, rate: number | undefined): string {
  const width = 30;
  const known = total !== undefined && total > 0;
  const filled = known ? Math.min(width, Math.round((done / total) * width)) : 0;
  const shown = known ? `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}` : `${done} done`;
  const speed = rate === undefined ? 'waiting for workers' : `${Math.round(rate)}/s`;
  const eta = known && rate !== undefined && rate > 0 && done < total ? ` ETA ${duration((total - done) / rate)}` : '';
  return `\r${shown}${failed > 0 ? ` (${failed} failed)` : ''} ${workers} worker(s) ${speed}${eta}\x1b[K`;
}

/** Parsed flags. */
type Values = Record<string, string | boolean | string[] | undefined>;

function optionsFrom(values: Values): TaskFarmOptions {
  const str = (k: string): string | undefined => values[k] as string | undefined;
  const on = (k: string): boolean => values[k] === true;
  if (str('peers') !== undefined && on('local')) throw new UsageError('give either --peers or --local, not both');
  if (on('no-local-fallback') && on('local-fallback')) throw new UsageError('give either --local-fallback or --no-local-fallback, not both');
  if (on('insecure') && str('key-file') !== undefined) throw new UsageError('give either --key-file or --insecure, not both');
  const o: { -readonly [K in keyof TaskFarmOptions]: TaskFarmOptions[K] } = {};
  const peers = str('peers');
  if (peers !== undefined) {
    o.peers = peers
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
    if (o.peers.length === 0) throw new UsageError('--peers must list at least one host:port');
  } else if (on('local')) o.discovery = 'local';
  if (str('farm') !== undefined) o.farm = str('farm')!;
  if (str('interface') !== undefined) o.interface = str('interface')!;
  const keyFile = str('key-file');
  if (keyFile !== undefined) {
    if (!existsSync(keyFile)) throw new UsageError(`--key-file: no such file: ${keyFile}`);
    o.keyFile = keyFile;
  }
  if (on('insecure')) o.insecure = true;
  const threads = int('threads', str('threads'), 1, 1024);
  if (threads !== undefined) o.threads = threads;
  const retries = int('retries', str('retries'), 0);
  if (retries !== undefined) o.retries = retries;
  const maxAttempts = int('max-attempts', str('max-attempts'), 1);
  if (maxAttempts !== undefined) o.maxAttempts = maxAttempts;
  const wait = int('worker-wait-ms', str('worker-wait-ms'), 0);
  if (wait !== undefined) o.workerWaitMs = wait;
  const timeout = int('task-timeout-ms', str('task-timeout-ms'), 0, 2 ** 31 - 1);
  if (timeout !== undefined) o.taskTimeoutMs = timeout;
  if (on('no-local-fallback')) o.localFallback = false;
  if (on('local-fallback')) o.localFallback = true;
  if (on('no-speculation')) o.speculation = false;
  const shared: Record<string, unknown> = {};
  for (const spec of (values['shared'] as string[] | undefined) ?? []) {
    const eq = spec.indexOf('=');
    const name = eq > 0 ? spec.slice(0, eq) : '';
    const file = eq > 0 ? spec.slice(eq + 1) : '';
    if (!/^[\w.-]+$/.test(name) || file.length === 0) throw new UsageError(`--shared must look like NAME=FILE, got "${spec}"`);
    if (name in shared) throw new UsageError(`--shared: the name "${name}" is given twice`);
    if (!existsSync(file) || !statSync(file).isFile()) throw new UsageError(`--shared ${name}=${file}: no such file`);
    shared[name] = sharedFile(file);
  }
  if (Object.keys(shared).length > 0) o.shared = shared;
  if (on('keep-going') || str('failures') !== undefined) o.errors = 'collect';
  return o;
}

/** Writes lines in big chunks (at most 100 ms late, so a slow run shows its outputs), honouring backpressure. */
class LineWriter {
  readonly #sink: NodeJS.WritableStream;
  #chunk = '';
  #timer: NodeJS.Timeout | undefined;
  lines = 0;

  readonly #beforeWrite: () => void;

  /** `beforeWrite` runs before each write (e.g. to clear a progress bar on the same terminal). */
  constructor(sink: NodeJS.WritableStream, beforeWrite: () => void = () => {}) {
    this.#sink = sink;
    this.#beforeWrite = beforeWrite;
  }

  async line(text: string): Promise<void> {
    this.#chunk += text + '\n';
    this.lines++;
    if (this.#chunk.length > 65536) await this.flush();
    else this.#timer ??= setTimeout(() => void this.flush(), 100);
  }

  async flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#chunk.length === 0) return;
    this.#beforeWrite();
    const ok = this.#sink.write(this.#chunk);
    this.#chunk = '';
    if (!ok) await new Promise<void>((r) => this.#sink.once('drain', () => r()));
  }

  /** Flushes and, for a file, closes it (resolves once the bytes are written). */
  async end(): Promise<void> {
    await this.flush();
    if (this.#sink !== process.stdout) await new Promise<void>((r) => (this.#sink as WriteStream).end(() => r()));
  }
}

export async function runRun(argv: readonly string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        inputs: { type: 'string' },
        output: { type: 'string' },
        peers: { type: 'string' },
        farm: { type: 'string' },
        interface: { type: 'string' },
        'key-file': { type: 'string' },
        insecure: { type: 'boolean' },
        local: { type: 'boolean' },
        threads: { type: 'string' },
        retries: { type: 'string' },
        'max-attempts': { type: 'string' },
        'worker-wait-ms': { type: 'string' },
        'task-timeout-ms': { type: 'string' },
        'no-local-fallback': { type: 'boolean' },
        'local-fallback': { type: 'boolean' },
        'no-speculation': { type: 'boolean' },
        shared: { type: 'string', multiple: true },
        'keep-going': { type: 'boolean' },
        failures: { type: 'string' },
        quiet: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (err) {
    process.stderr.write(`taskfarm run: ${(err as Error).message}\n\n${RUN_HELP}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    process.stdout.write(RUN_HELP);
    return 0;
  }
  const err = (line: string): void => void process.stderr.write(line);
  const source = values.inputs ?? '-';
  const inputs: InputState = { bad: undefined, lines: 0 };
  const abort = new AbortController();
  let options: TaskFarmOptions;
  let farm: TaskFarm;
  try {
    if (positionals.length === 0) throw new UsageError('give at least one stage (a module path)');
    options = optionsFrom(values);
    if (source !== '-' && (!existsSync(source) || !statSync(source).isFile())) throw new UsageError(`--inputs: no such file: ${source}`);
    farm = new TaskFarm(positionals, readInputs(source, inputs), { ...options, signal: abort.signal });
  } catch (e) {
    // The library's own checks name its options: say which flag set them.
    err(`taskfarm run: ${e instanceof UsageError ? e.message : asFlagMessage((e as Error).message)}\n`);
    return (e as { code?: string }).code === undefined || (e as { code?: string }).code === 'FARM_ERR_INVALID_OPTION' ? 2 : 1;
  }

  const quiet = values.quiet === true;
  const tty = process.stderr.isTTY && !quiet;
  const keepGoing = options.errors === 'collect';
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted !== undefined) {
      err(`\ntaskfarm run: ${signal} again: exiting now\n`);
      process.exit(130);
    }
    interrupted = signal;
    err(`${tty ? '\n' : ''}taskfarm run: ${signal}: stopping; writing the outputs computed so far (again to exit at once)\n`);
    abort.abort(new FarmAbortError(`interrupted by ${signal}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const toStdout = values.output === undefined || values.output === '-';
  // Outputs and the progress bar on one terminal: clear the bar's line before outputs are written.
  const clearBar = tty && toStdout && process.stdout.isTTY ? () => void process.stderr.write('\r\x1b[K') : undefined;
  const out = new LineWriter(toStdout ? process.stdout : createWriteStream(values.output!), clearBar);
  const failuresOut = values.failures === undefined ? undefined : new LineWriter(createWriteStream(values.failures));
  const failed: number[] = [];
  /** Inputs whose line is written (or, with --failures, accounted for): 0 … next-1. */
  let next = 0;
  try {
    let farmErr: unknown;
    try {
      if (source === '-' && process.stdin.isTTY) err('taskfarm run: reading inputs from the terminal: one JSON value per line; Ctrl-D ends them\n');
      const total = source === '-' ? undefined : await countLines(source);
      const progress = new ProgressLine(total);
      farm.on('recruited', () => progress.recruited(Date.now()));
      // Always said, also under --quiet: computing locally instead of on the farm is never silent.
      farm.on('fallback', (e) => err(`${tty ? '\n' : ''}taskfarm run: computing on local threads: ${e.reason}\n`));
      if (tty) {
        farm.on('progress', (p) => err(progress.line(p, Date.now())));
      }
      if (!quiet) {
        farm.on('lost', (e) =>
          err(
            `${tty ? '\n' : ''}taskfarm: ${e.draining ? `worker ${e.worker.id} left (draining)` : `lost worker ${e.worker.id} (${e.reason})`}; ${e.requeued} task(s) requeued\n`,
          ),
        );
      }
      for await (const r of farm.results({ ordered: true })) {
        next = r.index + 1;
        if (r.error === undefined) {
          await out.line(toJson(r.output));
          continue;
        }
        failed.push(r.index);
        if (failuresOut !== undefined) await failuresOut.line(failureRecord(r.index, r.error));
        else await out.line(failureRecord(r.index, r.error));
      }
    } catch (e) {
      farmErr = e;
    }
    await out.end();
    await failuresOut?.end();
    if (tty) err('\n');
    const what = failuresOut === undefined ? `${out.lines} line(s)` : `${out.lines} output line(s) and ${failuresOut.lines} failure record(s)`;
    const upTo = next === 0 ? 'no input' : `inputs 0 to ${next - 1}`;
    if (farmErr === undefined) {
      if (!quiet) {
        const s = farm.stats();
        const secs = s.elapsedMs / 1000;
        const per = s.workers.map((w) => `${w.id}@${w.address} ${w.completed}${w.lost !== undefined ? ' (lost)' : ''}`).join(', ');
        err(
          `taskfarm: ${s.completed + s.failed.length} task(s) in ${secs.toFixed(2)} s (${Math.round((s.completed + s.failed.length) / Math.max(secs, 0.001))}/s)` +
            `${s.failed.length > 0 ? `, ${s.failed.length} failed` : ''}, ${s.requeued} requeued` +
            `${s.speculated > 0 ? `, ${s.speculated} backup cop${s.speculated === 1 ? 'y' : 'ies'} of stragglers` : ''}; per worker: ${per || 'none'}\n`,
        );
      }
      if (failed.length > 0) {
        const list = failed.slice(0, 20).join(', ') + (failed.length > 20 ? `, … (${failed.length - 20} more)` : '');
        err(
          `taskfarm run: ${failed.length} input(s) failed: ${list}; ` +
            (failuresOut === undefined ? `their lines in the output are {"index": i, "error": {…}}\n` : `their failure records are in ${values.failures}\n`),
        );
        return 1;
      }
      return 0;
    }
    const e = farmErr as Error & { code?: string; remoteStack?: string; index?: number };
    if (interrupted !== undefined && e instanceof FarmAbortError) {
      err(`taskfarm run: interrupted (${interrupted}): wrote ${what}, for ${upTo}; the run did not finish\n`);
      return interrupted === 'SIGTERM' ? 143 : 130;
    }
    if (inputs.bad !== undefined) {
      err(`taskfarm run: ${inputs.bad.message}\ntaskfarm run: wrote ${what}, for ${upTo}\n`);
      return 2;
    }
    err(`taskfarm run: ${e.name}${e.code !== undefined ? ` [${e.code}]` : ''}: ${e.message}\n`);
    if (e.remoteStack) err(`remote stack:\n${e.remoteStack}\n`);
    const failedAt = typeof e.index === 'number' ? `; input ${e.index} failed` : '';
    if (next > 0 || failedAt !== '')
      err(
        `taskfarm run: wrote ${what}, for ${upTo}${failedAt}${keepGoing ? '' : failedAt === '' ? '' : ' (--keep-going computes the rest and records failures)'}\n`,
      );
    return e.code === 'FARM_ERR_INVALID_OPTION' || e.code === 'FARM_ERR_INVALID_STAGE' || e.code === 'FARM_ERR_UNSENDABLE_INPUT' ? 2 : 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // A terminal or a pipe that is still open must not keep the process alive after the run.
    if (source === '-') process.stdin.destroy();
  }
}
