/**
 * The job service core (src/service/job-service.ts) in this process, on a real SQLite store and
 * real worker daemons on 127.0.0.1. Executions are counted by the stages themselves (each appends
 * a line per execution to a folder of the test's), never inferred from timing.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AuthenticationError,
  ForbiddenError,
  InvalidRequestError,
  InvalidInputError,
  InvalidOptionError,
  JobNotFoundError,
  JobStateError,
  SqliteJobStore,
  bundleProgram,
  createJobService,
  resolveFarmKey,
  tokenProof,
  type Caller,
  type InputLine,
  type JobSpec,
  type ResultLine,
  type ServiceEvent,
  type ServiceJobStatus,
  type StoreJobService,
} from '../../dist/src/index.js';
import { Daemons, fixture, tempDir, until, type LocalDaemon } from '../helpers/daemons.js';

interface Exec {
  v: number;
  start: number;
  end?: number;
}

function executions(dir: string): Exec[] {
  const out: Exec[] = [];
  for (const f of readdirSync(dir)) {
    if (!f.startsWith('exec-')) continue;
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) if (line.length > 0) out.push(JSON.parse(line) as Exec);
  }
  return out;
}

const lines = (values: readonly unknown[]): InputLine[] => values.map((v, i) => ({ text: JSON.stringify(v), line: i + 1 }));
const ada: Caller = { user: 'ada', admin: false };
const bob: Caller = { user: 'bob', admin: false };
const root: Caller = { user: 'root', admin: true };

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('job service (in process, SQLite, worker daemons)', () => {
  const daemons = new Daemons();
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    await daemons.stopAll();
  });

  async function open(workers = 2): Promise<{ service: StoreJobService; storePath: string; dir: string; stop: () => Promise<void>; ds: LocalDaemon[] }> {
    const ds = await daemons.start(workers, ['--threads', '1']);
    const t = tempDir();
    const storePath = join(t.path, 'jobs.db');
    const service = await createJobService({
      store: await SqliteJobStore.open(storePath),
      poolOptions: { peers: ds.map((d) => d.address), localFallback: false },
    });
    let closed = false;
    const stop = async (): Promise<void> => {
      if (!closed) await service.close(2000);
      closed = true;
    };
    cleanups.push(() => t.remove(), stop);
    return { service, storePath, dir: t.path, stop, ds };
  }

  /** Uploads a module stage's bundle; returns its stage reference. */
  async function upload(service: StoreJobService, path: string): Promise<{ bundle: string; name: string }> {
    const p = await bundleProgram(path);
    const s = p.stages[0]!;
    await service.putBundle(ada, s.hash, String(s.code));
    return { bundle: s.hash, name: s.name };
  }

  async function finished(service: StoreJobService, caller: Caller, ticket: string, timeoutMs = 30_000): Promise<ServiceJobStatus> {
    return until(
      `job ${ticket} finished`,
      async () => {
        const s = await service.status(caller, ticket);
        return ['done', 'failed', 'cancelled'].includes(s.state) ? s : undefined;
      },
      timeoutMs,
      20,
    );
  }

  it('runs a submitted job (an inline source and an uploaded bundle): outputs exact and in order, status from counters, events in sequence', async () => {
    const { service } = await open();
    const double = await upload(service, fixture('double.ts'));
    const n = 3000;
    const ticket = await service.submit(
      ada,
      { name: 'twice', stages: [double, { source: 'export default (x: number) => x + 1' }] },
      lines(Array.from({ length: n }, (_, i) => i)),
    );
    expect(ticket).toMatch(/^[0-9a-f-]{36}$/);
    const status = await finished(service, ada, ticket);
    expect(status).toMatchObject({
      ticket,
      name: 'twice',
      owner: 'ada',
      kind: 'map',
      state: 'done',
      total: n,
      counts: { pending: 0, running: 0, done: n, failed: 0 },
      error: null,
    });
    expect(status.finishedAt).not.toBeNull();
    const results = await collect(service.results(ada, ticket));
    expect(results).toHaveLength(n);
    results.forEach((r, i) => expect(r).toEqual({ index: i, output: String(i * 2 + 1) }));
    expect(await collect(service.results(ada, ticket, { after: n - 3 }))).toEqual([
      { index: n - 2, output: String((n - 2) * 2 + 1) },
      { index: n - 1, output: String((n - 1) * 2 + 1) },
    ]);
    const abort = new AbortController();
    const events: ServiceEvent[] = [];
    for await (const e of service.events(ada, ticket, { signal: abort.signal })) {
      events.push(e);
      if (e.type === 'state' && (e.data as { state: string }).state === 'done') abort.abort();
    }
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    const states = events.filter((e) => e.type === 'state').map((e) => (e.data as { state: string }).state);
    expect(states).toEqual(['queued', 'running', 'done']);
    const lastProgress = events.filter((e) => e.type === 'progress').at(-1);
    expect(lastProgress?.data).toMatchObject({ counts: { done: n, failed: 0 } });
    // Resuming after a sequence number repeats nothing.
    const again = new AbortController();
    const resumed: ServiceEvent[] = [];
    for await (const e of service.events(ada, ticket, { after: 2, signal: again.signal })) {
      resumed.push(e);
      if (e.seq === events.at(-1)!.seq) again.abort();
    }
    expect(resumed.map((e) => e.seq)).toEqual(events.slice(2).map((e) => e.seq));
  });

  it('refuses a bad submit naming the field or the line, and leaves no job behind (also when the input stream fails midway)', async () => {
    const { service } = await open(1);
    const spec: JobSpec = { stages: [{ source: 'export default (x) => x' }] };
    await expect(service.submit(ada, { ...spec, priority: 1.5 }, [])).rejects.toMatchObject({ name: 'InvalidRequestError', field: 'priority' });
    await expect(service.submit(ada, { stages: [] }, [])).rejects.toMatchObject({ field: 'stages' });
    await expect(service.submit(ada, { stages: [{ bundle: 'a'.repeat(64) }] }, [])).rejects.toMatchObject({ field: 'stages[0].bundle' });
    await expect(service.submit(ada, { stages: [{ source: 'import x from "./secret.js"; export default x' }] }, [])).rejects.toMatchObject({
      field: 'stages[0].source',
    });
    await expect(service.submit(ada, { ...spec, bogus: 1 } as unknown as JobSpec, [])).rejects.toBeInstanceOf(InvalidRequestError);
    const bad = service.submit(ada, spec, [
      { text: '1', line: 2 },
      { text: '', line: 3 },
      { text: '{"a": }', line: 4 },
    ]);
    await expect(bad).rejects.toBeInstanceOf(InvalidInputError);
    await expect(bad).rejects.toMatchObject({ line: 4, index: 1, code: 'FARM_ERR_INVALID_INPUT' });
    async function* dies(): AsyncGenerator<InputLine> {
      for (let i = 0; i < 25_000; i++) yield await Promise.resolve({ text: String(i), line: i + 1 });
      throw new Error('client went away');
    }
    await expect(service.submit(ada, spec, dies())).rejects.toBeInstanceOf(InvalidOptionError);
    expect((await service.list(root, { all: true })).items).toEqual([]);
  });

  it('finishes a job of no inputs at once', async () => {
    const { service } = await open(1);
    const ticket = await service.submit(ada, { stages: [{ source: 'export default (x) => x' }] }, []);
    expect(await finished(service, ada, ticket)).toMatchObject({ state: 'done', total: 0, counts: { pending: 0, running: 0, done: 0, failed: 0 } });
    expect(await collect(service.results(ada, ticket))).toEqual([]);
  });

  it('lists a worker it lost with the reason, and the job goes on on the others', async () => {
    const { service, dir, ds } = await open(2);
    const mark = await upload(service, fixture('chaos-mark.ts'));
    const n = 150;
    const ticket = await service.submit(ada, { stages: [mark] }, lines(Array.from({ length: n }, (_, v) => ({ v, ms: 20, dir }))));
    await until('both workers busy with the job', async () => (await service.workers(ada)).filter((w) => w.jobs.includes(ticket)).length === 2, 30_000);
    process.kill(ds[0]!.pid, 'SIGKILL');
    expect((await finished(service, ada, ticket)).state).toBe('done');
    const workers = await service.workers(ada);
    const lost = workers.find((w) => w.id === ds[0]!.id);
    expect(lost).toMatchObject({ state: 'lost', inFlight: 0, jobs: [] });
    expect(lost?.lost).toEqual(expect.any(String));
    expect(workers.find((w) => w.id === ds[1]!.id)?.state).toMatch(/idle|busy/);
    const results = await collect(service.results(ada, ticket));
    expect(results.map((r) => JSON.parse((r as { output: string }).output).r)).toEqual(Array.from({ length: n }, (_, v) => v * 2));
  });

  it('hold stops dispatch (tasks in flight go back to pending) and release resumes it: every output exact, only in-flight tasks run twice', async () => {
    const { service, dir } = await open();
    const mark = await upload(service, fixture('chaos-mark.ts'));
    const n = 40;
    const ticket = await service.submit(ada, { stages: [mark] }, lines(Array.from({ length: n }, (_, v) => ({ v, ms: 100, dir }))));
    await until('10 executions', () => executions(dir).length >= 10, 30_000);
    const held = await service.hold(ada, ticket);
    const heldAt = Date.now();
    expect(held.state).toBe('held');
    expect(held.counts.running).toBe(0);
    await expect(service.hold(ada, ticket)).rejects.toBeInstanceOf(JobStateError);
    // The workers are free while the job is held: another job runs to the end on them.
    const sentinelDir = tempDir();
    cleanups.push(() => sentinelDir.remove());
    const sentinel = await service.submit(bob, { stages: [mark] }, lines(Array.from({ length: 6 }, (_, v) => ({ v, ms: 5, dir: sentinelDir.path }))));
    expect((await finished(service, bob, sentinel)).state).toBe('done');
    expect(executions(dir).filter((e) => e.start > heldAt)).toEqual([]);
    expect((await service.status(ada, ticket)).state).toBe('held');
    const doneBeforeRelease = (await service.status(ada, ticket)).counts.done;
    expect(doneBeforeRelease).toBeLessThan(n);
    expect((await service.release(ada, ticket)).state).toMatch(/queued|running/);
    const status = await finished(service, ada, ticket);
    expect(status.state).toBe('done');
    const results = await collect(service.results(ada, ticket));
    expect(results.map((r) => r.index)).toEqual(Array.from({ length: n }, (_, i) => i));
    for (const r of results) expect(JSON.parse((r as { output: string }).output).r).toBe(r.index * 2);
    const runs = new Map<number, number>();
    for (const e of executions(dir)) runs.set(e.v, (runs.get(e.v) ?? 0) + 1);
    expect(runs.size).toBe(n);
    // Only tasks in flight at the hold ran twice: at most the workers' windows (2 daemons × 3 batches of 1).
    expect([...runs.values()].filter((c) => c > 1).length).toBeLessThanOrEqual(6);
  });

  it('cancel stops the job and its tasks on the workers', async () => {
    const { service, dir } = await open();
    const mark = await upload(service, fixture('chaos-mark.ts'));
    const ticket = await service.submit(ada, { stages: [mark] }, lines(Array.from({ length: 30 }, (_, v) => ({ v, ms: 1000, dir }))));
    await until('2 executions', () => executions(dir).length >= 2, 30_000);
    await until('both workers busy with the job', async () => (await service.workers(ada)).filter((w) => w.jobs.includes(ticket)).length === 2, 30_000);
    const cancelled = await service.cancel(ada, ticket);
    const cancelledAt = Date.now();
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.counts.running).toBe(0);
    // A task still running on a worker would finish (and log) before this job's tasks get a thread.
    const sentinelDir = tempDir();
    cleanups.push(() => sentinelDir.remove());
    const sentinel = await service.submit(ada, { stages: [mark] }, lines(Array.from({ length: 4 }, (_, v) => ({ v, ms: 5, dir: sentinelDir.path }))));
    expect((await finished(service, ada, sentinel)).state).toBe('done');
    const late = executions(dir).filter((e) => (e.end ?? 0) > cancelledAt + 300);
    expect(late).toEqual([]);
    expect(executions(dir).length).toBeLessThan(30);
    await expect(service.cancel(ada, ticket)).rejects.toBeInstanceOf(JobStateError);
  });

  it('resubmit with failedOnly runs only the failed tasks', async () => {
    const { service, dir } = await open();
    const stage = await upload(service, fixture('fail-unless-fixed.ts'));
    const n = 30;
    const ticket = await service.submit(ada, { stages: [stage], errors: 'collect' }, lines(Array.from({ length: n }, (_, v) => ({ v, every: 3, dir }))));
    const first = await finished(service, ada, ticket);
    expect(first).toMatchObject({ state: 'done', counts: { done: 20, failed: 10 } });
    expect(first.failures.map((f) => f.index)).toEqual([0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);
    expect(first.failures[0]!.error).toEqual({ name: 'RangeError', message: 'input 0 is not fixed yet' });
    const failed = await collect(service.results(ada, ticket, { failedOnly: true }));
    expect(failed.map((f) => f.index)).toEqual([0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);
    expect((failed[0] as Extract<ResultLine, { error: unknown }>).error).toMatchObject({ name: 'RangeError', attempts: 1 });
    expect((await service.failures(ada, ticket, { limit: 4 })).items.map((f) => f.index)).toEqual([0, 3, 6, 9]);
    writeFileSync(join(dir, 'fixed'), '');
    const again = await service.resubmit(ada, ticket, { failedOnly: true });
    expect(again).toMatchObject({ state: 'queued', counts: { pending: 10, done: 20, failed: 0 } });
    const second = await finished(service, ada, ticket);
    expect(second).toMatchObject({ state: 'done', counts: { done: n, failed: 0 }, failures: [] });
    const results = await collect(service.results(ada, ticket));
    expect(results).toEqual(Array.from({ length: n }, (_, v) => ({ index: v, output: String(v * 2) })));
    const runs = new Map<number, number>();
    for (const e of executions(dir)) runs.set(e.v, (runs.get(e.v) ?? 0) + 1);
    for (let v = 0; v < n; v++) expect(runs.get(v)).toBe(v % 3 === 0 ? 2 : 1);
  });

  it('a job of errors: "fail" fails with its first task failure, recorded with the input index', async () => {
    const { service } = await open(1);
    const stage = await upload(service, fixture('throws.ts'));
    const ticket = await service.submit(ada, { stages: [stage] }, lines(Array.from({ length: 50 }, (_, v) => ({ v, throwOn: 17 }))));
    const status = await finished(service, ada, ticket);
    expect(status.state).toBe('failed');
    expect(status.error).toMatchObject({ code: 'FARM_ERR_TASK', index: 17 });
    expect(status.failures).toEqual([{ index: 17, error: { name: 'RangeError', message: 'value 17 is out of range' } }]);
  });

  it("shares the workers by priority between two users' jobs: the urgent one takes the workers and finishes first", async () => {
    const { service, dir } = await open();
    const mark = await upload(service, fixture('chaos-mark.ts'));
    const lowDir = join(dir, 'low');
    const highDir = join(dir, 'high');
    for (const d of [lowDir, highDir]) (await import('node:fs')).mkdirSync(d);
    const low = await service.submit(ada, { name: 'sweep', stages: [mark] }, lines(Array.from({ length: 200 }, (_, v) => ({ v, ms: 20, dir: lowDir }))));
    await until('the low-priority job running', () => executions(lowDir).length >= 10, 30_000);
    const high = await service.submit(
      bob,
      { name: 'urgent', priority: 10, stages: [mark] },
      lines(Array.from({ length: 40 }, (_, v) => ({ v, ms: 20, dir: highDir }))),
    );
    const h = await finished(service, bob, high);
    const l = await finished(service, ada, low);
    expect(h.state).toBe('done');
    expect(l.state).toBe('done');
    expect(h.finishedAt!).toBeLessThan(l.finishedAt!);
    const highRuns = executions(highDir);
    const from = Math.min(...highRuns.map((e) => e.start));
    const to = Math.max(...highRuns.map((e) => e.end ?? e.start));
    // While the urgent job ran, the sweep only finished what was in flight and backfilled its tail.
    const lowMeanwhile = executions(lowDir).filter((e) => e.start > from && e.start < to).length;
    expect(lowMeanwhile).toBeLessThanOrEqual(12);
    expect(highRuns.length).toBe(40);
  });

  it("keeps users apart: another user's job is not found, listing everyone's jobs is for admins", async () => {
    const { service } = await open(1);
    const ticket = await service.submit(ada, { stages: [{ source: 'export default (x) => x' }] }, lines([1, 2, 3]));
    await expect(service.status(bob, ticket)).rejects.toBeInstanceOf(JobNotFoundError);
    await expect(service.cancel(bob, ticket)).rejects.toBeInstanceOf(JobNotFoundError);
    await expect(service.status(ada, 'not-a-ticket')).rejects.toBeInstanceOf(JobNotFoundError);
    await expect(service.list(ada, { all: true })).rejects.toBeInstanceOf(ForbiddenError);
    expect((await service.list(bob)).items).toEqual([]);
    expect((await service.list(ada)).items.map((j) => j.ticket)).toEqual([ticket]);
    expect((await service.list(root, { all: true })).items.map((j) => j.owner)).toEqual(['ada']);
    expect((await service.status(root, ticket)).owner).toBe('ada');
    await finished(service, ada, ticket);
    await service.remove(ada, ticket);
    await expect(service.status(ada, ticket)).rejects.toBeInstanceOf(JobNotFoundError);
  });

  it('mints tokens with a proof of the farm key over a single-use challenge', async () => {
    const { service } = await open(1);
    const key = resolveFarmKey()!.key;
    const nonce = await service.tokenChallenge();
    const req = { user: 'ada', admin: false, label: 'laptop', nonce };
    const proof = tokenProof(key, { ...req, certFingerprint: '' });
    await expect(service.createToken({ ...req, proof: tokenProof(Buffer.alloc(32, 1), { ...req, certFingerprint: '' }) })).rejects.toBeInstanceOf(
      AuthenticationError,
    );
    const minted = await service.createToken({ ...req, proof });
    expect(minted).toMatchObject({ user: 'ada', admin: false });
    expect(await service.authenticate(minted.token)).toEqual({ user: 'ada', admin: false });
    expect(await service.authenticate(minted.token + 'x')).toBeUndefined();
    await expect(service.createToken({ ...req, proof })).rejects.toBeInstanceOf(AuthenticationError); // replay
    const other = await service.tokenChallenge();
    await expect(service.createToken({ ...req, admin: true, nonce: other, proof })).rejects.toBeInstanceOf(AuthenticationError);
    expect(await service.healthy()).toBe(true);
  });

  it('close(grace) lets batches in flight finish, commits everything and leaves the store exact', async () => {
    const { service, dir, storePath, stop } = await open();
    const mark = await upload(service, fixture('chaos-mark.ts'));
    const n = 400;
    const ticket = await service.submit(ada, { stages: [mark] }, lines(Array.from({ length: n }, (_, v) => ({ v, ms: 10, dir }))));
    await until('some executions', () => executions(dir).length >= 20, 30_000);
    await stop();
    expect(await service.healthy()).toBe(false);
    const store = await SqliteJobStore.open(storePath);
    try {
      const job = (await store.getJob(ticket))!;
      expect(job.state).toBe('running');
      expect(job.counts.running).toBe(0);
      expect(await store.recount(ticket)).toEqual(job.counts);
      // Every execution that finished before the close is committed (the in-flight batches finished within the grace).
      const committed = new Set<number>();
      for await (const r of store.readResults(ticket)) committed.add(r.index);
      for (const e of executions(dir)) expect(committed.has(e.v)).toBe(true);
      expect(await store.integrityCheck()).toEqual(['ok']);
    } finally {
      await store.close();
    }
  });
});
