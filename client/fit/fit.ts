/**
 * The fitting example's procedure: a sum of Gaussians fitted to a spectrum by DE (optionally
 * polished by BFGS from DE's best point). On a {@link FarmPool} (local threads, or worker daemons)
 * each generation is one job of the stage module ./gaussians.ts, with the spectrum as shared data:
 * it reaches each worker once, for both searches. Without a pool, through any {@link Evaluator}
 * (by default in this process).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  FarmMinimization,
  Minimization,
  localEvaluator,
  type Evaluator,
  type FarmPool,
  type FarmSummary,
  type GenerationEvent,
  type MinimizeOptions,
  type MinimizeResult,
  type Space,
} from '../../src/index.js';
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
  /** Evaluate on this pool (one job per generation; the spectrum shared once per worker). */
  readonly pool?: FarmPool;
  /** Without a pool: how to evaluate populations. @default this process, with the spectrum as `shared.spectrum` */
  readonly evaluator?: Evaluator;
  /** Aborts the fit (it rejects with FarmAbortError). */
  readonly signal?: AbortSignal;
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
  /** On a pool: what each search did on the farm. */
  readonly farm: { readonly de: FarmSummary; readonly bfgs: FarmSummary | undefined } | undefined;
}

/** The objective as a module path for the workers: the compiled .js next to this file, or the .ts source (tests). */
function objectivePath(): string {
  const js = fileURLToPath(new URL('./gaussians.js', import.meta.url));
  return existsSync(js) ? js : fileURLToPath(new URL('./gaussians.ts', import.meta.url));
}

/** Fits `options.peaks` Gaussians on a flat baseline to `spectrum`. */
export async function fitSpectrum(spectrum: Spectrum, options: FitOptions): Promise<Fit> {
  const space = spaceFor(spectrum, options.peaks);
  const shared = { spectrum: encodeSpectrum(spectrum) };
  const seed = options.seed ?? 1;
  const signal = options.signal === undefined ? {} : { signal: options.signal };
  const pool = options.pool;
  const evaluate = options.evaluator ?? localEvaluator(gaussians, { shared });
  const search = async (stage: 'de' | 'bfgs', s: Space, o: MinimizeOptions): Promise<{ result: MinimizeResult; farm: FarmSummary | undefined }> => {
    if (pool !== undefined) {
      const run = new FarmMinimization(objectivePath(), s, { ...o, ...signal, pool, shared, name: `fit-${stage}` });
      run.on('progress', (e) => options.onProgress?.(stage, e));
      const result = await run.run();
      return { result, farm: result.farm };
    }
    const run = new Minimization(evaluate, s, { ...o, ...signal });
    run.on('progress', (e) => options.onProgress?.(stage, e));
    return { result: await run.run(), farm: undefined };
  };
  const global = await search('de', space, { seed, maxEvaluations: options.maxEvaluations ?? 30_000, maxGenerations: Infinity });
  const de = global.result;
  let best = de;
  let local: { result: MinimizeResult; farm: FarmSummary | undefined } | undefined;
  if (options.polish !== false) {
    local = await search('bfgs', { ...space, x0: de.x }, { optimizer: 'bfgs', seed, maxEvaluations: 20_000 });
    if (local.result.fun < best.fun) best = local.result;
  }
  const x = best.x;
  const peaks: Peak[] = [];
  for (let k = 1; k + 2 < x.length; k += 3) peaks.push({ amplitude: x[k] as number, centre: x[k + 1] as number, width: x[k + 2] as number });
  peaks.sort((a, b) => a.centre - b.centre);
  const dof = spectrum.x.length - x.length;
  return {
    baseline: x[0] as number,
    peaks,
    chi2: best.fun,
    reducedChi2: best.fun / dof,
    evaluations: de.evaluations + (local?.result.evaluations ?? 0),
    de,
    bfgs: local?.result,
    farm: global.farm === undefined ? undefined : { de: global.farm, bfgs: local?.farm },
  };
}
