/**
 * The dashboard's only way to the manager: the documented HTTP API (docs/API.md), the same routes
 * curl and the CLI use. The session is the HttpOnly cookie set by `POST /api/v1/session`; every
 * state-changing request carries `X-Taskfarm-Request: 1` (the manager's CSRF defence for cookie
 * sessions). Nothing here reads or writes the token after sign-in: the page never sees it again.
 */

/** Task counts per state. */
export interface Counts {
  readonly pending: number;
  readonly running: number;
  readonly done: number;
  readonly failed: number;
}

/** The job states of docs/API.md. */
export type JobState = 'queued' | 'running' | 'held' | 'done' | 'failed' | 'cancelled';
/** The task states of docs/API.md. */
export type TaskState = 'pending' | 'running' | 'done' | 'failed';
/** Final job states: the job's events stream says nothing new until a resubmit. */
export const FINAL_STATES: readonly JobState[] = ['done', 'failed', 'cancelled'];

/** A job's status (`GET /api/v1/jobs/{ticket}`). */
export interface JobStatus {
  readonly ticket: string;
  readonly name: string;
  readonly owner: string;
  readonly kind: 'map' | 'optimize';
  readonly state: JobState;
  readonly total: number;
  readonly counts: Counts;
  readonly rate: number | null;
  readonly etaSeconds: number | null;
  readonly failures: readonly { readonly index: number; readonly error: { readonly name: string; readonly message: string } }[];
  readonly options: Readonly<Record<string, unknown>>;
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  readonly error: { readonly code: string; readonly message: string; readonly index?: number } | null;
  readonly result: unknown;
  readonly generation: number | null;
  /** The sequence number of the job's last event: where a live view starts its event stream. */
  readonly lastEventSeq?: number;
}

/** A worker (`GET /api/v1/workers`). */
export interface Worker {
  readonly id: string;
  readonly host: string;
  readonly address: string;
  readonly threads: number;
  readonly local: boolean;
  readonly state: 'idle' | 'busy' | 'draining' | 'lost';
  readonly inFlight: number;
  readonly completed: number;
  readonly avgTaskMs: number;
  readonly jobs: readonly string[];
  readonly lost?: string;
}

/** A task failure as the store keeps it. */
export interface TaskFailure {
  readonly name: string;
  readonly message: string;
  readonly stack?: string;
  readonly code?: string;
  readonly attempts?: number;
}

/** A row of the task table (`GET /api/v1/jobs/{ticket}/tasks`). */
export interface TaskRow {
  readonly index: number;
  readonly state: TaskState;
  readonly input: unknown;
  readonly output: unknown;
  readonly error: TaskFailure | null;
}

/** A duration histogram: `counts[i]` tasks took at most `bounds[i]` seconds (and more than `bounds[i-1]`); the last count is above the last bound. */
export interface Histogram {
  readonly bounds: readonly number[];
  readonly counts: readonly number[];
  readonly count: number;
  readonly sum: number;
}

/** `GET /api/v1/jobs/{ticket}/stats` (docs/API.md). */
export interface JobStats {
  readonly durations: Histogram;
  readonly throughput: { readonly intervalSeconds: number; readonly start: string; readonly done: readonly number[]; readonly failed: readonly number[] };
  readonly workers: readonly { readonly id: string; readonly host: string; readonly done: number; readonly failed: number; readonly avgTaskMs: number }[];
}

/** `GET /api/v1/workers/{id}` (docs/API.md). */
export interface WorkerDetail {
  readonly worker: Worker;
  readonly jobs: readonly { readonly ticket: string; readonly name: string; readonly done: number; readonly failed: number; readonly avgTaskMs: number }[];
  readonly durations: Histogram;
  readonly losses: readonly { readonly at: string; readonly reason: string; readonly requeued: number }[];
}

/** Who is signed in. */
export interface Session {
  readonly user: string;
  readonly admin: boolean;
}

/** An error answer of the API, with its HTTP status and stable code. */
export class ApiError extends Error {
  override name = 'ApiError';
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The actions a job's owner (or an admin) may take. */
export type JobAction = 'cancel' | 'hold' | 'release' | 'resubmit' | 'resubmit-failed';

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (method !== 'GET') headers['x-taskfarm-request'] = '1';
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let json: unknown;
  try {
    json = text.length > 0 ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    if (res.status === 401 && !path.startsWith('/api/v1/session')) window.dispatchEvent(new Event('taskfarm:unauthorized'));
    const err = (json as { error?: { code?: string; message?: string } } | undefined)?.error;
    throw new ApiError(res.status, err?.code ?? `HTTP_${res.status}`, err?.message ?? `${method} ${path} answered ${res.status} ${res.statusText}`);
  }
  return json as T;
}

function query(params: Record<string, string | number | boolean | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  const s = q.toString();
  return s.length > 0 ? `?${s}` : '';
}

const job = (ticket: string): string => `/api/v1/jobs/${encodeURIComponent(ticket)}`;

/** The API calls the pages make. */
export const api = {
  session: (): Promise<Session> => request('GET', '/api/v1/session'),
  signIn: (token: string): Promise<Session> => request('POST', '/api/v1/session', { token }),
  signOut: (): Promise<void> => request('DELETE', '/api/v1/session'),
  jobs: (opts: { all?: boolean; state?: string; limit?: number; after?: string } = {}): Promise<{ jobs: JobStatus[]; next: string | null }> =>
    request('GET', `/api/v1/jobs${query({ all: opts.all === true ? true : undefined, state: opts.state, limit: opts.limit, after: opts.after })}`),
  job: (ticket: string): Promise<JobStatus> => request('GET', job(ticket)),
  tasks: (
    ticket: string,
    opts: { state?: TaskState | undefined; after?: number | undefined; limit?: number },
  ): Promise<{ tasks: TaskRow[]; next: number | null }> =>
    request('GET', `${job(ticket)}/tasks${query({ state: opts.state, after: opts.after, limit: opts.limit })}`),
  failures: (
    ticket: string,
    opts: { after?: number | undefined; limit?: number },
  ): Promise<{ failures: { index: number; error: TaskFailure }[]; next: number | null }> =>
    request('GET', `${job(ticket)}/failures${query({ after: opts.after, limit: opts.limit })}`),
  stats: (ticket: string): Promise<JobStats> => request('GET', `${job(ticket)}/stats`),
  workers: async (): Promise<Worker[]> => (await request<{ workers: Worker[] }>('GET', '/api/v1/workers')).workers,
  worker: (id: string): Promise<WorkerDetail> => request('GET', `/api/v1/workers/${encodeURIComponent(id)}`),
  act: (ticket: string, action: JobAction): Promise<JobStatus> =>
    action === 'resubmit-failed' ? request('POST', `${job(ticket)}/resubmit`, { failed: true }) : request('POST', `${job(ticket)}/${action}`),
  /** The URL of the job's event stream (Server-Sent Events), from `after` when known. */
  eventsUrl: (ticket: string, after?: number): string => `${job(ticket)}/events${query({ after })}`,
};

/** The data of the job events the pages use (docs/API.md SSE). */
export interface ProgressEvent {
  readonly counts: Counts;
  readonly rate: number | null;
  readonly etaSeconds: number | null;
}

/** A `state` event. */
export interface StateEvent {
  readonly state: JobState;
  readonly from?: JobState;
  readonly error?: { readonly code: string; readonly message: string };
}

/** A `generation` event of an optimisation job: `result` is the status's `result` without `history` (docs/API.md Optimize jobs). */
export interface GenerationEvent {
  readonly generation: number;
  readonly result: unknown;
}

/** The best cost in an optimisation's `result` (a number, or an object with `cost`, `bestCost`, `best.cost`, `fun` or `value`), or undefined. */
export function bestCostOf(result: unknown): number | undefined {
  if (typeof result === 'number' && Number.isFinite(result)) return result;
  if (typeof result !== 'object' || result === null) return undefined;
  const r = result as Record<string, unknown>;
  for (const key of ['cost', 'bestCost', 'fun', 'value']) {
    const v = r[key];
    if (typeof v === 'number' && Number.isFinite(v)) return v;
  }
  return bestCostOf(r['best']);
}

/** A point of an optimisation's convergence: a generation (from 0) and the best cost after it. */
export type ConvergencePoint = readonly [generation: number, bestCost: number];

/** The convergence in an optimisation's status `result.history` (`[{generation, evaluations, fun, elapsedMs}]`): one point per committed generation. */
export function convergenceOf(result: unknown): ConvergencePoint[] {
  if (typeof result !== 'object' || result === null) return [];
  const history = (result as { history?: unknown }).history;
  if (!Array.isArray(history)) return [];
  const out: ConvergencePoint[] = [];
  for (const h of history as unknown[]) {
    if (typeof h !== 'object' || h === null) continue;
    const { generation, fun } = h as { generation?: unknown; fun?: unknown };
    if (typeof generation === 'number' && Number.isInteger(generation) && typeof fun === 'number' && Number.isFinite(fun)) out.push([generation, fun]);
  }
  return out;
}

/** `points` with `more` added, one point per generation (a later one replaces an earlier one), by generation. */
export function mergeConvergence(points: readonly ConvergencePoint[], more: readonly ConvergencePoint[]): readonly ConvergencePoint[] {
  if (more.length === 0) return points;
  const byGeneration = new Map<number, ConvergencePoint>();
  for (const p of points) byGeneration.set(p[0], p);
  for (const p of more) byGeneration.set(p[0], p);
  return [...byGeneration.values()].sort((a, b) => a[0] - b[0]);
}

/** The fields of an optimisation's `result` the job page shows (running: `fun`, `x`, `names`, `evaluations`, `generations`; done: also `reason`, `message`, `converged`). */
export interface OptimizeResult {
  readonly fun?: number;
  readonly x?: readonly number[];
  readonly names?: readonly string[];
  readonly evaluations?: number;
  /** Generations committed (the initial population counts as one). */
  readonly generations?: number;
  readonly bestGeneration?: number;
  readonly converged?: boolean;
  readonly reason?: string;
  readonly message?: string;
  readonly seed?: number;
}

/** An optimisation's `result` as {@link OptimizeResult}, or undefined when it is none (a job not started yet). */
export function optimizeResultOf(result: unknown): OptimizeResult | undefined {
  return typeof result === 'object' && result !== null && !Array.isArray(result) ? result : undefined;
}
