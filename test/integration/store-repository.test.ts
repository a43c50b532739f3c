/**
 * StoreTaskRepository (src/service/store-repository.ts): the repository conformance suite on SQLite
 * and on a private PostgreSQL, then what only a store-backed repository promises (a bounded window,
 * batched commits, `done` counting committed settlements, JSON mapping, backpressure, handing
 * claims back).
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { FarmError, TaskError } from '../../src/errors.js';
import type { TaskRecord } from '../../src/farm/index.js';
import { StoreTaskRepository } from '../../src/service/index.js';
import { PostgresJobStore, SqliteJobStore, type JobStore } from '../../src/store/index.js';
import { describeRepositoryConformance, type Settled } from '../helpers/repository-conformance.js';
import { skipLoudly, startPostgres } from '../helpers/postgres.js';

const CODE = 'export default (x) => x;\n';
const HASH = createHash('sha256').update(CODE).digest('hex');

/** A running job of `inputs` in `store`. */
async function runningJob(store: JobStore, inputs: readonly unknown[], errors: 'fail' | 'collect' = 'collect'): Promise<string> {
  await store.putBundles([{ hash: HASH, code: CODE }]);
  const ticket = await store.createJob({ owner: 'test', name: 'repo', program: [{ name: 'id', hash: HASH }], options: { errors } });
  for (let i = 0; i < inputs.length; i += 10_000)
    await store.appendInputs(
      ticket,
      inputs.slice(i, i + 10_000).map((x) => JSON.stringify(x)),
    );
  await store.commitSubmit(ticket);
  await store.startJob(ticket);
  return ticket;
}

async function repositoryOver(store: JobStore, inputs: readonly unknown[]) {
  const ticket = await runningJob(store, inputs);
  const job = (await store.getJob(ticket))!;
  const repo = new StoreTaskRepository(store, job, { flushMs: 1, window: 3 });
  const settled: Settled = { outputs: new Map(), failures: new Map() };
  const flush = async (): Promise<void> => {
    await repo.flush();
    settled.outputs.clear();
    settled.failures.clear();
    for await (const r of store.readResults(ticket)) {
      if ('output' in r) settled.outputs.set(r.index, JSON.parse(r.output));
      else settled.failures.set(r.index, new FarmError('FARM_ERR_TASK', r.error.message));
    }
  };
  return { repo, settled, flush, ticket };
}

const tmp: string[] = [];
afterAll(() => {
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

function sqlitePath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'taskfarm-repo-'));
  tmp.push(dir);
  return join(dir, 'jobs.db');
}

describeRepositoryConformance('StoreTaskRepository (SQLite)', async (inputs) => {
  const store = await SqliteJobStore.open(sqlitePath());
  const { repo, settled, flush } = await repositoryOver(store, inputs);
  return { repo, settled, flush, close: () => store.close() };
});

const server = await startPostgres();
if ('skip' in server) skipLoudly('the task repository conformance suite on PostgreSQL', server.skip);

describe.skipIf('skip' in server)('PostgreSQL', () => {
  if ('skip' in server) return;
  afterAll(() => server.stop());
  let n = 0;
  describeRepositoryConformance('StoreTaskRepository (PostgreSQL)', async (inputs) => {
    const store = await PostgresJobStore.open(server.config(), { schema: `r${process.pid}_${++n}` });
    const { repo, settled, flush } = await repositoryOver(store, inputs);
    return { repo, settled, flush, close: () => store.close() };
  });
});

/** A store whose settle calls are counted (and can be held back). */
function counting(store: JobStore): { store: JobStore; commits: number[]; claims: number[]; gate: { hold: boolean; release: () => void } } {
  const commits: number[] = [];
  const claims: number[] = [];
  let waiters: (() => void)[] = [];
  const gate = {
    hold: false,
    release: () => {
      gate.hold = false;
      for (const w of waiters.splice(0)) w();
    },
  };
  const proxy = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'commitOutputs' || prop === 'failTasks') {
        return async (ticket: string, entries: readonly { index: number }[]) => {
          while (gate.hold) await new Promise<void>((r) => waiters.push(r));
          commits.push(entries.length);
          return (target[prop] as (t: string, e: readonly unknown[]) => Promise<unknown>).call(target, ticket, entries);
        };
      }
      if (prop === 'claimBatch') {
        return async (ticket: string, max: number) => {
          claims.push(max);
          return target.claimBatch(ticket, max);
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  waiters = [];
  return { store: proxy, commits, claims, gate };
}

async function takeAll(repo: StoreTaskRepository, want: number): Promise<TaskRecord[]> {
  const out: TaskRecord[] = [];
  for (let i = 0; i < 10_000 && out.length < want; i++) {
    const got = repo.take(want - out.length, true);
    out.push(...got);
    if (got.length === 0) {
      if (repo.isSourceDrained) break;
      await repo.flush();
    }
  }
  return out;
}

describe('StoreTaskRepository specifics (SQLite)', () => {
  let store: SqliteJobStore;
  afterEach(async () => {
    await store.close();
  });

  it('holds a bounded window of the job in memory: claims come in window-sized chunks, never the whole job', async () => {
    store = await SqliteJobStore.open(sqlitePath());
    const ticket = await runningJob(
      store,
      Array.from({ length: 50_000 }, (_, i) => i),
    );
    const c = counting(store);
    const repo = new StoreTaskRepository(c.store, (await store.getJob(ticket))!, { window: 1000, flushMs: 1 });
    await repo.flush();
    expect((await store.getJob(ticket))!.counts.running).toBe(1000);
    let maxRunning = 0;
    for (let round = 0; round < 1000; round++) {
      const recs = await takeAll(repo, 250);
      if (recs.length === 0) break;
      for (const r of recs) repo.complete(r, (r.input as number) * 2);
      await repo.flush();
      maxRunning = Math.max(maxRunning, (await store.getJob(ticket))!.counts.running);
    }
    expect(repo.isComplete).toBe(true);
    expect(Math.max(...c.claims)).toBeLessThanOrEqual(1000);
    expect(maxRunning).toBeLessThanOrEqual(1000);
    const job = (await store.getJob(ticket))!;
    expect(job.counts).toEqual({ pending: 0, running: 0, done: 50_000, failed: 0 });
    expect(await store.recount(ticket)).toEqual(job.counts);
  });

  it('commits settlements in batches (one transaction per batch, never per task), and done counts committed ones only', async () => {
    store = await SqliteJobStore.open(sqlitePath());
    const ticket = await runningJob(
      store,
      Array.from({ length: 10_000 }, (_, i) => i),
    );
    const c = counting(store);
    const repo = new StoreTaskRepository(c.store, (await store.getJob(ticket))!, { window: 10_000, commitBatch: 1000, flushMs: 1000 });
    const recs = await takeAll(repo, 10_000);
    expect(recs).toHaveLength(10_000);
    for (const r of recs.slice(0, 999)) repo.complete(r, r.input);
    expect(c.commits).toEqual([]); // under a batch, before the timer: nothing committed yet
    expect(repo.done).toBe(0);
    expect(repo.isComplete).toBe(false);
    for (const r of recs.slice(999)) repo.complete(r, r.input);
    await repo.flush();
    expect(repo.done).toBe(10_000);
    expect(repo.isComplete).toBe(true);
    expect(c.commits.every((n) => n <= 1000)).toBe(true);
    expect(c.commits.reduce((a, b) => a + b, 0)).toBe(10_000);
    expect(c.commits.length).toBeLessThanOrEqual(11);
  });

  it('maps outputs JSON cannot hold like `taskfarm run`, and records an output that is not JSON at all as the task failure', async () => {
    store = await SqliteJobStore.open(sqlitePath());
    const ticket = await runningJob(store, [0, 1, 2, 3, 4, 5], 'fail');
    const repo = new StoreTaskRepository(store, (await store.getJob(ticket))!, { flushMs: 1, errors: 'fail' });
    const recs = await takeAll(repo, 6);
    const cyclic: Record<string, unknown> = {};
    cyclic['self'] = cyclic;
    const outputs = [new Map([['a', 1]]), new Set([1, 2]), 12345678901234567890n, new Float64Array([1.5, 2]), undefined, cyclic];
    recs.forEach((r, i) => repo.complete(r, outputs[i]));
    await repo.flush();
    const rows = [];
    for await (const r of store.readResults(ticket)) rows.push(r);
    expect(rows.slice(0, 5)).toEqual([
      { index: 0, output: '{"a":1}' },
      { index: 1, output: '[1,2]' },
      { index: 2, output: '"12345678901234567890"' },
      { index: 3, output: '[1.5,2]' },
      { index: 4, output: 'null' },
    ]);
    expect(rows[5]).toMatchObject({ index: 5, error: { name: 'TypeError' } });
    expect(repo.sourceError).toBeInstanceOf(TaskError);
    expect((repo.sourceError as TaskError).index).toBe(5);
  });

  it('stops handing out tasks while too many settlements wait for the store, and resumes when a commit lands', async () => {
    store = await SqliteJobStore.open(sqlitePath());
    const ticket = await runningJob(
      store,
      Array.from({ length: 100 }, (_, i) => i),
    );
    const c = counting(store);
    const repo = new StoreTaskRepository(c.store, (await store.getJob(ticket))!, { window: 100, commitBatch: 10, maxUncommitted: 20, flushMs: 1 });
    let available = 0;
    repo.onAvailable = () => available++;
    await repo.flush();
    c.gate.hold = true;
    const first = repo.take(30, true);
    expect(first).toHaveLength(30);
    for (const r of first) repo.complete(r, r.input);
    expect(repo.uncommitted).toBe(30);
    expect(repo.take(10, true)).toEqual([]); // backpressure
    const before = available;
    c.gate.release();
    await repo.flush();
    expect(available).toBeGreaterThan(before);
    expect(repo.take(10, true)).toHaveLength(10);
  });

  it('hands every claimed and unsettled task back to the store (window, requeued, in flight)', async () => {
    store = await SqliteJobStore.open(sqlitePath());
    const ticket = await runningJob(
      store,
      Array.from({ length: 100 }, (_, i) => i),
    );
    const repo = new StoreTaskRepository(store, (await store.getJob(ticket))!, { window: 50, flushMs: 1 });
    const recs = await takeAll(repo, 20);
    for (const r of recs.slice(0, 5)) repo.complete(r, r.input);
    repo.requeue(recs.slice(5, 8));
    await repo.flush();
    expect((await store.getJob(ticket))!.counts).toMatchObject({ done: 5, running: 45 });
    repo.close();
    expect(await repo.returnClaimed()).toBe(45);
    const job = (await store.getJob(ticket))!;
    expect(job.counts).toEqual({ pending: 95, running: 0, done: 5, failed: 0 });
    expect(await store.recount(ticket)).toEqual(job.counts);
  });
});
