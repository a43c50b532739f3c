import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { SqliteJobStore } from '../../../src/store/index.js';

const WRITER = new URL('../../fixtures/store-writer.mjs', import.meta.url).pathname;

/**
 * Runs the writer until it has printed `lines` progress lines, SIGKILLs it (a real kill, mid-write:
 * its transactions are several MB), and resolves to the last progress value it reported.
 */
async function killMidWrite(path: string, mode: 'outputs' | 'submit', lines: number): Promise<{ last: number; finished: boolean }> {
  const child = spawn(process.execPath, [WRITER, path, mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let last = 0;
  let seen = 0;
  let finished = false;
  for await (const line of createInterface({ input: child.stdout })) {
    const m = /^(COMMITTED|APPENDED) (\d+)$/.exec(line);
    if (m !== null) {
      last = Number(m[2]);
      if (++seen >= lines) {
        child.kill('SIGKILL');
        break;
      }
    }
    if (line === 'FINISHED') finished = true;
  }
  await exited;
  if (!finished && child.signalCode !== 'SIGKILL') throw new Error(`the writer exited by itself (${child.exitCode}): ${stderr}`);
  return { last, finished };
}

function integrity(path: string): string[] {
  const db = new Database(path);
  try {
    return (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check);
  } finally {
    db.close();
  }
}

describe('SQLite job store under SIGKILL', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('a process killed while committing output batches leaves a sound file in which every committed batch is whole', async () => {
    dir = mkdtempSync(join(tmpdir(), 'taskfarm-kill-'));
    const path = join(dir, 'jobs.db');
    let reported = 0;
    for (const lines of [3, 2, 4]) {
      const { last } = await killMidWrite(path, 'outputs', lines);
      reported = Math.max(reported, last);
      expect(integrity(path)).toEqual(['ok']);
      const store = await SqliteJobStore.open(path);
      try {
        const [job] = (await store.listJobs()).items;
        expect(job).toBeDefined();
        // Every batch is 5,000 tasks: a torn batch would leave a count that is not a multiple of it.
        expect(job!.counts.done % 5_000).toBe(0);
        expect(job!.counts.done).toBeGreaterThanOrEqual(reported);
        expect(await store.recount(job!.ticket)).toEqual(job!.counts);
        let n = 0;
        for await (const r of store.readResults(job!.ticket)) {
          expect(r).toEqual({ index: r.index, output: JSON.stringify({ v: r.index * 2, pad: 'x'.repeat(200) }) });
          n++;
        }
        expect(n).toBe(job!.counts.done);
      } finally {
        await store.close();
      }
    }
  });

  it('a process killed while appending a submit leaves whole batches, invisible, and recover() removes them', async () => {
    dir = mkdtempSync(join(tmpdir(), 'taskfarm-kill-'));
    const path = join(dir, 'jobs.db');
    const { last } = await killMidWrite(path, 'submit', 4);
    expect(integrity(path)).toEqual(['ok']);
    const db = new Database(path, { readonly: true });
    const rows = (db.prepare('SELECT count(*) AS n FROM tasks').get() as { n: number }).n;
    db.close();
    expect(rows % 5_000).toBe(0);
    expect(rows).toBeGreaterThanOrEqual(last);
    const store = await SqliteJobStore.open(path);
    try {
      expect((await store.listJobs()).items).toEqual([]);
      expect(await store.recover()).toEqual({ requeued: 0, abandonedSubmits: 1, purged: 0 });
    } finally {
      await store.close();
    }
    expect(integrity(path)).toEqual(['ok']);
    const after = new Database(path, { readonly: true });
    expect((after.prepare('SELECT count(*) AS n FROM tasks').get() as { n: number }).n).toBe(0);
    after.close();
  });
});
