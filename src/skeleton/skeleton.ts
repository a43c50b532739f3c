import { InvalidOptionError } from '../errors.js';
import type { FarmSkeleton, NormalForm, PipelineSkeleton, Program, SeqSkeleton, Skeleton, Stage } from './types.js';

function isStage(value: unknown): value is Stage {
  return typeof value === 'string' || typeof value === 'function' || value instanceof URL;
}

/** True when `value` is a skeleton node built by {@link seq}, {@link farm} or {@link pipeline}. */
export function isSkeleton(value: unknown): value is Skeleton {
  if (typeof value !== 'object' || value === null || value instanceof URL) return false;
  const kind = (value as { kind?: unknown }).kind;
  return kind === 'seq' || kind === 'farm' || kind === 'pipeline';
}

function checkStage(stage: unknown, where: string): Stage {
  if (!isStage(stage)) {
    throw new InvalidOptionError(
      `Expected ${where} to be a stage (a module path, a file: URL, or a self-contained function), got ${stage === null ? 'null' : typeof stage}`,
    );
  }
  if (typeof stage === 'string' && stage.trim().length === 0) {
    throw new InvalidOptionError(`Expected ${where} to be a module path, got an empty string`);
  }
  return stage;
}

/**
 * A sequential stage, or the sequential composition of several (`seq(f, g)` computes `g(f(x))`).
 * @example seq('./stages/render.ts')
 */
export function seq(...stages: readonly Stage[]): SeqSkeleton {
  if (stages.length === 0) throw new InvalidOptionError('Expected `seq` to get at least one stage, got none');
  return Object.freeze({ kind: 'seq', stages: Object.freeze(stages.map((s, i) => checkStage(s, `seq stage ${i}`))) });
}

function toSkeleton(program: unknown, where: string): Skeleton {
  if (isSkeleton(program)) return program;
  if (Array.isArray(program)) return pipeline(...(program as (Skeleton | Stage)[]));
  return seq(checkStage(program, where));
}

/** A farm: replicas of `worker` compute independent tasks in parallel. A bare stage is wrapped in `seq`. */
export function farm(worker: Skeleton | Stage): FarmSkeleton {
  return Object.freeze({ kind: 'farm', worker: toSkeleton(worker, 'the farm worker') });
}

/** A pipeline: each skeleton's output is the next one's input. Bare stages are wrapped in `seq`. */
export function pipeline(...stages: readonly (Skeleton | Stage)[]): PipelineSkeleton {
  if (stages.length === 0) throw new InvalidOptionError('Expected `pipeline` to get at least one stage, got none');
  return Object.freeze({
    kind: 'pipeline',
    stages: Object.freeze(stages.map((s, i) => toSkeleton(s, `pipeline stage ${i}`))),
  });
}

/** The stages of a skeleton in the order a task passes through them. */
export function stagesOf(skeleton: Skeleton): Stage[] {
  switch (skeleton.kind) {
    case 'seq':
      return [...skeleton.stages];
    case 'farm':
      return stagesOf(skeleton.worker);
    case 'pipeline':
      return skeleton.stages.flatMap(stagesOf);
  }
}

/**
 * Reduces a program to its normal form `farm(seq(s1; …; sn))` (Aldinucci & Danelutto): nested farms
 * collapse (`farm(farm(P)) → farm(P)`), a pipeline becomes the sequential composition of its stages,
 * and the result is wrapped in one farm. Every worker then computes whole chains, so no stage can be
 * a bottleneck; the price is that stages must be stateless functions of their input.
 *
 * `program` may also be a bare stage or an array of stages (a pipeline).
 * @example normalForm(pipeline(farm(seq(f)), farm(seq(g)))) // farm(seq(f; g))
 */
export function normalForm(program: Program): NormalForm {
  const skeleton = toSkeleton(program, 'the program');
  return Object.freeze({ kind: 'farm', worker: seq(...stagesOf(skeleton)) });
}

/** A short human-readable rendering, e.g. `farm(seq(f ; g))`. */
export function describeSkeleton(skeleton: Skeleton): string {
  switch (skeleton.kind) {
    case 'seq':
      return `seq(${skeleton.stages.map(stageName).join(' ; ')})`;
    case 'farm':
      return `farm(${describeSkeleton(skeleton.worker)})`;
    case 'pipeline':
      return `pipeline(${skeleton.stages.map(describeSkeleton).join(', ')})`;
  }
}

/** A short name for a stage: its path, URL, or function name. */
export function stageName(stage: Stage): string {
  if (typeof stage === 'string') return stage;
  if (stage instanceof URL) return stage.href;
  return stage.name.length > 0 ? stage.name : '<anonymous>';
}
