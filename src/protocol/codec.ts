const cloneablePrototypes = new Set<object | null>([
  null,
  Object.prototype,
  Array.prototype,
  Map.prototype,
  Set.prototype,
  Date.prototype,
  RegExp.prototype,
  ArrayBuffer.prototype,
  DataView.prototype,
  Buffer.prototype,
  Boolean.prototype,
  Number.prototype,
  String.prototype,
  BigInt.prototype,
  Error.prototype,
  EvalError.prototype,
  RangeError.prototype,
  ReferenceError.prototype,
  SyntaxError.prototype,
  TypeError.prototype,
  URIError.prototype,
  ...[
    Int8Array,
    Uint8Array,
    Uint8ClampedArray,
    Int16Array,
    Uint16Array,
    Int32Array,
    Uint32Array,
    Float32Array,
    Float64Array,
    BigInt64Array,
    BigUint64Array,
  ].map((c) => c.prototype),
]);
if (typeof SharedArrayBuffer !== 'undefined') cloneablePrototypes.add(SharedArrayBuffer.prototype);

/**
 * Why `value` cannot be sent as structured-clone data, as `[path, what]`, or `undefined` when it can.
 * Class instances are refused because v8 would silently drop their prototype and methods.
 */
export function findUnsendable(value: unknown, path = 'input', seen = new Set<object>()): [string, string] | undefined {
  switch (typeof value) {
    case 'function':
      return [path, `a function${value.name ? ` (${value.name})` : ''}`];
    case 'symbol':
      return [path, 'a symbol'];
    case 'object': {
      if (value === null || seen.has(value)) return undefined;
      seen.add(value);
      const proto: object | null = Object.getPrototypeOf(value) as object | null;
      if (!cloneablePrototypes.has(proto)) {
        const name = (proto as { constructor?: { name?: string } } | null)?.constructor?.name ?? 'unknown';
        return [path, `an instance of class ${name} (its prototype and methods would be lost)`];
      }
      if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer || value instanceof Date || value instanceof RegExp) return undefined;
      if (value instanceof Map) {
        let i = 0;
        for (const [k, v] of value) {
          const bad = findUnsendable(k, `${path}.<map key ${i}>`, seen) ?? findUnsendable(v, `${path}.get(<key ${i}>)`, seen);
          if (bad !== undefined) return bad;
          i++;
        }
        return undefined;
      }
      if (value instanceof Set) {
        let i = 0;
        for (const v of value) {
          const bad = findUnsendable(v, `${path}.<set item ${i}>`, seen);
          if (bad !== undefined) return bad;
          i++;
        }
        return undefined;
      }
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const bad = findUnsendable(value[i], `${path}[${i}]`, seen);
          if (bad !== undefined) return bad;
        }
        return undefined;
      }
      for (const key of Object.keys(value)) {
        const bad = findUnsendable(
          (value as Record<string, unknown>)[key],
          /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`,
          seen,
        );
        if (bad !== undefined) return bad;
      }
      return undefined;
    }
    default:
      return undefined;
  }
}
