/**
 * The job-service commands of the CLI (`taskfarm token|submit|status|jobs|history|attach|results|
 * kill|hold|release|resubmit|rm`): argv → one API call (or a few) → stdout, exit codes. No business
 * logic here; everything goes through the library's ServiceHttpClient and connect().
 *
 * Exit status: 0 success, 1 failure (a failed or cancelled job for attach/submit --wait, or an
 * error from the manager), 2 bad usage or input.
 */
import { joinNegativeValues } from './args.js';
import { chmodSync, createReadStream, createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import {
  FarmError,
  InvalidInputError,
  NO_KEY_HELP,
  ServiceHttpClient,
  bundleProgram,
  configPath,
  resolveFarmKey,
  tokenProof,
  type JobStatusView,
  type ServiceEvent,
} from '../src/index.js';
import { describeOptimization, generationLine } from './optimize-status.js';

const DEFAULT_SERVER = 'http://127.0.0.1:7800';

const COMMON_LINES = `  --server URL     the manager (default $TASKFARM_SERVER or ${DEFAULT_SERVER})
  --token T        bearer token (default $TASKFARM_TOKEN, or the token file
                   ${configPath('token')} that \`taskfarm token create --save\` writes)
  --json           machine-readable output
  -h, --help       show this help`;
const PINNING = `HTTPS managers are pinned on first use in ${configPath('known_managers')} (like SSH's
known_hosts); a changed certificate is refused.`;
/** After a command's own Options: the common ones. */
export const COMMON = `Common options:\n${COMMON_LINES}\n\n${PINNING}`;
/** For a command with no options of its own. */
const ONLY_COMMON = `Options:\n${COMMON_LINES}\n\n${PINNING}`;

/** Help texts, by command. */
export const SERVICE_HELPS: Readonly<Record<string, string>> = {
  token: `Usage: taskfarm token create --user NAME [--admin] [--label TEXT] [--key-file FILE] [--save]

Mints a bearer token for NAME on the manager and prints it on stdout (it is shown once: the
manager keeps only its hash). Only a holder of the farm key may mint tokens: the key proves itself
with a challenge–response; it is never sent.

Options:
  --user NAME      the token's user (letters, digits, . _ @ -)
  --admin          an admin token: sees and acts on every user's jobs
  --label TEXT     a note kept with the token (e.g. "laptop")
  --key-file FILE  the farm key (default $TASKFARM_KEY, $TASKFARM_KEY_FILE or ~/.config/taskfarm/farm.key)
  --save           also write the token to ${configPath('token')} (mode 0600), the CLI's default

${COMMON}
`,
  submit: `Usage: taskfarm submit <stage>... --inputs FILE|- [options]

Submits a job to the manager and prints its ticket (--json: {"ticket": "…"}). The stages (module
paths, .ts or .js, whose default export is the stage function) are bundled here; only the bundles
the manager lacks are uploaded. Inputs are JSON lines, streamed: a file of a million lines is never
held in memory. A malformed line fails the submit with its line number, and no job is created.
Once the ticket is printed the job is durable: close the terminal, come back for the results.

Options:
  --inputs FILE|-      the inputs, one JSON value per line (- : standard input)
  --name NAME          a name for the job
  --priority N         integer, higher first (default 0)
  --weight W           share among jobs of the same priority (default 1)
  --retries N          retries of a task whose stage threw (default 0)
  --max-attempts N     thread crashes before a task fails (default 3)
  --task-timeout-ms MS time limit of one task
  --errors fail|collect  fail the job at the first task failure (default), or record failures and go on
  --hold               submit the job held (release it with taskfarm release)
  --wait               follow the job like attach and exit with its outcome

${COMMON}
`,
  status: `Usage: taskfarm status TICKET [options]

A statistical summary of the job: tasks per state, rate, ETA, the first failures with their input
index and message; for an optimize job, the generations and evaluations so far, the best cost and
its parameters, and why it stopped. --json prints the status object of GET /api/v1/jobs/{ticket}.

${ONLY_COMMON}
`,
  jobs: `Usage: taskfarm jobs [--all] [--limit N] [options]

Your jobs that are not finished (queued, running, held), newest first; --all: every user's (an
admin token only). See taskfarm history for finished ones.

Options:
  --all            every user's jobs (an admin token only)
  --limit N        at most N jobs (default all)

${COMMON}
`,
  history: `Usage: taskfarm history [--all] [--limit N] [options]

Your finished jobs (done, failed, cancelled), newest first; --all: every user's (admin only).

Options:
  --all            every user's jobs (an admin token only)
  --limit N        at most N jobs (default 100)

${COMMON}
`,
  attach: `Usage: taskfarm attach TICKET [options]

Follows the job live (progress on stderr) and exits with its outcome: 0 done, 1 failed or
cancelled. Ctrl-C detaches: the job goes on. --json prints the events as JSON lines on stdout.

${ONLY_COMMON}
`,
  results: `Usage: taskfarm results TICKET [--output FILE|-] [--failed] [options]

Writes the job's outputs, one JSON value per line in input order, exactly like taskfarm run (a
running job: what is settled so far; a warning says so). --failed writes the failures instead, as
{"index", "error"} lines.

Options:
  --output FILE|-  where to write (default -: standard output)
  --failed         the failures instead of the outputs

${COMMON}
`,
  kill: `Usage: taskfarm kill TICKET [options]

Cancels the job: its tasks stop on the workers; what was computed stays readable.

${ONLY_COMMON}
`,
  hold: `Usage: taskfarm hold TICKET [options]

Holds the job: no new tasks are dispatched; tasks in flight are stopped and go back to pending.

${ONLY_COMMON}
`,
  release: `Usage: taskfarm release TICKET [options]

Releases a held job: it is queued again.

${ONLY_COMMON}
`,
  resubmit: `Usage: taskfarm resubmit TICKET [--failed] [options]

Runs a finished (done, failed or cancelled) job again; --failed: only its failed tasks.

Options:
  --failed         only the failed tasks run again

${COMMON}
`,
  rm: `Usage: taskfarm rm TICKET [options]

Removes the job and all of it (inputs, outputs, events); a running job is cancelled first.

${ONLY_COMMON}
`,
};

export class UsageError extends Error {
  readonly code = 'FARM_ERR_INVALID_OPTION';
}

export const commonOptions = {
  server: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

export interface Common {
  readonly json: boolean;
  readonly client: ServiceHttpClient;
}

function tokenFrom(flag: string | undefined): string | undefined {
  if (flag !== undefined) return flag;
  const env = process.env['TASKFARM_TOKEN'];
  if (env !== undefined && env.length > 0) return env;
  try {
    const t = readFileSync(configPath('token'), 'utf8').trim();
    return t.length > 0 ? t : undefined;
  } catch {
    return undefined;
  }
}

export function clientFor(values: { server?: string | undefined; token?: string | undefined }): ServiceHttpClient {
  const server =
    values.server ??
    (process.env['TASKFARM_SERVER'] !== undefined && process.env['TASKFARM_SERVER'].length > 0 ? process.env['TASKFARM_SERVER'] : DEFAULT_SERVER);
  const token = tokenFrom(values.token);
  return new ServiceHttpClient(server, {
    ...(token === undefined ? {} : { token }),
    onPinned: (address, fp) =>
      process.stderr.write(`taskfarm: pinned the manager at ${address}: certificate SHA-256 ${fp} (in ${configPath('known_managers')})\n`),
  });
}

export function int(name: string, v: string | undefined, min = -Infinity): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} expects an integer${min > -Infinity ? ` ≥ ${min}` : ''}, got "${v}"`);
  return n;
}

function one(positionals: readonly string[], what = 'TICKET'): string {
  if (positionals.length !== 1) throw new UsageError(`expected one ${what}, got ${positionals.length === 0 ? 'none' : positionals.join(' ')}`);
  return positionals[0]!;
}

const jobPath = (ticket: string, rest = ''): string => `/api/v1/jobs/${encodeURIComponent(ticket)}${rest}`;

function seconds(s: number): string {
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

/** The SETTLED column of `taskfarm jobs`: tasks settled of total, or an optimisation's generations evaluated. */
function settledColumn(j: JobStatusView): string {
  if (j.kind === 'optimize') return j.generation === null ? 'gen 0' : `gen ${j.generation + 1}`;
  return `${j.counts.done + j.counts.failed}/${j.total}`;
}

/** The human summary of a status. */
export function describeStatus(s: JobStatusView): string {
  const c = s.counts;
  const lines = [
    `job ${s.ticket}${s.name.length > 0 ? ` "${s.name}"` : ''} of ${s.owner}: ${s.state}`,
    ...(s.kind === 'optimize'
      ? describeOptimization(s)
      : [
          `  tasks   ${s.total} total: ${c.pending} pending, ${c.running} running, ${c.done} done, ${c.failed} failed (${s.total > 0 ? ((100 * (c.done + c.failed)) / s.total).toFixed(1) : '100.0'} % settled)`,
        ]),
  ];
  if (s.kind !== 'optimize' && (s.rate !== null || s.etaSeconds !== null)) {
    lines.push(`  rate    ${s.rate === null ? '?' : `${s.rate.toFixed(1)} tasks/s`}${s.etaSeconds === null ? '' : `, ETA ${seconds(s.etaSeconds)}`}`);
  }
  lines.push(`  created ${s.createdAt}${s.startedAt === null ? '' : `, started ${s.startedAt}`}${s.finishedAt === null ? '' : `, finished ${s.finishedAt}`}`);
  if (s.error !== null) lines.push(`  error   ${s.error.code}: ${s.error.message}${s.error.index === undefined ? '' : ` (input ${s.error.index})`}`);
  if (s.failures.length > 0) {
    lines.push(`  first failures:`);
    for (const f of s.failures) lines.push(`    input ${f.index}: ${f.error.name}: ${f.error.message}`);
  }
  return lines.join('\n') + '\n';
}

function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: readonly string[], options: O, positionals: boolean) {
  try {
    const all = { ...commonOptions, ...options };
    return parseArgs({ args: joinNegativeValues(argv, all), options: all, strict: true, allowPositionals: positionals });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** Runs one job-service command. Returns the exit code. */
export async function runServiceCommand(command: string, argv: readonly string[]): Promise<number> {
  const help = SERVICE_HELPS[command === 'token' ? 'token' : command];
  if (help === undefined) throw new UsageError(`unknown command "${command}"`);
  try {
    switch (command) {
      case 'token':
        return await tokenCommand(argv, help);
      case 'submit':
        return await submitCommand(argv, help);
      case 'status':
      case 'kill':
      case 'hold':
      case 'release':
      case 'rm':
        return await simpleCommand(command, argv, help);
      case 'resubmit':
        return await resubmitCommand(argv, help);
      case 'jobs':
      case 'history':
        return await jobsCommand(command, argv, help);
      case 'attach':
        return await attachCommand(argv, help);
      case 'results':
        return await resultsCommand(argv, help);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`taskfarm ${command}: ${err.message}\n\n${help}`);
      return 2;
    }
    if (err instanceof FarmError) {
      process.stderr.write(`taskfarm ${command}: ${err.message}\n`);
      return err.code === 'FARM_ERR_INVALID_INPUT' || err.code === 'FARM_ERR_INVALID_OPTION' || err.code === 'FARM_ERR_INVALID_STAGE' ? 2 : 1;
    }
    throw err;
  }
  return 2;
}

function done(common: Common): void {
  common.client.close();
}

async function tokenCommand(argv: readonly string[], help: string): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { user: { type: 'string' }, admin: { type: 'boolean' }, label: { type: 'string' }, 'key-file': { type: 'string' }, save: { type: 'boolean' } },
    true,
  );
  if (values.help === true) return print(help);
  if (positionals[0] !== 'create' || positionals.length !== 1) throw new UsageError('the only token command is "taskfarm token create"');
  if (values.user === undefined) throw new UsageError('--user NAME is required');
  const key = resolveFarmKey({ keyFile: values['key-file'] });
  if (key === undefined) throw new UsageError(`no farm key: ${NO_KEY_HELP}`);
  const client = clientFor(values);
  try {
    const { nonce } = await client.json<{ nonce: string }>('POST', '/api/v1/tokens/challenge');
    const admin = values.admin === true;
    const proof = tokenProof(key.key, {
      user: values.user,
      admin,
      ...(values.label === undefined ? {} : { label: values.label }),
      nonce,
      certFingerprint: client.fingerprint,
    });
    const minted = await client.json<{ token: string; id: string; user: string; admin: boolean }>('POST', '/api/v1/tokens', {
      json: { user: values.user, admin, nonce, proof, ...(values.label === undefined ? {} : { label: values.label }) },
    });
    if (values.save === true) {
      const path = configPath('token');
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      writeFileSync(path, minted.token + '\n', { mode: 0o600 });
      chmodSync(path, 0o600);
      process.stderr.write(`taskfarm token: saved to ${path}\n`);
    }
    process.stdout.write(values.json === true ? JSON.stringify(minted) + '\n' : minted.token + '\n');
    return 0;
  } finally {
    client.close();
  }
}

export function print(text: string): number {
  process.stdout.write(text);
  return 0;
}

/**
 * The NDJSON body of a submit: the description line, then the input file's lines as they are read
 * (whole chunks, never the whole file), each checked to be JSON first: a malformed one throws with
 * its file line number, which aborts the upload (the manager then creates no job).
 */
async function* ndjsonBody(description: object, source: string): AsyncGenerator<string> {
  const where = source === '-' ? 'stdin' : source;
  const input = source === '-' ? process.stdin : createReadStream(source);
  if (source !== '-') {
    await new Promise<void>((resolve, reject) => {
      input.once('open', () => resolve());
      input.once('error', reject);
    }).catch((err: Error) => {
      throw new UsageError(`cannot read --inputs ${where}: ${err.message}`);
    });
  }
  input.setEncoding('utf8');
  yield JSON.stringify(description) + '\n';
  let carry = '';
  let n = 0;
  let index = 0;
  const check = (line: string): void => {
    n++;
    if (line.trim().length === 0) return;
    try {
      JSON.parse(line);
    } catch (err) {
      throw new InvalidInputError(`${where}:${n}: not valid JSON (${(err as Error).message}); no job was created`, { line: n, index });
    }
    index++;
  };
  for await (const chunk of input as AsyncIterable<string>) {
    const text = carry + chunk;
    const last = text.lastIndexOf('\n');
    if (last < 0) {
      carry = text;
      if (carry.length > 64 * 1024 * 1024) throw new InvalidInputError(`${where}:${n + 1}: a line of more than 64 MiB`, { line: n + 1, index });
      continue;
    }
    carry = text.slice(last + 1);
    let start = 0;
    while (start <= last) {
      const nl = text.indexOf('\n', start);
      check(text.slice(start, nl));
      start = nl + 1;
    }
    yield text.slice(0, last + 1);
  }
  if (carry.length > 0) {
    check(carry);
    yield carry + '\n';
  }
}

async function submitCommand(argv: readonly string[], help: string): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      inputs: { type: 'string' },
      name: { type: 'string' },
      priority: { type: 'string' },
      weight: { type: 'string' },
      retries: { type: 'string' },
      'max-attempts': { type: 'string' },
      'task-timeout-ms': { type: 'string' },
      errors: { type: 'string' },
      hold: { type: 'boolean' },
      wait: { type: 'boolean' },
    },
    true,
  );
  if (values.help === true) return print(help);
  if (positionals.length === 0) throw new UsageError('give at least one stage (a module path)');
  if (values.inputs === undefined) throw new UsageError('--inputs FILE|- is required (JSON lines; - reads standard input)');
  if (values.errors !== undefined && values.errors !== 'fail' && values.errors !== 'collect')
    throw new UsageError(`--errors expects fail or collect, got "${values.errors}"`);
  const weight = values.weight === undefined ? undefined : Number(values.weight);
  if (weight !== undefined && !(weight > 0)) throw new UsageError(`--weight expects a number > 0, got "${values.weight}"`);
  const description: Record<string, unknown> = {};
  const add = (k: string, v: unknown): void => {
    if (v !== undefined) description[k] = v;
  };
  add('name', values.name);
  add('priority', int('priority', values.priority));
  add('weight', weight);
  add('retries', int('retries', values.retries, 0));
  add('maxAttempts', int('max-attempts', values['max-attempts'], 1));
  add('taskTimeoutMs', int('task-timeout-ms', values['task-timeout-ms'], 0));
  add('errors', values.errors);
  if (values.hold === true) description['hold'] = true;

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
    const body = Readable.from(ndjsonBody(description, values.inputs), { objectMode: false });
    const { ticket } = await client.json<{ ticket: string }>('POST', '/api/v1/jobs', { body, contentType: 'application/x-ndjson' });
    process.stdout.write(common.json ? JSON.stringify({ ticket }) + '\n' : ticket + '\n');
    if (values.wait === true) return await follow(common, ticket, false);
    return 0;
  } finally {
    done(common);
  }
}

async function simpleCommand(command: 'status' | 'kill' | 'hold' | 'release' | 'rm', argv: readonly string[], help: string): Promise<number> {
  const { values, positionals } = parse(argv, {}, true);
  if (values.help === true) return print(help);
  const ticket = one(positionals);
  const client = clientFor(values);
  try {
    if (command === 'rm') {
      await client.json<void>('DELETE', jobPath(ticket), {}, ticket);
      process.stdout.write(values.json === true ? JSON.stringify({ ticket, removed: true }) + '\n' : `job ${ticket}: removed\n`);
      return 0;
    }
    const status =
      command === 'status'
        ? await client.json<JobStatusView>('GET', jobPath(ticket), {}, ticket)
        : await client.json<JobStatusView>('POST', jobPath(ticket, `/${command === 'kill' ? 'cancel' : command}`), {}, ticket);
    if (values.json === true) process.stdout.write(JSON.stringify(status) + '\n');
    else if (command === 'status') process.stdout.write(describeStatus(status));
    else process.stdout.write(`job ${ticket}: ${status.state}\n`);
    return 0;
  } finally {
    client.close();
  }
}

async function resubmitCommand(argv: readonly string[], help: string): Promise<number> {
  const { values, positionals } = parse(argv, { failed: { type: 'boolean' } }, true);
  if (values.help === true) return print(help);
  const ticket = one(positionals);
  const client = clientFor(values);
  try {
    const status = await client.json<JobStatusView>('POST', jobPath(ticket, '/resubmit'), { json: { failed: values.failed === true } }, ticket);
    process.stdout.write(
      values.json === true
        ? JSON.stringify(status) + '\n'
        : `job ${ticket}: ${status.state} (${values.failed === true ? 'its failed tasks run again' : 'every task runs again'})\n`,
    );
    return 0;
  } finally {
    client.close();
  }
}

async function jobsCommand(command: 'jobs' | 'history', argv: readonly string[], help: string): Promise<number> {
  const { values, positionals } = parse(argv, { all: { type: 'boolean' }, limit: { type: 'string' } }, false);
  if (values.help === true) return print(help);
  void positionals;
  const limit = int('limit', values.limit, 1) ?? (command === 'history' ? 100 : Infinity);
  const client = clientFor(values);
  try {
    const states = command === 'jobs' ? 'queued,running,held' : 'done,failed,cancelled';
    const jobs: JobStatusView[] = [];
    let after: string | undefined;
    do {
      const page = await client.json<{ jobs: JobStatusView[]; next: string | null }>('GET', '/api/v1/jobs', {
        query: { all: values.all === true ? true : undefined, state: states, limit: Math.min(1000, limit - jobs.length), after },
      });
      jobs.push(...page.jobs);
      after = page.next ?? undefined;
    } while (after !== undefined && jobs.length < limit);
    if (values.json === true) {
      process.stdout.write(JSON.stringify(jobs) + '\n');
      return 0;
    }
    if (jobs.length === 0) {
      process.stdout.write(command === 'jobs' ? 'no jobs queued, running or held\n' : 'no finished jobs\n');
      return 0;
    }
    const rows = jobs.map((j) => [j.ticket, j.state, settledColumn(j), String(j.counts.failed), j.owner, j.createdAt, j.name]);
    const head = ['TICKET', 'STATE', 'SETTLED', 'FAILED', 'OWNER', 'CREATED', 'NAME'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
    for (const r of [head, ...rows]) process.stdout.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ') + '\n');
    return 0;
  } finally {
    client.close();
  }
}

/** Follows a job's events until it finishes (or Ctrl-C detaches). 0 done, 1 failed/cancelled, 130 detached. */
export async function follow(common: Common, ticket: string, printEvents: boolean): Promise<number> {
  const ac = new AbortController();
  let detached = false;
  const onSigint = (): void => {
    detached = true;
    ac.abort();
  };
  process.once('SIGINT', onSigint);
  const tty = process.stderr.isTTY;
  let last = 0;
  try {
    const first = await common.client.json<JobStatusView>('GET', jobPath(ticket), {}, ticket);
    const final = (s: string): boolean => s === 'done' || s === 'failed' || s === 'cancelled';
    if (final(first.state)) return outcome(common, first, printEvents);
    for (;;) {
      try {
        const res = await common.client.request(
          'GET',
          jobPath(ticket, '/events'),
          { headers: { accept: 'text/event-stream', 'last-event-id': String(last) }, signal: ac.signal },
          ticket,
        );
        for await (const ev of sse(res as AsyncIterable<Buffer>)) {
          if (ev.seq <= last) continue;
          last = ev.seq;
          if (printEvents) process.stdout.write(JSON.stringify(ev) + '\n');
          const data = ev.data as { state?: string; counts?: { pending: number; running: number; done: number; failed: number }; rate?: number | null } | null;
          if (ev.type === 'progress' && data?.counts !== undefined && !printEvents) {
            const c = data.counts;
            const total = c.pending + c.running + c.done + c.failed;
            const line = `${c.done + c.failed}/${total} settled, ${c.running} running, ${c.failed} failed${typeof data.rate === 'number' ? `, ${data.rate.toFixed(0)} tasks/s` : ''}`;
            process.stderr.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
          }
          if (ev.type === 'generation' && !printEvents) {
            const line = generationLine(ev.data);
            if (line !== undefined) process.stderr.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
          }
          if (ev.type === 'state' && data?.state !== undefined && final(data.state)) {
            const now = await common.client.json<JobStatusView>('GET', jobPath(ticket), {}, ticket);
            if (final(now.state)) {
              if (tty && !printEvents) process.stderr.write('\n');
              return outcome(common, now, printEvents);
            }
          }
        }
      } catch (err) {
        if (detached || ac.signal.aborted) break;
        if (!(err instanceof FarmError && err.retryable) && (err as { code?: string }).code !== 'ECONNRESET') throw err;
        await new Promise((r) => setTimeout(r, 1000).unref());
      }
      if (detached) break;
    }
    process.stderr.write(`${tty ? '\n' : ''}taskfarm: detached; the job goes on (taskfarm attach ${ticket} to follow it again)\n`);
    return 130;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

function outcome(common: Common, s: JobStatusView, printedEvents: boolean): number {
  if (!printedEvents && !common.json) process.stderr.write(describeStatus(s));
  else if (common.json && !printedEvents) process.stdout.write(JSON.stringify(s) + '\n');
  return s.state === 'done' ? 0 : 1;
}

async function* sse(source: AsyncIterable<Buffer>): AsyncGenerator<ServiceEvent> {
  let carry = '';
  let id: number | undefined;
  let type = 'message';
  let data: string[] = [];
  for await (const chunk of source) {
    carry += chunk.toString('utf8');
    let nl: number;
    while ((nl = carry.indexOf('\n')) >= 0) {
      const line = carry.slice(0, nl).replace(/\r$/, '');
      carry = carry.slice(nl + 1);
      if (line.length === 0) {
        if (data.length > 0) {
          const text = data.join('\n');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // keep the text
          }
          if (type === 'error') {
            const message = (parsed as { message?: unknown } | null)?.message;
            throw new FarmError('FARM_ERR_STORE', typeof message === 'string' ? message : text);
          }
          if (id !== undefined) yield { seq: id, at: Date.now(), type, data: parsed as ServiceEvent['data'] };
        }
        type = 'message';
        data = [];
      } else if (!line.startsWith(':')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'id') id = Number(value);
        else if (field === 'event') type = value;
        else if (field === 'data') data.push(value);
      }
    }
  }
}

async function attachCommand(argv: readonly string[], help: string): Promise<number> {
  const { values, positionals } = parse(argv, {}, true);
  if (values.help === true) return print(help);
  const ticket = one(positionals);
  const common = { json: values.json === true, client: clientFor(values) };
  try {
    return await follow(common, ticket, common.json);
  } finally {
    done(common);
  }
}

const OUTPUT_LINE = /^\{"index":(\d+),"output":(.*)\}$/s;

async function resultsCommand(argv: readonly string[], help: string): Promise<number> {
  const { values, positionals } = parse(argv, { output: { type: 'string' }, failed: { type: 'boolean' } }, true);
  if (values.help === true) return print(help);
  const ticket = one(positionals);
  const client = clientFor(values);
  try {
    const status = await client.json<JobStatusView>('GET', jobPath(ticket), {}, ticket);
    const failed = values.failed === true;
    const res = await client.request('GET', jobPath(ticket, '/results'), { query: { failed: failed ? true : undefined } }, ticket);
    const sink = values.output === undefined || values.output === '-' ? process.stdout : createWriteStream(values.output);
    let n = 0;
    let chunk = '';
    const flush = async (): Promise<void> => {
      if (chunk.length === 0) return;
      const ok = sink.write(chunk);
      chunk = '';
      if (!ok) await new Promise<void>((r) => sink.once('drain', () => r()));
    };
    const lines = createInterface({ input: res, crlfDelay: Infinity });
    for await (const line of lines) {
      if (line.length === 0) continue;
      n++;
      if (failed) chunk += line + '\n';
      else {
        // `{"index":i,"output":X}` → `X`, without re-serialising the output.
        const m = OUTPUT_LINE.exec(line);
        chunk += (m === null ? JSON.stringify((JSON.parse(line) as { output: unknown }).output) : m[2]) + '\n';
      }
      if (chunk.length >= 65_536) await flush();
    }
    await flush();
    if (sink !== process.stdout) await new Promise<void>((r) => (sink as NodeJS.WritableStream).end(() => r()));
    const expected = failed ? status.counts.failed : status.counts.done;
    if (status.state === 'done' || status.state === 'failed' || status.state === 'cancelled') {
      if (n < expected)
        throw new FarmError(
          'FARM_ERR_PROTOCOL',
          `the results stream of ${ticket} ended after ${n} of ${expected} lines (the connection broke?): run the command again`,
        );
      if (!failed && status.counts.failed > 0)
        process.stderr.write(`taskfarm results: ${status.counts.failed} task(s) failed and have no output (taskfarm results ${ticket} --failed)\n`);
    } else {
      process.stderr.write(`taskfarm results: job ${ticket} is ${status.state}: ${n} result(s) so far of ${status.total}\n`);
    }
    return 0;
  } finally {
    client.close();
  }
}
