/**
 * The persistent job store of `taskfarm serve`: one contract ({@link JobStore}), two backends
 * (SQLite by default, PostgreSQL for shared use), one conformance suite.
 */
export type {
  JobStore,
  JsonValue,
  JobState,
  TaskState,
  JobKind,
  TaskCounts,
  StageRef,
  Bundle,
  StoredJobOptions,
  NewJob,
  JobError,
  JobRecord,
  Transition,
  ClaimedBatch,
  ClaimedTask,
  OutputEntry,
  TaskFailure,
  FailureEntry,
  SettleResult,
  TaskRow,
  Page,
  TaskPageOptions,
  FailureRow,
  ResultRow,
  ReadResultsOptions,
  JobListOptions,
  NewEvent,
  JobEvent,
  TokenRecord,
  NewToken,
  OptimizerState,
  RecoveryReport,
  StoreSummary,
} from './types.js';
export { JOB_STATES, TASK_STATES, FINISHED_JOB_STATES, ACTIVE_JOB_STATES } from './types.js';
export { SqliteJobStore, defaultStorePath, type SqliteJobStoreOptions } from './sqlite.js';
export { ThreadedSqliteJobStore, type ThreadedSqliteJobStoreOptions } from './sqlite-thread.js';
export { PostgresJobStore, type PostgresJobStoreOptions } from './postgres.js';
export { openJobStore, type OpenJobStoreOptions } from './open.js';
