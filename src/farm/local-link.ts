import { hostname } from 'node:os';
import { Executor, ExecutorStartError } from '../worker/executor.js';
import { CodeCache } from '../worker/code-cache.js';
import { StageSetupError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ExecBatch } from '../worker/executor.js';
import type { PreparedStage } from './bundler.js';
import type { LinkHandlers, WorkerInfo, WorkerLink } from './link.js';

/** The in-process thread pool as a worker: no network, same executor as a daemon. */
export class LocalLink implements WorkerLink {
  readonly info: WorkerInfo;
  readonly bundlesSent = 0;
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
    options: { threads: number; cacheDir: string; threadMemoryMb: number | undefined; taskTimeoutMs: number; logger: Logger },
    handlers: LinkHandlers,
  ): Promise<LocalLink> {
    const cache = new CodeCache(`${options.cacheDir}/bundles`);
    for (const s of stages) await cache.put(s.hash, s.code);
    const host = hostname();
    const info: WorkerInfo = Object.freeze({ id: 'local', host, address: 'local', threads: options.threads, local: true });
    const executor = new Executor({
      threads: options.threads,
      chain: stages.map((s) => ({ hash: s.hash, path: cache.pathOf(s.hash), inline: s.inline })),
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
