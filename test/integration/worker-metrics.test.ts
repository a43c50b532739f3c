/**
 * `taskfarm worker --metrics-port`: a real daemon process serves Prometheus metrics on its own
 * port; after a real job on a FarmPool its series say what it did, parsed by a real parser and
 * named by the conventions.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { FarmPool } from '../../dist/src/index.js';
import { CLI } from '../helpers/cli.js';
import { tempDir } from '../helpers/daemons.js';
import { namingProblems, parseExposition, sample } from '../helpers/prometheus.js';

interface Started {
  readonly child: ChildProcess;
  readonly port: number;
  readonly metricsPort: number;
}

/** Starts a daemon with --metrics-port 0; resolves once its READY line (after its METRICS line) is out. */
function startWorker(cacheDir: string, extra: readonly string[] = []): Promise<Started> {
  const child = spawn(
    process.execPath,
    [
      CLI,
      'worker',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--no-advertise',
      '--threads',
      '2',
      '--cache-dir',
      cacheDir,
      '--log-level',
      'warn',
      '--metrics-port',
      '0',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`no READY line within 20 s: ${err}`)), 20_000);
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const ready = /^READY port=(\d+)/m.exec(out);
      const metrics = /^METRICS port=(\d+)/m.exec(out);
      if (ready !== null) {
        clearTimeout(timer);
        if (metrics === null) reject(new Error(`READY without a METRICS line before it: ${out}`));
        else resolve({ child, port: Number(ready[1]), metricsPort: Number(metrics[1]) });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`taskfarm worker exited ${code}: ${err}`));
    });
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

describe('taskfarm worker --metrics-port', () => {
  const children: ChildProcess[] = [];
  const dirs: { remove: () => void }[] = [];
  const pools: FarmPool[] = [];
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.close()));
    await Promise.all(children.splice(0).map(stop));
    for (const d of dirs.splice(0)) d.remove();
  });

  it('serves the daemon’s series on 127.0.0.1, and they count a real job', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const w = await startWorker(dir.path);
    children.push(w.child);
    const scrape = async (): Promise<string> => {
      const res = await fetch(`http://127.0.0.1:${w.metricsPort}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      return res.text();
    };
    const before = parseExposition(await scrape());
    expect(sample(before, 'taskfarm_worker_tasks_completed_total')).toBe(0);
    expect(sample(before, 'taskfarm_worker_leased')).toBe(0);

    const pool = new FarmPool({ peers: [`127.0.0.1:${w.port}`], localFallback: false });
    pools.push(pool);
    const inputs = Array.from({ length: 200 }, (_, i) => i);
    const out = await pool.map((x: number) => x * 3, inputs);
    expect(out).toEqual(inputs.map((x) => x * 3));

    const text = await scrape();
    const families = parseExposition(text);
    expect(namingProblems(families, 'taskfarm_')).toEqual([]);
    expect(sample(families, 'taskfarm_worker_tasks_completed_total')).toBe(200);
    const durations = families.find((f) => f.name === 'taskfarm_worker_task_duration_seconds');
    expect(durations?.type).toBe('HISTOGRAM');
    expect(Number(durations?.metrics[0]?.count)).toBe(200);
    expect(sample(families, 'taskfarm_worker_leases_total')).toBe(1);
    expect(sample(families, 'taskfarm_worker_leased')).toBe(1);
    expect(sample(families, 'taskfarm_worker_tasks_in_flight')).toBe(0);
    expect(sample(families, 'taskfarm_worker_programs_loaded')).toBeGreaterThanOrEqual(1);
    expect(sample(families, 'taskfarm_worker_threads')).toBe(2);
    expect(sample(families, 'taskfarm_worker_threads_crashed_total')).toBe(0);
    expect(sample(families, 'taskfarm_worker_received_bytes_total', { kind: 'inputs' })).toBeGreaterThan(0);
    expect(sample(families, 'taskfarm_worker_received_bytes_total', { kind: 'bundles' })).toBeGreaterThan(0);
    // Node's process metrics ride along.
    expect(families.some((f) => f.name === 'process_cpu_seconds_total')).toBe(true);
    // Only /metrics is served there.
    expect((await fetch(`http://127.0.0.1:${w.metricsPort}/`)).status).toBe(404);
  });

  it('refuses a --metrics-port that is not a port, before starting (exit 2)', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const child = spawn(process.execPath, [CLI, 'worker', '--no-advertise', '--cache-dir', dir.path, '--metrics-port', 'http'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const [code] = (await once(child, 'exit')) as [number];
    expect(code).toBe(2);
    expect(err).toMatch(/--metrics-port/);
  });
});
