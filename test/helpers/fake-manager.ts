/**
 * A small fake of `taskfarm serve`'s HTTP API (docs/API.md), for developing and testing the
 * dashboard and `taskfarm top` before the real manager is merged: the routes the pages call, the
 * session cookie with its CSRF check, SSE with sequence numbers and resume, the proposed `/stats`
 * and `/workers/{id}` routes, static files, and `/metrics` through `registerServiceMetrics`.
 *
 * Jobs run on simulated workers: a task's input says what the real stage of the browser tests does
 * with it (test/browser/target.ts): `{"ms": N}` takes N ms, `{"fail": "msg"}` throws, anything
 * else takes 1 ms. Only 127.0.0.1.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';
import { Registry } from 'prom-client';
import { registerServiceMetrics, type ServiceMetricsRecorder } from '../../src/service/metrics.js';

type JobState = 'queued' | 'running' | 'held' | 'done' | 'failed' | 'cancelled';
const FINAL: readonly JobState[] = ['done', 'failed', 'cancelled'];
const TASK_STATES = ['pending', 'running', 'done', 'failed'] as const;
type TaskState = (typeof TASK_STATES)[number];
const S_PENDING = 0;
const S_RUNNING = 1;
const S_DONE = 2;
const S_FAILED = 3;

/** Histogram bounds of the fake's `/stats`, seconds. */
const BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const INTERVAL_S = 1;

interface Caller {
  readonly user: string;
  readonly admin: boolean;
}

interface FakeEvent {
  readonly seq: number;
  readonly type: string;
  readonly data: unknown;
}

interface FakeJob {
  readonly ticket: string;
  readonly name: string;
  readonly owner: string;
  readonly kind: 'map' | 'optimize';
  state: JobState;
  readonly inputs: string[];
  readonly states: Uint8Array;
  readonly errors: Map<number, { name: string; message: string; stack: string; attempts: number }>;
  readonly options: Record<string, unknown>;
  readonly priority: number;
  readonly createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  error: { code: string; message: string; index?: number } | null;
  counts: { pending: number; running: number; done: number; failed: number };
  /** Next index never dispatched. */
  cursor: number;
  readonly requeued: number[];
  readonly events: FakeEvent[];
  readonly subscribers: Set<() => void>;
  lastProgressAt: number;
  progressDirty: boolean;
  readonly hist: number[];
  histSum: number;
  readonly throughputStart: number;
  readonly doneBins: number[];
  readonly failedBins: number[];
  readonly perWorker: Map<string, { done: number; failed: number; ms: number }>;
  readonly doneTimes: number[];
  result: unknown;
  generation: number | null;
  readonly generationSize: number;
}

interface FakeWorker {
  readonly id: string;
  readonly host: string;
  readonly address: string;
  readonly threads: number;
  state: 'idle' | 'busy' | 'draining' | 'lost';
  lost?: string;
  completed: number;
  totalMs: number;
  readonly running: { job: FakeJob; index: number; endsAt: number; startedAt: number }[];
  readonly hist: number[];
  readonly losses: { at: string; reason: string; requeued: number }[];
}

/** Options of {@link startFakeManager}. */
export interface FakeManagerOptions {
  /** Tokens → callers. */
  readonly tokens: Readonly<Record<string, Caller>>;
  /** Folder served at `/` (the built dashboard). */
  readonly staticDir?: string;
  /** Simulated workers. @default 3 workers of 2 threads */
  readonly workers?: number;
  readonly threads?: number;
  /** Simulation step, ms. @default 20 */
  readonly tickMs?: number;
}

/** A running fake manager. */
export interface FakeManager {
  readonly url: string;
  readonly port: number;
  /** Requests served, by route kind (the bench reads it). */
  readonly requests: Map<string, number>;
  /** Marks a worker lost, as the pool would when its stream breaks (its tasks go back). */
  loseWorker(id: string, reason: string): void;
  close(): Promise<void>;
}

function bucketOf(seconds: number): number {
  const i = BOUNDS.findIndex((b) => seconds <= b);
  return i < 0 ? BOUNDS.length : i;
}

function taskSpec(input: string): { ms: number; fail?: string } {
  if (input.charCodeAt(0) !== 123 /* { */) return { ms: 1 };
  try {
    const v = JSON.parse(input) as { ms?: unknown; fail?: unknown };
    return { ms: typeof v.ms === 'number' ? v.ms : 1, ...(typeof v.fail === 'string' ? { fail: v.fail } : {}) };
  } catch {
    return { ms: 1 };
  }
}

function outputOf(input: string): string {
  try {
    const v = JSON.parse(input) as unknown;
    if (typeof v === 'number') return JSON.stringify(v * 2);
    if (typeof v === 'object' && v !== null && typeof (v as { i?: unknown }).i === 'number') return JSON.stringify((v as { i: number }).i * 2);
    return input;
  } catch {
    return 'null';
  }
}

class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly extra: Record<string, unknown>;
  constructor(status: number, code: string, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.extra = extra;
  }
}

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
};

/** Starts the fake on 127.0.0.1 (a free port). */
export async function startFakeManager(options: FakeManagerOptions): Promise<FakeManager> {
  const jobs = new Map<string, FakeJob>();
  const order: FakeJob[] = [];
  const requests = new Map<string, number>();
  const workers: FakeWorker[] = Array.from({ length: options.workers ?? 3 }, (_, i) => ({
    id: `w${i + 1}-${randomUUID().slice(0, 8)}`,
    host: `node-${i + 1}`,
    address: `127.0.0.1:${7001 + i}`,
    threads: options.threads ?? 2,
    state: 'idle',
    completed: 0,
    totalMs: 0,
    running: [],
    hist: new Array<number>(BOUNDS.length + 1).fill(0),
    losses: [],
  }));
  const registry = new Registry();
  const metrics: ServiceMetricsRecorder = registerServiceMetrics(registry, {
    jobsByState: () => {
      const c: Record<string, number> = {};
      for (const j of order) c[j.state] = (c[j.state] ?? 0) + 1;
      return c;
    },
    tasksByState: () => {
      const c = { pending: 0, running: 0, done: 0, failed: 0 };
      for (const j of order) if (!FINAL.includes(j.state)) for (const s of TASK_STATES) c[s] += j.counts[s];
      return c;
    },
    workersByState: () => {
      const c: Record<string, number> = {};
      for (const w of workers) c[w.state] = (c[w.state] ?? 0) + 1;
      return c;
    },
  });
  for (let i = 0; i < workers.length; i++) metrics.recruited();

  const emit = (job: FakeJob, type: string, data: unknown): void => {
    job.events.push({ seq: job.events.length + 1, type, data });
    for (const wake of [...job.subscribers]) wake();
  };
  const setState = (job: FakeJob, state: JobState, error?: FakeJob['error']): void => {
    const from = job.state;
    if (from === state) return;
    job.state = state;
    if (state === 'running' && job.startedAt === null) job.startedAt = Date.now();
    if (FINAL.includes(state)) job.finishedAt = Date.now();
    if (error !== undefined) job.error = error;
    emit(job, 'state', { state, from, ...(error !== undefined && error !== null ? { error } : {}) });
  };
  const rateOf = (job: FakeJob): number | null => {
    const now = Date.now();
    while (job.doneTimes.length > 0 && (job.doneTimes[0] ?? 0) < now - 10_000) job.doneTimes.shift();
    if (job.state !== 'running' || job.startedAt === null) return null;
    const span = Math.min(10, (now - job.startedAt) / 1000);
    return span > 0.2 ? job.doneTimes.length / span : null;
  };
  const etaOf = (job: FakeJob): number | null => {
    const r = rateOf(job);
    return r !== null && r > 0 ? (job.counts.pending + job.counts.running) / r : null;
  };
  const stopRunning = (job: FakeJob): void => {
    for (const w of workers) {
      for (let k = w.running.length - 1; k >= 0; k--) {
        const t = w.running[k];
        if (t?.job !== job) continue;
        w.running.splice(k, 1);
        job.states[t.index] = S_PENDING;
        job.counts.running--;
        job.counts.pending++;
        job.requeued.push(t.index);
      }
      if (w.state === 'busy' && w.running.length === 0) w.state = 'idle';
    }
  };

  // ---- the simulation: free threads take tasks, tasks end when their time is up
  const tick = (): void => {
    const now = Date.now();
    for (const w of workers) {
      if (w.state === 'lost') continue;
      for (let k = w.running.length - 1; k >= 0; k--) {
        const t = w.running[k]!;
        if (t.endsAt > now) continue;
        w.running.splice(k, 1);
        const job = t.job;
        const spec = taskSpec(job.inputs[t.index] ?? '');
        const ms = Math.max(spec.ms, now - t.startedAt);
        job.counts.running--;
        const bin = Math.floor((now - job.throughputStart) / 1000 / INTERVAL_S);
        while (job.doneBins.length <= bin) {
          job.doneBins.push(0);
          job.failedBins.push(0);
        }
        const pw = job.perWorker.get(w.id) ?? { done: 0, failed: 0, ms: 0 };
        pw.ms += ms;
        job.perWorker.set(w.id, pw);
        if (spec.fail !== undefined) {
          job.states[t.index] = S_FAILED;
          job.counts.failed++;
          job.failedBins[bin]!++;
          pw.failed++;
          const error = {
            name: 'Error',
            message: spec.fail,
            stack: `Error: ${spec.fail}\n    at default (stage.js:1:60)\n    at run (worker-thread.js:10:5)`,
            attempts: 1,
          };
          job.errors.set(t.index, error);
          metrics.tasksSettled('failed');
          emit(job, 'failure', { index: t.index, error: { name: error.name, message: error.message } });
          if (job.options['errors'] !== 'collect') {
            stopRunning(job);
            setState(job, 'failed', { code: 'FARM_ERR_TASK', message: `Input ${t.index} failed: ${spec.fail}`, index: t.index });
          }
        } else {
          job.states[t.index] = S_DONE;
          job.counts.done++;
          job.doneBins[bin]!++;
          pw.done++;
          metrics.tasksSettled('done');
        }
        job.doneTimes.push(now);
        job.hist[bucketOf(ms / 1000)]!++;
        w.hist[bucketOf(ms / 1000)]!++;
        job.histSum += ms / 1000;
        metrics.taskDurations([ms]);
        w.completed++;
        w.totalMs += ms;
        job.progressDirty = true;
        if (job.kind === 'optimize' && (job.counts.done + job.counts.failed) % job.generationSize === 0) {
          job.generation = (job.generation ?? -1) + 1;
          job.result = { cost: 100 / (job.generation + 1) ** 2, x: [job.generation] };
          emit(job, 'generation', { generation: job.generation, result: job.result });
        }
      }
    }
    // Dispatch: jobs by priority, then age; a job runs while it has tasks left.
    const runnable = order.filter((j) => j.state === 'queued' || j.state === 'running').sort((a, b) => b.priority - a.priority || a.createdAt - b.createdAt);
    for (const job of runnable) {
      if (job.state === 'queued') setState(job, 'running');
      for (const w of workers) {
        if (w.state === 'lost') continue;
        while (w.running.length < w.threads) {
          const index = job.requeued.length > 0 ? job.requeued.shift() : job.cursor < job.inputs.length ? job.cursor++ : undefined;
          if (index === undefined) break;
          if (job.states[index] !== S_PENDING) continue;
          job.states[index] = S_RUNNING;
          job.counts.pending--;
          job.counts.running++;
          w.running.push({ job, index, startedAt: now, endsAt: now + taskSpec(job.inputs[index] ?? '').ms });
        }
      }
    }
    for (const w of workers) if (w.state !== 'lost') w.state = w.running.length > 0 ? 'busy' : 'idle';
    for (const job of order) {
      if (job.state === 'running' && job.counts.done + job.counts.failed === job.inputs.length) {
        job.progressDirty = true;
        if (job.counts.failed > 0 && job.options['errors'] !== 'collect') setState(job, 'failed');
        else setState(job, 'done');
      }
      if (job.progressDirty && now - job.lastProgressAt >= 250) {
        job.progressDirty = false;
        job.lastProgressAt = now;
        emit(job, 'progress', { counts: { ...job.counts }, rate: rateOf(job), etaSeconds: etaOf(job) });
      }
    }
  };
  const timer = setInterval(tick, options.tickMs ?? 20);
  timer.unref();

  // ---- HTTP
  const callerOf = (req: IncomingMessage): { caller: Caller; cookie: boolean } => {
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      const m = /^Bearer +(\S+)$/.exec(auth);
      const c = m === null ? undefined : options.tokens[m[1]!];
      if (c === undefined) throw new HttpError(401, 'FARM_ERR_UNAUTHENTICATED', 'Unknown or revoked token');
      return { caller: c, cookie: false };
    }
    const cookie = /(?:^|;\s*)taskfarm_session=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
    const c = cookie === undefined ? undefined : options.tokens[decodeURIComponent(cookie)];
    if (c === undefined) throw new HttpError(401, 'FARM_ERR_UNAUTHENTICATED', 'This route needs a token');
    return { caller: c, cookie: true };
  };
  const checkCsrf = (req: IncomingMessage): void => {
    if (req.headers['x-taskfarm-request'] !== '1')
      throw new HttpError(403, 'FARM_ERR_FORBIDDEN', 'A state-changing request authenticated by the session cookie must carry "X-Taskfarm-Request: 1"');
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${req.headers.host ?? ''}`)
      throw new HttpError(403, 'FARM_ERR_FORBIDDEN', `Cross-origin request refused (Origin ${origin})`);
  };
  const visible = (caller: Caller, ticket: string): FakeJob => {
    const j = jobs.get(ticket);
    if (j === undefined || (!caller.admin && j.owner !== caller.user)) throw new HttpError(404, 'FARM_ERR_JOB_NOT_FOUND', `No job ${ticket}`);
    return j;
  };
  const status = (j: FakeJob): Record<string, unknown> => ({
    ticket: j.ticket,
    name: j.name,
    owner: j.owner,
    kind: j.kind,
    state: j.state,
    total: j.inputs.length,
    counts: { ...j.counts },
    rate: rateOf(j),
    etaSeconds: etaOf(j),
    failures: [...j.errors.entries()].slice(0, 10).map(([index, e]) => ({ index, error: { name: e.name, message: e.message } })),
    options: j.options,
    createdAt: new Date(j.createdAt).toISOString(),
    startedAt: j.startedAt === null ? null : new Date(j.startedAt).toISOString(),
    finishedAt: j.finishedAt === null ? null : new Date(j.finishedAt).toISOString(),
    error: j.error,
    result: j.result,
    generation: j.generation,
    lastEventSeq: j.events.length,
  });
  const readBody = async (req: IncomingMessage): Promise<string> => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  };
  const createJob = (caller: Caller, spec: Record<string, unknown>, inputs: string[]): FakeJob => {
    if (!Array.isArray(spec['stages']) || spec['stages'].length === 0)
      throw new HttpError(400, 'FARM_ERR_INVALID_OPTION', 'Expected `stages` to be a non-empty array', { field: 'stages' });
    const name = typeof spec['name'] === 'string' ? spec['name'] : '';
    const options: Record<string, unknown> = {};
    for (const k of ['priority', 'weight', 'retries', 'maxAttempts', 'taskTimeoutMs', 'errors']) if (spec[k] !== undefined) options[k] = spec[k];
    const now = Date.now();
    const job: FakeJob = {
      ticket: randomUUID(),
      name,
      owner: caller.user,
      kind: spec['kind'] === 'optimize' ? 'optimize' : 'map',
      state: spec['hold'] === true ? 'held' : 'queued',
      inputs,
      states: new Uint8Array(inputs.length),
      errors: new Map(),
      options,
      priority: typeof spec['priority'] === 'number' ? spec['priority'] : 0,
      createdAt: now,
      startedAt: null,
      finishedAt: null,
      error: null,
      counts: { pending: inputs.length, running: 0, done: 0, failed: 0 },
      cursor: 0,
      requeued: [],
      events: [],
      subscribers: new Set(),
      lastProgressAt: 0,
      progressDirty: false,
      hist: new Array<number>(BOUNDS.length + 1).fill(0),
      histSum: 0,
      throughputStart: now,
      doneBins: [],
      failedBins: [],
      perWorker: new Map(),
      doneTimes: [],
      result: null,
      generation: null,
      generationSize:
        typeof (spec['params'] as { population?: unknown } | undefined)?.population === 'number' ? (spec['params'] as { population: number }).population : 10,
    };
    jobs.set(job.ticket, job);
    order.unshift(job);
    job.events.push({ seq: 1, type: 'state', data: { state: job.state, from: null } });
    if (inputs.length === 0) setState(job, 'done');
    return job;
  };

  const count = (kind: string): void => {
    requests.set(kind, (requests.get(kind) ?? 0) + 1);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const json = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    if (path === '/healthz') return json(200, { status: 'ok' });
    if (path === '/metrics') {
      count('metrics');
      res.writeHead(200, { 'content-type': registry.contentType });
      res.end(await registry.metrics());
      return;
    }
    if (!path.startsWith('/api/')) {
      count('static');
      return serveStatic(path, res);
    }
    count(path.replace(/[0-9a-f-]{36}/g, ':ticket').replace(/\/workers\/[^/]+$/, '/workers/:id'));
    if (path === '/api/v1/session' && method === 'POST') {
      checkCsrf(req);
      const body = JSON.parse((await readBody(req)) || '{}') as { token?: unknown };
      const c = typeof body.token === 'string' ? options.tokens[body.token] : undefined;
      if (c === undefined) throw new HttpError(401, 'FARM_ERR_UNAUTHENTICATED', 'Unknown or revoked token');
      res.setHeader('set-cookie', `taskfarm_session=${encodeURIComponent(body.token as string)}; Path=/; HttpOnly; SameSite=Strict; Max-Age=604800`);
      return json(200, c);
    }
    if (path === '/api/v1/session' && method === 'DELETE') {
      res.setHeader('set-cookie', 'taskfarm_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0');
      res.writeHead(204).end();
      return;
    }
    const { caller, cookie } = callerOf(req);
    if (cookie && method !== 'GET' && method !== 'HEAD') checkCsrf(req);
    if (path === '/api/v1/session') return json(200, caller);
    if (path === '/api/v1/workers' && method === 'GET') {
      return json(200, {
        workers: workers.map((w) => ({
          id: w.id,
          host: w.host,
          address: w.address,
          threads: w.threads,
          local: false,
          state: w.state,
          inFlight: w.running.length,
          completed: w.completed,
          avgTaskMs: w.completed > 0 ? w.totalMs / w.completed : 0,
          jobs: [...new Set(w.running.map((t) => t.job.ticket))],
          ...(w.lost !== undefined ? { lost: w.lost } : {}),
        })),
      });
    }
    const wm = /^\/api\/v1\/workers\/([^/]+)$/.exec(path);
    if (wm !== null && method === 'GET') {
      const w = workers.find((x) => x.id === decodeURIComponent(wm[1]!));
      if (w === undefined) throw new HttpError(404, 'FARM_ERR_NOT_FOUND', 'No such worker');
      const mine = order.filter((j) => (caller.admin || j.owner === caller.user) && j.perWorker.has(w.id));
      return json(200, {
        worker: {
          id: w.id,
          host: w.host,
          address: w.address,
          threads: w.threads,
          local: false,
          state: w.state,
          inFlight: w.running.length,
          completed: w.completed,
          avgTaskMs: w.completed > 0 ? w.totalMs / w.completed : 0,
          jobs: [...new Set(w.running.filter((t) => caller.admin || t.job.owner === caller.user).map((t) => t.job.ticket))],
          ...(w.lost !== undefined ? { lost: w.lost } : {}),
        },
        jobs: mine.map((j) => {
          const pw = j.perWorker.get(w.id)!;
          return { ticket: j.ticket, name: j.name, done: pw.done, failed: pw.failed, avgTaskMs: pw.done + pw.failed > 0 ? pw.ms / (pw.done + pw.failed) : 0 };
        }),
        durations: { bounds: BOUNDS, counts: w.hist, count: w.completed, sum: w.totalMs / 1000 },
        losses: w.losses,
      });
    }
    if (path === '/api/v1/jobs' && method === 'GET') {
      const all = url.searchParams.get('all') === 'true';
      if (all && !caller.admin) throw new HttpError(403, 'FARM_ERR_FORBIDDEN', 'Only an admin may list every job');
      const states = url.searchParams.get('state')?.split(',');
      const limit = Math.min(1000, Number(url.searchParams.get('limit') ?? 100));
      const after = Number(url.searchParams.get('after') ?? -1);
      const list = order.filter((j) => (all || j.owner === caller.user) && (states === undefined || states.includes(j.state)));
      const page = list.slice(after + 1, after + 1 + limit);
      return json(200, { jobs: page.map(status), next: after + 1 + limit < list.length ? String(after + limit) : null });
    }
    if (path === '/api/v1/jobs' && method === 'POST') {
      const body = await readBody(req);
      let spec: Record<string, unknown>;
      let inputs: string[];
      if ((req.headers['content-type'] ?? '').startsWith('application/x-ndjson')) {
        const lines = body.split('\n');
        spec = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>;
        inputs = [];
        for (let i = 1; i < lines.length; i++) if (lines[i]!.trim().length > 0) inputs.push(lines[i]!);
      } else {
        spec = JSON.parse(body) as Record<string, unknown>;
        inputs = Array.isArray(spec['inputs']) ? (spec['inputs'] as unknown[]).map((v) => JSON.stringify(v)) : [];
      }
      const job = createJob(caller, spec, inputs);
      res.setHeader('location', `/api/v1/jobs/${job.ticket}`);
      return json(201, { ticket: job.ticket });
    }
    const m = /^\/api\/v1\/jobs\/([0-9a-f-]{36})(?:\/([a-z]+))?$/.exec(path);
    if (m === null) throw new HttpError(404, 'FARM_ERR_NOT_FOUND', `No route ${method} ${path}`);
    const job = visible(caller, m[1]!);
    const sub = m[2];
    if (sub === undefined && method === 'GET') return json(200, status(job));
    if (sub === undefined && method === 'DELETE') {
      stopRunning(job);
      jobs.delete(job.ticket);
      order.splice(order.indexOf(job), 1);
      res.writeHead(204).end();
      return;
    }
    if (sub === 'tasks' && method === 'GET') {
      const filter = url.searchParams.get('state') as TaskState | null;
      const want = filter === null ? -1 : TASK_STATES.indexOf(filter);
      const limit = Math.min(1000, Number(url.searchParams.get('limit') ?? 100));
      let i = Number(url.searchParams.get('after') ?? -1) + 1;
      const rows: unknown[] = [];
      // A bounded range per call, like the store: a sparse state may give a short page with a next.
      const end = Math.min(job.inputs.length, i + Math.max(10_000, limit * 20));
      for (; i < end && rows.length < limit; i++) {
        const s = job.states[i]!;
        if (want >= 0 && s !== want) continue;
        const input = job.inputs[i]!;
        rows.push({
          index: i,
          state: TASK_STATES[s],
          input: JSON.parse(input) as unknown,
          output: s === S_DONE ? (JSON.parse(outputOf(input)) as unknown) : null,
          error: job.errors.get(i) ?? null,
        });
      }
      return json(200, { tasks: rows, next: i < job.inputs.length ? i - 1 : null });
    }
    if (sub === 'failures' && method === 'GET') {
      const after = Number(url.searchParams.get('after') ?? -1);
      const limit = Math.min(1000, Number(url.searchParams.get('limit') ?? 100));
      const list = [...job.errors.entries()].filter(([i]) => i > after).sort((a, b) => a[0] - b[0]);
      const page = list.slice(0, limit);
      return json(200, { failures: page.map(([index, error]) => ({ index, error })), next: list.length > limit ? (page[page.length - 1]?.[0] ?? null) : null });
    }
    if (sub === 'stats' && method === 'GET') {
      return json(200, {
        durations: { bounds: BOUNDS, counts: job.hist, count: job.counts.done + job.counts.failed, sum: job.histSum },
        throughput: { intervalSeconds: INTERVAL_S, start: new Date(job.throughputStart).toISOString(), done: job.doneBins, failed: job.failedBins },
        workers: [...job.perWorker.entries()].map(([id, pw]) => ({
          id,
          host: workers.find((w) => w.id === id)?.host ?? '',
          done: pw.done,
          failed: pw.failed,
          avgTaskMs: pw.done + pw.failed > 0 ? pw.ms / (pw.done + pw.failed) : 0,
        })),
      });
    }
    if (sub === 'events' && method === 'GET') return events(req, res, job, url);
    if (method === 'POST' && sub !== undefined && ['cancel', 'hold', 'release', 'resubmit'].includes(sub)) {
      const refuse = (from: string): never => {
        throw new HttpError(
          409,
          'FARM_ERR_JOB_STATE',
          `Job ${job.ticket} is ${job.state}: only ${from} job can be ${sub === 'cancel' ? 'cancelled' : `${sub}ed`}`,
          { state: job.state },
        );
      };
      if (sub === 'cancel') {
        if (FINAL.includes(job.state)) refuse('a queued, running or held');
        stopRunning(job);
        setState(job, 'cancelled');
      } else if (sub === 'hold') {
        if (job.state !== 'queued' && job.state !== 'running') refuse('a queued or running');
        stopRunning(job);
        setState(job, 'held');
      } else if (sub === 'release') {
        if (job.state !== 'held') refuse('a held');
        setState(job, 'queued');
      } else {
        if (!FINAL.includes(job.state)) refuse('a done, failed or cancelled');
        const text = await readBody(req);
        const failedOnly = url.searchParams.get('failed') === 'true' || (text.length > 0 && (JSON.parse(text) as { failed?: boolean }).failed === true);
        for (let i = 0; i < job.states.length; i++) {
          const s = job.states[i]!;
          if (s === S_FAILED || (!failedOnly && s === S_DONE)) {
            job.states[i] = S_PENDING;
            job.requeued.push(i);
            job.errors.delete(i);
          }
        }
        job.counts = {
          pending: job.counts.pending + job.counts.failed + (failedOnly ? 0 : job.counts.done),
          running: 0,
          done: failedOnly ? job.counts.done : 0,
          failed: 0,
        };
        job.error = null;
        job.finishedAt = null;
        setState(job, 'queued');
      }
      return json(200, status(job));
    }
    throw new HttpError(405, 'FARM_ERR_NOT_FOUND', `${method} is not a method of ${path}`);
  };

  const events = (req: IncomingMessage, res: ServerResponse, job: FakeJob, url: URL): void => {
    const header = req.headers['last-event-id'];
    let after = Number(url.searchParams.get('after') ?? (typeof header === 'string' ? header : 0));
    if (!Number.isInteger(after) || after < 0) after = 0;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write(': taskfarm events\nretry: 2000\n\n');
    const flush = (): void => {
      while (after < job.events.length) {
        const e = job.events[after]!;
        res.write(`id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e.data)}\n\n`);
        after = e.seq;
      }
    };
    flush();
    job.subscribers.add(flush);
    const keepalive = setInterval(() => res.write(': keepalive\n\n'), 15_000);
    const end = (): void => {
      clearInterval(keepalive);
      job.subscribers.delete(flush);
    };
    req.on('close', end);
    res.on('close', end);
  };

  const serveStatic = (path: string, res: ServerResponse): void => {
    const root = options.staticDir;
    if (root === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"FARM_ERR_NOT_FOUND","message":"no static folder"}}');
      return;
    }
    let file = normalize(join(root, decodeURIComponent(path)));
    if (!file.startsWith(normalize(root)) || !existsSync(file) || !statSync(file).isFile()) file = join(root, 'index.html');
    res.writeHead(200, {
      'content-type': MIME[extname(file)] ?? 'application/octet-stream',
      'content-security-policy': "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
      'x-content-type-options': 'nosniff',
    });
    res.end(readFileSync(file));
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof HttpError) {
        if (err.status === 401) res.setHeader('www-authenticate', 'Bearer realm="taskfarm"');
        res.writeHead(err.status, { 'content-type': 'application/json; charset=utf-8' });
        res.end(JSON.stringify({ error: { code: err.code, message: err.message, ...err.extra } }));
      } else {
        res.writeHead(400, { 'content-type': 'application/json; charset=utf-8' });
        res.end(JSON.stringify({ error: { code: 'FARM_ERR_INVALID_OPTION', message: (err as Error).message } }));
      }
    });
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve(typeof a === 'object' && a !== null ? a.port : 0);
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    loseWorker(id, reason) {
      const w = workers.find((x) => x.id === id);
      if (w === undefined || w.state === 'lost') return;
      const n = w.running.length;
      for (const t of w.running.splice(0)) {
        t.job.states[t.index] = S_PENDING;
        t.job.counts.running--;
        t.job.counts.pending++;
        t.job.requeued.push(t.index);
      }
      w.state = 'lost';
      w.lost = reason;
      w.losses.push({ at: new Date().toISOString(), reason, requeued: n });
      metrics.lost('connection');
      metrics.requeued(n);
    },
    close: () =>
      new Promise<void>((resolve) => {
        clearInterval(timer);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
