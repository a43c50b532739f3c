/**
 * The SQLite store checkpoints its write-ahead log on a thread of its own (built code: the thread's
 * module is dist/src/store/sqlite-checkpointer.js). What a user sees: the -wal file stays bounded
 * through a long run of commits, every output is there, and a clean close leaves no log behind.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteJobStore } from '../../dist/src/index.js';
import { sha256 } from '../../src/store/shared.js';

const CODE = 'export default (x) => x;';
const BUNDLE = { hash: sha256(CODE), code: CODE };

describe('SqliteJobStore background checkpoints', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  async function run(
    backgroundCheckpoints: boolean,
  ): Promise<{ walAfterSubmit: number; maxWalBytes: number; results: number; walAfterClose: boolean; integrity: string[] }> {
    const dir = mkdtempSync(join(tmpdir(), 'taskfarm-ckpt-'));
    dirs.push(dir);
    const path = join(dir, 'jobs.db');
    const store = await SqliteJobStore.open(path, { backgroundCheckpoints, checkpointMs: 20 });
    const n = 120_000;
    await store.putBundles([BUNDLE]);
    const ticket = await store.createJob({ owner: 'ada', name: 'ckpt', program: [{ name: 'id', hash: BUNDLE.hash }], options: {} });
    for (let i = 0; i < n; i += 10_000)
      await store.appendInputs(
        ticket,
        Array.from({ length: 10_000 }, (_, k) => JSON.stringify({ i: i + k, pad: 'x'.repeat(200) })),
      );
    await store.commitSubmit(ticket);
    await store.startJob(ticket);
    const walAfterSubmit = statSync(`${path}-wal`).size;
    let maxWalBytes = 0;
    for (;;) {
      const claimed = await store.claimBatch(ticket, 512);
      if (claimed.indices.length === 0) break;
      await store.commitOutputs(
        ticket,
        claimed.indices.map((index) => ({ index, output: JSON.stringify({ index, pad: 'y'.repeat(200) }) })),
      );
      maxWalBytes = Math.max(maxWalBytes, statSync(`${path}-wal`).size);
      // Let the checkpointer's timer and messages run between commits, as the manager's event loop does.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    let results = 0;
    for await (const _ of store.readResults(ticket)) results++;
    const integrity = await store.integrityCheck();
    await store.close();
    return { walAfterSubmit, maxWalBytes, results, walAfterClose: existsSync(`${path}-wal`), integrity };
  }

  it('keeps the -wal file bounded, loses no output, and leaves no log after close', async () => {
    const bg = await run(true);
    expect(bg.results).toBe(120_000);
    expect(bg.integrity).toEqual(['ok']);
    expect(bg.walAfterClose).toBe(false);
    // About 30 MB of outputs go through the log; the checkpointer starts it again past 16 MB
    // (without the RESTART it grew past 40 MB: a writer that never pauses never restarts it).
    expect(bg.maxWalBytes).toBeLessThan(32 * 1024 * 1024);
    console.log(`background checkpoints: -wal ${(bg.walAfterSubmit / 1e6).toFixed(1)} MB after the submit, at most ${(bg.maxWalBytes / 1e6).toFixed(1)} MB`);

    // The same with SQLite's own checkpoints in the commits (the fallback when the thread cannot start).
    const inline = await run(false);
    expect(inline.results).toBe(120_000);
    expect(inline.integrity).toEqual(['ok']);
    expect(inline.walAfterClose).toBe(false);
    console.log(`checkpoints in the commits: largest -wal ${(inline.maxWalBytes / 1e6).toFixed(1)} MB`);
  });
});
