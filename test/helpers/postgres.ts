/**
 * A private PostgreSQL server for tests and benches: `initdb` of a temporary cluster, `postgres`
 * started as our child process listening on a unix socket in that temporary folder only (no TCP at
 * all: `listen_addresses = ''`), stopped and deleted by `stop()`.
 *
 * Running as root (initdb refuses root), the cluster belongs to `nobody` and every server command
 * runs through `setpriv --reuid/--regid` (util-linux). The server gets `--pdeathsig SIGQUIT`, so if
 * the test process dies without stopping it, the kernel sends it an immediate-shutdown signal.
 *
 * Binaries: $TASKFARM_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin, else
 * `pg_config --bindir`. When none can be started, {@link startPostgres} resolves to
 * `{ skip: reason }` instead of throwing: callers skip loudly (see {@link skipLoudly}).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';

/** A running private server. */
export interface PgServer {
  /** The socket folder (pass as `host`). */
  readonly host: string;
  readonly port: number;
  readonly user: string;
  /** The cluster's data folder (to inspect its bytes). */
  readonly dataDir: string;
  /** The server's pid. */
  readonly pid: number;
  /** Connection settings for node-postgres. */
  config(database?: string): pg.PoolConfig;
  /** A `postgresql://` URL (socket folder as the `host` query parameter). */
  url(database?: string): string;
  /** Fast shutdown (SIGINT), SIGQUIT after 10 s, SIGKILL after 20 s; then the cluster folder is deleted. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@link startPostgres}. */
export interface StartPostgresOptions {
  /** Keep PostgreSQL's durable defaults (fsync, synchronous commit) — for benches. Tests turn fsync off. @default false */
  readonly durable?: boolean;
  /** Extra `-c name=value` settings. */
  readonly settings?: Readonly<Record<string, string>>;
  /** Append the server's log to this file (for debugging); by default it is drained and dropped. */
  readonly logFile?: string;
}

const USER = 'taskfarm';
const PORT = 5432;
const NOBODY = { uid: 65534, gid: 65534 };

function findBinDir(): string | undefined {
  const env = process.env['TASKFARM_PG_BIN'];
  if (env !== undefined && env !== '') return existsSync(join(env, 'initdb')) ? env : undefined;
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, 'bin', 'initdb')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0] !== undefined) return join(root, versions[0], 'bin');
  }
  const r = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  const dir = r.status === 0 ? r.stdout.trim() : '';
  return dir !== '' && existsSync(join(dir, 'initdb')) ? dir : undefined;
}

/** Starts a private server, or resolves to `{ skip }` with the reason none could be started. */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<PgServer | { skip: string }> {
  const bin = findBinDir();
  if (bin === undefined) return { skip: 'no PostgreSQL server binaries (no initdb under /usr/lib/postgresql/*/bin, $TASKFARM_PG_BIN or pg_config --bindir)' };
  const root = typeof process.geteuid === 'function' && process.geteuid() === 0;
  const setpriv = spawnSync('setpriv', ['--version'], { encoding: 'utf8' }).status === 0;
  if (root && !setpriv) return { skip: 'running as root, and setpriv (util-linux) is missing to run initdb as an unprivileged user' };
  const wrap = (cmd: string, args: string[], pdeathsig = false): [string, string[]] => {
    if (!setpriv) return [cmd, args];
    const pre = root ? [`--reuid=${NOBODY.uid}`, `--regid=${NOBODY.gid}`, '--clear-groups'] : [];
    if (pdeathsig) pre.push('--pdeathsig', 'SIGQUIT');
    return pre.length === 0 ? [cmd, args] : ['setpriv', [...pre, '--', cmd, ...args]];
  };

  const dir = mkdtempSync(join(tmpdir(), 'taskfarm-pg-'));
  const dataDir = join(dir, 'data');
  let child: ChildProcess | undefined;
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  try {
    if (root) chownSync(dir, NOBODY.uid, NOBODY.gid);
    const [initCmd, initArgs] = wrap(join(bin, 'initdb'), [
      '-D',
      dataDir,
      '-U',
      USER,
      '--auth=trust',
      '-E',
      'UTF8',
      '--locale=C',
      '--no-sync',
      '--no-instructions',
    ]);
    const init = spawnSync(initCmd, initArgs, { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
    if (init.status !== 0) {
      cleanup();
      return { skip: `initdb failed: ${(init.error?.message ?? init.stderr ?? '').trim().split('\n').slice(-3).join(' / ')}` };
    }
    const settings: Record<string, string> = {
      listen_addresses: '',
      unix_socket_directories: dir,
      port: String(PORT),
      max_connections: '40',
      shared_buffers: '64MB',
      ...(options.durable === true ? {} : { fsync: 'off', full_page_writes: 'off', synchronous_commit: 'off' }),
      ...options.settings,
    };
    const args = ['-D', dataDir, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
    const [cmd, cmdArgs] = wrap(join(bin, 'postgres'), args, true);
    const proc = spawn(cmd, cmdArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    const started = await new Promise<{ ok: true } | { ok: false; why: string }>((resolve) => {
      let log = '';
      const timer = setTimeout(() => resolve({ ok: false, why: `not ready after 30 s: ${log.trim().split('\n').slice(-3).join(' / ')}` }), 30_000);
      proc.stderr?.setEncoding('utf8');
      proc.stderr?.on('data', (chunk: string) => {
        log += chunk;
        if (log.includes('database system is ready to accept connections')) {
          clearTimeout(timer);
          resolve({ ok: true });
        }
      });
      proc.on('error', (err) => {
        clearTimeout(timer);
        resolve({ ok: false, why: err.message });
      });
      proc.on('exit', (code, signal) => {
        clearTimeout(timer);
        resolve({ ok: false, why: `postgres exited (${signal ?? code}): ${log.trim().split('\n').slice(-3).join(' / ')}` });
      });
    });
    // Keep draining the server's log so it never blocks on a full pipe.
    proc.stderr?.removeAllListeners('data');
    const logFile = options.logFile;
    if (logFile !== undefined) proc.stderr?.on('data', (chunk: string) => appendFileSync(logFile, chunk));
    proc.stderr?.resume();
    if (!started.ok) {
      await stopChild(proc);
      cleanup();
      return { skip: `postgres did not start: ${started.why}` };
    }
    let stopped: Promise<void> | undefined;
    return {
      host: dir,
      port: PORT,
      user: USER,
      dataDir,
      pid: proc.pid as number,
      config: (database = 'postgres') => ({ host: dir, port: PORT, user: USER, database }),
      url: (database = 'postgres') => `postgresql://${USER}@localhost:${PORT}/${database}?host=${encodeURIComponent(dir)}`,
      stop: () =>
        (stopped ??= (async () => {
          await stopChild(proc);
          cleanup();
        })()),
    };
  } catch (err) {
    if (child !== undefined) await stopChild(child);
    cleanup();
    return { skip: `could not set up a PostgreSQL cluster: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/** Stops the server we started, by its pid (through the ChildProcess): SIGINT (fast shutdown), then SIGQUIT, then SIGKILL. */
async function stopChild(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  for (const [signal, waitMs] of [
    ['SIGINT', 10_000],
    ['SIGQUIT', 10_000],
    ['SIGKILL', 10_000],
  ] as const) {
    try {
      proc.kill(signal);
    } catch {
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([exited.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), waitMs)))]);
    clearTimeout(timer);
    if (done) return;
  }
}

/** Prints why PostgreSQL tests are skipped, so that nobody mistakes a skip for a pass. */
export function skipLoudly(what: string, reason: string): void {
  const bar = '!'.repeat(78);
  console.warn(`\n${bar}\n!! SKIPPED: ${what}\n!! reason: ${reason}\n${bar}\n`);
}
