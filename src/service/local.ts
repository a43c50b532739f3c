/**
 * The in-process job service behind `connect()` without a URL (PARK: no connection means the
 * client machine): the embedded SQLite store at its default path, and local threads as the pool
 * unless workers are named. One manager per store: a lock file next to the store says which
 * process serves it.
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { userInfo } from 'node:os';
import { StoreError } from '../errors.js';
import type { FarmPoolOptions } from '../farm/index.js';
import type { Logger } from '../log.js';
import { SqliteJobStore, defaultStorePath } from '../store/index.js';
import { createJobService, type JobServiceOptions, type StoreJobService } from './job-service.js';
import type { Caller } from './types.js';

/** A lock on a store, held by this process. */
export interface StoreLock {
  /** The lock file. */
  readonly path: string;
  /** Removes the lock (if it is still ours). Idempotent. */
  release(): void;
}

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
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      let released = false;
      return {
        path,
        release(): void {
          if (released) return;
          released = true;
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

/** The caller of an in-process service: this process's user, as an admin (the store is theirs). */
export function localCaller(): Caller {
  let user = 'local';
  try {
    user = userInfo().username || 'local';
  } catch {
    // no passwd entry (a container): keep 'local'
  }
  return { user, admin: true };
}

/** Options of {@link openLocalService}. */
export interface LocalServiceOptions {
  /** The SQLite store. @default defaultStorePath() (`$XDG_DATA_HOME/taskfarm/jobs.db`) */
  readonly storePath?: string;
  /** The pool. @default `{ discovery: 'local' }`: threads of this process (give `peers` to use workers) */
  readonly poolOptions?: FarmPoolOptions;
  /** Other service options (limits, repository tuning, handlers, logger). */
  readonly service?: Omit<JobServiceOptions, 'store' | 'pool' | 'poolOptions'>;
  /** @default silentLogger */
  readonly logger?: Logger;
}

/** An in-process job service, with the caller to act as. */
export interface LocalJobService {
  readonly service: StoreJobService;
  /** This process's user, admin of its own store ({@link localCaller}). */
  readonly caller: Caller;
  /** The store file. */
  readonly storePath: string;
  /** Closes the service (its runs stop; what they settled is committed) and releases the store. */
  close(graceMs?: number): Promise<void>;
}

/**
 * Opens the job service in this process, for `connect()` without a URL: the SQLite store at
 * `storePath` (locked for this process), local threads as the pool unless `poolOptions` say
 * otherwise, jobs of the store resumed. Close it to release the store; a process that dies leaves
 * a stale lock that the next opener takes over.
 * @example
 * const local = await openLocalService();
 * const ticket = await local.service.submit(local.caller, { stages: [{ source: 'export default (x) => x * 2' }] }, [{ text: '21', line: 1 }]);
 * await local.close();
 */
export async function openLocalService(options: LocalServiceOptions = {}): Promise<LocalJobService> {
  const storePath = options.storePath ?? defaultStorePath();
  const store = await SqliteJobStore.open(storePath);
  let lock: StoreLock;
  try {
    lock = lockStore(storePath);
  } catch (err) {
    await store.close();
    throw err;
  }
  let service: StoreJobService;
  try {
    service = await createJobService({
      ...options.service,
      ...(options.logger === undefined ? {} : { logger: options.logger }),
      store,
      poolOptions: options.poolOptions ?? { discovery: 'local' },
    });
  } catch (err) {
    lock.release();
    await store.close().catch(() => {});
    throw err;
  }
  return {
    service,
    caller: localCaller(),
    storePath,
    async close(graceMs?: number): Promise<void> {
      try {
        await service.close(graceMs);
      } finally {
        lock.release();
      }
    },
  };
}
