/**
 * The fitting example's procedure: a sum of Gaussians fitted to a spectrum by DE (optionally
 * polished by BFGS from DE's best point), through any {@link Evaluator}: in this process
 * ({@link localEvaluator}, now), or `pool.map` of the stage module ./gaussians.ts on a farm.
 */
import { Minimization, localEvaluator, type Evaluator, type GenerationEvent, type MinimizeResult } from '../../src/index.js';
import * as gaussians from './gaussians.js';
import { encodeSpectrum, spaceFor, type Peak, type Spectrum } from './spectrum.js';

/** Options of {@link fitSpectrum}. */
export interface FitOptions {
  /** Peaks in the model. */
  readonly peaks: number;
  /** Seed of the optimiser. @default 1 */
  readonly seed?: number;
  /** Evaluation budget of the global search. @default 30000 */
  readonly maxEvaluations?: number;
  /** Polish DE's best point with BFGS. @default true */
  readonly polish?: boolean;
  /** Called on each `progress` event (best cost improved, or another 10 % of the budget). */
  readonly onProgress?: (stage: 'de' | 'bfgs', e: GenerationEvent) => void;
  /** How to evaluate populations. @default this process, with the spectrum as `shared.spectrum` */
  readonly evaluator?: Evaluator;
}

/** What {@link fitSpectrum} found. */
export interface Fit {
  readonly baseline: number;
  /** The fitted peaks, sorted by centre. */
  readonly peaks: Peak[];
  readonly chi2: number;
  /** χ² per degree of freedom (≈ 1 for a good fit with the right σ). */
  readonly reducedChi2: number;
  readonly evaluations: number;
  readonly de: MinimizeResult;
  readonly bfgs: MinimizeResult | undefined;
}

/** Fits `options.peaks` Gaussians on a flat baseline to `spectrum`. */
export async function fitSpectrum(spectrum: Spectrum, options: FitOptions): Promise<Fit> {
  const space = spaceFor(spectrum, options.peaks);
  const evaluate = options.evaluator ?? localEvaluator(gaussians, { shared: { spectrum: encodeSpectrum(spectrum) } });
  const global = new Minimization(evaluate, space, { seed: options.seed ?? 1, maxEvaluations: options.maxEvaluations ?? 30_000, maxGenerations: Infinity });
  global.on('progress', (e) => options.onProgress?.('de', e));
  const de = await global.run();
  let best = de;
  let bfgs: MinimizeResult | undefined;
  if (options.polish !== false) {
    const local = new Minimization(evaluate, { ...space, x0: de.x }, { optimizer: 'bfgs', seed: options.seed ?? 1, maxEvaluations: 20_000 });
    local.on('progress', (e) => options.onProgress?.('bfgs', e));
    bfgs = await local.run();
    if (bfgs.fun < best.fun) best = bfgs;
  }
  const x = best.x;
  const peaks: Peak[] = [];
  for (let k = 1; k + 2 < x.length; k += 3) peaks.push({ amplitude: x[k] as number, centre: x[k + 1] as number, width: x[k + 2] as number });
  peaks.sort((a, b) => a.centre - b.centre);
  const dof = spectrum.x.length - x.length;
  return { baseline: x[0] as number, peaks, chi2: best.fun, reducedChi2: best.fun / dof, evaluations: de.evaluations + (bfgs?.evaluations ?? 0), de, bfgs };
}
