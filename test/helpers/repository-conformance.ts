/**
 * The contract every task repository must honour (src/farm/repository.ts, TaskRepository): one
 * suite, run against each implementation with a factory that makes a repository over given inputs.
 */
import { describe, expect, it } from 'vitest';
import type { FarmError, TaskRecord, TaskRepository } from '../../src/index.js';
import { TaskError } from '../../src/errors.js';

/** What a repository settled, as its sink saw it. */
export interface Settled {
  readonly outputs: Map<number, unknown>;
  readonly failures: Map<number, FarmError>;
}

/** Makes a repository over `inputs`; `settled` fills as tasks settle. `flush` waits until pending commits are durable. */
export type RepositoryFactory = (
  inputs: readonly unknown[],
) => Promise<{ repo: TaskRepository; settled: Settled; flush: () => Promise<void>; close?: () => Promise<void> }>;

/** Takes every task in batches of `batch`, settling each with `f(input)`; returns the indices in the order taken. */
async function drain(repo: TaskRepository, batch: number, flush: () => Promise<void>, f: (x: unknown) => unknown = (x) => x): Promise<number[]> {
  const seen: number[] = [];
  for (let rounds = 0; rounds < 100_000; rounds++) {
    const recs = repo.take(batch, true);
    if (recs.length === 0) {
      if (repo.isSourceDrained) break;
      await flush();
      continue;
    }
    for (const r of recs) {
      seen.push(r.index);
      repo.complete(r, f(r.input));
    }
  }
  await flush();
  return seen;
}

/** Takes until `n` tasks were handed out (an async source fills in the background) or the source is drained. */
async function takeN(repo: TaskRepository, n: number, flush: () => Promise<void>, pullNew = true): Promise<TaskRecord[]> {
  const out: TaskRecord[] = [];
  for (let rounds = 0; rounds < 1000 && out.length < n; rounds++) {
    out.push(...repo.take(n - out.length, pullNew));
    if (out.length >= n || repo.isSourceDrained) break;
    await flush();
  }
  return out;
}

/** What the pool does after the last settlement: one more take (which learns the end of an iterable) and a flush. */
async function settleEnd(repo: TaskRepository, flush: () => Promise<void>): Promise<void> {
  expect(repo.take(1, true)).toEqual([]);
  await flush();
}

const error = (index: number): TaskError =>
  new TaskError({ index, workerId: 'w', attempts: 1 }, { name: 'Error', message: `bad ${index}`, stack: 'Error: bad', code: '' });

export function describeRepositoryConformance(name: string, make: RepositoryFactory): void {
  describe(`${name} conforms to TaskRepository`, () => {
    it('hands out every task once, in index order, and is complete when every settlement is durable', async () => {
      const { repo, settled, flush, close } = await make([10, 11, 12, 13, 14]);
      expect(repo.total === undefined || repo.total === 5).toBe(true);
      const order = await drain(repo, 2, flush, (x) => (x as number) * 2);
      expect(order).toEqual([0, 1, 2, 3, 4]);
      expect(repo.isComplete).toBe(true);
      expect(repo.done).toBe(5);
      expect([...settled.outputs].sort((a, b) => a[0] - b[0])).toEqual([
        [0, 20],
        [1, 22],
        [2, 24],
        [3, 26],
        [4, 28],
      ]);
      repo.close();
      await close?.();
    });

    it('an empty job is complete at once', async () => {
      const { repo, flush, close } = await make([]);
      await takeN(repo, 10, flush);
      await settleEnd(repo, flush);
      expect(repo.isComplete).toBe(true);
      expect(repo.done).toBe(0);
      repo.close();
      await close?.();
    });

    it('is complete as soon as the last input is settled, even when one take() pulled exactly all of them', async () => {
      const { repo, flush, close } = await make([1, 2, 3, 4]);
      const recs = await takeN(repo, 4, flush);
      expect(recs.map((r) => r.index)).toEqual([0, 1, 2, 3]);
      for (const r of recs) repo.complete(r, r.input);
      await settleEnd(repo, flush);
      expect(repo.isComplete).toBe(true);
      repo.close();
      await close?.();
    });

    it('puts requeued tasks in front with their input, counts them, and takes no task twice while it is out', async () => {
      const { repo, flush, close } = await make(['a', 'b', 'c', 'd']);
      const [a, b] = (await takeN(repo, 2, flush)) as [TaskRecord, TaskRecord];
      repo.requeue([b]);
      expect(repo.requeued).toBe(1);
      const next = await takeN(repo, 2, flush);
      expect(next.map((r) => r.index)).toEqual([1, 2]);
      expect(next[0]!.input).toBe('b');
      const rest = await takeN(repo, 10, flush);
      expect(rest.map((r) => r.index)).toEqual([3]);
      expect(repo.take(10, true)).toEqual([]);
      expect(repo.isComplete).toBe(false);
      for (const r of [a, ...next, ...rest]) repo.complete(r, r.input);
      await settleEnd(repo, flush);
      expect(repo.isComplete).toBe(true);
      repo.close();
      await close?.();
    });

    it('the first settlement wins: a second complete() or fail() of the same task changes nothing', async () => {
      const { repo, settled, flush, close } = await make([1, 2]);
      const [x, y] = (await takeN(repo, 2, flush)) as [TaskRecord, TaskRecord];
      expect(repo.complete(x, 'first')).toBe(true);
      expect(repo.complete(x, 'second')).toBe(false);
      expect(repo.fail(x, error(0))).toBe(false);
      expect(repo.fail(y, error(1))).toBe(true);
      expect(repo.complete(y, 'late')).toBe(false);
      await settleEnd(repo, flush);
      expect(settled.outputs.get(0)).toBe('first');
      expect(settled.outputs.has(1)).toBe(false);
      expect(settled.failures.get(1)?.message).toMatch(/bad 1/);
      expect(repo.done).toBe(2);
      expect(repo.isComplete).toBe(true);
      repo.close();
      await close?.();
    });

    it('with pullNew false, hands out only requeued tasks and what is already in memory', async () => {
      const { repo, flush, close } = await make([1, 2, 3]);
      const [first] = (await takeN(repo, 1, flush)) as [TaskRecord];
      repo.requeue([first]);
      const again = repo.take(5, false);
      expect(again.map((r) => r.index)[0]).toBe(0);
      for (const r of again) repo.complete(r, r.input);
      await drain(repo, 5, flush);
      expect(repo.isComplete).toBe(true);
      repo.close();
      await close?.();
    });

    it('after close(), hands out nothing more', async () => {
      const { repo, flush, close } = await make([1, 2, 3]);
      await takeN(repo, 1, flush);
      repo.close();
      expect(repo.take(10, true)).toEqual([]);
      await close?.();
    });
  });
}
