/**
 * Issue 9, items 6 and 7: the isolation wrapper works from any folder, runs the README's
 * daemons-plus-client session in one namespace, and refuses to run anything when it cannot
 * isolate; the systemd unit reads the key from /etc/taskfarm/farm.key and passes
 * `systemd-analyze verify` where that tool exists.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateFarmKey } from '../../dist/src/index.js';
import { startDaemon, stopDaemon } from '../../dist/client/local-daemons.js';
import { tempDir } from '../helpers/daemons.js';
import { CLI, REPO, cli, envWithoutKey } from '../helpers/cli.js';

const isolated = process.env['TASKFARM_ISOLATED'] === '1' && Object.keys(networkInterfaces()).every((name) => name === 'lo');

describe('taskfarm isolated', () => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  // TASKFARM_ISOLATED=0: `npm test` found no way to make a namespace here, so neither can the wrapper.
  it.skipIf(process.env['TASKFARM_ISOLATED'] === '0')(
    'runs a program given by a path relative to the current folder (not the clone), inside a loopback-only namespace',
    async () => {
      const work = join(dir.path, 'elsewhere');
      mkdirSync(work);
      writeFileSync(
        join(work, 'prog.mjs'),
        "import { networkInterfaces } from 'node:os';\n" +
          'console.log(JSON.stringify({ cwd: process.cwd(), isolated: process.env.TASKFARM_ISOLATED, ifaces: Object.keys(networkInterfaces()) }));\n',
      );
      const r = await cli(['isolated', '--', 'node', 'prog.mjs'], { cwd: work });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({ cwd: work, isolated: '1', ifaces: ['lo'] });
      // The command's exit status is the wrapper's.
      expect((await cli(['isolated', '--', 'node', '-e', 'process.exit(7)'], { cwd: work })).code).toBe(7);
    },
  );

  it('refuses to run anything when no namespace can be made (no unshare on PATH): exit 125, a message, the command never ran', async () => {
    const bin = join(dir.path, 'bin-without-unshare');
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    const marker = join(dir.path, 'ran');
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: bin };
    delete env['TASKFARM_ISOLATED']; // as outside the test harness
    const r = spawnSync(process.execPath, [CLI, 'isolated', '--', 'node', '-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, 'x')`], {
      env,
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(r.status).toBe(125);
    expect(r.stderr).toMatch(/^taskfarm isolated: no network namespace can be created here .*; refusing to run .* without isolation\n$/);
    expect(existsSync(marker)).toBe(false);
  });

  it.skipIf(!isolated)('the README session: two daemons and a client in one call find each other over mDNS (loopback only)', { timeout: 60_000 }, async () => {
    const work = join(dir.path, 'session');
    const bin = join(work, 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'taskfarm'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} "$@"\n`);
    chmodSync(join(bin, 'taskfarm'), 0o755);
    writeFileSync(
      join(work, 'my-program.mjs'),
      `import { TaskFarm } from ${JSON.stringify(join(REPO, 'dist/src/index.js'))};\n` +
        'const farm = new TaskFarm((x) => x * 2, Array.from({ length: 50 }, (_, i) => i), { workerWaitMs: 10000, localFallback: false });\n' +
        "farm.on('fallback', (e) => console.log('FALLBACK ' + e.reason));\n" +
        'const out = await farm.compute();\n' +
        'console.log(JSON.stringify({ ok: out.every((y, i) => y === i * 2), workers: farm.stats().workers.map((w) => w.id) }));\n',
    );
    // The session script as the README shows it (daemons with their own cache folders here).
    writeFileSync(
      join(work, 'farm-session.sh'),
      `taskfarm worker --threads 1 --cache-dir ${join(work, 'c1')} & w1=$!\n` +
        `taskfarm worker --threads 1 --cache-dir ${join(work, 'c2')} & w2=$!\n` +
        'node my-program.mjs\nstatus=$?\nkill $w1 $w2; wait\nexit $status\n',
    );
    const r = await cli(['isolated', '--', 'sh', 'farm-session.sh'], {
      cwd: work,
      env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}` },
      timeoutMs: 50_000,
    });
    expect(r.code, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{'))!) as { ok: boolean; workers: string[] };
    expect(result.ok).toBe(true);
    expect(result.workers.length).toBeGreaterThanOrEqual(1);
    expect(result.workers).not.toContain('local');
    expect(r.stdout).not.toMatch(/FALLBACK/);
  });
});

describe('the systemd unit', () => {
  const unit = join(REPO, 'services/systemd/taskfarm-worker.service');
  const dir = tempDir();
  afterAll(() => dir.remove());

  it('names the key file under /etc (ProtectHome hides home folders), and its notes say how to put the key there', () => {
    const text = readFileSync(unit, 'utf8');
    expect(text).toMatch(/^Environment=TASKFARM_KEY_FILE=\/etc\/taskfarm\/farm\.key$/m);
    expect(text).toMatch(/^ProtectHome=true$/m);
    const notes = readFileSync(join(REPO, 'services/systemd/README.md'), 'utf8');
    expect(notes).toContain('install -m 0600 -o taskfarm -g taskfarm farm.key /etc/taskfarm/farm.key');
    expect(notes).not.toMatch(/npm install -g taskfarm\b/); // not on the registry
  });

  it('a daemon whose only key is TASKFARM_KEY_FILE (as the unit sets it) starts', async () => {
    const keyFile = join(dir.path, 'farm.key');
    writeFileSync(keyFile, generateFarmKey() + '\n', { mode: 0o600 });
    const env = { ...envWithoutKey(join(dir.path, 'config')), TASKFARM_KEY_FILE: keyFile };
    const d = await startDaemon(['--threads', '1', '--cache-dir', join(dir.path, 'cache'), '--log-level', 'warn'], 20_000, env);
    expect(d.port).toBeGreaterThan(0);
    await stopDaemon(d);
  });

  const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  const haveAnalyze = analyze.status === 0;
  it.skipIf(!haveAnalyze)('passes `systemd-analyze verify`', () => {
    const out = execFileSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(out).toBe('');
  });
  if (!haveAnalyze) it.skip('systemd-analyze verify: skipped, systemd-analyze is not installed on this machine', () => {});
});
