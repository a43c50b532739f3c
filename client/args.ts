import type { ParseArgsConfig } from 'node:util';

/**
 * Command-line helpers shared by the commands that parse flags with `node:util` `parseArgs`.
 */

/** A negative number as a flag's value: `-5`, `-0.5`, `-.5`, `-1e-3`, `-Infinity`. */
const NEGATIVE = /^-(?:\d|\.\d|Infinity$)/;

/**
 * `parseArgs` refuses a value that starts with a dash (`--target -5`: "argument is ambiguous").
 * Joins such a value to its flag (`--target=-5`) when the flag takes a value and the value is a
 * negative number, so that negative costs, priorities and bounds can be given either way.
 */
export function joinNegativeValues(argv: readonly string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  /** Each spelling of a flag that takes a value → its long form (`-p` → `--priority`: `-p=-1` would be read as "=-1"). */
  const takesValue = new Map<string, string>();
  for (const [name, o] of Object.entries(options)) {
    if (o.type !== 'string') continue;
    takesValue.set(`--${name}`, `--${name}`);
    if (o.short !== undefined) takesValue.set(`-${o.short}`, `--${name}`);
  }
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    const long = takesValue.get(a);
    if (long !== undefined && next !== undefined && NEGATIVE.test(next)) {
      out.push(`${long}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}
