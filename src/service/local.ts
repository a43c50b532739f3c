/**
 * The in-process job service behind `connect()` without a URL (PARK: no connection means the
 * client machine): the embedded SQLite store at its default path, and local threads as the pool
 * when there are no workers. The store is locked for this process (one manager per store).
 */
import { userInfo } from 'node:os';
import type { FarmPoolOptions } from '../farm/index.js';
import type { Logger } from '../log.js';
import { defaultStorePath } from '../store/index.js';
import { createJobService, type JobServiceOptions, type StoreJobService } from './job-service.js';
import type { Caller } from './types.js';

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
  /**
   * The pool. @default `{ localFallback: true, workerWaitMs: 3000 }`: the farm's workers when there
   * are some (mDNS with the farm key, as `TaskFarm` finds them), else this machine's threads. Give
   * `{ discovery: 'local' }` for local threads only, or `peers`.
   */
  readonly poolOptions?: FarmPoolOptions;
  /** Other service options (limits, repository tuning, handlers, logger). */
  readonly service?: Omit<JobServiceOptions, 'store' | 'pool' | 'poolOptions' | 'local'>;
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
  /** Closes the service (its runs stop; what they settled is committed) and releases the store's lock. */
  close(graceMs?: number): Promise<void>;
}

/**
 * Opens the job service in this process, for `connect()` without a URL: the SQLite store at
 * `storePath` (locked for this process: a second process gets a StoreError naming the first), the
 * farm's workers if any answer within 3 s and local threads otherwise (unless `poolOptions` say
 * otherwise), the store's jobs resumed. Close it
 * to release the store; a process that dies leaves a stale lock that the next opener takes over.
 * @example
 * const local = await openLocalService();
 * const ticket = await local.service.submit(local.caller, { stages: [{ source: 'export default (x) => x * 2' }] }, [{ text: '21', line: 1 }]);
 * await local.close();
 */
export async function openLocalService(options: LocalServiceOptions = {}): Promise<LocalJobService> {
  const storePath = options.storePath ?? defaultStorePath();
  const service = await createJobService({
    ...options.service,
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    store: storePath,
    poolOptions: options.poolOptions ?? { localFallback: true, workerWaitMs: 3000 },
  });
  return {
    service,
    caller: localCaller(),
    storePath,
    close: (graceMs?: number) => service.close(graceMs),
  };
}
