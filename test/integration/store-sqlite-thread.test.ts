/**
 * The store conformance suite on the SQLite store run on a thread of its own (the compiled
 * worker file, so from dist/).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ThreadedSqliteJobStore } from '../../dist/src/index.js';
import type { JobStore } from '../../src/store/index.js';
import { sqliteRowCounter } from '../helpers/sqlite-rows.js';
import { describeStoreConformance } from '../helpers/store-conformance.js';

describeStoreConformance('sqlite (own thread)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'taskfarm-store-'));
  const path = join(dir, 'sub', 'jobs.db');
  const open = async (): Promise<JobStore> => ThreadedSqliteJobStore.open(path);
  return {
    store: await open(),
    reopen: open,
    files: async () => [path, `${path}-wal`],
    countRows: sqliteRowCounter(path),
    dispose: async () => rmSync(dir, { recursive: true, force: true }),
  };
});
