import { describe, expect, it } from 'vitest';
import { Minimization, localEvaluator } from '../../../src/optimize/index.js';
import { TaskError } from '../../../src/errors.js';
import { fitSpectrum } from '../../../client/fit/fit.js';
import * as gaussians from '../../../client/fit/gaussians.js';
import { makeSpectrum } from '../../../client/fit/make-spectrum.js';
import { chiSquare, decodeSpectrum, encodeSpectrum, spaceFor } from '../../../client/fit/spectrum.js';

describe('the fitting example (a sum of Gaussians fitted to a noisy spectrum)', () => {
  it('recovers the peaks of a synthetic spectrum, reading the data from ctx.shared', async () => {
    const truth = makeSpectrum({ peaks: 2, points: 600, noise: 0.05, seed: 2 });
    const fit = await fitSpectrum(truth.spectrum, { peaks: 2, seed: 1, maxEvaluations: 15_000 });
    expect(fit.reducedChi2).toBeGreaterThan(0.7);
    expect(fit.reducedChi2).toBeLessThan(1.3);
    fit.peaks.forEach((p, j) => {
      const t = truth.peaks[j]!;
      expect(Math.abs(p.centre - t.centre)).toBeLessThan(0.3);
      expect(Math.abs(p.amplitude - t.amplitude) / t.amplitude).toBeLessThan(0.1);
      expect(Math.abs(p.width - t.width) / t.width).toBeLessThan(0.1);
    });
    // The fit is at least as good as the truth (it is the least-squares optimum, the truth is not).
    const trueParams = [truth.baseline, ...truth.peaks.flatMap((p) => [p.amplitude, p.centre, p.width])];
    expect(fit.chi2).toBeLessThanOrEqual(chiSquare(trueParams, truth.spectrum));
  });

  it('encodes the spectrum as bytes that decode identically, also from an unaligned copy', () => {
    const { spectrum } = makeSpectrum({ peaks: 1, points: 50, seed: 1 });
    const bytes = encodeSpectrum(spectrum);
    const unaligned = new Uint8Array(bytes.byteLength + 3).subarray(3);
    unaligned.set(bytes);
    for (const b of [bytes, unaligned]) {
      const back = decodeSpectrum(b);
      expect([...back.x]).toEqual([...spectrum.x]);
      expect([...back.y]).toEqual([...spectrum.y]);
      expect([...back.sigma]).toEqual([...spectrum.sigma]);
    }
    expect(() => decodeSpectrum(new Uint8Array(12))).toThrow(/not an encoded spectrum/);
  });

  it('fails clearly when the dataset is not shared', async () => {
    const { spectrum } = makeSpectrum({ peaks: 1, points: 50, seed: 1 });
    const run = new Minimization(localEvaluator({ default: gaussians.default }), spaceFor(spectrum, 1), { seed: 1, maxGenerations: 2 }).run();
    await expect(run).rejects.toBeInstanceOf(TaskError);
    await expect(run).rejects.toThrow(/ctx\.shared\.spectrum must be the bytes of encodeSpectrum/);
  });
});
