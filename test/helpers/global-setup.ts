import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Points every cache (local runs, daemons) at a temporary folder for the whole test run. */
export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'taskfarm-tests-cache-'));
  process.env['XDG_CACHE_HOME'] = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
