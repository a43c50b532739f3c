/**
 * The manager's NDJSON splitter (ndjsonBatches): the same lines and line numbers however the body
 * is cut into chunks (lines, CRLF and multi-byte characters split across chunks), and a line over
 * the limit refused as it grows.
 */
import { describe, expect, it } from 'vitest';
import { FarmErrorCode } from '../../../src/errors.js';
import { ndjsonBatches } from '../../../src/service/http/ndjson.js';

async function lines(chunks: readonly Buffer[], max = 1 << 20): Promise<{ text: string; line: number }[]> {
  const out: { text: string; line: number }[] = [];
  async function* source(): AsyncGenerator<Buffer> {
    yield* chunks;
  }
  for await (const b of ndjsonBatches(source(), max)) b.texts.forEach((text, k) => out.push({ text, line: b.line + k }));
  return out;
}

/** `body` cut into pieces of `size` bytes. */
function cut(body: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) out.push(body.subarray(i, i + size));
  return out;
}

describe('ndjsonBatches', () => {
  const text = '{"d":1}\n1\r\n\n  \n"é😀ü"\n[1,2]\n"tail"';
  const body = Buffer.from(text, 'utf8');
  const expected = text.split('\n').map((t, i) => ({ text: t, line: i + 1 }));

  it('gives every line as sent, numbered from 1, for any chunking (multi-byte characters and CRLF across chunks)', async () => {
    for (let size = 1; size <= body.length; size++) expect(await lines(cut(body, size)), `chunks of ${size} bytes`).toEqual(expected);
  });

  it('a final newline adds no line; an empty body has none', async () => {
    expect(await lines([Buffer.from('1\n2\n')])).toEqual([
      { text: '1', line: 1 },
      { text: '2', line: 2 },
    ]);
    expect(await lines([])).toEqual([]);
  });

  it('refuses a line over the limit with its number, also while it grows without a newline', async () => {
    await expect(lines([Buffer.from('1\n22222\n3\n')], 4)).rejects.toMatchObject({ code: FarmErrorCode.TOO_LARGE, line: 2 });
    await expect(lines([Buffer.from('1\n2'), Buffer.from('222'), Buffer.from('2222')], 4)).rejects.toMatchObject({ code: FarmErrorCode.TOO_LARGE, line: 2 });
    // Bytes, not characters: 'éé' is 4 bytes, 'ééé' 6.
    expect(await lines([Buffer.from('éé\n')], 4)).toEqual([{ text: 'éé', line: 1 }]);
    await expect(lines([Buffer.from('ééé\n')], 4)).rejects.toMatchObject({ code: FarmErrorCode.TOO_LARGE, line: 1 });
  });
});
