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
  // A Uint32Array, not four number fields: values above 2^31 would be boxed as heap numbers on
  // every draw (a 5-10× slowdown and garbage).
  readonly #s = new Uint32Array(4);

  /** @param seed any safe integer (negative values and values above 2^32 are mixed in, not truncated). */
  constructor(seed: number) {
    const lo = seed >>> 0;
    const hi = Math.floor(Math.abs(seed) / 2 ** 32) >>> 0;
    const mix = { s: lo ^ Math.imul(hi, 0x27d4eb2d) ^ (seed < 0 ? 0x5bd1e995 : 0) };
    this.#s[0] = splitmix32(mix);
    this.#s[1] = splitmix32(mix);
    this.#s[2] = splitmix32(mix);
    this.#s[3] = 1;
    // The first outputs of sfc32 are correlated with the seed: discard a few (the reference does 12).
    for (let i = 0; i < 12; i++) this.#u32();
  }

  /** A generator that continues exactly from `state` (see {@link SeededRandom.state}). */
  static fromState(state: RandomState): SeededRandom {
    const r = new SeededRandom(0);
    for (let i = 0; i < 4; i++) r.#s[i] = state[i] as number;
    return r;
  }

  #u32(): number {
    const s = this.#s;
    const a = s[0] as number;
    const b = s[1] as number;
    const c = s[2] as number;
    const d = s[3] as number;
    const t = (a + b + d) >>> 0;
    s[3] = d + 1;
    s[0] = b ^ (b >>> 9);
    s[1] = c + (c << 3);
    s[2] = ((c << 21) | (c >>> 11)) + t;
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
    return [this.#s[0] as number, this.#s[1] as number, this.#s[2] as number, this.#s[3] as number];
  }
}
