/**
 * Job kinds: how the service runs a job of each kind on the pool. A `map` job is one pool job over a
 * {@link StoreTaskRepository}. An `optimize` job (issue 13) will be driven by the optimiser runner,
 * one pool job per generation, committing its state per generation with `saveOptimizerState`: it
 * plugs in here as another {@link JobKindHandler} (`createJobService({ handlers: [...] })`).
 */
import { FarmAbortError, FarmError, StoreError, TaskError, UnsendableInputError } from '../errors.js';
import type { BundledProgram, FarmPool, JobOptions } from '../farm/index.js';
import type { FailureEntry, JobError, JobKind, JobRecord, JobStore, SettleResult } from '../store/index.js';
import { failureOf } from './json.js';
import { StoreTaskRepository, type StoreTaskRepositoryOptions } from './store-repository.js';
import type { JobSpec } from './types.js';

/** What a handler gets to run one job. */
export interface JobRunContext {
  readonly store: JobStore;
  readonly pool: FarmPool;
  /** The job as it starts (state `running`, its counters). */
  readonly job: JobRecord;
  /** Its stages, from the store's bundles. */
  readonly program: BundledProgram;
  /** The pool job options from the job's stored options (name, priority, weight, retries, maxAttempts, taskTimeoutMs, errors). */
  readonly options: JobOptions;
  /** The service's repository tuning (window, commit batch, flush timer). */
  readonly repository: StoreTaskRepositoryOptions;
  /** Tell the service about every commit (counters for status and progress events, failures for failure events). */
  readonly onCommit: (result: SettleResult, failures: readonly FailureEntry[]) => void;
}

/** How a run ended. */
export type JobOutcome =
  /** Every task settled and committed: the service finishes the job `done`. */
  | { readonly type: 'done' }
  /** The job failed (`failure`: the task that failed it, still to be recorded): the service records it and finishes the job `failed`. */
  | { readonly type: 'failed'; readonly error: JobError; readonly failure?: FailureEntry }
  /** The service stopped it ({@link JobRun.stop}): the service's action makes the transition. */
  | { readonly type: 'stopped' }
  /** The store failed under it (or the pool went away): the job stays `running` in the store and the service starts it again later. */
  | { readonly type: 'interrupted'; readonly error: unknown };

/** A job running on the pool. */
export interface JobRun {
  /** Resolves (never rejects) when the run ended, after everything it settled is committed. */
  readonly outcome: Promise<JobOutcome>;
  /** The pool job ids it runs on now (to name a worker's jobs). */
  poolJobIds(): readonly string[];
  /** Graceful stop, step 1: no new dispatch; resolves when nothing is in flight any more, or when `signal` aborts. */
  drain(signal: AbortSignal): Promise<void>;
  /** Stops at once: its tasks in flight are cancelled on the workers; resolves when what it settled is committed (outcome `stopped`). */
  stop(): Promise<void>;
  /** After the run ended: hands the tasks it claimed and did not settle back to the store as pending. Resolves to how many. */
  returnClaimed(): Promise<number>;
}

/** Runs the jobs of one kind. */
export interface JobKindHandler {
  readonly kind: JobKind;
  /** Checks kind-specific parts of a submit (`params`) before anything is stored. Throws InvalidRequestError naming the field. */
  validate?(spec: JobSpec): void;
  /** Starts a job; must not throw (failures go to the outcome). */
  start(context: JobRunContext): JobRun;
}

/** What a pool job's fatal error means for the job in the store. */
function outcomeOf(error: unknown, sourceError: unknown): JobOutcome {
  if (error instanceof StoreError || (sourceError !== undefined && error === sourceError && !(error instanceof TaskError)))
    return { type: 'interrupted', error };
  if (error instanceof FarmAbortError) return { type: 'interrupted', error };
  if (error instanceof TaskError) {
    return {
      type: 'failed',
      error: { code: error.code, message: error.message, index: error.index },
      failure: { index: error.index, error: failureOf(error) },
    };
  }
  if (error instanceof UnsendableInputError) return { type: 'failed', error: { code: error.code, message: error.message, index: error.index } };
  if (error instanceof FarmError) return { type: 'failed', error: { code: error.code, message: error.message } };
  return { type: 'failed', error: { code: 'FARM_ERR_PROTOCOL', message: error instanceof Error ? error.message : String(error) } };
}

/** `map` jobs: one pool job over a {@link StoreTaskRepository}. */
export const mapJobHandler: JobKindHandler = {
  kind: 'map',
  start(ctx: JobRunContext): JobRun {
    const repo = new StoreTaskRepository(ctx.store, ctx.job, { ...ctx.repository, errors: ctx.options.errors ?? 'fail', onCommit: ctx.onCommit });
    let stopping = false;
    let poolJob: ReturnType<FarmPool['run']> | undefined;
    let started: Promise<unknown>;
    try {
      poolJob = ctx.pool.run(ctx.program, repo, ctx.options);
      started = poolJob.compute().then(
        () => undefined,
        (err: unknown) => err ?? new FarmError('FARM_ERR_PROTOCOL', 'the pool job failed without an error'),
      );
    } catch (err) {
      started = Promise.resolve(err);
    }
    const outcome: Promise<JobOutcome> = started.then(async (error) => {
      repo.close();
      await repo.flush();
      if (stopping) return { type: 'stopped' };
      if (error === undefined) return repo.isComplete ? { type: 'done' } : { type: 'interrupted', error: repo.sourceError };
      return outcomeOf(error, repo.sourceError);
    });
    return {
      outcome,
      poolJobIds: () =>
        poolJob === undefined || poolJob.status === 'done' || poolJob.status === 'failed' || poolJob.status === 'cancelled' ? [] : [poolJob.id],
      async drain(signal) {
        repo.pause();
        await repo.idle(signal);
      },
      async stop() {
        stopping = true;
        poolJob?.cancel('the job service stopped the job');
        await outcome;
      },
      returnClaimed: () => repo.returnClaimed(),
    };
  },
};
