/**
 * Prometheus metrics of real processes, parsed by a real parser and named by the conventions:
 * `taskfarm worker --metrics-port` (a daemon's own port) after a real job on a FarmPool, and
 * `GET /metrics` of a real `taskfarm serve` on a real store after real jobs on real daemons,
 * one of them SIGKILLed mid-job.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { FarmPool } from '../../dist/src/index.js';
import { CLI, REPO } from '../helpers/cli.js';
import { tempDir, waitForLine } from '../helpers/daemons.js';
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

/** Runs a CLI command to its end; resolves with its stdout (rejects on a non-zero exit). */
async function cli(args: readonly string[]): Promise<string> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`taskfarm ${args.join(' ')} exited ${code}: ${err}`);
  return out;
}

/** Polls `check` (every 50 ms) until it returns a value other than undefined, failing after `ms`. */
async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('GET /metrics of a real taskfarm serve', () => {
  const children: ChildProcess[] = [];
  const dirs: { remove: () => void }[] = [];
  afterEach(async () => {
    await Promise.all(children.splice(0).map(stop));
    for (const d of dirs.splice(0)) d.remove();
  });

  it('counts jobs, tasks, durations, workers, recruits, losses by reason, requeues, bytes and store commits', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const [a, b] = await Promise.all([startWorker(`${dir.path}/a`), startWorker(`${dir.path}/b`)]);
    children.push(a.child, b.child);
    const manager = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--host',
        '127.0.0.1',
        '--port',
        '0',
        '--store',
        `${dir.path}/jobs.db`,
        '--peers',
        `127.0.0.1:${a.port},127.0.0.1:${b.port}`,
        '--log-level',
        'error',
      ],
      { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.unshift(manager); // stopped first
    const [, port] = await waitForLine(manager.stdout, /^READY port=(\d+)/, 30_000);
    const url = `http://127.0.0.1:${port}`;
    const token = (await cli(['token', 'create', '--user', 'ada', '--server', url])).trim().split('\n').pop() ?? '';
    const api = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
      const res = await fetch(url + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, json: text.length > 0 ? (JSON.parse(text) as Record<string, unknown>) : {} };
    };
    let text = '';
    const scrape = async (): Promise<ReturnType<typeof parseExposition>> => {
      const res = await fetch(`${url}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      text = await res.text();
      return parseExposition(text);
    };
    const stage =
      'export default async (x) => { if (x.ms > 0) await new Promise((r) => setTimeout(r, x.ms)); if (x.fail) throw new Error("no " + x.i); return x.i * 2; };';
    const submit = async (name: string, inputs: unknown[], extra: Record<string, unknown> = {}): Promise<string> => {
      const r = await api('POST', '/api/v1/jobs', { name, stages: [{ source: stage }], inputs, ...extra });
      expect(r.status).toBe(201);
      return r.json['ticket'] as string;
    };
    const stateOf = async (t: string): Promise<string> => (await api('GET', `/api/v1/jobs/${t}`)).json['state'] as string;
    const ended = (t: string): Promise<string> =>
      until(`job ${t} to end`, async () => ((s) => (['done', 'failed'].includes(s) ? s : undefined))(await stateOf(t)));

    const quick = await submit(
      'quick',
      Array.from({ length: 300 }, (_, i) => ({ i, ms: 1 })),
    );
    const failing = await submit('failing', [{ i: 0 }, { i: 1, fail: true }, { i: 2 }], { errors: 'collect' });
    await submit('held', [{ i: 0 }], { hold: true });
    expect(await ended(quick)).toBe('done');
    expect(await ended(failing)).toBe('done');

    let m = await scrape();
    expect(namingProblems(m, 'taskfarm_')).toEqual([]);
    expect(sample(m, 'taskfarm_jobs', { state: 'done' })).toBe(2);
    expect(sample(m, 'taskfarm_jobs', { state: 'held' })).toBe(1);
    expect(sample(m, 'taskfarm_tasks', { state: 'pending' })).toBe(1); // the held job's one task
    expect(sample(m, 'taskfarm_tasks_completed_total', { outcome: 'done' })).toBe(302);
    expect(sample(m, 'taskfarm_tasks_completed_total', { outcome: 'failed' })).toBe(1);
    const durations = m.find((f) => f.name === 'taskfarm_task_duration_seconds');
    expect(durations?.type).toBe('HISTOGRAM');
    expect(Number(durations?.metrics[0]?.count)).toBe(302);
    expect(sample(m, 'taskfarm_recruits_total')).toBe(2);
    expect(sample(m, 'taskfarm_workers', { state: 'idle' })).toBe(2);
    expect(sample(m, 'taskfarm_shipped_bytes_total', { direction: 'sent' })).toBeGreaterThan(300 * 10);
    expect(sample(m, 'taskfarm_shipped_bytes_total', { direction: 'received' })).toBeGreaterThan(300);
    const commits = m.find((f) => f.name === 'taskfarm_store_commit_duration_seconds');
    expect(commits?.type).toBe('HISTOGRAM');
    // The parser keeps no count of a labelled histogram: read the _count line of each kind from the text.
    const commitCount = (kind: string): number =>
      Number(new RegExp(`^taskfarm_store_commit_duration_seconds_count\\{kind="${kind}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
    expect(commitCount('outputs')).toBeGreaterThan(0);
    expect(commitCount('inputs')).toBeGreaterThan(0);
    expect(commitCount('transition')).toBeGreaterThan(0);

    // A daemon SIGKILLed mid-job: a loss by reason, its tasks requeued, the job still done.
    const slow = await submit(
      'slow',
      Array.from({ length: 200 }, (_, i) => ({ i, ms: 20 })),
    );
    await until('both workers busy', async () => {
      const ws = (await api('GET', '/api/v1/workers')).json['workers'] as { state: string; inFlight: number }[];
      return ws.filter((w) => w.inFlight > 0).length === 2 ? true : undefined;
    });
    b.child.kill('SIGKILL');
    expect(await ended(slow)).toBe('done');
    m = await scrape();
    const losses = m.find((f) => f.name === 'taskfarm_worker_losses_total');
    const lost = (losses?.metrics ?? []).reduce((n, x) => n + Number(x.value), 0);
    expect(lost).toBe(1);
    expect(sample(m, 'taskfarm_worker_losses_total', { reason: 'other' })).toBe(0);
    expect(sample(m, 'taskfarm_tasks_requeued_total')).toBeGreaterThan(0);
    expect(sample(m, 'taskfarm_workers', { state: 'lost' })).toBe(1);
    expect(sample(m, 'taskfarm_tasks_completed_total', { outcome: 'done' })).toBe(502);

    // The worker pages say the same: the loss with its reason and requeued tasks, what each ran.
    const ws = (await api('GET', '/api/v1/workers')).json['workers'] as { id: string; state: string }[];
    expect(ws.map((w) => w.state).sort()).toEqual(['idle', 'lost']);
    const details = await Promise.all(ws.map(async (w) => ({ w, d: await api('GET', `/api/v1/workers/${encodeURIComponent(w.id)}`) })));
    for (const { d } of details) expect(d.status).toBe(200);
    const lostDetail = details.find((x) => x.w.state === 'lost')!.d.json;
    const loss = lostDetail['losses'] as { reason: string; requeued: number; at: string }[];
    expect(loss).toHaveLength(1);
    expect(loss[0]!.requeued).toBeGreaterThan(0);
    expect(Date.parse(loss[0]!.at)).toBeGreaterThan(0);
    const ran = details.flatMap(({ d }) => d.json['jobs'] as { ticket: string; done: number }[]);
    expect(ran.filter((j) => j.ticket === quick).reduce((n, j) => n + j.done, 0)).toBe(300);
    expect(ran.filter((j) => j.ticket === slow).reduce((n, j) => n + j.done, 0)).toBe(200);
    expect((await api('GET', '/api/v1/workers/no-such-worker')).status).toBe(404);

    // The job's stats: every done task timed, the throughput adds up.
    const stats = (await api('GET', `/api/v1/jobs/${quick}/stats`)).json as {
      durations: { count: number; counts: number[] };
      throughput: { done: number[] };
      workers: { done: number }[];
    };
    expect(stats.durations.count).toBe(300);
    expect(stats.durations.counts.reduce((x, y) => x + y, 0)).toBe(300);
    expect(stats.throughput.done.reduce((x, y) => x + y, 0)).toBe(300);
    expect(stats.workers.reduce((n, w) => n + w.done, 0)).toBe(300);
  }, 90_000);
});
