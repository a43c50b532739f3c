/**
 * What both backends share: argument validation, token and bundle hashing, row encodings.
 * Internal to src/store/.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { InvalidOptionError, JobNotFoundError } from '../errors.js';
import { describeValue, expectInteger } from '../util/validate.js';
import type {
  Bundle,
  ClaimedBatch,
  FailureEntry,
  JobError,
  JobKind,
  JobState,
  JsonValue,
  NewEvent,
  NewJob,
  OutputEntry,
  StageRef,
  StoreSummary,
  StoredJobOptions,
  TaskCounts,
  TaskFailure,
} from './types.js';
import { ACTIVE_JOB_STATES, JOB_STATES } from './types.js';

/** Version of the schema both backends create; a store with a newer one is refused. */
export const SCHEMA_VERSION = 1;
/** Rows per chunk of a chunked delete (each chunk one transaction). */
export const DELETE_CHUNK = 20_000;
/** Indices a `running` task page examines per call at most. */
export const RUNNING_SCAN_BUDGET = 50_000;
/** Job state of a submit that has not committed: invisible. */
export const SUBMITTING = 'submitting';
/** Job state of a job being removed: invisible. */
export const REMOVING = 'removing';

const HASH = /^[0-9a-f]{64}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** sha256 hex of UTF-8 text. */
export function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** A new job ticket: a random UUID (version 4). */
export function newTicket(): string {
  return randomUUID();
}

/** True when `ticket` looks like a ticket (lower-case UUID text); anything else is unknown without a query. */
export function isTicket(ticket: unknown): ticket is string {
  return typeof ticket === 'string' && UUID.test(ticket);
}

/** Throws {@link JobNotFoundError} unless `ticket` is well-formed (so garbage never reaches SQL). */
export function expectTicket(ticket: unknown): asserts ticket is string {
  if (!isTicket(ticket)) throw new JobNotFoundError(typeof ticket === 'string' ? ticket : String(ticket));
}

/** A new bearer token: `tf_` + 256 random bits in base64url, with its id and stored hash. */
export function newToken(): { token: string; id: string; hash: string } {
  const token = 'tf_' + randomBytes(32).toString('base64url');
  return { token, id: randomUUID(), hash: sha256(token) };
}

/** Validates bundles: well-formed hashes that match their code. */
export function checkBundles(bundles: readonly Bundle[]): void {
  // Through `unknown`: Array.isArray would narrow `bundles` to any[].
  const givenBundles: unknown = bundles;
  if (!Array.isArray(givenBundles)) throw new InvalidOptionError(`Expected \`bundles\` to be an array, got ${describeValue(bundles)}`);
  for (const [i, b] of bundles.entries()) {
    if (typeof b?.hash !== 'string' || !HASH.test(b.hash)) {
      throw new InvalidOptionError(`Expected \`bundles[${i}].hash\` to be a sha256 hex digest (64 lower-case hex digits), got ${describeValue(b?.hash)}`);
    }
    if (typeof b.code !== 'string') throw new InvalidOptionError(`Expected \`bundles[${i}].code\` to be a string, got ${describeValue(b.code)}`);
    const actual = sha256(b.code);
    if (actual !== b.hash) throw new InvalidOptionError(`Bundle ${b.hash} does not match its code (the code's sha256 is ${actual}): upload it again`);
  }
}

/** Validates a list of hashes to look up. */
export function checkHashes(hashes: readonly string[]): void {
  if (!Array.isArray(hashes)) throw new InvalidOptionError(`Expected \`hashes\` to be an array, got ${describeValue(hashes)}`);
  for (const [i, h] of hashes.entries()) {
    if (typeof h !== 'string' || !HASH.test(h)) throw new InvalidOptionError(`Expected \`hashes[${i}]\` to be a sha256 hex digest, got ${describeValue(h)}`);
  }
}

/** A validated {@link NewJob}, ready to store. */
export interface JobSpec {
  readonly owner: string;
  readonly name: string;
  readonly kind: JobKind;
  readonly program: readonly StageRef[];
  readonly programText: string;
  readonly optionsText: string;
  readonly paramsText: string;
  readonly initialState: 'queued' | 'held';
}

/** Validates a {@link NewJob} (each field, naming it) and encodes its JSON columns. */
export function checkNewJob(job: NewJob): JobSpec {
  if (typeof job !== 'object' || job === null) throw new InvalidOptionError(`Expected the job to be an object, got ${describeValue(job)}`);
  if (typeof job.owner !== 'string' || job.owner.length === 0 || job.owner.length > 200) {
    throw new InvalidOptionError(`Expected \`owner\` to be a string of 1 to 200 characters, got ${describeValue(job.owner)}`);
  }
  if (typeof job.name !== 'string' || job.name.length > 200) {
    throw new InvalidOptionError(`Expected \`name\` to be a string of at most 200 characters, got ${describeValue(job.name)}`);
  }
  const kind = job.kind ?? 'map';
  if (kind !== 'map' && kind !== 'optimize') throw new InvalidOptionError(`Expected \`kind\` to be 'map' or 'optimize', got ${describeValue(kind)}`);
  const state = job.state ?? 'queued';
  if (state !== 'queued' && state !== 'held') throw new InvalidOptionError(`Expected \`state\` to be 'queued' or 'held', got ${describeValue(state)}`);
  if (!Array.isArray(job.program) || job.program.length === 0) {
    throw new InvalidOptionError(`Expected \`program\` to be a non-empty array of stages, got ${describeValue(job.program)}`);
  }
  const program: StageRef[] = job.program.map((s: StageRef, i: number) => {
    if (typeof s?.name !== 'string' || s.name.length > 500)
      throw new InvalidOptionError(`Expected \`program[${i}].name\` to be a string, got ${describeValue(s?.name)}`);
    if (typeof s.hash !== 'string' || !HASH.test(s.hash)) {
      throw new InvalidOptionError(`Expected \`program[${i}].hash\` to be a sha256 hex digest, got ${describeValue(s.hash)}`);
    }
    return { name: s.name, hash: s.hash };
  });
  const options = checkOptions(job.options);
  let paramsText: string;
  try {
    paramsText = JSON.stringify(job.params ?? null);
  } catch (err) {
    throw new InvalidOptionError('Expected `params` to be JSON-serialisable', { cause: err });
  }
  return {
    owner: job.owner,
    name: job.name,
    kind,
    program,
    programText: JSON.stringify(program),
    optionsText: JSON.stringify(options),
    paramsText,
    initialState: state,
  };
}

function checkOptions(o: StoredJobOptions): StoredJobOptions {
  if (typeof o !== 'object' || o === null) throw new InvalidOptionError(`Expected \`options\` to be an object, got ${describeValue(o)}`);
  const out: { -readonly [K in keyof StoredJobOptions]: StoredJobOptions[K] } = {};
  if (o.priority !== undefined) {
    expectInteger('options.priority', o.priority, -1_000_000, 1_000_000);
    out.priority = o.priority;
  }
  if (o.weight !== undefined) {
    if (typeof o.weight !== 'number' || !Number.isFinite(o.weight) || o.weight <= 0 || o.weight > 1_000_000) {
      throw new InvalidOptionError(`Expected \`options.weight\` to be a number in (0, 1000000], got ${describeValue(o.weight)}`);
    }
    out.weight = o.weight;
  }
  if (o.retries !== undefined) {
    expectInteger('options.retries', o.retries, 0, 1000);
    out.retries = o.retries;
  }
  if (o.maxAttempts !== undefined) {
    expectInteger('options.maxAttempts', o.maxAttempts, 1, 1000);
    out.maxAttempts = o.maxAttempts;
  }
  if (o.taskTimeoutMs !== undefined) {
    expectInteger('options.taskTimeoutMs', o.taskTimeoutMs, 1);
    out.taskTimeoutMs = o.taskTimeoutMs;
  }
  if (o.errors !== undefined) {
    if (o.errors !== 'fail' && o.errors !== 'collect')
      throw new InvalidOptionError(`Expected \`options.errors\` to be 'fail' or 'collect', got ${describeValue(o.errors)}`);
    out.errors = o.errors;
  }
  return out;
}

/** Validates inputs to append: strings (JSON text; not parsed). */
export function checkInputs(inputs: readonly string[]): void {
  if (!Array.isArray(inputs)) throw new InvalidOptionError(`Expected \`inputs\` to be an array of JSON texts, got ${describeValue(inputs)}`);
  for (let i = 0; i < inputs.length; i++) {
    if (typeof inputs[i] !== 'string') throw new InvalidOptionError(`Expected \`inputs[${i}]\` to be JSON text (a string), got ${describeValue(inputs[i])}`);
  }
}

/** Validates a claim size. */
export function checkMax(max: number): void {
  expectInteger('max', max, 1, 1_000_000);
}

/** Validates an index list against `total`. */
export function checkIndex(name: string, index: unknown, total: number): asserts index is number {
  if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= total) {
    throw new InvalidOptionError(`Expected \`${name}\` to be the index of a task of this job (an integer in [0, ${total - 1}]), got ${describeValue(index)}`);
  }
}

/**
 * Splits a batch of settle entries: first occurrence of each index wins, later ones are rejected.
 * Entries are validated (index range, value type). Result sorted by index.
 */
export function dedupe<T extends { readonly index: number }>(
  entries: readonly T[],
  total: number,
  valueOk: (e: T, i: number) => void,
): { unique: readonly T[]; repeated: number[] } {
  // Through `unknown`: Array.isArray would narrow `entries` to any[].
  const givenEntries: unknown = entries;
  if (!Array.isArray(givenEntries)) throw new InvalidOptionError(`Expected an array of entries, got ${describeValue(entries)}`);
  // Fast path (the pool's batches): strictly increasing indices, so no duplicates and no sort.
  let increasing = true;
  let prev = -1;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as T;
    const index = e?.index;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= total) checkIndex(`[${i}].index`, index, total);
    valueOk(e, i);
    if (index <= prev) increasing = false;
    prev = index;
  }
  if (increasing) return { unique: entries, repeated: [] };
  // A stable sort keeps equal indices in batch order, so the first of a run of equal ones is the
  // first occurrence; no set needed (results arrive nearly in order: the sort is close to linear).
  const sorted = entries.slice().sort((a, b) => a.index - b.index);
  const unique: T[] = [];
  const repeated: number[] = [];
  let last = -1;
  for (const e of sorted) {
    if (e.index === last) repeated.push(e.index);
    else unique.push(e);
    last = e.index;
  }
  return { unique, repeated };
}

/**
 * Where `low` (the first unsettled index) stands after a settled batch (sorted by index), as far as
 * the batch itself tells: past the run of the batch's indices that starts at `low`, or undefined
 * when the batch does not settle `low` (then `low` stays). The store then looks for the first gap
 * from there among what earlier batches settled.
 */
export function lowAfter(fresh: readonly { readonly index: number }[], low: number): number | undefined {
  let k = 0;
  while (k < fresh.length && (fresh[k] as { index: number }).index < low) k++;
  if (k === fresh.length || (fresh[k] as { index: number }).index !== low) return undefined;
  let next = low;
  while (k < fresh.length && (fresh[k] as { index: number }).index === next) {
    next++;
    k++;
  }
  return next;
}

/** Collects what a `claimBatch` claims: single tasks, and ranges whose inputs came as one text. */
export class ClaimCollector {
  readonly #indices: number[] = [];
  readonly #parts: string[] = [];
  /** One task and its input text. */
  readonly row = (index: number, input: string): void => {
    this.#indices.push(index);
    this.#parts.push(input);
  };
  /** The tasks `lo`…`hi`, their input texts joined with commas in index order. */
  range(lo: number, hi: number, inputs: string): void {
    this.#parts.push(inputs);
    for (let i = lo; i <= hi; i++) this.#indices.push(i);
  }
  /** The claim, its inputs as one JSON array text. */
  batch(): ClaimedBatch {
    return { indices: this.#indices, inputs: `[${this.#parts.join(',')}]` };
  }
}

/** Checks an output entry's value. */
export function outputOk(e: OutputEntry, i: number): void {
  if (typeof e.output !== 'string') throw new InvalidOptionError(`Expected \`[${i}].output\` to be JSON text (a string), got ${describeValue(e.output)}`);
}

/** Checks a failure entry and encodes its error. */
export function failureOk(e: FailureEntry, i: number): void {
  const err = e.error;
  if (typeof err !== 'object' || err === null) throw new InvalidOptionError(`Expected \`[${i}].error\` to be an object, got ${describeValue(err)}`);
  for (const k of ['name', 'message', 'stack', 'code'] as const) {
    if (typeof err[k] !== 'string') throw new InvalidOptionError(`Expected \`[${i}].error.${k}\` to be a string, got ${describeValue(err[k])}`);
  }
  expectInteger(`[${i}].error.attempts`, err.attempts, 0);
}

/** Stored form of a failure (JSON text). */
export function encodeFailure(f: TaskFailure): string {
  return JSON.stringify({ name: f.name, message: f.message, stack: f.stack, code: f.code, attempts: f.attempts });
}

/** Parses a stored failure. */
export function decodeFailure(text: string): TaskFailure {
  const o = JSON.parse(text) as TaskFailure;
  return { name: o.name, message: o.message, stack: o.stack, code: o.code, attempts: o.attempts };
}

/** Validates events to append and encodes their data. */
export function checkEvents(events: readonly NewEvent[]): { type: string; data: string }[] {
  if (!Array.isArray(events)) throw new InvalidOptionError(`Expected \`events\` to be an array, got ${describeValue(events)}`);
  return events.map((e: NewEvent, i: number) => {
    if (typeof e?.type !== 'string' || e.type.length === 0 || e.type.length > 100) {
      throw new InvalidOptionError(`Expected \`events[${i}].type\` to be a string of 1 to 100 characters, got ${describeValue(e?.type)}`);
    }
    let data: string | undefined;
    try {
      data = JSON.stringify(e.data);
    } catch (err) {
      throw new InvalidOptionError(`Expected \`events[${i}].data\` to be JSON-serialisable`, { cause: err });
    }
    if (data === undefined) throw new InvalidOptionError(`Expected \`events[${i}].data\` to be a JSON value, got ${describeValue(e.data)}`);
    return { type: e.type, data };
  });
}

/** Validates a page limit. */
export function pageLimit(limit: number | undefined, max = 1000, fallback = 100): number {
  if (limit === undefined) return fallback;
  expectInteger('limit', limit, 1, max);
  return limit;
}

/** Validates an `after` cursor (an index, -1 for the start). */
export function afterIndex(after: number | undefined): number {
  if (after === undefined) return -1;
  expectInteger('after', after, -1);
  return after;
}

/** Validates a list of job states to filter on. */
export function checkStates(states: readonly JobState[] | undefined): readonly JobState[] {
  if (states === undefined) return JOB_STATES;
  // Through `unknown`: Array.isArray would narrow `states` to any[].
  const givenStates: unknown = states;
  if (!Array.isArray(givenStates)) throw new InvalidOptionError(`Expected \`states\` to be an array of job states, got ${describeValue(states)}`);
  for (const s of states)
    if (!(JOB_STATES as readonly string[]).includes(s))
      throw new InvalidOptionError(`Expected \`states\` entries to be job states (${JOB_STATES.join(', ')}), got ${describeValue(s)}`);
  return states;
}

/** Validates a job error. */
export function checkJobError(error: JobError | undefined): string | null {
  if (error === undefined) return null;
  if (typeof error?.code !== 'string' || typeof error.message !== 'string') {
    throw new InvalidOptionError(`Expected \`error\` to be { code: string, message: string, index?: number }, got ${describeValue(error)}`);
  }
  if (error.index !== undefined) expectInteger('error.index', error.index, 0);
  return JSON.stringify(
    error.index === undefined ? { code: error.code, message: error.message } : { code: error.code, message: error.message, index: error.index },
  );
}

/** Encodes a JSON value, naming the field when it cannot be. */
export function jsonText(name: string, value: JsonValue): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new InvalidOptionError(`Expected \`${name}\` to be JSON-serialisable`, { cause: err });
  }
  if (text === undefined) throw new InvalidOptionError(`Expected \`${name}\` to be a JSON value, got ${describeValue(value)}`);
  return text;
}

/** The per-job hot row: counters, the claim frontier, the low-water mark, the requeue count, the last event seq. */
export interface CountsRow {
  total: number;
  pending: number;
  running: number;
  done: number;
  failed: number;
  /** Every index ≥ frontier is unclaimed (pending unless settled). */
  frontier: number;
  /** Every index < low is settled. */
  low: number;
  /** Rows in the requeue set. */
  requeued: number;
  lastSeq: number;
}

/** The counters part of a {@link CountsRow}. */
export function countsOf(c: CountsRow): TaskCounts {
  return { pending: c.pending, running: c.running, done: c.done, failed: c.failed };
}

/** Transitions of the job state machine: allowed source states per operation. */
export const TRANSITIONS = {
  start: { from: ['queued'], to: 'running', resetClaims: false },
  hold: { from: ['queued', 'running'], to: 'held', resetClaims: true },
  release: { from: ['held'], to: 'queued', resetClaims: false },
  cancel: { from: ['queued', 'running', 'held'], to: 'cancelled', resetClaims: true },
  done: { from: ['queued', 'running'], to: 'done', resetClaims: true },
  failed: { from: ['queued', 'running'], to: 'failed', resetClaims: true },
} as const satisfies Record<string, { from: readonly JobState[]; to: JobState; resetClaims: boolean }>;

/** States a job may be resubmitted from. */
export const RESUBMITTABLE: readonly JobState[] = ['done', 'failed', 'cancelled'];

/** Largest job statistics text {@link JobStore.saveJobStats} takes. */
export const MAX_STATS_BYTES = 1024 * 1024;

/** Checks a job's statistics: JSON text of at most {@link MAX_STATS_BYTES}. */
export function checkStats(stats: string): void {
  if (typeof stats !== 'string') throw new InvalidOptionError(`Expected \`stats\` to be JSON text, got ${describeValue(stats)}`);
  if (stats.length > MAX_STATS_BYTES || Buffer.byteLength(stats) > MAX_STATS_BYTES)
    throw new InvalidOptionError(`Expected \`stats\` to be at most ${MAX_STATS_BYTES} bytes of JSON text, got ${Buffer.byteLength(stats)}`);
  try {
    JSON.parse(stats);
  } catch (err) {
    throw new InvalidOptionError(`Expected \`stats\` to be JSON text: ${(err as Error).message}`, { cause: err });
  }
}

/** A {@link StoreSummary} from rows of (state, jobs, pending, running, done, failed) per state. */
export function summaryOf(rows: readonly { state: string; jobs: number; pending: number; running: number; done: number; failed: number }[]): StoreSummary {
  const jobs = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;
  const tasks = { pending: 0, running: 0, done: 0, failed: 0 };
  for (const r of rows) {
    if (!(JOB_STATES as readonly string[]).includes(r.state)) continue;
    jobs[r.state as JobState] += Number(r.jobs);
    if ((ACTIVE_JOB_STATES as readonly string[]).includes(r.state)) {
      tasks.pending += Number(r.pending);
      tasks.running += Number(r.running);
      tasks.done += Number(r.done);
      tasks.failed += Number(r.failed);
    }
  }
  return { jobs, tasks };
}
