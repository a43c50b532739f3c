/**
 * The job-service CLI commands and the library's connect() as a user runs them: `node
 * dist/client/cli.js …` in child processes against a manager in this process (ServiceHttpServer
 * over a FakeJobService that computes inline and bundled stages itself) on 127.0.0.1, over HTTP
 * and over HTTPS with certificate pinning. The end-to-end versions on the real core are in
 * test/system/service-e2e.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connect, loadOrCreateTlsIdentity, ServiceHttpServer } from '../../src/index.js';
import { tempDir, until } from '../helpers/daemons.js';
import { FakeJobService } from '../helpers/fake-job-service.js';

const CLI = new URL('../../dist/client/cli.js', import.meta.url).pathname;
const REPO = new URL('../../', import.meta.url).pathname;
const DOUBLE = 'test/fixtures/double.ts';
const KEY = Buffer.alloc(32, 3);

interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

const running = new Set<ChildProcess>();
let svc: FakeJobService;
let http: ServiceHttpServer;
let url: string;
let home: { path: string; remove: () => void };

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    XDG_CONFIG_HOME: join(home.path, 'config'),
    TASKFARM_SERVER: url,
    TASKFARM_TOKEN: 'tok-ada',
    TASKFARM_KEY: '',
    TASKFARM_KEY_FILE: '',
    ...extra,
  };
}

async function cli(args: readonly string[], opts: { stdin?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'], env: env(opts.env) });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => {});
  child.stdin.end(opts.stdin ?? '');
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20_000);
  try {
    const [code] = (await once(child, 'close')) as [number | null];
    return { code, stdout, stderr };
  } finally {
    clearTimeout(timer);
    running.delete(child);
  }
}

beforeEach(async () => {
  home = tempDir();
  svc = new FakeJobService({ autoRun: true, key: KEY });
  svc.addToken('tok-ada', { user: 'ada', admin: false }).addToken('tok-root', { user: 'root', admin: true });
  http = await ServiceHttpServer.create({ service: svc });
  url = (await http.listen('127.0.0.1', 0)).url;
});

afterEach(async () => {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'close');
    }
  }
  running.clear();
  await http.close();
  home.remove();
});

function inputsFile(lines: readonly string[]): string {
  const f = join(home.path, 'inputs.jsonl');
  writeFileSync(f, lines.join('\n') + '\n');
  return f;
}

describe('--help of every job-service command', () => {
  for (const cmd of ['serve', 'token', 'submit', 'status', 'jobs', 'history', 'attach', 'results', 'kill', 'hold', 'release', 'resubmit', 'rm']) {
    it(`taskfarm ${cmd} --help`, async () => {
      const r = await cli([cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: taskfarm ${cmd}`));
      if (cmd !== 'serve') expect(r.stdout).toMatch(/--server URL[\s\S]*--token T[\s\S]*--json/);
    });
  }
  it('taskfarm --help lists them', async () => {
    const r = await cli(['--help']);
    for (const cmd of ['serve', 'submit', 'status', 'attach', 'results', 'resubmit']) expect(r.stdout).toMatch(new RegExp(`\\n  ${cmd} `));
  });
});

describe('taskfarm serve (argv only: the service itself needs the core, see test/system/service-e2e.test.ts)', () => {
  it('bad flags exit 2; no farm key exits 2 with how to make one', async () => {
    expect((await cli(['serve', '--port', 'x'])).code).toBe(2);
    expect((await cli(['serve', '--port', '70000'])).code).toBe(2);
    expect((await cli(['serve', '--bogus'])).code).toBe(2);
    const nokey = await cli(['serve', '--port', '0'], { env: { HOME: home.path } });
    expect(nokey.code).toBe(2);
    expect(nokey.stderr).toMatch(/no farm key/);
  });
});

describe('taskfarm token create', () => {
  it('mints a token with the farm key (challenge–response), prints it, --save keeps it 0600 for later commands', async () => {
    const keyFile = join(home.path, 'farm.key');
    writeFileSync(keyFile, KEY.toString('base64url') + '\n', { mode: 0o600 });
    const r = await cli(['token', 'create', '--user', 'eve', '--key-file', keyFile, '--save']);
    expect(r.code, r.stderr).toBe(0);
    const token = r.stdout.trim();
    expect(token).toMatch(/^tf_/);
    expect(await svc.authenticate(token)).toEqual({ user: 'eve', admin: false });
    const saved = join(home.path, 'config', 'taskfarm', 'token');
    expect(readFileSync(saved, 'utf8').trim()).toBe(token);
    expect(statSync(saved).mode & 0o777).toBe(0o600);
    const jobs = await cli(['jobs', '--json'], { env: { TASKFARM_TOKEN: '' } });
    expect(jobs.code, jobs.stderr).toBe(0);
    expect(JSON.parse(jobs.stdout)).toEqual([]);
  });
  it('a wrong key is refused (exit 1), no key at all is a usage error (exit 2)', async () => {
    const keyFile = join(home.path, 'wrong.key');
    writeFileSync(keyFile, Buffer.alloc(32, 9).toString('base64url') + '\n', { mode: 0o600 });
    const r = await cli(['token', 'create', '--user', 'eve', '--key-file', keyFile]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/proof/i);
    const none = await cli(['token', 'create', '--user', 'eve'], { env: { HOME: home.path } });
    expect(none.code).toBe(2);
    expect((await cli(['token', 'create', '--key-file', keyFile])).code).toBe(2);
  });
});

describe('submit, status, jobs, history, attach, results', () => {
  it('submit bundles the stage, uploads it once, streams the inputs and prints the ticket; results in input order like taskfarm run', async () => {
    const f = inputsFile(Array.from({ length: 1000 }, (_, i) => String(i)));
    const r = await cli(['submit', DOUBLE, '--inputs', f, '--name', 'sweep', '--priority', '3']);
    expect(r.code, r.stderr).toBe(0);
    const ticket = r.stdout.trim();
    expect(ticket).toMatch(/^[0-9a-f-]{36}$/);
    expect(svc.bundles.size).toBe(1);
    const job = svc.jobs.get(ticket)!;
    expect(job.spec).toMatchObject({ name: 'sweep', priority: 3, stages: [{ name: expect.any(String) }] });
    await until('job done', () => job.state === 'done');
    const res = await cli(['results', ticket]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toBe(Array.from({ length: 1000 }, (_, i) => `${i * 2}\n`).join(''));
    const out = join(home.path, 'out.jsonl');
    expect((await cli(['results', ticket, '--output', out])).code).toBe(0);
    expect(readFileSync(out, 'utf8')).toBe(res.stdout);
    // the same bundle is not uploaded twice; --json gives {"ticket"}
    const again = await cli(['submit', DOUBLE, '--inputs', '-', '--json'], { stdin: '1\n2\n' });
    expect(Object.keys(JSON.parse(again.stdout))).toEqual(['ticket']);
    expect(svc.bundles.size).toBe(1);
  });

  it('a malformed line fails the submit with its line number and creates no job (exit 2)', async () => {
    const f = inputsFile(['1', '2', '', '{"a": nope}', '5']);
    const r = await cli(['submit', DOUBLE, '--inputs', f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${f}:4: not valid JSON`);
    expect(r.stdout).toBe('');
    await until('the aborted upload is over', async () => (await fetch(`${url}/healthz`)).status === 200);
    expect(svc.jobs.size).toBe(0);
  });

  it('usage errors exit 2: no stage, no --inputs, a bad flag value', async () => {
    expect((await cli(['submit', '--inputs', '-'])).code).toBe(2);
    expect((await cli(['submit', DOUBLE])).code).toBe(2);
    expect((await cli(['submit', DOUBLE, '--inputs', '-', '--priority', '1.5'])).code).toBe(2);
    expect((await cli(['submit', DOUBLE, '--inputs', '/nonexistent/file'])).code).toBe(2);
    expect((await cli(['status'])).code).toBe(2);
  });

  it('status: summary with counts and first failures; --json the status object', async () => {
    const f = inputsFile(['1', '"x"', '3']);
    const thrower = join(home.path, 'stage.mjs');
    writeFileSync(thrower, 'export default (x) => { if (typeof x !== "number") throw new TypeError("not a number: " + x); return x; };\n');
    const r = await cli(['submit', thrower, '--inputs', f, '--errors', 'collect']);
    const ticket = r.stdout.trim();
    await until('job done', () => svc.jobs.get(ticket)?.state === 'done');
    const s = await cli(['status', ticket]);
    expect(s.code).toBe(0);
    expect(s.stdout).toMatch(new RegExp(`job ${ticket} of ada: done`));
    expect(s.stdout).toMatch(/3 total: 0 pending, 0 running, 2 done, 1 failed/);
    expect(s.stdout).toMatch(/input 1: TypeError: not a number: x/);
    const j = JSON.parse((await cli(['status', ticket, '--json'])).stdout);
    expect(j).toMatchObject({ ticket, owner: 'ada', state: 'done', total: 3, counts: { pending: 0, running: 0, done: 2, failed: 1 } });
    const failed = await cli(['results', ticket, '--failed']);
    expect(
      failed.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
    ).toMatchObject([{ index: 1, error: { name: 'TypeError', message: 'not a number: x' } }]);
    const ok = await cli(['results', ticket]);
    expect(ok.stdout).toBe('1\n3\n');
    expect(ok.stderr).toMatch(/1 task\(s\) failed/);
  });

  it('jobs (unfinished), history (finished), --all for admins only', async () => {
    const held = (await cli(['submit', DOUBLE, '--inputs', '-', '--hold', '--name', 'held-one'], { stdin: '1\n' })).stdout.trim();
    const finished = (await cli(['submit', DOUBLE, '--inputs', '-'], { stdin: '1\n' })).stdout.trim();
    await until('done', () => svc.jobs.get(finished)?.state === 'done');
    const jobs = await cli(['jobs']);
    expect(jobs.stdout).toMatch(/^TICKET\s+STATE\s+SETTLED/);
    expect(jobs.stdout).toContain(held);
    expect(jobs.stdout).not.toContain(finished);
    expect(jobs.stdout).toContain('held-one');
    const hist = JSON.parse((await cli(['history', '--json'])).stdout) as { ticket: string }[];
    expect(hist.map((j) => j.ticket)).toEqual([finished]);
    const denied = await cli(['jobs', '--all']);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/admin/);
    const all = await cli(['jobs', '--all', '--json'], { env: { TASKFARM_TOKEN: 'tok-root' } });
    expect(JSON.parse(all.stdout).map((j: { ticket: string }) => j.ticket)).toEqual([held]);
  });

  it('attach follows the job and exits 0 when done, 1 when it failed; submit --wait too', async () => {
    const held = (await cli(['submit', DOUBLE, '--inputs', '-', '--hold'], { stdin: '1\n2\n' })).stdout.trim();
    const child = cli(['attach', held]);
    await until('attach subscribed', () => svc.subscribers(held) === 1);
    await svc.release({ user: 'ada', admin: false }, held);
    const r = await child;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/: done/);
    const thrower = join(home.path, 'throw.mjs');
    writeFileSync(thrower, 'export default () => { throw new Error("nope"); };\n');
    const w = await cli(['submit', thrower, '--inputs', '-', '--wait'], { stdin: '1\n' });
    expect(w.code).toBe(1);
    expect(w.stderr).toMatch(/: failed/);
    const events = await cli(['attach', w.stdout.trim(), '--json']);
    expect(events.code).toBe(1);
  });

  it('attach: Ctrl-C detaches and the job goes on', async () => {
    const held = (await cli(['submit', DOUBLE, '--inputs', '-', '--hold'], { stdin: '1\n' })).stdout.trim();
    const child = spawn(process.execPath, [CLI, 'attach', held], { cwd: REPO, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    await until('attach subscribed', () => svc.subscribers(held) === 1);
    child.kill('SIGINT');
    const [code] = (await once(child, 'close')) as [number];
    expect(code).toBe(130);
    expect(stderr).toMatch(/detached; the job goes on/);
    expect(svc.jobs.get(held)?.state).toBe('held');
  });

  it("kill, hold, release, resubmit [--failed], rm; another user's or an unknown ticket exits 1", async () => {
    const t = (await cli(['submit', DOUBLE, '--inputs', '-', '--hold'], { stdin: '1\n' })).stdout.trim();
    expect((await cli(['release', t])).stdout).toBe(`job ${t}: queued\n`);
    await until('done', () => svc.jobs.get(t)?.state === 'done');
    const conflict = await cli(['hold', t]);
    expect(conflict.code).toBe(1);
    expect(conflict.stderr).toMatch(/is done/);
    expect((await cli(['resubmit', t, '--failed'])).stdout).toMatch(/queued \(its failed tasks run again\)/);
    expect(JSON.parse((await cli(['hold', t, '--json'])).stdout).state).toBe('held');
    expect((await cli(['kill', t])).stdout).toBe(`job ${t}: cancelled\n`);
    expect((await cli(['resubmit', t])).stdout).toMatch(/every task runs again/);
    expect((await cli(['rm', t])).stdout).toBe(`job ${t}: removed\n`);
    const gone = await cli(['status', t]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/No job with ticket/);
  });

  it('a wrong token exits 1 with the reason; an unreachable manager says how to fix it', async () => {
    const r = await cli(['jobs'], { env: { TASKFARM_TOKEN: 'nope' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Unknown or revoked token/);
    const down = await cli(['jobs', '--server', 'http://127.0.0.1:1']);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/Cannot reach the manager at http:\/\/127\.0\.0\.1:1/);
  });
});

describe('HTTPS: the manager certificate is pinned on first use and a changed one refused', () => {
  it('pins, then refuses a different certificate at the same address before sending the token', async () => {
    await http.close();
    const a = await loadOrCreateTlsIdentity(join(home.path, 'tls-a'), 'manager-a');
    const b = await loadOrCreateTlsIdentity(join(home.path, 'tls-b'), 'manager-b');
    let authenticated = 0;
    const auth = svc.authenticate.bind(svc);
    svc.authenticate = async (t) => {
      authenticated++;
      return auth(t);
    };
    http = await ServiceHttpServer.create({ service: svc, tls: a });
    url = (await http.listen('127.0.0.1', 0)).url;
    expect(url).toMatch(/^https:/);
    const first = await cli(['jobs', '--json']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain(`pinned the manager at 127.0.0.1:${new URL(url).port}: certificate SHA-256 ${a.fingerprint}`);
    const known = readFileSync(join(home.path, 'config', 'taskfarm', 'known_managers'), 'utf8');
    expect(known).toBe(`127.0.0.1:${new URL(url).port} ${a.fingerprint}\n`);
    expect((await cli(['jobs', '--json'])).stderr).toBe('');
    // the same address now answers with another certificate
    const port = Number(new URL(url).port);
    await http.close();
    http = await ServiceHttpServer.create({ service: svc, tls: b });
    await http.listen('127.0.0.1', port);
    const before = authenticated;
    const r = await cli(['jobs']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`presented a TLS certificate with SHA-256 fingerprint ${b.fingerprint}`);
    expect(r.stderr).toContain(`pins ${a.fingerprint}`);
    expect(authenticated).toBe(before);
  });

  it('token create over HTTPS binds the proof to the certificate fingerprint', async () => {
    await http.close();
    const a = await loadOrCreateTlsIdentity(join(home.path, 'tls-a'), 'manager-a');
    svc = new FakeJobService({ key: KEY, certFingerprint: a.fingerprint });
    http = await ServiceHttpServer.create({ service: svc, tls: a });
    url = (await http.listen('127.0.0.1', 0)).url;
    const r = await cli(['token', 'create', '--user', 'ada', '--admin'], { env: { TASKFARM_KEY: KEY.toString('base64url') } });
    expect(r.code, r.stderr).toBe(0);
    expect(await svc.authenticate(r.stdout.trim())).toEqual({ user: 'ada', admin: true });
  });
});

describe('library: connect(url, { token })', () => {
  it('submit → wait → results, events, job(ticket) actions, jobs(), workers()', async () => {
    const farm = await connect(url, { token: 'tok-ada' });
    try {
      const job = await farm.submit([DOUBLE], [1, 2, 3], { name: 'lib', hold: true, cwd: REPO });
      expect((await job.status()).state).toBe('held');
      const waited = job.wait();
      await job.release();
      expect((await waited).state).toBe('done');
      const results = [];
      for await (const r of job.results()) results.push(r);
      expect(results).toEqual([
        { index: 0, output: 2 },
        { index: 1, output: 4 },
        { index: 2, output: 6 },
      ]);
      const ac = new AbortController();
      const seen: number[] = [];
      for await (const ev of job.events({ signal: ac.signal })) {
        seen.push(ev.seq);
        if (ev.type === 'state' && (ev.data as { state: string }).state === 'done') ac.abort();
      }
      expect(seen).toEqual(Array.from({ length: seen.length }, (_, i) => i + 1));
      const resumed: number[] = [];
      const ac2 = new AbortController();
      for await (const ev of job.events({ after: seen.length - 2, signal: ac2.signal })) {
        resumed.push(ev.seq);
        if (resumed.length === 2) ac2.abort();
      }
      expect(resumed).toEqual(seen.slice(-2));
      expect((await farm.jobs()).map((j) => j.ticket)).toContain(job.ticket);
      expect((await farm.workers())[0]?.id).toBe('w1');
      const other = farm.job(job.ticket);
      expect((await other.resubmit({ failed: true })).state).toBe('queued');
      expect((await other.cancel()).state).toBe('cancelled');
      await other.remove();
      await expect(other.status()).rejects.toMatchObject({ code: 'FARM_ERR_JOB_NOT_FOUND' });
      await expect(farm.jobs({ all: true })).rejects.toMatchObject({ code: 'FARM_ERR_FORBIDDEN' });
    } finally {
      await farm.close();
    }
  });

  it('a bad input is rejected with the typed error; nothing is left behind', async () => {
    const farm = await connect(url, { token: 'tok-ada' });
    try {
      await expect(farm.submit([DOUBLE], [1, () => 2], { cwd: REPO })).rejects.toMatchObject({ code: 'FARM_ERR_INVALID_OPTION' });
      await expect(farm.submit([DOUBLE], [1], { cwd: REPO, priority: 0.5 })).rejects.toMatchObject({ code: 'FARM_ERR_INVALID_OPTION', field: 'priority' });
      expect(svc.jobs.size).toBe(0);
      expect(existsSync(join(home.path, 'config', 'taskfarm', 'known_managers'))).toBe(false);
    } finally {
      await farm.close();
    }
  });
});
