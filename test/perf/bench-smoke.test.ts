import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

describe('npm run bench', () => {
  it('runs every measurement to completion in smoke mode (tiny sizes, no thresholds)', { timeout: 120_000 }, async () => {
    const root = new URL('../../', import.meta.url).pathname;
    const child = spawn(process.execPath, ['dist/bench/run.js', '--smoke'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    expect(code, stderr).toBe(0);
    const json = JSON.parse(readFileSync(`${root}bench/results/smoke.json`, 'utf8')) as { figures: { name: string; median: number }[] };
    const names = json.figures.map((f) => f.name).join('\n');
    for (const what of [
      'ceiling: raw grpc-js',
      'ceiling: in-process pool',
      'tiny tasks',
      'round trip',
      'CPU-bound speedup',
      'SIGKILL',
      'SIGSTOP',
      'executed twice',
      'peak RSS',
      'scale: per-task dispatch cost',
      'optimize: generation of',
      'optimize: 10 µs objective',
    ]) {
      expect(names).toContain(what);
    }
    for (const f of json.figures) expect(Number.isFinite(f.median), f.name).toBe(true);
    expect(stdout).toMatch(/\| figure/);
  });
});
