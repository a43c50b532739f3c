/**
 * Where `taskfarm serve` finds the dashboard: by default the build of its own installation
 * (dist/dashboard beside dist/client), `--static DIR` instead, a clear error for a folder that is
 * not there. Real processes, real HTTP on 127.0.0.1 (the one peer is a closed loopback port: no
 * discovery on the network).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, REPO } from '../helpers/cli.js';
import { tempDir, waitForLine } from '../helpers/daemons.js';

const BUILT = new URL('../../dist/dashboard/index.html', import.meta.url).pathname;

describe('taskfarm serve and the dashboard’s files', () => {
  const children: ChildProcess[] = [];
  const dirs: { remove: () => void }[] = [];
  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.exitCode !== null || c.signalCode !== null) continue;
      const exited = once(c, 'exit');
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    for (const d of dirs.splice(0)) d.remove();
  });

  function serve(dir: string, extra: readonly string[]): ChildProcess {
    const child = spawn(
      process.execPath,
      [CLI, 'serve', '--host', '127.0.0.1', '--port', '0', '--store', `${dir}/jobs.db`, '--peers', '127.0.0.1:1', '--log-level', 'error', ...extra],
      { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(child);
    return child;
  }

  it('serves its own built dashboard at / by default, and index.html for the page routes', async () => {
    const dir = tempDir();
    dirs.push(dir);
    const child = serve(dir.path, []);
    const [, port] = await waitForLine(child.stdout!, /^READY port=(\d+)/, 30_000);
    const built = readFileSync(BUILT, 'utf8');
    for (const path of ['/', '/jobs/0b1e6f2c-0000-4000-8000-000000000000', '/workers/w1']) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expect(await res.text()).toBe(built);
    }
    // The API stays the API.
    expect((await fetch(`http://127.0.0.1:${port}/api/v1/nope`)).status).toBe(401);
  });

  it('serves another folder with --static DIR, and refuses one that does not exist', async () => {
    const dir = tempDir();
    dirs.push(dir);
    mkdirSync(`${dir.path}/site`);
    writeFileSync(`${dir.path}/site/index.html`, '<!doctype html><title>mine</title>');
    writeFileSync(`${dir.path}/site/app.js`, 'export {};');
    const child = serve(dir.path, ['--static', `${dir.path}/site`]);
    const [, port] = await waitForLine(child.stdout!, /^READY port=(\d+)/, 30_000);
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toContain('<title>mine</title>');
    expect(await (await fetch(`http://127.0.0.1:${port}/app.js`)).text()).toBe('export {};');

    const bad = serve(dir.path, ['--static', `${dir.path}/no-such-folder`, '--store', `${dir.path}/other.db`]);
    let err = '';
    bad.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const [code] = (await once(bad, 'exit')) as [number | null];
    expect(code).not.toBe(0);
    expect(err).toMatch(/--static .*no-such-folder.*no such folder/);
  });
});
