/**
 * Pinned TLS certificates of managers (`~/.config/taskfarm/known_managers`, like SSH's known_hosts):
 * one `host:port SHA256-fingerprint` line per manager, pinned on first use; a changed certificate is
 * refused with a {@link CertificateMismatchError}.
 */
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { CertificateMismatchError } from '../errors.js';

/** `$XDG_CONFIG_HOME/taskfarm/<name>` or `~/.config/taskfarm/<name>`. */
export function configPath(name: string): string {
  const base = process.env['XDG_CONFIG_HOME'];
  return join(base !== undefined && base.length > 0 ? base : join(homedir(), '.config'), 'taskfarm', name);
}

/** Where the pins are kept by default. */
export function defaultKnownManagersPath(): string {
  return configPath('known_managers');
}

/** The fingerprint pinned for `address` in `file`, or undefined. */
export function pinnedFingerprint(file: string, address: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const [addr, fp] = line.trim().split(/\s+/);
    if (addr === address && fp !== undefined) return fp.toUpperCase();
  }
  return undefined;
}

/**
 * Checks `fingerprint` against the pin for `address`: pins it when there is none (returns true:
 * first use), returns false when it matches, throws a {@link CertificateMismatchError} otherwise.
 */
export function checkOrPin(file: string, address: string, fingerprint: string): boolean {
  const fp = fingerprint.toUpperCase();
  const pinned = pinnedFingerprint(file, address);
  if (pinned === undefined) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    appendFileSync(file, `${address} ${fp}\n`, { mode: 0o600 });
    return true;
  }
  if (pinned !== fp) throw new CertificateMismatchError(address, pinned, fp, file);
  return false;
}
