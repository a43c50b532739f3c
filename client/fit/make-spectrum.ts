/** A synthetic noisy spectrum for the fitting example (seeded). */
import { SeededRandom } from '../../src/index.js';
import { model, type Peak, type Spectrum } from './spectrum.js';

/** Options of {@link makeSpectrum}. */
export interface MakeSpectrumOptions {
  /** Number of peaks. @default 3 */
  readonly peaks?: number;
  /** Number of points on [0, 100]. @default 2000 */
  readonly points?: number;
  /** Noise standard deviation, relative to the tallest peak. @default 0.05 */
  readonly noise?: number;
  /** Seed of the peaks and of the noise. @default 1 */
  readonly seed?: number;
}

/** A synthetic noisy spectrum and the peaks it was made from (sorted by centre). */
export function makeSpectrum(options: MakeSpectrumOptions = {}): { spectrum: Spectrum; baseline: number; peaks: Peak[] } {
  const { peaks: k = 3, points = 2000, noise = 0.05, seed = 1 } = options;
  const rng = new SeededRandom(seed);
  const peaks: Peak[] = [];
  for (let j = 0; j < k; j++) {
    // Centres spread over the range (one per slot of 100/k), so that peaks overlap but stay distinct.
    const slot = 100 / k;
    peaks.push({ amplitude: rng.uniform(0.5, 2), centre: slot * j + rng.uniform(0.25, 0.75) * slot, width: rng.uniform(1, 4) });
  }
  const baseline = rng.uniform(0.05, 0.2);
  const params = [baseline, ...peaks.flatMap((p) => [p.amplitude, p.centre, p.width])];
  const sd = noise * Math.max(...peaks.map((p) => p.amplitude));
  const x = new Float64Array(points);
  const y = new Float64Array(points);
  const sigma = new Float64Array(points).fill(sd);
  for (let i = 0; i < points; i++) {
    x[i] = (100 * i) / (points - 1);
    // Box–Muller: normal noise from two uniforms.
    const n = Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
    y[i] = model(params, x[i] as number) + sd * n;
  }
  return { spectrum: { x, y, sigma }, baseline, peaks };
}
