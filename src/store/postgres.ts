/**
 * The shared job store: PostgreSQL through node-postgres (`pg`), for `taskfarm serve --store
 * postgres://…`. Same contract, same layout as the SQLite store.
 *
 * Concurrency: every transaction that changes a job first locks that job's counters row
 * (`SELECT … FOR UPDATE`), so changes to one job are serialised and the counters stay exact;
 * changes to different jobs run in parallel. A claim moves the job's frontier under that lock, so
 * two claimers get disjoint index ranges by construction; requeued tasks are taken with
 * `FOR UPDATE SKIP LOCKED`. Batches go in as arrays (`unnest`), one statement per batch.
 */
import type pg from 'pg';
import { FarmError, InvalidOptionError, JobNotFoundError, JobStateError, StoreError } from '../errors.js';
import { describeValue, expectBoolean, expectInteger } from '../util/validate.js';
import {
  ClaimCollector,
  DELETE_CHUNK,
  REMOVING,
  RESUBMITTABLE,
  RUNNING_SCAN_BUDGET,
  SCHEMA_VERSION,
  SUBMITTING,
  TRANSITIONS,
  afterIndex,
  checkBundles,
  checkEvents,
  checkHashes,
  checkInputs,
  checkJobError,
  checkMax,
  checkNewJob,
  checkStates,
  checkStats,
  countsOf,
  decodeFailure,
  dedupe,
  encodeFailure,
  expectTicket,
  failureOk,
  jsonText,
  lowAfter,
  newTicket,
  newToken,
  outputOk,
  pageLimit,
  sha256,
  summaryOf,
  type CountsRow,
} from './shared.js';
import type {
  Bundle,
  ClaimedBatch,
  ClaimedTask,
  FailureEntry,
  FailureRow,
  JobError,
  JobEvent,
  JobListOptions,
  JobRecord,
  JobState,
  JobStore,
  JsonValue,
  NewEvent,
  NewJob,
  NewToken,
  OptimizerState,
  OutputEntry,
  Page,
  ReadResultsOptions,
  RecoveryReport,
  ResultRow,
  SettleResult,
  StoreSummary,
  TaskCounts,
  TaskPageOptions,
  TaskRow,
  TaskState,
  TokenRecord,
  Transition,
} from './types.js';
import { JOB_STATES } from './types.js';

/** Options of {@link PostgresJobStore.open}. */
export interface PostgresJobStoreOptions {
  /** Schema (namespace) holding the tables; created when missing. Lower-case letters, digits, `_`. @default 'taskfarm' */
  readonly schema?: string;
  /** Connections in the pool. @default 4 */
  readonly maxConnections?: number;
  /**
   * Commit claims, outputs, failures and events without waiting for the WAL flush
   * (`synchronous_commit = off` for those transactions only). A PostgreSQL *server* crash may then
   * lose the last fraction of a second of them — consistently: the tasks run again — while a
   * killed manager loses nothing. Submits, state changes and tokens always wait for the flush.
   * The same trade as the SQLite store's `synchronous = NORMAL`.
   * @default true
   */
  readonly asyncHotCommits?: boolean;
  /** Clock (ms since the epoch), for tests. @default Date.now */
  readonly now?: () => number;
}

type Q = pg.PoolClient;
type Row = Record<string, unknown>;

const SCHEMA = (schema: string): string => `
CREATE SCHEMA IF NOT EXISTS ${schema};
CREATE TABLE IF NOT EXISTS ${schema}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS ${schema}.bundles (hash text PRIMARY KEY, code text NOT NULL, size integer NOT NULL, created_at bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ${schema}.tokens (id text PRIMARY KEY, hash text NOT NULL UNIQUE, "user" text NOT NULL, admin boolean NOT NULL, label text NOT NULL, created_at bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ${schema}.jobs (
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  ticket text NOT NULL UNIQUE,
  owner text NOT NULL,
  name text NOT NULL,
  kind text NOT NULL,
  state text NOT NULL,
  initial_state text NOT NULL,
  program text NOT NULL,
  options text NOT NULL,
  params text NOT NULL,
  error text,
  result text NOT NULL DEFAULT 'null',
  opt_generation integer,
  opt_state text,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  started_at bigint,
  finished_at bigint
);
CREATE INDEX IF NOT EXISTS jobs_owner ON ${schema}.jobs (owner, id);
CREATE TABLE IF NOT EXISTS ${schema}.job_counts (
  job_id integer PRIMARY KEY,
  total integer NOT NULL DEFAULT 0,
  pending integer NOT NULL DEFAULT 0,
  running integer NOT NULL DEFAULT 0,
  done integer NOT NULL DEFAULT 0,
  failed integer NOT NULL DEFAULT 0,
  frontier integer NOT NULL DEFAULT 0,
  low integer NOT NULL DEFAULT 0,
  requeued integer NOT NULL DEFAULT 0,
  last_seq integer NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ${schema}.tasks (job_id integer NOT NULL, idx integer NOT NULL, input text NOT NULL, PRIMARY KEY (job_id, idx));
CREATE TABLE IF NOT EXISTS ${schema}.results (job_id integer NOT NULL, idx integer NOT NULL, failed boolean NOT NULL, value text NOT NULL, PRIMARY KEY (job_id, idx));
CREATE INDEX IF NOT EXISTS results_failed ON ${schema}.results (job_id, idx) WHERE failed;
CREATE TABLE IF NOT EXISTS ${schema}.requeued (job_id integer NOT NULL, idx integer NOT NULL, PRIMARY KEY (job_id, idx));
CREATE TABLE IF NOT EXISTS ${schema}.events (job_id integer NOT NULL, seq integer NOT NULL, at bigint NOT NULL, type text NOT NULL, data text NOT NULL, PRIMARY KEY (job_id, seq));
CREATE TABLE IF NOT EXISTS ${schema}.job_stats (job_id integer PRIMARY KEY, data text NOT NULL, updated_at bigint NOT NULL);
`;

const JOB_COLUMNS = `j.id, j.ticket, j.owner, j.name, j.kind, j.state, j.program, j.options, j.params, j.error, j.result, j.opt_generation,
  j.created_at, j.updated_at, j.started_at, j.finished_at, c.total, c.pending, c.running, c.done, c.failed, c.last_seq`;
const COUNT_COLUMNS = 'c.total, c.pending, c.running, c.done, c.failed, c.frontier, c.low, c.requeued, c.last_seq AS "lastSeq"';
const VISIBLE = `(${JOB_STATES.map((s) => `'${s}'`).join(', ')})`;
const UNSETTLED = 'NOT EXISTS (SELECT 1 FROM results x WHERE x.job_id = t.job_id AND x.idx = t.idx)';
/** Rows per primary-key range read when walking a job. */
const SCAN_CHUNK = 1_024;

/** int8 (counts, ms timestamps) as numbers: every value we store fits in 2^53. */
function typesOf(driver: typeof pg): pg.CustomTypesConfig {
  const base = driver.types.getTypeParser as (oid: number, format?: string) => unknown;
  return {
    getTypeParser: ((oid: number, format?: string) => (oid === 20 ? (v: string) => Number(v) : base(oid, format))) as pg.CustomTypesConfig['getTypeParser'],
  };
}

function toJob(r: Row): JobRecord {
  return {
    ticket: r['ticket'] as string,
    owner: r['owner'] as string,
    name: r['name'] as string,
    kind: r['kind'] as JobRecord['kind'],
    state: r['state'] as JobState,
    program: JSON.parse(r['program'] as string) as JobRecord['program'],
    options: JSON.parse(r['options'] as string) as JobRecord['options'],
    params: JSON.parse(r['params'] as string) as JsonValue,
    total: r['total'] as number,
    counts: { pending: r['pending'] as number, running: r['running'] as number, done: r['done'] as number, failed: r['failed'] as number },
    createdAt: r['created_at'] as number,
    updatedAt: r['updated_at'] as number,
    startedAt: (r['started_at'] as number | null) ?? null,
    finishedAt: (r['finished_at'] as number | null) ?? null,
    error: r['error'] === null ? null : (JSON.parse(r['error'] as string) as JobError),
    result: JSON.parse(r['result'] as string) as JsonValue,
    generation: (r['opt_generation'] as number | null) ?? null,
    lastEventSeq: r['last_seq'] as number,
  };
}

function tokenOf(r: Row): TokenRecord {
  return { id: r['id'] as string, user: r['user'] as string, admin: r['admin'] === true, label: r['label'] as string, createdAt: r['created_at'] as number };
}

function wrap(err: unknown, what: string): unknown {
  if (err instanceof FarmError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new StoreError(`PostgreSQL job store: ${what} failed: ${message}`, { cause: err });
}

interface Locked {
  id: number;
  state: string;
  c: CountsRow;
}

/** {@link JobStore} on PostgreSQL. Open with {@link PostgresJobStore.open}. */
export class PostgresJobStore implements JobStore {
  readonly backend = 'postgres' as const;
  /** The schema holding the tables. */
  readonly schema: string;
  readonly #pool: pg.Pool;
  readonly #now: () => number;
  readonly #asyncHot: boolean;
  readonly #names = new Map<string, string>();
  #closed = false;

  private constructor(pool: pg.Pool, schema: string, now: () => number, asyncHot: boolean) {
    this.#pool = pool;
    this.schema = schema;
    this.#now = now;
    this.#asyncHot = asyncHot;
  }

  /**
   * Connects (a pool of `maxConnections`) and creates the schema when missing.
   * @param connection a `postgres://` URL, or node-postgres connection settings
   */
  static async open(connection: string | pg.PoolConfig, options: PostgresJobStoreOptions = {}): Promise<PostgresJobStore> {
    const schema = options.schema ?? 'taskfarm';
    if (typeof schema !== 'string' || !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
      throw new InvalidOptionError(
        `Expected \`schema\` to be lower-case letters, digits and _ (not starting with a digit, at most 63), got ${describeValue(schema)}`,
      );
    }
    const max = options.maxConnections ?? 4;
    expectInteger('maxConnections', max, 1, 1000);
    const asyncHot = options.asyncHotCommits ?? true;
    expectBoolean('asyncHotCommits', asyncHot);
    const base: pg.PoolConfig = typeof connection === 'string' ? { connectionString: connection } : connection;
    // Loaded here, not at import: `import 'taskfarm'` never loads pg unless a PostgreSQL store is opened.
    const { default: driver } = await import('pg').catch((err: unknown) => {
      throw new StoreError(
        `The PostgreSQL job store needs pg (an optional dependency of taskfarm), which is not installed: ${(err as Error).message}. Install it with \`npm install pg@8\`.`,
        { cause: err },
      );
    });
    const pool = new driver.Pool({ ...base, max, types: typesOf(driver), options: `-c search_path=${schema}`, application_name: 'taskfarm' });
    // An idle client that errors (server restarted) must not crash the process: the next query reports it.
    pool.on('error', () => {});
    const store = new PostgresJobStore(pool, schema, options.now ?? Date.now, asyncHot);
    try {
      await store.#tx('open', async (q) => {
        await q.query(`SELECT pg_advisory_xact_lock(hashtext('taskfarm schema ' || $1::text))`, [schema]);
        await q.query(SCHEMA(schema));
        const r = await q.query<{ value: string }>(`SELECT value FROM ${schema}.meta WHERE key = 'schema_version'`);
        const found = r.rows[0];
        if (found === undefined) await q.query(`INSERT INTO ${schema}.meta (key, value) VALUES ('schema_version', $1)`, [String(SCHEMA_VERSION)]);
        else if (Number(found.value) > SCHEMA_VERSION) {
          throw new StoreError(
            `The job store (schema ${schema}) has schema version ${found.value}, newer than this taskfarm's (${SCHEMA_VERSION}): upgrade taskfarm`,
          );
        }
      });
    } catch (err) {
      await pool.end().catch(() => {});
      if (err instanceof FarmError && err.cause === undefined) throw err;
      const cause = err instanceof FarmError ? err.cause : err;
      throw new StoreError(`Cannot open the PostgreSQL job store: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    }
    return store;
  }

  // ------------------------------------------------------------------ plumbing

  /** Runs one query as a named (prepared once per connection) statement. */
  async #q<R extends object = Row>(q: Q, text: string, values: unknown[] = []): Promise<R[]> {
    let name = this.#names.get(text);
    if (name === undefined) {
      name = `tf${this.#names.size}`;
      this.#names.set(text, name);
    }
    return (await q.query<Row>({ name, text, values })).rows as R[];
  }

  /** One read statement, outside any explicit transaction (one round trip: the status and auth paths). */
  async #one<R extends object = Row>(what: string, text: string, values: unknown[]): Promise<R[]> {
    if (this.#closed) throw new StoreError('The job store is closed');
    let name = this.#names.get(text);
    if (name === undefined) {
      name = `tf${this.#names.size}`;
      this.#names.set(text, name);
    }
    try {
      return (await this.#pool.query<Row>({ name, text, values })).rows as R[];
    } catch (err) {
      throw wrap(err, what);
    }
  }

  /** One transaction on one pooled connection. `hot`: claims/outputs/events (see asyncHotCommits); `read`: read-only snapshot. */
  async #tx<T>(what: string, fn: (q: Q) => Promise<T>, mode: 'write' | 'hot' | 'read' = 'write'): Promise<T> {
    if (this.#closed) throw new StoreError('The job store is closed');
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      throw wrap(err, what);
    }
    let broken = false;
    try {
      await client.query(
        mode === 'read'
          ? 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY'
          : mode === 'hot' && this.#asyncHot
            ? 'BEGIN; SET LOCAL synchronous_commit TO OFF'
            : 'BEGIN',
      );
      const out = await fn(client);
      await client.query('COMMIT');
      return out;
    } catch (err) {
      try {
        await client.query('ROLLBACK');
      } catch {
        broken = true;
      }
      throw wrap(err, what);
    } finally {
      client.release(broken);
    }
  }

  /** A visible job's id, state and counters, the counters row locked for this transaction. */
  async #lock(q: Q, ticket: string, allow: 'visible' | 'submitting' = 'visible'): Promise<Locked> {
    const rows = await this.#q(
      q,
      `SELECT j.id, j.state, ${COUNT_COLUMNS} FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.ticket = $1 FOR UPDATE OF c`,
      [ticket],
    );
    const r = rows[0];
    const state = r?.['state'] as string | undefined;
    if (r === undefined || state === REMOVING) throw new JobNotFoundError(ticket);
    if (allow === 'submitting') {
      if (state !== SUBMITTING) throw new JobStateError(ticket, state as string, `Job ${ticket} is ${state}: its submit has already committed`);
    } else if (state === SUBMITTING) throw new JobNotFoundError(ticket);
    return { id: r['id'] as number, state: state as string, c: countsRow(r) };
  }

  /** A visible job's id and counters in a read transaction. */
  async #peek(q: Q, ticket: string): Promise<Locked> {
    const rows = await this.#q(
      q,
      `SELECT j.id, j.state, ${COUNT_COLUMNS} FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.ticket = $1 AND j.state IN ${VISIBLE}`,
      [ticket],
    );
    const r = rows[0];
    if (r === undefined) throw new JobNotFoundError(ticket);
    return { id: r['id'] as number, state: r['state'] as string, c: countsRow(r) };
  }

  async #writeCounts(q: Q, jobId: number, c: CountsRow): Promise<void> {
    await this.#q(
      q,
      'UPDATE job_counts SET total = $1, pending = $2, running = $3, done = $4, failed = $5, frontier = $6, low = $7, requeued = $8, last_seq = $9 WHERE job_id = $10',
      [c.total, c.pending, c.running, c.done, c.failed, c.frontier, c.low, c.requeued, c.lastSeq, jobId],
    );
  }

  async #jobRecord(q: Q, jobId: number): Promise<JobRecord> {
    const rows = await this.#q(q, `SELECT ${JOB_COLUMNS} FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.id = $1`, [jobId]);
    return toJob(rows[0] as Row);
  }

  async #event(q: Q, jobId: number, c: CountsRow, type: string, data: string): Promise<void> {
    c.lastSeq += 1;
    await this.#q(q, 'INSERT INTO events (job_id, seq, at, type, data) VALUES ($1, $2, $3, $4, $5)', [jobId, c.lastSeq, this.#now(), type, data]);
  }

  /**
   * The first unsettled index at or above `from` (or `total`). Task indices are contiguous, so the
   * settled run from `from` is the results whose index equals `from` + their rank: the server
   * counts it over a primary-key range of `SCAN_CHUNK` results and sends one row back. (A
   * `NOT EXISTS … ORDER BY idx LIMIT 1` anti-join got a nested-loop plan over freshly filled,
   * never-analysed tables: seconds for 20,000 rows. This is a primary-key range scan, whatever the
   * statistics say.)
   */
  async #firstUnsettled(q: Q, jobId: number, from: number, total: number): Promise<number> {
    let expected = from;
    for (;;) {
      const rows = await this.#q<{ run: number; n: number }>(
        q,
        `SELECT count(*) FILTER (WHERE s.idx = $2::int + s.rn - 1) AS run, count(*) AS n
         FROM (SELECT idx, row_number() OVER (ORDER BY idx) AS rn FROM results WHERE job_id = $1 AND idx >= $2 ORDER BY idx LIMIT $3) s`,
        [jobId, expected, SCAN_CHUNK],
      );
      const { run, n } = rows[0] as { run: number; n: number };
      expected += run;
      if (run < n || n < SCAN_CHUNK) return Math.min(expected, total);
    }
  }

  /** Settled indices in [lo, hi]. */
  async #settledIn(q: Q, jobId: number, lo: number, hi: number): Promise<Set<number>> {
    const rows = await this.#q<{ idx: number }>(q, 'SELECT idx FROM results WHERE job_id = $1 AND idx >= $2 AND idx <= $3', [jobId, lo, hi]);
    return new Set(rows.map((r) => r.idx));
  }

  /** The tasks with indices in [lo, hi], with their results and requeue flags, classified. */
  async #page(q: Q, jobId: number, c: CountsRow, lo: number, hi: number): Promise<TaskRow[]> {
    if (hi < lo) return [];
    const tasks = await this.#q<{ idx: number; input: string }>(q, 'SELECT idx, input FROM tasks WHERE job_id = $1 AND idx >= $2 AND idx <= $3 ORDER BY idx', [
      jobId,
      lo,
      hi,
    ]);
    const results = await this.#q<{ idx: number; failed: boolean; value: string }>(
      q,
      'SELECT idx, failed, value FROM results WHERE job_id = $1 AND idx >= $2 AND idx <= $3',
      [jobId, lo, hi],
    );
    const settled = new Map(results.map((r) => [r.idx, r]));
    const requeued =
      c.requeued > 0
        ? new Set(
            (await this.#q<{ idx: number }>(q, 'SELECT idx FROM requeued WHERE job_id = $1 AND idx >= $2 AND idx <= $3', [jobId, lo, hi])).map((r) => r.idx),
          )
        : undefined;
    return tasks.map((t) => {
      const r = settled.get(t.idx);
      const state: TaskState = r === undefined ? (t.idx >= c.frontier || requeued?.has(t.idx) === true ? 'pending' : 'running') : r.failed ? 'failed' : 'done';
      return {
        index: t.idx,
        state,
        input: t.input,
        output: r !== undefined && !r.failed ? r.value : null,
        error: r !== undefined && r.failed ? decodeFailure(r.value) : null,
      };
    });
  }

  async #resetClaims(q: Q, jobId: number, c: CountsRow): Promise<number> {
    const requeued = c.running;
    c.low = await this.#firstUnsettled(q, jobId, c.low, c.total);
    c.frontier = c.low;
    if (c.requeued > 0) await this.#q(q, 'DELETE FROM requeued WHERE job_id = $1', [jobId]);
    c.requeued = 0;
    c.pending += c.running;
    c.running = 0;
    return requeued;
  }

  async #purge(jobId: number): Promise<void> {
    const { total, lastSeq } = await this.#tx('purge', async (q) => {
      const r = await this.#q<{ total: number; last_seq: number }>(q, 'SELECT total, last_seq FROM job_counts WHERE job_id = $1', [jobId]);
      return { total: r[0]?.total ?? 0, lastSeq: r[0]?.last_seq ?? 0 };
    });
    for (const [table, key, end] of [
      ['tasks', 'idx', total],
      ['results', 'idx', total],
      ['events', 'seq', lastSeq + 1],
    ] as const) {
      for (let lo = 0; lo < end; lo += DELETE_CHUNK) {
        await this.#tx('purge', (q) => this.#q(q, `DELETE FROM ${table} WHERE job_id = $1 AND ${key} >= $2 AND ${key} < $3`, [jobId, lo, lo + DELETE_CHUNK]));
      }
    }
    await this.#tx('purge', async (q) => {
      await this.#q(q, 'DELETE FROM requeued WHERE job_id = $1', [jobId]);
      await this.#q(q, 'DELETE FROM job_stats WHERE job_id = $1', [jobId]);
      await this.#q(q, 'DELETE FROM job_counts WHERE job_id = $1', [jobId]);
      await this.#q(q, 'DELETE FROM jobs WHERE id = $1', [jobId]);
    });
  }

  // ------------------------------------------------------------------ programs

  async putBundles(bundles: readonly Bundle[]): Promise<number> {
    checkBundles(bundles);
    if (bundles.length === 0) return 0;
    return this.#tx('putBundles', async (q) => {
      const rows = await this.#q(
        q,
        'INSERT INTO bundles (hash, code, size, created_at) SELECT u.hash, u.code, octet_length(u.code), $3 FROM unnest($1::text[], $2::text[]) AS u(hash, code) ON CONFLICT DO NOTHING RETURNING hash',
        [bundles.map((b) => b.hash), bundles.map((b) => b.code), this.#now()],
      );
      return rows.length;
    });
  }

  async missingBundles(hashes: readonly string[]): Promise<string[]> {
    checkHashes(hashes);
    const unique = [...new Set(hashes)];
    return this.#tx(
      'missingBundles',
      async (q) => {
        const have = new Set((await this.#q<{ hash: string }>(q, 'SELECT hash FROM bundles WHERE hash = ANY($1::text[])', [unique])).map((r) => r.hash));
        return unique.filter((h) => !have.has(h));
      },
      'read',
    );
  }

  async getBundles(hashes: readonly string[]): Promise<Bundle[]> {
    checkHashes(hashes);
    return this.#tx(
      'getBundles',
      (q) => this.#q<{ hash: string; code: string }>(q, 'SELECT hash, code FROM bundles WHERE hash = ANY($1::text[])', [[...new Set(hashes)]]),
      'read',
    );
  }

  // ------------------------------------------------------------------ submitting

  async createJob(job: NewJob): Promise<string> {
    const spec = checkNewJob(job);
    return this.#tx('createJob', async (q) => {
      const hashes = spec.program.map((s) => s.hash);
      const have = new Set((await this.#q<{ hash: string }>(q, 'SELECT hash FROM bundles WHERE hash = ANY($1::text[])', [hashes])).map((r) => r.hash));
      for (const [i, s] of spec.program.entries()) {
        if (!have.has(s.hash)) throw new InvalidOptionError(`\`program[${i}]\` (${s.name}): bundle ${s.hash} is not stored: upload it first`);
      }
      const ticket = newTicket();
      const now = this.#now();
      const rows = await this.#q<{ id: number }>(
        q,
        `INSERT INTO jobs (ticket, owner, name, kind, state, initial_state, program, options, params, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id`,
        [ticket, spec.owner, spec.name, spec.kind, SUBMITTING, spec.initialState, spec.programText, spec.optionsText, spec.paramsText, now],
      );
      await this.#q(q, 'INSERT INTO job_counts (job_id) VALUES ($1)', [(rows[0] as { id: number }).id]);
      return ticket;
    });
  }

  async appendInputs(ticket: string, inputs: readonly string[]): Promise<number> {
    expectTicket(ticket);
    checkInputs(inputs);
    return this.#tx('appendInputs', async (q) => {
      const { id, c } = await this.#lock(q, ticket, 'submitting');
      if (inputs.length > 0) {
        await this.#q(q, 'INSERT INTO tasks (job_id, idx, input) SELECT $1, $2 + u.o - 1, u.input FROM unnest($3::text[]) WITH ORDINALITY AS u(input, o)', [
          id,
          c.total,
          inputs,
        ]);
        c.total += inputs.length;
        c.pending += inputs.length;
        await this.#writeCounts(q, id, c);
      }
      return c.total;
    });
  }

  async commitSubmit(ticket: string): Promise<JobRecord> {
    expectTicket(ticket);
    return this.#tx('commitSubmit', async (q) => {
      const { id, c } = await this.#lock(q, ticket, 'submitting');
      const rows = await this.#q<{ state: JobState }>(q, 'UPDATE jobs SET state = initial_state, updated_at = $2 WHERE id = $1 RETURNING state', [
        id,
        this.#now(),
      ]);
      await this.#event(q, id, c, 'state', JSON.stringify({ state: rows[0]?.state, from: SUBMITTING, total: c.total }));
      await this.#writeCounts(q, id, c);
      return this.#jobRecord(q, id);
    });
  }

  async abortSubmit(ticket: string): Promise<void> {
    expectTicket(ticket);
    const id = await this.#tx('abortSubmit', async (q) => {
      const { id } = await this.#lock(q, ticket, 'submitting');
      await this.#q(q, 'UPDATE jobs SET state = $2 WHERE id = $1', [id, REMOVING]);
      return id;
    });
    await this.#purge(id);
  }

  // ------------------------------------------------------------------ jobs

  async getJob(ticket: string): Promise<JobRecord | undefined> {
    if (typeof ticket !== 'string') return undefined;
    // One statement (one snapshot of the job and its counters): one round trip on the status path.
    const rows = await this.#one(
      'getJob',
      `SELECT ${JOB_COLUMNS} FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.ticket = $1 AND j.state IN ${VISIBLE}`,
      [ticket],
    );
    return rows[0] === undefined ? undefined : toJob(rows[0]);
  }

  async listJobs(options: JobListOptions = {}): Promise<Page<JobRecord, string>> {
    const states = checkStates(options.states);
    const limit = pageLimit(options.limit);
    let before = 2 ** 31 - 1;
    if (options.after !== undefined) {
      before = Number(options.after);
      if (!/^\d+$/.test(options.after) || !Number.isSafeInteger(before))
        throw new InvalidOptionError(`Expected \`after\` to be a cursor from a previous page, got ${describeValue(options.after)}`);
    }
    if (options.owner !== undefined && typeof options.owner !== 'string')
      throw new InvalidOptionError(`Expected \`owner\` to be a string, got ${describeValue(options.owner)}`);
    if (states.length === 0) return { items: [], next: null };
    return this.#tx(
      'listJobs',
      async (q) => {
        const rows = await this.#q(
          q,
          `SELECT ${JOB_COLUMNS} FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.state = ANY($1::text[]) AND ($2::text IS NULL OR j.owner = $2) AND j.id < $3
           ORDER BY j.id DESC LIMIT $4`,
          [states, options.owner ?? null, Math.min(before, 2 ** 31 - 1), limit + 1],
        );
        const more = rows.length > limit;
        if (more) rows.pop();
        return { items: rows.map(toJob), next: more ? String(rows[rows.length - 1]?.['id']) : null };
      },
      'read',
    );
  }

  async #transition(ticket: string, op: keyof typeof TRANSITIONS, error?: JobError): Promise<Transition> {
    expectTicket(ticket);
    const errorText = checkJobError(error);
    return this.#tx(op, async (q) => {
      const { id, state, c } = await this.#lock(q, ticket);
      const t = TRANSITIONS[op];
      if (!(t.from as readonly string[]).includes(state)) return { changed: false, job: await this.#jobRecord(q, id) };
      const now = this.#now();
      const finished = t.to === 'done' || t.to === 'failed' || t.to === 'cancelled';
      await this.#q(
        q,
        `UPDATE jobs SET state = $2, updated_at = $3, started_at = CASE WHEN $4 AND started_at IS NULL THEN $3 ELSE started_at END,
         finished_at = CASE WHEN $5 THEN $3 ELSE finished_at END, error = COALESCE($6, error) WHERE id = $1`,
        [id, t.to, now, t.to === 'running', finished, errorText],
      );
      if (t.resetClaims) await this.#resetClaims(q, id, c);
      const data: Record<string, unknown> = { state: t.to, from: state };
      if (errorText !== null) data['error'] = JSON.parse(errorText) as unknown;
      await this.#event(q, id, c, 'state', JSON.stringify(data));
      await this.#writeCounts(q, id, c);
      return { changed: true, job: await this.#jobRecord(q, id) };
    });
  }

  async startJob(ticket: string): Promise<Transition> {
    return this.#transition(ticket, 'start');
  }

  async holdJob(ticket: string): Promise<Transition> {
    return this.#transition(ticket, 'hold');
  }

  async releaseJob(ticket: string): Promise<Transition> {
    return this.#transition(ticket, 'release');
  }

  async cancelJob(ticket: string): Promise<Transition> {
    return this.#transition(ticket, 'cancel');
  }

  async finishJob(ticket: string, outcome: 'done' | 'failed', error?: JobError): Promise<Transition> {
    if (outcome !== 'done' && outcome !== 'failed')
      throw new InvalidOptionError(`Expected \`outcome\` to be 'done' or 'failed', got ${describeValue(outcome)}`);
    return this.#transition(ticket, outcome, error);
  }

  async resubmitJob(ticket: string, options: { readonly failedOnly: boolean }): Promise<Transition> {
    expectTicket(ticket);
    if (typeof options?.failedOnly !== 'boolean')
      throw new InvalidOptionError(`Expected \`failedOnly\` to be a boolean, got ${describeValue(options?.failedOnly)}`);
    return this.#tx('resubmitJob', async (q) => {
      const { id, state, c } = await this.#lock(q, ticket);
      if (!RESUBMITTABLE.includes(state as JobState)) return { changed: false, job: await this.#jobRecord(q, id) };
      if (options.failedOnly) {
        const r = await this.#q<{ m: number | null }>(q, 'SELECT min(idx) AS m FROM results WHERE job_id = $1 AND failed', [id]);
        await this.#q(q, 'DELETE FROM results WHERE job_id = $1 AND failed', [id]);
        const m = r[0]?.m ?? null;
        if (m !== null) c.low = Math.min(c.low, m);
        c.pending += c.failed;
        c.failed = 0;
      } else {
        await this.#q(q, 'DELETE FROM results WHERE job_id = $1', [id]);
        c.pending += c.done + c.failed;
        c.done = 0;
        c.failed = 0;
        c.low = 0;
      }
      await this.#resetClaims(q, id, c);
      await this.#q(q, `UPDATE jobs SET state = 'queued', updated_at = $2, finished_at = NULL, error = NULL WHERE id = $1`, [id, this.#now()]);
      await this.#event(q, id, c, 'state', JSON.stringify({ state: 'queued', from: state, resubmitted: options.failedOnly ? 'failed' : 'all' }));
      await this.#writeCounts(q, id, c);
      return { changed: true, job: await this.#jobRecord(q, id) };
    });
  }

  async removeJob(ticket: string): Promise<boolean> {
    if (typeof ticket !== 'string') return false;
    const id = await this.#tx('removeJob', async (q) => {
      const rows = await this.#q<{ id: number }>(q, `UPDATE jobs SET state = $2 WHERE ticket = $1 AND state IN ${VISIBLE} RETURNING id`, [ticket, REMOVING]);
      return rows[0]?.id;
    });
    if (id === undefined) return false;
    await this.#purge(id);
    return true;
  }

  async setJobResult(ticket: string, result: JsonValue): Promise<void> {
    expectTicket(ticket);
    const text = jsonText('result', result);
    await this.#tx('setJobResult', async (q) => {
      const { id } = await this.#lock(q, ticket);
      await this.#q(q, 'UPDATE jobs SET result = $2, updated_at = $3 WHERE id = $1', [id, text, this.#now()]);
    });
  }

  // ------------------------------------------------------------------ dispatch

  async claimTasks(ticket: string, max: number): Promise<ClaimedTask[]> {
    const out: ClaimedTask[] = [];
    await this.#claim('claimTasks', ticket, max, (index, input) => void out.push({ index, input }));
    return out;
  }

  async claimBatch(ticket: string, max: number): Promise<ClaimedBatch> {
    const claim = new ClaimCollector();
    await this.#claim('claimBatch', ticket, max, claim.row, async (q, jobId, lo, hi) => {
      // A range with no settled task: its inputs as one string, in index order, and its indices without reading them.
      const rows = await this.#q<{ inputs: string }>(
        q,
        "SELECT string_agg(input, ',' ORDER BY idx) AS inputs FROM tasks WHERE job_id = $1 AND idx >= $2 AND idx <= $3",
        [jobId, lo, hi],
      );
      claim.range(lo, hi, (rows[0] as { inputs: string }).inputs);
    });
    return claim.batch();
  }

  /**
   * The claim of {@link claimTasks} / {@link claimBatch}: requeued tasks (each to `row`), then
   * fresh ranges from the frontier — to `range` when given and the range has no settled task,
   * else each unsettled task to `row`. One transaction.
   */
  async #claim(
    what: string,
    ticket: string,
    max: number,
    row: (index: number, input: string) => void,
    range?: (q: Q, jobId: number, lo: number, hi: number) => Promise<void>,
  ): Promise<void> {
    expectTicket(ticket);
    checkMax(max);
    await this.#tx(
      what,
      async (q) => {
        const { id, state, c } = await this.#lock(q, ticket);
        if (state !== 'running') return;
        let n = 0;
        if (c.requeued > 0) {
          const rows = await this.#q<ClaimedTask>(
            q,
            `WITH q AS (DELETE FROM requeued WHERE job_id = $1 AND idx IN (SELECT idx FROM requeued WHERE job_id = $1 ORDER BY idx LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING idx)
             SELECT t.idx AS "index", t.input FROM tasks t JOIN q ON t.idx = q.idx WHERE t.job_id = $1 ORDER BY t.idx`,
            [id, max],
          );
          c.requeued -= rows.length;
          for (const r of rows) row(r.index, r.input);
          n += rows.length;
        }
        // Fresh tasks from the frontier: a range of tasks and the (usually empty) settled set in it.
        while (n < max && c.frontier < c.total) {
          const lo = c.frontier;
          const hi = Math.min(lo + (max - n) - 1, c.total - 1);
          const settled = await this.#settledIn(q, id, lo, hi);
          if (settled.size === 0 && range !== undefined) {
            await range(q, id, lo, hi);
            n += hi - lo + 1;
          } else {
            const rows = await this.#q<ClaimedTask>(q, 'SELECT idx AS "index", input FROM tasks WHERE job_id = $1 AND idx >= $2 AND idx <= $3 ORDER BY idx', [
              id,
              lo,
              hi,
            ]);
            for (const r of rows) {
              if (settled.has(r.index)) continue;
              row(r.index, r.input);
              n++;
            }
          }
          c.frontier = hi + 1;
        }
        if (n > 0) {
          c.pending -= n;
          c.running += n;
          await this.#writeCounts(q, id, c);
        }
      },
      'hot',
    );
  }

  /**
   * Settles entries. Duplicates (an entry for a task already settled) are rare — the pool settles
   * each task once, so only a late result of an earlier run of the job is one — so the first attempt
   * inserts without looking: the primary key refuses a duplicate (unique_violation), the
   * transaction rolls back, and a second one reads which entries are settled first. Every writer
   * of `results` holds this job's counters lock, so that read-then-insert is race-free.
   */
  async #settle<T extends { readonly index: number }>(
    what: string,
    ticket: string,
    entries: readonly T[],
    ok: (e: T, i: number) => void,
    failed: boolean,
    value: (e: T) => string,
  ): Promise<SettleResult> {
    expectTicket(ticket);
    try {
      return await this.#tx(what, (q) => this.#settleIn(q, ticket, entries, ok, failed, value, false), 'hot');
    } catch (err) {
      if (!(err instanceof StoreError) || (err.cause as { code?: unknown } | undefined)?.code !== '23505') throw err;
      return this.#tx(what, (q) => this.#settleIn(q, ticket, entries, ok, failed, value, true), 'hot');
    }
  }

  async #settleIn<T extends { readonly index: number }>(
    q: Q,
    ticket: string,
    entries: readonly T[],
    ok: (e: T, i: number) => void,
    failed: boolean,
    value: (e: T) => string,
    checked: boolean,
  ): Promise<SettleResult> {
    const { id, c } = await this.#lock(q, ticket);
    const { unique, repeated } = dedupe(entries, c.total, ok);
    if (unique.length === 0) return { accepted: 0, rejected: repeated, counts: countsOf(c) };
    let fresh: readonly T[] = unique;
    let rejected: number[] = [];
    if (checked) {
      const lo = (unique[0] as T).index;
      const hi = (unique[unique.length - 1] as T).index;
      const settledRows =
        hi - lo < 4 * unique.length + 64
          ? await this.#q<{ idx: number }>(q, 'SELECT idx FROM results WHERE job_id = $1 AND idx >= $2 AND idx <= $3', [id, lo, hi])
          : await this.#q<{ idx: number }>(q, 'SELECT idx FROM results WHERE job_id = $1 AND idx = ANY($2::int[])', [id, unique.map((e) => e.index)]);
      const settled = new Set(settledRows.map((r) => r.idx));
      fresh = unique.filter((e) => !settled.has(e.index));
      rejected = unique.filter((e) => settled.has(e.index)).map((e) => e.index);
    }
    if (fresh.length > 0) {
      // Indices and values as two JSON arrays, zipped by the server: JSON.stringify is native, where
      // the driver's array literal escaping runs in JavaScript per element.
      const indices: number[] = [];
      const values: string[] = [];
      for (const e of fresh) {
        indices.push(e.index);
        values.push(value(e));
      }
      await this.#q(
        q,
        'INSERT INTO results (job_id, idx, failed, value) SELECT $1, u.idx::int, $2, u.value FROM ROWS FROM (json_array_elements_text($3::json), json_array_elements_text($4::json)) AS u(idx, value)',
        [id, failed, JSON.stringify(indices), JSON.stringify(values)],
      );
    }
    let wasPending = 0;
    const below: number[] = [];
    for (const e of fresh) {
      if (e.index >= c.frontier) wasPending++;
      else below.push(e.index);
    }
    if (c.requeued > 0 && below.length > 0) {
      const gone = await this.#q(q, 'DELETE FROM requeued WHERE job_id = $1 AND idx = ANY($2::int[]) RETURNING idx', [id, below]);
      wasPending += gone.length;
      c.requeued -= gone.length;
    }
    c.pending -= wasPending;
    c.running -= fresh.length - wasPending;
    if (failed) c.failed += fresh.length;
    else c.done += fresh.length;
    // Keep `low` close behind the settled prefix (amortised), so a reset walks only what was in
    // flight. The batch (sorted) extends it first.
    const next = lowAfter(fresh, c.low);
    if (next !== undefined) c.low = await this.#firstUnsettled(q, id, next, c.total);
    if (fresh.length > 0) await this.#writeCounts(q, id, c);
    return { accepted: fresh.length, rejected: [...rejected, ...repeated], counts: countsOf(c) };
  }

  async commitOutputs(ticket: string, outputs: readonly OutputEntry[]): Promise<SettleResult> {
    return this.#settle('commitOutputs', ticket, outputs, outputOk, false, (e) => e.output);
  }

  async failTasks(ticket: string, failures: readonly FailureEntry[]): Promise<SettleResult> {
    return this.#settle('failTasks', ticket, failures, failureOk, true, (e) => encodeFailure(e.error));
  }

  async requeueTasks(ticket: string, indices: readonly number[]): Promise<number> {
    expectTicket(ticket);
    if (!Array.isArray(indices)) throw new InvalidOptionError(`Expected \`indices\` to be an array, got ${describeValue(indices)}`);
    for (const [i, idx] of indices.entries()) {
      if (typeof idx !== 'number' || !Number.isInteger(idx))
        throw new InvalidOptionError(`Expected \`indices[${i}]\` to be an integer, got ${describeValue(idx)}`);
    }
    return this.#tx('requeueTasks', async (q) => {
      const { id, c } = await this.#lock(q, ticket);
      const candidates = [...new Set(indices)].filter((idx) => idx >= c.low && idx < c.frontier);
      if (candidates.length === 0) return 0;
      const rows = await this.#q(
        q,
        `INSERT INTO requeued (job_id, idx) SELECT $1, u.idx FROM unnest($2::int[]) AS u(idx)
         WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = $1 AND r.idx = u.idx) ON CONFLICT DO NOTHING RETURNING idx`,
        [id, candidates],
      );
      const n = rows.length;
      if (n > 0) {
        c.running -= n;
        c.pending += n;
        c.requeued += n;
        await this.#writeCounts(q, id, c);
      }
      return n;
    });
  }

  async recover(): Promise<RecoveryReport> {
    const { requeued, dead } = await this.#tx('recover', async (q) => {
      let requeued = 0;
      const locked = await this.#q(
        q,
        `SELECT c.job_id AS id, ${COUNT_COLUMNS} FROM job_counts c JOIN jobs j ON j.id = c.job_id WHERE (c.running > 0 OR c.requeued > 0) AND j.state IN ${VISIBLE}
         ORDER BY c.job_id FOR UPDATE OF c`,
      );
      for (const r of locked) {
        const c = countsRow(r);
        requeued += await this.#resetClaims(q, r['id'] as number, c);
        await this.#writeCounts(q, r['id'] as number, c);
      }
      const dead = await this.#q<{ id: number; state: string }>(q, 'SELECT id, state FROM jobs WHERE state = ANY($1::text[])', [[SUBMITTING, REMOVING]]);
      await this.#q(q, 'UPDATE jobs SET state = $1 WHERE state = $2', [REMOVING, SUBMITTING]);
      return { requeued, dead };
    });
    for (const d of dead) await this.#purge(d.id);
    return { requeued, abandonedSubmits: dead.filter((d) => d.state === SUBMITTING).length, purged: dead.filter((d) => d.state === REMOVING).length };
  }

  // ------------------------------------------------------------------ pages and results

  async listTasks(ticket: string, options: TaskPageOptions = {}): Promise<Page<TaskRow, number>> {
    expectTicket(ticket);
    const after = afterIndex(options.after);
    const limit = pageLimit(options.limit);
    const state = options.state;
    if (state !== undefined && !['pending', 'running', 'done', 'failed'].includes(state)) {
      throw new InvalidOptionError(`Expected \`state\` to be one of pending, running, done, failed, got ${describeValue(state)}`);
    }
    return this.#tx(
      'listTasks',
      async (q) => {
        const { id, c } = await this.#peek(q, ticket);
        const next = (items: TaskRow[]): number | null => (items.length === limit ? (items[items.length - 1] as TaskRow).index : null);
        switch (state) {
          case undefined: {
            const items = await this.#page(q, id, c, after + 1, Math.min(after + limit, c.total - 1));
            return { items, next: next(items) };
          }
          case 'done':
          case 'failed': {
            const rows = await this.#q<{ idx: number; value: string }>(
              q,
              'SELECT idx, value FROM results WHERE job_id = $1 AND idx > $2 AND failed = $3 ORDER BY idx LIMIT $4',
              [id, after, state === 'failed', limit],
            );
            const inputs = new Map(
              (
                await this.#q<{ idx: number; input: string }>(q, 'SELECT idx, input FROM tasks WHERE job_id = $1 AND idx = ANY($2::int[])', [
                  id,
                  rows.map((r) => r.idx),
                ])
              ).map((t) => [t.idx, t.input]),
            );
            const items: TaskRow[] = rows.map((r) => ({
              index: r.idx,
              state,
              input: inputs.get(r.idx) ?? 'null',
              output: state === 'done' ? r.value : null,
              error: state === 'failed' ? decodeFailure(r.value) : null,
            }));
            return { items, next: next(items) };
          }
          case 'pending':
          case 'running': {
            // Requeued tasks first (pending, below the frontier), then a bounded scan of index ranges.
            const items: TaskRow[] = [];
            if (state === 'pending' && c.requeued > 0) {
              const idxs = (
                await this.#q<{ idx: number }>(q, 'SELECT idx FROM requeued WHERE job_id = $1 AND idx > $2 ORDER BY idx LIMIT $3', [id, after, limit])
              ).map((r) => r.idx);
              for (const i of idxs) items.push(...(await this.#page(q, id, c, i, i)));
              if (items.length === limit) return { items, next: next(items) };
            }
            let from = state === 'pending' ? Math.max(after + 1, c.frontier) : Math.max(after + 1, c.low);
            const end = state === 'pending' ? c.total : c.frontier;
            const stop = from + RUNNING_SCAN_BUDGET;
            while (items.length < limit && from < end && from < stop) {
              const hi = Math.min(from + Math.max(limit, 1000) - 1, end - 1, stop - 1);
              for (const t of await this.#page(q, id, c, from, hi)) if (t.state === state && items.length < limit) items.push(t);
              from = hi + 1;
            }
            if (items.length === limit) return { items, next: next(items) };
            return { items, next: from < end ? from - 1 : null };
          }
        }
        throw new InvalidOptionError(`Unknown task state ${describeValue(state)}`);
      },
      'read',
    );
  }

  async listFailures(ticket: string, options: { readonly after?: number; readonly limit?: number } = {}): Promise<Page<FailureRow, number>> {
    expectTicket(ticket);
    const after = afterIndex(options.after);
    const limit = pageLimit(options.limit);
    return this.#tx(
      'listFailures',
      async (q) => {
        const { id } = await this.#peek(q, ticket);
        const rows = await this.#q<{ idx: number; value: string }>(
          q,
          'SELECT idx, value FROM results WHERE job_id = $1 AND failed AND idx > $2 ORDER BY idx LIMIT $3',
          [id, after, limit],
        );
        const items = rows.map((r) => ({ index: r.idx, error: decodeFailure(r.value) }));
        return { items, next: items.length === limit ? (items[items.length - 1] as FailureRow).index : null };
      },
      'read',
    );
  }

  async *readResults(ticket: string, options: ReadResultsOptions = {}): AsyncIterable<ResultRow> {
    expectTicket(ticket);
    let after = afterIndex(options.after);
    const chunk = options.chunkSize ?? 10_000;
    expectInteger('chunkSize', chunk, 1, 1_000_000);
    const failedOnly = options.failedOnly ?? false;
    const sql = `SELECT idx, failed, value FROM results WHERE job_id = $1 AND idx > $2${failedOnly ? ' AND failed' : ''} ORDER BY idx LIMIT $3`;
    for (;;) {
      const rows = await this.#tx(
        'readResults',
        async (q) => {
          const { id } = await this.#peek(q, ticket);
          return this.#q<{ idx: number; failed: boolean; value: string }>(q, sql, [id, after, chunk]);
        },
        'read',
      );
      for (const r of rows) yield r.failed ? { index: r.idx, error: decodeFailure(r.value) } : { index: r.idx, output: r.value };
      if (rows.length < chunk) return;
      after = (rows[rows.length - 1] as { idx: number }).idx;
    }
  }

  async recount(ticket: string): Promise<TaskCounts> {
    expectTicket(ticket);
    return this.#tx(
      'recount',
      async (q) => {
        const { id, c } = await this.#peek(q, ticket);
        // A full scan by definition; keep the planner off nested loops over unanalysed tables.
        await q.query('SET LOCAL enable_nestloop = off');
        const requeued = 'EXISTS (SELECT 1 FROM requeued z WHERE z.job_id = t.job_id AND z.idx = t.idx)';
        const rows = await this.#q<TaskCounts>(
          q,
          `SELECT (SELECT count(*) FROM results WHERE job_id = $1 AND NOT failed) AS done,
                  (SELECT count(*) FROM results WHERE job_id = $1 AND failed) AS failed,
                  (SELECT count(*) FROM tasks t WHERE t.job_id = $1 AND ${UNSETTLED} AND (t.idx >= $2 OR ${requeued})) AS pending,
                  (SELECT count(*) FROM tasks t WHERE t.job_id = $1 AND ${UNSETTLED} AND t.idx < $2 AND NOT ${requeued}) AS running`,
          [id, c.frontier],
        );
        const r = rows[0] as TaskCounts;
        return { pending: r.pending, running: r.running, done: r.done, failed: r.failed };
      },
      'read',
    );
  }

  // ------------------------------------------------------------------ events

  async appendEvents(ticket: string, events: readonly NewEvent[]): Promise<number> {
    expectTicket(ticket);
    const encoded = checkEvents(events);
    return this.#tx(
      'appendEvents',
      async (q) => {
        const { id, c } = await this.#lock(q, ticket);
        if (encoded.length === 0) return c.lastSeq;
        await this.#q(
          q,
          'INSERT INTO events (job_id, seq, at, type, data) SELECT $1, $2 + u.o, $3, u.type, u.data FROM unnest($4::text[], $5::text[]) WITH ORDINALITY AS u(type, data, o)',
          [id, c.lastSeq, this.#now(), encoded.map((e) => e.type), encoded.map((e) => e.data)],
        );
        c.lastSeq += encoded.length;
        await this.#writeCounts(q, id, c);
        return c.lastSeq;
      },
      'hot',
    );
  }

  async readEvents(ticket: string, options: { readonly after?: number; readonly limit?: number } = {}): Promise<JobEvent[]> {
    expectTicket(ticket);
    const after = options.after ?? 0;
    expectInteger('after', after, 0);
    const limit = pageLimit(options.limit, 10_000, 1000);
    // One statement: the job row (absent: not found) and its events after `after` (none: a row of nulls).
    const rows = await this.#one<{ seq: number | null; at: number | null; type: string | null; data: string | null }>(
      'readEvents',
      `SELECT e.seq, e.at, e.type, e.data FROM jobs j LEFT JOIN LATERAL (SELECT seq, at, type, data FROM events WHERE job_id = j.id AND seq > $2 ORDER BY seq LIMIT $3) e ON true
       WHERE j.ticket = $1 AND j.state IN ${VISIBLE} ORDER BY e.seq`,
      [ticket, Math.min(after, 2 ** 31 - 1), limit],
    );
    if (rows.length === 0) throw new JobNotFoundError(ticket);
    return rows.flatMap((r) =>
      r.seq === null ? [] : [{ seq: r.seq, at: r.at as number, type: r.type as string, data: JSON.parse(r.data as string) as JsonValue }],
    );
  }

  // ------------------------------------------------------------------ tokens

  async createToken(spec: { readonly user: string; readonly admin?: boolean; readonly label?: string }): Promise<NewToken> {
    const { user, admin = false, label = '' } = spec ?? {};
    if (typeof user !== 'string' || user.length === 0 || user.length > 200)
      throw new InvalidOptionError(`Expected \`user\` to be a string of 1 to 200 characters, got ${describeValue(user)}`);
    if (typeof admin !== 'boolean') throw new InvalidOptionError(`Expected \`admin\` to be a boolean, got ${describeValue(admin)}`);
    if (typeof label !== 'string' || label.length > 200)
      throw new InvalidOptionError(`Expected \`label\` to be a string of at most 200 characters, got ${describeValue(label)}`);
    const t = newToken();
    const createdAt = this.#now();
    await this.#tx('createToken', (q) =>
      this.#q(q, 'INSERT INTO tokens (id, hash, "user", admin, label, created_at) VALUES ($1, $2, $3, $4, $5, $6)', [
        t.id,
        t.hash,
        user,
        admin,
        label,
        createdAt,
      ]),
    );
    return { token: t.token, id: t.id, user, admin, label, createdAt };
  }

  async findToken(token: string): Promise<TokenRecord | undefined> {
    if (typeof token !== 'string' || token.length === 0 || token.length > 1000) return undefined;
    const hash = sha256(token);
    const rows = await this.#one('findToken', 'SELECT id, "user", admin, label, created_at FROM tokens WHERE hash = $1', [hash]);
    return rows[0] === undefined ? undefined : tokenOf(rows[0]);
  }

  async listTokens(): Promise<TokenRecord[]> {
    return this.#tx(
      'listTokens',
      async (q) => (await this.#q(q, 'SELECT id, "user", admin, label, created_at FROM tokens ORDER BY created_at, id')).map(tokenOf),
      'read',
    );
  }

  async revokeToken(id: string): Promise<boolean> {
    if (typeof id !== 'string') return false;
    return this.#tx('revokeToken', async (q) => (await this.#q(q, 'DELETE FROM tokens WHERE id = $1 RETURNING id', [id])).length === 1);
  }

  // ------------------------------------------------------------------ optimisation

  async saveOptimizerState(ticket: string, state: OptimizerState, result?: JsonValue): Promise<boolean> {
    expectTicket(ticket);
    expectInteger('generation', state?.generation, 0, 2 ** 31 - 1);
    if (typeof state.state !== 'string') throw new InvalidOptionError(`Expected \`state.state\` to be JSON text (a string), got ${describeValue(state.state)}`);
    const resultText = result === undefined ? null : jsonText('result', result);
    return this.#tx('saveOptimizerState', async (q) => {
      const { id, c } = await this.#lock(q, ticket);
      const rows = await this.#q(
        q,
        'UPDATE jobs SET opt_generation = $2, opt_state = $3, result = COALESCE($4, result), updated_at = $5 WHERE id = $1 AND (opt_generation IS NULL OR opt_generation < $2) RETURNING id',
        [id, state.generation, state.state, resultText, this.#now()],
      );
      if (rows.length === 0) return false;
      await this.#event(q, id, c, 'generation', `{"generation":${state.generation},"result":${resultText ?? 'null'}}`);
      await this.#writeCounts(q, id, c);
      return true;
    });
  }

  async loadOptimizerState(ticket: string): Promise<OptimizerState | undefined> {
    expectTicket(ticket);
    return this.#tx(
      'loadOptimizerState',
      async (q) => {
        const { id } = await this.#peek(q, ticket);
        const rows = await this.#q<{ generation: number | null; state: string | null }>(
          q,
          'SELECT opt_generation AS generation, opt_state AS state FROM jobs WHERE id = $1',
          [id],
        );
        const r = rows[0];
        return r === undefined || r.generation === null || r.state === null ? undefined : { generation: r.generation, state: r.state };
      },
      'read',
    );
  }
  // ------------------------------------------------------------------ statistics

  async saveJobStats(ticket: string, stats: string): Promise<void> {
    expectTicket(ticket);
    checkStats(stats);
    await this.#tx('saveJobStats', async (q) => {
      const { id } = await this.#peek(q, ticket);
      await this.#q(
        q,
        'INSERT INTO job_stats (job_id, data, updated_at) VALUES ($1, $2, $3) ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at',
        [id, stats, this.#now()],
      );
    });
  }

  async loadJobStats(ticket: string): Promise<string | undefined> {
    expectTicket(ticket);
    return this.#tx(
      'loadJobStats',
      async (q) => {
        const { id } = await this.#peek(q, ticket);
        const rows = await this.#q<{ data: string }>(q, 'SELECT data FROM job_stats WHERE job_id = $1', [id]);
        return rows[0]?.data;
      },
      'read',
    );
  }

  async summary(): Promise<StoreSummary> {
    return this.#tx(
      'summary',
      async (q) =>
        summaryOf(
          await this.#q<{ state: string; jobs: number; pending: number; running: number; done: number; failed: number }>(
            q,
            `SELECT j.state AS state, count(*)::bigint AS jobs, sum(c.pending)::bigint AS pending, sum(c.running)::bigint AS running,
                    sum(c.done)::bigint AS done, sum(c.failed)::bigint AS failed
             FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.state IN ${VISIBLE} GROUP BY j.state`,
            [],
          ),
        ),
      'read',
    );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }
}

function countsRow(r: Row): CountsRow {
  return {
    total: r['total'] as number,
    pending: r['pending'] as number,
    running: r['running'] as number,
    done: r['done'] as number,
    failed: r['failed'] as number,
    frontier: r['frontier'] as number,
    low: r['low'] as number,
    requeued: r['requeued'] as number,
    lastSeq: r['lastSeq'] as number,
  };
}
