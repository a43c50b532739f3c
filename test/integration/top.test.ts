/**
 * `taskfarm top` against the manager of test/browser/target.ts (the fake API until the merge, a
 * real `taskfarm serve` with TASKFARM_DASHBOARD_TARGET=real): a real CLI process, real HTTP.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, REPO } from '../helpers/cli.js';
import { startTarget, type Target } from '../browser/target.js';

interface Run {
  code: number | null;
  out: string;
  err: string;
}

async function top(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const child = spawn(process.execPath, [CLI, 'top', ...args], {
    cwd: REPO,
    env: { ...process.env, TASKFARM_TOKEN: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, out, err };
}

describe('taskfarm top', () => {
  let target: Target;
  beforeAll(async () => {
    target = await startTarget();
  }, 120_000);
  afterAll(async () => {
    await target?.close();
  });

  it('--once prints the workers and the caller’s jobs the API reports', async () => {
    const alice = target.as('alice');
    const ticket = await alice.submit({ name: 'top-once', inputs: [1, 2, 3], hold: true });
    await target.as('bob').submit({ name: 'bob-hidden', inputs: [1], hold: true });
    const r = await top(['--once', '--server', target.url, '--token', target.tokens.alice]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const workers = await alice.workers();
    expect(r.out).toContain(`workers: ${workers.length} (`);
    for (const w of workers) expect(r.out).toContain(w.host);
    const line = r.out.split('\n').find((l) => l.startsWith('top-once'));
    expect(line).toMatch(/alice\s+held\s+░+\s+0\/3/);
    expect(r.out).not.toContain('bob-hidden');
    expect(r.out).not.toContain('\x1b');
    await alice.request('DELETE', `/api/v1/jobs/${ticket}`);
  });

  it('takes its server and token from $TASKFARM_SERVER and $TASKFARM_TOKEN', async () => {
    const r = await top(['--once'], { TASKFARM_SERVER: target.url, TASKFARM_TOKEN: target.tokens.admin, XDG_CONFIG_HOME: '/nonexistent' });
    expect(r.code).toBe(0);
    expect(r.out).toContain('taskfarm top');
  });

  it('shows control characters of a job name as ?, never as terminal escapes', async () => {
    const ticket = await target.as('alice').submit({ name: 'evil\x1b[2J\x1b]0;pwned\x07name', inputs: [1], hold: true });
    const r = await top(['--once', '--server', target.url, '--token', target.tokens.alice]);
    expect(r.code).toBe(0);
    expect(r.out).not.toContain('\x1b');
    expect(r.out).not.toContain('\x07');
    expect(r.out).toContain('evil?[2J?]0;pwned?name');
    await target.as('alice').request('DELETE', `/api/v1/jobs/${ticket}`);
  });

  it('refreshes until q is pressed', async () => {
    const child = spawn(process.execPath, [CLI, 'top', '--server', target.url, '--token', target.tokens.alice, '--interval', '0.5'], {
      cwd: REPO,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const frames = (): number => out.split('taskfarm top — ').length - 1;
    const deadline = Date.now() + 20_000;
    while (frames() < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(frames()).toBeGreaterThanOrEqual(2);
    const exited = once(child, 'exit');
    child.stdin.write('q');
    const [code] = (await exited) as [number | null];
    expect(code).toBe(0);
  });

  it('says why when the token is refused (exit 1) or missing (exit 2)', async () => {
    const refused = await top(['--once', '--server', target.url, '--token', 'tf_wrong']);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/401/);
    const none = await top(['--once', '--server', target.url], { XDG_CONFIG_HOME: '/nonexistent' });
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/no token/);
    const down = await top(['--once', '--server', 'http://127.0.0.1:9', '--token', 'x']);
    expect(down.code).toBe(1);
    expect(down.err).toMatch(/cannot reach the manager/);
  });
});
