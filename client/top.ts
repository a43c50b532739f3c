/**
 * `taskfarm top`: the dashboard's overview in a terminal (like htop or condor_watch_q), for a
 * machine without a browser. It reads the manager's documented API (`GET /api/v1/workers`,
 * `GET /api/v1/jobs`) every few seconds and redraws; q or Ctrl-C quits. `--once` prints one frame
 * and exits (scripts, tests).
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FarmError } from '../src/index.js';

const DEFAULT_SERVER = 'http://127.0.0.1:7800';

function tokenFile(): string {
  const base = process.env['XDG_CONFIG_HOME'];
  return join(base !== undefined && base.length > 0 ? base : join(homedir(), '.config'), 'taskfarm', 'token');
}

export const TOP_HELP = `Usage: taskfarm top [options]

The farm's workers and your jobs, live in the terminal (the web dashboard's overview): workers
with host, threads, state, tasks/s and current job; jobs with name, owner, state, progress, rate
and ETA. It refreshes every --interval seconds; press q (or Ctrl-C) to quit.

Options:
  --server URL     the manager (default $TASKFARM_SERVER or ${DEFAULT_SERVER})
  --token T        bearer token (default $TASKFARM_TOKEN, or the token file
                   ${tokenFile()})
  --all            every user's jobs (admin tokens only)
  --interval S     seconds between refreshes (default 2, at least 0.5)
  --once           print one frame and exit (no screen control: for scripts)
  -h, --help       show this help

Exit status: 0 when quit, 1 when the manager cannot be reached or refuses the token, 2 bad usage.
`;

interface Counts {
  readonly pending: number;
  readonly running: number;
  readonly done: number;
  readonly failed: number;
}

/** What `GET /api/v1/jobs` says of a job (the fields top shows). */
export interface TopJob {
  readonly ticket: string;
  readonly name: string;
  readonly owner: string;
  readonly state: string;
  readonly total: number;
  readonly counts: Counts;
  readonly rate: number | null;
  readonly etaSeconds: number | null;
}

/** What `GET /api/v1/workers` says of a worker. */
export interface TopWorker {
  readonly id: string;
  readonly host: string;
  readonly address: string;
  readonly threads: number;
  readonly state: string;
  readonly inFlight: number;
  readonly completed: number;
  readonly avgTaskMs: number;
  readonly jobs: readonly string[];
  readonly lost?: string;
}

/** One frame's data. */
export interface TopFrame {
  readonly server: string;
  readonly user: string;
  readonly at: Date;
  readonly workers: readonly TopWorker[];
  readonly jobs: readonly TopJob[];
  /** Tasks per second per worker id, measured between two refreshes. */
  readonly workerRates: ReadonlyMap<string, number>;
  readonly error?: string;
}

/** Text a user typed (job names, hosts), made safe for a terminal: control characters (escape sequences) become `?`. */
export function safe(s: string): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '?');
}

function fit(s: string, width: number): string {
  const t = safe(s);
  if (width <= 0) return '';
  if (t.length <= width) return t.padEnd(width);
  return `${t.slice(0, Math.max(0, width - 1))}…`;
}

function right(s: string, width: number): string {
  return s.length >= width ? s.slice(0, width) : s.padStart(width);
}

const n0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const n1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

function rate(r: number | null | undefined): string {
  if (r === null || r === undefined || !Number.isFinite(r)) return '—';
  return r >= 100 ? `${n0.format(r)}/s` : `${n1.format(r)}/s`;
}

function eta(s: number | null): string {
  if (s === null || !Number.isFinite(s) || s < 0) return '—';
  if (s < 60) return `${n1.format(s)}s`;
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(t % 60).padStart(2, '0')}s`;
}

function bar(counts: Counts, total: number, width: number): string {
  const f = total > 0 ? (counts.done + counts.failed) / total : 0;
  const full = Math.round(Math.min(1, Math.max(0, f)) * width);
  return `${'█'.repeat(full)}${'░'.repeat(width - full)}`;
}

/** Renders a frame as lines of at most `width` characters (pure: the tests call it). */
export function renderTop(frame: TopFrame, width = 100): string[] {
  const w = Math.max(60, width);
  const lines: string[] = [];
  const busy = frame.workers.filter((x) => x.state === 'busy').length;
  const running = frame.jobs.filter((j) => j.state === 'running').length;
  lines.push(fit(`taskfarm top — ${frame.server} — ${frame.user} — ${frame.at.toLocaleTimeString()}`, w));
  lines.push(fit(`workers: ${frame.workers.length} (${busy} busy)   jobs: ${frame.jobs.length} (${running} running)   q to quit`, w));
  if (frame.error !== undefined) lines.push(fit(`! ${frame.error}`, w));
  lines.push('');
  const names = new Map(frame.jobs.map((j) => [j.ticket, j.name.length > 0 ? j.name : j.ticket.slice(0, 8)]));
  const hostW = Math.min(28, Math.max(12, Math.floor(w * 0.25)));
  const jobW = w - hostW - 8 - 10 - 10 - 12 - 5;
  lines.push(`${fit('HOST', hostW)} ${right('THREADS', 8)} ${fit('STATE', 10)}${right('TASKS/S', 10)} ${right('DONE', 12)} ${fit('JOB', jobW)}`);
  for (const x of frame.workers) {
    const job = x.jobs.length === 0 ? '—' : x.jobs.map((t) => names.get(t) ?? 'another job').join(', ');
    lines.push(
      `${fit(x.host.length > 0 ? x.host : x.address, hostW)} ${right(String(x.threads), 8)} ${fit(x.state === 'idle' ? 'free' : x.state, 10)}${right(rate(frame.workerRates.get(x.id)), 10)} ${right(n0.format(x.completed), 12)} ${fit(x.state === 'lost' && x.lost !== undefined ? `lost: ${x.lost}` : job, jobW)}`,
    );
  }
  if (frame.workers.length === 0) lines.push('  (no worker recruited yet)');
  lines.push('');
  const barW = Math.max(10, Math.min(30, w - 24 - 10 - 10 - 22 - 10 - 8 - 6));
  const nameW = w - 10 - 10 - barW - 22 - 10 - 8 - 6;
  lines.push(
    `${fit('NAME', nameW)} ${fit('OWNER', 10)} ${fit('STATE', 10)} ${fit('PROGRESS', barW)} ${right('DONE/TOTAL', 22)} ${right('RATE', 10)} ${right('ETA', 8)}`,
  );
  for (const j of frame.jobs) {
    const done = `${n0.format(j.counts.done)}/${n0.format(j.total)}${j.counts.failed > 0 ? ` ✗${n0.format(j.counts.failed)}` : ''}`;
    lines.push(
      `${fit(j.name.length > 0 ? j.name : j.ticket.slice(0, 8), nameW)} ${fit(j.owner, 10)} ${fit(j.state, 10)} ${bar(j.counts, j.total, barW)} ${right(done, 22)} ${right(rate(j.rate), 10)} ${right(j.state === 'running' ? eta(j.etaSeconds) : '—', 8)}`,
    );
  }
  if (frame.jobs.length === 0) lines.push('  (no jobs)');
  return lines;
}

class TopError extends FarmError {
  override name = 'TopError';
}

async function getJson<T>(server: string, path: string, token: string): Promise<T> {
  let res: Response;
  try {
    res = await fetch(server + path, { headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    const cause = (err as Error & { cause?: { code?: string } }).cause;
    throw new TopError(
      'FARM_ERR_PROTOCOL',
      `cannot reach the manager at ${server}: ${cause?.code ?? (err as Error).message} (is \`taskfarm serve\` running? --server)`,
      { cause: err },
    );
  }
  const text = await res.text();
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message;
    } catch {
      // not JSON
    }
    throw new TopError(res.status === 401 ? 'FARM_ERR_UNAUTHENTICATED' : 'FARM_ERR_PROTOCOL', `the manager answered ${path} with ${res.status}: ${message}`);
  }
  return JSON.parse(text) as T;
}

/** Runs `taskfarm top`. Returns the exit code. */
export async function runTop(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      server: { type: 'string' },
      token: { type: 'string' },
      all: { type: 'boolean' },
      interval: { type: 'string' },
      once: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help === true) {
    process.stdout.write(TOP_HELP);
    return 0;
  }
  const server = (values.server ?? process.env['TASKFARM_SERVER'] ?? DEFAULT_SERVER).replace(/\/+$/, '');
  if (!/^https?:\/\/[^/]+$/.test(server)) throw new FarmError('FARM_ERR_INVALID_OPTION', `--server expects a URL like ${DEFAULT_SERVER}, got "${server}"`);
  const intervalS = values.interval === undefined ? 2 : Number(values.interval);
  if (!Number.isFinite(intervalS) || intervalS < 0.5)
    throw new FarmError('FARM_ERR_INVALID_OPTION', `--interval expects seconds ≥ 0.5, got "${values.interval}"`);
  let token = values.token ?? process.env['TASKFARM_TOKEN'];
  if (token === undefined || token.length === 0) {
    try {
      token = readFileSync(tokenFile(), 'utf8').trim();
    } catch {
      token = undefined;
    }
  }
  if (token === undefined || token.length === 0) {
    throw new FarmError(
      'FARM_ERR_INVALID_OPTION',
      `no token: pass --token, set $TASKFARM_TOKEN, or save one with \`taskfarm token create --save\` (${tokenFile()})`,
    );
  }
  const tok = token;

  let last: { at: number; completed: Map<string, number> } | undefined;
  const rates = new Map<string, number>();
  let user = '';
  const fetchFrame = async (): Promise<TopFrame> => {
    const [session, workers, jobs] = await Promise.all([
      user.length > 0 ? Promise.resolve({ user }) : getJson<{ user: string; admin: boolean }>(server, '/api/v1/session', tok).catch(() => ({ user: '' })),
      getJson<{ workers: TopWorker[] }>(server, '/api/v1/workers', tok),
      getJson<{ jobs: TopJob[] }>(server, `/api/v1/jobs?limit=100${values.all === true ? '&all=true' : ''}`, tok),
    ]);
    user = session.user;
    const now = Date.now();
    for (const w of workers.workers) {
      const before = last?.completed.get(w.id);
      if (last !== undefined && before !== undefined && now > last.at) rates.set(w.id, Math.max(0, ((w.completed - before) * 1000) / (now - last.at)));
      else if (w.state === 'busy' && w.avgTaskMs > 0) rates.set(w.id, (Math.min(w.threads, Math.max(1, w.inFlight)) * 1000) / w.avgTaskMs);
    }
    last = { at: now, completed: new Map(workers.workers.map((w) => [w.id, w.completed])) };
    return { server, user: user.length > 0 ? user : '?', at: new Date(now), workers: workers.workers, jobs: jobs.jobs, workerRates: rates };
  };

  if (values.once === true) {
    const frame = await fetchFrame();
    process.stdout.write(`${renderTop(frame, process.stdout.columns ?? 120).join('\n')}\n`);
    return 0;
  }

  const out = process.stdout;
  const tty = out.isTTY;
  const stdin = process.stdin;
  // The first frame must come: a wrong token or an unreachable manager is an error, not a blank screen.
  let frame = await fetchFrame();
  if (tty) out.write('\x1b[?1049h\x1b[?25l');
  const draw = (): void => {
    const lines = renderTop(frame, out.columns ?? 120);
    const rows = out.rows ?? lines.length;
    out.write(tty ? `\x1b[H\x1b[2J${lines.slice(0, rows).join('\n')}` : `${lines.join('\n')}\n\n`);
  };
  draw();
  return await new Promise<number>((resolve) => {
    let busy = false;
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      fetchFrame()
        .then(
          (f) => {
            frame = f;
          },
          (err: unknown) => {
            frame = { ...frame, at: new Date(), error: (err as Error).message };
          },
        )
        .finally(() => {
          busy = false;
          draw();
        });
    }, intervalS * 1000);
    const quit = (): void => {
      clearInterval(timer);
      stdin.off('data', onKey);
      process.off('SIGINT', quit);
      process.off('SIGTERM', quit);
      out.off('resize', draw);
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      if (tty) out.write('\x1b[?25h\x1b[?1049l');
      resolve(0);
      // Pressing q means now: idle keep-alive sockets to the manager (and stdin) must not hold the
      // process for seconds. The timer is unref'd, so it only fires if something still does.
      setTimeout(() => process.exit(), 100).unref();
    };
    const onKey = (d: Buffer): void => {
      const s = d.toString();
      if (s.includes('q') || s.includes('Q') || s.includes('\x03')) quit();
    };
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', onKey);
    stdin.on('end', () => undefined);
    stdin.resume();
    process.on('SIGINT', quit);
    process.on('SIGTERM', quit);
    out.on('resize', draw);
  });
}
