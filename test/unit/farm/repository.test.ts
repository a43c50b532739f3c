import { describe, expect, it } from 'vitest';
import { MemoryTaskRepository } from '../../../src/farm/repository.js';
import { UnsendableInputError } from '../../../src/errors.js';
import { describeRepositoryConformance, type Settled } from '../../helpers/repository-conformance.js';

function memory(inputs: Iterable<unknown> | AsyncIterable<unknown>): { repo: MemoryTaskRepository; settled: Settled } {
  const settled: Settled = { outputs: new Map(), failures: new Map() };
  const repo = new MemoryTaskRepository(inputs, { output: (i, v) => settled.outputs.set(i, v), failure: (i, e) => settled.failures.set(i, e) });
  return { repo, settled };
}

const flushNothing = async (): Promise<void> => {};

describeRepositoryConformance('MemoryTaskRepository (array)', async (inputs) => ({ ...memory([...inputs]), flush: flushNothing }));
describeRepositoryConformance('MemoryTaskRepository (generator)', async (inputs) => ({
  ...memory(
    (function* () {
      yield* inputs;
    })(),
  ),
  flush: flushNothing,
}));
describeRepositoryConformance('MemoryTaskRepository (async iterable)', async (inputs) => {
  const m = memory(
    (async function* () {
      yield* inputs;
    })(),
  );
  // The async source fills its lookahead in the background: flushing waits a turn of the event loop.
  return { ...m, flush: () => new Promise<void>((r) => setImmediate(r)) };
});

describe('MemoryTaskRepository specifics', () => {
  it('pulls a generator lazily and learns its end from take()', () => {
    let pulled = 0;
    function* gen(): Generator<number> {
      for (let i = 0; i < 10; i++) {
        pulled++;
        yield i;
      }
    }
    const { repo } = memory(gen());
    const first = repo.take(3, true);
    expect(pulled).toBe(3);
    for (const r of first) repo.complete(r, r.input);
    expect(repo.isComplete).toBe(false);
  });

  it('names the index of an input of a generator that cannot be sent, when it is pulled', () => {
    function* gen(): Generator<unknown> {
      yield 1;
      yield { f: () => 1 };
    }
    const { repo } = memory(gen());
    expect(repo.take(1, true).map((r) => r.index)).toEqual([0]);
    expect(() => repo.take(1, true)).toThrow(UnsendableInputError);
  });

  it('names the index of an input of an array that cannot be sent', () => {
    const { repo } = memory([1, { f: () => 1 }]);
    expect(() => repo.validateArray()).toThrow(UnsendableInputError);
    try {
      repo.validateArray();
    } catch (err) {
      expect((err as UnsendableInputError).index).toBe(1);
      expect((err as UnsendableInputError).path).toBe('input.f');
    }
  });

  it('keeps requeued tasks first, latest requeue first, through any mix of takes and requeues (against a model)', () => {
    const n = 5_000;
    const { repo } = memory(Array.from({ length: n }, (_, i) => i));
    // Model: the front queue as a plain array, then the untaken inputs in order.
    let model: number[] = [];
    let nextNew = 0;
    let seed = 7;
    const rand = (k: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % k;
    };
    const held: ReturnType<typeof repo.take> = [];
    for (let step = 0; step < 3_000; step++) {
      if (held.length > 0 && rand(3) === 0) {
        const k = 1 + rand(Math.min(held.length, 40));
        const back = held.splice(rand(held.length - k + 1), k);
        repo.requeue(back);
        model = back.map((r) => r.index).concat(model);
      } else {
        const max = 1 + rand(60);
        const got = repo.take(max, true);
        const fromFront = model.splice(0, Math.min(max, model.length));
        const expected = [...fromFront];
        while (expected.length < max && nextNew < n) expected.push(nextNew++);
        expect(got.map((r) => r.index)).toEqual(expected);
        held.push(...got);
      }
    }
    expect(repo.requeued).toBeGreaterThan(0);
  });
});
