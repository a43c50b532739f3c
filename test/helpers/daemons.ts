/**
 * Real worker daemons in child processes on 127.0.0.1, for integration tests. Every daemon a test
 * starts is stopped by `stopAll()` (call it in afterEach/afterAll), by pid, SIGKILL after a bounded wait.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon, stopDaemon, type LocalDaemon } from '../../dist/client/local-daemons.js';

export type { LocalDaemon };

/** A set of daemons that a test owns. */
export class Daemons {
  readonly #all: LocalDaemon[] = [];
  readonly #dirs: string[] = [];

  /** Starts `n` daemons with their own cache folders; extra args go to `taskfarm worker`. */
  async start(n: number, args: readonly string[] = ['--threads', '1']): Promise<LocalDaemon[]> {
    const started = await Promise.all(
      Array.from({ length: n }, () => {
        const dir = mkdtempSync(join(tmpdir(), 'taskfarm-test-'));
        this.#dirs.push(dir);
        return startDaemon(['--cache-dir', dir, '--log-level', 'warn', ...args]);
      }),
    );
    this.#all.push(...started);
    return started;
  }

  /** Restarts a daemon on the same cache folder (same worker id) and port. */
  async restart(d: LocalDaemon, args: readonly string[] = ['--threads', '1']): Promise<LocalDaemon> {
    const i = this.#all.indexOf(d);
    const dir = this.#dirs[i]!;
    const again = await startDaemon(['--cache-dir', dir, '--log-level', 'warn', '--port', String(d.port), ...args]);
    this.#all.push(again);
    this.#dirs.push(dir);
    return again;
  }

  /** Stops every daemon started by this set and removes their folders. */
  async stopAll(): Promise<void> {
    await Promise.all(
      this.#all.map((d) => {
        if (d.child.signalCode === null && d.child.exitCode === null) {
          try {
            process.kill(d.pid, 'SIGCONT'); // a frozen daemon cannot handle SIGTERM
          } catch {
            // already gone
          }
        }
        return stopDaemon(d, 3000);
      }),
    );
    this.#all.length = 0;
    for (const dir of this.#dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  }
}

/** A fresh temporary folder (removed by the returned cleanup). */
export function tempDir(): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), 'taskfarm-test-'));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Polls `check` until it returns a value other than undefined/false, or rejects after `timeoutMs`. */
export async function until<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10_000,
  everyMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Absolute path of a fixture stage in test/fixtures. */
export function fixture(name: string): string {
  return new URL(`../fixtures/${name}`, import.meta.url).pathname;
}

/** Resolves with the first line of `stream` that matches `re`; rejects at the deadline or when the stream ends. */
export function waitForLine(stream: NodeJS.ReadableStream, re: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => done(new Error(`no line matching ${re} within ${timeoutMs} ms`)), timeoutMs);
    const onData = (chunk: Buffer | string): void => {
      buffer += chunk.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        const m = re.exec(line);
        if (m !== null) return done(undefined, m);
      }
    };
    const onEnd = (): void => done(new Error(`stream ended before a line matching ${re}`));
    function done(err: Error | undefined, m?: RegExpExecArray): void {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      if (err !== undefined) reject(err);
      else resolve(m!);
    }
    stream.on('data', onData);
    stream.on('end', onEnd);
  });
}

/** True while the process `pid` exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}
