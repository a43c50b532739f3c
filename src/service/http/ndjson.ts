/**
 * Streaming NDJSON: splits a byte stream into lines without ever holding more than one line (plus
 * one chunk) in memory, refusing a line over its limit as it grows (not after it was buffered).
 */
import { TooLargeError } from '../errors.js';

/** One non-blank line of an NDJSON body with its 1-based line number. */
export interface NdjsonLine {
  readonly text: string;
  readonly line: number;
}

/**
 * Yields every non-blank line of `source` (`\n` separated, a trailing `\r` dropped, a final newline
 * optional). Throws a {@link TooLargeError} naming the line as soon as one exceeds `maxLineBytes`.
 */
export async function* ndjsonLines(source: AsyncIterable<Buffer | string>, maxLineBytes: number): AsyncGenerator<NdjsonLine> {
  let carry: Buffer[] = [];
  let carryBytes = 0;
  let line = 0;
  const tooLong = (): TooLargeError =>
    new TooLargeError(`Line ${line + 1} is longer than the limit of ${maxLineBytes} bytes (the manager's --max-line)`, { limit: maxLineBytes, line: line + 1 });
  const emit = (buf: Buffer): NdjsonLine | undefined => {
    line++;
    let end = buf.length;
    if (end > 0 && buf[end - 1] === 0x0d) end--;
    const text = buf.toString('utf8', 0, end);
    return text.trim().length === 0 ? undefined : { text, line };
  };
  for await (const raw of source) {
    const chunk = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      let buf: Buffer;
      if (carryBytes > 0) {
        if (carryBytes + nl - start > maxLineBytes) throw tooLong();
        carry.push(chunk.subarray(start, nl));
        buf = Buffer.concat(carry);
        carry = [];
        carryBytes = 0;
      } else {
        if (nl - start > maxLineBytes) throw tooLong();
        buf = chunk.subarray(start, nl);
      }
      const out = emit(buf);
      if (out !== undefined) yield out;
      start = nl + 1;
    }
    if (start < chunk.length) {
      carryBytes += chunk.length - start;
      if (carryBytes > maxLineBytes) throw tooLong();
      // Copy: the chunk's buffer may be reused by the stream after we return it.
      carry.push(Buffer.from(chunk.subarray(start)));
    }
  }
  if (carryBytes > 0) {
    const out = emit(Buffer.concat(carry));
    if (out !== undefined) yield out;
  }
}

/** The lines of an NDJSON body in batches: `texts[k]` is line `line + k` (see {@link ndjsonBatches}). */
export interface NdjsonBatch {
  readonly texts: string[];
  readonly line: number;
}

/**
 * The lines of `source` (`\n` separated, a final newline optional) in one batch per chunk: each
 * chunk is decoded once up to its last newline and split there, so a line costs a string slice, not
 * a Buffer, a decode and an object of its own. Texts are as sent (a trailing `\r`, blank lines
 * included: the caller trims, skips blanks and counts them as lines). Throws a {@link TooLargeError}
 * naming the line as soon as one exceeds `maxLineBytes` (a line still without its newline is
 * refused as it grows, never buffered past the limit).
 */
export async function* ndjsonBatches(source: AsyncIterable<Buffer | string>, maxLineBytes: number): AsyncGenerator<NdjsonBatch> {
  let carry: Buffer[] = [];
  let carryBytes = 0;
  let line = 1;
  const tooLong = (at: number): TooLargeError =>
    new TooLargeError(`Line ${at} is longer than the limit of ${maxLineBytes} bytes (the manager's --max-line)`, { limit: maxLineBytes, line: at });
  const split = (text: string): NdjsonBatch => {
    const texts = text.split('\n');
    for (let k = 0; k < texts.length; k++) {
      const t = texts[k]!;
      // A UTF-16 unit is at least one UTF-8 byte and at most three: count bytes only where it matters.
      if (t.length * 3 > maxLineBytes && (t.length > maxLineBytes || Buffer.byteLength(t) > maxLineBytes)) throw tooLong(line + k);
    }
    const batch = { texts, line };
    line += texts.length;
    return batch;
  };
  for await (const raw of source) {
    const chunk = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
    const last = chunk.lastIndexOf(0x0a);
    if (last < 0) {
      carryBytes += chunk.length;
      if (carryBytes > maxLineBytes) throw tooLong(line);
      // Copy: the chunk's buffer may be reused by the stream after we return it.
      carry.push(Buffer.from(chunk));
      continue;
    }
    // A newline byte never occurs inside a multi-byte UTF-8 sequence: decoding up to it is exact.
    const head = carryBytes > 0 ? Buffer.concat([...carry, chunk.subarray(0, last)]) : chunk.subarray(0, last);
    carry = [];
    carryBytes = 0;
    yield split(head.toString('utf8'));
    if (last + 1 < chunk.length) {
      carryBytes = chunk.length - last - 1;
      if (carryBytes > maxLineBytes) throw tooLong(line);
      carry.push(Buffer.from(chunk.subarray(last + 1)));
    }
  }
  if (carryBytes > 0) yield split(Buffer.concat(carry).toString('utf8'));
}
