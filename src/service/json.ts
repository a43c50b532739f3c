/** What the service turns into JSON text: outputs, and failures as the store records them. */
import { FarmError, TaskCrashedError, TaskError, TaskTimeoutError } from '../errors.js';
import type { TaskFailure } from '../store/index.js';

function replacer(_key: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Map) return Object.fromEntries(v);
  if (v instanceof Set) return [...v];
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<number>);
  return v;
}

/**
 * A stage's output as JSON text, mapped exactly as `taskfarm run` prints it: JSON has no Map, Set,
 * bigint or typed arrays, so a Map becomes an object, a Set and a typed array an array, a bigint its
 * decimal string; `undefined` becomes `null` (and non-finite numbers `null`, as JSON.stringify does).
 * Throws (a TypeError) for a value JSON cannot hold at all, such as a cyclic structure.
 */
export function toJsonText(value: unknown): string {
  // The common case of a number or a string needs no replacer.
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : 'null';
  if (typeof value === 'string') return JSON.stringify(value);
  return JSON.stringify(value, replacer) ?? 'null';
}

/**
 * A task failure as the store records it. A stage that threw keeps its own error's name, message,
 * stack and `code`; the farm's verdicts (crashed its thread, timed out) and any other error keep the
 * farm error's name, message and code, with the worker's stack when there is one.
 */
export function failureOf(error: unknown, attempts?: number): TaskFailure {
  if (error instanceof TaskError && !(error instanceof TaskCrashedError) && !(error instanceof TaskTimeoutError)) {
    return { name: error.remote.name, message: error.remote.message, stack: error.remote.stack, code: error.remote.code, attempts: attempts ?? error.attempts };
  }
  if (error instanceof TaskError)
    return { name: error.name, message: error.message, stack: error.remoteStack, code: error.code, attempts: attempts ?? error.attempts };
  if (error instanceof FarmError) return { name: error.name, message: error.message, stack: error.stack ?? '', code: error.code, attempts: attempts ?? 1 };
  if (error instanceof Error) return { name: error.name, message: error.message, stack: error.stack ?? '', code: '', attempts: attempts ?? 1 };
  return { name: 'Error', message: String(error), stack: '', code: '', attempts: attempts ?? 1 };
}
