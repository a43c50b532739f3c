/**
 * Small tools for bounded fuzzing: a seeded PRNG (the seed is printed, and TASKFARM_FUZZ_SEED
 * replays a run), a bounded worker pool (stops at a count or a deadline, whichever comes first),
 * and counters to print.
 */

/** mulberry32: a tiny seeded PRNG. */
export class Rng {
  #s: number;
  readonly seed: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.#s = this.seed;
  }

  /** From TASKFARM_FUZZ_SEED, else random. */
  static fromEnv(): Rng {
    const env = process.env['TASKFARM_FUZZ_SEED'];
    return new Rng(env !== undefined && env !== '' ? Number(env) : Math.floor(Math.random() * 2 ** 32));
  }

  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.next() * 256);
    return b;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** `bytes` with `flips` random bytes replaced. */
  mutate(bytes: Uint8Array, flips: number): Buffer {
    const b = Buffer.from(bytes);
    for (let i = 0; i < flips && b.length > 0; i++) b[this.int(0, b.length - 1)] = this.int(0, 255);
    return b;
  }
}

/**
 * Runs `fn(i)` for i = 0, 1, … with at most `concurrency` at once, until `count` have run or
 * `deadline` (a performance.now() value) has passed. Resolves with how many ran.
 */
export async function bounded(count: number, concurrency: number, deadline: number, fn: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  let done = 0;
  const lane = async (): Promise<void> => {
    while (next < count && performance.now() < deadline) {
      const i = next++;
      await fn(i);
      done++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  return done;
}

/** Named counters. */
export class Counts {
  readonly #m = new Map<string, number>();

  add(name: string, n = 1): void {
    this.#m.set(name, (this.#m.get(name) ?? 0) + n);
  }

  get(name: string): number {
    return this.#m.get(name) ?? 0;
  }

  /** Sum of the counters whose name starts with `prefix`. */
  sum(prefix: string): number {
    let n = 0;
    for (const [k, v] of this.#m) if (k.startsWith(prefix)) n += v;
    return n;
  }

  toString(): string {
    return [...this.#m].map(([k, v]) => `${k}=${v}`).join(' ');
  }
}
