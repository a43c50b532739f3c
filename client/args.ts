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
  const takesValue = new Set<string>();
  for (const [name, o] of Object.entries(options)) {
    if (o.type !== 'string') continue;
    takesValue.add(`--${name}`);
    if (o.short !== undefined) takesValue.add(`-${o.short}`);
  }
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    if (takesValue.has(a) && next !== undefined && NEGATIVE.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}
