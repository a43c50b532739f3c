import { describe, expect, it } from 'vitest';
import { farm, normalForm, pipeline, seq, stagesOf, describeSkeleton, type Skeleton, type Stage } from '../../src/skeleton/index.js';
import { InvalidOptionError } from '../../src/errors.js';
import { TaskFarm } from '../../dist/src/index.js';

const f = (x: number): number => x + 1;
const g = (x: number): number => x * 3;
const h = (x: number): number => x - 7;

const names = new Map<Stage, string>([
  [f, 'f'],
  [g, 'g'],
  [h, 'h'],
]);
const nf = (p: Parameters<typeof normalForm>[0]): string[] => normalForm(p).worker.stages.map((s) => names.get(s) ?? String(s));

describe('normal form rewrite rules', () => {
  it('seq(f) → farm(seq(f))', () => {
    expect(normalForm(seq(f))).toEqual({ kind: 'farm', worker: { kind: 'seq', stages: [f] } });
  });

  it('farm(farm(P)) → farm(P): nested farms collapse', () => {
    expect(normalForm(farm(farm(seq(f))))).toEqual(normalForm(farm(seq(f))));
    expect(nf(farm(farm(farm(farm(seq(f, g))))))).toEqual(['f', 'g']);
  });

  it('pipeline(seq f, seq g) → farm(seq(f ; g))', () => {
    expect(nf(pipeline(seq(f), seq(g)))).toEqual(['f', 'g']);
  });

  it('pipeline(farm(seq f), farm(seq g)) → farm(seq(f ; g)): farms inside a pipeline dissolve', () => {
    expect(nf(pipeline(farm(seq(f)), farm(seq(g))))).toEqual(['f', 'g']);
  });

  it('nested pipelines flatten in order', () => {
    expect(nf(pipeline(pipeline(seq(f), seq(g)), farm(pipeline(seq(h), seq(f)))))).toEqual(['f', 'g', 'h', 'f']);
  });

  it('the normal form is a fixpoint', () => {
    const p = pipeline(farm(seq(f)), pipeline(seq(g), farm(farm(seq(h)))));
    const once = normalForm(p);
    expect(normalForm(once)).toEqual(once);
    expect(describeSkeleton(once)).toBe('farm(seq(f ; g ; h))');
  });

  it('accepts a bare stage or an array of stages as a program', () => {
    expect(nf(f)).toEqual(['f']);
    expect(nf([f, g, h])).toEqual(['f', 'g', 'h']);
    expect(nf('./stage.ts')).toEqual(['./stage.ts']);
  });

  it('rejects empty compositions and non-stages with a clear error', () => {
    expect(() => pipeline()).toThrow(InvalidOptionError);
    expect(() => seq()).toThrow(/at least one stage/);
    expect(() => normalForm(42 as unknown as Stage)).toThrow(/Expected the program to be a stage/);
    expect(() => seq('')).toThrow(/empty string/);
  });
});

// ---- randomized compositions: normal form ≡ direct sequential evaluation

const pool: ((x: number) => number)[] = [(x) => x + 1, (x) => x * 2, (x) => x - 3, (x) => (x * x) % 1009, (x) => Math.floor(x / 2), (x) => x ^ 0x55];

/** Direct evaluation of the original composition (no rewriting). */
function evaluate(s: Skeleton, x: number): number {
  switch (s.kind) {
    case 'seq':
      return s.stages.reduce((v, st) => (st as (x: number) => number)(v), x);
    case 'farm':
      return evaluate(s.worker, x);
    case 'pipeline':
      return s.stages.reduce((v, st) => evaluate(st, v), x);
  }
}

function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomSkeleton(rand: () => number, depth: number): Skeleton {
  const pick = (): Stage => pool[Math.floor(rand() * pool.length)]!;
  const r = rand();
  if (depth <= 0 || r < 0.3) return seq(...Array.from({ length: 1 + Math.floor(rand() * 3) }, pick));
  if (r < 0.6) return farm(randomSkeleton(rand, depth - 1));
  return pipeline(...Array.from({ length: 1 + Math.floor(rand() * 3) }, () => randomSkeleton(rand, depth - 1)));
}

describe('randomized compositions', () => {
  it('the normal form of 500 random programs computes what direct evaluation computes', () => {
    const rand = mulberry32(20261122);
    for (let trial = 0; trial < 500; trial++) {
      const program = randomSkeleton(rand, 4);
      const normal = normalForm(program);
      expect(normal.kind).toBe('farm');
      expect(normal.worker.kind).toBe('seq');
      expect(normal.worker.stages).toEqual(stagesOf(program));
      for (const x of [0, 1, 17, -5, 1234]) {
        const chained = normal.worker.stages.reduce((v, st) => (st as (x: number) => number)(v), x);
        expect(chained, `${describeSkeleton(program)} on ${x}`).toBe(evaluate(program, x));
      }
    }
  });

  it('random programs run through TaskFarm give the outputs of direct evaluation', async () => {
    const rand = mulberry32(7);
    const inputs = Array.from({ length: 64 }, (_, i) => i - 10);
    for (let trial = 0; trial < 3; trial++) {
      const program = randomSkeleton(rand, 3);
      const outputs = await new TaskFarm<number, number>(program, inputs, { discovery: 'local', threads: 2 }).compute();
      expect(outputs).toEqual(inputs.map((x) => evaluate(program, x)));
    }
  });
});
