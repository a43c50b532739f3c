/**
 * `joinNegativeValues` (client/args.ts): negative numbers given as the value of a flag that takes
 * one (`--target -5`) reach parseArgs as `--target=-5`; nothing else is touched.
 */
import { parseArgs } from 'node:util';
import { describe, expect, it } from 'vitest';
import { joinNegativeValues } from '../../dist/client/args.js';

const options = { target: { type: 'string' }, priority: { type: 'string', short: 'p' }, wait: { type: 'boolean' } } as const;

describe('joinNegativeValues', () => {
  it('joins negative numbers to the string flags before them, in every spelling', () => {
    expect(joinNegativeValues(['--target', '-5', '-p', '-1', '--priority', '-.5', '--target', '-1e-3', '--target', '-Infinity'], options)).toEqual([
      '--target=-5',
      '--priority=-1',
      '--priority=-.5',
      '--target=-1e-3',
      '--target=-Infinity',
    ]);
    const { values } = parseArgs({ args: joinNegativeValues(['--target', '-5', '-p', '-2'], options), options, strict: true });
    expect(values).toEqual({ target: '-5', priority: '-2' });
  });

  it('leaves alone what is not a negative number after a string flag, and everything after --', () => {
    const argv = ['--wait', '-5', '--target', '-x', '--target', '3', 'pos', '--', '--target', '-5'];
    expect(joinNegativeValues(argv, options)).toEqual(argv);
    // `-x` stays a flag: parseArgs still reports the missing value instead of taking it.
    expect(() => parseArgs({ args: joinNegativeValues(['--target', '-x'], options), options, strict: true })).toThrow(/--target/);
  });
});
