/**
 * Warm-pool figures (issue 10): start latency of a job whose program the workers hold, single-task
 * round trips, many jobs at once, sharing by weight and priority. Used by bench/run.ts.
 */
import { FarmPool, TaskFarm } from '../src/index.js';

/** What the stage returns: when it started on the worker (ms since the epoch, sub-ms). */
const startedAt = (): number => performance.timeOrigin + performance.now();
const now = (): number => performance.timeOrigin + performance.now();
const double = (x: number): number => x * 2;
const spin = (ms: number): number => {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // CPU work
  }
  return ms;
};
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

function percentile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

/** Start latency: `run()` on a warm pool → the task starts on a worker (ms), p50 over `n` jobs. */
export async function warmStart(peers: string[], n: number): Promise<{ pool: number; taskFarm: number }> {
  const pool = new FarmPool({ peers, localFallback: false });
  try {
    await pool.map(startedAt, [0, 0, 0, 0]); // recruit, install, load
    const xs: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = now();
      const [t] = await pool.map<number, number>(startedAt, [i]);
      xs.push(t! - t0);
    }
    await pool.close(); // frees the workers for the TaskFarms below
    // The same with a TaskFarm on idle daemons that already hold its bundle: it recruits them over TLS first.
    const ys: number[] = [];
    for (let i = 0; i < Math.min(n, 20); i++) {
      const t0 = now();
      const [t] = await new TaskFarm<number, number>(startedAt, [i], { peers, localFallback: false }).compute();
      ys.push(t! - t0);
    }
    return { pool: percentile(xs, 0.5), taskFarm: percentile(ys, 0.5) };
  } finally {
    await pool.close();
  }
}

/** Single-task round trips on a warm pool (ms): one-task jobs in sequence, and one task at a time within a job. */
export async function warmRoundTrips(peers: string[], n: number): Promise<{ jobs: number[]; within: number[] }> {
  const pool = new FarmPool({ peers, localFallback: false });
  try {
    await pool.map(double, range(8));
    const jobs: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await pool.map(double, [i]);
      jobs.push(performance.now() - t0);
    }
    const within: number[] = [];
    let release: (() => void) | undefined;
    let sentAt = 0;
    async function* inputs(): AsyncGenerator<number> {
      for (let i = 0; i < n; i++) {
        if (i > 0) await new Promise<void>((r) => (release = r));
        sentAt = performance.now();
        yield i;
      }
    }
    for await (const _ of pool.run<number, number>(double, inputs()).results()) {
      within.push(performance.now() - sentAt);
      release?.();
    }
    return { jobs: jobs.slice(Math.min(10, jobs.length >> 2)), within: within.slice(Math.min(10, within.length >> 2)) };
  } finally {
    await pool.close();
  }
}

/** Tiny tasks per second: `jobs` concurrent jobs of `tasks / jobs` tasks each on one warm pool. */
export async function concurrentJobs(peers: string[], tasks: number, jobs: number): Promise<number> {
  const pool = new FarmPool({ peers, localFallback: false });
  try {
    await pool.map(double, range(20_000)); // warm: code loaded, batch sizes known
    const t0 = performance.now();
    await Promise.all(Array.from({ length: jobs }, () => pool.map(double, range(Math.floor(tasks / jobs)))));
    return (tasks / (performance.now() - t0)) * 1000;
  } finally {
    await pool.close();
  }
}

/** Two equal jobs started together: the share of the work the first got, when the first of them finished. */
export async function equalSplit(peers: string[], tasks: number, ms: number): Promise<number> {
  const pool = new FarmPool({ peers, localFallback: false });
  try {
    await pool.map(spin, [ms, ms, ms, ms]);
    const a = pool.run<number, number>(spin, new Array<number>(tasks).fill(ms));
    const b = pool.run<number, number>(spin, new Array<number>(tasks).fill(ms));
    const first = await Promise.race([a.compute().then(() => 'a'), b.compute().then(() => 'b')]);
    const [da, db] = [a.stats().completed, b.stats().completed];
    void first;
    a.cancel();
    b.cancel();
    await Promise.all([a.settled(), b.settled()]);
    return da / (da + db);
  } finally {
    await pool.close();
  }
}

/** A priority-10 job started while a priority-0 job saturates the pool: its time over its time alone. */
export async function priorityJob(peers: string[], tasks: number, ms: number): Promise<{ ratio: number; alone: number; loaded: number }> {
  const pool = new FarmPool({ peers, localFallback: false });
  try {
    await pool.map(spin, [ms, ms, ms, ms]);
    let t0 = performance.now();
    await pool.map(spin, new Array<number>(tasks).fill(ms), { priority: 10 });
    const alone = performance.now() - t0;
    const low = pool.run<number, number>(spin, new Array<number>(tasks * 50).fill(ms));
    while (low.stats().completed < tasks) await new Promise((r) => setTimeout(r, 5));
    t0 = performance.now();
    await pool.map(spin, new Array<number>(tasks).fill(ms), { priority: 10 });
    const loaded = performance.now() - t0;
    low.cancel();
    await low.settled();
    return { ratio: loaded / alone, alone, loaded };
  } finally {
    await pool.close();
  }
}

export { percentile };
