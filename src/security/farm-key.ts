/**
 * The farm key: 256 random bits shared by a farm's daemons and clients, as one line of base64url
 * text. Only key holders may recruit a worker; a client only trusts workers that prove the key.
 * The key never appears in logs, errors, adverts or `taskfarm ls`.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { InvalidOptionError } from '../errors.js';

/** Length of a farm key in bytes. */
export const FARM_KEY_BYTES = 32;

/** A new random farm key as text (43 base64url characters). */
export function generateFarmKey(): string {
  return randomBytes(FARM_KEY_BYTES).toString('base64url');
}

/** Decodes a farm key's text. Throws {@link InvalidOptionError} (without echoing the text) when malformed. */
export function parseFarmKey(text: string, where: string): Buffer {
  const trimmed = text.trim();
  const bytes = /^[A-Za-z0-9_-]+$/.test(trimmed) ? Buffer.from(trimmed, 'base64url') : Buffer.alloc(0);
  if (bytes.length !== FARM_KEY_BYTES) {
    throw new InvalidOptionError(
      `The farm key from ${where} is not a taskfarm key (expected the ${Math.ceil((FARM_KEY_BYTES * 4) / 3)} base64url characters ` +
        'that `taskfarm keygen` writes). Make one with `taskfarm keygen` and copy the same file to every machine of the farm.',
    );
  }
  return bytes;
}

/** Where the key is read from when nothing else is given: `$XDG_CONFIG_HOME/taskfarm/farm.key` or `~/.config/taskfarm/farm.key`. */
export function defaultKeyPath(): string {
  const xdg = process.env['XDG_CONFIG_HOME'];
  return join(xdg !== undefined && xdg.length > 0 ? xdg : join(homedir(), '.config'), 'taskfarm', 'farm.key');
}

/** A farm key and where it came from (for messages; never the key itself). */
export interface ResolvedFarmKey {
  readonly key: Buffer;
  readonly source: string;
}

/** Reads a key file. Throws {@link InvalidOptionError} when unreadable or malformed. */
export function readKeyFile(path: string): ResolvedFarmKey {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new InvalidOptionError(`Cannot read the farm key file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return { key: parseFarmKey(text, `file ${path}`), source: `file ${path}` };
}

/** True when a key file can be read by users other than its owner. */
export function keyFileTooOpen(path: string): boolean {
  try {
    return (statSync(path).mode & 0o077) !== 0;
  } catch {
    return false;
  }
}

/**
 * Finds the farm key: the explicit `key` text, else `keyFile`, else `$TASKFARM_KEY`, else
 * `$TASKFARM_KEY_FILE`, else the default path if it exists. Undefined when there is none.
 */
export function resolveFarmKey(input: { key?: string | undefined; keyFile?: string | undefined } = {}): ResolvedFarmKey | undefined {
  if (input.key !== undefined) return { key: parseFarmKey(input.key, 'option `key`'), source: 'option key' };
  if (input.keyFile !== undefined) return readKeyFile(input.keyFile);
  const env = process.env['TASKFARM_KEY'];
  if (env !== undefined && env.length > 0) return { key: parseFarmKey(env, '$TASKFARM_KEY'), source: '$TASKFARM_KEY' };
  const envFile = process.env['TASKFARM_KEY_FILE'];
  if (envFile !== undefined && envFile.length > 0) return readKeyFile(envFile);
  const path = defaultKeyPath();
  if (existsSync(path)) return readKeyFile(path);
  return undefined;
}

/**
 * Writes a new key to `path` (mode 0600, folder 0700). Refuses to overwrite an existing file
 * unless `force`. Returns the path.
 */
export function writeNewKeyFile(path: string, force = false): string {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const fd = openSync(path, force ? 'w' : 'wx', 0o600);
  try {
    writeSync(fd, generateFarmKey() + '\n');
  } finally {
    closeSync(fd);
  }
  return path;
}

/** What to tell a user who has no key. */
export const NO_KEY_HELP =
  'Make a farm key with `taskfarm keygen` (it writes ' +
  defaultKeyPath().replace(homedir(), '~') +
  '), copy that file to the same place on every machine of the farm (or pass --key-file / set TASKFARM_KEY), and keep it private.';
