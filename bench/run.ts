/**
 * `npm run bench`: taskfarm against ceilings measured in the same run, on loopback.
 *
 *   node dist/bench/run.js [--smoke] [--runs N] [--out FILE] [--only section,…] [--service-parts rate,status,resume,rss,submit]
 *
 * Sections: ceilings, tiny, rtt, pool, optimize, cpu, recovery, memory, scale, store, service, dashboard.
 * --service-parts picks measurements of the service section (bench/service.ts; default all).
 *
 * Prints a table (each figure with its ratio to the ceilings) and writes it as JSON (default
 * bench/results/latest.json). --smoke runs every measurement at tiny sizes (for `npm test`).
 * Medians of several runs with min–max: the machine is noisy, ratios within one run count.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { deserialize, serialize } from 'node:v8';
import { Worker } from 'node:worker_threads';
import * as grpc from '@grpc/grpc-js';
import { TaskFarm, generateFarmKey } from '../src/index.js';
import { startDaemon, stopDaemon, type LocalDaemon } from '../client/local-daemons.js';
import { ECHO_SERVICE } from './echo-service.js';
import { poolCeiling } from './pool-ceiling.js';
import { concurrentJobs, equalSplit, percentile, priorityJob, warmRoundTrips, warmStart } from './pool.js';
import { concurrentRate, generationOverhead, parallelEfficiency } from './optimize-farm.js';
import { storeBench } from './store.js';
import { serviceBench, stopServiceBench, type ServicePart } from './service.js';
import { dashboardBench } from './dashboard.js';

const here = dirname(fileURLToPath(import.meta.url));

interface Figure {
  name: string;
  unit: string;
  median: number;
  min: number;
  max: number;
  runs: number;
  /** Ratios to ceilings, by ceiling name. */
  ratios?: Record<string, number>;
  target?: string;
  met?: boolean;
  note?: string;
}

const SECTIONS = ['ceilings', 'tiny', 'rtt', 'pool', 'optimize', 'cpu', 'recovery', 'memory', 'scale', 'store', 'service', 'dashboard'];
const { values } = parseArgs({
  options: {
    smoke: { type: 'boolean' },
    runs: { type: 'string' },
    out: { type: 'string' },
    only: { type: 'string' },
    'service-parts': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});
if (values.help === true) {
  process.stdout.write(`Usage: npm run bench -- [--smoke] [--runs N] [--out FILE] [--only SECTION,…] [--service-parts PART,…]

Measures taskfarm against ceilings measured in the same run. Every daemon it starts listens on
127.0.0.1 and is reached by address (no mDNS); PostgreSQL, when measured, is its own server on loopback.

  --smoke          every measurement at tiny sizes (what npm test runs)
  --runs N         runs per figure (default 3, 1 with --smoke); the table shows medians and min–max
  --out FILE       where the JSON goes (default bench/results/latest.json, smoke.json with --smoke)
  --only LIST      sections, comma-separated: ${SECTIONS.join(', ')}
  --service-parts LIST
                   of the service section only these, comma-separated: rate, status, resume, rss, submit
  -h, --help       this text
`);
  process.exit(0);
}
const smoke = values.smoke === true;
const runs = values.runs !== undefined ? Number(values.runs) : smoke ? 1 : 3;
const only = values.only?.split(',');
const unknown = only?.filter((x) => !SECTIONS.includes(x)) ?? [];
if (unknown.length > 0) {
  process.stderr.write(`bench: unknown section ${unknown.join(', ')}: the sections are ${SECTIONS.join(', ')}\n`);
  process.exit(2);
}
const out = values.out ?? join(here, '..', '..', 'bench', 'results', smoke ? 'smoke.json' : 'latest.json');
// A farm key for this run only: the daemons inherit it, and so do the clients in this process.
const key = generateFarmKey();
process.env['TASKFARM_KEY'] = key;
const env = { ...process.env };
const figures: Figure[] = [];
const children: ChildProcess[] = [];
const daemons: LocalDaemon[] = [];
const dirs: string[] = [];

const log = (m: string): void => void process.stderr.write(`[bench] ${m}\n`);

function stats(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { median: s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, min: s[0]!, max: s[s.length - 1]! };
}

async function repeat<T = number>(n: number, f: () => Promise<T>): Promise<T[]> {
  const xs: T[] = [];
  for (let i = 0; i < n; i++) xs.push(await f());
  return xs;
}

function record(name: string, unit: string, xs: number[], extra: Partial<Figure> = {}): Figure {
  const f: Figure = { name, unit, ...stats(xs), runs: xs.length, ...extra };
  figures.push(f);
  log(`${name}: ${fmt(f.median)} ${unit} (min ${fmt(f.min)}, max ${fmt(f.max)})`);
  return f;
}

function fmt(x: number): string {
  return Math.abs(x) >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(Math.abs(x) >= 10 ? 1 : 3);
}

function want(section: string): boolean {
  return only === undefined || only.includes(section);
}

function startChild(script: string, args: string[]): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn(process.execPath, [join(here, script), ...args], { stdio: ['ignore', 'pipe', 'inherit'], env });
  children.push(child);
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${script} did not start`)), 60_000);
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /^READY (.*)$/m.exec(buf);
      if (m !== null) {
        clearTimeout(timer);
        resolve({ child, line: m[1]! });
      }
    });
    child.once('exit', (code) => reject(new Error(`${script} exited (${code}) before it was ready`)));
  });
}

async function daemonsOf(n: number, threads: number): Promise<LocalDaemon[]> {
  const ds = await Promise.all(
    Array.from({ length: n }, () => {
      const dir = mkdtempSync(join(tmpdir(), 'taskfarm-bench-'));
      dirs.push(dir);
      return startDaemon(['--threads', String(threads), '--cache-dir', dir, '--log-level', 'error'], 30_000, env);
    }),
  );
  daemons.push(...ds);
  return ds;
}

async function stopAll(ds: LocalDaemon[]): Promise<void> {
  await Promise.all(ds.map((d) => stopDaemon(d)));
}

const double = (x: number): number => x * 2;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

// ---------------------------------------------------------------- ceilings

async function grpcCeiling(tasks: number, window = 16): Promise<number> {
  const { child, line } = await startChild('echo-server.js', []);
  const Client = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
  const client = new Client(`127.0.0.1:${line}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    Stream(): grpc.ClientDuplexStream<Buffer, Buffer>;
  };
  const once = async (): Promise<number> => {
    const call = client.Stream();
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      let sent = 0;
      let done = 0;
      call.on('data', (b: Buffer) => {
        const x = deserialize(b) as number;
        void (x * 2);
        done++;
        if (done === tasks) return resolve();
        if (sent < tasks) call.write(serialize(sent++));
      });
      call.on('error', reject);
      for (; sent < Math.min(window, tasks);) call.write(serialize(sent++));
    });
    const ms = performance.now() - t0;
    call.end();
    return (tasks / ms) * 1000;
  };
  await once(); // warm-up
  const xs = await repeat(runs, once);
  client.close();
  child.kill('SIGTERM');
  return stats(xs).median;
}

/**
 * Ceiling of a single-task round trip: one message at a time on a raw grpc-js echo stream (no
 * protobuf, no dispatch), plaintext or over TLS with a daemon's kind of certificate; p50 in ms.
 */
async function lockstepCeiling(tls: boolean, n: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'taskfarm-bench-echo-'));
  dirs.push(dir);
  const { child, line } = await startChild('echo-server.js', tls ? ['--tls', dir] : []);
  const credentials = tls
    ? grpc.credentials.createSsl(readFileSync(join(dir, 'cert.pem')), null, null, { checkServerIdentity: () => undefined })
    : grpc.credentials.createInsecure();
  const Client = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
  const client = new Client(`127.0.0.1:${line}`, credentials, { 'grpc.ssl_target_name_override': 'localhost' }) as unknown as grpc.Client & {
    Stream(): grpc.ClientDuplexStream<Buffer, Buffer>;
  };
  const call = client.Stream();
  let answered: (() => void) | undefined;
  call.on('data', () => answered?.());
  call.on('error', () => {});
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      answered = resolve;
      call.write(serialize(i));
    });
    xs.push(performance.now() - t0);
  }
  call.end();
  client.close();
  child.kill('SIGTERM');
  return percentile(xs.slice(Math.min(100, n >> 2)), 0.5);
}

/** Ceiling of the daemon's thread hop: one structured-clone message at a time to a worker thread and back; p50 in ms. */
async function threadHopCeiling(n: number): Promise<number> {
  const w = new Worker('require("node:worker_threads").parentPort.on("message", (m) => require("node:worker_threads").parentPort.postMessage(m));', {
    eval: true,
  });
  let answered: (() => void) | undefined;
  w.on('message', () => answered?.());
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      answered = resolve;
      w.postMessage({ seqs: [i], input: i });
    });
    xs.push(performance.now() - t0);
  }
  await w.terminate();
  return percentile(xs.slice(Math.min(100, n >> 2)), 0.5);
}

// ---------------------------------------------------------------- taskfarm

async function tinyTasks(peers: string[], tasks: number): Promise<number> {
  const t0 = performance.now();
  const outputs = await new TaskFarm<number, number>(double, range(tasks), { peers, localFallback: false }).compute();
  const ms = performance.now() - t0;
  if (outputs[tasks - 1] !== (tasks - 1) * 2) throw new Error('wrong outputs');
  return (tasks / ms) * 1000;
}

async function roundTrips(peers: string[], n: number): Promise<number[]> {
  // One task at a time on a warm lease: the next input is produced only when the previous output
  // arrived, so each round trip is send → compute → result, end to end through the client.
  const rtts: number[] = [];
  let release: (() => void) | undefined;
  let sentAt = 0;
  async function* inputs(): AsyncGenerator<number> {
    for (let i = 0; i < n; i++) {
      if (i > 0) await new Promise<void>((r) => (release = r));
      sentAt = performance.now();
      yield i;
    }
  }
  const farm = new TaskFarm<number, number>(double, inputs(), { peers, localFallback: false });
  for await (const _ of farm.results()) {
    rtts.push(performance.now() - sentAt);
    release?.();
  }
  return rtts.slice(Math.min(10, rtts.length >> 2)); // drop the warm-up (recruit, install, setup)
}

const spin = (ms: number): number => {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // CPU work
  }
  return ms;
};

async function cpuBound(address: string, tasks: number, ms: number): Promise<number> {
  const t0 = performance.now();
  await new TaskFarm<number, number>(spin, new Array<number>(tasks).fill(ms), { peers: [address], localFallback: false }).compute();
  return performance.now() - t0;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const sizes = smoke
    ? { tiny: 2_000, ceiling: 2_000, rtt: 30, cpu: 10, cpuMs: 5, million: 10_000, scale: [2, 4, 8], scaleTasks: 4_000, recovery: 400 }
    : { tiny: 200_000, ceiling: 200_000, rtt: 1_000, cpu: 200, cpuMs: 20, million: 1_000_000, scale: [10, 100, 1000], scaleTasks: 2_000_000, recovery: 3_000 };
  log(`${smoke ? 'smoke' : 'full'} run, ${runs} run(s) per figure`);

  const ceilings: Record<string, number> = {};
  if (want('ceilings') || want('tiny')) {
    ceilings['grpc'] = await grpcCeiling(sizes.ceiling);
    record('ceiling: raw grpc-js bidi echo (1 msg/task, window 16, v8 payload, 2 processes)', 'msgs/s', [ceilings['grpc']]);
    const pool = await repeat(runs, () => poolCeiling(sizes.ceiling));
    ceilings['pool'] = stats(pool).median;
    record('ceiling: in-process pool of 2 worker_threads (1 postMessage/task, 64 in flight)', 'tasks/s', pool);
  }

  if (want('tiny')) {
    const ds = await daemonsOf(2, 1);
    const peers = ds.map((d) => d.address);
    await tinyTasks(peers, Math.min(sizes.tiny, 20_000)); // warm the code caches
    const xs = await repeat(runs, () => tinyTasks(peers, sizes.tiny));
    const m = stats(xs).median;
    record(`taskfarm: ${sizes.tiny.toLocaleString('en-US')} tiny tasks, client + 2 daemons × 1 thread`, 'tasks/s', xs, {
      ratios: { 'vs pool': m / ceilings['pool']!, 'vs grpc': m / ceilings['grpc']! },
      target: '≥ 150,000/s, ≥ 1.0× pool, ≥ 2× grpc',
      met: m >= 150_000 && m >= ceilings['pool']! && m >= 2 * ceilings['grpc']!,
    });
    const local = await repeat(runs, async () => {
      const t0 = performance.now();
      await new TaskFarm<number, number>(double, range(sizes.tiny), { discovery: 'local', threads: 2 }).compute();
      return (sizes.tiny / (performance.now() - t0)) * 1000;
    });
    record(`taskfarm 'local': same tasks on 2 threads in the client`, 'tasks/s', local, { ratios: { 'vs pool': stats(local).median / ceilings['pool']! } });
    await stopAll(ds);
  }

  if (want('rtt')) {
    const ds = await daemonsOf(1, 1);
    const rtts = await roundTrips([ds[0]!.address], sizes.rtt);
    const s = [...rtts].sort((a, b) => a - b);
    const p = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
    figures.push({
      name: `single-task round trip on a warm lease, p50 (${rtts.length} sequential)`,
      unit: 'ms',
      median: p(0.5),
      min: s[0]!,
      max: s[s.length - 1]!,
      runs: 1,
      target: '≤ 0.3 ms',
      met: p(0.5) <= 0.3,
    });
    figures.push({ name: 'single-task round trip on a warm lease, p99', unit: 'ms', median: p(0.99), min: s[0]!, max: s[s.length - 1]!, runs: 1 });
    log(`round trip p50 ${p(0.5).toFixed(3)} ms, p99 ${p(0.99).toFixed(3)} ms`);
    await stopAll(ds);
  }

  if (want('pool')) {
    const ds = await daemonsOf(2, 1);
    const peers = ds.map((d) => d.address);
    const start = await warmStart(peers, smoke ? 5 : 200);
    figures.push({
      name: 'warm pool: run() → the first task starts on a worker (program held), p50',
      unit: 'ms',
      median: start.pool,
      min: start.pool,
      max: start.pool,
      runs: 1,
      ratios: { 'vs TaskFarm recruiting over TLS': start.pool / start.taskFarm },
      target: '≤ 1 ms',
      met: start.pool <= 1,
      note: `a TaskFarm on idle daemons that hold its bundle: ${fmt(start.taskFarm)} ms (recruit over TLS, then start); over mDNS add discovery`,
    });
    log(`warm start p50 ${start.pool.toFixed(3)} ms; TaskFarm ${start.taskFarm.toFixed(1)} ms`);
    // The floor under any single-task round trip on a farm: the TLS transport's own lock-step round
    // trip plus the daemon's hop to a worker thread and back, measured here, now.
    const hops = smoke ? 50 : 3_000;
    const plain = await lockstepCeiling(false, hops);
    const tls = await lockstepCeiling(true, hops);
    const hop = await threadHopCeiling(hops);
    const floor = tls + hop;
    record('ceiling: raw grpc-js lock-step round trip, plaintext, p50', 'ms', [plain]);
    record('ceiling: raw grpc-js lock-step round trip, TLS, p50', 'ms', [tls]);
    record('ceiling: worker-thread postMessage round trip, p50', 'ms', [hop]);
    record(
      'floor of a farm round trip: TLS lock-step + thread hop',
      'ms',
      [floor],
      floor > 0.25 ? { note: `above the 0.25 ms target on this machine: no round trip over the farm's TLS transport can meet it here` } : {},
    );
    const rt = await warmRoundTrips([peers[0]!], smoke ? 30 : 2_000);
    for (const [what, xs] of [
      ['one-task jobs in sequence', rt.jobs],
      ['one task at a time within a job', rt.within],
    ] as const) {
      figures.push({
        name: `warm pool: single-task round trip, ${what}, p50 (p99 ${fmt(percentile(xs, 0.99))})`,
        unit: 'ms',
        median: percentile(xs, 0.5),
        min: Math.min(...xs),
        max: Math.max(...xs),
        runs: 1,
        ratios: { 'vs floor': percentile(xs, 0.5) / floor },
        target: '≤ 0.25 ms',
        met: percentile(xs, 0.5) <= 0.25,
      });
      log(`round trip (${what}) p50 ${percentile(xs, 0.5).toFixed(3)} ms, p99 ${percentile(xs, 0.99).toFixed(3)} ms`);
    }
    const n = smoke ? 4_000 : 400_000;
    const one = await repeat(runs, () => concurrentJobs(peers, n, 1));
    const eight = await repeat(runs, () => concurrentJobs(peers, n, 8));
    record(`warm pool: ${n.toLocaleString('en-US')} tiny tasks as 1 job`, 'tasks/s', one);
    const r8 = stats(eight).median / stats(one).median;
    record(`warm pool: the same as 8 concurrent jobs`, 'tasks/s', eight, { ratios: { 'vs 1 job': r8 }, target: '≥ 0.9× 1 job', met: r8 >= 0.9 });
    const split = await repeat(runs, () => equalSplit(peers, smoke ? 40 : 400, 2));
    const sm = stats(split).median;
    record('warm pool: two equal jobs (2 ms tasks), share of the first when one finishes', 'share', split, {
      target: '0.5 ± 0.1',
      met: Math.abs(sm - 0.5) <= 0.1,
    });
    const prio = await repeat(runs, async () => (await priorityJob(peers, smoke ? 20 : 200, 2)).ratio);
    record('warm pool: priority-10 job (2 ms tasks) under a saturating priority-0 job, time over its time alone', '×', prio, {
      target: '≤ 1.2×',
      met: stats(prio).median <= 1.2,
    });
    await stopAll(ds);
  }

  if (want('optimize')) await optimizeSection();

  if (want('cpu')) {
    const [one] = await daemonsOf(1, 1);
    const [two] = await daemonsOf(1, 2);
    await cpuBound(one!.address, 2, 1);
    await cpuBound(two!.address, 2, 1);
    const t1 = await repeat(runs, () => cpuBound(one!.address, sizes.cpu, sizes.cpuMs));
    const t2 = await repeat(runs, () => cpuBound(two!.address, sizes.cpu, sizes.cpuMs));
    const speedup = t1.map((a, i) => a / t2[i]!);
    record(`CPU-bound speedup: ${sizes.cpu} tasks × ${sizes.cpuMs} ms, 1 daemon, 2 threads vs 1`, '×', speedup, {
      target: '≥ 1.97 (ideal 2.0)',
      met: stats(speedup).median >= 1.97,
      note: `1 thread ${fmt(stats(t1).median)} ms, 2 threads ${fmt(stats(t2).median)} ms; ideal 1 thread ${sizes.cpu * sizes.cpuMs} ms`,
    });
    await stopAll([one!, two!]);
  }

  if (want('recovery')) await recovery(sizes.recovery);

  if (want('memory')) {
    const ds = await daemonsOf(2, 1);
    const xs: { ms: number; peakRssMb: number; maxRssMb: number; checked: number }[] = [];
    for (let i = 0; i < runs; i++) {
      const child = spawn(process.execPath, [join(here, 'memory-client.js'), String(sizes.million), ds.map((d) => d.address).join(',')], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env,
      });
      children.push(child);
      let text = '';
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      await new Promise<void>((r) => child.once('exit', () => r()));
      const r = JSON.parse(text) as { ms: number; peakRssMb: number; maxRssMb: number; checked: number };
      if (r.checked !== sizes.million) throw new Error(`memory run checked ${r.checked} outputs`);
      xs.push(r);
    }
    record(
      `${sizes.million.toLocaleString('en-US')} tiny tasks from a generator, results() in order: time`,
      's',
      xs.map((r) => r.ms / 1000),
      {
        target: '≤ 30 s',
        met: stats(xs.map((r) => r.ms / 1000)).median <= 30,
      },
    );
    record(
      `${sizes.million.toLocaleString('en-US')} tiny tasks from a generator: client peak RSS`,
      'MB',
      xs.map((r) => Math.max(r.peakRssMb, r.maxRssMb)),
      {
        target: '≤ 200 MB',
        met: stats(xs.map((r) => Math.max(r.peakRssMb, r.maxRssMb))).median <= 200,
      },
    );
    await stopAll(ds);
  }

  if (want('scale')) await scale(sizes.scale, sizes.scaleTasks);

  if (want('store')) {
    // The job store alone (bench/store.ts): SQLite beside a private PostgreSQL, on one job of 1,000,000 tiny tasks.
    for (const f of await storeBench({ smoke, runs, log })) {
      record(f.name, f.unit, f.xs, { ...(f.target !== undefined ? { target: f.target } : {}), ...(f.met !== undefined ? { met: f.met } : {}) });
    }
  }

  if (want('service')) {
    // The job service core (bench/service.ts): tiny tasks with every output committed beside the
    // in-memory pool, status, restart after SIGKILL, manager RSS; SQLite beside PostgreSQL.
    const parts = values['service-parts']?.split(',') as ServicePart[] | undefined;
    for (const f of await serviceBench({ smoke, runs, log, ...(parts === undefined ? {} : { parts }) })) {
      record(f.name, f.unit, f.xs, {
        ...(f.ratios !== undefined ? { ratios: f.ratios } : {}),
        ...(f.target !== undefined ? { target: f.target } : {}),
        ...(f.met !== undefined ? { met: f.met } : {}),
      });
    }
  }

  if (want('dashboard')) {
    // Issue 12 (bench/dashboard.ts): first render of a 1,000,000-task job page, manager CPU per refresh, 50 dashboards vs none, page weight.
    for (const f of await dashboardBench({ smoke, runs, log })) {
      record(f.name, f.unit, f.xs, { ...(f.target !== undefined ? { target: f.target } : {}), ...(f.met !== undefined ? { met: f.met } : {}) });
    }
  }

  printTable();
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), smoke, runs, ceilings, figures }, null, 2) + '\n');
  log(`wrote ${out}`);
}

/** Issue 13: minimize() on a warm pool of 2 daemons × 1 thread. */
async function optimizeSection(): Promise<void> {
  const ds = await daemonsOf(2, 1);
  const peers = ds.map((d) => d.address);
  const eff = smoke ? { population: 8, taskMs: 20, generations: 3 } : { population: 40, taskMs: 20, generations: 10 };
  const effRuns = await repeat(runs, () => parallelEfficiency(peers, eff));
  const efficiency = effRuns.map((r) => r.idealMs / stats(r.generationMs).median);
  const ideal = effRuns[0]!.idealMs;
  record(
    `optimize: generation of ${eff.population} × ${eff.taskMs} ms on 2 daemons × 1 thread, parallel efficiency (ideal / generation time)`,
    '',
    efficiency,
    {
      target: '≥ 0.95',
      met: stats(efficiency).median >= 0.95,
      note: `ideal ${fmt(ideal)} ms (population × task ms / threads); generation time p50 ${fmt(stats(effRuns.flatMap((r) => r.generationMs)).median)} ms`,
    },
  );
  const over20 = effRuns.map((r) => stats(r.generationMs.map((g, i) => g - (r.slowestMs[i] ?? 0))).median);
  record(`optimize: per-generation overhead with a ${eff.taskMs} ms objective (generation time − the slowest worker's compute time)`, 'ms', over20, {
    target: '≤ 1 ms',
    met: stats(over20).median <= 1,
  });
  const ov = smoke ? { population: 40, generations: 10 } : { population: 40, generations: 300 };
  const ovRuns = await repeat(runs, () => generationOverhead(peers, ov));
  const genMs = ovRuns.map((r) => stats(r.generationMs).median);
  const mapMs = stats(ovRuns.map((r) => stats(r.mapMs).median)).median;
  record(`optimize: generation of ${ov.population} × ~0 ms objective on a warm pool (per-generation overhead), p50`, 'ms', genMs, {
    ratios: { 'vs a bare pool.map of the same tasks': stats(genMs).median / mapMs },
    target: '≤ 1 ms',
    met: stats(genMs).median <= 1,
    note: `a bare pool.map of the same ${ov.population} tasks (bundled program, warm pool): ${fmt(mapMs)} ms p50`,
  });
  const cc = smoke ? { population: 40, taskMs: 0.01, generations: 5, runs: 4 } : { population: 40, taskMs: 0.01, generations: 200, runs: 4 };
  const ccRuns = await repeat(runs, () => concurrentRate(peers, cc));
  const ratio = ccRuns.map((r) => r.many / r.one);
  record(`optimize: 10 µs objective, ${cc.runs} concurrent optimisations on one pool, evaluation rate over one alone`, '×', ratio, {
    target: '≥ 3×',
    met: stats(ratio).median >= 3,
    note: `one alone ${fmt(stats(ccRuns.map((r) => r.one)).median)} evaluations/s, ${cc.runs} at once ${fmt(stats(ccRuns.map((r) => r.many)).median)} evaluations/s (population ${cc.population})`,
  });
  await stopAll(ds);
}

async function recovery(tasks: number): Promise<void> {
  const killTimes: number[] = [];
  const stopTimes: number[] = [];
  const twice: number[] = [];
  for (let r = 0; r < runs; r++) {
    for (const how of ['SIGKILL', 'SIGSTOP'] as const) {
      const ds = await daemonsOf(2, 1);
      const logDir = mkdtempSync(join(tmpdir(), 'taskfarm-bench-exec-'));
      dirs.push(logDir);
      // Each execution appends its index to a file of its process: executions − inputs = executed twice.
      const stage = join(logDir, 'stage.mjs');
      writeFileSync(
        stage,
        `import { appendFileSync } from 'node:fs';\nexport default (i) => { const end = performance.now() + 1; while (performance.now() < end); appendFileSync(${JSON.stringify(logDir)} + '/exec-' + process.pid, i + '\\n'); return i; };\n`,
      );
      const farm = new TaskFarm<number, number>(stage, range(tasks), {
        peers: ds.map((d) => d.address),
        localFallback: false,
        heartbeatMs: 250,
        heartbeatTimeoutMs: 1000,
      });
      let faultAt = 0;
      let victim: LocalDaemon | undefined;
      farm.on('progress', (p) => {
        if (faultAt === 0 && p.done >= tasks / 3) {
          victim = ds[0]!;
          faultAt = performance.now();
          process.kill(victim.pid, how);
        }
      });
      let lostAt = 0;
      farm.on('lost', () => (lostAt ||= performance.now()));
      await farm.compute();
      if (how === 'SIGSTOP' && victim !== undefined) process.kill(victim.pid, 'SIGCONT');
      (how === 'SIGKILL' ? killTimes : stopTimes).push(lostAt - faultAt);
      if (how === 'SIGKILL') {
        const lines = readdirSync(logDir)
          .filter((f) => f.startsWith('exec-'))
          .reduce(
            (n, f) =>
              n +
              readFileSync(join(logDir, f), 'utf8')
                .split('\n')
                .filter((l) => l.length > 0).length,
            0,
          );
        twice.push(lines - tasks);
      }
      await stopAll(ds);
    }
  }
  record('recovery: SIGKILL of a daemon → its tasks requeued', 'ms', killTimes);
  record('recovery: SIGSTOP of a daemon → detected (heartbeat timeout 1000 ms)', 'ms', stopTimes);
  record('recovery: tasks executed twice after a SIGKILL (of the ~1 ms tasks in flight there)', 'tasks', twice);
}

async function scale(sizes: number[], tasks: number): Promise<void> {
  // Client CPU per task once every worker is recruited: inputs come from a generator that is held
  // until the k-th `recruited` event, and CPU is counted from then to the last output, so recruiting
  // (which grows with the farm) is not counted as dispatch. Same total of tasks at every size.
  const perTask: Record<number, number> = {};
  for (const k of sizes) {
    const { child, line } = await startChild('fake-workers.js', [String(k)]);
    const peers = line.split(',').map((p) => `127.0.0.1:${p}`);
    const once = async (n: number): Promise<number> => {
      let go!: () => void;
      const gate = new Promise<void>((r) => (go = r));
      let c0 = process.cpuUsage();
      const tStart = performance.now();
      async function* inputs(): AsyncGenerator<number> {
        await gate;
        c0 = process.cpuUsage();
        for (let i = 0; i < n; i++) yield i;
      }
      // No backup copies: 1,000 fake workers share one core, so "slow" workers here are an artefact
      // of the harness, and speculation is measured elsewhere (test/robust).
      const farm = new TaskFarm<number, number>(double, inputs(), { peers, localFallback: false, insecure: true, workerWaitMs: 60_000, speculation: false });
      let recruited = 0;
      let got = 0;
      let lost = 0;
      farm.on('recruited', () => {
        if (++recruited === k) go();
      });
      let why = '';
      farm.on('lost', (e) => {
        if (lost++ === 0) why = `${e.reason} at +${Math.round(performance.now() - tStart)} ms, after ${got} of ${n} outputs`;
      });
      let cpu = 0;
      for await (const _ of farm.results()) {
        if (++got === n) {
          const c = process.cpuUsage(c0);
          cpu = c.user + c.system;
        }
      }
      if (lost > 0) log(`scale: ${k} workers: ${lost} lost during the run (first: ${why}; outputs ${got})`);
      return cpu / n;
    };
    await once(Math.min(tasks, k * 100)); // warm-up
    const costs = await repeat(runs, () => once(tasks));
    perTask[k] = stats(costs).median;
    record(`scale: client CPU per task, ${k} workers (in-process fake workers, ${tasks.toLocaleString('en-US')} tasks, after recruiting)`, 'µs', costs);
    child.kill('SIGTERM');
    await new Promise<void>((r) => child.once('exit', () => r()));
  }
  const lo = sizes[0]!;
  const hi = sizes[sizes.length - 1]!;
  const ratio = perTask[hi]! / perTask[lo]!;
  figures.push({
    name: `scale: per-task dispatch cost at ${hi} workers ÷ at ${lo}`,
    unit: '×',
    median: ratio,
    min: ratio,
    max: ratio,
    runs: 1,
    target: '≤ 1.5',
    met: ratio <= 1.5,
  });
}

function printTable(): void {
  const rows = figures.map((f) => [
    f.name,
    `${fmt(f.median)} ${f.unit}`,
    f.runs > 1 ? `${fmt(f.min)}–${fmt(f.max)}` : '',
    f.ratios === undefined
      ? ''
      : Object.entries(f.ratios)
          .map(([k, v]) => `${v.toFixed(2)}× ${k}`)
          .join(', '),
    f.target === undefined ? '' : `${f.target}: ${f.met === true ? 'met' : 'NOT met'}`,
  ]);
  const head = ['figure', 'median', 'min–max', 'ratio to ceilings', 'target'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  process.stdout.write([line(head), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...rows.map(line)].join('\n') + '\n');
  for (const f of figures) if (f.note !== undefined) process.stdout.write(`  ${f.name}: ${f.note}\n`);
}

async function cleanup(): Promise<void> {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.allSettled(
    daemons.map((d) => {
      try {
        process.kill(d.pid, 'SIGCONT');
      } catch {
        // gone
      }
      return stopDaemon(d, 2000);
    }),
  );
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

main().then(
  () => cleanup(),
  async (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanup();
    process.exitCode = 1;
  },
);

// Ctrl-C or a kill: stop what this run started (daemons, echo servers, PostgreSQL children of the
// service section stop with their own handlers) before exiting.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    process.stderr.write(`[bench] ${sig}: stopping what the bench started\n`);
    void stopServiceBench()
      .then(() => cleanup())
      .finally(() => process.exit(130));
  });
}
