/**
 * A small seeded pseudo-random generator whose whole state is four 32-bit integers, so it can be
 * written to JSON and restored exactly (optimisers checkpoint it with their population).
 */

/** The state of a {@link SeededRandom}: four unsigned 32-bit integers. */
export type RandomState = readonly [number, number, number, number];

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) >>> 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * sfc32 (Chris Doty-Humphrey's small fast counting generator, period ≥ 2^32, 128 bits of state),
 * seeded through splitmix32. Deterministic: the same seed gives the same sequence on every
 * platform. Not for cryptography.
 */
export class SeededRandom {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /** @param seed any safe integer (negative values and values above 2^32 are mixed in, not truncated). */
  constructor(seed: number) {
    const lo = seed >>> 0;
    const hi = Math.floor(Math.abs(seed) / 2 ** 32) >>> 0;
    const mix = { s: lo ^ Math.imul(hi, 0x27d4eb2d) ^ (seed < 0 ? 0x5bd1e995 : 0) };
    this.#a = splitmix32(mix);
    this.#b = splitmix32(mix);
    this.#c = splitmix32(mix);
    this.#d = 1;
    // The first outputs of sfc32 are correlated with the seed: discard a few (the reference does 12).
    for (let i = 0; i < 12; i++) this.#u32();
  }

  /** A generator that continues exactly from `state` (see {@link SeededRandom.state}). */
  static fromState(state: RandomState): SeededRandom {
    const r = new SeededRandom(0);
    [r.#a, r.#b, r.#c, r.#d] = state.map((v) => v >>> 0) as [number, number, number, number];
    return r;
  }

  #u32(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t;
  }

  /** A uniform number in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.#u32() >>> 5; // 27 bits
    const lo = this.#u32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** A uniform integer in [0, n) (n ≥ 1). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A uniform number in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Fisher–Yates shuffle of `items`, in place; returns `items`. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = items[i] as T;
      items[i] = items[j] as T;
      items[j] = t;
    }
    return items;
  }

  /** The generator's state, to be given to {@link SeededRandom.fromState} (plain JSON data). */
  state(): RandomState {
    return [this.#a, this.#b, this.#c, this.#d];
  }
}
