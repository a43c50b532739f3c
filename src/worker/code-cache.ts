import { createHash, randomBytes } from 'node:crypto';
import { bundleHash } from '../protocol/index.js';
import { mkdirSync, existsSync, readdirSync, statSync, rmSync, utimesSync, openSync, closeSync, writeSync } from 'node:fs';
import { writeFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

const HASH = /^[0-9a-f]{64}$/;

/** A bundle was refused by the cache. */
export class BundleRejectedError extends Error {
  override name = 'BundleRejectedError';
}

/**
 * Content-addressed code bundles on disk (`<dir>/<sha256>.mjs`), bounded in total size: the least
 * recently used bundles are removed when a new one would exceed the bound.
 */
export class CodeCache {
  readonly dir: string;
  readonly #maxBytes: number;
  readonly #suffix: string;

  /** @param suffix - file name suffix: `.mjs` for code bundles, `.bin` for shared data */
  constructor(dir: string, maxBytes = 1024 * 1024 * 1024, suffix = '.mjs') {
    this.dir = dir;
    this.#maxBytes = maxBytes;
    this.#suffix = suffix;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** True when `hash` is a well-formed sha256 hex digest. */
  static isHash(hash: string): boolean {
    return HASH.test(hash);
  }

  /** Path of the bundle with this hash (whether or not it exists). */
  pathOf(hash: string): string {
    if (!HASH.test(hash)) throw new BundleRejectedError(`not a sha256 hex digest: ${JSON.stringify(hash.slice(0, 80))}`);
    return join(this.dir, `${hash}${this.#suffix}`);
  }

  /** True when the bundle is cached; marks it recently used. */
  has(hash: string): boolean {
    if (!HASH.test(hash)) return false;
    const path = this.pathOf(hash);
    if (!existsSync(path)) return false;
    try {
      const now = new Date();
      utimesSync(path, now, now);
    } catch {
      // racing an eviction: treat as present; the loader reports a missing file clearly
    }
    return true;
  }

  /** The hashes of `hashes` that are not cached. */
  missing(hashes: readonly string[]): string[] {
    return [...new Set(hashes)].filter((h) => !this.has(h));
  }

  /** Verifies and stores a bundle atomically. Throws {@link BundleRejectedError} on a hash mismatch. */
  async put(hash: string, code: Uint8Array): Promise<void> {
    const path = this.pathOf(hash);
    const actual = bundleHash(code);
    if (actual !== hash) throw new BundleRejectedError(`bundle content does not match its hash (claimed ${hash}, content ${actual})`);
    if (existsSync(path)) return;
    this.#evictFor(code.byteLength);
    const tmp = join(this.dir, `.${hash}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await writeFile(tmp, code, { mode: 0o600 });
      await rename(tmp, path);
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /**
   * Starts storing a large blob that arrives in chunks: `write` each chunk, then `finish()`, which
   * verifies the sha256 and moves the file into place (or throws {@link BundleRejectedError}).
   * `abort()` discards it.
   */
  beginPut(hash: string, totalBytes: number): { write(chunk: Uint8Array): void; finish(): Promise<void>; abort(): void; received(): number } {
    const path = this.pathOf(hash);
    this.#evictFor(totalBytes);
    const tmp = join(this.dir, `.${hash}.${randomBytes(6).toString('hex')}.tmp`);
    const fd = openSync(tmp, 'w', 0o600);
    const digest = createHash('sha256');
    let received = 0;
    let closed = false;
    const close = (): void => {
      if (!closed) closeSync(fd);
      closed = true;
    };
    return {
      write: (chunk) => {
        received += chunk.byteLength;
        if (received > totalBytes) throw new BundleRejectedError(`more bytes than announced (${totalBytes})`);
        digest.update(chunk);
        writeSync(fd, chunk);
      },
      received: () => received,
      finish: async () => {
        close();
        const actual = digest.digest('hex');
        if (received !== totalBytes || actual !== hash) {
          rmSync(tmp, { force: true });
          throw new BundleRejectedError(`shared data does not match its hash or size (claimed ${hash}, ${totalBytes} bytes; got ${actual}, ${received} bytes)`);
        }
        await rename(tmp, path);
      },
      abort: () => {
        close();
        rmSync(tmp, { force: true });
      },
    };
  }

  #evictFor(incoming: number): void {
    let entries: { path: string; size: number; mtime: number }[];
    try {
      entries = readdirSync(this.dir)
        .filter((f) => f.endsWith(this.#suffix))
        .map((f) => {
          const p = join(this.dir, f);
          const st = statSync(p);
          return { path: p, size: st.size, mtime: st.mtimeMs };
        });
    } catch {
      return;
    }
    let total = entries.reduce((n, e) => n + e.size, 0) + incoming;
    if (total <= this.#maxBytes) return;
    entries.sort((a, b) => a.mtime - b.mtime);
    for (const e of entries) {
      if (total <= this.#maxBytes) break;
      rmSync(e.path, { force: true });
      total -= e.size;
    }
  }
}
