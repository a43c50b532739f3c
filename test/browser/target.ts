/**
 * The manager the browser tests (and `taskfarm top`'s tests) run against: ONE factory.
 *
 *   real — a real `taskfarm serve` process on a real SQLite store, with two real worker daemons
 *          (--threads 2) on 127.0.0.1, tokens minted with `taskfarm token create`, the dashboard
 *          served from dist/dashboard (`--static`). The default whenever this build has the
 *          `serve` command (i.e. once branches svc and http are merged).
 *   fake — test/helpers/fake-manager.ts, the documented API simulated in process: the default
 *          while the build has no `serve`.
 * TASKFARM_DASHBOARD_TARGET=real|fake forces one. The tests talk to the target only through the
 * documented HTTP API, so nothing else changes between the two.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { CLI, REPO } from '../helpers/cli.js';
import { Daemons, tempDir, waitForLine } from '../helpers/daemons.js';
import { startFakeManager } from '../helpers/fake-manager.js';

/** Which manager the tests use when TASKFARM_DASHBOARD_TARGET is not set: the real one when the build has `taskfarm serve`. */
export const DEFAULT_TARGET: 'fake' | 'real' = spawnSync(process.execPath, [CLI, 'serve', '--help'], { stdio: 'ignore' }).status === 0 ? 'real' : 'fake';

/** The built dashboard (`npm run build`). */
export const DASHBOARD_DIR = new URL('../../dist/dashboard/', import.meta.url).pathname;

/**
 * The stage every test job runs (inline source, bundled by the manager): an input `{i, ms, fail}`
 * sleeps `ms`, throws `fail` when given, and returns `2 i`; a number returns twice itself. The fake
 * manager simulates exactly this.
 */
export const TEST_STAGE = `export default async (x) => {
  if (typeof x === 'number') return x * 2;
  if (x.ms > 0) await new Promise((resolve) => setTimeout(resolve, x.ms));
  if (typeof x.fail === 'string') throw new Error(x.fail);
  return (x.i ?? 0) * 2;
};`;

/** The users of every target. */
export type User = 'alice' | 'bob' | 'admin';

/** A job's status as the API answers it (the fields tests read). */
export interface Status {
  readonly ticket: string;
  readonly name: string;
  readonly owner: string;
  readonly state: string;
  readonly total: number;
  readonly counts: { pending: number; running: number; done: number; failed: number };
}

/** What a test submits. */
export interface SubmitSpec {
  readonly name?: string;
  /** Inputs inline, or `count` numbers 0…count-1 streamed as NDJSON. */
  readonly inputs?: readonly unknown[];
  readonly count?: number;
  readonly hold?: boolean;
  readonly errors?: 'fail' | 'collect';
  readonly priority?: number;
}

/** The API, as one user. */
export interface TargetClient {
  request(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }>;
  submit(spec: SubmitSpec): Promise<string>;
  status(ticket: string): Promise<Status>;
  jobs(all?: boolean): Promise<Status[]>;
  workers(): Promise<{ id: string; host: string; state: string; threads: number }[]>;
}

/** A manager for one test file. */
export interface Target {
  readonly kind: 'fake' | 'real';
  /** Base URL (http://127.0.0.1:PORT). */
  readonly url: string;
  readonly tokens: Readonly<Record<User, string>>;
  as(user: User): TargetClient;
  /** Stops everything the target started (processes by pid, folders). */
  close(): Promise<void>;
}

function clientFor(url: string, token: string): TargetClient {
  const request = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> => {
    const res = await fetch(url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, json: text.length > 0 ? (JSON.parse(text) as unknown) : undefined };
  };
  const ok = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const r = await request(method, path, body);
    if (r.status >= 300) throw new Error(`${method} ${path} → ${r.status} ${JSON.stringify(r.json)}`);
    return r.json as T;
  };
  return {
    request,
    async submit(spec) {
      const description = {
        stages: [{ source: TEST_STAGE }],
        ...(spec.name === undefined ? {} : { name: spec.name }),
        ...(spec.hold === undefined ? {} : { hold: spec.hold }),
        ...(spec.errors === undefined ? {} : { errors: spec.errors }),
        ...(spec.priority === undefined ? {} : { priority: spec.priority }),
      };
      if (spec.count !== undefined) {
        // A million lines without building them one string at a time: chunks of 100,000.
        const n = spec.count;
        const encoder = new TextEncoder();
        let at = -1;
        const body = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (at < 0) {
              controller.enqueue(encoder.encode(`${JSON.stringify(description)}\n`));
              at = 0;
              return;
            }
            if (at >= n) return controller.close();
            const to = Math.min(n, at + 100_000);
            let s = '';
            for (let i = at; i < to; i++) s += `${i}\n`;
            at = to;
            controller.enqueue(encoder.encode(s));
          },
        });
        // `duplex` is required by Node's fetch for a streamed body (not in the DOM's RequestInit type).
        const init: RequestInit & { duplex: 'half' } = {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-ndjson' },
          body,
          duplex: 'half',
        };
        const res = await fetch(`${url}/api/v1/jobs`, init);
        const json = (await res.json()) as { ticket?: string };
        if (res.status !== 201 || json.ticket === undefined) throw new Error(`submit → ${res.status} ${JSON.stringify(json)}`);
        return json.ticket;
      }
      return (await ok<{ ticket: string }>('POST', '/api/v1/jobs', { ...description, inputs: spec.inputs ?? [] })).ticket;
    },
    status: (ticket) => ok<Status>('GET', `/api/v1/jobs/${ticket}`),
    jobs: async (all = false) => (await ok<{ jobs: Status[] }>('GET', `/api/v1/jobs${all ? '?all=true' : ''}`)).jobs,
    workers: async () => (await ok<{ workers: { id: string; host: string; state: string; threads: number }[] }>('GET', '/api/v1/workers')).workers,
  };
}

async function fakeTarget(): Promise<Target> {
  const tokens: Record<User, string> = { alice: 'tf_alice_test_token', bob: 'tf_bob_test_token', admin: 'tf_admin_test_token' };
  const manager = await startFakeManager({
    tokens: { [tokens.alice]: { user: 'alice', admin: false }, [tokens.bob]: { user: 'bob', admin: false }, [tokens.admin]: { user: 'root', admin: true } },
    staticDir: DASHBOARD_DIR,
  });
  return { kind: 'fake', url: manager.url, tokens, as: (u) => clientFor(manager.url, tokens[u]), close: () => manager.close() };
}

/** Runs a CLI command to its end; rejects on a non-zero exit. */
async function run(args: readonly string[]): Promise<string> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`taskfarm ${args.join(' ')} exited ${code}: ${err}`);
  return out;
}

async function realTarget(): Promise<Target> {
  const daemons = new Daemons();
  const dir = tempDir();
  let manager: ChildProcess | undefined;
  try {
    const workers = await daemons.start(2, ['--threads', '2']);
    manager = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--host',
        '127.0.0.1',
        '--port',
        '0',
        '--store',
        `${dir.path}/jobs.db`,
        '--state-dir',
        `${dir.path}/state`,
        '--peers',
        workers.map((w) => `127.0.0.1:${w.port}`).join(','),
        '--static',
        DASHBOARD_DIR,
        '--log-level',
        'warn',
      ],
      { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const [, port] = await waitForLine(manager.stdout!, /^READY port=(\d+)/, 30_000);
    const url = `http://127.0.0.1:${port}`;
    const mint = async (user: string, admin: boolean): Promise<string> =>
      (await run(['token', 'create', '--user', user, ...(admin ? ['--admin'] : []), '--server', url])).trim().split('\n').pop() ?? '';
    const tokens: Record<User, string> = { alice: await mint('alice', false), bob: await mint('bob', false), admin: await mint('root', true) };
    const child = manager;
    return {
      kind: 'real',
      url,
      tokens,
      as: (u) => clientFor(url, tokens[u]),
      async close() {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
          await once(child, 'exit');
          clearTimeout(timer);
        }
        await daemons.stopAll();
        dir.remove();
      },
    };
  } catch (err) {
    if (manager !== undefined && manager.exitCode === null) manager.kill('SIGKILL');
    await daemons.stopAll();
    dir.remove();
    throw err;
  }
}

/** Starts the target manager (see the module comment). */
export async function startTarget(): Promise<Target> {
  const kind = (process.env['TASKFARM_DASHBOARD_TARGET'] ?? DEFAULT_TARGET) as 'fake' | 'real';
  if (kind !== 'fake' && kind !== 'real') throw new Error(`TASKFARM_DASHBOARD_TARGET must be fake or real, got ${String(kind)}`);
  return kind === 'real' ? realTarget() : fakeTarget();
}
