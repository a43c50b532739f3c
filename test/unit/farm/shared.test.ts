import { describe, expect, it } from 'vitest';
import { InvalidOptionError } from '../../../src/errors.js';
import { prepareShared, sharedFile, sharedValue } from '../../../src/farm/shared.js';

describe('sharedValue: shared data hashed once', () => {
  it('prepares exactly as the raw value would (same kind, hash, size, content)', async () => {
    const bytes = new Uint8Array([1, 2, 3, 250]);
    const value = { n: 3, xs: [1.5, 2.5] };
    const raw = await prepareShared({ bytes, value });
    const snap = await prepareShared({ bytes: sharedValue(bytes), value: sharedValue(value) });
    expect(snap.map(({ name, kind, hash, size }) => ({ name, kind, hash, size }))).toEqual(
      raw.map(({ name, kind, hash, size }) => ({ name, kind, hash, size })),
    );
    expect([...snap[0]!.bytes!]).toEqual([...raw[0]!.bytes!]);
    expect([...snap[1]!.bytes!]).toEqual([...raw[1]!.bytes!]);
  });

  it('is a snapshot: changing the original afterwards changes neither content nor hash', async () => {
    const bytes = new Uint8Array([1, 2, 3]);
    const snap = sharedValue(bytes);
    const before = snap.hash;
    bytes[0] = 9;
    const [p] = await prepareShared({ d: snap });
    expect(p!.hash).toBe(before);
    expect([...p!.bytes!]).toEqual([1, 2, 3]);
    expect(sharedValue(snap)).toBe(snap);
  });

  it('refuses what cannot be sent, and files (they are shared by path already)', () => {
    expect(() => sharedValue({ f: () => 1 })).toThrow(InvalidOptionError);
    expect(() => sharedValue(sharedFile('package.json'))).toThrow(InvalidOptionError);
  });
});
