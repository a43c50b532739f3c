/**
 * The manager SIGKILLed at random points of a running job (and once in the middle of a streamed
 * submit), restarted on the same SQLite store each time: every output exact and single, tasks
 * committed before a kill never run again, the abandoned submit leaves nothing, `pragma
 * integrity_check` is ok. The manager is test/fixtures/service-process.mjs (the service core, no
 * HTTP); executions are counted by the stage (test/fixtures/chaos-mark.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteJobStore } from '../../dist/src/index.js';
import { Daemons, fixture, tempDir } from '../helpers/daemons.js';

interface Exec {
  v: number;
  exec: string;
  start: number;
}

function executions(dir: string): Exec[] {
  const out: Exec[] = [];
  for (const f of readdirSync(dir)) {
    if (!f.startsWith('exec-')) continue;
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) if (line.length > 0) out.push(JSON.parse(line) as Exec);
  }
  return out;
}

/** A manager process and the lines it printed. */
class Manager {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly #lines: string[] = [];
  #waiters: (() => void)[] = [];
  #stderr = '';

  constructor(args: readonly string[]) {
    this.child = spawn(process.execPath, [fixture('service-process.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.#lines.push(line);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      if (this.#stderr.length < 8000) this.#stderr += d.toString();
    });
    void this.exited.then(() => {
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  /** The first line that `match` accepts (searching every line printed so far), within `timeoutMs`. */
  async line<T>(what: string, match: (line: string) => T | undefined, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    for (;;) {
      for (; seen < this.#lines.length; seen++) {
        const m = match(this.#lines[seen]!);
        if (m !== undefined) return m;
      }
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`manager exited before ${what}\n${this.#stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms\n${this.#lines.slice(-5).join('\n')}\n${this.#stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** Deterministic pseudo-random numbers in [0, 1) (seed printed, replay with TASKFARM_FUZZ_SEED). */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

describe('job service: manager killed and restarted on the same store', () => {
  const daemons = new Daemons();
  const managers: Manager[] = [];
  const dirs: { remove: () => void }[] = [];
  afterEach(async () => {
    await Promise.all(managers.splice(0).map((m) => m.kill()));
    await daemons.stopAll();
    for (const d of dirs.splice(0)) d.remove();
  });

  it('SIGKILL at random points of a running job, three times: every output exact and single, committed tasks never rerun, integrity ok', async () => {
    const seed = Number(process.env['TASKFARM_FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    process.stderr.write(`[service-kill] seed ${seed} (TASKFARM_FUZZ_SEED replays)\n`);
    const random = rng(seed);
    const ds = await daemons.start(2, ['--threads', '1']);
    const peers = ds.map((d) => d.address).join(',');
    const t = tempDir();
    dirs.push(t);
    const storePath = join(t.path, 'jobs.db');
    const execDir = join(t.path, 'exec');
    mkdirSync(execDir);
    const n = 3000;
    const jobFile = join(t.path, 'job.json');
    // The stage goes as inline source: the manager bundles it (it imports Node built-ins only).
    const source = readFileSync(fixture('chaos-mark.ts'), 'utf8');
    writeFileSync(
      jobFile,
      JSON.stringify({ spec: { name: 'kill', stages: [{ source }] }, inputs: Array.from({ length: n }, (_, v) => ({ v, ms: 2, dir: execDir })) }),
    );
    const thresholds = [0.15, 0.4, 0.65].map((base) => Math.floor(n * (base + random() * 0.15)));
    const kills: { committed: Set<number>; restartAt: number }[] = [];
    let ticket = '';
    for (const [k, threshold] of thresholds.entries()) {
      const m = new Manager([storePath, peers, '--submit', jobFile, ...(k === 0 ? ['--slow-submit', '1000000'] : [])]);
      managers.push(m);
      ticket = await m.line('READY', (l) => /^READY ticket=(\S+)/.exec(l)?.[1]);
      if (k === 0) await m.line('SUBMITTING', (l) => (l === 'SUBMITTING' ? true : undefined));
      await m.line(`progress past ${threshold}`, (l) => {
        const p = /^PROGRESS (\d+)/.exec(l);
        return p !== null && Number(p[1]) >= threshold ? true : undefined;
      });
      await m.kill();
      const store = await SqliteJobStore.open(storePath);
      const committed = new Set<number>();
      try {
        expect((await store.getJob(ticket))?.state).toBe('running');
        for await (const r of store.readResults(ticket)) committed.add(r.index);
      } finally {
        await store.close();
      }
      expect(committed.size).toBeGreaterThanOrEqual(threshold);
      kills.push({ committed, restartAt: Date.now() });
    }
    const last = new Manager([storePath, peers]);
    managers.push(last);
    expect(await last.line('READY', (l) => /^READY ticket=(\S+)/.exec(l)?.[1])).toBe(ticket);
    await last.line('STATE done', (l) => (l === 'STATE done' ? true : undefined), 120_000);
    last.child.kill('SIGTERM');
    expect(await last.exited).toBe(0);

    const store = await SqliteJobStore.open(storePath);
    try {
      const job = (await store.getJob(ticket))!;
      expect(job.state).toBe('done');
      expect(job.counts).toEqual({ pending: 0, running: 0, done: n, failed: 0 });
      expect(await store.recount(ticket)).toEqual(job.counts);
      // The submit the first kill interrupted left nothing behind.
      expect((await store.listJobs()).items.map((j) => j.ticket)).toEqual([ticket]);
      const execs = executions(execDir);
      const byV = new Map<number, Exec[]>();
      for (const e of execs) byV.set(e.v, [...(byV.get(e.v) ?? []), e]);
      let index = 0;
      for await (const r of store.readResults(ticket)) {
        expect(r.index).toBe(index++);
        const out = JSON.parse((r as { output: string }).output) as { r: number; exec: string };
        expect(out.r).toBe(r.index * 2);
        // The stored output is one a real execution of this input produced.
        expect(byV.get(r.index)?.some((e) => e.exec === out.exec)).toBe(true);
      }
      expect(index).toBe(n);
      // A task committed before a kill never ran again after the restart.
      for (const { committed, restartAt } of kills) {
        const rerun = execs.filter((e) => committed.has(e.v) && e.start >= restartAt);
        expect(rerun).toEqual([]);
      }
      const extra = execs.length - n;
      process.stderr.write(`[service-kill] ${execs.length} executions for ${n} tasks over ${kills.length} kills (${extra} ran again)\n`);
      expect(extra).toBeGreaterThanOrEqual(0);
      expect(extra).toBeLessThanOrEqual(kills.length * 100);
      expect(await store.integrityCheck()).toEqual(['ok']);
    } finally {
      await store.close();
    }
  }, 240_000); // its waits allow 60 s per step and 120 s for the last run: the default 30 s cut it short under load
});
