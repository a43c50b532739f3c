/**
 * The job service core (issue 11 targets), SQLite beside PostgreSQL (a private durable cluster on a
 * unix socket), on worker daemons of this machine:
 *
 *   node dist/bench/service.js [--smoke] [--runs N] [--backends sqlite,postgres] [--parts rate,…]
 *
 * or as the `service` section of `npm run bench`. Per backend:
 * - throughput: tiny tasks (`x * 2`) through the service with every output committed, from the
 *   durable ticket to the job `done`, beside the in-memory FarmPool on the same 2 daemons × 1 thread
 *   in the same run (target ≥ 200,000 tasks/s and ≥ 30 % of the pool); for SQLite also with the
 *   store on a thread of its own (ThreadedSqliteJobStore, not serve's default), to compare;
 * - status: `service.status()` p50 on a running 1,000,000-task job (the store part of the HTTP
 *   target ≤ 5 ms);
 * - resume: a manager process SIGKILLed on a half-done 1,000,000-task job, started again: ms from
 *   its start to its first committed output (target ≤ 1 s), and to the service being open;
 * - memory: peak RSS of a manager process running a 10,000,000-task job (target ≤ 300 MB), sampled
 *   every 100 ms from the durable ticket until the job is done (at most `rssSeconds`);
 * - CLI submit: `taskfarm submit` (the real CLI, a child process) of a 1,000,000-line NDJSON file of
 *   tiny inputs to a real `taskfarm serve` (another child process): ms from spawning the CLI until it
 *   prints the durable ticket (target ≤ 3 s), checked durable (the status says 1,000,000 tasks).
 * `--parts rate,status,resume,rss,submit` runs only some of them (default all).
 * Smoke sizes (`--smoke`) only check that everything runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { FarmPool, PostgresJobStore, ThreadedSqliteJobStore, createJobService, generateFarmKey, openJobStore, type JobStore } from '../src/index.js';
import { startDaemon, stopDaemon, type LocalDaemon } from '../client/local-daemons.js';
import { startPostgres, type PgServer } from '../test/helpers/postgres.js';

/** A measured figure (the shape bench/run.ts records). */
export interface ServiceFigure {
  name: string;
  unit: string;
  xs: number[];
  ratios?: Record<string, number>;
  target?: string;
  met?: boolean;
  note?: string;
}

/** Options of {@link serviceBench}. */
export interface ServiceBenchOptions {
  readonly smoke: boolean;
  readonly runs: number;
  readonly backends?: readonly ('sqlite' | 'postgres')[];
  /** Which measurements to run. @default every one of {@link SERVICE_PARTS} */
  readonly parts?: readonly ServicePart[];
  readonly log: (m: string) => void;
}

/** The measurements of {@link serviceBench}, in the order they run. */
export const SERVICE_PARTS = ['rate', 'status', 'resume', 'rss', 'submit'] as const;
/** One of {@link SERVICE_PARTS}. */
export type ServicePart = (typeof SERVICE_PARTS)[number];

const caller = { user: 'bench', admin: false };
const CLI = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'client', 'cli.js');
const DOUBLE = 'export default (x) => x * 2';
const here = fileURLToPath(new URL('.', import.meta.url));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function* inputLines(n: number): Generator<{ text: string; line: number }> {
  for (let i = 0; i < n; i++) yield { text: String(i), line: i + 1 };
}

async function until(check: () => Promise<boolean>, timeoutMs: number, everyMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A store of one backend, fresh for each call. */
type StoreMaker = () => Promise<{ store: JobStore; location: string; dispose: () => Promise<void> }>;

function makers(pg: PgServer | undefined, dirs: string[]): Record<'sqlite' | 'sqlite-thread' | 'postgres', StoreMaker | undefined> {
  const sqlite =
    (open: (location: string) => Promise<JobStore>): StoreMaker =>
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'taskfarm-bench-svc-'));
      dirs.push(dir);
      const location = join(dir, 'jobs.db');
      return { store: await open(location), location, dispose: () => Promise.resolve(rmSync(dir, { recursive: true, force: true })) };
    };
  return {
    // The store `taskfarm serve --store PATH` opens.
    sqlite: sqlite((location) => openJobStore(location)),
    'sqlite-thread': sqlite((location) => ThreadedSqliteJobStore.open(location)),
    postgres:
      pg === undefined
        ? undefined
        : async () => {
            // The default schema, so a manager child opening the URL finds the same store; dropped after each use.
            const drop = async (): Promise<void> => {
              const { default: driver } = await import('pg');
              const c = new driver.Client(pg.config());
              await c.connect();
              await c.query('DROP SCHEMA IF EXISTS taskfarm CASCADE');
              await c.end();
            };
            await drop();
            return { store: await PostgresJobStore.open(pg.config()), location: pg.url(), dispose: drop };
          },
  };
}

/** Tasks/s through the in-memory pool (outputs in memory only). */
async function poolRate(peers: string[], n: number): Promise<number> {
  const pool = new FarmPool({ peers, localFallback: false });
  try {
    await pool.map(
      (x: number) => x * 2,
      Array.from({ length: 2000 }, (_, i) => i),
    ); // recruit, install, warm
    const inputs = Array.from({ length: n }, (_, i) => i);
    const t0 = performance.now();
    const out = await pool.map<number, number>((x: number) => x * 2, inputs);
    const ms = performance.now() - t0;
    if (out[n - 1] !== (n - 1) * 2) throw new Error('wrong outputs');
    return (n / ms) * 1000;
  } finally {
    await pool.close();
  }
}

/** Tasks/s through the service: from the durable ticket to `done`, every output committed. */
async function serviceRate(make: StoreMaker, peers: string[], n: number): Promise<number> {
  const { store, dispose } = await make();
  const service = await createJobService({ store, peers });
  try {
    const warm = await service.submit(caller, { stages: [{ source: DOUBLE }] }, inputLines(2000));
    await until(async () => (await service.status(caller, warm)).state === 'done', 60_000);
    const ticket = await service.submit(caller, { stages: [{ source: DOUBLE }] }, inputLines(n));
    const t0 = performance.now();
    await until(async () => (await service.status(caller, ticket)).state === 'done', 600_000, 2);
    const ms = performance.now() - t0;
    const s = await service.status(caller, ticket);
    if (s.counts.done !== n) throw new Error(`job ended ${s.state} with ${s.counts.done} of ${n}`);
    return (n / ms) * 1000;
  } finally {
    await service.close(1000);
    await dispose();
  }
}

/** status() p50 (ms) over `calls` calls while a job of `n` tasks runs. */
async function statusP50(make: StoreMaker, peers: string[], n: number, calls: number): Promise<number> {
  const { store, dispose } = await make();
  const service = await createJobService({ store, peers });
  try {
    // Slow-ish tasks so the job is still running while status is measured.
    const ticket = await service.submit(
      caller,
      { stages: [{ source: 'export default (x) => { const e = performance.now() + 0.2; while (performance.now() < e); return x; }' }] },
      inputLines(n),
    );
    await until(async () => (await service.status(caller, ticket)).counts.done > 0, 60_000);
    const xs: number[] = [];
    for (let i = 0; i < calls; i++) {
      const t0 = performance.now();
      await service.status(caller, ticket);
      xs.push(performance.now() - t0);
    }
    if ((await service.status(caller, ticket)).state !== 'running') throw new Error('the job finished before status was measured: make it longer');
    return median(xs);
  } finally {
    await service.close(0);
    await dispose();
  }
}

/** Processes and servers this module started that are still running: {@link stopServiceBench} stops them (the bench's SIGINT/SIGTERM). */
const running = new Set<() => Promise<void>>();
const spawned = new Set<ChildProcess>();

/** Stops whatever a {@link serviceBench} under way started (manager children, daemons, PostgreSQL). */
export async function stopServiceBench(): Promise<void> {
  for (const c of spawned) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.allSettled([...running].map((stop) => stop()));
}

/** A manager child process (this file with --child). */
function child(args: string[], env: NodeJS.ProcessEnv): { lines: AsyncIterableIterator<string>; kill: (sig: NodeJS.Signals) => void; exited: Promise<void> } {
  const c = spawn(process.execPath, ['--expose-gc', join(here, 'service.js'), '--child', ...args], { stdio: ['ignore', 'pipe', 'inherit'], env });
  spawned.add(c);
  const exited = new Promise<void>((r) => c.once('exit', () => (spawned.delete(c), r())));
  return { lines: createInterface({ input: c.stdout })[Symbol.asyncIterator](), kill: (sig) => c.kill(sig), exited };
}

async function lineMatching(lines: AsyncIterableIterator<string>, re: RegExp): Promise<RegExpExecArray> {
  for (;;) {
    const r = await lines.next();
    if (r.done === true) throw new Error(`the manager exited before printing ${re}`);
    const m = re.exec(r.value);
    if (m !== null) return m;
  }
}

/** SIGKILL a manager on a half-done job of `n` tasks, start it again: ms to open and to the first committed output. */
async function resume(location: string, peers: string[], n: number, env: NodeJS.ProcessEnv): Promise<{ loaded: number; open: number; first: number }> {
  const a = child(['--store', location, '--peers', peers.join(','), '--submit', String(n), '--report-done'], env);
  await lineMatching(a.lines, /^READY/);
  for (;;) {
    const m = await lineMatching(a.lines, /^DONE (\d+)/);
    if (Number(m[1]) >= n / 2) break;
  }
  a.kill('SIGKILL');
  await a.exited;
  const b = child(['--store', location, '--peers', peers.join(','), '--first-commit'], env);
  const m = await lineMatching(b.lines, /^FIRST loaded=([\d.]+) open=([\d.]+) first=([\d.]+)/);
  b.kill('SIGTERM');
  await b.exited;
  return { loaded: Number(m[1]), open: Number(m[2]), first: Number(m[3]) };
}

/** Peak RSS (MB) of a manager process running a job of `n` tasks, sampled for `seconds`. */
async function peakRss(location: string, peers: string[], n: number, seconds: number, env: NodeJS.ProcessEnv): Promise<{ peak: number; done: number }> {
  const c = child(['--store', location, '--peers', peers.join(','), '--submit', String(n), '--rss', String(seconds)], env);
  const m = await lineMatching(c.lines, /^RSS peak=([\d.]+) done=(\d+)/);
  c.kill('SIGTERM');
  await c.exited;
  return { peak: Number(m[1]), done: Number(m[2]) };
}

/** Writes `n` tiny inputs (`0`, `1`, …), one JSON value per line, to `file`. */
async function writeInputs(file: string, n: number): Promise<void> {
  const out = createWriteStream(file);
  const per = 100_000;
  for (let i = 0; i < n; i += per) {
    let text = '';
    for (let k = i; k < Math.min(n, i + per); k++) text += `${k}\n`;
    if (!out.write(text)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

/** A child process of the real CLI; resolves with its exit code and output. */
function runCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  onStdout?: (text: string) => void,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  spawned.add(c);
  c.once('exit', () => spawned.delete(c));
  let stdout = '';
  let stderr = '';
  c.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    onStdout?.(stdout);
  });
  c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve) => c.once('close', (code) => resolve({ code, stdout, stderr })));
}

/**
 * `taskfarm submit` of an `n`-line NDJSON file to a `taskfarm serve` process on `location`: ms from
 * spawning the CLI until the ticket is on its stdout; the job's status must then show `n` tasks.
 * Then, while that job runs on the daemons, `GET /api/v1/jobs/{ticket}` over HTTP `statusCalls`
 * times at most, one after another, until the job ends: its p50 in ms (NaN with fewer than 50 calls
 * before the job ended).
 */
async function cliSubmit(
  location: string,
  peers: string[],
  n: number,
  work: string,
  env: NodeJS.ProcessEnv,
  statusCalls: number,
): Promise<{ submitMs: number; statusHttpMs: number; statusSamples: number }> {
  const serveEnv = { ...env, XDG_CONFIG_HOME: join(work, 'config') };
  const m = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--port',
      '0',
      '--store',
      location,
      '--state-dir',
      join(work, 'state'),
      '--peers',
      peers.join(','),
      '--log-level',
      'warn',
      '--grace-ms',
      '1000',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], env: serveEnv },
  );
  spawned.add(m);
  const exited = new Promise<void>((r) => m.once('exit', () => (spawned.delete(m), r())));
  try {
    const port = (await lineMatching(createInterface({ input: m.stdout })[Symbol.asyncIterator](), /^READY port=(\d+)/))[1]!;
    const cliEnv = { ...serveEnv, TASKFARM_SERVER: `http://127.0.0.1:${port}` };
    const t = await runCli(['token', 'create', '--user', 'bench'], cliEnv);
    if (t.code !== 0) throw new Error(`token create failed: ${t.stderr}`);
    const token = t.stdout.trim();
    let printed = 0;
    const t0 = performance.now();
    const s = await runCli(['submit', join(work, 'double.mjs'), '--inputs', join(work, 'inputs.ndjson'), '--token', token], cliEnv, (out) => {
      if (printed === 0 && out.includes('\n')) printed = performance.now();
    });
    if (s.code !== 0 || printed === 0) throw new Error(`submit failed (${s.code}): ${s.stderr}`);
    const ticket = s.stdout.trim();
    const st = await runCli(['status', ticket, '--json', '--token', token], cliEnv);
    const total = (JSON.parse(st.stdout) as { total?: number }).total;
    if (total !== n) throw new Error(`the submitted job has ${total} tasks, not ${n}: ${st.stdout} ${st.stderr}`);
    const url = `http://127.0.0.1:${port}/api/v1/jobs/${ticket}`;
    const headers = { authorization: `Bearer ${token}` };
    const times: number[] = [];
    for (let i = 0; i < statusCalls; i++) {
      const t1 = performance.now();
      const res = await fetch(url, { headers });
      if (res.status !== 200) throw new Error(`GET ${url} answered ${res.status}: ${await res.text()}`);
      const body = (await res.json()) as { state?: string };
      if (body.state !== 'running' && body.state !== 'queued') break;
      times.push(performance.now() - t1);
    }
    return { submitMs: printed - t0, statusHttpMs: times.length >= Math.min(50, statusCalls) ? median(times) : Number.NaN, statusSamples: times.length };
  } finally {
    m.kill('SIGTERM');
    await exited;
  }
}

/** Runs the service figures on every backend that can start. */
export async function serviceBench(o: ServiceBenchOptions): Promise<ServiceFigure[]> {
  const sizes = o.smoke
    ? { tiny: 20_000, status: 20_000, statusCalls: 200, httpStatusCalls: 20, resume: 20_000, rss: 200_000, rssSeconds: 5, submit: 20_000 }
    : { tiny: 1_000_000, status: 1_000_000, statusCalls: 2000, httpStatusCalls: 1000, resume: 1_000_000, rss: 10_000_000, rssSeconds: 1200, submit: 1_000_000 };
  const want = o.backends ?? ['sqlite', 'postgres'];
  const part = (p: ServicePart): boolean => o.parts === undefined || o.parts.includes(p);
  const key = process.env['TASKFARM_KEY'] ?? generateFarmKey();
  process.env['TASKFARM_KEY'] = key;
  const env = { ...process.env, TASKFARM_KEY: key };
  const dirs: string[] = [];
  const daemons: LocalDaemon[] = [];
  let pg: PgServer | undefined;
  const figures: ServiceFigure[] = [];
  let peers: string[] = [];
  let poolM = 0;
  const stop = async (): Promise<void> => {
    await Promise.all(daemons.map((d) => stopDaemon(d)));
    await pg?.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };
  running.add(stop);
  try {
    if (want.includes('postgres')) {
      const s = await startPostgres({ durable: true });
      if ('skip' in s) o.log(`service bench: PostgreSQL skipped: ${s.skip}`);
      else pg = s;
    }
    for (let i = 0; i < 2; i++) {
      const dir = mkdtempSync(join(tmpdir(), 'taskfarm-bench-svc-d-'));
      dirs.push(dir);
      daemons.push(await startDaemon(['--threads', '1', '--cache-dir', dir, '--log-level', 'error'], 30_000, env));
    }
    peers = daemons.map((d) => d.address);
    const make = makers(pg, dirs);
    const poolXs: number[] = [];
    if (part('rate')) for (let r = 0; r < o.runs; r++) poolXs.push(await poolRate(peers, sizes.tiny));
    if (poolXs.length > 0) poolM = median(poolXs);
    if (part('rate'))
      figures.push({
        name: `in-memory FarmPool: ${sizes.tiny.toLocaleString('en-US')} tiny tasks, 2 daemons × 1 thread (ceiling)`,
        unit: 'tasks/s',
        xs: poolXs,
      });
    let work: string | undefined;
    if (part('submit')) {
      work = mkdtempSync(join(tmpdir(), 'taskfarm-bench-submit-'));
      dirs.push(work);
      writeFileSync(join(work, 'double.mjs'), `${DOUBLE}\n`);
      await writeInputs(join(work, 'inputs.ndjson'), sizes.submit);
    }
    for (const backend of want) {
      const m = make[backend];
      if (m === undefined) continue;
      if (part('rate')) await rate(m, backend);
      // The same, the SQLite store on a thread of its own (not what serve opens: see PERFORMANCE.md).
      if (part('rate') && backend === 'sqlite') await rate(make['sqlite-thread'] as StoreMaker, 'sqlite, store on its own thread');
      if (part('status')) await status(m, backend);
      if (part('resume')) await resumes(m, backend);
      if (part('rss')) await rss(m, backend);
      if (work !== undefined) {
        const xs: number[] = [];
        const http: number[] = [];
        const samples: number[] = [];
        for (let r = 0; r < o.runs; r++) {
          const { store, location, dispose } = await m();
          await store.close();
          const c = await cliSubmit(location, peers, sizes.submit, work, env, sizes.httpStatusCalls);
          xs.push(c.submitMs);
          if (!Number.isNaN(c.statusHttpMs)) http.push(c.statusHttpMs);
          samples.push(c.statusSamples);
          await dispose();
        }
        figures.push({
          name: `service (${backend}): taskfarm submit of a ${sizes.submit.toLocaleString('en-US')}-line NDJSON file (CLI process → taskfarm serve), until the durable ticket is printed`,
          unit: 'ms',
          xs,
          target: '≤ 3,000 ms',
          met: median(xs) <= 3000,
        });
        o.log(`service ${backend}: CLI submit of ${sizes.submit} lines: ${xs.map((x) => x.toFixed(0)).join(', ')} ms`);
        if (http.length > 0) {
          figures.push({
            name: `service (${backend}): status p50 over HTTP (GET /api/v1/jobs/{ticket} to taskfarm serve) on the running ${sizes.submit.toLocaleString('en-US')}-task job just submitted`,
            unit: 'ms',
            xs: http,
            target: '≤ 5 ms',
            met: median(http) <= 5,
          });
        } else o.log(`service ${backend}: the submitted job ended before its status could be measured over HTTP (${samples.join(', ')} calls)`);
      }
    }
  } finally {
    running.delete(stop);
    await stop();
  }
  return figures;

  async function rate(m: StoreMaker, backend: string): Promise<void> {
    const xs: number[] = [];
    for (let r = 0; r < o.runs; r++) xs.push(await serviceRate(m, peers, sizes.tiny));
    const x = median(xs);
    figures.push({
      name: `service (${backend}): ${sizes.tiny.toLocaleString('en-US')} tiny tasks, every output committed`,
      unit: 'tasks/s',
      xs,
      ratios: { 'vs pool': x / poolM },
      target: '≥ 200,000/s and ≥ 0.30× pool',
      met: x >= 200_000 && x >= 0.3 * poolM,
    });
    o.log(`service ${backend}: ${Math.round(x)} tasks/s (${((x / poolM) * 100).toFixed(0)} % of the pool's ${Math.round(poolM)})`);
  }

  async function status(m: StoreMaker, backend: string): Promise<void> {
    const st: number[] = [];
    for (let r = 0; r < o.runs; r++) st.push(await statusP50(m, peers, sizes.status, sizes.statusCalls));
    figures.push({
      name: `service (${backend}): status p50 on a running ${sizes.status.toLocaleString('en-US')}-task job (no HTTP)`,
      unit: 'ms',
      xs: st,
      target: '≤ 5 ms (with HTTP)',
      met: median(st) <= 5,
    });
  }

  async function resumes(m: StoreMaker, backend: string): Promise<void> {
    const loads: number[] = [];
    const opens: number[] = [];
    const firsts: number[] = [];
    for (let r = 0; r < o.runs; r++) {
      const { store, location, dispose } = await m();
      await store.close();
      const res = await resume(location, peers, sizes.resume, env);
      loads.push(res.loaded);
      opens.push(res.open - res.loaded);
      firsts.push(res.first - res.loaded);
      await dispose();
    }
    const what = `restart after SIGKILL on a half-done ${sizes.resume.toLocaleString('en-US')}-task job`;
    figures.push({ name: `service (${backend}): ${what}: node start + import taskfarm`, unit: 'ms', xs: loads });
    figures.push({ name: `service (${backend}): ${what}: open + recover + resume (createJobService)`, unit: 'ms', xs: opens });
    figures.push({
      name: `service (${backend}): ${what}: from the service's start to its first committed output (recruits included)`,
      unit: 'ms',
      xs: firsts,
      target: '≤ 1,000 ms',
      met: median(firsts) <= 1000,
    });
  }

  async function rss(m: StoreMaker, backend: string): Promise<void> {
    {
      const { store, location, dispose } = await m();
      await store.close();
      const r = await peakRss(location, peers, sizes.rss, sizes.rssSeconds, env);
      figures.push({
        name: `service (${backend}): manager peak RSS running a ${sizes.rss.toLocaleString('en-US')}-task job (${r.done.toLocaleString('en-US')} done when sampling ended)`,
        unit: 'MB',
        xs: [r.peak],
        target: '≤ 300 MB',
        met: r.peak <= 300,
      });
      await dispose();
    }
  }
}

// ---------------------------------------------------------------- the manager child

/** `--child`: a manager process on `--store` (see resume() and peakRss()). */
async function childMain(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      child: { type: 'boolean' },
      store: { type: 'string' },
      peers: { type: 'string' },
      submit: { type: 'string' },
      'report-done': { type: 'boolean' },
      'first-commit': { type: 'boolean' },
      rss: { type: 'string' },
    },
  });
  const loaded = performance.now(); // node started and taskfarm imported
  const service = await createJobService({ store: values.store!, peers: values.peers!.split(',') });
  const open = performance.now();
  let ticket = (await service.list(caller)).items[0]?.ticket;
  if (ticket === undefined && values.submit !== undefined) {
    ticket = await service.submit(caller, { stages: [{ source: DOUBLE }] }, inputLines(Number(values.submit)));
  }
  process.stdout.write(`READY ${ticket}\n`);
  process.once('SIGTERM', () => void service.close(1000).then(() => process.exit(0)));
  if (ticket === undefined) return;
  if (values['first-commit'] === true) {
    const before = (await service.status(caller, ticket)).counts.done;
    for (;;) {
      const s = await service.status(caller, ticket);
      if (s.counts.done > before || s.state === 'done') break;
      await new Promise((r) => setTimeout(r, 1));
    }
    process.stdout.write(`FIRST loaded=${loaded.toFixed(1)} open=${open.toFixed(1)} first=${performance.now().toFixed(1)}\n`);
    return;
  }
  if (values['report-done'] === true) {
    for (;;) {
      const s = await service.status(caller, ticket);
      process.stdout.write(`DONE ${s.counts.done}\n`);
      if (s.state !== 'running' && s.state !== 'queued') return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  if (values.rss !== undefined) {
    // Sampled until the job is done (or for at most --rss seconds).
    const end = performance.now() + Number(values.rss) * 1000;
    let peak = 0;
    let last = 0;
    let lastStatus = 0;
    let done = false;
    while (performance.now() < end && !done) {
      peak = Math.max(peak, process.memoryUsage.rss() / 1024 / 1024);
      if (process.env['TASKFARM_BENCH_TRACE'] !== undefined && performance.now() - last > 1000) {
        last = performance.now();
        const u = process.memoryUsage();
        const mb = (x: number): string => (x / 1024 / 1024).toFixed(0);
        process.stderr.write(`rss ${mb(u.rss)} heap ${mb(u.heapUsed)}/${mb(u.heapTotal)} external ${mb(u.external)} buffers ${mb(u.arrayBuffers)}\n`);
      }
      if (performance.now() - lastStatus > 1000) {
        lastStatus = performance.now();
        done = (await service.status(caller, ticket)).state === 'done';
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const s = await service.status(caller, ticket);
    process.stdout.write(`RSS peak=${peak.toFixed(1)} done=${s.counts.done}\n`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const argv = process.argv.slice(2);
  if (argv.includes('--child')) await childMain(argv);
  else {
    const { values } = parseArgs({
      args: argv,
      options: { smoke: { type: 'boolean' }, runs: { type: 'string' }, backends: { type: 'string' }, parts: { type: 'string' } },
    });
    const smoke = values.smoke === true;
    const figures = await serviceBench({
      smoke,
      runs: values.runs !== undefined ? Number(values.runs) : smoke ? 1 : 3,
      ...(values.backends === undefined ? {} : { backends: values.backends.split(',') as ('sqlite' | 'postgres')[] }),
      ...(values.parts === undefined ? {} : { parts: values.parts.split(',') as ServicePart[] }),
      log: (m) => void process.stderr.write(`[service] ${m}\n`),
    });
    for (const f of figures)
      process.stdout.write(
        `${f.name}: ${median(f.xs).toFixed(2)} ${f.unit}${
          f.ratios !== undefined
            ? ` (${Object.entries(f.ratios)
                .map(([k, v]) => `${k} ${v.toFixed(2)}`)
                .join(', ')})`
            : ''
        }${f.target !== undefined ? ` target ${f.target}: ${f.met === true ? 'met' : 'NOT met'}` : ''}\n`,
      );
  }
}
