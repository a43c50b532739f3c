/**
 * Worker daemons for the security tests: real `taskfarm worker` child processes on 127.0.0.1 with a
 * chosen farm key (or none, or --insecure) passed in their environment, their cache folder known
 * (to look for bundles) and their stderr kept. Everything started here is stopped by `stopAll()`,
 * by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon, stopDaemon, type LocalDaemon } from '../../dist/client/local-daemons.js';

export const CLI = fileURLToPath(new URL('../../dist/client/cli.js', import.meta.url));

/** A daemon started by {@link SecurityDaemons.start}. */
export interface SecurityDaemon extends LocalDaemon {
  readonly cacheDir: string;
  /** Everything the daemon wrote to stderr since it printed READY. */
  stderr(): string;
  /** The code bundles in its cache (`<cache-dir>/bundles/*.mjs`). */
  bundles(): string[];
}

/** How a daemon gets (or does not get) its farm key. */
export type KeySetting = { readonly key: string } | { readonly insecure: true } | { readonly inherit: true };

/** The environment of this process without any farm key, with an empty config folder. */
export function envWithoutKey(configDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: configDir };
  delete env['TASKFARM_KEY'];
  delete env['TASKFARM_KEY_FILE'];
  return env;
}

/** A CLI process started by {@link SecurityDaemons.spawnCli}: output kept whole. */
export interface CliProcess {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or null when killed by a signal). */
  readonly exited: Promise<number | null>;
}

export class SecurityDaemons {
  readonly #daemons: LocalDaemon[] = [];
  readonly #children: ChildProcess[] = [];
  readonly #dirs: string[] = [];

  /** A fresh temporary folder, removed by stopAll(). */
  tempDir(): string {
    const d = mkdtempSync(join(tmpdir(), 'taskfarm-sec-'));
    this.#dirs.push(d);
    return d;
  }

  /**
   * Starts a daemon (`--threads 1`, its own cache folder, extra `args`) with the farm key in its
   * environment as `key` says: `{ key }` another key, `{ insecure: true }` no key and --insecure,
   * `{ inherit: true }` the test run's key.
   */
  async start(key: KeySetting, args: readonly string[] = [], timeoutMs = 20_000): Promise<SecurityDaemon> {
    const cacheDir = this.tempDir();
    let env: NodeJS.ProcessEnv = process.env;
    const extra: string[] = [];
    if ('key' in key) env = { ...envWithoutKey(join(cacheDir, 'config')), TASKFARM_KEY: key.key };
    else if ('insecure' in key) {
      env = envWithoutKey(join(cacheDir, 'config'));
      extra.push('--insecure');
    }
    const d = await startDaemon(['--cache-dir', cacheDir, '--threads', '1', '--log-level', 'info', ...extra, ...args], timeoutMs, env);
    this.#daemons.push(d);
    let err = '';
    d.child.stderr!.on('data', (chunk: Buffer) => {
      if (err.length < 1_000_000) err += chunk.toString();
    });
    return {
      ...d,
      cacheDir,
      stderr: () => err,
      bundles: () => {
        const dir = join(cacheDir, 'bundles');
        return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.mjs')) : [];
      },
    };
  }

  /** Runs `taskfarm <args>` with `env`, keeping all its output (for start-up checks). */
  spawnCli(args: readonly string[], env: NodeJS.ProcessEnv): CliProcess {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.#children.push(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    return { child, stdout: () => out, stderr: () => err, exited };
  }

  /** Stops every daemon and process started here (SIGTERM, then SIGKILL), removes the folders. */
  async stopAll(): Promise<void> {
    await Promise.all(this.#daemons.splice(0).map((d) => stopDaemon(d, 3000)));
    await Promise.all(
      this.#children.splice(0).map(async (c) => {
        if (c.exitCode !== null || c.signalCode !== null) return;
        const gone = new Promise<void>((r) => c.once('exit', () => r()));
        c.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([gone, new Promise<void>((r) => (timer = setTimeout(r, 3000)))]);
        clearTimeout(timer);
        if (c.exitCode === null && c.signalCode === null) {
          c.kill('SIGKILL');
          await gone;
        }
      }),
    );
    for (const d of this.#dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

export { alive } from './daemons.js';

/** Settles `p` into its value or its error. */
export function settle<T>(p: Promise<T>): Promise<unknown> {
  return p.then(
    (v) => v,
    (e: unknown) => e,
  );
}
