import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteJobStore } from '../../../src/store/index.js';
import { describeStoreConformance } from '../../helpers/store-conformance.js';

describeStoreConformance('sqlite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'taskfarm-store-'));
  const path = join(dir, 'sub', 'jobs.db');
  const store = await SqliteJobStore.open(path);
  return {
    store,
    reopen: () => SqliteJobStore.open(path),
    files: async () => {
      const files = [path, `${path}-wal`];
      return files;
    },
    countRows: async (table) => {
      const db = new Database(path, { readonly: true });
      try {
        return (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
      } finally {
        db.close();
      }
    },
    dispose: async () => rmSync(dir, { recursive: true, force: true }),
  };
});
