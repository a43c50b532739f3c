import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Points every cache (local runs, daemons) at a temporary folder for the whole test run, and gives
 * the run a farm key of its own: daemons that tests start inherit it from the environment, and so do
 * clients. Tests about keys pass their own explicitly.
 */
export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'taskfarm-tests-cache-'));
  process.env['XDG_CACHE_HOME'] = dir;
  process.env['XDG_CONFIG_HOME'] = join(dir, 'config');
  process.env['TASKFARM_KEY'] = randomBytes(32).toString('base64url');
  return () => rmSync(dir, { recursive: true, force: true });
}
