/** Code bundles as both ends see them: ES modules named by the sha256 of their bytes. */
import { createHash } from 'node:crypto';

/** Marker on the first line of a bundle made from an inline function. */
export const INLINE_BUNDLE_MARKER = '// taskfarm:inline';

/** sha256 of `code`, hex: a bundle's name. */
export function bundleHash(code: Uint8Array | string): string {
  return createHash('sha256').update(code).digest('hex');
}
