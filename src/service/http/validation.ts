/**
 * Request validation: one Ajv for bodies (no type coercion: `"priority": "5"` is a wrong type) and
 * one for the query string and path (strings coerced to the schema's integers and booleans), and
 * the translation of Ajv's first error into an {@link InvalidRequestError} whose message names the
 * field in the house style: ``Expected `priority` to be an integer, got `1.5` (number)``.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { InvalidRequestError } from '../errors.js';

const common = { allErrors: false, verbose: true, strict: false, useDefaults: true } as const;
const bodyAjv = new Ajv({ ...common, coerceTypes: false, removeAdditional: false });
const queryAjv = new Ajv({ ...common, coerceTypes: true, removeAdditional: false });
for (const ajv of [bodyAjv, queryAjv]) ajv.addFormat('date-time', true);

/** Compiles a schema for one part of a request (Fastify's validator compiler). */
export function compileFor(part: string | undefined, schema: object): ValidateFunction {
  return (part === 'body' ? bodyAjv : queryAjv).compile(schema);
}

function show(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  if (text.length > 60) text = text.slice(0, 57) + '...';
  const type = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  return `\`${text}\` (${type})`;
}

/** `/stages/1/source` → `stages[1].source` (with `prefix` for query and path parts). */
export function jsonPath(instancePath: string, prefix = ''): string {
  let out = prefix;
  for (const raw of instancePath.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (/^\d+$/.test(seg)) out += `[${seg}]`;
    else out += out.length === 0 ? seg : `.${seg}`;
  }
  return out;
}

function join(path: string, key: string): string {
  return path.length === 0 ? key : `${path}.${key}`;
}

const article = (t: string): string => (/^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`);

/** Turns Ajv's first error on a request part into a message and a field. */
export function describeAjvError(e: ErrorObject, part: string): { field: string; message: string } {
  const prefix = part === 'body' ? '' : part === 'querystring' ? 'query.' : part === 'params' ? 'path.' : `${part}.`;
  const base = jsonPath(e.instancePath, prefix.slice(0, -1));
  const at = base.length === 0 ? 'the body' : `\`${base}\``;
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required': {
      const field = join(base, String(p['missingProperty']));
      return { field, message: `Expected \`${field}\` to be given (it is required)` };
    }
    case 'additionalProperties': {
      const field = join(base, String(p['additionalProperty']));
      return { field, message: `Unknown field \`${field}\`: remove it (check its spelling against docs/API.md)` };
    }
    case 'type': {
      const t = String(p['type']).split(',').map(article).join(' or ');
      return { field: base, message: `Expected ${at} to be ${t}, got ${show(e.data)}` };
    }
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum': {
      const op = { minimum: '≥', maximum: '≤', exclusiveMinimum: '>', exclusiveMaximum: '<' }[e.keyword];
      return { field: base, message: `Expected ${at} to be ${op} ${String(p['limit'])}, got ${show(e.data)}` };
    }
    case 'enum':
      return {
        field: base,
        message: `Expected ${at} to be one of ${(p['allowedValues'] as unknown[]).map((v) => JSON.stringify(v)).join(', ')}, got ${show(e.data)}`,
      };
    case 'pattern':
      return { field: base, message: `Expected ${at} to match ${String(p['pattern'])}, got ${show(e.data)}` };
    case 'minLength':
    case 'maxLength':
      return { field: base, message: `Expected ${at} to have ${e.keyword === 'minLength' ? 'at least' : 'at most'} ${String(p['limit'])} characters` };
    case 'minItems':
    case 'maxItems':
      return { field: base, message: `Expected ${at} to have ${e.keyword === 'minItems' ? 'at least' : 'at most'} ${String(p['limit'])} items` };
    case 'oneOf':
      if (/^\/stages\/\d+$/.test(e.instancePath)) return { field: base, message: `Expected ${at} to have exactly one of \`bundle\` or \`source\`` };
      return { field: base, message: `Expected ${at} to match exactly one of its allowed forms` };
    default:
      return { field: base, message: `Invalid ${at}: ${e.message ?? e.keyword}` };
  }
}

/** The InvalidRequestError for a failed validation of one request part. */
export function validationError(errors: readonly ErrorObject[], part: string): InvalidRequestError {
  const first = errors[0];
  if (first === undefined) return new InvalidRequestError(`Invalid ${part}`);
  const { field, message } = describeAjvError(first, part);
  return new InvalidRequestError(message, field.length > 0 ? { field } : {});
}

/** Validates a value against a body schema (the NDJSON description line), throwing an InvalidRequestError. */
export function validateBody<T>(validate: ValidateFunction, value: unknown): T {
  if (!validate(value)) throw validationError(validate.errors ?? [], 'body');
  return value as T;
}
