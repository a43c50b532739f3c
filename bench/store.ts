/**
 * The job store alone, SQLite beside PostgreSQL (a private durable cluster on a unix socket):
 *
 *   node dist/bench/store.js [--smoke] [--runs N] [--tasks N] [--backends sqlite,postgres]
 *
 * or as the `store` section of `npm run bench`. Per backend, on one job of `tasks` tiny inputs:
 * - submit: createJob + appendInputs in 10,000-input transactions + commitSubmit (and, SQLite, the
 *   whole submit as one transaction, for comparison);
 * - status: getJob latency (the counters read), p50 over 2,000 calls, at `tasks` tasks;
 * - claim + commit: tasks/s through claimTasks (windows of 4,096) and commitOutputs (batches of
 *   1,024, tiny outputs), every output committed — the pool's pattern; PostgreSQL also with 4 lanes;
 * - recovery: reopen + recover() + first claim on the half-done job;
 * - results: readResults rows/s; a dashboard task page (keyset, state filter) p50.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createHash } from 'node:crypto';
import { PostgresJobStore, SqliteJobStore, type JobStore } from '../src/store/index.js';
import { startPostgres, type PgServer } from '../test/helpers/postgres.js';

/** A measured figure (the shape bench/run.ts records). */
export interface StoreFigure {
  name: string;
  unit: string;
  xs: number[];
  target?: string;
  met?: boolean;
  note?: string;
}

/** Options of {@link storeBench}. */
export interface StoreBenchOptions {
  readonly smoke: boolean;
  readonly runs: number;
  readonly tasks?: number;
  readonly backends?: readonly ('sqlite' | 'postgres')[];
  readonly log: (m: string) => void;
}

const CODE = 'export default (x) => x * 2;\n';
const HASH = createHash('sha256').update(CODE).digest('hex');
const JOB = { owner: 'bench', name: 'store bench', program: [{ name: 'double', hash: HASH }], options: {} };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function submit(store: JobStore, n: number, batch = 10_000): Promise<{ ticket: string; ms: number }> {
  const t0 = performance.now();
  const ticket = await store.createJob(JOB);
  for (let i = 0; i < n; i += batch) {
    const inputs = new Array<string>(Math.min(batch, n - i));
    for (let k = 0; k < inputs.length; k++) inputs[k] = String(i + k);
    await store.appendInputs(ticket, inputs);
  }
  await store.commitSubmit(ticket);
  return { ticket, ms: performance.now() - t0 };
}

/** Claims windows and commits outputs in batches until `limit` tasks are done; resolves to tasks/s. */
async function drain(store: JobStore, ticket: string, limit: number, lanes = 1, window = 4_096, batch = 1_024): Promise<number> {
  let done = 0;
  const t0 = performance.now();
  const lane = async (): Promise<void> => {
    while (done < limit) {
      const tasks = await store.claimTasks(ticket, Math.min(window, limit - done));
      if (tasks.length === 0) return;
      for (let i = 0; i < tasks.length; i += batch) {
        const slice = tasks.slice(i, i + batch);
        const r = await store.commitOutputs(
          ticket,
          slice.map((t) => ({ index: t.index, output: String(Number(t.input) * 2) })),
        );
        done += r.accepted;
      }
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  return (done / (performance.now() - t0)) * 1000;
}

async function p50(n: number, f: () => Promise<unknown>): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await f();
    xs.push(performance.now() - t0);
  }
  return median(xs);
}

/** Runs the store bench; resolves to its figures. */
export async function storeBench(o: StoreBenchOptions): Promise<StoreFigure[]> {
  const n = o.tasks ?? (o.smoke ? 20_000 : 1_000_000);
  const backends = o.backends ?? ['sqlite', 'postgres'];
  const figures: StoreFigure[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'taskfarm-store-bench-'));
  let server: PgServer | undefined;
  const nice = n.toLocaleString('en-US');
  try {
    for (const backend of backends) {
      let open: () => Promise<JobStore>;
      let schemaN = 0;
      if (backend === 'sqlite') {
        open = () => SqliteJobStore.open(join(dir, `jobs-${schemaN}.db`));
      } else {
        const s = await startPostgres({
          durable: true,
          ...(process.env['TASKFARM_PG_LOG'] !== undefined
            ? { logFile: process.env['TASKFARM_PG_LOG'], settings: { log_min_duration_statement: '50', log_lock_waits: 'on' } }
            : {}),
        });
        if ('skip' in s) {
          o.log(`store bench: PostgreSQL SKIPPED: ${s.skip}`);
          continue;
        }
        server = s;
        open = () => PostgresJobStore.open(s.config(), { schema: `bench${schemaN}` });
      }
      const label = backend === 'sqlite' ? 'SQLite' : 'PostgreSQL';
      const submitMs: number[] = [];
      const status: number[] = [];
      const drainRate: number[] = [];
      const lanes4: number[] = [];
      const recovery: number[] = [];
      const results: number[] = [];
      const pages: number[] = [];
      const oneTx: number[] = [];
      for (let run = 0; run < o.runs; run++) {
        schemaN++;
        const store = await open();
        try {
          await store.putBundles([{ hash: HASH, code: CODE }]);
          const { ticket, ms } = await submit(store, n);
          submitMs.push(ms);
          await store.startJob(ticket);
          // Throughput over the first half; status and pages measured at n tasks, half done.
          drainRate.push(await drain(store, ticket, n >> 1));
          await store.claimTasks(ticket, 4_096); // some in flight, as in a running job
          status.push((await p50(2_000, () => store.getJob(ticket))) * 1000);
          pages.push(await p50(200, () => store.listTasks(ticket, { state: 'done', after: Math.floor(Math.random() * (n >> 1)), limit: 100 })));
          const t0 = performance.now();
          let rows = 0;
          for await (const _ of store.readResults(ticket)) rows++;
          results.push((rows / (performance.now() - t0)) * 1000);
          await store.close();
          // A restart on the half-done job: recover, then the first claim.
          const t1 = performance.now();
          const again = await open();
          await again.recover();
          const first = await again.claimTasks(ticket, 4_096);
          recovery.push(performance.now() - t1);
          if (first.length === 0) throw new Error('nothing to claim after recovery');
          if (backend === 'postgres') {
            await again.requeueTasks(
              ticket,
              first.map((t) => t.index),
            );
            lanes4.push(await drain(again, ticket, n >> 2, 4));
          }
          await again.close();
          if (backend === 'sqlite') {
            schemaN++;
            const s2 = await open();
            await s2.putBundles([{ hash: HASH, code: CODE }]);
            const inputs = Array.from({ length: n }, (_, i) => String(i));
            const t2 = performance.now();
            const t = await s2.createJob(JOB);
            await s2.appendInputs(t, inputs);
            await s2.commitSubmit(t);
            oneTx.push(performance.now() - t2);
            await s2.close();
          }
        } catch (err) {
          await store.close().catch(() => {});
          throw err;
        }
        if (backend === 'sqlite')
          for (const f of [`jobs-${schemaN - 1}.db`, `jobs-${schemaN}.db`]) for (const s of ['', '-wal', '-shm']) rmSync(join(dir, f + s), { force: true });
      }
      const push = (f: StoreFigure): void => {
        figures.push(f);
        o.log(`${f.name}: ${median(f.xs).toFixed(f.unit === 'µs' || f.unit === 'ms' ? 2 : 0)} ${f.unit}`);
      };
      push({
        name: `store ${label}: submit ${nice} tiny inputs (10,000-input transactions)`,
        unit: 'ms',
        xs: submitMs,
        target: '≤ 3,000 ms with the CLI',
        met: median(submitMs) <= 3_000,
      });
      push({ name: `store ${label}: submit rate`, unit: 'inputs/s', xs: submitMs.map((ms) => (n / ms) * 1000) });
      if (oneTx.length > 0) push({ name: `store ${label}: the same submit as one transaction`, unit: 'ms', xs: oneTx });
      push({
        name: `store ${label}: status (getJob: counters) p50 at ${nice} tasks`,
        unit: 'µs',
        xs: status,
        target: '≪ 5 ms (the HTTP p50 target)',
        met: median(status) < 500,
      });
      push({
        name: `store ${label}: claim (4,096) + commit (1,024-output batches), tiny outputs`,
        unit: 'tasks/s',
        xs: drainRate,
        target: '≫ 200,000/s (the service target)',
        met: median(drainRate) >= 400_000,
      });
      if (lanes4.length > 0) push({ name: `store ${label}: the same, 4 concurrent lanes`, unit: 'tasks/s', xs: lanes4 });
      push({
        name: `store ${label}: restart on a half-done ${nice}-task job → recover() → first claim`,
        unit: 'ms',
        xs: recovery,
        target: '≤ 1,000 ms (dispatch resumes)',
        met: median(recovery) <= 1_000,
      });
      push({ name: `store ${label}: results streamed in input order`, unit: 'rows/s', xs: results });
      push({ name: `store ${label}: dashboard task page (100 done tasks, keyset) p50`, unit: 'ms', xs: pages });
      if (server !== undefined) {
        await server.stop();
        server = undefined;
      }
    }
  } finally {
    if (server !== undefined) await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return figures;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({
    options: { smoke: { type: 'boolean' }, runs: { type: 'string' }, tasks: { type: 'string' }, backends: { type: 'string' } },
    strict: true,
  });
  const log = (m: string): void => void process.stderr.write(`[bench:store] ${m}\n`);
  const opts: StoreBenchOptions = {
    smoke: values.smoke === true,
    runs: values.runs !== undefined ? Number(values.runs) : 1,
    log,
    ...(values.tasks !== undefined ? { tasks: Number(values.tasks) } : {}),
    ...(values.backends !== undefined ? { backends: values.backends.split(',') as ('sqlite' | 'postgres')[] } : {}),
  };
  storeBench(opts).then(
    (figures) => process.stdout.write(JSON.stringify(figures, null, 2) + '\n'),
    (err: unknown) => {
      process.stderr.write(`store bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
