/**
 * Optimisation jobs on the REAL service (issue 13, item 6): a `taskfarm serve` process (SQLite
 * store in a temp folder, static peers: two worker daemons on 127.0.0.1 with one thread each, never
 * mDNS), driven by `taskfarm optimize` / `status` / `attach` in child processes. The manager is
 * SIGKILLed after a few committed generations and restarted on the same store: the job continues
 * from its last committed generation (no generation is evaluated into the store twice, none is
 * skipped), and its result is the one an uninterrupted run with the same seed gives (computed here
 * in this process: a seeded run's result does not depend on where its evaluations ran).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Minimization, SqliteJobStore, localEvaluator, type MinimizeResult } from '../../dist/src/index.js';
import * as objectiveModule from '../fixtures/optimize-objective.js';
import { Daemons, tempDir, until, waitForLine, type LocalDaemon } from '../helpers/daemons.js';

const REPO = new URL('../../', import.meta.url).pathname;
const CLI = join(REPO, 'dist/client/cli.js');
const OBJECTIVE = 'test/fixtures/optimize-objective.ts';

interface Manager {
  readonly child: ChildProcess;
  readonly url: string;
  /** What it wrote to stderr (its log) so far. */
  readonly log: () => string;
}

const children = new Set<ChildProcess>();

async function startManager(dir: string, peers: readonly LocalDaemon[], logLevel = 'warn'): Promise<Manager> {
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
      logLevel,
    ],
    { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, XDG_CONFIG_HOME: join(dir, 'config') } },
  );
  children.add(child);
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
  const ready = await waitForLine(child.stdout, /^READY port=(\d+)$/m, 20_000);
  child.stdout.resume();
  return { child, url: `http://127.0.0.1:${ready[1]}`, log: () => log };
}

async function cli(dir: string, url: string, token: string, args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, XDG_CONFIG_HOME: join(dir, 'config'), TASKFARM_SERVER: url, TASKFARM_TOKEN: token },
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  children.delete(child);
  return { code, stdout, stderr };
}

async function stop(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const closed = once(child, 'close');
    child.kill(signal);
    await closed;
  }
  children.delete(child);
}

interface Status {
  state: string;
  kind: string;
  generation: number | null;
  result: null | {
    fun: number;
    x: number[];
    names: string[];
    evaluations: number;
    generations: number;
    history?: { generation: number; evaluations: number; fun: number }[];
    reason?: string;
    converged?: boolean;
  };
}

async function status(url: string, token: string, ticket: string): Promise<Status> {
  const r = await fetch(`${url}/api/v1/jobs/${ticket}`, { headers: { authorization: `Bearer ${token}` } });
  expect(r.status).toBe(200);
  return (await r.json()) as Status;
}

/** What must be identical between two runs of the same seed (everything but timings). */
function outcome(
  r: Pick<MinimizeResult, 'x' | 'fun' | 'evaluations' | 'generations' | 'reason' | 'converged'> & {
    history: readonly { generation: number; evaluations: number; fun: number }[];
  },
) {
  return {
    x: r.x,
    fun: r.fun,
    evaluations: r.evaluations,
    generations: r.generations,
    reason: r.reason,
    converged: r.converged,
    history: r.history.map((h) => [h.generation, h.evaluations, h.fun]),
  };
}

describe('optimize jobs on taskfarm serve (real manager + daemons)', () => {
  const daemons = new Daemons();
  let ds: LocalDaemon[];
  let dir: { path: string; remove: () => void };
  let manager: Manager;
  let token: string;

  beforeAll(async () => {
    ds = await daemons.start(2);
    dir = tempDir();
    manager = await startManager(dir.path, ds);
    const t = await cli(dir.path, manager.url, '', ['token', 'create', '--user', 'ada']);
    expect(t.code, t.stderr).toBe(0);
    token = t.stdout.trim();
  }, 60_000);

  afterAll(async () => {
    for (const c of [...children]) await stop(c, 'SIGKILL');
    await daemons.stopAll();
    dir?.remove();
  });

  it('bad bounds (lo > hi) fail before anything is sent, naming the flag and the parameter', async () => {
    const r = await cli(dir.path, 'http://127.0.0.1:9', token, ['optimize', OBJECTIVE, '--bounds', '[[0,1],[2,1]]', '--names', 'a,b']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^taskfarm optimize: --bounds: parameter 1 \(b\) has lo 2 > hi 1: give \[lo, hi\] with lo < hi/);
    const x0 = await cli(dir.path, 'http://127.0.0.1:9', token, ['optimize', OBJECTIVE, '--bounds', '[[0,1]]', '--x0', '[3]']);
    expect(x0.code).toBe(2);
    expect(x0.stderr).toMatch(/--x0: .*space\.x0\[0\].* within its bounds \[0, 1\]/);
  });

  it('taskfarm optimize --wait: a line per generation, exit 0, the result in status', async () => {
    const cfg = join(dir.path, 'sphere.json');
    writeFileSync(cfg, JSON.stringify({ fn: 'sphere' }));
    const args = ['optimize', OBJECTIVE, '--bounds', '[[-3,3],[-3,3]]', '--names', 'a,b', '--seed', '5', '--max-generations', '6', '--shared', `config=${cfg}`];
    const r = await cli(dir.path, manager.url, token, [...args, '--wait', '--name', 'quick']);
    expect(r.code, r.stderr).toBe(0);
    const ticket = r.stdout.trim().split('\n')[0]!;
    expect(r.stderr).toMatch(/generation 5: best cost /);
    expect(r.stderr).toMatch(/stopped {2}maxGenerations: Reached maxGenerations = 6/);
    const s = await status(manager.url, token, ticket);
    expect(s).toMatchObject({ kind: 'optimize', state: 'done', generation: 5, result: { generations: 6, reason: 'maxGenerations', names: ['a', 'b'] } });
    const reference = await new Minimization(
      localEvaluator(objectiveModule, { shared: { config: { fn: 'sphere' } } }),
      {
        bounds: [
          [-3, 3],
          [-3, 3],
        ],
      },
      {
        seed: 5,
        maxGenerations: 6,
      },
    ).run();
    expect(outcome(s.result as never)).toEqual(outcome(reference));
  });

  it('--invalid-cost penalty --penalty C goes on past non-numeric costs; negative values (--target -5) and --optimizer-options are taken; jobs and status show generations, not task counts', async () => {
    const cfg = join(dir.path, 'bad.json');
    writeFileSync(cfg, JSON.stringify({ fn: 'bad' }));
    const base = ['optimize', OBJECTIVE, '--bounds', '[[-2,2]]', '--seed', '3', '--shared', `config=${cfg}`];
    // Without the penalty, a non-numeric cost fails the job, and the error points at the flag.
    const failing = await cli(dir.path, manager.url, token, [...base, '--max-generations', '3', '--wait']);
    expect(failing.code).toBe(1);
    const failedTicket = failing.stdout.trim().split('\n')[0]!;
    const failed = await cli(dir.path, manager.url, token, ['status', failedTicket]);
    expect(failed.stdout).toMatch(/FARM_ERR_INVALID_COST: .*--invalid-cost penalty/);
    // With it, the run goes on; -5 is a cost no point reaches, so maxGenerations ends it.
    const r = await cli(dir.path, manager.url, token, [
      ...base,
      '--max-generations',
      '4',
      '--invalid-cost',
      'penalty',
      '--penalty',
      '1000',
      '--target',
      '-5',
      '--optimizer-options',
      '{"strategy": "rand1bin"}',
      '--priority',
      '-1',
      '--wait',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const ticket = r.stdout.trim().split('\n')[0]!;
    const s = (await status(manager.url, token, ticket)) as Status & { result: { penalized: number } };
    expect(s).toMatchObject({ state: 'done', result: { reason: 'maxGenerations', generations: 4 } });
    expect(s.result.penalized).toBeGreaterThan(0);
    expect(s.result.fun).toBeGreaterThanOrEqual(0);
    const human = await cli(dir.path, manager.url, token, ['status', ticket]);
    expect(human.stdout).toMatch(/optimize 4 generation\(s\)/);
    expect(human.stdout).not.toMatch(/tasks\/s|ETA/);
    const history = await cli(dir.path, manager.url, token, ['history', '--limit', '5']);
    expect(history.stdout).toMatch(new RegExp(`${ticket}\\s+done\\s+gen 4\\s`));
    // Bad combinations fail before anything is sent, naming the flag.
    const bad = [
      [['--penalty', '5'], /--penalty C is the cost of invalid points under --invalid-cost penalty/],
      [['--invalid-cost', 'skip'], /--invalid-cost expects fail or penalty, got "skip"/],
      [['--optimizer-options', '[1]'], /--optimizer-options expects a JSON object/],
      [['--optimizer-options', '{"strategy": "nope"}'], /--optimizer-options: .*`strategy`.*"nope"/],
      [['--target', '-x'], /--target/],
    ] as const;
    for (const [flags, message] of bad) {
      const b = await cli(dir.path, 'http://127.0.0.1:9', token, [...base, ...flags]);
      expect(b.code, flags.join(' ')).toBe(2);
      expect(b.stderr.split('\n')[0], flags.join(' ')).toMatch(message);
    }
  }, 60_000);

  it('SIGKILL of the manager mid-run: restarted on the same store, the job continues from its last committed generation, same result as without the kill', async () => {
    const config = { fn: 'rosenbrock' as const, ms: 25 };
    const cfg = join(dir.path, 'rosenbrock.json');
    writeFileSync(cfg, JSON.stringify(config));
    const generations = 40;
    const submitted = await cli(dir.path, manager.url, token, [
      'optimize',
      OBJECTIVE,
      '--bounds',
      '[[-2,2],[-2,2]]',
      '--names',
      'a,b',
      '--seed',
      '7',
      '--max-generations',
      String(generations),
      '--tolerance',
      '0',
      '--shared',
      `config=${cfg}`,
    ]);
    expect(submitted.code, submitted.stderr).toBe(0);
    const ticket = submitted.stdout.trim();

    // A few generations committed; taskfarm status shows the best cost and parameters so far.
    const running = await until(
      'three committed generations',
      async () => {
        const s = await status(manager.url, token, ticket);
        return s.generation !== null && s.generation >= 2 && s.result?.history !== undefined ? s : undefined;
      },
      30_000,
    );
    expect(running.state).toBe('running');
    expect(running.result!.history!.length).toBe(running.result!.generations);
    const human = await cli(dir.path, manager.url, token, ['status', ticket]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^ {2}optimize \d+ generation\(s\), \d+ evaluations, seed 7$/m);
    expect(human.stdout).toMatch(/^ {2}best {5}cost [-\d.e+]+ at a = [-\d.e+]+, b = [-\d.e+]+$/m);

    await stop(manager.child, 'SIGKILL');
    const killedAt = Date.now();
    let committed: number;
    const store = await SqliteJobStore.open(join(dir.path, 'jobs.db'));
    try {
      const job = (await store.getJob(ticket))!;
      expect(job.state).toBe('running');
      committed = job.generation!;
      expect(committed).toBeGreaterThanOrEqual(2);
      expect(committed).toBeLessThan(generations - 1);
    } finally {
      await store.close();
    }

    manager = await startManager(dir.path, ds, 'info');
    const attach = await cli(dir.path, manager.url, token, ['attach', ticket]);
    expect(attach.code, attach.stderr).toBe(0);
    const done = await status(manager.url, token, ticket);
    expect(done.state).toBe('done');

    const reference = await new Minimization(
      localEvaluator(objectiveModule, { shared: { config: { fn: 'rosenbrock' } } }),
      {
        bounds: [
          [-2, 2],
          [-2, 2],
        ],
      },
      {
        seed: 7,
        maxGenerations: generations,
        tolerance: 0,
      },
    ).run();
    expect(reference.generations).toBe(generations);
    expect(outcome(done.result as never)).toEqual(outcome(reference));
    // The restarted manager says where it continued from.
    expect(manager.log()).toMatch(new RegExp(`job resumed .*ticket=${ticket}.*fromGeneration=${committed + 1}`));

    const check = await SqliteJobStore.open(join(dir.path, 'jobs.db'));
    try {
      const events = await check.readEvents(ticket, { limit: 10_000 });
      const gens = events.filter((e) => e.type === 'generation');
      // Every generation committed exactly once, in order: nothing restarted from 0, nothing skipped.
      expect(gens.map((e) => (e.data as { generation: number }).generation)).toEqual(Array.from({ length: generations }, (_, i) => i));
      // After the restart the first generation committed is the one after the last committed before the kill.
      const after = gens.filter((e) => e.at >= killedAt);
      expect((after[0]!.data as { generation: number }).generation).toBe(committed + 1);
      expect(events.some((e) => e.type === 'improved')).toBe(true);
    } finally {
      await check.close();
    }
  }, 120_000);
});
