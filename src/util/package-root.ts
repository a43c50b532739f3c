import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The taskfarm package's root folder (where its package.json is), found from this file's location. */
export function packageRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'proto', 'taskfarm.proto'))) return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error('taskfarm: cannot find the package root (package.json next to proto/taskfarm.proto)');
    dir = up;
  }
}

/** Absolute path of a file shipped with the package, e.g. `proto/taskfarm.proto`. */
export function findPackageFile(relative: string): string {
  return join(packageRoot(), relative);
}
