import { hostname } from 'node:os';
import { Executor, ExecutorStartError } from '../worker/executor.js';
import { CodeCache } from '../worker/code-cache.js';
import { StageSetupError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ExecBatch } from '../worker/executor.js';
import type { PreparedStage } from './bundler.js';
import type { PreparedShared } from './shared.js';
import type { LinkHandlers, WorkerInfo, WorkerLink } from './link.js';

/** The in-process thread pool as a worker: no network, same executor as a daemon. */
export class LocalLink implements WorkerLink {
  readonly info: WorkerInfo;
  readonly bundlesSent = 0;
  readonly sharedBytesSent = 0;
  readonly maxInFlight = Number.MAX_SAFE_INTEGER;
  readonly maxPayloadBytes = Number.MAX_SAFE_INTEGER;
  readonly #executor: Executor;

  private constructor(info: WorkerInfo, executor: Executor) {
    this.info = info;
    this.#executor = executor;
  }

  /** Writes the bundles to the local cache, starts the threads and runs setup(). */
  static async open(
    stages: readonly PreparedStage[],
    shared: readonly PreparedShared[],
    options: { threads: number; cacheDir: string; threadMemoryMb: number | undefined; taskTimeoutMs: number; logger: Logger },
    handlers: LinkHandlers,
  ): Promise<LocalLink> {
    const cache = new CodeCache(`${options.cacheDir}/bundles`);
    for (const s of stages) await cache.put(s.hash, s.code);
    // Shared data: files are read where they are; in-memory values go to the local cache.
    const sharedCache = new CodeCache(`${options.cacheDir}/shared`, 8 * 1024 * 1024 * 1024, '.bin');
    const sharedEntries: { name: string; kind: 'bytes' | 'value'; path: string }[] = [];
    for (const s of shared) {
      if (s.file === undefined && !sharedCache.has(s.hash)) await sharedCache.put(s.hash, s.bytes!);
      sharedEntries.push({ name: s.name, kind: s.kind, path: s.file ?? sharedCache.pathOf(s.hash) });
    }
    const host = hostname();
    const info: WorkerInfo = Object.freeze({ id: 'local', host, address: 'local', threads: options.threads, local: true });
    const executor = new Executor({
      threads: options.threads,
      chain: stages.map((s) => ({ hash: s.hash, path: cache.pathOf(s.hash), inline: s.inline })),
      shared: sharedEntries,
      workerId: 'local',
      hostname: host,
      ...(options.threadMemoryMb === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: options.threadMemoryMb } }),
      logger: options.logger,
      onResults: (results) => handlers.onResults(results),
    });
    executor.taskTimeoutMs = options.taskTimeoutMs;
    try {
      await executor.start();
    } catch (err) {
      if (err instanceof ExecutorStartError) throw new StageSetupError('local', err.remote);
      throw err;
    }
    return new LocalLink(info, executor);
  }

  send(batch: ExecBatch): void {
    this.#executor.submit(batch);
  }

  cancel(seqs: readonly number[]): void {
    this.#executor.cancel(new Set(seqs));
  }

  async close(): Promise<void> {
    await this.#executor.close();
  }
}
