import { InvalidOptionError } from '../errors.js';

function describe(value: unknown): string {
  let shown: string;
  try {
    // NaN and ±Infinity are shown as themselves (JSON would print them as null), also inside arrays and objects.
    const nonFinite = (_key: string, v: unknown): unknown => (typeof v === 'number' && !Number.isFinite(v) ? `\u0000${String(v)}\u0000` : v);
    shown =
      typeof value === 'bigint'
        ? `${value}n`
        : typeof value === 'function'
          ? 'function'
          : String(JSON.stringify(value, nonFinite)).replace(/"\\u0000([^"\\]*)\\u0000"/g, '$1');
  } catch {
    shown = String(value);
  }
  if (shown.length > 60) shown = shown.slice(0, 57) + '...';
  return `\`${shown}\` (${value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value})`;
}

/** Throws {@link InvalidOptionError} unless `value` is an integer in [min, max]. */
export function expectInteger(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new InvalidOptionError(`Expected \`${name}\` to be an integer ${range}, got ${describe(value)}`);
  }
}

/** Throws {@link InvalidOptionError} unless `value` is a finite number in [min, max]. */
export function expectNumber(name: string, value: unknown, min: number, max = Number.MAX_VALUE): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw new InvalidOptionError(`Expected \`${name}\` to be a number in [${min}, ${max}], got ${describe(value)}`);
  }
}

/** Throws {@link InvalidOptionError} unless `value` is a boolean. */
export function expectBoolean(name: string, value: unknown): asserts value is boolean {
  if (typeof value !== 'boolean') {
    throw new InvalidOptionError(`Expected \`${name}\` to be a boolean, got ${describe(value)}`);
  }
}

/** Throws {@link InvalidOptionError} unless `value` is a non-empty string. */
export function expectString(name: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidOptionError(`Expected \`${name}\` to be a non-empty string, got ${describe(value)}`);
  }
}

/** Parses `host:port` (IPv6 as `[addr]:port`). Throws {@link InvalidOptionError} when malformed. */
export function parseHostPort(name: string, text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InvalidOptionError(`Expected \`${name}\` entries to look like \`host:port\` (or \`[ipv6]:port\`), got ${describe(text)}`);
  }
  return { host: m[1] as string, port };
}

export { describe as describeValue };
