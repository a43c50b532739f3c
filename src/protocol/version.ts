import { readFileSync } from 'node:fs';
import { findPackageFile } from '../util/package-root.js';

/**
 * Version of the wire protocol. Bumped on any incompatible change to proto/taskfarm.proto or to
 * the meaning of its messages; checked on Recruit.
 */
export const PROTOCOL_VERSION = 3;

/** The taskfarm package version (from package.json). */
export const PACKAGE_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(findPackageFile('package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0';
  }
})();
