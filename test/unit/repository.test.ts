import { describe, expect, it } from 'vitest';
import { TaskRepository } from '../../src/farm/repository.js';
import { UnsendableInputError } from '../../src/errors.js';

function drain(repo: TaskRepository, batch: number): number[] {
  const seen: number[] = [];
  for (;;) {
    const recs = repo.take(batch);
    if (recs.length === 0) break;
    for (const r of recs) {
      seen.push(r.index);
      repo.complete(r);
    }
  }
  return seen;
}

describe('TaskRepository', () => {
  it('is complete as soon as the last input of an array is done, even when a take() pulled exactly all of them', () => {
    const repo = new TaskRepository([1, 2, 3, 4]);
    const recs = repo.take(4);
    expect(recs.map((r) => r.index)).toEqual([0, 1, 2, 3]);
    for (const r of recs) repo.complete(r);
    expect(repo.isComplete).toBe(true);
  });

  it("fail() settles a task (errors: 'collect'): it counts as done, is never taken again, and a second settle is refused", () => {
    const repo = new TaskRepository([1, 2, 3]);
    const [a, b, c] = repo.take(3);
    expect(repo.fail(b!)).toBe(true);
    expect(repo.fail(b!)).toBe(false);
    expect(repo.complete(b!)).toBe(false);
    expect(repo.done).toBe(1);
    expect(repo.take(3)).toEqual([]);
    repo.complete(a!);
    repo.complete(c!);
    expect(repo.done).toBe(3);
    expect(repo.isComplete).toBe(true);
  });

  it('an empty array is complete at once', () => {
    expect(new TaskRepository([]).isComplete).toBe(true);
  });

  it('pulls a generator lazily and learns its end from take()', () => {
    let pulled = 0;
    function* gen(): Generator<number> {
      for (let i = 0; i < 10; i++) {
        pulled++;
        yield i;
      }
    }
    const repo = new TaskRepository(gen());
    const first = repo.take(3);
    expect(pulled).toBe(3);
    for (const r of first) repo.complete(r);
    expect(repo.isComplete).toBe(false);
    expect(drain(repo, 4)).toEqual([3, 4, 5, 6, 7, 8, 9]);
    expect(repo.isComplete).toBe(true);
  });

  it('puts requeued tasks in front, keeps their input, and counts them', () => {
    const repo = new TaskRepository(['a', 'b', 'c']);
    const [a, b] = repo.take(2);
    repo.requeue([b!]);
    const next = repo.take(2);
    expect(next.map((r) => r.index)).toEqual([1, 2]);
    expect(next[0]!.input).toBe('b');
    expect(repo.requeued).toBe(1);
    expect(repo.complete(a!)).toBe(true);
    expect(repo.complete(a!)).toBe(false); // a second result for the same input is a duplicate
  });

  it('names the index of an input of a generator that cannot be sent, when it is pulled', () => {
    function* gen(): Generator<unknown> {
      yield 1;
      yield { f: () => 1 };
    }
    const lazy = new TaskRepository(gen());
    expect(lazy.take(1).map((r) => r.index)).toEqual([0]);
    expect(() => lazy.take(1)).toThrow(UnsendableInputError);
  });

  it('names the index of an input that cannot be sent', () => {
    const repo = new TaskRepository([1, { f: () => 1 }]);
    expect(() => repo.validateArray()).toThrow(UnsendableInputError);
    try {
      repo.validateArray();
    } catch (err) {
      expect((err as UnsendableInputError).index).toBe(1);
      expect((err as UnsendableInputError).path).toBe('input.f');
    }
  });
});
