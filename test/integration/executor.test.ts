/**
 * The daemon's thread pool: a thread holds a batch behind the one it runs (so it never waits for
 * the main thread between batches), and such a batch, not started yet, is taken back without
 * stopping the thread: by a thread that went idle, or when it is cancelled. Real worker threads.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Executor } from '../../dist/src/worker/index.js';
import { decodeOutcomes, encodeInputs } from '../../dist/src/protocol/batch.js';
import { tempDir, until } from '../helpers/daemons.js';

/** Stage: `{ id, wait? }` → `{ id, thread }`; with `wait`, it runs until that file exists (at most 20 s, then `timeout`). */
const STAGE = `
import { existsSync } from 'node:fs';
import { threadId } from 'node:worker_threads';
export default (x) => {
  if (x.wait !== undefined) {
    const end = Date.now() + 20000;
    while (!existsSync(x.wait)) if (Date.now() > end) return { id: x.id, thread: threadId, timeout: true };
  }
  return { id: x.id, thread: threadId };
};
`;

interface Out {
  id: string;
  thread: number;
  timeout?: boolean;
}

describe('the executor', () => {
  const executors: Executor[] = [];
  const dirs: { remove: () => void }[] = [];
  afterEach(async () => {
    for (const e of executors.splice(0)) await e.close();
    for (const d of dirs.splice(0)) d.remove();
  });

  async function start(threads: number): Promise<{ ex: Executor; outputs: Map<number, Out>; dir: string }> {
    const dir = tempDir();
    dirs.push(dir);
    writeFileSync(join(dir.path, 'stage.mjs'), STAGE);
    const outputs = new Map<number, Out>();
    const ex = new Executor({
      threads,
      workerId: 'test',
      hostname: 'test',
      onResults: (r) => {
        const { flags, values } = decodeOutcomes(r.outcomes, r.seqs.length);
        for (let i = 0; i < r.seqs.length; i++) {
          if (flags[i] !== 0) throw new Error(`task ${r.seqs[i]} failed: ${JSON.stringify(values[i])}`);
          outputs.set(r.seqs[i]!, values[i] as Out);
        }
      },
    });
    executors.push(ex);
    await ex.start();
    await ex.loadProgram({ key: 'p', chain: [{ hash: 'a'.repeat(64), path: join(dir.path, 'stage.mjs') }] });
    return { ex, outputs, dir: dir.path };
  }

  const submit = (ex: Executor, seq: number, input: unknown): void => ex.submit({ seqs: Uint32Array.of(seq), inputs: encodeInputs([input]), program: 'p' });

  it('a batch waiting behind a busy thread runs on the thread that goes idle', async () => {
    const { ex, outputs, dir } = await start(2);
    const release = join(dir, 'release');
    submit(ex, 1, { id: 'long', wait: release }); // thread A, until released
    submit(ex, 2, { id: 'short' }); // thread B
    submit(ex, 3, { id: 'queued' }); // behind one of them
    // The long task is released only once the other two are done: had `queued` waited behind it, it would time out.
    await until('the two short tasks', () => outputs.has(2) && outputs.has(3));
    writeFileSync(release, '');
    await until('the long task', () => outputs.has(1));
    expect(outputs.get(1)!.timeout).toBeUndefined();
    expect(outputs.get(3)!.thread).not.toBe(outputs.get(1)!.thread);
    expect(ex.replacedThreads).toBe(0);
    await ex.onIdle();
  });

  it('cancelling a batch a thread holds but has not started leaves the thread and its running task alone', async () => {
    const { ex, outputs, dir } = await start(1);
    const release = join(dir, 'release');
    submit(ex, 1, { id: 'running', wait: release });
    submit(ex, 2, { id: 'cancelled' }); // held by the only thread, behind the running one
    submit(ex, 3, { id: 'kept' });
    ex.cancel(new Set([2]));
    writeFileSync(release, '');
    await until('the running and the kept task', () => outputs.has(1) && outputs.has(3));
    await ex.onIdle();
    expect(outputs.has(2)).toBe(false);
    expect(outputs.get(1)!.timeout).toBeUndefined();
    expect(ex.replacedThreads).toBe(0);
    expect(ex.load).toBe(0);
  });
});
