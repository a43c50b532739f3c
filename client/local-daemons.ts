/**
 * Starts worker daemons on this machine as child processes (for `taskfarm demo` and the benchmarks)
 * and stops exactly those, by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** A daemon started by {@link startDaemon}. */
export interface LocalDaemon {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  readonly id: string;
  /** `127.0.0.1:<port>` */
  readonly address: string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<void>;
}

const cli = fileURLToPath(new URL('./cli.js', import.meta.url));

/** Starts `taskfarm worker` on 127.0.0.1 and waits for its READY line (bounded by `timeoutMs`). */
export function startDaemon(args: readonly string[], timeoutMs = 20_000, env: NodeJS.ProcessEnv = process.env): Promise<LocalDaemon> {
  // Loopback only, never mDNS: these daemons are reached by address (--peers).
  const child = spawn(process.execPath, [cli, 'worker', '--host', '127.0.0.1', '--port', '0', '--no-advertise', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    if (stderr.length < 4000) stderr += d.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`worker daemon did not start within ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      const m = /^READY port=(\d+) id=(\S+)/.exec(line);
      if (m === null) return;
      clearTimeout(timer);
      const port = Number(m[1]);
      resolve({ child, pid: child.pid!, port, id: m[2]!, address: `127.0.0.1:${port}`, exited });
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`worker daemon exited before it was ready (code ${code}, signal ${signal})\n${stderr}`));
    });
  });
}

/** Stops a daemon: SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
export async function stopDaemon(d: LocalDaemon, graceMs = 5000): Promise<void> {
  if (d.child.exitCode !== null || d.child.signalCode !== null) return;
  d.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([d.exited, new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
  clearTimeout(timer);
  if (d.child.exitCode === null && d.child.signalCode === null) {
    d.child.kill('SIGKILL');
    await d.exited;
  }
}
