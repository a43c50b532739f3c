/**
 * An in-memory JobService for the HTTP layer's, the client's and the CLI's tests: the contract of
 * src/service/types.ts with none of the store or the pool. Tests drive it (settle tasks, change
 * states, emit events); with `autoRun` it computes jobs whose stages are all inline sources by
 * importing them in this process, so a job submitted with curl really comes back with outputs.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter, on } from 'node:events';
import { AuthenticationError, InvalidOptionError, JobNotFoundError, JobStateError } from '../../src/errors.js';
import { ForbiddenError, InvalidInputError, InvalidRequestError, ShuttingDownError } from '../../src/service/errors.js';
import { tokenProof } from '../../src/service/token-proof.js';
import type {
  Caller,
  InputBatch,
  InputLine,
  JobService,
  JobSpec,
  JobStatus,
  ResultLine,
  ServiceEvent,
  ServicePage,
  ServiceWorker,
  TaskRowView,
} from '../../src/service/types.js';
import type { JobState, TaskFailure, TaskState } from '../../src/store/index.js';
import type { JsonValue } from '../../src/util/json.js';

interface FakeJob {
  readonly ticket: string;
  readonly owner: string;
  readonly spec: JobSpec;
  readonly inputs: string[];
  readonly outputs: (string | undefined)[];
  readonly failures: Map<number, TaskFailure>;
  state: JobState;
  readonly events: ServiceEvent[];
  readonly createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  error: { code: string; message: string; index?: number } | null;
  readonly seqNo: number;
}

/** Options of {@link FakeJobService}. */
export interface FakeJobServiceOptions {
  /** Farm key for token minting. */
  readonly key?: Uint8Array;
  /** TLS fingerprint the proofs must cover ('' over HTTP). */
  readonly certFingerprint?: string;
  /** Compute jobs whose stages are all inline sources, in this process. */
  readonly autoRun?: boolean;
}

/** See the module comment. */
export class FakeJobService implements JobService {
  readonly tokens = new Map<string, Caller>();
  readonly bundles = new Map<string, string>();
  readonly jobs = new Map<string, FakeJob>();
  /** Every input line submit() consumed, for tests that check streaming (no job kept on failure). */
  consumedLines = 0;
  /** Largest number of inputs held at once by a submit (it holds all of them: this counts what reached it). */
  healthyFlag = true;
  closed = false;
  closeGraceMs: number | undefined;
  readonly #emitter = new EventEmitter();
  readonly #nonces = new Set<string>();
  readonly #opts: FakeJobServiceOptions;
  #seq = 0;
  workersList: ServiceWorker[] = [
    { id: 'w1', host: 'alpha', address: '127.0.0.1:7001', threads: 2, local: false, state: 'busy', inFlight: 3, completed: 10, avgTaskMs: 1.5, jobs: [] },
  ];

  constructor(options: FakeJobServiceOptions = {}) {
    this.#opts = options;
    this.#emitter.setMaxListeners(0);
  }

  /** Registers a token for a caller. */
  addToken(token: string, caller: Caller): this {
    this.tokens.set(token, caller);
    return this;
  }

  #job(caller: Caller, ticket: string): FakeJob {
    const job = this.jobs.get(ticket);
    if (job === undefined || (!caller.admin && job.owner !== caller.user)) throw new JobNotFoundError(ticket);
    return job;
  }

  #emit(job: FakeJob, type: string, data: JsonValue): void {
    const ev: ServiceEvent = { seq: job.events.length + 1, at: Date.now(), type, data };
    job.events.push(ev);
    this.#emitter.emit(job.ticket, ev);
  }

  #transition(job: FakeJob, state: JobState, error?: { code: string; message: string; index?: number }): void {
    const from = job.state;
    job.state = state;
    if (state === 'running' && job.startedAt === null) job.startedAt = Date.now();
    if (state === 'done' || state === 'failed' || state === 'cancelled') job.finishedAt = Date.now();
    if (error !== undefined) job.error = error;
    this.#emit(job, 'state', error === undefined ? { state, from } : { state, from, error });
  }

  #counts(job: FakeJob): { pending: number; running: number; done: number; failed: number } {
    const done = job.outputs.filter((o) => o !== undefined).length;
    const failed = job.failures.size;
    return { pending: job.inputs.length - done - failed, running: 0, done, failed };
  }

  #status(job: FakeJob): JobStatus {
    const failures = [...job.failures.entries()]
      .sort((a, b) => a[0] - b[0])
      .slice(0, 10)
      .map(([index, e]) => ({ index, error: { name: e.name, message: e.message } }));
    return {
      ticket: job.ticket,
      name: job.spec.name ?? '',
      owner: job.owner,
      kind: job.spec.kind ?? 'map',
      state: job.state,
      total: job.inputs.length,
      counts: this.#counts(job),
      rate: null,
      etaSeconds: null,
      failures,
      options: { priority: job.spec.priority ?? 0, weight: job.spec.weight ?? 1, errors: job.spec.errors ?? 'fail' },
      createdAt: job.createdAt,
      startedAt: job.startedAt,
      finishedAt: job.finishedAt,
      error: job.error,
      result: null,
      generation: null,
    };
  }

  // ---- test drivers

  /** Settles task `index` of a job with an output (JSON text) or a failure; finishes the job when all are settled. */
  settle(ticket: string, index: number, outcome: { output: string } | { error: TaskFailure }): void {
    const job = this.jobs.get(ticket);
    if (job === undefined) throw new Error(`no job ${ticket}`);
    if (job.state === 'queued') this.#transition(job, 'running');
    if ('output' in outcome) job.outputs[index] = outcome.output;
    else {
      job.failures.set(index, outcome.error);
      this.#emit(job, 'failure', { index, error: { name: outcome.error.name, message: outcome.error.message } });
    }
    const c = this.#counts(job);
    this.#emit(job, 'progress', { counts: c, rate: null, etaSeconds: null });
    if (c.pending === 0) {
      if (c.failed > 0 && (job.spec.errors ?? 'fail') === 'fail')
        this.#transition(job, 'failed', { code: 'FARM_ERR_TASK', message: 'a task failed', index: [...job.failures.keys()][0] ?? 0 });
      else this.#transition(job, 'done');
    }
  }

  /** Emits any event on a job. */
  emit(ticket: string, type: string, data: JsonValue): void {
    const job = this.jobs.get(ticket);
    if (job === undefined) throw new Error(`no job ${ticket}`);
    this.#emit(job, type, data);
  }

  /** Number of open event subscriptions on a job. */
  subscribers(ticket: string): number {
    return this.#emitter.listenerCount(ticket);
  }

  async #autoRun(job: FakeJob): Promise<void> {
    const fns: ((x: unknown) => unknown)[] = [];
    for (const s of job.spec.stages) {
      const code = 'source' in s ? s.source : this.bundles.get(s.bundle);
      if (code === undefined) return;
      const mod = (await import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`)) as { default: unknown };
      if (typeof mod.default !== 'function') return;
      fns.push(mod.default as (x: unknown) => unknown);
    }
    for (let i = 0; i < job.inputs.length; i++) {
      if (job.state === 'cancelled' || job.state === 'held') return;
      try {
        let v: unknown = JSON.parse(job.inputs[i] ?? 'null');
        for (const f of fns) v = await f(v);
        this.settle(job.ticket, i, { output: JSON.stringify(v) ?? 'null' });
      } catch (err) {
        const e = err as Error;
        this.settle(job.ticket, i, { error: { name: e.name, message: e.message, stack: e.stack ?? '', code: '', attempts: 1 } });
      }
    }
  }

  // ---- JobService

  async missingBundles(_caller: Caller, hashes: readonly string[]): Promise<string[]> {
    return hashes.filter((h) => !this.bundles.has(h));
  }

  async putBundle(_caller: Caller, hash: string, code: string): Promise<boolean> {
    if (createHash('sha256').update(code, 'utf8').digest('hex') !== hash) throw new InvalidRequestError('hash mismatch', { field: 'path.sha256' });
    if (this.bundles.has(hash)) return false;
    this.bundles.set(hash, code);
    return true;
  }

  async submit(caller: Caller, spec: JobSpec, inputs: AsyncIterable<InputLine | InputBatch> | Iterable<InputLine | InputBatch>): Promise<string> {
    if (this.closed) throw new ShuttingDownError();
    spec.stages.forEach((s, i) => {
      if ('bundle' in s && !this.bundles.has(s.bundle))
        throw new InvalidRequestError(`Bundle ${s.bundle} of stages[${i}] was never uploaded`, { field: `stages[${i}].bundle` });
    });
    if (spec.priority !== undefined && !Number.isInteger(spec.priority)) throw new InvalidOptionError('priority');
    const texts: string[] = [];
    let index = 0;
    for await (const item of inputs) {
      const lines = 'texts' in item ? item.texts.map((text, k) => ({ text, line: item.line + k })).filter((l) => l.text.trim().length > 0) : [item];
      for (const l of lines) {
        try {
          JSON.parse(l.text);
        } catch {
          throw new InvalidInputError(`Line ${l.line} is not JSON`, { line: l.line, index });
        }
        texts.push(l.text.trim());
        this.consumedLines++;
        index++;
      }
    }
    const ticket = randomUUID();
    const job: FakeJob = {
      ticket,
      owner: caller.user,
      spec,
      inputs: texts,
      outputs: [],
      failures: new Map(),
      state: spec.hold === true ? 'held' : 'queued',
      events: [],
      createdAt: Date.now(),
      startedAt: null,
      finishedAt: null,
      error: null,
      seqNo: ++this.#seq,
    };
    this.jobs.set(ticket, job);
    this.#emit(job, 'state', { state: job.state, from: null });
    if (texts.length === 0) this.#transition(job, 'done');
    else if (this.#opts.autoRun === true && job.state === 'queued') setImmediate(() => void this.#autoRun(job));
    return ticket;
  }

  async status(caller: Caller, ticket: string): Promise<JobStatus> {
    return this.#status(this.#job(caller, ticket));
  }

  async list(
    caller: Caller,
    options: { readonly all?: boolean; readonly states?: readonly JobState[]; readonly after?: string; readonly limit?: number } = {},
  ): Promise<ServicePage<JobStatus, string>> {
    if (options.all === true && !caller.admin) throw new ForbiddenError('Only an admin token may list every user’s jobs (all=true)');
    let jobs = [...this.jobs.values()].filter((j) => options.all === true || j.owner === caller.user).sort((a, b) => b.seqNo - a.seqNo);
    if (options.states !== undefined) jobs = jobs.filter((j) => options.states!.includes(j.state));
    if (options.after !== undefined) {
      const after = Number(options.after);
      jobs = jobs.filter((j) => j.seqNo < after);
    }
    const limit = options.limit ?? 100;
    const page = jobs.slice(0, limit);
    return { items: page.map((j) => this.#status(j)), next: jobs.length > limit ? String(page[page.length - 1]!.seqNo) : null };
  }

  async cancel(caller: Caller, ticket: string): Promise<JobStatus> {
    const job = this.#job(caller, ticket);
    if (!['queued', 'running', 'held'].includes(job.state))
      throw new JobStateError(ticket, job.state, `Job ${ticket} is ${job.state}: only a queued, running or held job can be cancelled`);
    this.#transition(job, 'cancelled');
    return this.#status(job);
  }

  async hold(caller: Caller, ticket: string): Promise<JobStatus> {
    const job = this.#job(caller, ticket);
    if (!['queued', 'running'].includes(job.state))
      throw new JobStateError(ticket, job.state, `Job ${ticket} is ${job.state}: only a queued or running job can be held`);
    this.#transition(job, 'held');
    return this.#status(job);
  }

  async release(caller: Caller, ticket: string): Promise<JobStatus> {
    const job = this.#job(caller, ticket);
    if (job.state !== 'held') throw new JobStateError(ticket, job.state, `Job ${ticket} is ${job.state}: only a held job can be released`);
    this.#transition(job, 'queued');
    if (this.#opts.autoRun === true) setImmediate(() => void this.#autoRun(job));
    return this.#status(job);
  }

  async resubmit(caller: Caller, ticket: string, options: { readonly failedOnly?: boolean } = {}): Promise<JobStatus> {
    const job = this.#job(caller, ticket);
    if (!['done', 'failed', 'cancelled'].includes(job.state))
      throw new JobStateError(ticket, job.state, `Job ${ticket} is ${job.state}: only a finished job can be resubmitted`);
    job.failures.clear();
    if (options.failedOnly !== true) job.outputs.length = 0;
    job.error = null;
    job.finishedAt = null;
    this.#transition(job, 'queued');
    return this.#status(job);
  }

  async remove(caller: Caller, ticket: string): Promise<void> {
    this.#job(caller, ticket);
    this.jobs.delete(ticket);
  }

  async *results(caller: Caller, ticket: string, options: { readonly after?: number; readonly failedOnly?: boolean } = {}): AsyncIterable<ResultLine> {
    const job = this.#job(caller, ticket);
    const after = options.after ?? -1;
    if (options.failedOnly === true) {
      for (const [index, error] of [...job.failures.entries()].sort((a, b) => a[0] - b[0])) if (index > after) yield { index, error };
      return;
    }
    for (let i = after + 1; i < job.inputs.length; i++) {
      const o = job.outputs[i];
      if (o !== undefined) yield { index: i, output: o };
    }
  }

  async *events(caller: Caller, ticket: string, options: { readonly after?: number; readonly signal: AbortSignal }): AsyncIterable<ServiceEvent> {
    const job = this.#job(caller, ticket);
    let last = options.after ?? 0;
    if (options.signal.aborted) return;
    const live = on(this.#emitter, ticket, { signal: options.signal });
    try {
      for (const ev of job.events) {
        if (ev.seq > last) {
          last = ev.seq;
          yield ev;
        }
      }
      for await (const [ev] of live as AsyncIterable<[ServiceEvent]>) {
        if (ev.seq > last) {
          last = ev.seq;
          yield ev;
        }
      }
    } catch (err) {
      if ((err as Error).name !== 'AbortError') throw err;
    }
  }

  async tasks(
    caller: Caller,
    ticket: string,
    options: { readonly state?: TaskState; readonly after?: number; readonly limit?: number } = {},
  ): Promise<ServicePage<TaskRowView, number>> {
    const job = this.#job(caller, ticket);
    const rows: TaskRowView[] = [];
    const limit = options.limit ?? 100;
    for (let i = (options.after ?? -1) + 1; i < job.inputs.length; i++) {
      const output = job.outputs[i] ?? null;
      const error = job.failures.get(i) ?? null;
      const state: TaskState = output !== null ? 'done' : error !== null ? 'failed' : 'pending';
      if (options.state !== undefined && options.state !== state) continue;
      rows.push({ index: i, state, input: job.inputs[i] ?? 'null', output, error });
      if (rows.length === limit) return { items: rows, next: i + 1 < job.inputs.length ? i : null };
    }
    return { items: rows, next: null };
  }

  async failures(
    caller: Caller,
    ticket: string,
    options: { readonly after?: number; readonly limit?: number } = {},
  ): Promise<ServicePage<{ readonly index: number; readonly error: TaskFailure }, number>> {
    const job = this.#job(caller, ticket);
    const all = [...job.failures.entries()].sort((a, b) => a[0] - b[0]).filter(([i]) => i > (options.after ?? -1));
    const limit = options.limit ?? 100;
    const page = all.slice(0, limit).map(([index, error]) => ({ index, error }));
    return { items: page, next: all.length > limit ? page[page.length - 1]!.index : null };
  }

  async workers(): Promise<ServiceWorker[]> {
    return this.workersList;
  }

  async authenticate(token: string): Promise<Caller | undefined> {
    return this.tokens.get(token);
  }

  async tokenChallenge(): Promise<string> {
    const nonce = randomBytes(16).toString('base64url');
    this.#nonces.add(nonce);
    return nonce;
  }

  async createToken(r: { readonly user: string; readonly admin: boolean; readonly label?: string; readonly nonce: string; readonly proof: string }): Promise<{
    readonly token: string;
    readonly id: string;
    readonly user: string;
    readonly admin: boolean;
  }> {
    if (this.#opts.key === undefined || !this.#nonces.delete(r.nonce)) throw new AuthenticationError('Unknown, used or expired nonce');
    const expected = tokenProof(this.#opts.key, { ...r, certFingerprint: this.#opts.certFingerprint ?? '' });
    if (expected !== r.proof) throw new AuthenticationError('Wrong proof of the farm key');
    const token = `tf_${randomBytes(24).toString('base64url')}`;
    const id = randomUUID();
    this.tokens.set(token, { user: r.user, admin: r.admin });
    return { token, id, user: r.user, admin: r.admin };
  }

  async healthy(): Promise<boolean> {
    return this.healthyFlag && !this.closed;
  }

  async close(graceMs?: number): Promise<void> {
    this.closed = true;
    this.closeGraceMs = graceMs;
    this.#emitter.removeAllListeners();
  }
}
