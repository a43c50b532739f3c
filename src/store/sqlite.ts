/**
 * The embedded job store: one SQLite file (better-sqlite3, WAL). The default store of
 * `taskfarm serve`.
 *
 * Durability: `journal_mode = WAL` with `synchronous = NORMAL`. A commit is written to the WAL
 * (the OS has it) before the call returns, so a killed process — the failure the manager must
 * survive — loses nothing committed; the WAL is fsynced at checkpoints, so an OS crash or a power
 * cut may lose the last transactions but never corrupts the file. `FULL` would add an fsync to
 * every commit (several hundred output batches a second at full speed) for protection against
 * power loss only.
 */
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { Worker } from 'node:worker_threads';
import { dirname, join } from 'node:path';
import type Database from 'better-sqlite3';
import { FarmError, InvalidOptionError, JobNotFoundError, JobStateError, StoreError } from '../errors.js';
import { describeValue, expectInteger } from '../util/validate.js';
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
import type { CheckpointerInit } from './sqlite-checkpointer.js';

/** Where the embedded store lives by default: `$XDG_DATA_HOME/taskfarm/jobs.db` or `~/.local/share/taskfarm/jobs.db`. */
export function defaultStorePath(): string {
  const xdg = process.env['XDG_DATA_HOME'];
  const base = xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.local', 'share');
  return join(base, 'taskfarm', 'jobs.db');
}

/** Options of {@link SqliteJobStore.open}. */
export interface SqliteJobStoreOptions {
  /**
   * SQLite's page cache, in MiB. The store's hot pages are few (the right edges of the task and
   * result trees, the counters), so a larger cache buys no throughput; it only adds to the manager's
   * RSS once a job outgrows it (64 MiB cost about 56 MB more peak RSS on a 10,000,000-task job).
   * @default 16
   */
  readonly cacheMiB?: number;
  /** Clock (ms since the epoch), for tests. @default Date.now */
  readonly now?: () => number;
  /**
   * Checkpoint the write-ahead log on a thread of its own (a second connection, every
   * `checkpointMs`) instead of inside the commits that fill it: a checkpoint fsyncs and copies
   * megabytes, and held the manager's event loop for up to ~20 ms. Not for `:memory:`. Until the
   * thread is ready, or if it fails, SQLite checkpoints in the commits as usual. @default true
   */
  readonly backgroundCheckpoints?: boolean;
  /** Interval of the background checkpoints, ms. @default 100 */
  readonly checkpointMs?: number;
}

type Row = Record<string, unknown>;
type Stmt = Database.Statement<unknown[], unknown>;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bundles (hash TEXT PRIMARY KEY, code TEXT NOT NULL, size INTEGER NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, user TEXT NOT NULL, admin INTEGER NOT NULL, label TEXT NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ticket TEXT NOT NULL UNIQUE,
  owner TEXT NOT NULL,
  name TEXT NOT NULL,
  kind TEXT NOT NULL,
  state TEXT NOT NULL,
  initial_state TEXT NOT NULL,
  program TEXT NOT NULL,
  options TEXT NOT NULL,
  params TEXT NOT NULL,
  error TEXT,
  result TEXT NOT NULL DEFAULT 'null',
  opt_generation INTEGER,
  opt_state TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, id);
CREATE TABLE IF NOT EXISTS job_counts (
  job_id INTEGER PRIMARY KEY,
  total INTEGER NOT NULL DEFAULT 0,
  pending INTEGER NOT NULL DEFAULT 0,
  running INTEGER NOT NULL DEFAULT 0,
  done INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0,
  frontier INTEGER NOT NULL DEFAULT 0,
  low INTEGER NOT NULL DEFAULT 0,
  requeued INTEGER NOT NULL DEFAULT 0,
  last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (job_id INTEGER NOT NULL, idx INTEGER NOT NULL, input TEXT NOT NULL, PRIMARY KEY (job_id, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (job_id INTEGER NOT NULL, idx INTEGER NOT NULL, failed INTEGER NOT NULL, value TEXT NOT NULL, PRIMARY KEY (job_id, idx)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS results_failed ON results (job_id, idx) WHERE failed = 1;
CREATE TABLE IF NOT EXISTS requeued (job_id INTEGER NOT NULL, idx INTEGER NOT NULL, PRIMARY KEY (job_id, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (job_id INTEGER NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_stats (job_id INTEGER PRIMARY KEY, data TEXT NOT NULL, updated_at INTEGER NOT NULL);
`;

const JOB_COLUMNS = `j.id, j.ticket, j.owner, j.name, j.kind, j.state, j.program, j.options, j.params, j.error, j.result, j.opt_generation,
  j.created_at, j.updated_at, j.started_at, j.finished_at, c.total, c.pending, c.running, c.done, c.failed, c.last_seq`;
const VISIBLE = `(${JOB_STATES.map((s) => `'${s}'`).join(', ')})`;
/** Rows per multi-row INSERT statement (smaller remainders use power-of-two statements). */
const INSERT_ROWS = 256;

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

function wrap(err: unknown, what: string): unknown {
  if (err instanceof FarmError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new StoreError(`SQLite job store: ${what} failed: ${message}`, { cause: err });
}

/**
 * {@link JobStore} on a SQLite file. Open with {@link SqliteJobStore.open}. All work happens
 * synchronously inside each call (better-sqlite3), so each method is atomic with respect to the
 * others in this process; transactions are `BEGIN IMMEDIATE` so a second process on the same file
 * waits (busy timeout 5 s) instead of failing midway.
 */
export class SqliteJobStore implements JobStore {
  readonly backend = 'sqlite' as const;
  /** The database file (or `:memory:`). */
  readonly path: string;
  readonly #db: Database.Database;
  readonly #now: () => number;
  readonly #stmts = new Map<string, Stmt>();
  #closed = false;
  #checkpointer: Worker | undefined;

  private constructor(db: Database.Database, path: string, now: () => number) {
    this.#db = db;
    this.path = path;
    this.#now = now;
  }

  /** Starts the checkpointer thread; commits stop checkpointing once it is ready, and again if it ends. */
  #startCheckpointer(intervalMs: number): void {
    const init: CheckpointerInit = { path: this.path, intervalMs, restartBytes: 16 * 1024 * 1024, restartWaitMs: 20 };
    const worker = new Worker(new URL('./sqlite-checkpointer.js', import.meta.url), { workerData: init });
    worker.unref();
    this.#checkpointer = worker;
    const inCommits = (on: boolean): void => {
      if (this.#closed) return;
      try {
        this.#db.pragma(`wal_autocheckpoint = ${on ? 1000 : 0}`);
      } catch {
        // the connection is closing
      }
    };
    worker.on('message', (msg: unknown) => {
      if (msg === 'ready') inCommits(false);
    });
    worker.on('error', () => inCommits(true));
    worker.on('exit', () => {
      if (this.#checkpointer === worker) this.#checkpointer = undefined;
      inCommits(true);
    });
  }

  /**
   * Opens (creating it, mode 0600, and its folder, mode 0700, when missing) the store at `path`.
   * @param path the file, `:memory:` for a private in-memory store. @default {@link defaultStorePath}()
   */
  static async open(path: string = defaultStorePath(), options: SqliteJobStoreOptions = {}): Promise<SqliteJobStore> {
    const cacheMiB = options.cacheMiB ?? 16;
    expectInteger('cacheMiB', cacheMiB, 1, 65_536);
    const checkpointMs = options.checkpointMs ?? 100;
    expectInteger('checkpointMs', checkpointMs, 1, 60_000);
    let db: Database.Database | undefined;
    try {
      if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      // Loaded here, not at import: `import 'taskfarm'` (a worker daemon, the CLI) never loads the native addon.
      const { default: Driver } = await import('better-sqlite3').catch((err: unknown) => {
        throw new StoreError(
          'The SQLite job store needs better-sqlite3 (an optional dependency of taskfarm), which is not installed or did not build: ' +
            `${(err as Error).message}. Install it with \`npm install better-sqlite3@12\` (it compiles from source: python3, make and a C++ compiler).`,
          { cause: err },
        );
      });
      const created = path !== ':memory:' && !existsSync(path);
      db = new Driver(path);
      // Job data and token hashes: owner-only (SQLite gives the -wal and -shm files the same mode).
      if (created) chmodSync(path, 0o600);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('busy_timeout = 5000');
      db.pragma(`cache_size = -${cacheMiB * 1024}`);
      db.pragma('temp_store = MEMORY');
      const migrate = db.transaction(() => {
        db!.exec(SCHEMA);
        const row = db!.prepare(`SELECT value FROM meta WHERE key = 'schema_version'`).get() as { value: string } | undefined;
        if (row === undefined) db!.prepare(`INSERT INTO meta (key, value) VALUES ('schema_version', ?)`).run(String(SCHEMA_VERSION));
        else if (Number(row.value) > SCHEMA_VERSION) {
          throw new StoreError(`The job store ${path} has schema version ${row.value}, newer than this taskfarm's (${SCHEMA_VERSION}): upgrade taskfarm`);
        }
      });
      migrate.immediate();
      const store = new SqliteJobStore(db, path, options.now ?? Date.now);
      if (path !== ':memory:' && options.backgroundCheckpoints !== false) store.#startCheckpointer(checkpointMs);
      return store;
    } catch (err) {
      db?.close();
      if (err instanceof FarmError) throw err;
      throw new StoreError(`Cannot open the job store ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }

  // ------------------------------------------------------------------ plumbing

  /** A cached prepared statement; `pluck` returns first columns, `raw` arrays. */
  #stmt(sql: string, mode: 'rows' | 'pluck' | 'raw' = 'rows'): Stmt {
    const key = mode + sql;
    let s = this.#stmts.get(key);
    if (s === undefined) {
      s = this.#db.prepare(sql);
      if (mode === 'pluck') s.pluck(true);
      else if (mode === 'raw') s.raw(true);
      this.#stmts.set(key, s);
    }
    return s;
  }

  /** Runs `fn` inside `begin` … COMMIT (ROLLBACK on a throw), mapping driver errors to StoreError. Cached statements: no wrapper per call. */
  #tx<T>(what: string, begin: string, fn: () => T): T {
    if (this.#closed) throw new StoreError('The job store is closed');
    try {
      this.#stmt(begin).run();
      try {
        const out = fn();
        this.#stmt('COMMIT').run();
        return out;
      } catch (err) {
        // SQLite may already have rolled back (SQLITE_FULL, SQLITE_IOERR…).
        if (this.#db.inTransaction) this.#stmt('ROLLBACK').run();
        throw err;
      }
    } catch (err) {
      throw wrap(err, what);
    }
  }

  /** One write transaction (BEGIN IMMEDIATE: the write lock is taken first, so it never fails midway on a busy upgrade). */
  #write<T>(what: string, fn: () => T): T {
    return this.#tx(what, 'BEGIN IMMEDIATE', fn);
  }

  /** One read transaction (a consistent snapshot across several statements). */
  #read<T>(what: string, fn: () => T): T {
    return this.#tx(what, 'BEGIN', fn);
  }

  /** One read statement, atomic by itself: no explicit transaction. */
  #one<T>(what: string, fn: () => T): T {
    if (this.#closed) throw new StoreError('The job store is closed');
    try {
      return fn();
    } catch (err) {
      throw wrap(err, what);
    }
  }

  /** Inserts `count` rows with multi-row statements: `INSERT_ROWS` at a time, the remainder in power-of-two pieces. */
  #insertMany(head: string, tuple: string, count: number, bind: (i: number, out: unknown[]) => void): void {
    let i = 0;
    const run = (size: number): void => {
      const args: unknown[] = [];
      for (let k = 0; k < size; k++) bind(i + k, args);
      this.#stmt(`${head} VALUES ${Array(size).fill(tuple).join(', ')}`).run(args);
      i += size;
    };
    while (count - i >= INSERT_ROWS) run(INSERT_ROWS);
    for (let size = INSERT_ROWS >> 1; size >= 1; size >>= 1) if (count - i >= size) run(size);
  }

  /** The internal id and state of a job, or undefined. */
  #job(ticket: string): { id: number; state: string } | undefined {
    return this.#stmt('SELECT id, state FROM jobs WHERE ticket = ?').get(ticket) as { id: number; state: string } | undefined;
  }

  /** A visible job (not submitting, not being removed), or JobNotFoundError. */
  #visible(ticket: string): { id: number; state: JobState } {
    const job = this.#job(ticket);
    if (job === undefined || !(JOB_STATES as readonly string[]).includes(job.state)) throw new JobNotFoundError(ticket);
    return job as { id: number; state: JobState };
  }

  #counts(jobId: number): CountsRow {
    return this.#stmt('SELECT total, pending, running, done, failed, frontier, low, requeued, last_seq AS lastSeq FROM job_counts WHERE job_id = ?').get(
      jobId,
    ) as CountsRow;
  }

  #writeCounts(jobId: number, c: CountsRow): void {
    this.#stmt(
      'UPDATE job_counts SET total = ?, pending = ?, running = ?, done = ?, failed = ?, frontier = ?, low = ?, requeued = ?, last_seq = ? WHERE job_id = ?',
    ).run(c.total, c.pending, c.running, c.done, c.failed, c.frontier, c.low, c.requeued, c.lastSeq, jobId);
  }

  #jobRecord(jobId: number): JobRecord {
    return toJob(this.#stmt(`SELECT ${JOB_COLUMNS} FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.id = ?`).get(jobId) as Row);
  }

  #event(jobId: number, c: CountsRow, type: string, data: string): void {
    c.lastSeq += 1;
    this.#stmt('INSERT INTO events (job_id, seq, at, type, data) VALUES (?, ?, ?, ?, ?)').run(jobId, c.lastSeq, this.#now(), type, data);
  }

  /** True when the task is settled (done or failed). */
  #settled(jobId: number, idx: number): boolean {
    return this.#stmt('SELECT 1 FROM results WHERE job_id = ? AND idx = ?').get(jobId, idx) !== undefined;
  }

  /**
   * The first unsettled index at or above `from` (or `total`). Task indices are contiguous, so a
   * range [lo, hi) is all settled exactly when it holds hi − lo results: counts (in SQLite, no row
   * comes to JavaScript) gallop forward over settled ranges, then halve the range that has a gap.
   */
  #firstUnsettled(jobId: number, from: number, total: number): number {
    const count = this.#stmt('SELECT count(*) FROM results WHERE job_id = ? AND idx >= ? AND idx < ?', 'pluck');
    let lo = from;
    let step = 64;
    while (lo < total) {
      const hi = Math.min(lo + step, total);
      if ((count.get(jobId, lo, hi) as number) === hi - lo) {
        lo = hi;
        step *= 2;
        continue;
      }
      // A gap in [lo, hi); every index below lo is settled.
      let b = hi;
      while (b - lo > 1) {
        const mid = lo + ((b - lo) >> 1);
        if ((count.get(jobId, lo, mid) as number) === mid - lo) lo = mid;
        else b = mid;
      }
      return lo;
    }
    return total;
  }

  /** Every running task of the job back to pending: the frontier moves back to the first unsettled index. */
  #resetClaims(jobId: number, c: CountsRow): number {
    const requeued = c.running;
    c.low = this.#firstUnsettled(jobId, c.low, c.total);
    c.frontier = c.low;
    if (c.requeued > 0) this.#stmt('DELETE FROM requeued WHERE job_id = ?').run(jobId);
    c.requeued = 0;
    c.pending += c.running;
    c.running = 0;
    return requeued;
  }

  /** Chunked delete of every row of a job (each chunk its own transaction), then the job itself. */
  async #purge(jobId: number): Promise<void> {
    const { total, lastSeq } = this.#read('purge', () => (this.#counts(jobId) as CountsRow | undefined) ?? { total: 0, lastSeq: 0 });
    for (const [table, key, end] of [
      ['tasks', 'idx', total],
      ['results', 'idx', total],
      ['events', 'seq', lastSeq + 1],
    ] as const) {
      for (let lo = 0; lo < end; lo += DELETE_CHUNK) {
        this.#write('purge', () => this.#stmt(`DELETE FROM ${table} WHERE job_id = ? AND ${key} >= ? AND ${key} < ?`).run(jobId, lo, lo + DELETE_CHUNK));
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
    this.#write('purge', () => {
      this.#stmt('DELETE FROM requeued WHERE job_id = ?').run(jobId);
      this.#stmt('DELETE FROM job_stats WHERE job_id = ?').run(jobId);
      this.#stmt('DELETE FROM job_counts WHERE job_id = ?').run(jobId);
      this.#stmt('DELETE FROM jobs WHERE id = ?').run(jobId);
    });
  }

  // ------------------------------------------------------------------ programs

  async putBundles(bundles: readonly Bundle[]): Promise<number> {
    checkBundles(bundles);
    return this.#write('putBundles', () => {
      let added = 0;
      const now = this.#now();
      const ins = this.#stmt('INSERT OR IGNORE INTO bundles (hash, code, size, created_at) VALUES (?, ?, ?, ?)');
      for (const b of bundles) added += ins.run(b.hash, b.code, Buffer.byteLength(b.code), now).changes;
      return added;
    });
  }

  async missingBundles(hashes: readonly string[]): Promise<string[]> {
    checkHashes(hashes);
    return this.#read('missingBundles', () => {
      const has = this.#stmt('SELECT 1 FROM bundles WHERE hash = ?');
      return [...new Set(hashes)].filter((h) => has.get(h) === undefined);
    });
  }

  async getBundles(hashes: readonly string[]): Promise<Bundle[]> {
    checkHashes(hashes);
    return this.#read('getBundles', () => {
      const get = this.#stmt('SELECT hash, code FROM bundles WHERE hash = ?');
      return [...new Set(hashes)].flatMap((h) => (get.get(h) as Bundle | undefined) ?? []);
    });
  }

  // ------------------------------------------------------------------ submitting

  async createJob(job: NewJob): Promise<string> {
    const spec = checkNewJob(job);
    return this.#write('createJob', () => {
      const has = this.#stmt('SELECT 1 FROM bundles WHERE hash = ?');
      for (const [i, s] of spec.program.entries()) {
        if (has.get(s.hash) === undefined) throw new InvalidOptionError(`\`program[${i}]\` (${s.name}): bundle ${s.hash} is not stored: upload it first`);
      }
      const ticket = newTicket();
      const now = this.#now();
      const { lastInsertRowid } = this.#stmt(
        `INSERT INTO jobs (ticket, owner, name, kind, state, initial_state, program, options, params, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(ticket, spec.owner, spec.name, spec.kind, SUBMITTING, spec.initialState, spec.programText, spec.optionsText, spec.paramsText, now, now);
      this.#stmt('INSERT INTO job_counts (job_id) VALUES (?)').run(lastInsertRowid);
      return ticket;
    });
  }

  #submitting(ticket: string): number {
    expectTicket(ticket);
    const job = this.#job(ticket);
    if (job === undefined || job.state === REMOVING) throw new JobNotFoundError(ticket);
    if (job.state !== SUBMITTING) throw new JobStateError(ticket, job.state, `Job ${ticket} is ${job.state}: its submit has already committed`);
    return job.id;
  }

  async appendInputs(ticket: string, inputs: readonly string[]): Promise<number> {
    checkInputs(inputs);
    return this.#write('appendInputs', () => {
      const id = this.#submitting(ticket);
      const c = this.#counts(id);
      const first = c.total;
      // One statement per batch: the texts travel as one JSON array of strings that SQLite splits
      // itself (json_each gives each string back exactly, unquoted), a third faster than binding
      // three parameters per row.
      if (inputs.length > 0)
        this.#stmt('INSERT INTO tasks (job_id, idx, input) SELECT ?, ? + key, value FROM json_each(?)').run(id, first, JSON.stringify(inputs));
      c.total += inputs.length;
      c.pending += inputs.length;
      this.#writeCounts(id, c);
      return c.total;
    });
  }

  async commitSubmit(ticket: string): Promise<JobRecord> {
    return this.#write('commitSubmit', () => {
      const id = this.#submitting(ticket);
      const { initial_state: to } = this.#stmt('SELECT initial_state FROM jobs WHERE id = ?').get(id) as { initial_state: JobState };
      this.#stmt('UPDATE jobs SET state = ?, updated_at = ? WHERE id = ?').run(to, this.#now(), id);
      const c = this.#counts(id);
      this.#event(id, c, 'state', JSON.stringify({ state: to, from: SUBMITTING, total: c.total }));
      this.#writeCounts(id, c);
      return this.#jobRecord(id);
    });
  }

  async abortSubmit(ticket: string): Promise<void> {
    const id = this.#write('abortSubmit', () => {
      const id = this.#submitting(ticket);
      this.#stmt('UPDATE jobs SET state = ? WHERE id = ?').run(REMOVING, id);
      return id;
    });
    await this.#purge(id);
  }

  // ------------------------------------------------------------------ jobs

  async getJob(ticket: string): Promise<JobRecord | undefined> {
    if (typeof ticket !== 'string') return undefined;
    return this.#one('getJob', () => {
      const row = this.#stmt(`SELECT ${JOB_COLUMNS} FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.ticket = ? AND j.state IN ${VISIBLE}`).get(
        ticket,
      ) as Row | undefined;
      return row === undefined ? undefined : toJob(row);
    });
  }

  async listJobs(options: JobListOptions = {}): Promise<Page<JobRecord, string>> {
    const states = checkStates(options.states);
    const limit = pageLimit(options.limit);
    let before = Number.MAX_SAFE_INTEGER;
    if (options.after !== undefined) {
      before = Number(options.after);
      if (!/^\d+$/.test(options.after) || !Number.isSafeInteger(before))
        throw new InvalidOptionError(`Expected \`after\` to be a cursor from a previous page, got ${describeValue(options.after)}`);
    }
    if (options.owner !== undefined && typeof options.owner !== 'string')
      throw new InvalidOptionError(`Expected \`owner\` to be a string, got ${describeValue(options.owner)}`);
    if (states.length === 0) return { items: [], next: null };
    return this.#one('listJobs', () => {
      const stateList = `(${states.map(() => '?').join(', ')})`;
      const sql =
        `SELECT ${JOB_COLUMNS} FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.state IN ${stateList}` +
        (options.owner !== undefined ? ' AND j.owner = ?' : '') +
        ' AND j.id < ? ORDER BY j.id DESC LIMIT ?';
      const args: unknown[] = [...states];
      if (options.owner !== undefined) args.push(options.owner);
      args.push(before, limit + 1);
      const rows = this.#stmt(sql).all(args) as Row[];
      const more = rows.length > limit;
      if (more) rows.pop();
      return { items: rows.map(toJob), next: more ? String(rows[rows.length - 1]?.['id']) : null };
    });
  }

  #transition(ticket: string, op: keyof typeof TRANSITIONS, error?: JobError): Transition {
    expectTicket(ticket);
    const errorText = checkJobError(error);
    return this.#write(op, () => {
      const job = this.#visible(ticket);
      const t = TRANSITIONS[op];
      if (!(t.from as readonly string[]).includes(job.state)) return { changed: false, job: this.#jobRecord(job.id) };
      const now = this.#now();
      const finished = t.to === 'done' || t.to === 'failed' || t.to === 'cancelled';
      this.#stmt(
        `UPDATE jobs SET state = ?, updated_at = ?, started_at = CASE WHEN ? AND started_at IS NULL THEN ? ELSE started_at END,
         finished_at = CASE WHEN ? THEN ? ELSE finished_at END, error = COALESCE(?, error) WHERE id = ?`,
      ).run(t.to, now, t.to === 'running' ? 1 : 0, now, finished ? 1 : 0, now, errorText, job.id);
      const c = this.#counts(job.id);
      if (t.resetClaims) this.#resetClaims(job.id, c);
      const data: Record<string, unknown> = { state: t.to, from: job.state };
      if (error !== undefined) data['error'] = JSON.parse(errorText as string) as unknown;
      this.#event(job.id, c, 'state', JSON.stringify(data));
      this.#writeCounts(job.id, c);
      return { changed: true, job: this.#jobRecord(job.id) };
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
    return this.#write('resubmitJob', () => {
      const job = this.#visible(ticket);
      if (!RESUBMITTABLE.includes(job.state)) return { changed: false, job: this.#jobRecord(job.id) };
      const c = this.#counts(job.id);
      if (options.failedOnly) {
        const first = this.#stmt('SELECT min(idx) AS m FROM results WHERE job_id = ? AND failed = 1').get(job.id) as { m: number | null };
        this.#stmt('DELETE FROM results WHERE job_id = ? AND failed = 1').run(job.id);
        if (first.m !== null) c.low = Math.min(c.low, first.m);
        c.pending += c.failed;
        c.failed = 0;
      } else {
        this.#stmt('DELETE FROM results WHERE job_id = ?').run(job.id);
        c.pending += c.done + c.failed;
        c.done = 0;
        c.failed = 0;
        c.low = 0;
      }
      this.#resetClaims(job.id, c);
      this.#stmt('UPDATE jobs SET state = ?, updated_at = ?, finished_at = NULL, error = NULL WHERE id = ?').run('queued', this.#now(), job.id);
      this.#event(job.id, c, 'state', JSON.stringify({ state: 'queued', from: job.state, resubmitted: options.failedOnly ? 'failed' : 'all' }));
      this.#writeCounts(job.id, c);
      return { changed: true, job: this.#jobRecord(job.id) };
    });
  }

  async removeJob(ticket: string): Promise<boolean> {
    if (typeof ticket !== 'string') return false;
    const id = this.#write('removeJob', () => {
      const job = this.#job(ticket);
      if (job === undefined || !(JOB_STATES as readonly string[]).includes(job.state)) return undefined;
      this.#stmt('UPDATE jobs SET state = ? WHERE id = ?').run(REMOVING, job.id);
      return job.id;
    });
    if (id === undefined) return false;
    await this.#purge(id);
    return true;
  }

  async setJobResult(ticket: string, result: JsonValue): Promise<void> {
    expectTicket(ticket);
    const text = jsonText('result', result);
    this.#write('setJobResult', () => {
      const job = this.#visible(ticket);
      this.#stmt('UPDATE jobs SET result = ?, updated_at = ? WHERE id = ?').run(text, this.#now(), job.id);
    });
  }

  // ------------------------------------------------------------------ dispatch

  async claimTasks(ticket: string, max: number): Promise<ClaimedTask[]> {
    const out: ClaimedTask[] = [];
    this.#claim('claimTasks', ticket, max, (index, input) => void out.push({ index, input }));
    return out;
  }

  async claimBatch(ticket: string, max: number): Promise<ClaimedBatch> {
    const claim = new ClaimCollector();
    this.#claim('claimBatch', ticket, max, claim.row, (jobId, lo, hi) => {
      // A range with no settled task: its inputs as one string, in index order (the subquery's
      // ORDER BY is the primary key's: no sort), and its indices without reading them.
      const sql = "SELECT group_concat(input, ',') FROM (SELECT input FROM tasks WHERE job_id = ? AND idx >= ? AND idx <= ? ORDER BY idx)";
      claim.range(lo, hi, this.#stmt(sql, 'pluck').get(jobId, lo, hi) as string);
    });
    return claim.batch();
  }

  /**
   * The claim of {@link claimTasks} / {@link claimBatch}: requeued tasks (each to `row`), then
   * fresh ranges from the frontier — to `range` when given and the range has no settled task,
   * else each unsettled task to `row`. One transaction.
   */
  #claim(
    what: string,
    ticket: string,
    max: number,
    row: (index: number, input: string) => void,
    range?: (jobId: number, lo: number, hi: number) => void,
  ): void {
    expectTicket(ticket);
    checkMax(max);
    this.#write(what, () => {
      const job = this.#visible(ticket);
      if (job.state !== 'running') return;
      const c = this.#counts(job.id);
      let n = 0;
      if (c.requeued > 0) {
        const rows = this.#stmt(
          'SELECT q.idx, t.input FROM requeued q JOIN tasks t ON t.job_id = q.job_id AND t.idx = q.idx WHERE q.job_id = ? ORDER BY q.idx LIMIT ?',
          'raw',
        ).all(job.id, max) as [number, string][];
        if (rows.length > 0) {
          this.#stmt('DELETE FROM requeued WHERE job_id = ? AND idx <= ?').run(job.id, (rows[rows.length - 1] as [number, string])[0]);
          c.requeued -= rows.length;
          for (const [index, input] of rows) row(index, input);
          n += rows.length;
        }
      }
      // Fresh tasks from the frontier: a primary-key range of tasks minus the (usually empty) settled set in it.
      while (n < max && c.frontier < c.total) {
        const lo = c.frontier;
        const hi = Math.min(lo + (max - n) - 1, c.total - 1);
        const settled = this.#stmt('SELECT idx FROM results WHERE job_id = ? AND idx >= ? AND idx <= ?', 'pluck').all(job.id, lo, hi) as number[];
        if (settled.length === 0 && range !== undefined) {
          range(job.id, lo, hi);
          n += hi - lo + 1;
        } else {
          const skip = settled.length === 0 ? undefined : new Set(settled);
          const rows = this.#stmt('SELECT idx, input FROM tasks WHERE job_id = ? AND idx >= ? AND idx <= ?', 'raw').all(job.id, lo, hi) as [number, string][];
          for (const [index, input] of rows) {
            if (skip?.has(index) === true) continue;
            row(index, input);
            n++;
          }
        }
        c.frontier = hi + 1;
      }
      if (n > 0) {
        c.pending -= n;
        c.running += n;
        this.#writeCounts(job.id, c);
      }
    });
  }

  /**
   * Settles entries. Duplicates (an entry for a task already settled) are rare — the pool settles
   * each task once, so only a late result of an earlier run of the job is one — so the first attempt
   * inserts without looking: the primary key refuses a duplicate, the transaction rolls back, and a
   * second one reads which entries are settled first.
   */
  #settle<T extends { readonly index: number }>(
    what: string,
    ticket: string,
    entries: readonly T[],
    ok: (e: T, i: number) => void,
    failed: 0 | 1,
    value: (e: T) => string,
  ): SettleResult {
    expectTicket(ticket);
    try {
      return this.#write(what, () => this.#settleIn(ticket, entries, ok, failed, value, false));
    } catch (err) {
      if (!(err instanceof StoreError) || (err.cause as { code?: unknown } | undefined)?.code !== 'SQLITE_CONSTRAINT_PRIMARYKEY') throw err;
      return this.#write(what, () => this.#settleIn(ticket, entries, ok, failed, value, true));
    }
  }

  #settleIn<T extends { readonly index: number }>(
    ticket: string,
    entries: readonly T[],
    ok: (e: T, i: number) => void,
    failed: 0 | 1,
    value: (e: T) => string,
    checked: boolean,
  ): SettleResult {
    const job = this.#visible(ticket);
    const c = this.#counts(job.id);
    const { unique, repeated } = dedupe(entries, c.total, ok);
    if (unique.length === 0) return { accepted: 0, rejected: repeated, counts: countsOf(c) };
    const rejected: number[] = [];
    let fresh: readonly T[] = unique;
    if (checked) {
      const lo = (unique[0] as T).index;
      const hi = (unique[unique.length - 1] as T).index;
      // Already settled? One range read when the batch is dense, else one lookup per entry.
      const isSettled =
        hi - lo < 4 * unique.length + 64
          ? (
              (settled: Set<number>) => (idx: number) =>
                settled.has(idx)
            )(new Set(this.#stmt('SELECT idx FROM results WHERE job_id = ? AND idx >= ? AND idx <= ?', 'pluck').all(job.id, lo, hi) as number[]))
          : (idx: number) => this.#settled(job.id, idx);
      const kept: T[] = [];
      for (const e of unique) {
        if (isSettled(e.index)) rejected.push(e.index);
        else kept.push(e);
      }
      fresh = kept;
    }
    this.#insertResults(job.id, fresh, failed, value);
    let wasPending = 0;
    if (c.requeued > 0) {
      const del = this.#stmt('DELETE FROM requeued WHERE job_id = ? AND idx = ?');
      for (const e of fresh) {
        if (e.index >= c.frontier) wasPending++;
        else if (del.run(job.id, e.index).changes === 1) {
          wasPending++;
          c.requeued--;
        }
      }
    } else for (const e of fresh) if (e.index >= c.frontier) wasPending++;
    c.pending -= wasPending;
    c.running -= fresh.length - wasPending;
    if (failed === 1) c.failed += fresh.length;
    else c.done += fresh.length;
    // Keep `low` close behind the settled prefix (amortised), so a reset after a restart walks only
    // the tasks that were in flight, not the whole job. The batch (sorted) extends it first.
    const next = lowAfter(fresh, c.low);
    if (next !== undefined) c.low = this.#firstUnsettled(job.id, next, c.total);
    this.#writeCounts(job.id, c);
    for (const r of repeated) rejected.push(r);
    return { accepted: fresh.length, rejected, counts: countsOf(c) };
  }

  /**
   * Inserts results (sorted by index, none settled yet: a duplicate throws the primary key's
   * error). Runs of consecutive indices go as one statement each, their values one JSON array
   * that SQLite splits itself (`? + key` gives the index); a batch with short runs goes as
   * multi-row statements.
   */
  #insertResults<T extends { readonly index: number }>(jobId: number, fresh: readonly T[], failed: 0 | 1, value: (e: T) => string): void {
    if (fresh.length === 0) return;
    let runs = 1;
    for (let k = 1; k < fresh.length; k++) if ((fresh[k] as T).index !== (fresh[k - 1] as T).index + 1) runs++;
    if (runs * 8 > fresh.length) {
      this.#insertMany('INSERT INTO results (job_id, idx, failed, value)', `(?, ?, ${failed}, ?)`, fresh.length, (i, out) => {
        const e = fresh[i] as T;
        out.push(jobId, e.index, value(e));
      });
      return;
    }
    const ins = this.#stmt(`INSERT INTO results (job_id, idx, failed, value) SELECT ?, ? + key, ${failed}, value FROM json_each(?)`);
    let start = 0;
    const values: string[] = [];
    for (let k = 0; k < fresh.length; k++) {
      const e = fresh[k] as T;
      values.push(value(e));
      if (k + 1 === fresh.length || (fresh[k + 1] as T).index !== e.index + 1) {
        ins.run(jobId, (fresh[start] as T).index, JSON.stringify(values));
        values.length = 0;
        start = k + 1;
      }
    }
  }

  async commitOutputs(ticket: string, outputs: readonly OutputEntry[]): Promise<SettleResult> {
    return this.#settle('commitOutputs', ticket, outputs, outputOk, 0, (e) => e.output);
  }

  async failTasks(ticket: string, failures: readonly FailureEntry[]): Promise<SettleResult> {
    return this.#settle('failTasks', ticket, failures, failureOk, 1, (e) => encodeFailure(e.error));
  }

  async requeueTasks(ticket: string, indices: readonly number[]): Promise<number> {
    expectTicket(ticket);
    if (!Array.isArray(indices)) throw new InvalidOptionError(`Expected \`indices\` to be an array, got ${describeValue(indices)}`);
    return this.#write('requeueTasks', () => {
      const job = this.#visible(ticket);
      const c = this.#counts(job.id);
      const ins = this.#stmt('INSERT OR IGNORE INTO requeued (job_id, idx) VALUES (?, ?)');
      let n = 0;
      for (const [i, idx] of indices.entries()) {
        if (typeof idx !== 'number' || !Number.isInteger(idx))
          throw new InvalidOptionError(`Expected \`indices[${i}]\` to be an integer, got ${describeValue(idx)}`);
        if (idx < c.low || idx >= c.frontier || this.#settled(job.id, idx)) continue;
        n += ins.run(job.id, idx).changes;
      }
      if (n > 0) {
        c.running -= n;
        c.pending += n;
        c.requeued += n;
        this.#writeCounts(job.id, c);
      }
      return n;
    });
  }

  async recover(): Promise<RecoveryReport> {
    const { requeued, dead } = this.#write('recover', () => {
      let requeued = 0;
      const ids = this.#stmt(
        `SELECT c.job_id AS id FROM job_counts c JOIN jobs j ON j.id = c.job_id WHERE (c.running > 0 OR c.requeued > 0) AND j.state IN ${VISIBLE}`,
        'pluck',
      ).all() as number[];
      for (const id of ids) {
        const c = this.#counts(id);
        requeued += this.#resetClaims(id, c);
        this.#writeCounts(id, c);
      }
      const dead = this.#stmt('SELECT id, state FROM jobs WHERE state IN (?, ?)').all(SUBMITTING, REMOVING) as { id: number; state: string }[];
      this.#stmt('UPDATE jobs SET state = ? WHERE state = ?').run(REMOVING, SUBMITTING);
      return { requeued, dead };
    });
    for (const d of dead) await this.#purge(d.id);
    return { requeued, abandonedSubmits: dead.filter((d) => d.state === SUBMITTING).length, purged: dead.filter((d) => d.state === REMOVING).length };
  }

  // ------------------------------------------------------------------ pages and results

  /** Task rows for indices in [lo, hi] with their results and requeue flags, classified. */
  #rows(jobId: number, c: CountsRow, sql: string, args: unknown[]): TaskRow[] {
    const rows = this.#stmt(sql).all(args) as { idx: number; input: string; failed: number | null; value: string | null }[];
    if (rows.length === 0) return [];
    const lo = (rows[0] as { idx: number }).idx;
    const hi = (rows[rows.length - 1] as { idx: number }).idx;
    const requeued =
      c.requeued > 0
        ? new Set(this.#stmt('SELECT idx FROM requeued WHERE job_id = ? AND idx >= ? AND idx <= ?', 'pluck').all(jobId, lo, hi) as number[])
        : undefined;
    return rows.map((r) => {
      const state: TaskState =
        r.failed === 1 ? 'failed' : r.failed === 0 ? 'done' : r.idx >= c.frontier || requeued?.has(r.idx) === true ? 'pending' : 'running';
      return { index: r.idx, state, input: r.input, output: r.failed === 0 ? r.value : null, error: r.failed === 1 ? decodeFailure(r.value as string) : null };
    });
  }

  async listTasks(ticket: string, options: TaskPageOptions = {}): Promise<Page<TaskRow, number>> {
    expectTicket(ticket);
    const after = afterIndex(options.after);
    const limit = pageLimit(options.limit);
    const state = options.state;
    if (state !== undefined && !['pending', 'running', 'done', 'failed'].includes(state)) {
      throw new InvalidOptionError(`Expected \`state\` to be one of pending, running, done, failed, got ${describeValue(state)}`);
    }
    return this.#read('listTasks', () => {
      const job = this.#visible(ticket);
      const c = this.#counts(job.id);
      const base = 'SELECT t.idx, t.input, r.failed, r.value FROM tasks t LEFT JOIN results r ON r.job_id = t.job_id AND r.idx = t.idx WHERE t.job_id = ?';
      const unsettled = 'AND NOT EXISTS (SELECT 1 FROM results x WHERE x.job_id = t.job_id AND x.idx = t.idx)';
      let items: TaskRow[] = [];
      switch (state) {
        case undefined:
          items = this.#rows(job.id, c, `${base} AND t.idx > ? ORDER BY t.idx LIMIT ?`, [job.id, after, limit]);
          break;
        case 'done':
        case 'failed': {
          const sql =
            'SELECT r.idx, t.input, r.failed, r.value FROM results r JOIN tasks t ON t.job_id = r.job_id AND t.idx = r.idx WHERE r.job_id = ? AND r.idx > ? AND r.failed = ? ORDER BY r.idx LIMIT ?';
          items = this.#rows(job.id, c, sql, [job.id, after, state === 'failed' ? 1 : 0, limit]);
          break;
        }
        case 'pending': {
          // Requeued tasks (below the frontier) and unclaimed ones (from the frontier), merged by index.
          const requeued =
            c.requeued > 0
              ? this.#rows(job.id, c, `${base} AND t.idx > ? AND t.idx IN (SELECT idx FROM requeued WHERE job_id = ?) ORDER BY t.idx LIMIT ?`, [
                  job.id,
                  after,
                  job.id,
                  limit,
                ])
              : [];
          const fresh = this.#rows(job.id, c, `${base} AND t.idx > ? AND t.idx >= ? ${unsettled} ORDER BY t.idx LIMIT ?`, [job.id, after, c.frontier, limit]);
          items = [...requeued, ...fresh].sort((a, b) => a.index - b.index).slice(0, limit);
          break;
        }
        case 'running': {
          // Running = below the frontier, unsettled, not requeued: examine a bounded index range per call.
          const from = Math.max(after + 1, c.low);
          const to = Math.min(from + RUNNING_SCAN_BUDGET, c.frontier);
          items = this.#rows(
            job.id,
            c,
            `${base} AND t.idx >= ? AND t.idx < ? ${unsettled} AND t.idx NOT IN (SELECT idx FROM requeued WHERE job_id = ?) ORDER BY t.idx LIMIT ?`,
            [job.id, from, to, job.id, limit],
          );
          if (items.length < limit) return { items, next: to < c.frontier ? to - 1 : null };
          break;
        }
      }
      return { items, next: items.length === limit ? (items[items.length - 1] as TaskRow).index : null };
    });
  }

  async listFailures(ticket: string, options: { readonly after?: number; readonly limit?: number } = {}): Promise<Page<FailureRow, number>> {
    expectTicket(ticket);
    const after = afterIndex(options.after);
    const limit = pageLimit(options.limit);
    return this.#read('listFailures', () => {
      const job = this.#visible(ticket);
      const rows = this.#stmt('SELECT idx, value FROM results WHERE job_id = ? AND failed = 1 AND idx > ? ORDER BY idx LIMIT ?').all(job.id, after, limit) as {
        idx: number;
        value: string;
      }[];
      const items = rows.map((r) => ({ index: r.idx, error: decodeFailure(r.value) }));
      return { items, next: items.length === limit ? (items[items.length - 1] as FailureRow).index : null };
    });
  }

  async *readResults(ticket: string, options: ReadResultsOptions = {}): AsyncIterable<ResultRow> {
    expectTicket(ticket);
    let after = afterIndex(options.after);
    const chunk = options.chunkSize ?? 10_000;
    expectInteger('chunkSize', chunk, 1, 1_000_000);
    const failedOnly = options.failedOnly ?? false;
    const sql = `SELECT idx, failed, value FROM results WHERE job_id = ? AND idx > ?${failedOnly ? ' AND failed = 1' : ''} ORDER BY idx LIMIT ?`;
    for (;;) {
      const rows = this.#read('readResults', () => {
        const job = this.#visible(ticket);
        return this.#stmt(sql, 'raw').all(job.id, after, chunk) as [number, number, string][];
      });
      for (const [idx, failed, value] of rows) yield failed === 1 ? { index: idx, error: decodeFailure(value) } : { index: idx, output: value };
      if (rows.length < chunk) return;
      after = (rows[rows.length - 1] as [number, number, string])[0];
    }
  }

  async recount(ticket: string): Promise<TaskCounts> {
    expectTicket(ticket);
    return this.#read('recount', () => {
      const job = this.#visible(ticket);
      const c = this.#counts(job.id);
      const n = (sql: string, ...args: unknown[]): number => this.#stmt(sql, 'pluck').get(args) as number;
      const unsettled = 'NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = t.job_id AND r.idx = t.idx)';
      const requeued = 'EXISTS (SELECT 1 FROM requeued q WHERE q.job_id = t.job_id AND q.idx = t.idx)';
      return {
        done: n('SELECT count(*) FROM results WHERE job_id = ? AND failed = 0', job.id),
        failed: n('SELECT count(*) FROM results WHERE job_id = ? AND failed = 1', job.id),
        pending: n(`SELECT count(*) FROM tasks t WHERE t.job_id = ? AND ${unsettled} AND (t.idx >= ? OR ${requeued})`, job.id, c.frontier),
        running: n(`SELECT count(*) FROM tasks t WHERE t.job_id = ? AND ${unsettled} AND t.idx < ? AND NOT ${requeued}`, job.id, c.frontier),
      };
    });
  }

  // ------------------------------------------------------------------ events

  async appendEvents(ticket: string, events: readonly NewEvent[]): Promise<number> {
    expectTicket(ticket);
    const encoded = checkEvents(events);
    return this.#write('appendEvents', () => {
      const job = this.#visible(ticket);
      const c = this.#counts(job.id);
      for (const e of encoded) this.#event(job.id, c, e.type, e.data);
      if (encoded.length > 0) this.#writeCounts(job.id, c);
      return c.lastSeq;
    });
  }

  async readEvents(ticket: string, options: { readonly after?: number; readonly limit?: number } = {}): Promise<JobEvent[]> {
    expectTicket(ticket);
    const after = options.after ?? 0;
    expectInteger('after', after, 0);
    const limit = pageLimit(options.limit, 10_000, 1000);
    return this.#read('readEvents', () => {
      const job = this.#visible(ticket);
      const rows = this.#stmt('SELECT seq, at, type, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?').all(job.id, after, limit) as {
        seq: number;
        at: number;
        type: string;
        data: string;
      }[];
      return rows.map((r) => ({ seq: r.seq, at: r.at, type: r.type, data: JSON.parse(r.data) as JsonValue }));
    });
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
    this.#write('createToken', () =>
      this.#stmt('INSERT INTO tokens (id, hash, user, admin, label, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(
        t.id,
        t.hash,
        user,
        admin ? 1 : 0,
        label,
        createdAt,
      ),
    );
    return { token: t.token, id: t.id, user, admin, label, createdAt };
  }

  async findToken(token: string): Promise<TokenRecord | undefined> {
    if (typeof token !== 'string' || token.length === 0 || token.length > 1000) return undefined;
    const hash = sha256(token);
    return this.#one('findToken', () => {
      const r = this.#stmt('SELECT id, user, admin, label, created_at FROM tokens WHERE hash = ?').get(hash) as Row | undefined;
      return r === undefined ? undefined : tokenOf(r);
    });
  }

  async listTokens(): Promise<TokenRecord[]> {
    return this.#read('listTokens', () =>
      (this.#stmt('SELECT id, user, admin, label, created_at FROM tokens ORDER BY created_at, id').all() as Row[]).map(tokenOf),
    );
  }

  async revokeToken(id: string): Promise<boolean> {
    if (typeof id !== 'string') return false;
    return this.#write('revokeToken', () => this.#stmt('DELETE FROM tokens WHERE id = ?').run(id).changes === 1);
  }

  // ------------------------------------------------------------------ optimisation

  async saveOptimizerState(ticket: string, state: OptimizerState, result?: JsonValue): Promise<boolean> {
    expectTicket(ticket);
    expectInteger('generation', state?.generation, 0);
    if (typeof state.state !== 'string') throw new InvalidOptionError(`Expected \`state.state\` to be JSON text (a string), got ${describeValue(state.state)}`);
    const resultText = result === undefined ? null : jsonText('result', result);
    return this.#write('saveOptimizerState', () => {
      const job = this.#visible(ticket);
      const changes = this.#stmt(
        'UPDATE jobs SET opt_generation = ?, opt_state = ?, result = COALESCE(?, result), updated_at = ? WHERE id = ? AND (opt_generation IS NULL OR opt_generation < ?)',
      ).run(state.generation, state.state, resultText, this.#now(), job.id, state.generation).changes;
      if (changes === 0) return false;
      const c = this.#counts(job.id);
      this.#event(job.id, c, 'generation', `{"generation":${state.generation},"result":${resultText ?? 'null'}}`);
      this.#writeCounts(job.id, c);
      return true;
    });
  }

  async loadOptimizerState(ticket: string): Promise<OptimizerState | undefined> {
    expectTicket(ticket);
    return this.#read('loadOptimizerState', () => {
      const job = this.#visible(ticket);
      const r = this.#stmt('SELECT opt_generation AS generation, opt_state AS state FROM jobs WHERE id = ?').get(job.id) as {
        generation: number | null;
        state: string | null;
      };
      return r.generation === null || r.state === null ? undefined : { generation: r.generation, state: r.state };
    });
  }

  // ------------------------------------------------------------------ statistics

  async saveJobStats(ticket: string, stats: string): Promise<void> {
    expectTicket(ticket);
    checkStats(stats);
    this.#write('saveJobStats', () => {
      const job = this.#visible(ticket);
      this.#stmt(
        'INSERT INTO job_stats (job_id, data, updated_at) VALUES (?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at',
      ).run(job.id, stats, this.#now());
    });
  }

  async loadJobStats(ticket: string): Promise<string | undefined> {
    expectTicket(ticket);
    return this.#read('loadJobStats', () => {
      const job = this.#visible(ticket);
      return (this.#stmt('SELECT data FROM job_stats WHERE job_id = ?', 'pluck').get(job.id) as string | undefined) ?? undefined;
    });
  }

  async summary(): Promise<StoreSummary> {
    return this.#read('summary', () =>
      summaryOf(
        this.#stmt(
          `SELECT j.state AS state, count(*) AS jobs, sum(c.pending) AS pending, sum(c.running) AS running, sum(c.done) AS done, sum(c.failed) AS failed
           FROM jobs j JOIN job_counts c ON c.job_id = j.id WHERE j.state IN ${VISIBLE} GROUP BY j.state`,
        ).all() as { state: string; jobs: number; pending: number; running: number; done: number; failed: number }[],
      ),
    );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const worker = this.#checkpointer;
    if (worker !== undefined) {
      // Its connection closes first, so that this one, the last, checkpoints the rest and removes the log.
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      worker.postMessage('stop');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise<void>((resolve) => (timer = setTimeout(resolve, 5000)))]);
      clearTimeout(timer);
      await worker.terminate();
    }
    this.#db.close();
  }

  /** Runs SQLite's `pragma integrity_check`; resolves to `['ok']` for a sound file. */
  async integrityCheck(): Promise<string[]> {
    return this.#read('integrityCheck', () => this.#db.pragma('integrity_check', { simple: false }) as { integrity_check: string }[]).map(
      (r) => r.integrity_check,
    );
  }
}

function tokenOf(r: Row): TokenRecord {
  return { id: r['id'] as string, user: r['user'] as string, admin: r['admin'] === 1, label: r['label'] as string, createdAt: r['created_at'] as number };
}
