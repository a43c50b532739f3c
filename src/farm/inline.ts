/**
 * Inline stages: a function (or class) given directly in the program is sent to workers as source
 * text. It runs there without its enclosing scope, so it must be self-contained; this module checks
 * that statically before anything runs.
 */
import { parse } from 'acorn';
import { analyze } from 'eslint-scope';
import { runInNewContext } from 'node:vm';
import { InvalidStageError } from '../errors.js';
import type { InlineStage, ProcessClass } from '../skeleton/index.js';
import { INLINE_BUNDLE_MARKER } from '../protocol/index.js';

// Globals a worker thread has: the language's own plus Node's.
const NODE_GLOBALS = [
  'process',
  'Buffer',
  'console',
  'global',
  'globalThis',
  'setTimeout',
  'clearTimeout',
  'setInterval',
  'clearInterval',
  'setImmediate',
  'clearImmediate',
  'queueMicrotask',
  'structuredClone',
  'URL',
  'URLSearchParams',
  'TextEncoder',
  'TextDecoder',
  'AbortController',
  'AbortSignal',
  'EventTarget',
  'Event',
  'MessageChannel',
  'MessagePort',
  'MessageEvent',
  'BroadcastChannel',
  'Blob',
  'File',
  'atob',
  'btoa',
  'performance',
  'fetch',
  'Request',
  'Response',
  'Headers',
  'FormData',
  'crypto',
  'Crypto',
  'CryptoKey',
  'SubtleCrypto',
  'WebAssembly',
  'navigator',
  'DOMException',
  'ReadableStream',
  'WritableStream',
  'TransformStream',
  'CompressionStream',
  'DecompressionStream',
  'WebSocket',
  'CustomEvent',
  'PerformanceEntry',
  'PerformanceMark',
  'PerformanceMeasure',
  'PerformanceObserver',
  'undefined',
  'NaN',
  'Infinity',
  'arguments',
];

let knownGlobals: Set<string> | undefined;
function globals(): Set<string> {
  knownGlobals ??= new Set<string>([...(runInNewContext('Object.getOwnPropertyNames(globalThis)') as string[]), ...NODE_GLOBALS]);
  return knownGlobals;
}

function parseModule(text: string): object {
  return parse(text, { ecmaVersion: 'latest', sourceType: 'module', allowAwaitOutsideFunction: true, ranges: true });
}

/**
 * Turns an inline stage into an ES module whose default export is the stage, or throws
 * {@link InvalidStageError} when it cannot be sent (native/bound function, or not self-contained).
 */
export function inlineStageModule(fn: InlineStage | ProcessClass, stageIndex: number): string {
  const source = Function.prototype.toString.call(fn);
  const label = fn.name ? `\`${fn.name}\`` : 'an anonymous function';
  if (/\{\s*\[native code\]\s*\}\s*$/.test(source)) {
    throw new InvalidStageError(
      `Stage ${stageIndex} (${label}) is a native or bound function; its source cannot be sent to a worker. ` +
        'Pass a plain function written in your program, or a module path.',
      { stageIndex },
    );
  }
  const candidates = [`export default (${source}\n);\n`, `export default Object.values({ ${source}\n })[0];\n`];
  let ast: object | undefined;
  let text = '';
  let parseError: unknown;
  for (const candidate of candidates) {
    try {
      ast = parseModule(candidate);
      text = candidate;
      break;
    } catch (err) {
      parseError ??= err;
    }
  }
  if (ast === undefined) {
    throw new InvalidStageError(
      `Stage ${stageIndex} (${label}): its source could not be parsed for sending to workers (${
        parseError instanceof Error ? parseError.message : String(parseError)
      }). Make it a module stage instead.`,
      { stageIndex, cause: parseError },
    );
  }
  const free = new Set<string>();
  let through: readonly { identifier: { name: string } }[] = [];
  try {
    through = analyze(ast, { ecmaVersion: 2022, sourceType: 'module' }).globalScope?.through ?? [];
  } catch {
    // Syntax newer than the analyzer knows: skip the static check; the worker still adds a
    // self-containment hint to any ReferenceError.
  }
  for (const ref of through) {
    if (!globals().has(ref.identifier.name)) free.add(ref.identifier.name);
  }
  if (free.size > 0) {
    const names = [...free].map((n) => `\`${n}\``).join(', ');
    throw new InvalidStageError(
      `Stage ${stageIndex} (${label}) is not self-contained: it uses ${names} from its enclosing scope. ` +
        'Inline stages must be self-contained, because they are sent to workers as source and run there without ' +
        'the scope they were written in: move what they use inside the function, pass it in the input, or make the ' +
        'stage a module (a file whose default export is the stage; its imports are bundled).',
      { stageIndex },
    );
  }
  return `${INLINE_BUNDLE_MARKER}\n${text}`;
}
