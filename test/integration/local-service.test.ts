/**
 * The in-process job service (`connect()` without a URL): the embedded SQLite store, local threads,
 * one manager per store.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { StoreError, openLocalService, type LocalJobService } from '../../dist/src/index.js';
import { tempDir, until } from '../helpers/daemons.js';

describe('openLocalService', () => {
  const open: LocalJobService[] = [];
  const dirs: { remove: () => void }[] = [];
  afterEach(async () => {
    for (const s of open.splice(0)) await s.close(1000);
    for (const d of dirs.splice(0)) d.remove();
  });

  it('runs jobs on local threads over an embedded store that outlives the process, one manager at a time', async () => {
    const t = tempDir();
    dirs.push(t);
    const storePath = join(t.path, 'jobs.db');
    const local = await openLocalService({ storePath, poolOptions: { discovery: 'local', threads: 2 } });
    open.push(local);
    expect(local.caller.admin).toBe(true);
    const ticket = await local.service.submit(
      local.caller,
      { name: 'local', stages: [{ source: 'export default (x: number) => x * x' }] },
      Array.from({ length: 500 }, (_, i) => ({ text: String(i), line: i + 1 })),
    );
    await until('the job done', async () => (await local.service.status(local.caller, ticket)).state === 'done', 30_000);
    // A second manager on the same store is refused, naming the one that serves it.
    await expect(openLocalService({ storePath, poolOptions: { discovery: 'local' } })).rejects.toThrow(new RegExp(`pid ${process.pid}`));
    await expect(openLocalService({ storePath, poolOptions: { discovery: 'local' } })).rejects.toBeInstanceOf(StoreError);
    await local.close();
    open.splice(0);
    const again = await openLocalService({ storePath, poolOptions: { discovery: 'local' } });
    open.push(again);
    const outputs: string[] = [];
    for await (const r of again.service.results(again.caller, ticket)) outputs.push((r as { output: string }).output);
    expect(outputs).toEqual(Array.from({ length: 500 }, (_, i) => String(i * i)));
  });

  it('takes over the lock of a manager that died', async () => {
    const t = tempDir();
    dirs.push(t);
    const storePath = join(t.path, 'jobs.db');
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    writeFileSync(`${storePath}.lock`, `${gone.stdout}\n`);
    const local = await openLocalService({ storePath, poolOptions: { discovery: 'local' } });
    open.push(local);
    expect(await local.service.healthy()).toBe(true);
  });
});
