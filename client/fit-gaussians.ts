/**
 * The fitting example: `node dist/client/fit-gaussians.js [--peaks 3] [--points 2000] [--noise 0.05]
 * [--seed 1] [--max-evaluations 30000] [--no-polish]`. Makes a noisy spectrum of Gaussian peaks,
 * fits it (DE, then BFGS), and prints the fitted peaks beside the true ones.
 */
import { parseArgs } from 'node:util';
import { InvalidOptionError } from '../src/index.js';
import { fitSpectrum } from './fit/fit.js';
import { makeSpectrum } from './fit/make-spectrum.js';

export const FIT_HELP = `Usage: node dist/client/fit-gaussians.js [options]

Fits a sum of Gaussian peaks on a flat baseline to a synthetic noisy spectrum: differential
evolution over the whole parameter box, then BFGS from its best point. The objective is the
stage module client/fit/gaussians.ts, which reads the spectrum from ctx.shared.spectrum (shipped
once per worker); here its populations are evaluated in this process.

Options:
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

async function main(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
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
  const peaks = int('peaks', values.peaks, 3, 1);
  const points = int('points', values.points, 2000, 10);
  const seed = int('seed', values.seed, 1, 0);
  const maxEvaluations = int('max-evaluations', values['max-evaluations'], 30_000, 100);
  const noise = values.noise === undefined ? 0.05 : Number(values.noise);
  if (!(noise > 0 && Number.isFinite(noise))) throw new InvalidOptionError(`--noise expects a positive number, got "${values.noise}"`);

  const truth = makeSpectrum({ peaks, points, noise, seed });
  process.stdout.write(`spectrum: ${points} points, ${peaks} peaks, noise ${noise}; fitting ${1 + 3 * peaks} parameters\n`);
  const started = performance.now();
  let shown = Infinity;
  let lastStage = '';
  const fit = await fitSpectrum(truth.spectrum, {
    peaks,
    seed,
    maxEvaluations,
    polish: values['no-polish'] !== true,
    onProgress: (stage, e) => {
      // Progress events come on every improvement: print those that matter (10 %), and the budget's tenths.
      if (e.improved && e.fun > shown * 0.9 && stage === lastStage) return;
      shown = e.fun;
      lastStage = stage;
      process.stdout.write(
        `  ${stage.padEnd(4)} generation ${String(e.generation).padStart(4)}: χ² = ${e.fun.toFixed(2)} after ${e.evaluations} evaluations\n`,
      );
    },
  });
  process.stdout.write(`  de ended: ${fit.de.message}\n`);
  if (fit.bfgs !== undefined) process.stdout.write(`  bfgs ended: ${fit.bfgs.message}\n`);
  const ms = performance.now() - started;
  process.stdout.write(
    `\nχ² = ${fit.chi2.toFixed(2)}, χ²/dof = ${fit.reducedChi2.toFixed(3)}, ${fit.evaluations} evaluations in ${(ms / 1000).toFixed(1)} s\n`,
  );
  process.stdout.write(`baseline  fitted ${fit.baseline.toFixed(4)}  true ${truth.baseline.toFixed(4)}\n`);
  process.stdout.write('peak   amplitude (true)      centre (true)        width (true)\n');
  fit.peaks.forEach((p, j) => {
    const t = truth.peaks[j];
    const cell = (v: number, tv: number | undefined): string => `${v.toFixed(3)} (${tv === undefined ? '—' : tv.toFixed(3)})`.padEnd(21);
    process.stdout.write(`${String(j + 1).padEnd(6)} ${cell(p.amplitude, t?.amplitude)} ${cell(p.centre, t?.centre)} ${cell(p.width, t?.width)}\n`);
  });
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    process.stderr.write(`fit-gaussians: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = err instanceof InvalidOptionError ? 2 : 1;
  },
);
