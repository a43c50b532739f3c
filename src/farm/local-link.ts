import { hostname } from 'node:os';
import { CodeCache, Executor, ExecutorStartError } from '../worker/index.js';
import { StageSetupError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ExecBatch } from '../protocol/index.js';
import type { LinkHandlers, LinkProgram, PrepareResult, WorkerInfo, WorkerLink } from './link.js';

/** Options of {@link LocalLink.open}. */
export interface LocalLinkOptions {
  readonly threads: number;
  readonly cacheDir: string;
  readonly threadMemoryMb: number | undefined;
  readonly logger: Logger;
}

const FREE: PrepareResult = Object.freeze({ bundlesSent: 0, sharedBytesSent: 0 });

/** The in-process thread pool as a worker: no network, the same executor as a daemon. */
export class LocalLink implements WorkerLink {
  readonly info: WorkerInfo;
  readonly maxInFlight = Number.MAX_SAFE_INTEGER;
  readonly maxPayloadBytes = Number.MAX_SAFE_INTEGER;
  readonly maxPrograms = 16;
  readonly #executor: Executor;
  readonly #cache: CodeCache;
  readonly #sharedCache: CodeCache;
  /** Program key → executor key and time limit, once prepared. */
  readonly #programs = new Map<string, { ready: Promise<PrepareResult>; ok: boolean; execKey: string; timeoutMs: number }>();

  private constructor(info: WorkerInfo, executor: Executor, cacheDir: string) {
    this.info = info;
    this.#executor = executor;
    this.#cache = new CodeCache(`${cacheDir}/bundles`);
    // Shared data: files are read where they are; in-memory values go to the local cache.
    this.#sharedCache = new CodeCache(`${cacheDir}/shared`, 8 * 1024 * 1024 * 1024, '.bin');
  }

  /** Starts the threads. */
  static async open(options: LocalLinkOptions, handlers: LinkHandlers): Promise<LocalLink> {
    const host = hostname();
    const info: WorkerInfo = Object.freeze({ id: 'local', host, address: 'local', threads: options.threads, local: true });
    const executor = new Executor({
      threads: options.threads,
      workerId: 'local',
      hostname: host,
      ...(options.threadMemoryMb === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: options.threadMemoryMb } }),
      logger: options.logger,
      onResults: (results) => handlers.onResults(results),
    });
    try {
      await executor.start();
    } catch (err) {
      if (err instanceof ExecutorStartError) throw new StageSetupError('local', err.remote);
      throw err;
    }
    return new LocalLink(info, executor, options.cacheDir);
  }

  /** Writes the bundles to the local cache and loads the program on the threads (setup() runs). */
  prepare(program: LinkProgram): Promise<PrepareResult> {
    const known = this.#programs.get(program.key);
    if (known !== undefined) return known.ready;
    const execKey = [...program.stages.map((s) => s.hash), ...program.shared.map((s) => `${s.name}=${s.kind}:${s.hash}`)].join(',');
    const entry = { ready: Promise.resolve(FREE), ok: false, execKey, timeoutMs: program.taskTimeoutMs };
    entry.ready = (async () => {
      try {
        for (const s of program.stages) if (!this.#cache.has(s.hash)) await this.#cache.put(s.hash, s.code);
        const shared: { name: string; kind: 'bytes' | 'value'; path: string }[] = [];
        for (const s of program.shared) {
          if (s.file === undefined && !this.#sharedCache.has(s.hash)) await this.#sharedCache.put(s.hash, s.bytes!);
          shared.push({ name: s.name, kind: s.kind, path: s.file ?? this.#sharedCache.pathOf(s.hash) });
        }
        await this.#executor.loadProgram({
          key: execKey,
          chain: program.stages.map((s) => ({ hash: s.hash, path: this.#cache.pathOf(s.hash), inline: s.inline })),
          shared,
        });
      } catch (err) {
        this.#programs.delete(program.key);
        if (err instanceof ExecutorStartError) throw new StageSetupError('local', err.remote);
        throw err;
      }
      entry.ok = true;
      return FREE;
    })();
    entry.ready.catch(() => {});
    this.#programs.set(program.key, entry);
    return entry.ready;
  }

  isReady(programKey: string): boolean {
    return this.#programs.get(programKey)?.ok === true;
  }

  unload(programKey: string): void {
    this.#programs.delete(programKey);
  }

  send(programKey: string, batch: ExecBatch, priority: number): void {
    const p = this.#programs.get(programKey);
    if (p === undefined || !p.ok) throw new Error(`program ${programKey.slice(0, 16)} is not ready on the local threads`);
    this.#executor.submit({ seqs: batch.seqs, inputs: batch.inputs, program: p.execKey, priority, timeoutMs: p.timeoutMs });
  }

  cancel(seqs: readonly number[]): void {
    this.#executor.cancel(new Set(seqs));
  }

  async close(): Promise<void> {
    await this.#executor.close();
  }
}
