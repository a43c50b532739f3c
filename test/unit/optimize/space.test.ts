import { describe, expect, it } from 'vitest';
import { resolveSpace, type Space } from '../../../src/optimize/index.js';
import { InvalidOptionError } from '../../../src/errors.js';

describe('resolveSpace', () => {
  it('resolves bounds, default names, integers (rounded inwards) and x0', () => {
    const s = resolveSpace({
      bounds: [
        [0, 1],
        [0.5, 7.5],
        [-2, 2],
      ],
      integer: [1],
      x0: [0.25, 3.4, 0],
    });
    expect(s.dimension).toBe(3);
    expect(s.names).toEqual(['x[0]', 'x[1]', 'x[2]']);
    expect(s.integer).toEqual([false, true, false]);
    expect(s.lower).toEqual([0, 1, -2]);
    expect(s.upper).toEqual([1, 7, 2]);
    expect(s.x0).toEqual([0.25, 3, 0]);
    expect(Object.isFrozen(s)).toBe(true);
  });

  it('takes integer parameters by name', () => {
    const s = resolveSpace({
      bounds: [
        [0, 1],
        [0, 9],
      ],
      names: ['a', 'order'],
      integer: ['order'],
    });
    expect(s.integer).toEqual([false, true]);
  });

  const bad: [string, unknown, string][] = [
    ['no bounds', {}, '`space.bounds`'],
    ['empty bounds', { bounds: [] }, '`space.bounds`'],
    [
      'lo > hi',
      {
        bounds: [
          [0, 1],
          [5, 1],
        ],
      },
      '`space.bounds[1]` to be `[lo, hi]` with lo < hi, got `[5,1]`',
    ],
    ['lo = hi', { bounds: [[2, 2]] }, 'lo < hi'],
    [
      'lo > hi, named',
      {
        bounds: [
          [0, 1],
          [5, 1],
        ],
        names: ['a', 'width'],
      },
      '`space.bounds[1] (width)`',
    ],
    ['not a pair', { bounds: [[0, 1, 2]] }, '`space.bounds[0]` to be `[lo, hi]`'],
    ['infinite bound', { bounds: [[0, Infinity]] }, 'finite numbers'],
    ['NaN bound', { bounds: [[Number.NaN, 1]] }, 'finite numbers'],
    ['string bound', { bounds: [['0', 1]] }, 'finite numbers'],
    [
      'too few names',
      {
        bounds: [
          [0, 1],
          [0, 1],
        ],
        names: ['a'],
      },
      '`space.names` to be an array of 2 names',
    ],
    [
      'duplicate names',
      {
        bounds: [
          [0, 1],
          [0, 1],
        ],
        names: ['a', 'a'],
      },
      '`space.names[1]` to be a name not used by another parameter',
    ],
    ['empty name', { bounds: [[0, 1]], names: [''] }, '`space.names[0]` to be a non-empty string'],
    ['unknown integer name', { bounds: [[0, 1]], integer: ['k'] }, '`space.integer[0]`'],
    ['integer index out of range', { bounds: [[0, 1]], integer: [3] }, '`space.integer[0]`'],
    ['integer without an integer inside', { bounds: [[0.2, 0.8]], integer: [0] }, 'at least one integer'],
    [
      'x0 of the wrong length',
      {
        bounds: [
          [0, 1],
          [0, 1],
        ],
        x0: [0.5],
      },
      '`space.x0` to be an array of 2 numbers',
    ],
    [
      'x0 outside the bounds',
      {
        bounds: [
          [0, 1],
          [0, 10],
        ],
        names: ['a', 'b'],
        x0: [0.5, 11],
      },
      '`space.x0[1] (b)` to be within its bounds [0, 10], got `11`',
    ],
    ['x0 not finite', { bounds: [[0, 1]], x0: [Number.NaN] }, '`space.x0[0]` to be a finite number'],
  ];
  it.each(bad)('refuses %s with a message naming the field', (_what, space, message) => {
    expect(() => resolveSpace(space as Space)).toThrow(InvalidOptionError);
    expect(() => resolveSpace(space as Space)).toThrow(message);
  });
});
