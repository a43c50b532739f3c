/**
 * Issue 9, item 5 (speculation half): a task stuck in an infinite loop, without taskTimeoutMs, must
 * not keep two cores busy. Speculation may copy it while it still looks like a straggler, but once
 * a copy has run far beyond every task time seen (10 × the longest, at least 2 s) it is stuck, not
 * straggling: it gets no copy, and a backup copy already made is cancelled on its worker.
 * Real daemons in child processes on 127.0.0.1; CPU time read from /proc.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { FarmAbortError, TaskFarm, type Logger } from '../../dist/src/index.js';
import { Daemons, fixture, until } from '../helpers/daemons.js';

/** CPU time (user + system, ms) a process has used so far, from /proc. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

function capturingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const at = (level: string) => (message: string, fields?: Record<string, unknown>) => {
    lines.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

describe('speculation and a stuck task', () => {
  const daemons = new Daemons();
  afterEach(async () => {
    await daemons.stopAll();
  });

  it(
    'an infinite loop with speculation on keeps one core, not two: no copy once it is far beyond every task time, a backup copy is cancelled',
    { timeout: 30_000 },
    async () => {
      const ds = await daemons.start(2, ['--threads', '1']);
      const n = 30;
      const stuck = n - 1; // last in: speculation sees it as a straggler at first, and copies it
      const log = capturingLogger();
      const abort = new AbortController();
      const farm = new TaskFarm<{ v: number; ms: number; stuckOn: number }, number>(
        fixture('stuck-on.ts'),
        Array.from({ length: n }, (_, v) => ({ v, ms: 20, stuckOn: stuck })),
        { peers: ds.map((d) => d.address), signal: abort.signal, logger: log },
      );
      const lost: unknown[] = [];
      farm.on('lost', (e) => lost.push(e));
      let done = 0;
      farm.on('progress', (p) => (done = p.done));
      const run = farm.compute().catch((e: unknown) => e);
      await until('every other task to be done', () => done === n - 1, 15_000);
      // Speculation copies it while it looks like a straggler (3 × the median task time); once the
      // copy has run 10 × beyond the longest task time seen (2 s here) the run calls it stuck and
      // cancels the copy on its worker. (A worker declared lost meanwhile, on a loaded machine,
      // ends a copy too.)
      await until(
        'the run to call the task stuck',
        () => lost.length > 0 || log.lines.some((l) => l.startsWith('warn a task looks stuck') && l.includes(`"index":${stuck}`)),
        20_000,
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}; copies: ${farm.stats().speculated}; log:\n${log.lines.slice(-20).join('\n')}`);
      });
      expect(farm.stats().speculated).toBeLessThanOrEqual(1);
      // From now on one daemon spins (the stuck task's thread) and the other is idle. A measurement
      // window, not a wait for an event: how much CPU each daemon burns in one second.
      const before = ds.map((d) => cpuMs(d.pid));
      await new Promise((r) => setTimeout(r, 1000));
      const grew = ds.map((d, i) => cpuMs(d.pid) - before[i]!);
      console.log(`stuck task: CPU ms per daemon in the second after it was called stuck: ${grew.join(', ')}; backup copies made: ${farm.stats().speculated}`);
      expect(Math.min(...grew)).toBeLessThan(300);
      // No new copy after that.
      expect(farm.stats().speculated).toBeLessThanOrEqual(1);
      abort.abort();
      expect(await run).toBeInstanceOf(FarmAbortError);
    },
  );
});
