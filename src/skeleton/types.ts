/** What a stage sees besides its input. */
export interface StageContext {
  /** Id of the worker daemon running the task (`local` for in-process threads). */
  readonly workerId: string;
  /** Hostname of the machine running the task. */
  readonly hostname: string;
  /** Id of the worker thread running the task (stable for the thread's life). */
  readonly threadId: number;
  /** Position of this stage in the normal-form chain (0-based). */
  readonly stageIndex: number;
  /**
   * The run's shared data (option `shared`), shipped once per worker: byte values and files as a
   * Uint8Array shared by the worker's threads, other values decoded once per thread. Read-only.
   */
  readonly shared: Readonly<Record<string, unknown>>;
}

/**
 * An inline stage: a self-contained function `(input, ctx) => output | Promise<output>`. It is sent
 * to workers as source text, so it must not use anything from its enclosing scope.
 */
// Method syntax keeps parameters bivariant, so `(x: number) => x * 2` is accepted as a stage.
export type InlineStage = { bivarianceHack(input: never, ctx: StageContext): unknown }['bivarianceHack'];

/** A JJPF-style stage object: the input goes in with `setData`, `run` computes, `getData` returns the output. */
export interface ProcessObject {
  setData(task: never): void;
  run(): unknown;
  getData(): unknown;
}

/** A JJPF-style stage class (inline): a new instance computes each task. */
export type ProcessClass = new () => ProcessObject;

/**
 * A stage: a module path or `file:` URL (.ts, .js, .mjs…) whose default export is the stage function
 * or a JJPF-style class, or a self-contained inline function or class.
 */
export type Stage = string | URL | InlineStage | ProcessClass;

/** The sequential composition of one or more stages: `seq(f)`, or `f1 ; f2 ; … ; fn` in normal form. */
export interface SeqSkeleton {
  readonly kind: 'seq';
  readonly stages: readonly Stage[];
}

/** A farm of replicas of an inner skeleton. */
export interface FarmSkeleton {
  readonly kind: 'farm';
  readonly worker: Skeleton;
}

/** A pipeline of skeletons: each one's output is the next one's input. */
export interface PipelineSkeleton {
  readonly kind: 'pipeline';
  readonly stages: readonly Skeleton[];
}

/** A program: a composition of `farm` and `pipeline` skeletons over sequential stages. */
export type Skeleton = SeqSkeleton | FarmSkeleton | PipelineSkeleton;

/** The normal form: one farm of the sequential composition of all stages. */
export interface NormalForm extends FarmSkeleton {
  readonly worker: SeqSkeleton;
}

/** What TaskFarm accepts as a program: a skeleton, a bare stage, or an array of stages (a pipeline). */
export type Program = Skeleton | Stage | readonly Stage[];
