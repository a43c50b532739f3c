/**
 * The `taskfarm` command as a user runs it: `node dist/client/cli.js ...` in a child process, real
 * worker daemons on 127.0.0.1 (static peers, never mDNS), exit codes, stdout and stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Daemons, alive, fixture, tempDir, until, type LocalDaemon } from '../helpers/daemons.js';

const CLI = new URL('../../dist/client/cli.js', import.meta.url).pathname;
const REPO = new URL('../../', import.meta.url).pathname;

interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Children started by the current test; afterEach kills whatever is still running, by pid. */
const running = new Set<ChildProcess>();

/** Runs `taskfarm <args>` to completion (SIGKILL at `timeoutMs`), feeding `stdin` if given. */
async function cli(args: readonly string[], opts: { stdin?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => {}); // the command may exit before reading all of stdin
  child.stdin.end(opts.stdin ?? '');
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
    if (signal === 'SIGKILL') throw new Error(`taskfarm ${args.join(' ')} did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`);
    return { code, signal, stdout, stderr };
  } finally {
    clearTimeout(timer);
    running.delete(child);
  }
}

afterEach(async () => {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'close');
    }
  }
  running.clear();
});

describe('taskfarm help and usage errors', () => {
  const cases: [string[], RegExp][] = [
    [['--help'], /^taskfarm \d+\.\d+\.\d+: .*\n\nUsage: taskfarm <command>[\s\S]*worker[\s\S]*run[\s\S]*demo/],
    [['help', 'run'], /^Usage: taskfarm run <stage>\.\.\. \[options\][\s\S]*--inputs[\s\S]*--peers[\s\S]*Exit status/],
    [['worker', '--help'], /^Usage: taskfarm worker \[options\][\s\S]*--port[\s\S]*--grace-ms[\s\S]*READY port=<port> id=<id>/],
    [['run', '--help'], /^Usage: taskfarm run <stage>\.\.\. \[options\][\s\S]*--local/],
    [['demo', '--help'], /^Usage: taskfarm demo \[options\][\s\S]*--tiles[\s\S]*--out/],
  ];
  for (const [args, help] of cases) {
    it(`taskfarm ${args.join(' ')} prints its help on stdout and exits 0`, async () => {
      const r = await cli(args);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(help);
      expect(r.stderr).toBe('');
    });
  }

  it('an unknown command exits 2, naming the command and showing the commands', async () => {
    const r = await cli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/unknown command "frobnicate"/);
    expect(r.stderr).toMatch(/Usage: taskfarm <command>/);
  });

  it('taskfarm run with an unknown flag exits 2, naming the flag and showing the run help', async () => {
    const r = await cli(['run', fixture('double.ts'), '--local', '--frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/--frobnicate/);
    expect(r.stderr).toMatch(/Usage: taskfarm run/);
  });

  it('taskfarm worker and taskfarm demo with an unknown flag exit 2, naming the flag', async () => {
    for (const command of ['worker', 'demo']) {
      const r = await cli([command, '--frobnicate']);
      expect(r.code, command).toBe(2);
      expect(r.stdout, command).toBe('');
      expect(r.stderr, command).toMatch(/--frobnicate/);
    }
  });

  it('taskfarm version prints the package version', async () => {
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
    const r = await cli(['version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${pkg.version}\n`);
  });

  it('taskfarm run without a stage, with --peers and --local together, or with a bad number exits 2 with a message', async () => {
    const noStage = await cli(['run', '--local'], { stdin: '1\n' });
    expect(noStage.code).toBe(2);
    expect(noStage.stderr).toMatch(/at least one stage/);
    const both = await cli(['run', fixture('double.ts'), '--local', '--peers', '127.0.0.1:1'], { stdin: '1\n' });
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--peers or --local/);
    const notInt = await cli(['run', fixture('double.ts'), '--local', '--threads', 'many'], { stdin: '1\n' });
    expect(notInt.code).toBe(2);
    expect(notInt.stderr).toMatch(/--threads/);
    // Out of range: the message names the flag the user typed, not the library's option.
    const zero = await cli(['run', fixture('double.ts'), '--local', '--threads', '0'], { stdin: '1\n' });
    expect(zero.code).toBe(2);
    expect(zero.stderr).toBe('taskfarm run: --threads must be an integer from 1 to 1024, got "0"\n');
    for (const r of [noStage, both, notInt, zero]) expect(r.stdout).toBe('');
  });
});

describe('taskfarm run over JSON lines', () => {
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

  it('--inputs FILE --output FILE --peers a,b: outputs in input order, one per line; summary on stderr', async () => {
    const n = 300;
    const inputs = join(dir.path, 'numbers.jsonl');
    const output = join(dir.path, 'doubled.jsonl');
    writeFileSync(inputs, Array.from({ length: n }, (_, i) => `${i}\n`).join(''));
    const r = await cli(['run', fixture('double.ts'), '--inputs', inputs, '--output', output, '--peers', peers, '--no-local-fallback']);
    expect(r.stderr).toMatch(new RegExp(`taskfarm: ${n} task\\(s\\) in `));
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    const lines = readFileSync(output, 'utf8').split('\n');
    expect(lines.pop()).toBe(''); // ends with a newline
    expect(lines).toHaveLength(n);
    expect(lines.map((l) => JSON.parse(l) as number)).toEqual(Array.from({ length: n }, (_, i) => i * 2));
    // The summary names the daemons that did the work (never local threads here).
    expect(r.stderr).toMatch(new RegExp(`per worker: .*(${ds.map((d) => d.id).join('|')})@127\\.0\\.0\\.1:`));
    expect(r.stderr).not.toMatch(/local@local/);
  });

  it('reads stdin and writes stdout with --inputs -, skipping blank lines, keeping input order across both daemons', async () => {
    // Slow-ish tasks, so that both daemons usually take part and outputs arrive out of order.
    const n = 40;
    const stdin = Array.from({ length: n }, (_, v) => JSON.stringify({ v, ms: 15 }) + (v % 10 === 0 ? '\n\n' : '\n')).join('');
    const r = await cli(['run', fixture('spin.ts'), '--inputs', '-', '--peers', peers, '--no-local-fallback'], { stdin });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(Array.from({ length: n }, (_, v) => `${v * 2}\n`).join(''));
    expect(r.stderr).toMatch(new RegExp(`taskfarm: ${n} task\\(s\\) in `));
    // Per-worker counts in the summary add up to the task count (which daemons took part is up to timing).
    const per = [...r.stderr.matchAll(/(\S+)@127\.0\.0\.1:(\d+) (\d+)/g)];
    expect(
      per.every((m) => ds.some((d) => d.id === m[1] && d.port === Number(m[2]))),
      r.stderr,
    ).toBe(true);
    expect(
      per.reduce((sum, m) => sum + Number(m[3]), 0),
      r.stderr,
    ).toBe(n);
  });

  it('--local computes on threads of the client process', async () => {
    const inputs = join(dir.path, 'local.jsonl');
    writeFileSync(inputs, '1\n2\n3\n');
    const r = await cli(['run', fixture('double.ts'), '--local', '--threads', '1', '--inputs', inputs]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('2\n4\n6\n');
    expect(r.stderr).toMatch(/taskfarm: 3 task\(s\) in .*per worker: local@local 3/);
  });

  it('--quiet prints no summary', async () => {
    const r = await cli(['run', fixture('double.ts'), '--local', '--threads', '1', '--quiet'], { stdin: '5\n' });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('10\n');
    expect(r.stderr).toBe('');
  });

  it('a stage that throws: exit 1, stderr names the input index, the error and the remote stack', async () => {
    const stdin = Array.from({ length: 30 }, (_, v) => JSON.stringify({ v, throwOn: 13 }) + '\n').join('');
    const r = await cli(['run', fixture('throws.ts'), '--peers', peers, '--no-local-fallback'], { stdin });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/TaskError \[FARM_ERR_TASK\]/);
    expect(r.stderr).toMatch(/input 13\b/);
    expect(r.stderr).toMatch(/RangeError: value 13 is out of range/);
    // The remote stack shows where the stage threw, in the stage's own source.
    expect(r.stderr).toMatch(/remote stack:\n[\s\S]*at checkValue \([^)]*throws\.ts:\d+:\d+\)/);
  });

  it('a malformed JSON line: exit 2 naming the file and the line number (blank lines counted); only outputs before it are written', async () => {
    const inputs = join(dir.path, 'bad.jsonl');
    writeFileSync(inputs, '1\n2\n\n{"a": oops}\n5\n');
    const r = await cli(['run', fixture('double.ts'), '--inputs', inputs, '--peers', peers]);
    expect(r.code).toBe(2);
    // Inputs stream in: lines before the bad one may already be computed, and are then written.
    expect(['', '2\n', '2\n4\n']).toContain(r.stdout);
    expect(r.stderr).toContain(`${inputs}:4: not valid JSON`);
    const fromStdin = await cli(['run', fixture('double.ts'), '--peers', peers], { stdin: '1\nnope\n' });
    expect(fromStdin.code).toBe(2);
    expect(fromStdin.stderr).toContain('stdin:2: not valid JSON');
  });

  it('outputs that JSON cannot express are mapped to the nearest JSON (Map → object, bigint → string, bytes → array)', async () => {
    const kinds = ['map', 'bigint', 'bytes', 'set', 'nested', 'plain'];
    const stdin = kinds.map((kind) => JSON.stringify({ kind }) + '\n').join('');
    const r = await cli(['run', fixture('non-json.ts'), '--peers', peers, '--no-local-fallback'], { stdin });
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')).toEqual(['{"a":1,"b":2}', '"12345678901234567890"', '[1,2,255]', '[3,1,2]', '{"n":"1","m":{"k":[7]}}', '"plain"', '']);
  });

  // Regression: while no worker is reachable, the run's own timers must keep the process alive
  // (they were unref'd once, and the CLI exited 0 with no output before --worker-wait-ms).
  it('no daemon reachable and --no-local-fallback: exit 1 with NoWorkersError', async () => {
    const r = await cli(['run', fixture('double.ts'), '--peers', '127.0.0.1:1', '--no-local-fallback', '--worker-wait-ms', '300'], { stdin: '1\n' });
    expect(r.stderr).toMatch(/NoWorkersError \[FARM_ERR_NO_WORKERS\]/);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
  });

  it('no daemon reachable and --local-fallback: falls back to local threads after --worker-wait-ms', async () => {
    const r = await cli(['run', fixture('double.ts'), '--peers', '127.0.0.1:1', '--local-fallback', '--worker-wait-ms', '300', '--threads', '1'], {
      stdin: '1\n2\n',
    });
    expect(r.stdout).toBe('2\n4\n');
    expect(r.stderr).toMatch(/per worker: local@local 2/);
    expect(r.code).toBe(0);
  });

  // Regression: peers are validated with the other options, not later inside the run.
  it('a malformed --peers entry is a usage error: exit 2 with a one-line message naming it', async () => {
    const r = await cli(['run', fixture('double.ts'), '--peers', 'nohostport'], { stdin: '1\n', timeoutMs: 10_000 });
    expect(r.stderr).toMatch(/^taskfarm run: Expected --peers entries to look like .*nohostport[^\n]*\n$/);
    expect(r.code).toBe(2);
  });
});

describe('taskfarm demo', () => {
  const dir = tempDir();
  const daemonPids: number[] = [];

  afterAll(() => {
    // Only if the demo failed to stop its own daemons (the test then fails): do not leave them behind.
    for (const pid of daemonPids) {
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    dir.remove();
  });

  it('renders a PNG across daemons, kills one halfway, reschedules its tiles, and stops every daemon it started', async () => {
    const out = join(dir.path, 'demo.png');
    const r = await cli(['demo', '--tiles', '4', '--width', '200', '--out', out], { timeoutMs: 25_000 });
    for (const m of r.stdout.matchAll(/^ {2}worker (\S+) {2}pid (\d+) {2}127\.0\.0\.1:(\d+)$/gm)) daemonPids.push(Number(m[2]));
    expect(r.code, r.stderr).toBe(0);

    // The PNG: signature, then an IHDR of 200×133 (height is 2/3 of the width), 8-bit RGB, and
    // image data that inflates to exactly height rows of (filter byte + width×3 bytes).
    const png = readFileSync(out);
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(png.toString('latin1', 12, 16)).toBe('IHDR');
    expect(png.readUInt32BE(16)).toBe(200);
    expect(png.readUInt32BE(20)).toBe(133);
    expect(png[24]).toBe(8); // bit depth
    expect(png[25]).toBe(2); // colour type: RGB
    const idat: Buffer[] = [];
    const chunkTypes: string[] = [];
    for (let at = 8; at < png.length;) {
      const len = png.readUInt32BE(at);
      const type = png.toString('latin1', at + 4, at + 8);
      chunkTypes.push(type);
      if (type === 'IDAT') idat.push(png.subarray(at + 8, at + 8 + len));
      at += 12 + len;
    }
    expect(chunkTypes[0]).toBe('IHDR');
    expect(chunkTypes.at(-1)).toBe('IEND');
    expect(inflateSync(Buffer.concat(idat)).length).toBe(133 * (1 + 200 * 3));

    // stdout tells the story: 3 daemons started, one killed, its tiles rescheduled, counts per worker.
    // (Assertions name the killed worker rather than count lines: on a starved machine a heartbeat
    // may also declare a live daemon lost and the run re-recruits it, which adds a line.)
    const story = `demo stdout:\n${r.stdout}`;
    expect(daemonPids, story).toHaveLength(3);
    const ids = [...r.stdout.matchAll(/^ {2}worker (\S+) {2}pid \d+ /gm)].map((m) => m[1]!);
    const killed = /^8\/16 tiles done: killing worker (\S+) \(pid (\d+)\) with SIGKILL$/m.exec(r.stdout);
    expect(killed, story).not.toBeNull();
    const [, killedId, killedPid] = killed!;
    expect(daemonPids, story).toContain(Number(killedPid));
    expect(ids, story).toContain(killedId);
    expect(r.stdout, story).toMatch(new RegExp(`^lost ${killedId}: .*; \\d+ of its tasks requeued$`, 'm'));
    const done = /^done: 16 tiles in [\d.]+ s, (\d+) task\(s\) rescheduled; image written to (.+)$/m.exec(r.stdout);
    expect(done, story).not.toBeNull();
    expect(Number(done![1]), story).toBeGreaterThanOrEqual(1);
    expect(done![2]).toBe(out);
    const perWorker = (r.stdout.split('tiles per worker:\n')[1] ?? '').trimEnd().split('\n');
    const counts = perWorker.map((line) => /^ {2}(\S+)\s+127\.0\.0\.1:\d+\s+(\d+)(\s+\(lost: .+\))?$/.exec(line));
    expect(
      counts.every((m) => m !== null),
      story,
    ).toBe(true);
    expect(
      counts.reduce((sum, m) => sum + Number(m![2]), 0),
      story,
    ).toBe(16);
    expect(new Set(counts.map((m) => m![1])), story).toEqual(new Set(ids));
    expect(
      counts.some((m) => m![1] === killedId && m![3] !== undefined),
      story,
    ).toBe(true);

    // No daemon it started outlives it.
    await until(`every daemon started by the demo to be gone (pids ${daemonPids.join(', ')})`, () => daemonPids.every((pid) => !alive(pid)), 5000);
  });
});
