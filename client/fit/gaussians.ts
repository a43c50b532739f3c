/**
 * The fitting example's objective, a taskfarm stage module: the χ² of a sum of Gaussian peaks
 * (parameters `[baseline, A₁, μ₁, w₁, …]`) against the spectrum in `ctx.shared.spectrum` (bytes
 * from encodeSpectrum, shipped once per worker). `setup()` decodes it once per worker thread;
 * every evaluation then only computes the model.
 */
import { chiSquare, decodeSpectrum, type Spectrum } from './spectrum.js';

interface Ctx {
  readonly shared: Readonly<Record<string, unknown>>;
}

// Decoded spectra by the shared bytes they came from: a warm worker that serves several jobs
// (several spectra) keeps one decoding per dataset, never mixes them up.
const decoded = new WeakMap<Uint8Array, Spectrum>();

function spectrumOf(ctx: Ctx): Spectrum {
  const bytes = ctx.shared['spectrum'];
  if (!(bytes instanceof Uint8Array)) throw new TypeError('ctx.shared.spectrum must be the bytes of encodeSpectrum() (option shared: { spectrum })');
  let s = decoded.get(bytes);
  if (s === undefined) {
    s = decodeSpectrum(bytes);
    decoded.set(bytes, s);
  }
  return s;
}

/** Once per worker thread, before the first evaluation. */
export function setup(ctx: Ctx): void {
  spectrumOf(ctx);
}

/** The cost of parameter vector `x`: χ² = Σ ((y − model(x)) / σ)². */
export default function gaussians(x: number[], ctx: Ctx): number {
  return chiSquare(x, spectrumOf(ctx));
}
