import { PostgresJobStore, type PostgresJobStoreOptions } from './postgres.js';
import { SqliteJobStore, defaultStorePath, type SqliteJobStoreOptions } from './sqlite.js';
import type { JobStore } from './types.js';

/** Options of {@link openJobStore}: those of the backend the location names. */
export interface OpenJobStoreOptions {
  readonly sqlite?: SqliteJobStoreOptions;
  readonly postgres?: PostgresJobStoreOptions;
}

/**
 * Opens the job store `taskfarm serve --store` names: a `postgres://` or `postgresql://` URL opens
 * a {@link PostgresJobStore}; anything else is a SQLite file path (default {@link defaultStorePath}),
 * opened as a {@link SqliteJobStore} on this thread. (A `ThreadedSqliteJobStore` puts the database on
 * a thread of its own; on 2 cores shared with the workers it cost more than it saved: PERFORMANCE.md.)
 * @example
 * const store = await openJobStore(process.env.TASKFARM_STORE);
 * await store.recover();
 */
export async function openJobStore(location?: string, options: OpenJobStoreOptions = {}): Promise<JobStore> {
  if (location !== undefined && /^postgres(ql)?:\/\//i.test(location)) return PostgresJobStore.open(location, options.postgres);
  return SqliteJobStore.open(location === undefined || location === '' ? defaultStorePath() : location, options.sqlite);
}
