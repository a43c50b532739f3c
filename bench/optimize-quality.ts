/**
 * Quality of the optimisers at a fixed evaluation budget, beside SciPy's differential_evolution:
 *
 *   npm run bench:optimize [-- --seeds 10] [--budget 20000,100000] [--dimension 10]
 *                          [--functions sphere,rosenbrock,rastrigin,ackley] [--no-scipy] [--smoke] [--out FILE]
 *
 * For each function and budget: the median (and min–max) over the seeds of the best cost found by
 * our DE with its defaults, and by SciPy's differential_evolution with its defaults (best1bin,
 * popsize 15, mutation (0.5, 1), recombination 0.7, Latin hypercube, immediate updating),
 * polish=False and tol=atol=0, at the same number of evaluations. SciPy's budget is a whole
 * number of its generations, `15·n·(maxiter + 1)`; ours is given exactly that many
 * (`maxEvaluations`). All minima are 0. "as good" = our median ≤ SciPy's, or both ≤ 1e-10.
 *
 * SciPy comes from Debian's python3-scipy (/usr/bin/python3; `apt-get install -y python3-scipy`).
 * In-process and single-threaded: quality, not speed, is measured (the costs are cheap).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Minimization, localEvaluator } from '../src/index.js';
import { TEST_FUNCTIONS, boxOf, type TestFunction } from './test-functions.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..'); // dist/bench → the repository
const SCIPY_POPSIZE = 15;
const PYTHON = process.env['TASKFARM_PYTHON'] ?? '/usr/bin/python3';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string' },
    budget: { type: 'string' },
    dimension: { type: 'string' },
    functions: { type: 'string' },
    'no-scipy': { type: 'boolean' },
    smoke: { type: 'boolean' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});
if (values.help === true) {
  process.stdout.write(`Usage: npm run bench:optimize [-- options]

Median (and min–max) over the seeds of the best cost our DE finds at a fixed number of
evaluations, beside SciPy's differential_evolution with its defaults at the same number
(Debian's python3-scipy at /usr/bin/python3, or $TASKFARM_PYTHON). All minima are 0.

Options:
  --seeds N            seeds per function and budget (default 10; --smoke: 2)
  --budget A,B,…       evaluation budgets, rounded to SciPy's generations (default 20000,100000)
  --dimension N        parameters (default 10; --smoke: 4)
  --functions a,b,…    of ${Object.keys(TEST_FUNCTIONS).join(', ')} (default sphere,rosenbrock,rastrigin,ackley)
  --no-scipy           ours only
  --smoke              tiny sizes (the test suite's check that the bench runs)
  --out FILE           where the JSON goes (default bench/results/optimize-quality.json)
`);
  process.exit(0);
}
const smoke = values.smoke === true;
const seeds = Array.from({ length: Number(values.seeds ?? (smoke ? 2 : 10)) }, (_, i) => i);
const dimension = Number(values.dimension ?? (smoke ? 4 : 10));
const budgets = (values.budget ?? (smoke ? '1200' : '20000,100000')).split(',').map(Number);
const names = (values.functions ?? 'sphere,rosenbrock,rastrigin,ackley').split(',');
for (const n of names) if (TEST_FUNCTIONS[n] === undefined) throw new Error(`unknown function ${n}: one of ${Object.keys(TEST_FUNCTIONS).join(', ')}`);
const out = values.out ?? join(root, 'bench', 'results', smoke ? 'optimize-quality-smoke.json' : 'optimize-quality.json');
const log = (m: string): void => void process.stderr.write(`[optimize-quality] ${m}\n`);

interface Row {
  function: string;
  dimension: number;
  budget: number;
  ours: { median: number; min: number; max: number; evaluations: number; runs: number[] };
  scipy?: { median: number; min: number; max: number; evaluations: number; runs: number[] };
  asGood?: boolean;
}

function summary(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { median: s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, min: s[0]!, max: s[s.length - 1]! };
}

/** SciPy's whole-generation budget closest below `budget`. */
function scipyBudget(budget: number): number {
  const perGeneration = SCIPY_POPSIZE * dimension;
  return perGeneration * Math.max(1, Math.floor(budget / perGeneration));
}

async function ours(fn: TestFunction, budget: number): Promise<{ runs: number[]; evaluations: number }> {
  const runs: number[] = [];
  let evaluations = 0;
  for (const seed of seeds) {
    const r = await new Minimization(
      localEvaluator(fn.f),
      { bounds: boxOf(fn, dimension) },
      {
        seed,
        maxEvaluations: budget,
        maxGenerations: Infinity,
        tolerance: { fun: 0 },
      },
    ).run();
    runs.push(r.fun);
    evaluations = Math.max(evaluations, r.evaluations);
  }
  return { runs, evaluations };
}

interface ScipyOut {
  version: string;
  results: Record<string, { seed: number; fun: number; nfev: number }[]>;
}

function scipy(budget: number): Promise<ScipyOut> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [join(root, 'bench', 'scipy-de.py')], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${PYTHON} bench/scipy-de.py exited with ${code}: ${stderr.trim().split('\n').at(-1) ?? ''}`));
      try {
        resolve(JSON.parse(stdout) as ScipyOut);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
    child.stdin.end(JSON.stringify({ functions: names, dimension, budget, seeds, popsize: SCIPY_POPSIZE }));
  });
}

const fmt = (x: number): string => (x === 0 ? '0' : Math.abs(x) >= 0.01 && Math.abs(x) < 1000 ? x.toPrecision(3) : x.toExponential(1));

async function main(): Promise<void> {
  const rows: Row[] = [];
  let scipyVersion: string | undefined;
  let scipyMissing: string | undefined;
  for (const requested of budgets) {
    const budget = scipyBudget(requested);
    let ref: ScipyOut | undefined;
    if (values['no-scipy'] !== true && scipyMissing === undefined) {
      log(`SciPy, ${names.length} functions × ${seeds.length} seeds, ${budget} evaluations each…`);
      ref = await scipy(budget).catch((err: unknown) => {
        scipyMissing = err instanceof Error ? err.message : String(err);
        log(`SciPy not available (${scipyMissing}): install Debian's python3-scipy; showing ours only`);
        return undefined;
      });
      scipyVersion ??= ref?.version;
    }
    for (const name of names) {
      const fn = TEST_FUNCTIONS[name]!;
      log(`ours: ${name}, ${budget} evaluations…`);
      const o = await ours(fn, budget);
      const row: Row = { function: name, dimension, budget, ours: { ...summary(o.runs), evaluations: o.evaluations, runs: o.runs } };
      const s = ref?.results[name];
      if (s !== undefined) {
        const runs = s.map((r) => r.fun);
        row.scipy = { ...summary(runs), evaluations: Math.max(...s.map((r) => r.nfev)), runs };
        row.asGood = row.ours.median <= row.scipy.median || (row.ours.median <= 1e-10 && row.scipy.median <= 1e-10);
      }
      rows.push(row);
    }
  }

  const header = `| function (n = ${dimension}) | evaluations | ours: median (min – max) | SciPy ${scipyVersion ?? '—'}: median (min – max) | as good |`;
  const lines = [header, '|---|---:|---|---|---|'];
  for (const r of rows) {
    const o = `${fmt(r.ours.median)} (${fmt(r.ours.min)} – ${fmt(r.ours.max)})`;
    const s = r.scipy === undefined ? '—' : `${fmt(r.scipy.median)} (${fmt(r.scipy.min)} – ${fmt(r.scipy.max)})`;
    lines.push(`| ${r.function} | ${r.budget.toLocaleString('en-US')} | ${o} | ${s} | ${r.asGood === undefined ? '—' : r.asGood ? 'yes' : 'NO'} |`);
  }
  process.stdout.write(`Median best cost over ${seeds.length} seeds at the same evaluation budget (all minima are 0)\n\n${lines.join('\n')}\n`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    JSON.stringify({ date: new Date().toISOString(), seeds: seeds.length, dimension, scipy: scipyVersion ?? scipyMissing ?? 'skipped', rows }, null, 2) + '\n',
  );
  log(`wrote ${out}`);
  if (rows.some((r) => r.asGood === false)) process.exitCode = 1;
}

await main();
