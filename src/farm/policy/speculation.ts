/**
 * When an in-flight task deserves a backup copy (Work Queue's fast abort, MapReduce's backup tasks),
 * as pure functions.
 */

/** Speculation settings of a job. */
export interface SpeculationSettings {
  readonly multiplier: number;
  readonly minMs: number;
}

/** A task in flight this many times longer than the longest task seen is stuck: it is not copied (a copy would burn a second core). */
export const STUCK_FACTOR = 20;

/** In-flight time beyond which a task is a straggler: `multiplier` × the median task time, at least `minMs` (-1: none yet). */
export function stragglerThresholdMs(s: SpeculationSettings, medianTaskMs: number): number {
  if (medianTaskMs < 0) return -1;
  return Math.max(s.minMs, s.multiplier * medianTaskMs);
}

/**
 * True when a task that has been in flight for `inFlightMs` has run far beyond every task time seen
 * (`maxTaskMs`): it is stuck (an infinite loop, a deadlock), not slow, and a copy would only spin a
 * second core. `taskTimeoutMs` is the remedy for those.
 */
export function isStuck(inFlightMs: number, maxTaskMs: number): boolean {
  return maxTaskMs > 0 && inFlightMs > STUCK_FACTOR * maxTaskMs;
}
