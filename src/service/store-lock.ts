/**
 * One manager per store: a lock file next to a SQLite store names the process that serves it. A
 * second manager on the same file would hand the first one's running tasks out again at its
 * recovery.
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { StoreError } from '../errors.js';

/** A lock on a store, held by this process. */
export interface StoreLock {
  /** The lock file. */
  readonly path: string;
  /** Removes the lock (if it is still ours). Idempotent. */
  release(): void;
}

/** Lock files this process holds. */
const held = new Set<string>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes `<storePath>.lock` for this process: one manager per store (a second one would hand out
 * the first one's running tasks again on its recovery). A lock left by a process that is gone
 * (SIGKILLed) is taken over. Throws {@link StoreError} naming the live holder.
 */
export function lockStore(storePath: string): StoreLock {
  const path = `${storePath}.lock`;
  if (held.has(path)) throw new StoreError(`The job store ${storePath} is already served by a manager in this process (pid ${process.pid}): use that one`);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      let released = false;
      held.add(path);
      return {
        path,
        release(): void {
          if (released) return;
          released = true;
          held.delete(path);
          try {
            if (readFileSync(path, 'utf8').trim() === String(process.pid)) rmSync(path, { force: true });
          } catch {
            // gone already
          }
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new StoreError(`Cannot lock the job store (${path}): ${(err as Error).message}`, { cause: err });
      let holder = NaN;
      try {
        holder = Number(readFileSync(path, 'utf8').trim());
      } catch {
        // removed meanwhile: try again
      }
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && alive(holder)) {
        throw new StoreError(`The job store ${storePath} is served by another manager (pid ${holder}): connect to that manager by its URL, or stop it first`);
      }
      rmSync(path, { force: true }); // stale: its process is gone
    }
  }
  throw new StoreError(`Cannot lock the job store ${storePath}: its lock file ${path} keeps changing`);
}
