import { PostgresJobStore, type PostgresJobStoreOptions } from './postgres.js';
import { defaultStorePath } from './sqlite.js';
import { ThreadedSqliteJobStore, type ThreadedSqliteJobStoreOptions } from './sqlite-thread.js';
import type { JobStore } from './types.js';

/** Options of {@link openJobStore}: those of the backend the location names. */
export interface OpenJobStoreOptions {
  readonly sqlite?: ThreadedSqliteJobStoreOptions;
  readonly postgres?: PostgresJobStoreOptions;
}

/**
 * Opens the job store `taskfarm serve --store` names: a `postgres://` or `postgresql://` URL opens
 * a {@link PostgresJobStore}; anything else is a SQLite file path (default {@link defaultStorePath}),
 * opened as a {@link ThreadedSqliteJobStore} (the database on a thread of its own, beside the pool's).
 * @example
 * const store = await openJobStore(process.env.TASKFARM_STORE);
 * await store.recover();
 */
export async function openJobStore(location?: string, options: OpenJobStoreOptions = {}): Promise<JobStore> {
  if (location !== undefined && /^postgres(ql)?:\/\//i.test(location)) return PostgresJobStore.open(location, options.postgres);
  return ThreadedSqliteJobStore.open(location === undefined || location === '' ? defaultStorePath() : location, options.sqlite);
}
