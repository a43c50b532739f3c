import { homedir } from 'node:os';
import { join } from 'node:path';

/** The default folder for taskfarm's caches (bundles, shared data, worker identity): `$XDG_CACHE_HOME/taskfarm` or `~/.cache/taskfarm`. */
export function defaultCacheDir(): string {
  const xdg = process.env['XDG_CACHE_HOME'];
  return join(xdg !== undefined && xdg.length > 0 ? xdg : join(homedir(), '.cache'), 'taskfarm');
}
