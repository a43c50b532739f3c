/**
 * `connect(url?, { token })`: the library's client of the job service. Over HTTP by default (the
 * same routes the CLI and curl use); without a URL, an in-process service on an embedded store
 * (PARK: no connection means the client machine). Both give the same {@link ServiceClient}.
 */
import { Readable } from 'node:stream';
import { FarmError, InvalidOptionError } from '../../errors.js';
import { bundleProgram, type BundledProgram } from '../../farm/index.js';
import type { Program } from '../../skeleton/index.js';
import type { JobState, TaskFailure } from '../../store/index.js';
import type { JsonValue } from '../../util/json.js';
import { statusToJson } from '../http/server.js';
import type { Caller, InputLine, JobService, JobSpec, JobStatus, ServiceEvent, ServiceWorker } from '../types.js';
import { openLocalService } from '../local.js';
import type { FarmPoolOptions } from '../../farm/index.js';
import { ServiceHttpClient, type ServiceHttpClientOptions } from './http-client.js';
import { ndjsonLines } from '../http/ndjson.js';

/** A job's status as the API gives it (times as ISO 8601 strings). */
export type JobStatusView = Omit<JobStatus, 'createdAt' | 'startedAt' | 'finishedAt'> & {
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
};

/** A settled task: its output, or (with `failed`) its failure. */
export type ServiceResult = { readonly index: number; readonly output: JsonValue } | { readonly index: number; readonly error: TaskFailure };

/** Options of `submit`: the job's name and scheduling options (docs/API.md). */
export interface ServiceSubmitOptions {
  readonly name?: string;
  readonly priority?: number;
  readonly weight?: number;
  readonly retries?: number;
  readonly maxAttempts?: number;
  readonly taskTimeoutMs?: number;
  readonly errors?: 'fail' | 'collect';
  readonly hold?: boolean;
  /** Folder module stages are resolved from. @default process.cwd() */
  readonly cwd?: string;
}

const aborted = (signal: AbortSignal | undefined): boolean => signal?.aborted === true;
const text = (code: string | Uint8Array): string => (typeof code === 'string' ? code : Buffer.from(code).toString('utf8'));

/** Job states in which a job is finished. */
const FINAL: readonly JobState[] = ['done', 'failed', 'cancelled'];

/** A handle on one job of the service. */
export interface ServiceJob {
  readonly ticket: string;
  status(): Promise<JobStatusView>;
  /** The job's events after `after`, then live ones until `signal` aborts (reconnecting with Last-Event-ID over HTTP). */
  events(options?: { readonly after?: number; readonly signal?: AbortSignal }): AsyncIterable<ServiceEvent>;
  /** Settled outputs in input order (or, with `failed`, the failures). */
  results(options?: { readonly failed?: boolean; readonly after?: number }): AsyncIterable<ServiceResult>;
  /** Resolves with the final status once the job is done, failed or cancelled. */
  wait(options?: { readonly signal?: AbortSignal }): Promise<JobStatusView>;
  cancel(): Promise<JobStatusView>;
  hold(): Promise<JobStatusView>;
  release(): Promise<JobStatusView>;
  resubmit(options?: { readonly failed?: boolean }): Promise<JobStatusView>;
  remove(): Promise<void>;
}

/** The client `connect()` returns. */
export interface ServiceClient {
  /** Bundles the program, uploads the bundles the service lacks, streams the inputs; resolves once the job is durable. */
  submit(program: Program | BundledProgram, inputs: Iterable<unknown> | AsyncIterable<unknown>, options?: ServiceSubmitOptions): Promise<ServiceJob>;
  /** A handle on a job by its ticket (nothing is checked until it is used). */
  job(ticket: string): ServiceJob;
  /** The caller's jobs (or everyone's with `all`, admins only), newest first. */
  jobs(options?: { readonly all?: boolean; readonly states?: readonly JobState[]; readonly limit?: number }): Promise<JobStatusView[]>;
  workers(): Promise<ServiceWorker[]>;
  /** Releases connections (and, in process, closes the service). */
  close(): Promise<void>;
}

/** Options of {@link connect}. */
export interface ConnectOptions extends ServiceHttpClientOptions {
  /** In process only: the SQLite store file. @default the embedded default store (`$XDG_DATA_HOME/taskfarm/jobs.db`) */
  readonly store?: string;
  /**
   * In process only: the pool's options (peers, farm, key…). @default `{ localFallback: true,
   * workerWaitMs: 3000 }`: the farm's workers when some answer, else this machine's threads
   */
  readonly service?: FarmPoolOptions;
}

/** The operations a job handle needs, over HTTP or in process. */
interface Ops {
  status(ticket: string): Promise<JobStatusView>;
  action(ticket: string, action: 'cancel' | 'hold' | 'release' | 'resubmit', failed?: boolean): Promise<JobStatusView>;
  remove(ticket: string): Promise<void>;
  events(ticket: string, after: number, signal: AbortSignal | undefined): AsyncIterable<ServiceEvent>;
  results(ticket: string, failed: boolean, after: number | undefined): AsyncIterable<ServiceResult>;
}

class Job implements ServiceJob {
  readonly ticket: string;
  readonly #ops: Ops;
  constructor(ticket: string, ops: Ops) {
    this.ticket = ticket;
    this.#ops = ops;
  }
  status(): Promise<JobStatusView> {
    return this.#ops.status(this.ticket);
  }
  events(options: { readonly after?: number; readonly signal?: AbortSignal } = {}): AsyncIterable<ServiceEvent> {
    return this.#ops.events(this.ticket, options.after ?? 0, options.signal);
  }
  results(options: { readonly failed?: boolean; readonly after?: number } = {}): AsyncIterable<ServiceResult> {
    return this.#ops.results(this.ticket, options.failed === true, options.after);
  }
  async wait(options: { readonly signal?: AbortSignal } = {}): Promise<JobStatusView> {
    const first = await this.status();
    if (FINAL.includes(first.state)) return first;
    const ac = new AbortController();
    const onAbort = (): void => ac.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const ev of this.#ops.events(this.ticket, 0, ac.signal)) {
        const state = (ev.data as { state?: JobState } | null)?.state;
        if (ev.type === 'state' && state !== undefined && FINAL.includes(state)) {
          // An old final event (before a resubmit) replays too: the status decides.
          const now = await this.status();
          if (FINAL.includes(now.state)) return now;
        }
      }
      throw new FarmError('FARM_ERR_ABORTED', `Stopped waiting for job ${this.ticket}`);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      ac.abort();
    }
  }
  cancel(): Promise<JobStatusView> {
    return this.#ops.action(this.ticket, 'cancel');
  }
  hold(): Promise<JobStatusView> {
    return this.#ops.action(this.ticket, 'hold');
  }
  release(): Promise<JobStatusView> {
    return this.#ops.action(this.ticket, 'release');
  }
  resubmit(options: { readonly failed?: boolean } = {}): Promise<JobStatusView> {
    return this.#ops.action(this.ticket, 'resubmit', options.failed === true);
  }
  remove(): Promise<void> {
    return this.#ops.remove(this.ticket);
  }
}

/** The job description: the stages by bundle hash, and the options without `cwd` (a client-side setting). */
function specOf(b: BundledProgram, options: ServiceSubmitOptions): JobSpec {
  const rest: Record<string, unknown> = { ...options };
  delete rest['cwd'];
  return { stages: b.stages.map((s) => ({ bundle: s.hash, name: s.name })), ...(rest as Omit<ServiceSubmitOptions, 'cwd'>) };
}

async function bundled(program: Program | BundledProgram, cwd: string | undefined): Promise<BundledProgram> {
  if (typeof program === 'object' && program !== null && (program as { kind?: unknown }).kind === 'bundled') return program as BundledProgram;
  return bundleProgram(program as Program, cwd === undefined ? {} : { cwd });
}

function stringify(value: unknown, index: number): string {
  const text = JSON.stringify(value);
  if (text === undefined) throw new InvalidOptionError(`Input ${index} cannot be sent as JSON (${typeof value})`);
  return text;
}

/** Parses an SSE stream into events (id, event, data lines; comments ignored). */
async function* parseSse(source: AsyncIterable<Buffer>): AsyncGenerator<ServiceEvent> {
  let id: number | undefined;
  let type = 'message';
  let data: string[] = [];
  for await (const { text } of ndjsonLinesKeepBlank(source)) {
    if (text.length === 0) {
      if (data.length > 0 && id !== undefined) {
        let parsed: JsonValue;
        try {
          parsed = JSON.parse(data.join('\n')) as JsonValue;
        } catch {
          parsed = data.join('\n');
        }
        if (type !== 'error') yield { seq: id, at: Date.now(), type, data: parsed };
        else {
          const message = (parsed as { message?: unknown } | null)?.message;
          throw Object.assign(new FarmError('FARM_ERR_STORE', typeof message === 'string' ? message : 'event stream failed'), { data: parsed });
        }
      }
      type = 'message';
      data = [];
      continue;
    }
    if (text.startsWith(':')) continue;
    const colon = text.indexOf(':');
    const field = colon < 0 ? text : text.slice(0, colon);
    const value = colon < 0 ? '' : text.slice(colon + 1).replace(/^ /, '');
    if (field === 'id') id = Number(value);
    else if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
}

/** Lines of a stream, blank ones included (SSE separates events with blank lines). */
async function* ndjsonLinesKeepBlank(source: AsyncIterable<Buffer>): AsyncGenerator<{ text: string }> {
  let carry = '';
  for await (const chunk of source) {
    carry += chunk.toString('utf8');
    let nl: number;
    while ((nl = carry.indexOf('\n')) >= 0) {
      yield { text: carry.slice(0, nl).replace(/\r$/, '') };
      carry = carry.slice(nl + 1);
    }
  }
}

/** The HTTP client. */
class HttpServiceClient implements ServiceClient {
  readonly #http: ServiceHttpClient;
  readonly #ops: Ops;

  constructor(http: ServiceHttpClient) {
    this.#http = http;
    const path = (t: string, rest = ''): string => `/api/v1/jobs/${encodeURIComponent(t)}${rest}`;
    this.#ops = {
      status: (t) => http.json<JobStatusView>('GET', path(t), {}, t),
      action: (t, action, failed) =>
        http.json<JobStatusView>('POST', path(t, `/${action}`), action === 'resubmit' ? { json: { failed: failed === true } } : {}, t),
      remove: (t) => http.json<void>('DELETE', path(t), {}, t),
      events: (t, after, signal) => this.#events(path(t, '/events'), t, after, signal),
      results: (t, failed, after) => this.#results(path(t, '/results'), t, failed, after),
    };
  }

  async *#events(path: string, ticket: string, after: number, signal: AbortSignal | undefined): AsyncGenerator<ServiceEvent> {
    let last = after;
    let failures = 0;
    while (!aborted(signal)) {
      let res;
      try {
        res = await this.#http.request(
          'GET',
          path,
          { headers: { accept: 'text/event-stream', 'last-event-id': String(last) }, ...(signal === undefined ? {} : { signal }) },
          ticket,
        );
      } catch (err) {
        if (aborted(signal)) return;
        // The manager restarting: try again a few times, then give up with the error.
        if (err instanceof FarmError && err.retryable && failures++ < 30) {
          await new Promise((r) => setTimeout(r, 1000).unref());
          continue;
        }
        throw err;
      }
      failures = 0;
      try {
        for await (const ev of parseSse(res as AsyncIterable<Buffer>)) {
          if (ev.seq <= last) continue;
          last = ev.seq;
          yield ev;
        }
      } catch (err) {
        if (aborted(signal)) return;
        if ((err as { code?: string }).code !== 'ECONNRESET' && (err as Error).name !== 'AbortError') throw err;
      } finally {
        res.destroy();
      }
    }
  }

  async *#results(path: string, ticket: string, failed: boolean, after: number | undefined): AsyncGenerator<ServiceResult> {
    const res = await this.#http.request('GET', path, { query: { failed: failed ? true : undefined, after } }, ticket);
    try {
      for await (const { text, line } of ndjsonLines(res as AsyncIterable<Buffer>, 1 << 30)) {
        let v: ServiceResult;
        try {
          v = JSON.parse(text) as ServiceResult;
        } catch (err) {
          throw new FarmError('FARM_ERR_PROTOCOL', `Line ${line} of the results of ${ticket} is not JSON: ${(err as Error).message}`);
        }
        yield v;
      }
    } finally {
      res.destroy();
    }
  }

  async submit(program: Program | BundledProgram, inputs: Iterable<unknown> | AsyncIterable<unknown>, options: ServiceSubmitOptions = {}): Promise<ServiceJob> {
    const b = await bundled(program, options.cwd);
    const hashes = [...new Set(b.stages.map((s) => s.hash))];
    const { missing } = await this.#http.json<{ missing: string[] }>('POST', '/api/v1/bundles/missing', { json: { hashes } });
    for (const hash of missing) {
      const stage = b.stages.find((s) => s.hash === hash);
      if (stage !== undefined)
        await this.#http.request('PUT', `/api/v1/bundles/${hash}`, { body: text(stage.code), contentType: 'text/javascript' }).then((r) => r.resume());
    }
    const spec = specOf(b, options);
    const body = Readable.from(ndjsonBody(spec, inputs), { objectMode: false });
    const { ticket } = await this.#http.json<{ ticket: string }>('POST', '/api/v1/jobs', { body, contentType: 'application/x-ndjson' });
    return new Job(ticket, this.#ops);
  }

  job(ticket: string): ServiceJob {
    return new Job(ticket, this.#ops);
  }

  async jobs(options: { readonly all?: boolean; readonly states?: readonly JobState[]; readonly limit?: number } = {}): Promise<JobStatusView[]> {
    const out: JobStatusView[] = [];
    let after: string | undefined;
    const want = options.limit ?? Infinity;
    do {
      const page = await this.#http.json<{ jobs: JobStatusView[]; next: string | null }>('GET', '/api/v1/jobs', {
        query: { all: options.all === true ? true : undefined, state: options.states?.join(','), limit: Math.min(1000, want - out.length), after },
      });
      out.push(...page.jobs);
      after = page.next ?? undefined;
    } while (after !== undefined && out.length < want);
    return out;
  }

  async workers(): Promise<ServiceWorker[]> {
    return (await this.#http.json<{ workers: ServiceWorker[] }>('GET', '/api/v1/workers')).workers;
  }

  // eslint-disable-next-line @typescript-eslint/require-await -- async so that a failing close rejects, never throws
  async close(): Promise<void> {
    this.#http.close();
  }
}

/** The NDJSON body of a submit: the description line, then one input per line, in chunks of ~64 KiB. */
async function* ndjsonBody(spec: JobSpec, inputs: Iterable<unknown> | AsyncIterable<unknown>): AsyncGenerator<string> {
  let chunk = JSON.stringify(spec) + '\n';
  let i = 0;
  for await (const value of inputs as AsyncIterable<unknown>) {
    chunk += stringify(value, i++) + '\n';
    if (chunk.length >= 65_536) {
      yield chunk;
      chunk = '';
    }
  }
  if (chunk.length > 0) yield chunk;
}

/** The in-process client: the same operations on a JobService in this process, as a local admin. */
class LocalServiceClient implements ServiceClient {
  readonly #service: JobService;
  readonly #caller: Caller;
  readonly #ops: Ops;

  constructor(service: JobService, caller: Caller) {
    this.#service = service;
    this.#caller = caller;
    const s = service;
    const c = caller;
    this.#ops = {
      status: async (t) => statusToJson(await s.status(c, t)) as JobStatusView,
      action: async (t, action, failed) =>
        statusToJson(await (action === 'resubmit' ? s.resubmit(c, t, { failedOnly: failed === true }) : s[action](c, t))) as JobStatusView,
      remove: (t) => s.remove(c, t),
      events: (t, after, signal) => s.events(c, t, { after, signal: signal ?? new AbortController().signal }),
      results: (t, failed, after) => localResults(s.results(c, t, { failedOnly: failed, ...(after === undefined ? {} : { after }) })),
    };
  }

  async submit(program: Program | BundledProgram, inputs: Iterable<unknown> | AsyncIterable<unknown>, options: ServiceSubmitOptions = {}): Promise<ServiceJob> {
    const b = await bundled(program, options.cwd);
    for (const s of b.stages) await this.#service.putBundle(this.#caller, s.hash, text(s.code));
    const spec = specOf(b, options);
    const ticket = await this.#service.submit(this.#caller, spec, inputLines(inputs));
    return new Job(ticket, this.#ops);
  }

  job(ticket: string): ServiceJob {
    return new Job(ticket, this.#ops);
  }

  async jobs(options: { readonly all?: boolean; readonly states?: readonly JobState[]; readonly limit?: number } = {}): Promise<JobStatusView[]> {
    const out: JobStatusView[] = [];
    let after: string | undefined;
    const want = options.limit ?? Infinity;
    do {
      const page = await this.#service.list(this.#caller, {
        ...(options.all === undefined ? {} : { all: options.all }),
        ...(options.states === undefined ? {} : { states: options.states }),
        limit: Math.min(1000, want - out.length),
        ...(after === undefined ? {} : { after }),
      });
      out.push(...page.items.map((s) => statusToJson(s) as JobStatusView));
      after = page.next ?? undefined;
    } while (after !== undefined && out.length < want);
    return out;
  }

  workers(): Promise<ServiceWorker[]> {
    return this.#service.workers(this.#caller);
  }

  close(): Promise<void> {
    return this.#service.close();
  }
}

async function* inputLines(inputs: Iterable<unknown> | AsyncIterable<unknown>): AsyncGenerator<InputLine> {
  let i = 0;
  for await (const value of inputs as AsyncIterable<unknown>) {
    yield { text: stringify(value, i), line: i + 1 };
    i++;
  }
}

async function* localResults(source: AsyncIterable<{ index: number; output: string } | { index: number; error: TaskFailure }>): AsyncGenerator<ServiceResult> {
  for await (const r of source) yield 'output' in r ? { index: r.index, output: JSON.parse(r.output) as JsonValue } : r;
}

/**
 * Connects to a job service: over HTTP(S) to `url` (a `taskfarm serve`), or, without a URL, to an
 * in-process service on the embedded store (jobs then run on this machine's pool; the caller is a
 * local admin named after the OS user).
 *
 * @example
 * const farm = await connect('http://127.0.0.1:7800', { token: process.env.TASKFARM_TOKEN });
 * const job = await farm.submit(seq('./square.ts'), [1, 2, 3]);
 * await job.wait();
 * for await (const r of job.results()) console.log(r);
 */
export async function connect(url?: string, options: ConnectOptions = {}): Promise<ServiceClient> {
  if (url !== undefined) return new HttpServiceClient(new ServiceHttpClient(url, options));
  const local = await openLocalService({
    ...(typeof options.store === 'string' ? { storePath: options.store } : {}),
    ...(options.service === undefined ? {} : { poolOptions: options.service }),
  });
  return new LocalServiceClient(local.service, local.caller);
}

/** A client over an existing JobService (tests, embedding). */
export function connectToService(service: JobService, caller: Caller): ServiceClient {
  return new LocalServiceClient(service, caller);
}
