/**
 * TaskFarm options as a user sets them: abort signal, local fallback, static peers retried mid-run,
 * results() and early exit, option validation, async inputs. Real daemons on 127.0.0.1.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  FarmAbortError,
  InvalidOptionError,
  MemoryDiscovery,
  NoWorkersError,
  TaskFarm,
  type FarmProgress,
  type TaskFarmOptions,
  type WorkerInfo,
} from '../../dist/src/index.js';
import { createWorkerClient, type WorkerClient } from '../../dist/src/protocol/grpc.js';
import { Daemons, fixture, waitForLine, type LocalDaemon } from '../helpers/daemons.js';

/** A TCP port on 127.0.0.1 that nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

function settle<T>(p: Promise<T>): Promise<unknown> {
  return p.then(
    (v) => v,
    (e: unknown) => e,
  );
}

interface Outcome {
  outputs?: unknown[];
  workers?: string[];
  error?: { name: string; code: string; message: string };
}

/**
 * Runs one TaskFarm in a standalone Node process (test/fixtures/farm-outcome.mjs), where nothing
 * else keeps the event loop alive, and returns what it printed and how it exited.
 */
async function inOwnProcess(
  config: { stage: string; inputs: unknown[]; options: TaskFarmOptions },
  timeoutMs = 15_000,
): Promise<{ outcome: Outcome | undefined; code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [fixture('farm-outcome.mjs'), JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const line = settle(waitForLine(child.stdout, /^OUTCOME (.*)$/, timeoutMs));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    const [code] = (await once(child, 'close')) as [number | null];
    const m = await line;
    return { outcome: Array.isArray(m) ? (JSON.parse(m[1]) as Outcome) : undefined, code, stderr };
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'close');
    }
  }
}

describe('TaskFarm options with real daemons', () => {
  const daemons = new Daemons();
  const clients: WorkerClient[] = [];

  async function stateOf(d: LocalDaemon): Promise<string> {
    const c = createWorkerClient(d.address, 1000, { kind: 'unverified' });
    clients.push(c);
    return (await c.describe({ client_nonce: Buffer.alloc(0) }, 2000)).state;
  }

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await daemons.stopAll();
  });

  it('signal: aborting mid-run rejects compute() promptly with FarmAbortError and releases the worker at once', async () => {
    const [d] = await daemons.start(1);
    const controller = new AbortController();
    // A long lease: if the worker were not released, it would stay taken for 20 s.
    const farm = new TaskFarm<unknown, number>(
      fixture('spin.ts'),
      Array.from({ length: 200 }, (_, v) => ({ v, ms: 50 })),
      { peers: [d!.address], localFallback: false, leaseTimeoutMs: 20_000, signal: controller.signal },
    );
    let abortedAt = 0;
    farm.on('progress', (p) => {
      if (abortedAt === 0 && p.done >= 3) {
        abortedAt = performance.now();
        controller.abort(new Error('user pressed stop'));
      }
    });
    const err = await settle(farm.compute());
    const rejectedAfter = performance.now() - abortedAt;
    expect(abortedAt).toBeGreaterThan(0);
    expect(err).toBeInstanceOf(FarmAbortError);
    expect((err as FarmAbortError).code).toBe('FARM_ERR_ABORTED');
    expect(((err as FarmAbortError).cause as Error).message).toBe('user pressed stop');
    expect(rejectedAfter).toBeLessThan(1500);
    expect(farm.stats().completed).toBeLessThan(200);
    // The lease was given back before compute() rejected.
    expect(await stateOf(d!)).toBe('free');
    const next = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [d!.address], localFallback: false, workerWaitMs: 2000 });
    const t0 = performance.now();
    expect(await next.compute()).toEqual([2, 4, 6]);
    expect(next.stats().workers.map((w) => w.id)).toEqual([d!.id]);
    expect(performance.now() - t0).toBeLessThan(2000);
    console.log(
      `abort: compute() rejected ${rejectedAfter.toFixed(0)} ms after abort(); the next run recruited the worker in ${(performance.now() - t0).toFixed(0)} ms`,
    );
  });

  it('signal: an already aborted signal rejects with FarmAbortError without recruiting anything', async () => {
    const [d] = await daemons.start(1);
    const farm = new TaskFarm(fixture('double.ts'), [1, 2, 3], { peers: [d!.address], localFallback: false, signal: AbortSignal.abort() });
    let recruited = 0;
    farm.on('recruited', () => recruited++);
    const err = await settle(farm.compute());
    expect(err).toBeInstanceOf(FarmAbortError);
    expect((err as FarmAbortError).code).toBe('FARM_ERR_ABORTED');
    expect(recruited).toBe(0);
    expect(await stateOf(d!)).toBe('free');
  });

  it('local fallback: unreachable peers, workerWaitMs 300 and localFallback: true → computed on local threads; by default with peers → NoWorkersError', async () => {
    const port = await closedPort();
    const peers = [`127.0.0.1:${port}`];
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3, 4], { peers, workerWaitMs: 300, threads: 1, localFallback: true });
    const recruited: WorkerInfo[] = [];
    farm.on('recruited', (w) => recruited.push(w));
    const t0 = performance.now();
    expect(await farm.compute()).toEqual([2, 4, 6, 8]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(280);
    expect(farm.stats().workers.map((w) => [w.id, w.completed])).toEqual([['local', 4]]);
    expect(recruited.map((w) => [w.id, w.local])).toEqual([['local', true]]);

    const t1 = performance.now();
    // Listed peers are a promise: no quiet fallback unless asked for.
    const err = await settle(new TaskFarm(fixture('double.ts'), [1, 2], { peers, workerWaitMs: 300 }).compute());
    const waited = performance.now() - t1;
    expect(err).toBeInstanceOf(NoWorkersError);
    expect((err as NoWorkersError).code).toBe('FARM_ERR_NO_WORKERS');
    // It says what it tried.
    expect((err as NoWorkersError).message).toContain(peers[0]);
    expect(waited).toBeGreaterThanOrEqual(280);
    expect(waited).toBeLessThan(3000);
  });

  // Regression: the run's own timers keep a standalone script alive while it waits for workers.
  it('local fallback also works in a standalone script (nothing else keeping the process alive)', async () => {
    const port = await closedPort();
    const r = await inOwnProcess({
      stage: 'double.ts',
      inputs: [1, 2, 3],
      options: { peers: [`127.0.0.1:${port}`], workerWaitMs: 300, threads: 1, localFallback: true },
    });
    expect(r.outcome, `exit ${r.code}; stderr: ${r.stderr}`).toEqual({ outputs: [2, 4, 6], workers: ['local'] });
    expect(r.code).toBe(0);
  });

  it('static peers are retried: a daemon started mid-run is recruited mid-run and takes tasks', async () => {
    const port = await closedPort();
    const [a] = await daemons.start(1);
    // A computes the first 50 tasks; the others wait for a gate file that the test creates once
    // B is recruited, so the run lasts until then however slowly B starts (the farm retries an
    // address that refused after 0.5, 1, 2, 4, 8 s: attempts at 3.5, 7.5, 15.5 s).
    const dir = mkdtempSync(join(tmpdir(), 'taskfarm-gate-'));
    const gate = join(dir, 'open');
    try {
      const n = 300;
      const farm = new TaskFarm<unknown, number>(
        fixture('gate-on.ts'),
        Array.from({ length: n }, (_, v) => (v < 50 ? { v, ms: 20 } : { v, ms: 20, gate, gateMs: 30_000 })),
        { peers: [a!.address, `127.0.0.1:${port}`], localFallback: false },
      );
      const recruitedAt = new Map<string, number>();
      farm.on('recruited', (w) => {
        recruitedAt.set(w.address, performance.now());
        if (w.address === `127.0.0.1:${port}`) writeFileSync(gate, '');
      });
      let starting: Promise<LocalDaemon[]> | undefined;
      let startedAtDone = -1;
      farm.on('progress', (p: FarmProgress) => {
        if (starting === undefined && p.done >= 3) {
          startedAtDone = p.done;
          // Later `--port` wins over the `--port 0` that startDaemon passes first.
          starting = daemons.start(1, ['--threads', '1', '--port', String(port)]);
          starting.catch(() => {}); // awaited (and its failure reported) after the run
        }
      });
      const outputs = await farm.compute();
      expect(outputs).toEqual(Array.from({ length: n }, (_, v) => v * 2));
      expect(starting).toBeDefined();
      const [b] = await starting!;
      expect(b!.port).toBe(port);
      const stats = farm.stats();
      const onB = stats.workers.find((w) => w.id === b!.id);
      expect(onB, JSON.stringify(stats.workers)).toBeDefined();
      expect(onB!.address).toBe(`127.0.0.1:${port}`);
      expect(onB!.completed).toBeGreaterThan(0);
      expect(stats.workers.find((w) => w.id === a!.id)!.completed).toBe(n - onB!.completed);
      expect(recruitedAt.get(b!.address)!).toBeGreaterThan(recruitedAt.get(a!.address)!);
      console.log(`daemon started at ${startedAtDone}/${n} outputs was recruited mid-run and computed ${onB!.completed} tasks`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 45_000);

  it('results() yields every index exactly once', async () => {
    const ds = await daemons.start(2);
    const n = 500;
    const farm = new TaskFarm<number, number>(
      fixture('double.ts'),
      Array.from({ length: n }, (_, i) => i),
      {
        peers: ds.map((d) => d.address),
        localFallback: false,
      },
    );
    const seen = new Map<number, number[]>();
    for await (const { index, output } of farm.results()) seen.set(index, [...(seen.get(index) ?? []), output]);
    expect(seen.size).toBe(n);
    for (let i = 0; i < n; i++) expect(seen.get(i), `index ${i}`).toEqual([i * 2]);
    expect(farm.stats().completed).toBe(n);
  });

  it('results(): breaking out of the loop early cancels the run and releases the worker at once', async () => {
    const [d] = await daemons.start(1);
    const farm = new TaskFarm<unknown, number>(
      fixture('spin.ts'),
      Array.from({ length: 200 }, (_, v) => ({ v, ms: 50 })),
      { peers: [d!.address], localFallback: false, leaseTimeoutMs: 20_000 },
    );
    const got: number[] = [];
    let brokeAt = 0;
    for await (const { index } of farm.results()) {
      got.push(index);
      if (got.length === 3) {
        brokeAt = performance.now();
        break;
      }
    }
    const returnedAfter = performance.now() - brokeAt;
    expect(got).toHaveLength(3);
    expect(returnedAfter).toBeLessThan(1500);
    expect(farm.stats().completed).toBeLessThan(200);
    // The loop's exit waited for the release: the worker is free now, not after the 20 s lease.
    expect(await stateOf(d!)).toBe('free');
    const next = new TaskFarm<number, number>(fixture('double.ts'), [5, 6], { peers: [d!.address], localFallback: false, workerWaitMs: 2000 });
    expect(await next.compute()).toEqual([10, 12]);
    expect(next.stats().workers.map((w) => w.id)).toEqual([d!.id]);
  });

  it('an async iterable (async generator) of inputs works end to end, in input order', async () => {
    const ds = await daemons.start(2);
    const n = 120;
    let pulled = 0;
    async function* inputs(): AsyncGenerator<{ v: number; ms: number }> {
      for (let v = 0; v < n; v++) {
        if (v % 10 === 0) await tick();
        pulled++;
        yield { v, ms: 2 };
      }
    }
    const farm = new TaskFarm<unknown, number>(fixture('spin.ts'), inputs(), { peers: ds.map((d) => d.address), localFallback: false });
    const progress: FarmProgress[] = [];
    farm.on('progress', (p) => progress.push(p));
    expect(await farm.compute()).toEqual(Array.from({ length: n }, (_, v) => v * 2));
    expect(pulled).toBe(n);
    expect(farm.stats().completed).toBe(n);
    // The number of inputs is not known in advance.
    expect(progress.at(-1)).toMatchObject({ done: n, total: undefined });
  });
});

describe('option validation', () => {
  const stage = fixture('double.ts');
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['threads: 0', { threads: 0 }, /^Expected `threads` to be an integer in \[1, 1024\], got `0` \(number\)$/],
    ['threads: 1.5', { threads: 1.5 }, /^Expected `threads` to be an integer in \[1, 1024\], got `1\.5` \(number\)$/],
    [
      'heartbeatTimeoutMs equal to heartbeatMs',
      { heartbeatMs: 500, heartbeatTimeoutMs: 500 },
      /^Expected `heartbeatTimeoutMs` to be an integer >= 501, got `500` \(number\)$/,
    ],
    [
      'heartbeatTimeoutMs below heartbeatMs',
      { heartbeatMs: 200, heartbeatTimeoutMs: 100 },
      /^Expected `heartbeatTimeoutMs` to be an integer >= 201, got `100` \(number\)$/,
    ],
    ['workerWaitMs: -1', { workerWaitMs: -1 }, /^Expected `workerWaitMs` to be an integer >= 0, got `-1` \(number\)$/],
    ['localFallback: "no"', { localFallback: 'no' }, /^Expected `localFallback` to be a boolean, got `"no"` \(string\)$/],
    ['leaseTimeoutMs: 100', { leaseTimeoutMs: 100 }, /^Expected `leaseTimeoutMs` to be an integer >= 300, got `100` \(number\)$/],
    ['an unknown option', { treads: 4 }, /^Unknown option `treads`; known options: .*\bthreads\b/],
    ['both peers and discovery', { peers: ['127.0.0.1:1'], discovery: new MemoryDiscovery() }, /either `peers` or `discovery`/],
    ['peers not an array', { peers: '127.0.0.1:1' }, /`peers` to be an array/],
    ['signal not an AbortSignal', { signal: { aborted: false } }, /`signal` to be an AbortSignal/],
  ];
  for (const [what, options, message] of cases) {
    it(`${what}: the constructor throws InvalidOptionError naming the option`, () => {
      let err: unknown;
      try {
        new TaskFarm(stage, [1], options);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidOptionError);
      expect((err as InvalidOptionError).code).toBe('FARM_ERR_INVALID_OPTION');
      expect((err as InvalidOptionError).message).toMatch(message);
    });
  }

  // Regression: peer strings are checked with the other options (run in a child process so a
  // failure could not surface as an unhandled rejection in this test run).
  it("a malformed peer 'nohostport': InvalidOptionError naming it (from the constructor or compute())", async () => {
    const r = await inOwnProcess({ stage: 'double.ts', inputs: [1], options: { peers: ['nohostport'], localFallback: false, workerWaitMs: 300 } }, 10_000);
    expect(r.outcome?.error, `exit ${r.code}; stderr: ${r.stderr}`).toMatchObject({ name: 'InvalidOptionError', code: 'FARM_ERR_INVALID_OPTION' });
    expect(r.outcome!.error!.message).toMatch(/`peers`.*`"nohostport"`/);
  });

  it('inputs that are not iterable: TypeError from the constructor', () => {
    expect(() => new TaskFarm(stage, 42 as unknown as number[])).toThrow(TypeError);
  });
});
