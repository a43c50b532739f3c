import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StoreError } from '../../../src/errors.js';
import { SqliteJobStore, defaultStorePath } from '../../../src/store/index.js';
import { sqliteRowCounter } from '../../helpers/sqlite-rows.js';
import { describeStoreConformance } from '../../helpers/store-conformance.js';

describe('SqliteJobStore files', () => {
  it('creates the store owner-only, in a folder it creates', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskfarm-store-'));
    try {
      const path = join(dir, 'a', 'b', 'jobs.db');
      const store = await SqliteJobStore.open(path);
      await store.createToken({ user: 'ada' });
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect(statSync(`${path}-wal`).mode & 0o777).toBe(0o600);
      expect(statSync(join(dir, 'a', 'b')).mode & 0o777).toBe(0o700);
      expect(await store.integrityCheck()).toEqual(['ok']);
      await store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('defaults to $XDG_DATA_HOME/taskfarm/jobs.db, else ~/.local/share/taskfarm/jobs.db', () => {
    const saved = process.env['XDG_DATA_HOME'];
    try {
      process.env['XDG_DATA_HOME'] = '/data';
      expect(defaultStorePath()).toBe('/data/taskfarm/jobs.db');
      delete process.env['XDG_DATA_HOME'];
      expect(defaultStorePath()).toBe(join(homedir(), '.local', 'share', 'taskfarm', 'jobs.db'));
    } finally {
      if (saved === undefined) delete process.env['XDG_DATA_HOME'];
      else process.env['XDG_DATA_HOME'] = saved;
    }
  });

  it('refuses a file that is not a database, with a StoreError naming it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'taskfarm-store-'));
    try {
      const path = join(dir, 'jobs.db');
      writeFileSync(path, 'not a database, just text '.repeat(100));
      const err = await SqliteJobStore.open(path).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StoreError);
      expect((err as StoreError).message).toContain(path);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

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
    countRows: sqliteRowCounter(path),
    dispose: async () => rmSync(dir, { recursive: true, force: true }),
  };
});
