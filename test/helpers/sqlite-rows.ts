import Database from 'better-sqlite3';
import type { StoreUnderTest } from './store-conformance.js';

/** {@link StoreUnderTest.countRows} for a SQLite store file: opens it read-only beside the store. */
export function sqliteRowCounter(path: string): StoreUnderTest['countRows'] {
  return async (table) => {
    const db = new Database(path, { readonly: true });
    try {
      return (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    } finally {
      db.close();
    }
  };
}
