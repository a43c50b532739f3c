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

/**
 * The same lines as {@link ndjsonLines}, as an iterator that splits each chunk into a batch at once
 * and then hands out its lines without a generator hop per line (a million-line submit spends its
 * time in the store, not in promise machinery). `check(line)` runs on each line as it is handed out
 * (it may throw to fail the stream).
 */
export function ndjsonLineIterator(
  source: AsyncIterable<Buffer | string>,
  maxLineBytes: number,
  check?: (line: NdjsonLine) => void,
): AsyncIterableIterator<NdjsonLine> {
  const chunks = source[Symbol.asyncIterator]();
  let batch: NdjsonLine[] = [];
  let at = 0;
  let carry: Buffer[] = [];
  let carryBytes = 0;
  let line = 0;
  let ended = false;
  const tooLong = (): TooLargeError =>
    new TooLargeError(`Line ${line + 1} is longer than the limit of ${maxLineBytes} bytes (the manager's --max-line)`, { limit: maxLineBytes, line: line + 1 });
  const push = (buf: Buffer): void => {
    line++;
    let end = buf.length;
    if (end > 0 && buf[end - 1] === 0x0d) end--;
    const text = buf.toString('utf8', 0, end);
    if (text.trim().length > 0) batch.push({ text, line });
  };
  const fill = async (): Promise<void> => {
    batch = [];
    at = 0;
    while (batch.length === 0 && !ended) {
      const next = await chunks.next();
      if (next.done === true) {
        ended = true;
        if (carryBytes > 0) push(Buffer.concat(carry));
        carry = [];
        carryBytes = 0;
        break;
      }
      const chunk = typeof next.value === 'string' ? Buffer.from(next.value, 'utf8') : next.value;
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf(0x0a, start);
        if (nl < 0) break;
        if (carryBytes > 0) {
          if (carryBytes + nl - start > maxLineBytes) throw tooLong();
          carry.push(chunk.subarray(start, nl));
          push(Buffer.concat(carry));
          carry = [];
          carryBytes = 0;
        } else {
          if (nl - start > maxLineBytes) throw tooLong();
          push(chunk.subarray(start, nl));
        }
        start = nl + 1;
      }
      if (start < chunk.length) {
        carryBytes += chunk.length - start;
        if (carryBytes > maxLineBytes) throw tooLong();
        carry.push(Buffer.from(chunk.subarray(start)));
      }
    }
  };
  const it: AsyncIterableIterator<NdjsonLine> = {
    async next(): Promise<IteratorResult<NdjsonLine>> {
      if (at >= batch.length) {
        if (ended) return { done: true, value: undefined };
        await fill();
        if (at >= batch.length) return { done: true, value: undefined };
      }
      const value = batch[at++]!;
      check?.(value);
      return { done: false, value };
    },
    async return(): Promise<IteratorResult<NdjsonLine>> {
      ended = true;
      batch = [];
      await chunks.return?.();
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]() {
      return it;
    },
  };
  return it;
}
