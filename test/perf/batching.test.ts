/**
 * Correctness under packed batches: ordering, exactly one output per input, and a daemon killed
 * while whole batches of tiny tasks are in flight. Plus lazy, bounded consumption of a generator.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TaskFarm, type WorkerLostEvent } from '../../dist/src/index.js';
import { Daemons } from '../helpers/daemons.js';

describe('packed batches with real daemons', () => {
  const daemons = new Daemons();
  afterEach(() => daemons.stopAll());

  it('200,000 tiny tasks over 2 daemons: every output, once, in order; a daemon SIGKILLed with batches in flight', async () => {
    const ds = await daemons.start(2, ['--threads', '1']);
    const n = 200_000;
    const farm = new TaskFarm<number, number>(
      (x: number) => x * 3 + 1,
      Array.from({ length: n }, (_, i) => i),
      {
        peers: ds.map((d) => d.address),
        localFallback: false,
      },
    );
    const lost: WorkerLostEvent[] = [];
    farm.on('lost', (e) => lost.push(e));
    let killed = false;
    farm.on('progress', (p) => {
      // Kill as soon as both workers have delivered something: their windows hold whole batches.
      if (!killed && p.done > 0 && farm.stats().workers.filter((w) => w.completed > 0).length === 2) {
        killed = true;
        ds[0]!.child.kill('SIGKILL');
      }
    });
    const counts = new Uint8Array(n);
    let inOrder = true;
    let last = -1;
    for await (const { index, output } of farm.results({ ordered: true })) {
      if (output !== index * 3 + 1) throw new Error(`wrong output for ${index}: ${output}`);
      counts[index]!++;
      if (index !== last + 1) inOrder = false;
      last = index;
    }
    expect(inOrder).toBe(true);
    expect(counts.every((c) => c === 1)).toBe(true);
    // Killed right after both workers first delivered, with whole batches in flight on the victim:
    // those were requeued and computed by the survivor.
    expect(killed).toBe(true);
    expect(lost.map((e) => e.worker.id)).toEqual([ds[0]!.id]);
    expect(lost[0]!.requeued).toBeGreaterThan(0);
    console.log(`SIGKILL with batches in flight: ${lost[0]!.requeued} tasks requeued`);
    expect(farm.stats().completed).toBe(n);
  });

  it('compute() keeps input order with batches arriving from several workers and threads', async () => {
    const ds = await daemons.start(2, ['--threads', '2']);
    const n = 50_000;
    const outputs = await new TaskFarm<number, string>(
      (x: number) => `v${x}`,
      Array.from({ length: n }, (_, i) => i),
      {
        peers: ds.map((d) => d.address),
        localFallback: false,
      },
    ).compute();
    expect(outputs.length).toBe(n);
    expect(outputs.every((o, i) => o === `v${i}`)).toBe(true);
  });
});

describe('streaming', () => {
  it('200,000 inputs from a generator are pulled lazily, and results() keeps memory bounded', async () => {
    const n = 200_000;
    let pulled = 0;
    function* inputs(): Generator<number> {
      for (let i = 0; i < n; i++) {
        pulled++;
        yield i;
      }
    }
    const highWater = 2_000;
    const farm = new TaskFarm<number, number>((x: number) => x + 1, inputs(), { discovery: 'local', threads: 2 });
    let consumed = 0;
    let maxAhead = 0;
    for await (const { index, output } of farm.results({ highWater })) {
      expect(output).toBe(index + 1);
      consumed++;
      maxAhead = Math.max(maxAhead, pulled - consumed);
      // A slow consumer: every 20,000 outputs, yield the event loop a few times.
      if (consumed % 20_000 === 0) for (let k = 0; k < 5; k++) await new Promise((r) => setImmediate(r));
    }
    expect(consumed).toBe(n);
    // Pulled ahead of the consumer: at most the outputs waiting (high water) plus what is in flight
    // (one window of batches), never the whole input.
    console.log(`generator pulled at most ${maxAhead} inputs ahead of the consumer (highWater ${highWater}, ${n} inputs)`);
    expect(maxAhead).toBeLessThan(n / 4);
  });

  it('results() in a child process: 200,000 outputs streamed through a slow consumer stay within a bounded heap', async () => {
    const script = fileURLToPath(new URL('../fixtures/stream-heap.mjs', import.meta.url));
    const child = spawn(process.execPath, ['--expose-gc', script, '200000'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    expect(code).toBe(0);
    const r = JSON.parse(text) as { consumed: number; maxHeapGrowthMb: number; maxAhead: number };
    console.log(`results(): heap grew at most ${r.maxHeapGrowthMb.toFixed(1)} MB over 200,000 outputs; generator at most ${r.maxAhead} ahead`);
    expect(r.consumed).toBe(200_000);
    // Holding 200,000 outputs with their records would take far more; bounded means it does not grow with n.
    expect(r.maxHeapGrowthMb).toBeLessThan(60);
  });
});
