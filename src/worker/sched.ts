/**
 * Linux scheduling policy of the daemon's threads. The daemon's own thread (its event loop: gRPC,
 * heartbeats, results on their way to the client) runs as `SCHED_BATCH`, so that its wake-ups do not
 * preempt a task thread: it takes its turn at the scheduler's next decision instead, often while a
 * task runs rather than between two tasks. The task threads keep the normal policy. Node has no API
 * for `sched_setscheduler`, so this uses util-linux's `chrt` (present on every Debian-like system);
 * where it is missing or refused, nothing changes and the caller logs why. See docs/ARCHITECTURE.md.
 */
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';

/** `SCHED_BATCH` in /proc/…/stat's policy field. */
const SCHED_BATCH = 3;
const CHRT_TIMEOUT_MS = 5000;

/** The calling thread's scheduling policy number, or undefined where /proc cannot tell. */
function policyOf(): number | undefined {
  try {
    const stat = readFileSync('/proc/thread-self/stat', 'utf8');
    // Field 41 (policy) is the 39th after the command's closing parenthesis.
    const v = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]);
    return Number.isInteger(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Puts the calling process's main thread (its thread id is the pid) under `SCHED_BATCH`. Threads it
 * creates afterwards inherit the policy; task threads undo it with {@link leaveBatchPolicy}.
 * Linux only (the caller checks). Resolves with undefined when done, or with the reason it was not
 * (no `chrt`, refused).
 */
export function enterBatchPolicy(): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile('chrt', ['--batch', '--pid', '0', String(process.pid)], { timeout: CHRT_TIMEOUT_MS }, (err, _stdout, stderr) => {
      resolve(err === null ? undefined : `chrt --batch failed: ${stderr.trim() || err.message}`);
    });
  });
}

/**
 * In a task thread: if it inherited `SCHED_BATCH` from the daemon's thread, goes back to the normal
 * policy (`SCHED_OTHER`, the nice value kept). Returns undefined when done or not needed, else why not.
 */
export function leaveBatchPolicy(): string | undefined {
  if (policyOf() !== SCHED_BATCH) return undefined; // not Linux, or nothing inherited
  try {
    // /proc/thread-self links to PID/task/TID.
    const tid = readlinkSync('/proc/thread-self').split('/').pop() ?? '';
    execFileSync('chrt', ['--other', '--pid', '0', tid], { timeout: CHRT_TIMEOUT_MS, stdio: ['ignore', 'ignore', 'pipe'] });
    return undefined;
  } catch (err) {
    return `chrt --other failed: ${(err as Error).message}`;
  }
}
