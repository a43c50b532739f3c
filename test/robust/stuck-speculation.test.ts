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
      let done = 0;
      farm.on('progress', (p) => (done = p.done));
      const run = farm.compute().catch((e: unknown) => e);
      await until('every other task to be done', () => done === n - 1, 15_000);
      // Then one daemon spins (the stuck task's thread) and the other goes idle: either no copy was
      // ever made, or the backup copy was cancelled once it ran 10 × beyond the longest task time.
      // Polled with a deadline; each probe is a measurement window (CPU each daemon burns in 1 s).
      let grew: number[] = [];
      await until(
        'one of the two daemons to be idle for a whole second',
        async () => {
          const before = ds.map((d) => cpuMs(d.pid));
          await new Promise((r) => setTimeout(r, 1000));
          grew = ds.map((d, i) => cpuMs(d.pid) - before[i]!);
          return Math.min(...grew) < 300;
        },
        15_000,
        0,
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}; CPU ms: ${grew.join(', ')}; copies: ${farm.stats().speculated}; log:\n${log.lines.slice(-20).join('\n')}`);
      });
      const speculated = farm.stats().speculated;
      console.log(`stuck task: CPU ms per daemon in one second: ${grew.join(', ')}; backup copies made: ${speculated}`);
      expect(speculated).toBeLessThanOrEqual(1);
      // A copy that was made was given up, and the run said why (the task looks stuck: set taskTimeoutMs).
      if (speculated === 1) expect(log.lines.some((l) => l.startsWith('warn a task looks stuck') && l.includes(`"index":${stuck}`))).toBe(true);
      abort.abort();
      expect(await run).toBeInstanceOf(FarmAbortError);
    },
  );
});
