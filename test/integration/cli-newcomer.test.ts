/**
 * Issue 9 as a newcomer meets it at the command line: `taskfarm run` with no key, a wrong key, dead
 * peers (stderr says why; peers never fall back silently), keep-going sweeps, failures and Ctrl-C
 * that still write what is done, streamed inputs, the flags the library has, a drained worker, a
 * stage without a default export, a second SIGINT to a daemon. Real daemons on 127.0.0.1 (static
 * peers); the mDNS cases only inside the project's isolation (loopback-only namespace).
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateFarmKey } from '../../dist/src/index.js';
import { Daemons, fixture, tempDir, until, waitForLine, type LocalDaemon } from '../helpers/daemons.js';
import { CLI, REPO, cli, envWithoutKey, killAll, startCli } from '../helpers/cli.js';
import { SecurityDaemons } from '../helpers/security-daemons.js';

afterEach(async () => {
  await killAll();
});

const lines = (text: string): string[] => text.split('\n').filter((l) => l.length > 0);

describe('taskfarm run says why it is not using workers', () => {
  const sec = new SecurityDaemons();
  const dir = tempDir();
  afterEach(async () => {
    await sec.stopAll();
  });
  afterAll(() => dir.remove());

  it('no farm key, --quiet: computes locally, and stderr says "no farm key" and how to make one', async () => {
    const r = await cli(['run', fixture('double.ts'), '--threads', '1', '--quiet'], { stdin: '1\n2\n', env: envWithoutKey(join(dir.path, 'empty')) });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('2\n4\n');
    expect(r.stderr).toMatch(/^taskfarm run: computing on local threads: no farm key \(.*taskfarm keygen.*\)\n$/);
  });

  it('dead peers: exit 1, NoWorkersError naming each peer as connection refused; nothing computed locally', async () => {
    const r = await cli(['run', fixture('double.ts'), '--peers', '127.0.0.1:1,127.0.0.1:2', '--worker-wait-ms', '400', '--quiet'], { stdin: '1\n' });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/NoWorkersError \[FARM_ERR_NO_WORKERS\]/);
    expect(r.stderr).toContain('127.0.0.1:1: connection refused');
    expect(r.stderr).toContain('127.0.0.1:2: connection refused');
    expect(r.stderr).toMatch(/--local-fallback/);
    expect(r.stderr).not.toMatch(/computing on local threads/);
  });

  it('a wrong key: exit 1 saying the worker could not prove the farm key; with --local-fallback exit 0 and the reason on stderr even under --quiet', async () => {
    const d = await sec.start({ key: generateFarmKey() });
    const failed = await cli(['run', fixture('double.ts'), '--peers', d.address, '--worker-wait-ms', '400'], { stdin: '1\n' });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain(`worker ${d.id} at ${d.address} could not prove the farm key`);
    const local = await cli(['run', fixture('double.ts'), '--peers', d.address, '--worker-wait-ms', '400', '--local-fallback', '--threads', '1', '--quiet'], {
      stdin: '3\n',
    });
    expect(local.code).toBe(0);
    expect(local.stdout).toBe('6\n');
    expect(local.stderr).toMatch(
      new RegExp(`^taskfarm run: computing on local threads: worker ${d.id} at ${d.address.replace(/\./g, '\\.')} could not prove the farm key`),
    );
  });

  it('--key-file: a client whose only key is the file uses the daemons; --insecure uses a daemon run with --insecure', async () => {
    const key = generateFarmKey();
    const d = await sec.start({ key });
    const keyFile = join(dir.path, 'farm.key');
    writeFileSync(keyFile, key + '\n', { mode: 0o600 });
    const env = envWithoutKey(join(dir.path, 'empty'));
    const r = await cli(['run', fixture('double.ts'), '--peers', d.address, '--key-file', keyFile], { stdin: '1\n2\n', env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('2\n4\n');
    expect(r.stderr).toMatch(new RegExp(`per worker: ${d.id}@${d.address.replace(/\./g, '\\.')} 2`));
    const open = await sec.start({ insecure: true });
    const i = await cli(['run', fixture('double.ts'), '--peers', open.address, '--insecure'], { stdin: '5\n', env });
    expect(i.code, i.stderr).toBe(0);
    expect(i.stdout).toBe('10\n');
    expect(i.stderr).toMatch(new RegExp(`per worker: ${open.id}@`));
    const both = await cli(['run', fixture('double.ts'), '--insecure', '--key-file', keyFile], { stdin: '1\n' });
    expect(both.code).toBe(2);
    expect(both.stderr).toBe('taskfarm run: give either --key-file or --insecure, not both\n');
  });
});

describe('taskfarm run with worker daemons', () => {
  const daemons = new Daemons();
  const dir = tempDir();
  let ds: LocalDaemon[] = [];
  let peers = '';
  beforeAll(async () => {
    ds = await daemons.start(2);
    peers = ds.map((d) => d.address).join(',');
  });
  afterAll(async () => {
    await daemons.stopAll();
    dir.remove();
  });

  const sweep = (n: number, bad: readonly number[]): string =>
    Array.from({ length: n }, (_, v) => JSON.stringify({ v, throwOn: bad.includes(v) ? v : -1 }) + '\n').join('');

  it('--keep-going: a stage throwing on two inputs of 2,000 → 1,998 outputs and two failure records in input order, exit 1', async () => {
    const r = await cli(['run', fixture('throws.ts'), '--peers', peers, '--keep-going'], { stdin: sweep(2000, [137, 1500]) });
    expect(r.code).toBe(1);
    const out = lines(r.stdout);
    expect(out).toHaveLength(2000);
    for (let i = 0; i < 2000; i++) {
      if (i === 137 || i === 1500) {
        const rec = JSON.parse(out[i]!) as { index: number; error: { name: string; code: string; message: string; remote: { name: string; message: string } } };
        expect(rec.index).toBe(i);
        expect(rec.error).toMatchObject({ name: 'TaskError', code: 'FARM_ERR_TASK', remote: { name: 'RangeError', message: `value ${i} is out of range` } });
      } else expect(out[i]).toBe(String(i));
    }
    expect(r.stderr).toContain('taskfarm run: 2 input(s) failed: 137, 1500');
    expect(r.stderr).toMatch(/taskfarm: 2000 task\(s\) in .*, 2 failed/);
  });

  it('--failures FILE: the 1,998 outputs go to the output, the two failure records to FILE; exit 1', async () => {
    const failures = join(dir.path, 'failures.jsonl');
    const output = join(dir.path, 'out.jsonl');
    const r = await cli(['run', fixture('throws.ts'), '--peers', peers, '--failures', failures, '--output', output], { stdin: sweep(2000, [137, 1500]) });
    expect(r.code).toBe(1);
    const out = lines(readFileSync(output, 'utf8'));
    expect(out).toEqual(
      Array.from({ length: 2000 }, (_, i) => i)
        .filter((i) => i !== 137 && i !== 1500)
        .map(String),
    );
    const recs = lines(readFileSync(failures, 'utf8')).map((l) => JSON.parse(l) as { index: number; error: { code: string } });
    expect(recs.map((x) => [x.index, x.error.code])).toEqual([
      [137, 'FARM_ERR_TASK'],
      [1500, 'FARM_ERR_TASK'],
    ]);
    expect(r.stderr).toContain(`their failure records are in ${failures}`);
  });

  it('without --keep-going a failure still writes every output known in input order, and says how many, up to which input, which failed', async () => {
    const r = await cli(['run', fixture('throws.ts'), '--peers', peers], { stdin: sweep(20_000, [13_000]) });
    expect(r.code).toBe(1);
    const m = /taskfarm run: wrote (\d+) line\(s\), for inputs 0 to (\d+); input 13000 failed/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    const written = Number(m![1]);
    expect(Number(m![2])).toBe(written - 1);
    expect(written).toBeLessThanOrEqual(13_000);
    expect(lines(r.stdout)).toEqual(Array.from({ length: written }, (_, i) => String(i)));
  });

  it('Ctrl-C (SIGINT) mid-run writes the outputs done so far in input order, says how many, exits 130', async () => {
    const stdin = Array.from({ length: 400 }, (_, v) => JSON.stringify({ v, ms: 20 }) + '\n').join('');
    const p = startCli(['run', fixture('spin.ts'), '--peers', peers]);
    p.child.stdin!.end(stdin);
    await p.waitFor('some outputs on stdout', (out) => lines(out).length >= 5);
    p.child.kill('SIGINT');
    const r = await p.closed;
    expect(r.code).toBe(130);
    const m = /taskfarm run: interrupted \(SIGINT\): wrote (\d+) line\(s\), for inputs 0 to (\d+)/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    const written = Number(m![1]);
    expect(written).toBeGreaterThanOrEqual(5);
    expect(written).toBeLessThan(400);
    expect(lines(r.stdout)).toEqual(Array.from({ length: written }, (_, v) => String(v * 2)));
  });

  it('streamed inputs: outputs come out before stdin is closed; the rest follows when it is', async () => {
    const p = startCli(['run', fixture('double.ts'), '--peers', peers]);
    p.child.stdin!.write('1\n2\n3\n');
    await p.waitFor('the first three outputs while stdin is still open', (out) => out === '2\n4\n6\n');
    p.child.stdin!.end('4\n5\n');
    const r = await p.closed;
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('2\n4\n6\n8\n10\n');
  });

  it('--task-timeout-ms stops an infinite loop: exit 1 with TaskTimeoutError naming the input; with --keep-going the others are written', async () => {
    const stdin = Array.from({ length: 6 }, (_, v) => JSON.stringify({ v, loopOn: 3 }) + '\n').join('');
    const r = await cli(['run', fixture('loop-on.ts'), '--peers', peers, '--task-timeout-ms', '300'], { stdin });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/TaskTimeoutError \[FARM_ERR_TASK_TIMEOUT\]: Task for input 3 ran longer than 300 ms/);
    const k = await cli(['run', fixture('loop-on.ts'), '--peers', peers, '--task-timeout-ms', '300', '--keep-going'], { stdin });
    expect(k.code).toBe(1);
    const out = lines(k.stdout);
    expect(out.filter((_, i) => i !== 3)).toEqual(['0', '1', '2', '4', '5']);
    expect(JSON.parse(out[3]!)).toMatchObject({ index: 3, error: { name: 'TaskTimeoutError', code: 'FARM_ERR_TASK_TIMEOUT' } });
  });

  it('--shared NAME=FILE: every task reads the file as ctx.shared[NAME]; --no-speculation is accepted', async () => {
    const file = join(dir.path, 'data.bin');
    const data = randomBytes(100_000);
    writeFileSync(file, data);
    const stdin = [0, 99_999, 5].map((at) => JSON.stringify({ name: 'data', at }) + '\n').join('');
    const r = await cli(['run', fixture('shared-len.ts'), '--peers', peers, '--shared', `data=${file}`, '--no-speculation'], { stdin });
    expect(r.code, r.stderr).toBe(0);
    expect(lines(r.stdout).map((l) => JSON.parse(l) as unknown)).toEqual([0, 99_999, 5].map((at) => ({ len: 100_000, byte: data[at] })));
    const bad = await cli(['run', fixture('shared-len.ts'), '--peers', peers, '--shared', 'data'], { stdin });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('taskfarm run: --shared must look like NAME=FILE, got "data"\n');
  });

  it('flag errors name the flag', async () => {
    const cases: [string[], string][] = [
      [['--threads', '0'], '--threads must be an integer from 1 to 1024, got "0"'],
      [['--task-timeout-ms=-5'], '--task-timeout-ms must be an integer from 0 to 2147483647, got "-5"'],
      [['--retries', 'x'], '--retries must be an integer >= 0, got "x"'],
      [['--max-attempts', '0'], '--max-attempts must be an integer >= 1, got "0"'],
      [['--worker-wait-ms', '1.5'], '--worker-wait-ms must be an integer >= 0, got "1.5"'],
      [['--key-file', join(dir.path, 'nope.key')], `--key-file: no such file: ${join(dir.path, 'nope.key')}`],
      [['--inputs', join(dir.path, 'nope.jsonl')], `--inputs: no such file: ${join(dir.path, 'nope.jsonl')}`],
      [['--local-fallback', '--no-local-fallback'], 'give either --local-fallback or --no-local-fallback, not both'],
    ];
    for (const [flags, message] of cases) {
      const r = await cli(['run', fixture('double.ts'), '--local', ...flags], { stdin: '1\n' });
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.stderr, flags.join(' ')).toBe(`taskfarm run: ${message}\n`);
      expect(r.stdout).toBe('');
    }
  });

  it('a module stage without a default export: exit 2 before anything runs, naming the file and what it exports', async () => {
    const r = await cli(['run', fixture('no-default.ts'), '--peers', peers], { stdin: '1\n' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^taskfarm run: InvalidStageError \[FARM_ERR_INVALID_STAGE\]: Stage 0: .*no-default\.ts has no default export \(it exports simulate\)/,
    );
    expect(r.stderr).not.toMatch(/remote stack|at /);
  });
});

describe('daemons a run uses come and go', () => {
  const daemons = new Daemons();
  afterEach(async () => {
    await daemons.stopAll();
  });

  it(
    'a daemon stopped with SIGTERM mid-run: stderr says "worker … left (draining)" with the tasks it gave back, and the run completes',
    { timeout: 30_000 },
    async () => {
      const [a, b] = await daemons.start(2, ['--threads', '1', '--grace-ms', '100']);
      const stdin = Array.from({ length: 12 }, (_, v) => JSON.stringify({ v, ms: 200 }) + '\n').join('');
      const p = startCli(['run', fixture('spin.ts'), '--peers', `${a!.address},${b!.address}`, '--no-speculation']);
      p.child.stdin!.end(stdin);
      await p.waitFor('a first output', (out) => out.length > 0);
      a!.child.kill('SIGTERM');
      const r = await p.closed;
      expect(r.code, r.stderr).toBe(0);
      expect(lines(r.stdout)).toEqual(Array.from({ length: 12 }, (_, v) => String(v * 2)));
      expect(r.stderr).toMatch(new RegExp(`taskfarm: worker ${a!.id} left \\(draining\\); \\d+ task\\(s\\) requeued`));
      expect(r.stderr).not.toMatch(/lost worker/);
    },
  );

  it('a second SIGINT makes a draining daemon exit at once, without waiting for its grace period', async () => {
    const [d] = await daemons.start(1, ['--threads', '1', '--grace-ms', '60000']);
    const p = startCli(['run', fixture('spin.ts'), '--peers', d!.address]);
    p.child.stdin!.end(Array.from({ length: 50 }, (_, v) => JSON.stringify({ v, ms: 5000 }) + '\n').join(''));
    await waitForRecruited(d!);
    const first = waitForLine(d!.child.stderr!, /SIGINT: finishing in-flight tasks/, 15_000);
    d!.child.kill('SIGINT');
    await first;
    d!.child.kill('SIGINT');
    // Bounded well below the 60 s grace: "at once" means it does not wait for the running task.
    const [code] = (await Promise.race([
      once(d!.child, 'exit'),
      new Promise((_, reject) => setTimeout(() => reject(new Error('the daemon did not exit within 10 s of the second SIGINT')), 10_000)),
    ])) as [number | null];
    expect(code).toBe(1);
    p.child.kill('SIGKILL');
  });
});

/** Resolves once the daemon says (Describe) that a client holds its lease. */
async function waitForRecruited(d: LocalDaemon): Promise<void> {
  const { describeWorker } = await import('../../dist/src/index.js');
  await until(
    'the daemon to be recruited',
    async () => {
      try {
        return (await describeWorker(d.address, 1000)).state === 'recruited';
      } catch {
        return false;
      }
    },
    15_000,
    50,
  );
}

// mDNS only inside the project's isolation: a network namespace whose only interface is loopback.
const isolated = process.env['TASKFARM_ISOLATED'] === '1' && Object.keys(networkInterfaces()).every((name) => name === 'lo');

describe.skipIf(!isolated)('a mistyped --farm (mDNS on loopback, inside the isolation only)', () => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  it(
    'taskfarm run --farm physcis: stderr says no worker of farm "physcis" answered and the farms it saw; taskfarm ls --farm physcis lists them too',
    { timeout: 30_000 },
    async () => {
      const cache = join(dir.path, 'cache');
      mkdirSync(cache);
      // Advertising for real (no --no-advertise): only loopback exists in this namespace.
      const daemon = startCli(['worker', '--threads', '1', '--farm', 'physics', '--cache-dir', cache, '--log-level', 'warn']);
      await daemon.waitFor('the daemon to be READY', (out) => /^READY port=\d+ id=\S+/m.test(out));
      const ls = await cli(['ls', '--farm', 'physics', '--timeout', '1500']);
      expect(ls.stdout).toMatch(/free/);
      const r = await cli(['run', fixture('double.ts'), '--farm', 'physcis', '--threads', '1', '--quiet', '--worker-wait-ms', '1500'], { stdin: '1\n' });
      expect(r.code).toBe(0);
      expect(r.stdout).toBe('2\n');
      expect(r.stderr).toBe('taskfarm run: computing on local threads: no worker of farm "physcis" answered; farms seen: physics\n');
      const wrong = await cli(['ls', '--farm', 'physcis', '--timeout', '1500']);
      expect(wrong.code).toBe(0);
      expect(wrong.stderr).toBe('taskfarm ls: no worker of farm "physcis" answered within 1500 ms; farms seen: physics (list one with --farm physics)\n');
      daemon.child.kill('SIGTERM');
      await daemon.closed;
    },
  );
});

if (!isolated) {
  describe('a mistyped --farm', () => {
    it.skip('needs mDNS: runs only inside the project isolation (npm test, or taskfarm isolated -- npx vitest run …)', () => {});
  });
}

// A terminal on stdin, through `script` (util-linux) when it is installed: it gives the command a pty.
const haveScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

describe.skipIf(!haveScript)('taskfarm run on a terminal', () => {
  it('says it reads JSON lines from the terminal and that Ctrl-D ends them; computes each line as it is typed', async () => {
    const child = spawn(
      'script',
      ['-qec', `${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} run ${JSON.stringify(fixture('double.ts'))} --local --threads 1`, '/dev/null'],
      {
        cwd: REPO,
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let seen = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (seen += d));
    try {
      child.stdin.write('21\n');
      await until('the output of the first typed line', () => /(^|\D)42\r?\n/.test(seen), 15_000);
      expect(seen).toContain('taskfarm run: reading inputs from the terminal: one JSON value per line; Ctrl-D ends them');
      child.stdin.write('\x04'); // Ctrl-D
      const [code] = (await once(child, 'close')) as [number | null];
      expect(code).toBe(0);
      expect(seen).toMatch(/taskfarm: 1 task\(s\) in /);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
