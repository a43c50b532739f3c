/**
 * End to end on the REAL service core: a `taskfarm serve` process (SQLite store in a temp folder,
 * static peers: real worker daemons on 127.0.0.1, never mDNS), driven by the CLI in child
 * processes, by fetch and by curl.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Daemons, tempDir, until, waitForLine, type LocalDaemon } from '../helpers/daemons.js';

const REPO = new URL('../../', import.meta.url).pathname;
const CLI = join(REPO, 'dist/client/cli.js');

interface Manager {
  readonly child: ChildProcess;
  readonly url: string;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();

async function startManager(dir: string, peers: readonly LocalDaemon[], extra: readonly string[] = []): Promise<Manager> {
  const child = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--port',
      '0',
      '--store',
      join(dir, 'jobs.db'),
      '--state-dir',
      join(dir, 'state'),
      '--peers',
      peers.map((p) => p.address).join(','),
      '--log-level',
      'warn',
      ...extra,
    ],
    { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, XDG_CONFIG_HOME: join(dir, 'config') } },
  );
  children.add(child);
  const m: Manager = { child, url: '', stdout: '', stderr: '' };
  child.stderr.setEncoding('utf8').on('data', (d: string) => (m.stderr += d));
  const ready = await waitForLine(child.stdout, /^READY port=(\d+)$/m, 20_000);
  return Object.assign(m, { url: `http://127.0.0.1:${ready[1]}` });
}

async function cli(
  dir: string,
  url: string,
  token: string,
  args: readonly string[],
  stdin = '',
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: REPO,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, XDG_CONFIG_HOME: join(dir, 'config'), TASKFARM_SERVER: url, TASKFARM_TOKEN: token },
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => {});
  child.stdin.end(stdin);
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  children.delete(child);
  return { code, stdout, stderr };
}

describe('job service end to end (real taskfarm serve + daemons)', () => {
  const daemons = new Daemons();
  let ds: LocalDaemon[];
  let dir: { path: string; remove: () => void };
  let manager: Manager;
  let token: string;
  let admin: string;

  beforeAll(async () => {
    ds = await daemons.start(2);
    dir = tempDir();
    manager = await startManager(dir.path, ds);
    const t = await cli(dir.path, manager.url, '', ['token', 'create', '--user', 'ada']);
    expect(t.code, t.stderr).toBe(0);
    token = t.stdout.trim();
    admin = (await cli(dir.path, manager.url, '', ['token', 'create', '--user', 'root', '--admin'])).stdout.trim();
  }, 60_000);

  afterEach(async () => {
    for (const c of children) if (c !== manager.child && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  afterAll(async () => {
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL');
        await once(c, 'close');
      }
    }
    await daemons.stopAll();
    dir?.remove();
  });

  it('submit → attach → results, exactly like taskfarm run', async () => {
    const inputs = join(dir.path, 'in.jsonl');
    writeFileSync(inputs, Array.from({ length: 2000 }, (_, i) => String(i)).join('\n') + '\n');
    const s = await cli(dir.path, manager.url, token, ['submit', 'test/fixtures/double.ts', '--inputs', inputs, '--name', 'e2e']);
    expect(s.code, s.stderr).toBe(0);
    const ticket = s.stdout.trim();
    const a = await cli(dir.path, manager.url, token, ['attach', ticket]);
    expect(a.code, a.stderr).toBe(0);
    const r = await cli(dir.path, manager.url, token, ['results', ticket]);
    expect(r.stdout).toBe(Array.from({ length: 2000 }, (_, i) => `${i * 2}\n`).join(''));
    const st = JSON.parse((await cli(dir.path, manager.url, token, ['status', ticket, '--json'])).stdout);
    expect(st).toMatchObject({ ticket, name: 'e2e', owner: 'ada', state: 'done', total: 2000, counts: { done: 2000, failed: 0 } });
  });

  it('a malformed line creates no job', async () => {
    const before = JSON.parse((await cli(dir.path, manager.url, token, ['history', '--json'])).stdout).length;
    const r = await cli(dir.path, manager.url, token, ['submit', 'test/fixtures/double.ts', '--inputs', '-'], '1\n2\n{x\n');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/stdin:3: not valid JSON/);
    const jobs = [
      ...JSON.parse((await cli(dir.path, manager.url, token, ['jobs', '--json'])).stdout),
      ...JSON.parse((await cli(dir.path, manager.url, token, ['history', '--json'])).stdout),
    ];
    expect(jobs.length).toBe(before);
  });

  it('an inline-stage job with plain fetch (and curl when present); SSE resume without repeats', async () => {
    const body = `${JSON.stringify({ stages: [{ source: 'export default (x) => x * 2' }] })}\n${[1, 2, 3].join('\n')}\n`;
    const res = await fetch(`${manager.url}/api/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-ndjson' },
      body,
    });
    expect(res.status).toBe(201);
    const { ticket } = (await res.json()) as { ticket: string };
    await until(
      'done',
      async () =>
        ((await (await fetch(`${manager.url}/api/v1/jobs/${ticket}`, { headers: { authorization: `Bearer ${token}` } })).json()) as { state: string }).state ===
        'done',
      30_000,
    );
    const out = await (await fetch(`${manager.url}/api/v1/jobs/${ticket}/results`, { headers: { authorization: `Bearer ${token}` } })).text();
    expect(out).toBe('{"index":0,"output":2}\n{"index":1,"output":4}\n{"index":2,"output":6}\n');
    const events = async (after: number): Promise<number[]> => {
      const ac = new AbortController();
      const r = await fetch(`${manager.url}/api/v1/jobs/${ticket}/events`, {
        headers: { authorization: `Bearer ${token}`, 'last-event-id': String(after) },
        signal: ac.signal,
      });
      const reader = r.body!.getReader();
      let raw = '';
      while (!/event: state\ndata: \{"state":"done"/.test(raw)) raw += new TextDecoder().decode((await reader.read()).value);
      ac.abort();
      return [...raw.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    };
    const all = await events(0);
    expect(all).toEqual(Array.from({ length: all.length }, (_, i) => i + 1));
    expect(await events(1)).toEqual(all.slice(1));
    if (spawnSync('curl', ['--version']).status === 0) {
      const c = spawnSync(
        'curl',
        [
          '-sS',
          '-X',
          'POST',
          '-H',
          `Authorization: Bearer ${token}`,
          '-H',
          'Content-Type: application/x-ndjson',
          '--data-binary',
          `@-`,
          `${manager.url}/api/v1/jobs`,
        ],
        { input: body },
      );
      expect(JSON.parse(c.stdout.toString())).toHaveProperty('ticket');
    }
  });

  it('hold stops dispatch, release resumes; kill; resubmit --failed; rm; 401 and 404 rules', async () => {
    const s = await cli(dir.path, manager.url, token, ['submit', 'test/fixtures/double.ts', '--inputs', '-', '--hold'], '1\n2\n');
    const ticket = s.stdout.trim();
    expect((await cli(dir.path, manager.url, token, ['status', ticket, '--json'])).stdout).toMatch(/"state":"held"/);
    expect((await cli(dir.path, manager.url, token, ['release', ticket])).code).toBe(0);
    expect((await cli(dir.path, manager.url, token, ['attach', ticket])).code).toBe(0);
    expect((await cli(dir.path, manager.url, token, ['resubmit', ticket, '--failed'])).code).toBe(0);
    expect((await cli(dir.path, manager.url, admin, ['status', ticket])).code).toBe(0);
    const other = (await cli(dir.path, manager.url, '', ['token', 'create', '--user', 'bob'])).stdout.trim();
    const r = await fetch(`${manager.url}/api/v1/jobs/${ticket}`, { headers: { authorization: `Bearer ${other}` } });
    expect(r.status).toBe(404);
    expect((await fetch(`${manager.url}/api/v1/jobs`, { headers: { authorization: 'Bearer nope' } })).status).toBe(401);
    expect((await cli(dir.path, manager.url, token, ['rm', ticket])).code).toBe(0);
  });

  it('/metrics parses as Prometheus exposition; /healthz ok; GET /api/openapi.json', async () => {
    const text = await (await fetch(`${manager.url}/metrics`)).text();
    expect(parsePrometheusTextFormat(text).length).toBeGreaterThan(0);
    expect(await (await fetch(`${manager.url}/healthz`)).json()).toEqual({ status: 'ok' });
    expect((await fetch(`${manager.url}/api/openapi.json`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
  });

  it('SIGTERM: exit 0; restarted on the same store, the jobs are still there', async () => {
    const list = JSON.parse((await cli(dir.path, manager.url, token, ['history', '--json'])).stdout) as { ticket: string }[];
    manager.child.kill('SIGTERM');
    const [code] = (await once(manager.child, 'close')) as [number];
    expect(code).toBe(0);
    manager = await startManager(dir.path, ds);
    const again = JSON.parse((await cli(dir.path, manager.url, token, ['history', '--json'])).stdout) as { ticket: string }[];
    expect(again.map((j) => j.ticket)).toEqual(list.map((j) => j.ticket));
  });
});
