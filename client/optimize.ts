/**
 * `taskfarm optimize <objective> --bounds JSON …`: submits an optimisation job to the manager
 * (issue 13, item 6). The objective is bundled here (only the bundles the manager lacks are
 * uploaded, as for submit); the space, the optimiser, the stopping rules and the shared values go
 * in the job's `params`, checked here first with the library's checks so that a bad flag fails
 * before anything is sent, naming the flag. The manager runs the optimisation on its pool and
 * commits its state per generation.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { InvalidRequestError, bundleProgram, checkOptimizeParams, type JsonValue, type OptimizeSharedValue } from '../src/index.js';
import { parseArgs } from 'node:util';
import { joinNegativeValues } from './args.js';
import { COMMON, UsageError, clientFor, commonOptions, follow, int, print } from './service-commands.js';

export const OPTIMIZE_HELP = `Usage: taskfarm optimize <objective> --bounds JSON [options]

Submits an optimisation job to the manager and prints its ticket (--json: {"ticket": "…"}). The
objective is a stage module (.ts or .js) whose default export takes the parameter vector
(x: number[], ctx) and returns its cost, a finite number; ctx.shared has the --shared values. The
manager minimises it on its workers, one parallel round per generation, and commits the
optimiser's state after every generation: a manager restarted on the same store continues from
the last generation. taskfarm status shows the best cost and parameters so far; the dashboard's
job page plots the convergence; the result (taskfarm status TICKET --json, "result") is
{x, fun, evaluations, generations, converged, reason, message, history, seed, …}.

Options:
  --bounds JSON        [[lo, hi], …]: one pair per parameter, lo < hi (required)
  --names a,b,…        the parameters' names (one per bound)
  --integer i,j,…      parameters that take integer values only (indices from 0, or names)
  --x0 JSON            an initial guess [x0, x1, …] within the bounds
  --optimizer de|bfgs  differential evolution (default) or quasi-Newton BFGS
  --optimizer-options JSON
                       the optimiser's settings, e.g. '{"strategy": "best1bin", "mutation": [0.5, 1]}'
                       (DE: strategy, mutation, crossover, …; BFGS: step, gtol, …; docs/OPTIMIZE.md)
  --population N       members per generation (DE; default max(10, 4 × parameters))
  --seed N             seed of the optimiser: the same seed gives the same result (default: drawn)
  --max-generations N  stop after N generations (default 1000)
  --max-evaluations N  never evaluate more than N points
  --max-time-ms MS     stop after MS ms of running (time the manager was down does not count)
  --tolerance T        converged when the population's cost spread ≤ T × |mean cost| (default 1e-8)
  --target C           converged as soon as a cost ≤ C is found (a negative C as --target -5 or --target=-5)
  --invalid-cost fail|penalty
                       a member whose objective throws or returns a cost that is not a finite
                       number: fail ends the job (default), penalty gives it the cost --penalty
  --penalty C          that cost (default the largest finite number)
  --shared NAME=FILE   ctx.shared[NAME] on the workers: a .json file's value, else the file's bytes
                       (a Uint8Array); repeatable. They travel in the job description (the
                       manager's --max-body-mb limits them)
  --name NAME          a name for the job
  --priority N         integer, higher first (default 0)
  --wait               follow the job (a line per generation on stderr) and exit with its outcome

${COMMON}
`;

/** Which flag sets each field of `params` (for errors naming the flag). */
const FLAG_OF: readonly [RegExp, string][] = [
  [/^params\.space\.bounds/, '--bounds'],
  [/^params\.space\.names/, '--names'],
  [/^params\.space\.integer/, '--integer'],
  [/^params\.space\.x0/, '--x0'],
  [/^params\.space/, '--bounds'],
  [/^params\.optimizerOptions/, '--optimizer-options'],
  [/^params\.optimizer/, '--optimizer'],
  [/^params\.populationSize/, '--population'],
  [/^params\.seed/, '--seed'],
  [/^params\.maxGenerations/, '--max-generations'],
  [/^params\.maxEvaluations/, '--max-evaluations'],
  [/^params\.maxTimeMs/, '--max-time-ms'],
  [/^params\.tolerance/, '--tolerance'],
  [/^params\.target/, '--target'],
  [/^params\.invalidCost/, '--invalid-cost'],
  [/^params\.penalty/, '--penalty'],
  [/^params\.shared/, '--shared'],
];

function jsonFlag(flag: string, text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new UsageError(`${flag} expects JSON, got ${JSON.stringify(text)} (${(err as Error).message})`);
  }
}

function numberFlag(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim().length === 0 || !Number.isFinite(n)) throw new UsageError(`${flag} expects a number, got "${text}"`);
  return n;
}

const list = (text: string): string[] =>
  text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);

/** `--bounds`: the pairs, each checked here so that the message names the parameter. */
function boundsFlag(text: string, names: readonly string[] | undefined): number[][] {
  const v = jsonFlag('--bounds', text);
  if (!Array.isArray(v) || v.length === 0)
    throw new UsageError(`--bounds expects a non-empty JSON array of [lo, hi] pairs, e.g. '[[0, 1], [-5, 5]]', got ${text}`);
  return v.map((b: unknown, i) => {
    const label = `parameter ${i}${names?.[i] === undefined ? '' : ` (${names[i]})`}`;
    if (!Array.isArray(b) || b.length !== 2 || typeof b[0] !== 'number' || typeof b[1] !== 'number' || !Number.isFinite(b[0]) || !Number.isFinite(b[1])) {
      throw new UsageError(`--bounds: ${label} must be [lo, hi] with two finite numbers, got ${JSON.stringify(b)}`);
    }
    if (!(b[0] < b[1])) throw new UsageError(`--bounds: ${label} has lo ${b[0]} ${b[0] === b[1] ? '=' : '>'} hi ${b[1]}: give [lo, hi] with lo < hi`);
    return [b[0], b[1]];
  });
}

function sharedFlag(entries: readonly string[]): Record<string, OptimizeSharedValue> {
  const out: Record<string, OptimizeSharedValue> = {};
  for (const e of entries) {
    const eq = e.indexOf('=');
    if (eq <= 0 || eq === e.length - 1) throw new UsageError(`--shared expects NAME=FILE, got "${e}"`);
    const name = e.slice(0, eq);
    const file = e.slice(eq + 1);
    if (name in out) throw new UsageError(`--shared ${name} is given twice`);
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (err) {
      throw new UsageError(`--shared ${name}: cannot read ${file}: ${(err as Error).message}`);
    }
    if (file.toLowerCase().endsWith('.json')) {
      try {
        out[name] = { json: JSON.parse(bytes.toString('utf8')) as JsonValue };
      } catch (err) {
        throw new UsageError(`--shared ${name}: ${basename(file)} is not JSON (${(err as Error).message}); name it other than .json to share its bytes`);
      }
    } else out[name] = { base64: bytes.toString('base64') };
  }
  return out;
}

/** Runs `taskfarm optimize`. Returns the exit code. */
export async function runOptimize(argv: readonly string[]): Promise<number> {
  try {
    return await optimizeCommand(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`taskfarm optimize: ${err.message}\n\n${OPTIMIZE_HELP}`);
      return 2;
    }
    const e = err as Error & { code?: string };
    if (typeof e.code === 'string' && e.code.startsWith('FARM_ERR_')) {
      process.stderr.write(`taskfarm optimize: ${e.message}\n`);
      return e.code === 'FARM_ERR_INVALID_INPUT' || e.code === 'FARM_ERR_INVALID_OPTION' || e.code === 'FARM_ERR_INVALID_STAGE' ? 2 : 1;
    }
    throw err;
  }
}

async function optimizeCommand(argv: readonly string[]): Promise<number> {
  const options = {
    ...commonOptions,
    bounds: { type: 'string' },
    names: { type: 'string' },
    integer: { type: 'string' },
    x0: { type: 'string' },
    optimizer: { type: 'string' },
    'optimizer-options': { type: 'string' },
    population: { type: 'string' },
    seed: { type: 'string' },
    'max-generations': { type: 'string' },
    'max-evaluations': { type: 'string' },
    'max-time-ms': { type: 'string' },
    tolerance: { type: 'string' },
    target: { type: 'string' },
    'invalid-cost': { type: 'string' },
    penalty: { type: 'string' },
    shared: { type: 'string', multiple: true },
    name: { type: 'string' },
    priority: { type: 'string' },
    wait: { type: 'boolean' },
  } as const;
  let parsed;
  try {
    parsed = parseArgs({ args: joinNegativeValues(argv, options), options, strict: true, allowPositionals: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help === true) return print(OPTIMIZE_HELP);
  if (positionals.length !== 1)
    throw new UsageError(`give one objective (a stage module path), got ${positionals.length === 0 ? 'none' : positionals.join(' ')}`);
  if (values.bounds === undefined) throw new UsageError("--bounds JSON is required: one [lo, hi] pair per parameter, e.g. --bounds '[[0, 1], [-5, 5]]'");
  if (values.optimizer !== undefined && values.optimizer !== 'de' && values.optimizer !== 'bfgs')
    throw new UsageError(`--optimizer expects de or bfgs, got "${values.optimizer}"`);
  const names = values.names === undefined ? undefined : list(values.names);
  const bounds = boundsFlag(values.bounds, names);
  if (names !== undefined && names.length !== bounds.length)
    throw new UsageError(`--names gives ${names.length} name(s) for ${bounds.length} parameter(s) in --bounds: give one name per bound`);
  const space: Record<string, unknown> = { bounds };
  if (names !== undefined) space['names'] = names;
  if (values.integer !== undefined) space['integer'] = list(values.integer).map((p) => (/^\d+$/.test(p) ? Number(p) : p));
  if (values.x0 !== undefined) space['x0'] = jsonFlag('--x0', values.x0);
  const params: Record<string, unknown> = { space };
  const add = (k: string, v: unknown): void => {
    if (v !== undefined) params[k] = v;
  };
  add('optimizer', values.optimizer);
  add('populationSize', int('population', values.population, 1));
  add('seed', int('seed', values.seed));
  add('maxGenerations', int('max-generations', values['max-generations'], 1));
  add('maxEvaluations', int('max-evaluations', values['max-evaluations'], 1));
  add('maxTimeMs', numberFlag('--max-time-ms', values['max-time-ms']));
  add('tolerance', numberFlag('--tolerance', values.tolerance));
  add('target', numberFlag('--target', values.target));
  if (values['invalid-cost'] !== undefined && values['invalid-cost'] !== 'fail' && values['invalid-cost'] !== 'penalty')
    throw new UsageError(`--invalid-cost expects fail or penalty, got "${values['invalid-cost']}"`);
  if (values.penalty !== undefined && values['invalid-cost'] !== 'penalty')
    throw new UsageError('--penalty C is the cost of invalid points under --invalid-cost penalty: give --invalid-cost penalty too');
  add('invalidCost', values['invalid-cost']);
  add('penalty', numberFlag('--penalty', values.penalty));
  if (values['optimizer-options'] !== undefined) {
    const o = jsonFlag('--optimizer-options', values['optimizer-options']);
    if (typeof o !== 'object' || o === null || Array.isArray(o))
      throw new UsageError(`--optimizer-options expects a JSON object, e.g. '{"strategy": "best1bin"}', got ${values['optimizer-options']}`);
    params['optimizerOptions'] = o;
  }
  if (values.shared !== undefined && values.shared.length > 0) params['shared'] = sharedFlag(values.shared);
  try {
    checkOptimizeParams(params);
  } catch (err) {
    if (err instanceof InvalidRequestError) {
      const flag = FLAG_OF.find(([re]) => re.test(err.field ?? ''))?.[1];
      const message = err.message.replace(/^Invalid optimize job \(`params[\w.]*`\): /, '');
      throw new UsageError(flag === undefined ? message : `${flag}: ${message}`);
    }
    throw err;
  }
  const description: Record<string, unknown> = { kind: 'optimize', params, inputs: [] };
  if (values.name !== undefined) description['name'] = values.name;
  const priority = int('priority', values.priority);
  if (priority !== undefined) description['priority'] = priority;

  const client = clientFor(values);
  const common = { json: values.json === true, client };
  try {
    const program = await bundleProgram(positionals);
    const hashes = [...new Set(program.stages.map((s) => s.hash))];
    const { missing } = await client.json<{ missing: string[] }>('POST', '/api/v1/bundles/missing', { json: { hashes } });
    for (const hash of missing) {
      const stage = program.stages.find((s) => s.hash === hash)!;
      const code = typeof stage.code === 'string' ? stage.code : Buffer.from(stage.code).toString('utf8');
      (await client.request('PUT', `/api/v1/bundles/${hash}`, { body: code, contentType: 'text/javascript' })).resume();
    }
    description['stages'] = program.stages.map((s) => ({ bundle: s.hash, name: s.name }));
    const { ticket } = await client.json<{ ticket: string }>('POST', '/api/v1/jobs', { json: description });
    process.stdout.write(common.json ? JSON.stringify({ ticket }) + '\n' : ticket + '\n');
    if (values.wait === true) return await follow(common, ticket, false);
    return 0;
  } finally {
    client.close();
  }
}
