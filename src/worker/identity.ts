import { randomUUID } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A worker id held by this process, with the lock that keeps other daemons off it. */
export interface WorkerIdentity {
  readonly id: string;
  /** Gives the id back (removes the lock file). */
  release(): void;
}

/**
 * A worker id that is stable across restarts of the same daemon install: ids live in
 * `<stateDir>/ids/<hostname>/<slot>.id`, and a daemon takes the first slot whose lock (`<slot>.pid`) is
 * not held by a live process. So two daemons sharing a state folder get different ids, and each gets
 * its own id back when restarted. Slots are per hostname because a pid lock can only be checked on
 * the machine that wrote it: workstations sharing a home folder (NFS) must not share slots.
 */
export function acquireWorkerIdentity(stateDir: string, hostname: string): WorkerIdentity {
  const dir = join(stateDir, 'ids', hostname.replace(/[^\w.-]/g, '_').slice(0, 64) || 'host');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (let slot = 0; slot < 1024; slot++) {
    const lock = join(dir, `${slot}.pid`);
    let fd: number;
    try {
      fd = openSync(lock, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(readFileSafe(lock));
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) continue;
      rmSync(lock, { force: true });
      try {
        fd = openSync(lock, 'wx', 0o600);
      } catch {
        continue;
      }
    }
    writeSync(fd, String(process.pid));
    closeSync(fd);
    const idFile = join(dir, `${slot}.id`);
    let id = readFileSafe(idFile).trim();
    if (!/^[\w.-]{1,128}$/.test(id)) {
      const short = hostname.replace(/[^\w-]/g, '').slice(0, 40) || 'worker';
      id = `${short}-${randomUUID().slice(0, 8)}`;
      writeFileSync(idFile, id + '\n', { mode: 0o600 });
    }
    return {
      id,
      release: () => {
        if (readFileSafe(lock).trim() === String(process.pid)) rmSync(lock, { force: true });
      },
    };
  }
  throw new Error(`no free worker id slot in ${dir}`);
}

function readFileSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
