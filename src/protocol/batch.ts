/**
 * Packed batches: many tasks' inputs, or many tasks' outcomes, in one v8-serialized value, so that
 * a batch costs one serialization, one message and one copy however many tasks it carries.
 *
 *   inputs   = [input_0, input_1, …]                         (in the batch's seq order)
 *   outcomes = [flags: Uint8Array, values: unknown[]]        flags[i] = 0: values[i] is the output
 *                                                             flags[i] = 1: values[i] is a RemoteError
 */
import { deserialize, serialize } from 'node:v8';
import type { RemoteErrorMessage } from './messages.js';

/** Tasks to run: their seqs and their inputs, packed in the same order (see the module comment). */
export interface ExecBatch {
  readonly seqs: Uint32Array;
  readonly inputs: Uint8Array;
}

/** Outcomes of some tasks: seqs, packed outcomes in the same order, and run times in ms. */
export interface ExecResults {
  readonly seqs: Uint32Array;
  readonly outcomes: Uint8Array;
  readonly durations: Float32Array;
}

/** A fresh Uint8Array that owns its whole ArrayBuffer (safe to transfer to a thread). */
export function ownBytes(bytes: Uint8Array): Uint8Array {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer) return bytes;
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy;
}

/** Serializes a batch's inputs. Throws (DataCloneError) when one of them cannot be cloned. */
export function encodeInputs(inputs: readonly unknown[]): Uint8Array {
  return ownBytes(serialize(inputs));
}

/** Decodes a batch's inputs; throws unless it is an array of `count` values. */
export function decodeInputs(bytes: Uint8Array, count: number): unknown[] {
  const v: unknown = deserialize(bytes);
  if (!Array.isArray(v) || v.length !== count)
    throw new TypeError(`a batch of ${count} inputs decoded to ${Array.isArray(v) ? `${v.length} values` : typeof v}`);
  return v;
}

/** Serializes outcomes; throws (DataCloneError) when an output cannot be cloned. */
export function encodeOutcomes(flags: Uint8Array, values: readonly unknown[]): Uint8Array {
  return ownBytes(serialize([flags, values]));
}

/** Decodes outcomes into flags and values; throws unless they hold `count` entries. */
export function decodeOutcomes(bytes: Uint8Array, count: number): { flags: Uint8Array; values: unknown[] } {
  const v: unknown = deserialize(bytes);
  if (!Array.isArray(v) || v.length !== 2) throw new TypeError('outcomes are not [flags, values]');
  const [flags, values] = v as [unknown, unknown];
  if (!(flags instanceof Uint8Array) || !Array.isArray(values) || flags.length !== count || values.length !== count) {
    throw new TypeError(`outcomes do not hold ${count} entries`);
  }
  return { flags, values };
}

/** Outcomes where every task failed with the same error (bad input, cancelled, …). */
export function encodeFailures(count: number, error: RemoteErrorMessage): Uint8Array {
  return encodeOutcomes(new Uint8Array(count).fill(1), new Array<unknown>(count).fill(error));
}

/** Reads one decoded outcome as a RemoteError, defensively (it came over the network). */
export function asRemoteError(v: unknown): RemoteErrorMessage {
  const o = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
  const s = (k: string): string => (typeof o[k] === 'string' ? o[k] : '');
  return { kind: s('kind') || 'thrown', name: s('name') || 'Error', message: s('message'), stack: s('stack'), code: s('code') };
}
