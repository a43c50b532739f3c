/**
 * The fitting example's data: a spectrum (x, y, σ per point), its binary encoding for `shared` (so
 * it travels once per worker, as bytes), and the model, a sum of Gaussian peaks on a flat
 * baseline. Parameters: `[baseline, A₁, μ₁, w₁, A₂, μ₂, w₂, …]`. No imports: the objective stage
 * (gaussians.ts) bundles this file for the workers.
 */

/** A measured spectrum: positions, values and their standard errors. */
export interface Spectrum {
  readonly x: Float64Array;
  readonly y: Float64Array;
  readonly sigma: Float64Array;
}

/** One Gaussian peak: height, centre and width (standard deviation). */
export interface Peak {
  readonly amplitude: number;
  readonly centre: number;
  readonly width: number;
}

/** The model at `x`: `baseline + Σ A·exp(−(x − μ)² / 2w²)`. */
export function model(params: readonly number[], x: number): number {
  let v = params[0] as number;
  for (let k = 1; k + 2 < params.length; k += 3) {
    const a = params[k] as number;
    const d = (x - (params[k + 1] as number)) / (params[k + 2] as number);
    v += a * Math.exp(-0.5 * d * d);
  }
  return v;
}

/** χ² of `params` on `s`: Σ ((y − model) / σ)². */
export function chiSquare(params: readonly number[], s: Spectrum): number {
  let chi2 = 0;
  for (let i = 0; i < s.x.length; i++) {
    const r = ((s.y[i] as number) - model(params, s.x[i] as number)) / (s.sigma[i] as number);
    chi2 += r * r;
  }
  return chi2;
}

/** The spectrum as bytes (points, then x, y, σ as little-endian float64), for `shared`. */
export function encodeSpectrum(s: Spectrum): Uint8Array {
  const n = s.x.length;
  const out = new Float64Array(1 + 3 * n);
  out[0] = n;
  out.set(s.x, 1);
  out.set(s.y, 1 + n);
  out.set(s.sigma, 1 + 2 * n);
  return new Uint8Array(out.buffer);
}

/** The inverse of {@link encodeSpectrum}. Copies when the bytes are not 8-byte aligned. */
export function decodeSpectrum(bytes: Uint8Array): Spectrum {
  const aligned = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  const all = new Float64Array(aligned.buffer, aligned.byteOffset, Math.floor(aligned.byteLength / 8));
  const n = all[0] as number;
  if (!Number.isInteger(n) || n < 1 || all.length !== 1 + 3 * n) throw new Error(`not an encoded spectrum (${bytes.byteLength} bytes)`);
  return { x: all.subarray(1, 1 + n), y: all.subarray(1 + n, 1 + 2 * n), sigma: all.subarray(1 + 2 * n) };
}

/** Bounds of the parameters for `peaks` peaks on spectrum `s`, and their names. */
export function spaceFor(s: Spectrum, peaks: number): { bounds: number[][]; names: string[] } {
  const xmin = s.x[0] as number;
  const xmax = s.x[s.x.length - 1] as number;
  const ymax = Math.max(...s.y);
  const dx = (xmax - xmin) / (s.x.length - 1);
  const bounds: number[][] = [[-ymax / 2, ymax / 2]];
  const names = ['baseline'];
  for (let j = 1; j <= peaks; j++) {
    bounds.push([0, 2 * ymax], [xmin, xmax], [2 * dx, (xmax - xmin) / 4]);
    names.push(`amplitude${j}`, `centre${j}`, `width${j}`);
  }
  return { bounds, names };
}
