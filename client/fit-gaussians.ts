/**
 * The fitting example: `node dist/client/fit-gaussians.js [--threads N | --peers LIST | --daemons N
 * | --in-process] [--peaks 3] [--points 2000] [--noise 0.05] [--seed 1] [--max-evaluations 30000]
 * [--no-polish]`. Makes a noisy spectrum of Gaussian peaks, fits it (DE, then BFGS) on local
 * threads, on a farm of worker daemons, or in this process, and prints the fitted peaks beside the
 * true ones and what each worker did.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FarmAbortError, FarmPool, InvalidOptionError, generateFarmKey, type FarmPoolOptions, type FarmSummary } from '../src/index.js';
import { fitSpectrum } from './fit/fit.js';
import { makeSpectrum } from './fit/make-spectrum.js';
import { startDaemon, stopDaemon, type LocalDaemon } from './local-daemons.js';

export const FIT_HELP = `Usage: node dist/client/fit-gaussians.js [where] [options]
       npm run example:fit -- [where] [options]

Fits a sum of Gaussian peaks on a flat baseline to a synthetic noisy spectrum: differential
evolution over the whole parameter box, then BFGS from its best point. The objective is the
stage module client/fit/gaussians.ts; it reads the spectrum from ctx.shared.spectrum, which is
shipped once per worker (for both searches). Each generation is one job on a warm pool.

Where (one of):
  (default)             local worker threads (--threads N, default: one per core)
  --peers LIST          a farm: worker daemons as host:port,host:port,… (the farm key from
                        $TASKFARM_KEY, --key-file, or ~/.config/taskfarm/farm.key)
  --daemons N           start N worker daemons on 127.0.0.1 (child processes, 1 thread each, a
                        fresh farm key; loopback only, no mDNS), fit on them, stop them
  --in-process          evaluate in this process, no threads

Options:
  --threads N           local threads (default: one per core)
  --key-file FILE       the farm key, with --peers
  --peaks N             peaks in the spectrum and in the model (default 3)
  --points N            points of the spectrum (default 2000)
  --noise X             noise standard deviation relative to the tallest peak (default 0.05)
  --seed N              seed of the data and of the optimiser (default 1)
  --max-evaluations N   budget of the global search (default 30000)
  --no-polish           skip the BFGS polish
  -h, --help            show this help
`;

function int(name: string, v: string | undefined, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidOptionError(`--${name} expects an integer >= ${min}, got "${v}"`);
  return n;
}

const say = (line: string): void => void process.stdout.write(line + '\n');

function describeFarm(what: string, s: FarmSummary, generations: number): void {
  const perWorker = s.workers.map((w) => `${w.id} ${w.evaluations}`).join(', ');
  say(`  ${what}: ${generations} generations as ${s.jobs} jobs; evaluations per worker: ${perWorker}`);
  say(`  ${what}: objective bundles sent ${s.bundlesSent}, spectrum bytes uploaded ${s.sharedBytesSent}, evaluations requeued ${s.requeued}`);
}

async function main(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      threads: { type: 'string' },
      peers: { type: 'string' },
      daemons: { type: 'string' },
      'in-process': { type: 'boolean' },
      'key-file': { type: 'string' },
      peaks: { type: 'string' },
      points: { type: 'string' },
      noise: { type: 'string' },
      seed: { type: 'string' },
      'max-evaluations': { type: 'string' },
      'no-polish': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(FIT_HELP);
    return 0;
  }
  const where = [values.peers !== undefined && '--peers', values.daemons !== undefined && '--daemons', values['in-process'] === true && '--in-process'].filter(
    (w): w is string => w !== false,
  );
  if (where.length > 1) throw new InvalidOptionError(`Give one of --peers, --daemons, --in-process, not ${where.join(' and ')}`);
  if (values['key-file'] !== undefined && values.peers === undefined) throw new InvalidOptionError('--key-file goes with --peers');
  if (values.threads !== undefined && where.length > 0) throw new InvalidOptionError(`--threads is for local threads, not with ${where[0]}`);
  const peaks = int('peaks', values.peaks, 3, 1);
  const points = int('points', values.points, 2000, 10);
  const seed = int('seed', values.seed, 1, 0);
  const maxEvaluations = int('max-evaluations', values['max-evaluations'], 30_000, 100);
  const noise = values.noise === undefined ? 0.05 : Number(values.noise);
  if (!(noise > 0 && Number.isFinite(noise))) throw new InvalidOptionError(`--noise expects a positive number, got "${values.noise}"`);
  const daemonCount = values.daemons === undefined ? 0 : int('daemons', values.daemons, 0, 1);
  const peers = values.peers
    ?.split(',')
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  if (peers !== undefined && peers.length === 0) throw new InvalidOptionError('--peers expects host:port[,host:port…]');

  const daemons: LocalDaemon[] = [];
  const cacheRoot = daemonCount > 0 ? mkdtempSync(join(tmpdir(), 'taskfarm-fit-')) : undefined;
  const controller = new AbortController();
  const onSignal = (): void => controller.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let pool: FarmPool | undefined;
  try {
    let poolOptions: FarmPoolOptions | undefined;
    if (daemonCount > 0) {
      const key = generateFarmKey();
      say(`starting ${daemonCount} worker daemons on 127.0.0.1 (1 thread each, a farm key of their own)…`);
      const started = await Promise.allSettled(
        Array.from({ length: daemonCount }, (_, i) =>
          startDaemon(['--threads', '1', '--cache-dir', join(cacheRoot!, `w${i}`), '--log-level', 'warn'], 20_000, { ...process.env, TASKFARM_KEY: key }),
        ),
      );
      for (const s of started) if (s.status === 'fulfilled') daemons.push(s.value);
      const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
      poolOptions = { peers: daemons.map((d) => d.address), key, localFallback: false };
    } else if (peers !== undefined) {
      poolOptions = { peers, ...(values['key-file'] === undefined ? {} : { keyFile: values['key-file'] }) };
    } else if (values['in-process'] !== true) {
      poolOptions = { discovery: 'local', ...(values.threads === undefined ? {} : { threads: int('threads', values.threads, 1, 1) }) };
    }
    if (poolOptions !== undefined) {
      pool = new FarmPool(poolOptions);
      pool.on('recruited', (w) =>
        say(`  recruited ${w.local ? `${w.threads} local threads` : `${w.id} at ${w.address} (${w.threads} thread${w.threads === 1 ? '' : 's'})`}`),
      );
      pool.on('lost', (e) => say(`  lost ${e.worker.id}: ${e.reason}; ${e.requeued} evaluations requeued`));
      pool.on('fallback', (e) => say(`  fallback: ${e.reason}`));
    }

    const truth = makeSpectrum({ peaks, points, noise, seed });
    const on =
      daemonCount > 0
        ? `${daemonCount} daemons`
        : peers !== undefined
          ? `the farm at ${peers.join(', ')}`
          : pool !== undefined
            ? 'local threads'
            : 'this process';
    say(`spectrum: ${points} points, ${peaks} peaks, noise ${noise}; fitting ${1 + 3 * peaks} parameters on ${on}`);
    const started = performance.now();
    let shown = Infinity;
    let lastStage = '';
    const fit = await fitSpectrum(truth.spectrum, {
      peaks,
      seed,
      maxEvaluations,
      polish: values['no-polish'] !== true,
      signal: controller.signal,
      ...(pool === undefined ? {} : { pool }),
      onProgress: (stage, e) => {
        // Progress events come on every improvement: print those that matter (10 %), and the budget's tenths.
        if (e.improved && e.fun > shown * 0.9 && stage === lastStage) return;
        shown = e.fun;
        lastStage = stage;
        say(`  ${stage.padEnd(4)} generation ${String(e.generation).padStart(4)}: χ² = ${e.fun.toFixed(2)} after ${e.evaluations} evaluations`);
      },
    });
    say(`  de ended: ${fit.de.message}`);
    if (fit.bfgs !== undefined) say(`  bfgs ended: ${fit.bfgs.message}`);
    const ms = performance.now() - started;
    if (fit.farm !== undefined) {
      describeFarm('de', fit.farm.de, fit.de.generations);
      if (fit.farm.bfgs !== undefined && fit.bfgs !== undefined) describeFarm('bfgs', fit.farm.bfgs, fit.bfgs.generations);
    }
    say(`\nχ² = ${fit.chi2.toFixed(2)}, χ²/dof = ${fit.reducedChi2.toFixed(3)}, ${fit.evaluations} evaluations in ${(ms / 1000).toFixed(1)} s`);
    say(`baseline  fitted ${fit.baseline.toFixed(4)}  true ${truth.baseline.toFixed(4)}`);
    say('peak   amplitude (true)      centre (true)        width (true)');
    fit.peaks.forEach((p, j) => {
      const t = truth.peaks[j];
      const cell = (v: number, tv: number | undefined): string => `${v.toFixed(3)} (${tv === undefined ? '—' : tv.toFixed(3)})`.padEnd(21);
      say(`${String(j + 1).padEnd(6)} ${cell(p.amplitude, t?.amplitude)} ${cell(p.centre, t?.centre)} ${cell(p.width, t?.width)}`);
    });
    return 0;
  } catch (err) {
    if (err instanceof FarmAbortError && controller.signal.aborted) {
      process.stderr.write('fit-gaussians: interrupted\n');
      return 130;
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await pool?.close();
    await Promise.allSettled(daemons.map((d) => stopDaemon(d)));
    if (cacheRoot !== undefined) rmSync(cacheRoot, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    process.stderr.write(`fit-gaussians: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = err instanceof InvalidOptionError ? 2 : 1;
  },
);
