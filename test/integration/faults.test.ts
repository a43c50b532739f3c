import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { TaskFarm, type WorkerLostEvent } from '../../dist/src/index.js';
import { Daemons, fixture, waitForLine } from '../helpers/daemons.js';

/** Runs a farm with results(), counting how often each index is delivered. */
async function collect(farm: TaskFarm<unknown, number>): Promise<Map<number, number[]>> {
  const seen = new Map<number, number[]>();
  for await (const { index, output } of farm.results()) {
    const list = seen.get(index) ?? [];
    list.push(output);
    seen.set(index, list);
  }
  return seen;
}

function expectExactlyOnce(seen: Map<number, number[]>, n: number, expected: (i: number) => number): void {
  expect(seen.size).toBe(n);
  for (let i = 0; i < n; i++) expect(seen.get(i), `input ${i}`).toEqual([expected(i)]);
}

describe('faults with real daemons', () => {
  const daemons = new Daemons();
  afterEach(async () => {
    await daemons.stopAll();
  });

  it('SIGKILL of one daemon mid-run: every output correct and single, its tasks done by the others', async () => {
    const ds = await daemons.start(3);
    const n = 240;
    const inputs = Array.from({ length: n }, (_, v) => ({ v, ms: 8 }));
    const farm = new TaskFarm<unknown, number>(fixture('spin.ts'), inputs, {
      peers: ds.map((d) => d.address),
      localFallback: false,
      speculation: false, // what is tested is loss and requeue, not backup copies
    });
    const lost: WorkerLostEvent[] = [];
    farm.on('lost', (e) => lost.push(e));
    let killed: string | undefined;
    farm.on('progress', (p) => {
      if (killed === undefined && p.done >= n / 3) {
        const victim = ds.find((d) => farm.stats().workers.some((w) => w.id === d.id && w.completed > 0))!;
        killed = victim.id;
        victim.child.kill('SIGKILL');
      }
    });
    const seen = await collect(farm);
    expectExactlyOnce(seen, n, (i) => i * 2);
    expect(killed).toBeDefined();
    expect(lost.map((e) => e.worker.id)).toEqual([killed]);
    expect(lost[0]!.requeued).toBeGreaterThan(0);
    const stats = farm.stats();
    const victim = stats.workers.find((w) => w.id === killed)!;
    expect(victim.lost).toBeDefined();
    // The survivors did the rest, including the requeued tasks.
    const survivors = stats.workers.filter((w) => w.id !== killed);
    expect(survivors.reduce((s, w) => s + w.completed, 0)).toBe(n - victim.completed);
    expect(stats.requeued).toBeGreaterThanOrEqual(lost[0]!.requeued);
  });

  it('SIGSTOP of one daemon mid-run: detected by heartbeat within the configured timeout, run completes', async () => {
    const ds = await daemons.start(3);
    const heartbeatMs = 200;
    const heartbeatTimeoutMs = 1000;
    const n = 300;
    const inputs = Array.from({ length: n }, (_, v) => ({ v, ms: 8 }));
    const farm = new TaskFarm<unknown, number>(fixture('spin.ts'), inputs, {
      peers: ds.map((d) => d.address),
      localFallback: false,
      heartbeatMs,
      heartbeatTimeoutMs,
      speculation: false, // loss detection is what is measured
    });
    let stoppedAt = 0;
    let frozen: string | undefined;
    let detectedAfter = -1;
    farm.on('progress', (p) => {
      if (frozen === undefined && p.done >= n / 4) {
        const victim = ds.find((d) => farm.stats().workers.some((w) => w.id === d.id && w.completed > 0))!;
        frozen = victim.id;
        stoppedAt = performance.now();
        process.kill(victim.pid, 'SIGSTOP');
      }
    });
    const lost: WorkerLostEvent[] = [];
    farm.on('lost', (e) => {
      lost.push(e);
      detectedAfter = performance.now() - stoppedAt;
    });
    const seen = await collect(farm);
    expectExactlyOnce(seen, n, (i) => i * 2);
    expect(lost.map((e) => e.worker.id)).toEqual([frozen]);
    expect(lost[0]!.reason).toMatch(/heartbeat|keepalive|Connection dropped/i);
    console.log(`SIGSTOP detected after ${detectedAfter.toFixed(0)} ms (heartbeat timeout ${heartbeatTimeoutMs} ms, heartbeat every ${heartbeatMs} ms)`);
    // Detection is bounded by the timeout plus one heartbeat check interval (and scheduling slack).
    expect(detectedAfter).toBeLessThan(heartbeatTimeoutMs + heartbeatMs + 500);
  });

  it('a daemon that comes back (same id) is recruited again in the same run', async () => {
    const [a, b] = await daemons.start(2);
    const recruitedIds: string[] = [];
    // The inputs keep coming until the restarted daemon has rejoined and computed (bounded by a
    // deadline), so the run cannot end before it is back however long its restart takes.
    let n = 0;
    const rejoined = (): boolean => (farm.stats().workers.filter((w) => w.id === a!.id)[1]?.completed ?? 0) > 0;
    async function* inputs(): AsyncGenerator<{ v: number; ms: number }> {
      const deadline = Date.now() + 20_000;
      for (; n < 400 || (!rejoined() && Date.now() < deadline); n++) {
        if (n >= 400) await new Promise((r) => setTimeout(r, 2));
        yield { v: n, ms: 5 };
      }
    }
    const farm = new TaskFarm<unknown, number>(fixture('spin.ts'), inputs(), { peers: [a!.address, b!.address], localFallback: false });
    farm.on('recruited', (w) => recruitedIds.push(w.id));
    let restarted: Promise<unknown> | undefined;
    farm.on('progress', (p) => {
      if (restarted === undefined && p.done >= 40) {
        a!.child.kill('SIGKILL');
        restarted = a!.exited.then(() => daemons.restart(a!));
      }
    });
    const seen = await collect(farm);
    await restarted;
    expectExactlyOnce(seen, n, (i) => i * 2);
    expect(recruitedIds.filter((id) => id === a!.id)).toHaveLength(2);
    const entries = farm.stats().workers.filter((w) => w.id === a!.id);
    expect(entries).toHaveLength(2);
    expect(entries[0]!.lost).toBeDefined();
    expect(entries[1]!.completed).toBeGreaterThan(0);
  });

  for (const how of ['SIGKILL', 'SIGSTOP'] as const) {
    it(`a client process stopped by ${how} mid-run frees its workers within the lease timeout`, async () => {
      const [d] = await daemons.start(1);
      const leaseTimeoutMs = 1500;
      const client = spawn(process.execPath, [fixture('client-run.mjs'), d!.address, String(leaseTimeoutMs)], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      try {
        await waitForLine(client.stdout, /^PROGRESS [1-9]/, 20_000);
        client.kill(how);
        const killedAt = performance.now();
        // Another client recruits the same worker as soon as its lease ends.
        const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], {
          peers: [d!.address],
          localFallback: false,
          workerWaitMs: leaseTimeoutMs * 4,
        });
        const outputs = await farm.compute();
        const freedAfter = performance.now() - killedAt;
        expect(outputs).toEqual([2, 4, 6]);
        expect(farm.stats().workers.map((w) => w.id)).toEqual([d!.id]);
        console.log(`worker freed ${freedAfter.toFixed(0)} ms after the client got ${how} (lease timeout ${leaseTimeoutMs} ms)`);
        expect(freedAfter).toBeLessThan(leaseTimeoutMs + 1500);
      } finally {
        client.kill('SIGKILL');
        if (client.exitCode === null && client.signalCode === null) await once(client, 'exit');
      }
    });
  }
});
