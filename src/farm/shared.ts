/**
 * Shared data (option `shared`): values every task may read, shipped once per worker instead of
 * once per task, content-addressed and cached on the workers' disks like code bundles (PARK's fit
 * to a large dataset; Work Queue's cached files).
 */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { serialize } from 'node:v8';
import { InvalidOptionError } from '../errors.js';
import { findUnsendable } from '../protocol/index.js';

/** A file whose bytes are shared with every task (see {@link sharedFile}). */
export class SharedFile {
  /** Absolute path of the file. */
  readonly path: string;
  constructor(path: string) {
    this.path = path;
  }
}

/**
 * Marks a file for the `shared` option: its bytes reach each worker once (streamed, never held
 * whole in the client's memory) and stages see them as a Uint8Array in `ctx.shared[name]`.
 * A relative path resolves against the current directory.
 * @example new TaskFarm('./fit.ts', params, { shared: { data: sharedFile('measurements.bin') } })
 */
export function sharedFile(path: string): SharedFile {
  if (typeof path !== 'string' || path.length === 0) throw new InvalidOptionError('Expected `sharedFile` to get a file path');
  return new SharedFile(isAbsolute(path) ? path : resolve(process.cwd(), path));
}

/** A value whose encoding and hash were made once (see {@link sharedValue}). */
export class SharedValue {
  /** `bytes` (a Uint8Array on the worker) or `value` (decoded once per thread). */
  readonly kind: 'bytes' | 'value';
  /** sha256 of the encoded content, hex. */
  readonly hash: string;
  /** Size of the encoded content, in bytes. */
  readonly size: number;
  readonly #bytes: Uint8Array;
  /** @internal Made by {@link sharedValue}. */
  constructor(kind: 'bytes' | 'value', bytes: Uint8Array) {
    this.kind = kind;
    this.#bytes = bytes;
    this.hash = createHash('sha256').update(bytes).digest('hex');
    this.size = bytes.byteLength;
  }
  /** @internal The encoded content (never modified). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }
}

/**
 * Snapshots a value for the `shared` option once: bytes (Buffer, Uint8Array) are copied, other
 * values encoded, and the content hashed now, not again by every job that shares it. For a large
 * dataset given to many jobs (one per generation of an optimisation, say), this saves hashing it
 * per job. Changing `value` afterwards has no effect on the snapshot.
 * @throws InvalidOptionError when the value cannot be sent to workers
 * @example const data = sharedValue(measurements); for (const p of batches) await pool.map(fit, p, { shared: { data } });
 */
export function sharedValue(value: unknown): SharedValue {
  if (value instanceof SharedValue) return value;
  if (value instanceof SharedFile) throw new InvalidOptionError('sharedValue() takes bytes or a value; give a sharedFile() to `shared` directly');
  if (value instanceof Uint8Array) return new SharedValue('bytes', new Uint8Array(value));
  const bad = findUnsendable(value, 'value');
  if (bad !== undefined) throw new InvalidOptionError(`The shared value cannot be sent to workers: ${bad[0]} is ${bad[1]}`);
  return new SharedValue('value', serialize(value));
}

/** One shared value, ready to ship. */
export interface PreparedShared {
  readonly name: string;
  /** `bytes` (files, Buffers, Uint8Arrays): a Uint8Array on the worker; `value`: anything else, decoded per thread. */
  readonly kind: 'bytes' | 'value';
  readonly hash: string;
  readonly size: number;
  /** The content, for values and in-memory bytes. */
  readonly bytes?: Uint8Array;
  /** The file, for {@link sharedFile} (read in chunks when uploaded). */
  readonly file?: string;
}

/** File hashes by path, valid while the file's modification time and size are unchanged. */
const fileHashes = new Map<string, { mtimeMs: number; size: number; hash: string }>();

async function hashFile(path: string, mtimeMs: number, size: number): Promise<string> {
  const known = fileHashes.get(path);
  if (known !== undefined && known.mtimeMs === mtimeMs && known.size === size) return known.hash;
  const before = Date.now();
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  const hash = h.digest('hex');
  if (mtimeMs < before - 2) {
    fileHashes.set(path, { mtimeMs, size, hash });
    if (fileHashes.size > 1024) fileHashes.delete(fileHashes.keys().next().value!);
  }
  return hash;
}

/** Validates, encodes and hashes the `shared` option's values. */
export async function prepareShared(shared: Readonly<Record<string, unknown>>): Promise<PreparedShared[]> {
  const out: PreparedShared[] = [];
  for (const [name, value] of Object.entries(shared)) {
    if (!/^[\w.$-]{1,128}$/.test(name))
      throw new InvalidOptionError(`Expected \`shared\` names to be identifiers (letters, digits, _ . $ -), got ${JSON.stringify(name)}`);
    if (value instanceof SharedFile) {
      let size: number;
      let mtimeMs: number;
      try {
        const st = statSync(value.path);
        if (!st.isFile()) throw new Error('not a regular file');
        size = st.size;
        mtimeMs = st.mtimeMs;
      } catch (err) {
        throw new InvalidOptionError(`Shared file "${name}" (${value.path}) cannot be read: ${(err as Error).message}`);
      }
      out.push({ name, kind: 'bytes', hash: await hashFile(value.path, mtimeMs, size), size, file: value.path });
      continue;
    }
    if (value instanceof SharedValue) {
      out.push({ name, kind: value.kind, hash: value.hash, size: value.size, bytes: value.bytes });
      continue;
    }
    if (value instanceof Uint8Array) {
      out.push({ name, kind: 'bytes', hash: createHash('sha256').update(value).digest('hex'), size: value.byteLength, bytes: value });
      continue;
    }
    const bad = findUnsendable(value, `shared.${name}`);
    if (bad !== undefined) throw new InvalidOptionError(`Shared value "${name}" cannot be sent to workers: ${bad[0]} is ${bad[1]}`);
    const bytes = serialize(value);
    out.push({ name, kind: 'value', hash: createHash('sha256').update(bytes).digest('hex'), size: bytes.byteLength, bytes });
  }
  return out;
}

/** The content of a shared value in chunks of at most `chunkBytes`. */
export async function* sharedChunks(s: PreparedShared, chunkBytes = 1024 * 1024): AsyncGenerator<Uint8Array> {
  if (s.file !== undefined) {
    for await (const chunk of createReadStream(s.file, { highWaterMark: chunkBytes })) yield chunk as Buffer;
    return;
  }
  const bytes = s.bytes!;
  for (let off = 0; off < bytes.byteLength; off += chunkBytes) yield bytes.subarray(off, Math.min(bytes.byteLength, off + chunkBytes));
  if (bytes.byteLength === 0) yield new Uint8Array(0);
}
