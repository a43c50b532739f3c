/**
 * The `taskfarm` command as a user runs it: `node dist/client/cli.js …` in a child process. Every
 * process started here is tracked; `killAll()` (call it in afterEach) SIGKILLs what still runs, by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { until } from './daemons.js';

export const CLI = new URL('../../dist/client/cli.js', import.meta.url).pathname;
export const REPO = new URL('../../', import.meta.url).pathname;

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A running `taskfarm` process whose output is collected as it comes. */
export interface CliProcess {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when it has exited and its output is read. */
  readonly closed: Promise<CliResult>;
  /** Waits (bounded) until `check(stdout, stderr)` holds. */
  waitFor(what: string, check: (stdout: string, stderr: string) => boolean, timeoutMs?: number): Promise<void>;
}

const running = new Set<ChildProcess>();

/** Starts `taskfarm <args>` with a stdin pipe the test writes to. */
export function startCli(args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: opts.cwd ?? REPO, stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => {}); // it may exit before reading all of stdin
  const closed = (async (): Promise<CliResult> => {
    const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
    running.delete(child);
    return { code, signal, stdout, stderr };
  })();
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    closed,
    waitFor: (what, check, timeoutMs = 15_000) =>
      until(
        what,
        () => {
          if (check(stdout, stderr)) return true;
          if (child.exitCode !== null) throw new Error(`taskfarm exited (${child.exitCode}) before ${what}\nstderr: ${stderr}`);
          return false;
        },
        timeoutMs,
      ).then(() => undefined),
  };
}

/** Runs `taskfarm <args>` to completion (SIGKILL at `timeoutMs`), feeding `stdin` if given. */
export async function cli(
  args: readonly string[],
  opts: { stdin?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<CliResult> {
  const p = startCli(args, opts);
  p.child.stdin!.end(opts.stdin ?? '');
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  try {
    const r = await p.closed;
    if (r.signal === 'SIGKILL') throw new Error(`taskfarm ${args.join(' ')} did not exit within ${timeoutMs} ms\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    return r;
  } finally {
    clearTimeout(timer);
  }
}

/** SIGKILLs every CLI process a test left running, and waits for each. */
export async function killAll(): Promise<void> {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'close');
    }
  }
  running.clear();
}

/** The environment of this process without any farm key (and an empty config folder). */
export function envWithoutKey(configDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, XDG_CONFIG_HOME: configDir };
  delete env['TASKFARM_KEY'];
  delete env['TASKFARM_KEY_FILE'];
  return env;
}
