/**
 * The job store contract, as one suite every backend must pass:
 *   describeStoreConformance('sqlite', async () => ({ store, reopen, files, countRows, close }))
 * Each test gets a fresh, empty store from the factory.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FarmErrorCode } from '../../src/errors.js';
import { sha256 } from '../../src/store/shared.js';
import type { JobStore, NewJob, ResultRow, TaskCounts, TaskFailure, TaskRow, TaskState } from '../../src/store/index.js';
import { Rng } from './fuzz.js';

/** What the factory gives each test. */
export interface StoreUnderTest {
  readonly store: JobStore;
  /** A second store on the same database (a restarted manager). The test closes it. */
  reopen(): Promise<JobStore>;
  /** Files holding the database's bytes (to check what is written in them), after flushing what is buffered. */
  files(): Promise<string[]>;
  /** Rows in a table of this store (to check that nothing is left behind). */
  countRows(table: 'jobs' | 'job_counts' | 'tasks' | 'results' | 'requeued' | 'events'): Promise<number>;
  /** Releases everything the factory made (the store is closed by the suite). */
  dispose(): Promise<void>;
}

const CODE = 'export default (x) => x * 2;\n';
const BUNDLE = { hash: sha256(CODE), code: CODE };
const FAILURE: TaskFailure = { name: 'RangeError', message: 'too big', stack: 'RangeError: too big\n    at stage (file:///s.mjs:1:1)', code: '', attempts: 1 };

/** Recursively lists the files under a folder. */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p, { throwIfNoEntry: false });
    if (st?.isDirectory() === true) out.push(...filesUnder(p));
    else if (st?.isFile() === true) out.push(p);
  }
  return out;
}

async function expectCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a rejection with ${code}`).toBeInstanceOf(Error);
  expect((err as { code?: string }).code).toBe(code);
  if (message !== undefined) expect((err as Error).message).toMatch(message);
}

function sum(c: TaskCounts): number {
  return c.pending + c.running + c.done + c.failed;
}

/** Runs the conformance suite against a backend. */
export function describeStoreConformance(name: string, make: () => Promise<StoreUnderTest>): void {
  describe(`${name} job store conforms to JobStore`, () => {
    let sut: StoreUnderTest;
    let store: JobStore;
    const others: JobStore[] = [];

    beforeEach(async () => {
      sut = await make();
      store = sut.store;
    });
    afterEach(async () => {
      for (const s of others.splice(0)) await s.close();
      await store.close();
      await sut.dispose();
    });

    const job = (over: Partial<NewJob> = {}): NewJob => ({
      owner: 'ada',
      name: 'sweep',
      program: [{ name: 'double', hash: BUNDLE.hash }],
      options: { priority: 1 },
      ...over,
    });

    /** A committed job with `n` inputs `0..n-1` (as JSON text), optionally started. */
    async function submitted(n: number, opts: { start?: boolean; over?: Partial<NewJob>; batch?: number } = {}): Promise<string> {
      await store.putBundles([BUNDLE]);
      const ticket = await store.createJob(job(opts.over));
      const batch = opts.batch ?? 10_000;
      for (let i = 0; i < n; i += batch) {
        await store.appendInputs(
          ticket,
          Array.from({ length: Math.min(batch, n - i) }, (_, k) => String(i + k)),
        );
      }
      await store.commitSubmit(ticket);
      if (opts.start === true) expect((await store.startJob(ticket)).changed).toBe(true);
      return ticket;
    }

    async function expectCountsExact(ticket: string, s: JobStore = store): Promise<TaskCounts> {
      const job = await s.getJob(ticket);
      expect(job).toBeDefined();
      const recount = await s.recount(ticket);
      expect(job!.counts).toEqual(recount);
      expect(sum(job!.counts)).toBe(job!.total);
      return job!.counts;
    }

    const outputs = (indices: readonly number[]) => indices.map((index) => ({ index, output: String(index * 2) }));

    // ---------------------------------------------------------------- programs

    describe('programs', () => {
      it('stores a bundle once, by its sha256, and says which are missing', async () => {
        const other = 'export default (x) => x + 1;\n';
        expect(await store.missingBundles([BUNDLE.hash, sha256(other)])).toEqual([BUNDLE.hash, sha256(other)]);
        expect(await store.putBundles([BUNDLE])).toBe(1);
        expect(await store.putBundles([BUNDLE, { hash: sha256(other), code: other }])).toBe(1);
        expect(await store.missingBundles([BUNDLE.hash, sha256(other)])).toEqual([]);
        expect(await store.getBundles([BUNDLE.hash])).toEqual([BUNDLE]);
        expect(await store.getBundles([sha256('nothing')])).toEqual([]);
      });

      it('refuses a bundle whose code does not match its hash, storing nothing of the batch', async () => {
        const good = { hash: sha256('a'), code: 'a' };
        await expectCode(store.putBundles([good, { hash: sha256('b'), code: 'not b' }]), FarmErrorCode.INVALID_OPTION, /does not match/);
        expect(await store.missingBundles([good.hash])).toEqual([good.hash]);
        await expectCode(store.putBundles([{ hash: 'xyz', code: 'a' }]), FarmErrorCode.INVALID_OPTION, /bundles\[0\]\.hash/);
        await expectCode(store.missingBundles(['../etc/passwd']), FarmErrorCode.INVALID_OPTION, /hashes\[0\]/);
      });

      it('refuses a job whose program names a bundle that is not stored', async () => {
        await expectCode(store.createJob(job()), FarmErrorCode.INVALID_OPTION, /program\[0\].*not stored/);
      });
    });

    // ---------------------------------------------------------------- submitting

    describe('submitting', () => {
      it('a job is invisible until its submit commits, then queued with its inputs counted', async () => {
        await store.putBundles([BUNDLE]);
        const ticket = await store.createJob(job({ name: 'n1' }));
        expect(ticket).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        expect(await store.appendInputs(ticket, ['1', '2'])).toBe(2);
        expect(await store.appendInputs(ticket, ['3'])).toBe(3);
        expect(await store.getJob(ticket)).toBeUndefined();
        expect((await store.listJobs()).items).toEqual([]);
        await expectCode(store.recount(ticket), FarmErrorCode.JOB_NOT_FOUND);
        const job1 = await store.commitSubmit(ticket);
        expect(job1).toMatchObject({
          ticket,
          owner: 'ada',
          name: 'n1',
          kind: 'map',
          state: 'queued',
          total: 3,
          counts: { pending: 3, running: 0, done: 0, failed: 0 },
        });
        expect(job1.options).toEqual({ priority: 1 });
        expect(job1.program).toEqual([{ name: 'double', hash: BUNDLE.hash }]);
        expect(await store.getJob(ticket)).toEqual(job1);
        expect((await store.listJobs()).items.map((j) => j.ticket)).toEqual([ticket]);
        const events = await store.readEvents(ticket);
        expect(events).toMatchObject([{ seq: 1, type: 'state', data: { state: 'queued', from: 'submitting', total: 3 } }]);
        await expectCode(store.appendInputs(ticket, ['4']), FarmErrorCode.JOB_STATE);
        await expectCode(store.commitSubmit(ticket), FarmErrorCode.JOB_STATE);
        await expectCode(store.abortSubmit(ticket), FarmErrorCode.JOB_STATE);
        expect((await store.getJob(ticket))?.total).toBe(3);
      });

      it('a submit may start held, and takes kind and params', async () => {
        await store.putBundles([BUNDLE]);
        const ticket = await store.createJob(job({ state: 'held', kind: 'optimize', params: { bounds: [[0, 1]] } }));
        const j = await store.commitSubmit(ticket);
        expect(j).toMatchObject({ state: 'held', kind: 'optimize', params: { bounds: [[0, 1]] }, total: 0 });
      });

      it('an aborted submit leaves nothing: no job, no input, no event', async () => {
        await store.putBundles([BUNDLE]);
        const keep = await submitted(5);
        const ticket = await store.createJob(job());
        await store.appendInputs(
          ticket,
          Array.from({ length: 25_000 }, (_, i) => String(i)),
        );
        await store.appendInputs(ticket, ['1']);
        await store.abortSubmit(ticket);
        expect(await store.getJob(ticket)).toBeUndefined();
        await expectCode(store.appendInputs(ticket, ['1']), FarmErrorCode.JOB_NOT_FOUND);
        expect(await sut.countRows('jobs')).toBe(1);
        expect(await sut.countRows('job_counts')).toBe(1);
        expect(await sut.countRows('tasks')).toBe(5);
        expect(await sut.countRows('events')).toBe(1);
        await expectCountsExact(keep);
      });

      it('a submit whose client and manager died is removed by recover(), and nothing else is touched', async () => {
        const keep = await submitted(3);
        const ticket = await store.createJob(job());
        await store.appendInputs(ticket, ['1', '2']);
        const restarted = await sut.reopen();
        others.push(restarted);
        const report = await restarted.recover();
        expect(report).toEqual({ requeued: 0, abandonedSubmits: 1, purged: 0 });
        await expectCode(restarted.commitSubmit(ticket), FarmErrorCode.JOB_NOT_FOUND);
        expect(await sut.countRows('tasks')).toBe(3);
        expect((await restarted.getJob(keep))?.total).toBe(3);
      });

      it('validates what it stores, naming the field', async () => {
        await store.putBundles([BUNDLE]);
        await expectCode(store.createJob(job({ options: { priority: 1.5 } })), FarmErrorCode.INVALID_OPTION, /options\.priority/);
        await expectCode(store.createJob(job({ options: { weight: 0 } })), FarmErrorCode.INVALID_OPTION, /options\.weight/);
        await expectCode(store.createJob(job({ options: { errors: 'ignore' as 'fail' } })), FarmErrorCode.INVALID_OPTION, /options\.errors/);
        await expectCode(store.createJob(job({ owner: '' })), FarmErrorCode.INVALID_OPTION, /owner/);
        await expectCode(store.createJob(job({ program: [] })), FarmErrorCode.INVALID_OPTION, /program/);
        await expectCode(store.createJob(job({ program: [{ name: 'x', hash: 'abc' }] })), FarmErrorCode.INVALID_OPTION, /program\[0\]\.hash/);
        const ticket = await store.createJob(job());
        await expectCode(store.appendInputs(ticket, ['1', 2 as unknown as string]), FarmErrorCode.INVALID_OPTION, /inputs\[1\]/);
        await expectCode(store.appendInputs('not-a-ticket', ['1']), FarmErrorCode.JOB_NOT_FOUND);
        await expectCode(store.appendInputs('00000000-0000-4000-8000-000000000000', ['1']), FarmErrorCode.JOB_NOT_FOUND);
      });

      it('keeps input and output JSON text exactly as given', async () => {
        await store.putBundles([BUNDLE]);
        const texts = [
          '1.0',
          '1e3',
          '"é\\u00e9 \\"q\\" 😀"',
          '{"b":1,"a":[null,true]}',
          '-0',
          '12345678901234567890',
          '"\\u0000 \\\\ \\/ \\t \\ud83d\\ude00"',
          '{ "spaced" : [ 1 , 2 ] }',
          '[1,\n2]',
          JSON.stringify('x'.repeat(200_000)),
        ];
        const ticket = await store.createJob(job());
        await store.appendInputs(ticket, texts);
        await store.commitSubmit(ticket);
        await store.startJob(ticket);
        const claimed = await store.claimTasks(ticket, 100);
        expect(claimed.map((t) => t.input)).toEqual(texts);
        // claimBatch hands out the same inputs as one JSON array (requeued ones, then a fresh range).
        expect(await store.requeueTasks(ticket, [2, 5])).toBe(2);
        const again = await store.claimBatch(ticket, 100);
        expect(again.indices).toEqual([2, 5]);
        expect(JSON.parse(again.inputs)).toEqual([texts[2], texts[5]].map((t) => JSON.parse(t as string) as unknown));
        await store.commitOutputs(
          ticket,
          claimed.map((t) => ({ index: t.index, output: t.input })),
        );
        const results: ResultRow[] = [];
        for await (const r of store.readResults(ticket)) results.push(r);
        expect(results).toEqual(texts.map((output, index) => ({ index, output })));
      });
    });

    // ---------------------------------------------------------------- dispatch

    describe('dispatch', () => {
      it('claims pending tasks of a running job in index order, each once, and counts them', async () => {
        const ticket = await submitted(10);
        expect(await store.claimTasks(ticket, 4)).toEqual([]);
        await store.startJob(ticket);
        const a = await store.claimTasks(ticket, 4);
        expect(a).toEqual([0, 1, 2, 3].map((i) => ({ index: i, input: String(i) })));
        const b = await store.claimTasks(ticket, 4);
        expect(b.map((t) => t.index)).toEqual([4, 5, 6, 7]);
        expect((await store.claimTasks(ticket, 4)).map((t) => t.index)).toEqual([8, 9]);
        expect(await store.claimTasks(ticket, 4)).toEqual([]);
        expect(await expectCountsExact(ticket)).toEqual({ pending: 0, running: 10, done: 0, failed: 0 });
        await expectCode(store.claimTasks(ticket, 0), FarmErrorCode.INVALID_OPTION, /max/);
      });

      it('claimBatch hands out what claimTasks would, its inputs one JSON array: requeued first, settled tasks skipped', async () => {
        const ticket = await submitted(20);
        expect(await store.claimBatch(ticket, 4)).toEqual({ indices: [], inputs: '[]' });
        await store.startJob(ticket);
        const a = await store.claimBatch(ticket, 6);
        expect(a.indices).toEqual([0, 1, 2, 3, 4, 5]);
        expect(JSON.parse(a.inputs)).toEqual([0, 1, 2, 3, 4, 5]);
        // Results beyond the frontier (a late result), and requeued tasks: the next claim takes the
        // requeued ones first, then fresh ones without the settled.
        await store.commitOutputs(ticket, outputs([7, 9, 0]));
        expect(await store.requeueTasks(ticket, [4, 1])).toBe(2);
        const b = await store.claimBatch(ticket, 7);
        expect(b.indices).toEqual([1, 4, 6, 8, 10, 11, 12]);
        expect(JSON.parse(b.inputs)).toEqual([1, 4, 6, 8, 10, 11, 12]);
        const c = await store.claimBatch(ticket, 100);
        expect(c.indices).toEqual([13, 14, 15, 16, 17, 18, 19]);
        expect(JSON.parse(c.inputs)).toEqual(c.indices);
        expect(await store.claimBatch(ticket, 4)).toEqual({ indices: [], inputs: '[]' });
        expect(await expectCountsExact(ticket)).toEqual({ pending: 0, running: 17, done: 3, failed: 0 });
        await expectCode(store.claimBatch(ticket, 0), FarmErrorCode.INVALID_OPTION, /max/);
      });

      it('a restart after results settled out of order in many batches hands out exactly the unsettled tasks (seeded)', async () => {
        const rng = Rng.fromEnv();
        const n = 6000;
        const ticket = await submitted(n, { start: true });
        expect((await store.claimBatch(ticket, n)).indices.length).toBe(n);
        // Settle most tasks in shuffled batches, leaving gaps spread over the job and one long settled run.
        const order = [...Array(n).keys()].filter((i) => (i >= 2500 && i < 5000 ? true : rng.next() < 0.9));
        for (let i = order.length - 1; i > 0; i--) {
          const j = rng.int(0, i);
          [order[i], order[j]] = [order[j] as number, order[i] as number];
        }
        for (let i = 0; i < order.length; i += 500) await store.commitOutputs(ticket, outputs(order.slice(i, i + 500)));
        const restarted = await sut.reopen();
        others.push(restarted);
        const settled = new Set(order);
        const unsettled = [...Array(n).keys()].filter((i) => !settled.has(i));
        expect((await restarted.recover()).requeued, `seed ${rng.seed}`).toBe(unsettled.length);
        const seen: number[] = [];
        for (;;) {
          const got = await restarted.claimBatch(ticket, 97);
          if (got.indices.length === 0) break;
          seen.push(...got.indices);
        }
        expect(seen, `seed ${rng.seed}`).toEqual(unsettled);
        await expectCountsExact(ticket, restarted);
      });

      it('concurrent claims never hand out a task twice', async () => {
        const ticket = await submitted(1000, { start: true });
        const claims = await Promise.all(Array.from({ length: 20 }, () => store.claimTasks(ticket, 60)));
        const all = claims.flat().map((t) => t.index);
        expect(new Set(all).size).toBe(all.length);
        expect(all.length).toBe(1000);
        await expectCountsExact(ticket);
      });

      it('commits outputs in one batch: the first result wins, later ones change nothing and are reported', async () => {
        const ticket = await submitted(6, { start: true });
        await store.claimTasks(ticket, 6);
        const r1 = await store.commitOutputs(ticket, outputs([0, 1, 2]));
        expect(r1).toEqual({ accepted: 3, rejected: [], counts: { pending: 0, running: 3, done: 3, failed: 0 } });
        const r2 = await store.commitOutputs(ticket, [
          { index: 1, output: '"second"' },
          { index: 3, output: '6' },
          { index: 3, output: '"dup in batch"' },
        ]);
        expect(r2.accepted).toBe(1);
        expect([...r2.rejected].sort()).toEqual([1, 3]);
        const rows = (await store.listTasks(ticket)).items;
        expect(rows.find((t) => t.index === 1)?.output).toBe('2');
        expect(rows.find((t) => t.index === 3)?.output).toBe('6');
        await expectCountsExact(ticket);
      });

      it('refuses an index that is not a task of the job, writing nothing of the batch', async () => {
        const ticket = await submitted(3, { start: true });
        await store.claimTasks(ticket, 3);
        await expectCode(store.commitOutputs(ticket, [...outputs([0]), { index: 3, output: '1' }]), FarmErrorCode.INVALID_OPTION, /\[1\]\.index/);
        await expectCode(store.commitOutputs(ticket, [{ index: 0, output: 5 as unknown as string }]), FarmErrorCode.INVALID_OPTION, /\[0\]\.output/);
        await expectCode(store.commitOutputs(ticket, [{ index: -1, output: '1' }]), FarmErrorCode.INVALID_OPTION);
        expect(await expectCountsExact(ticket)).toEqual({ pending: 0, running: 3, done: 0, failed: 0 });
      });

      it('a late result for a task that is pending again still counts, once', async () => {
        const ticket = await submitted(4, { start: true });
        await store.claimTasks(ticket, 2);
        expect(await store.requeueTasks(ticket, [1])).toBe(1);
        expect((await store.commitOutputs(ticket, outputs([1, 3]))).accepted).toBe(2);
        expect(await expectCountsExact(ticket)).toEqual({ pending: 1, running: 1, done: 2, failed: 0 });
        // Neither is handed out again.
        expect((await store.claimTasks(ticket, 10)).map((t) => t.index)).toEqual([2]);
        await expectCountsExact(ticket);
      });

      it('records failures with their error and attempts; a failed task is settled', async () => {
        const ticket = await submitted(5, { start: true });
        await store.claimTasks(ticket, 5);
        const r = await store.failTasks(ticket, [
          { index: 2, error: FAILURE },
          { index: 4, error: { ...FAILURE, attempts: 3, code: 'FARM_ERR_TASK_TIMEOUT' } },
        ]);
        expect(r).toMatchObject({ accepted: 2, rejected: [], counts: { running: 3, failed: 2 } });
        expect((await store.commitOutputs(ticket, outputs([2]))).rejected).toEqual([2]);
        expect((await store.failTasks(ticket, [{ index: 2, error: FAILURE }])).rejected).toEqual([2]);
        await store.commitOutputs(ticket, outputs([0]));
        expect((await store.failTasks(ticket, [{ index: 0, error: FAILURE }])).accepted).toBe(0);
        expect((await store.listFailures(ticket)).items).toEqual([
          { index: 2, error: FAILURE },
          { index: 4, error: { ...FAILURE, attempts: 3, code: 'FARM_ERR_TASK_TIMEOUT' } },
        ]);
        await expectCode(
          store.failTasks(ticket, [{ index: 1, error: { ...FAILURE, stack: undefined as unknown as string } }]),
          FarmErrorCode.INVALID_OPTION,
          /error\.stack/,
        );
        await expectCountsExact(ticket);
      });

      it('requeues running tasks only, and hands them out again before fresh ones', async () => {
        const ticket = await submitted(10, { start: true });
        await store.claimTasks(ticket, 6);
        await store.commitOutputs(ticket, outputs([0]));
        expect(await store.requeueTasks(ticket, [0, 3, 5, 5, 8, 42])).toBe(2); // 0 done, 8 and 42 never claimed
        expect(await expectCountsExact(ticket)).toEqual({ pending: 6, running: 3, done: 1, failed: 0 });
        expect((await store.claimTasks(ticket, 3)).map((t) => t.index)).toEqual([3, 5, 6]);
        expect((await store.claimTasks(ticket, 10)).map((t) => t.index)).toEqual([7, 8, 9]);
        await expectCountsExact(ticket);
      });

      it('recovers after a restart: running tasks are pending again, done ones are never handed out again', async () => {
        const ticket = await submitted(100, { start: true });
        await store.claimTasks(ticket, 60);
        await store.commitOutputs(ticket, outputs([...Array(30).keys()].map((i) => i * 2))); // evens < 60
        await store.failTasks(ticket, [{ index: 1, error: FAILURE }]);
        await store.requeueTasks(ticket, [3]);
        const restarted = await sut.reopen();
        others.push(restarted);
        const report = await restarted.recover();
        expect(report).toEqual({ requeued: 28, abandonedSubmits: 0, purged: 0 });
        expect(await expectCountsExact(ticket, restarted)).toEqual({ pending: 69, running: 0, done: 30, failed: 1 });
        const seen: number[] = [];
        for (;;) {
          const got = await restarted.claimTasks(ticket, 7);
          if (got.length === 0) break;
          seen.push(...got.map((t) => t.index));
          await restarted.commitOutputs(ticket, outputs(got.map((t) => t.index)));
        }
        const expected = [...Array(100).keys()].filter((i) => !(i < 60 && i % 2 === 0) && i !== 1);
        expect(seen).toEqual(expected);
        expect(await expectCountsExact(ticket, restarted)).toEqual({ pending: 0, running: 0, done: 99, failed: 1 });
        const results: ResultRow[] = [];
        for await (const r of restarted.readResults(ticket, { chunkSize: 13 })) results.push(r);
        expect(results.map((r) => r.index)).toEqual([...Array(100).keys()]);
        expect(results.filter((r) => 'output' in r && r.output !== String(r.index * 2))).toEqual([]);
        expect(await restarted.recover()).toEqual({ requeued: 0, abandonedSubmits: 0, purged: 0 });
      });
    });

    // ---------------------------------------------------------------- job states

    describe('job states', () => {
      it('hold stops claims and puts running tasks back; release and start resume', async () => {
        const ticket = await submitted(10, { start: true });
        await store.claimTasks(ticket, 4);
        const held = await store.holdJob(ticket);
        expect(held).toMatchObject({ changed: true, job: { state: 'held', counts: { pending: 10, running: 0 } } });
        expect(await store.claimTasks(ticket, 4)).toEqual([]);
        expect((await store.holdJob(ticket)).changed).toBe(false);
        expect((await store.startJob(ticket)).changed).toBe(false);
        expect((await store.releaseJob(ticket)).job.state).toBe('queued');
        expect((await store.releaseJob(ticket)).changed).toBe(false);
        await store.startJob(ticket);
        expect((await store.claimTasks(ticket, 20)).map((t) => t.index)).toEqual([...Array(10).keys()]);
        const states = (await store.readEvents(ticket)).filter((e) => e.type === 'state').map((e) => (e.data as { state: string }).state);
        expect(states).toEqual(['queued', 'running', 'held', 'queued', 'running']);
        await expectCountsExact(ticket);
      });

      it('records when a job started and finished, and why it failed', async () => {
        const ticket = await submitted(2);
        const t0 = (await store.getJob(ticket))!;
        expect(t0.startedAt).toBeNull();
        const started = (await store.startJob(ticket)).job;
        expect(started.startedAt).toBeGreaterThanOrEqual(t0.createdAt);
        const failed = await store.finishJob(ticket, 'failed', { code: 'FARM_ERR_TASK', message: 'Task for input 1 failed', index: 1 });
        expect(failed.job).toMatchObject({ state: 'failed', error: { code: 'FARM_ERR_TASK', message: 'Task for input 1 failed', index: 1 } });
        expect(failed.job.finishedAt).not.toBeNull();
        expect((await store.cancelJob(ticket)).changed).toBe(false);
        expect((await store.finishJob(ticket, 'done')).changed).toBe(false);
      });

      it('cancel ends a job in any unfinished state, and puts its running tasks back', async () => {
        const a = await submitted(3, { start: true });
        await store.claimTasks(a, 2);
        expect((await store.cancelJob(a)).job).toMatchObject({ state: 'cancelled', counts: { pending: 3, running: 0 } });
        expect(await store.claimTasks(a, 2)).toEqual([]);
        const b = await submitted(1, { over: { state: 'held' } });
        expect((await store.cancelJob(b)).job.state).toBe('cancelled');
        const c = await submitted(1);
        expect((await store.cancelJob(c)).job.state).toBe('cancelled');
        await expectCountsExact(a);
      });

      it('resubmit --failed runs only the failed tasks again; resubmit all runs everything again', async () => {
        const ticket = await submitted(6, { start: true });
        await store.claimTasks(ticket, 6);
        await store.commitOutputs(ticket, outputs([0, 2, 3, 5]));
        await store.failTasks(ticket, [
          { index: 1, error: FAILURE },
          { index: 4, error: FAILURE },
        ]);
        expect((await store.resubmitJob(ticket, { failedOnly: true })).changed).toBe(false); // running: not finished
        await store.finishJob(ticket, 'done');
        const r = await store.resubmitJob(ticket, { failedOnly: true });
        expect(r.job).toMatchObject({ state: 'queued', finishedAt: null, error: null, counts: { pending: 2, running: 0, done: 4, failed: 0 } });
        await store.startJob(ticket);
        expect((await store.claimTasks(ticket, 10)).map((t) => t.index)).toEqual([1, 4]);
        await store.commitOutputs(ticket, outputs([1, 4]));
        await store.finishJob(ticket, 'done');
        expect((await store.listFailures(ticket)).items).toEqual([]);
        const all = await store.resubmitJob(ticket, { failedOnly: false });
        expect(all.job.counts).toEqual({ pending: 6, running: 0, done: 0, failed: 0 });
        await store.startJob(ticket);
        expect((await store.claimTasks(ticket, 10)).map((t) => t.index)).toEqual([...Array(6).keys()]);
        await expectCountsExact(ticket);
      });

      it('remove deletes a job and every row of it', async () => {
        const keep = await submitted(3, { start: true });
        const ticket = await submitted(30_000, { start: true });
        await store.claimTasks(ticket, 10);
        await store.commitOutputs(ticket, outputs([0, 1]));
        await store.requeueTasks(ticket, [5]);
        await store.appendEvents(ticket, [{ type: 'progress', data: { done: 2 } }]);
        expect(await store.removeJob(ticket)).toBe(true);
        expect(await store.getJob(ticket)).toBeUndefined();
        expect(await store.removeJob(ticket)).toBe(false);
        await expectCode(store.claimTasks(ticket, 1), FarmErrorCode.JOB_NOT_FOUND);
        expect(await sut.countRows('tasks')).toBe(3);
        for (const t of ['results', 'requeued'] as const) expect(await sut.countRows(t)).toBe(0);
        expect(await sut.countRows('jobs')).toBe(1);
        expect(await sut.countRows('events')).toBe(2);
        await expectCountsExact(keep);
      });

      it('an unknown ticket is not found by every per-job method', async () => {
        const t = '00000000-0000-4000-8000-000000000000';
        expect(await store.getJob(t)).toBeUndefined();
        expect(await store.getJob('garbage; DROP TABLE jobs')).toBeUndefined();
        for (const call of [
          () => store.startJob(t),
          () => store.holdJob(t),
          () => store.releaseJob(t),
          () => store.cancelJob(t),
          () => store.finishJob(t, 'done'),
          () => store.resubmitJob(t, { failedOnly: true }),
          () => store.setJobResult(t, 1),
          () => store.claimTasks(t, 1),
          () => store.commitOutputs(t, []),
          () => store.failTasks(t, []),
          () => store.requeueTasks(t, []),
          () => store.listTasks(t),
          () => store.listFailures(t),
          () => store.recount(t),
          () => store.appendEvents(t, []),
          () => store.readEvents(t),
          () => store.saveOptimizerState(t, { generation: 1, state: '{}' }),
          () => store.loadOptimizerState(t),
          () => store.commitSubmit(t),
          () => store.abortSubmit(t),
        ]) {
          await expectCode(call(), FarmErrorCode.JOB_NOT_FOUND);
        }
        const it = store.readResults(t)[Symbol.asyncIterator]();
        await expectCode(it.next(), FarmErrorCode.JOB_NOT_FOUND);
      });
    });

    // ---------------------------------------------------------------- lists and pages

    describe('lists and pages', () => {
      it('lists jobs newest first, per owner or all, by state, in keyset pages', async () => {
        const tickets: string[] = [];
        for (let i = 0; i < 7; i++) tickets.push(await submitted(1, { over: { owner: i % 2 === 0 ? 'ada' : 'bob', name: `j${i}` } }));
        await store.startJob(tickets[0]!);
        await store.finishJob(tickets[0]!, 'done');
        await store.cancelJob(tickets[3]!);
        const pages: string[][] = [];
        let after: string | undefined;
        do {
          const page = await store.listJobs(after === undefined ? { limit: 3 } : { limit: 3, after });
          pages.push(page.items.map((j) => j.name));
          after = page.next ?? undefined;
        } while (after !== undefined);
        expect(pages).toEqual([['j6', 'j5', 'j4'], ['j3', 'j2', 'j1'], ['j0']]);
        expect((await store.listJobs({ owner: 'bob' })).items.map((j) => j.name)).toEqual(['j5', 'j3', 'j1']);
        expect((await store.listJobs({ states: ['done', 'failed', 'cancelled'] })).items.map((j) => j.name)).toEqual(['j3', 'j0']);
        expect((await store.listJobs({ owner: 'ada', states: ['queued', 'running', 'held'] })).items.map((j) => j.name)).toEqual(['j6', 'j4', 'j2']);
        expect((await store.listJobs({ states: [] })).items).toEqual([]);
        await expectCode(store.listJobs({ after: 'x' }), FarmErrorCode.INVALID_OPTION, /after/);
        await expectCode(store.listJobs({ limit: 0 }), FarmErrorCode.INVALID_OPTION, /limit/);
        await expectCode(store.listJobs({ states: ['paused' as 'held'] }), FarmErrorCode.INVALID_OPTION, /states/);
      });

      it('pages tasks by index, filtered by state, with each page exactly the filtered listing', async () => {
        const n = 60;
        const ticket = await submitted(n, { start: true });
        await store.claimTasks(ticket, 40);
        await store.commitOutputs(ticket, outputs([...Array(40).keys()].filter((i) => i % 3 === 0)));
        await store.failTasks(
          ticket,
          [5, 11, 50].map((index) => ({ index, error: FAILURE })),
        );
        await store.requeueTasks(ticket, [7, 8]);
        const full: TaskRow[] = [];
        for (let after = -1; ;) {
          const page = await store.listTasks(ticket, { after, limit: 1000 });
          full.push(...page.items);
          if (page.next === null) break;
          after = page.next;
        }
        expect(full.map((t) => t.index)).toEqual([...Array(n).keys()]);
        const expectedState = (i: number): TaskState =>
          [5, 11, 50].includes(i) ? 'failed' : i < 40 && i % 3 === 0 ? 'done' : i >= 40 || i === 7 || i === 8 ? 'pending' : 'running';
        expect(full.map((t) => t.state)).toEqual([...Array(n).keys()].map(expectedState));
        expect(full[3]).toEqual({ index: 3, state: 'done', input: '3', output: '6', error: null });
        expect(full[5]).toEqual({ index: 5, state: 'failed', input: '5', output: null, error: FAILURE });
        for (const state of ['pending', 'running', 'done', 'failed'] as const) {
          const got: number[] = [];
          for (let after = -1; ;) {
            const page = await store.listTasks(ticket, { state, after, limit: 7 });
            expect(page.items.length).toBeLessThanOrEqual(7);
            for (const t of page.items) expect(t.state).toBe(state);
            got.push(...page.items.map((t) => t.index));
            if (page.next === null) break;
            after = page.next;
          }
          expect(got, state).toEqual(full.filter((t) => t.state === state).map((t) => t.index));
        }
        const counts = await expectCountsExact(ticket);
        expect(counts).toEqual({
          pending: full.filter((t) => t.state === 'pending').length,
          running: full.filter((t) => t.state === 'running').length,
          done: full.filter((t) => t.state === 'done').length,
          failed: 3,
        });
        await expectCode(store.listTasks(ticket, { state: 'lost' as TaskState }), FarmErrorCode.INVALID_OPTION, /state/);
        await expectCode(store.listTasks(ticket, { limit: 1001 }), FarmErrorCode.INVALID_OPTION, /limit/);
      });

      it('a running page examines a bounded range: short pages continue, never miss a task', async () => {
        const n = 120_000;
        const ticket = await submitted(n, { start: true });
        await store.claimTasks(ticket, n);
        const done = [...Array(n).keys()].filter((i) => i !== 3 && i !== 110_000);
        for (let i = 0; i < done.length; i += 20_000) await store.commitOutputs(ticket, outputs(done.slice(i, i + 20_000)));
        const got: number[] = [];
        let calls = 0;
        for (let after = -1; calls < 10; calls++) {
          const page = await store.listTasks(ticket, { state: 'running', after, limit: 10 });
          got.push(...page.items.map((t) => t.index));
          if (page.next === null) break;
          after = page.next;
        }
        expect(got).toEqual([3, 110_000]);
        expect(calls).toBeGreaterThan(1);
      });

      it('streams results in input order, in chunks, failures included or alone', async () => {
        const ticket = await submitted(20, { start: true });
        await store.claimTasks(ticket, 20);
        await store.commitOutputs(ticket, outputs([...Array(20).keys()].filter((i) => i !== 4 && i !== 9 && i !== 15)));
        await store.failTasks(ticket, [{ index: 9, error: FAILURE }]);
        const all: ResultRow[] = [];
        for await (const r of store.readResults(ticket, { chunkSize: 4 })) all.push(r);
        expect(all.map((r) => r.index)).toEqual([...Array(20).keys()].filter((i) => i !== 4 && i !== 15));
        expect(all.find((r) => r.index === 9)).toEqual({ index: 9, error: FAILURE });
        const failed: ResultRow[] = [];
        for await (const r of store.readResults(ticket, { failedOnly: true, chunkSize: 1 })) failed.push(r);
        expect(failed).toEqual([{ index: 9, error: FAILURE }]);
        const tail: number[] = [];
        for await (const r of store.readResults(ticket, { after: 16 })) tail.push(r.index);
        expect(tail).toEqual([17, 18, 19]);
      });
    });

    // ---------------------------------------------------------------- events

    describe('events', () => {
      it('appends events with gapless sequence numbers, resumable from any of them', async () => {
        const ticket = await submitted(1);
        expect(await store.appendEvents(ticket, [])).toBe(1);
        expect(await store.appendEvents(ticket, [{ type: 'progress', data: { done: 0 } }])).toBe(2);
        expect(
          await store.appendEvents(
            ticket,
            [...Array(5).keys()].map((i) => ({ type: 'progress', data: { done: i + 1 } })),
          ),
        ).toBe(7);
        await store.startJob(ticket);
        const all = await store.readEvents(ticket);
        expect(all.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
        expect(all[7]).toMatchObject({ type: 'state', data: { state: 'running', from: 'queued' } });
        expect(all.every((e) => typeof e.at === 'number')).toBe(true);
        const resumed = await store.readEvents(ticket, { after: 5 });
        expect(resumed.map((e) => e.seq)).toEqual([6, 7, 8]);
        expect((await store.readEvents(ticket, { after: 2, limit: 2 })).map((e) => e.seq)).toEqual([3, 4]);
        expect(await store.readEvents(ticket, { after: 8 })).toEqual([]);
        expect((await store.getJob(ticket))?.lastEventSeq).toBe(8);
        await expectCode(store.appendEvents(ticket, [{ type: '', data: 1 }]), FarmErrorCode.INVALID_OPTION, /events\[0\]\.type/);
        await expectCode(store.appendEvents(ticket, [{ type: 'x', data: undefined as unknown as null }]), FarmErrorCode.INVALID_OPTION, /events\[0\]\.data/);
      });
    });

    // ---------------------------------------------------------------- tokens

    describe('tokens', () => {
      it('mints tokens, finds them by value, stores only their hash, revokes them', async () => {
        const a = await store.createToken({ user: 'ada', admin: true, label: 'laptop' });
        const b = await store.createToken({ user: 'bob' });
        expect(a.token).toMatch(/^tf_[A-Za-z0-9_-]{43}$/);
        expect(a.token).not.toBe(b.token);
        expect(await store.findToken(a.token)).toEqual({ id: a.id, user: 'ada', admin: true, label: 'laptop', createdAt: a.createdAt });
        expect(await store.findToken(b.token)).toMatchObject({ user: 'bob', admin: false, label: '' });
        expect(await store.findToken(a.token + 'x')).toBeUndefined();
        expect(await store.findToken('')).toBeUndefined();
        expect((await store.listTokens()).map((t) => t.user).sort()).toEqual(['ada', 'bob']);
        expect(JSON.stringify(await store.listTokens())).not.toContain(a.token);
        // The database's bytes hold the hash and never the token.
        const files = await sut.files();
        expect(files.length).toBeGreaterThan(0);
        const bytes = Buffer.concat(files.map((f) => readFileSync(f)));
        expect(bytes.includes(Buffer.from(sha256(a.token)))).toBe(true);
        expect(bytes.includes(Buffer.from(a.token))).toBe(false);
        expect(bytes.includes(Buffer.from(a.token.slice(3)))).toBe(false);
        expect(await store.revokeToken(a.id)).toBe(true);
        expect(await store.revokeToken(a.id)).toBe(false);
        expect(await store.findToken(a.token)).toBeUndefined();
        await expectCode(store.createToken({ user: '' }), FarmErrorCode.INVALID_OPTION, /user/);
      });
    });

    // ---------------------------------------------------------------- optimisation

    describe('optimisation state', () => {
      it('commits state per generation, newest only, with result metadata and an event', async () => {
        const ticket = await submitted(0, { over: { kind: 'optimize' }, start: true });
        expect(await store.loadOptimizerState(ticket)).toBeUndefined();
        expect(await store.saveOptimizerState(ticket, { generation: 1, state: '{"pop":[[1,2]]}' }, { fun: 3.5, x: [1, 2] })).toBe(true);
        expect(await store.saveOptimizerState(ticket, { generation: 1, state: '{"stale":true}' })).toBe(false);
        expect(await store.saveOptimizerState(ticket, { generation: 2, state: '{"pop":[[0,1]]}' })).toBe(true);
        expect(await store.loadOptimizerState(ticket)).toEqual({ generation: 2, state: '{"pop":[[0,1]]}' });
        const j = await store.getJob(ticket);
        expect(j).toMatchObject({ generation: 2, result: { fun: 3.5, x: [1, 2] } });
        await store.setJobResult(ticket, { fun: 0.5 });
        expect((await store.getJob(ticket))?.result).toEqual({ fun: 0.5 });
        const gens = (await store.readEvents(ticket)).filter((e) => e.type === 'generation');
        expect(gens.map((e) => e.data)).toEqual([
          { generation: 1, result: { fun: 3.5, x: [1, 2] } },
          { generation: 2, result: null },
        ]);
        const restarted = await sut.reopen();
        others.push(restarted);
        expect(await restarted.loadOptimizerState(ticket)).toEqual({ generation: 2, state: '{"pop":[[0,1]]}' });
      });
    });

    // ---------------------------------------------------------------- statistics (issue 12)

    describe('statistics', () => {
      it('keeps one stats row per job, replaced on save, across a reopen, removed with the job', async () => {
        const ticket = await submitted(3, { start: true });
        expect(await store.loadJobStats(ticket)).toBeUndefined();
        await store.saveJobStats(ticket, '{"durations":{"count":1}}');
        await store.saveJobStats(ticket, '{"durations":{"count":2}}');
        expect(await store.loadJobStats(ticket)).toBe('{"durations":{"count":2}}');
        const restarted = await sut.reopen();
        others.push(restarted);
        expect(await restarted.loadJobStats(ticket)).toBe('{"durations":{"count":2}}');
        await expectCode(store.saveJobStats(ticket, 'not json'), FarmErrorCode.INVALID_OPTION, /stats/);
        await expectCode(store.saveJobStats(ticket, `"${'x'.repeat(1024 * 1024)}"`), FarmErrorCode.INVALID_OPTION, /stats/);
        expect(await store.removeJob(ticket)).toBe(true);
        await expectCode(store.loadJobStats(ticket), FarmErrorCode.JOB_NOT_FOUND);
        await expectCode(store.saveJobStats(ticket, '{}'), FarmErrorCode.JOB_NOT_FOUND);
      });

      it('summarises jobs per state and the tasks of unfinished jobs from the counters', async () => {
        const empty = await store.summary();
        expect(empty.jobs).toEqual({ queued: 0, running: 0, held: 0, done: 0, failed: 0, cancelled: 0 });
        expect(empty.tasks).toEqual({ pending: 0, running: 0, done: 0, failed: 0 });
        const a = await submitted(5, { start: true });
        await store.claimTasks(a, 2);
        await store.commitOutputs(a, outputs([0]));
        await submitted(4);
        await submitted(2, { over: { state: 'held' } });
        const d = await submitted(3, { start: true });
        await store.claimTasks(d, 3);
        await store.commitOutputs(d, outputs([0, 1, 2]));
        await store.finishJob(d, 'done');
        // Invisible: a submit that did not commit.
        await store.createJob(job());
        const s = await store.summary();
        expect(s.jobs).toEqual({ queued: 1, running: 1, held: 1, done: 1, failed: 0, cancelled: 0 });
        expect(s.tasks).toEqual({ pending: 3 + 4 + 2, running: 1, done: 1, failed: 0 });
      });
    });

    // ---------------------------------------------------------------- counters under random operations

    describe('counters', () => {
      it('always equal a recount, whatever sequence of operations ran (seeded)', async () => {
        const rng = Rng.fromEnv();
        const n = 300;
        const ticket = await submitted(n, { start: true, batch: 77 });
        const running = new Set<number>();
        const settled = new Map<number, string>();
        for (let step = 0; step < 120; step++) {
          const op = rng.int(0, 9);
          if (op <= 2) {
            const max = rng.int(1, 25);
            const claimed =
              rng.next() < 0.5
                ? (await store.claimTasks(ticket, max)).map((t) => t.index)
                : await store.claimBatch(ticket, max).then((b) => {
                    expect(JSON.parse(b.inputs), `seed ${rng.seed}`).toEqual(b.indices);
                    return b.indices;
                  });
            for (const index of claimed) {
              expect(running.has(index) || settled.has(index), `task ${index} handed out twice (seed ${rng.seed})`).toBe(false);
              running.add(index);
            }
          } else if (op <= 5) {
            const picks = [...Array(rng.int(1, 20))].map(() => rng.int(0, n - 1));
            const fresh = new Set(picks.filter((i) => !settled.has(i)));
            const res = await store.commitOutputs(ticket, outputs(picks));
            expect(res.accepted, `seed ${rng.seed}`).toBe(fresh.size);
            expect(res.rejected.length, `seed ${rng.seed}`).toBe(picks.length - fresh.size);
            for (const i of picks) if (!settled.has(i)) settled.set(i, String(i * 2));
            for (const i of picks) running.delete(i);
          } else if (op === 6) {
            const picks = [...Array(rng.int(1, 5))].map(() => rng.int(0, n - 1));
            await store.failTasks(
              ticket,
              picks.map((index) => ({ index, error: FAILURE })),
            );
            for (const i of picks) if (!settled.has(i)) settled.set(i, 'failed');
            for (const i of picks) running.delete(i);
          } else if (op === 7) {
            const picks = [...running].filter(() => rng.next() < 0.3);
            expect(await store.requeueTasks(ticket, picks)).toBe(picks.length);
            for (const i of picks) running.delete(i);
          } else if (op === 8 && rng.next() < 0.3) {
            await store.holdJob(ticket);
            running.clear();
            await store.releaseJob(ticket);
            await store.startJob(ticket);
          } else if (op === 9 && rng.next() < 0.2) {
            const restarted = await sut.reopen();
            await restarted.recover();
            await restarted.close();
            running.clear();
          }
          const c = await expectCountsExact(ticket);
          expect(c.running, `seed ${rng.seed}`).toBe(running.size);
          expect(c.done + c.failed, `seed ${rng.seed}`).toBe(settled.size);
        }
      });
    });

    // ---------------------------------------------------------------- lifecycle

    describe('lifecycle', () => {
      it('close is idempotent and later calls reject with a StoreError', async () => {
        const extra = await sut.reopen();
        await extra.close();
        await extra.close();
        await expectCode(extra.listJobs(), FarmErrorCode.STORE, /closed/);
        await expectCode(extra.createToken({ user: 'x' }), FarmErrorCode.STORE, /closed/);
      });
    });
  });
}
