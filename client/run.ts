/**
 * `taskfarm run <stage>...`: JSON lines in, JSON lines out in input order.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { TaskFarm, type TaskFarmOptions } from '../src/index.js';

export const RUN_HELP = `Usage: taskfarm run <stage>... [options]

Computes the pipeline of <stage>s (module paths, .ts or .js, whose default export is the stage
function) on every input, on worker daemons, and writes the outputs in input order.

Input and output are JSON lines: one JSON value per line.

Options:
  --inputs FILE|-        where inputs come from (default -: standard input)
  --output FILE|-        where outputs go (default -: standard output)
  --peers H:P,H:P,...    worker daemons to use (default: find the farm's daemons on the LAN
                         over mDNS; with none, compute on local threads)
  --farm NAME            farm whose daemons to use (mDNS; default $TASKFARM_FARM or "default")
  --interface ADDR       multi-homed machines: use mDNS on this interface address only
  --local                compute on threads of this process only
  --threads N            local threads (default: one per core)
  --retries N            retries of a task whose stage threw (default 0)
  --max-attempts N       thread crashes before a task fails the job (default 3)
  --worker-wait-ms MS    wait for a worker before falling back to local threads (default 3000)
  --no-local-fallback    fail instead of computing locally when no worker is available
  --quiet                no progress bar and no summary
  -h, --help             show this help

A progress bar is drawn on stderr when it is a terminal; a summary is printed on stderr at the end.
Exit status: 0 on success, 1 when the run failed, 2 on bad usage or input.
`;

class UsageError extends Error {}

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} expects a non-negative integer, got "${v}"`);
  return n;
}

/** JSON has no Map, Set, bigint or typed arrays: map them to the nearest JSON. */
function toJson(value: unknown): string {
  return (
    JSON.stringify(value, (_k, v: unknown) => {
      if (typeof v === 'bigint') return v.toString();
      if (v instanceof Map) return Object.fromEntries(v);
      if (v instanceof Set) return [...v];
      if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<number>);
      return v;
    }) ?? 'null'
  );
}

async function readInputs(source: string): Promise<unknown[]> {
  const input = source === '-' ? process.stdin : createReadStream(source);
  const lines = createInterface({ input, crlfDelay: Infinity });
  const out: unknown[] = [];
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim().length === 0) continue;
    try {
      out.push(JSON.parse(line));
    } catch (err) {
      throw new UsageError(`${source === '-' ? 'stdin' : source}:${n}: not valid JSON (${(err as Error).message})`);
    }
  }
  return out;
}

function bar(done: number, total: number, workers: number, rate: number): string {
  const width = 30;
  const filled = total === 0 ? width : Math.round((done / total) * width);
  return `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${workers} worker(s) ${Math.round(rate)}/s `;
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
        local: { type: 'boolean' },
        threads: { type: 'string' },
        retries: { type: 'string' },
        'max-attempts': { type: 'string' },
        'worker-wait-ms': { type: 'string' },
        'no-local-fallback': { type: 'boolean' },
        'local-fallback': { type: 'boolean' },
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
  try {
    if (positionals.length === 0) throw new UsageError('give at least one stage (a module path)');
    if (values.peers !== undefined && values.local === true) throw new UsageError('give either --peers or --local, not both');
    const options: { -readonly [K in keyof TaskFarmOptions]: TaskFarmOptions[K] } = {};
    if (values.peers !== undefined) {
      options.peers = values.peers
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
    } else if (values.local === true) options.discovery = 'local';
    if (values.farm !== undefined) options.farm = values.farm;
    if (values.interface !== undefined) options.interface = values.interface;
    const threads = int('threads', values.threads);
    if (threads !== undefined) options.threads = threads;
    const retries = int('retries', values.retries);
    if (retries !== undefined) options.retries = retries;
    const maxAttempts = int('max-attempts', values['max-attempts']);
    if (maxAttempts !== undefined) options.maxAttempts = maxAttempts;
    const wait = int('worker-wait-ms', values['worker-wait-ms']);
    if (wait !== undefined) options.workerWaitMs = wait;
    if (values['no-local-fallback'] === true && values['local-fallback'] === true) throw new UsageError('give either --local-fallback or --no-local-fallback');
    if (values['no-local-fallback'] === true) options.localFallback = false;
    if (values['local-fallback'] === true) options.localFallback = true;

    const inputs = await readInputs(values.inputs ?? '-');
    const farm = new TaskFarm(positionals, inputs, options);
    const quiet = values.quiet === true;
    const tty = process.stderr.isTTY && !quiet;
    const started = Date.now();
    if (tty) {
      farm.on('progress', (p) => process.stderr.write(bar(p.done, inputs.length, p.workers, p.done / Math.max(0.001, (Date.now() - started) / 1000))));
    }
    if (!quiet)
      farm.on('lost', (e) =>
        process.stderr.write(
          `${tty ? '\n' : ''}taskfarm: ${e.draining ? `worker ${e.worker.id} left (draining)` : `lost worker ${e.worker.id} (${e.reason})`}; ${e.requeued} task(s) requeued\n`,
        ),
      );

    const sink = values.output === undefined || values.output === '-' ? process.stdout : createWriteStream(values.output);
    // Outputs arrive in any order; write them in input order through a reorder buffer.
    const waiting = new Map<number, unknown>();
    let next = 0;
    let chunk = '';
    for await (const { index, output } of farm.results()) {
      waiting.set(index, output);
      while (waiting.has(next)) {
        chunk += toJson(waiting.get(next)) + '\n';
        waiting.delete(next);
        next++;
      }
      if (chunk.length > 65536) {
        const flushed = sink.write(chunk);
        chunk = '';
        if (!flushed) await new Promise<void>((r) => sink.once('drain', () => r()));
      }
    }
    if (chunk.length > 0) sink.write(chunk);
    if (sink !== process.stdout) await new Promise<void>((r) => sink.end(() => r()));
    if (!quiet) {
      const s = farm.stats();
      const secs = (Date.now() - started) / 1000;
      if (tty) process.stderr.write('\n');
      const per = s.workers.map((w) => `${w.id}@${w.address} ${w.completed}${w.lost !== undefined ? ' (lost)' : ''}`).join(', ');
      process.stderr.write(
        `taskfarm: ${s.completed} task(s) in ${secs.toFixed(2)} s (${Math.round(s.completed / Math.max(secs, 0.001))}/s), ` +
          `${s.requeued} requeued; per worker: ${per || 'none'}\n`,
      );
    }
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`taskfarm run: ${err.message}\n`);
      return 2;
    }
    const e = err as Error & { code?: string; remoteStack?: string };
    process.stderr.write(`taskfarm run: ${e.name}${e.code !== undefined ? ` [${e.code}]` : ''}: ${e.message}\n`);
    if (e.remoteStack) process.stderr.write(`remote stack:\n${e.remoteStack}\n`);
    return e.code === 'FARM_ERR_INVALID_OPTION' || e.code === 'FARM_ERR_INVALID_STAGE' || e.code === 'FARM_ERR_UNSENDABLE_INPUT' ? 2 : 1;
  }
}
