#!/usr/bin/env node
/**
 * The `taskfarm` command: argv → subcommand. No business logic here.
 */
import { PACKAGE_VERSION } from '../src/index.js';
import { runWorker, WORKER_HELP } from '../services/worker/main.js';
import { runDemo, DEMO_HELP } from './demo.js';
import { runRun, RUN_HELP } from './run.js';
import { runLs, LS_HELP } from './ls.js';
import { runKeygen, KEYGEN_HELP } from './keygen.js';
import { runIsolated, ISOLATED_HELP } from './isolated.js';
import { runServe, SERVE_HELP } from './serve.js';
import { runServiceCommand, SERVICE_HELPS } from './service-commands.js';
import { runTop, TOP_HELP } from './top.js';

const HELP = `taskfarm ${PACKAGE_VERSION}: a task farm for networks of workstations

Usage: taskfarm <command> [options]

Commands:
  worker     run a worker daemon on this machine
  run        compute module stages over JSON-lines inputs on the LAN's worker daemons
  ls         list the worker daemons advertised on the LAN (mDNS)
  keygen     write a new farm key (shared by the farm's daemons and clients)
  demo       a real farm on this machine: 3 daemons, a Mandelbrot render, one daemon killed halfway
  isolated   run a command (daemons, a client) inside a private network namespace: no packet leaves
  serve      run the job service (manager): submit jobs and walk away
  token      token create: mint a bearer token for the job service (needs the farm key)
  submit     submit a job to the manager; prints its ticket
  status     a job's summary: counts per state, rate, ETA, first failures
  jobs       your unfinished jobs (--all: everyone's, admins)
  history    your finished jobs
  attach     follow a job live; exits with its outcome (Ctrl-C detaches)
  results    a job's outputs, one JSON value per line in input order (--failed: failures)
  kill       cancel a job          hold / release   pause / resume a job's dispatch
  resubmit   run a finished job again (--failed: only its failed tasks)
  rm         remove a job and all of it
  top        the farm's workers and your jobs, live in the terminal (from a manager's API)
  help CMD   show the help of a command
  version    print the version

Run \`taskfarm <command> --help\` for a command's options.
`;

const helps: Record<string, string> = {
  worker: WORKER_HELP,
  run: RUN_HELP,
  demo: DEMO_HELP,
  ls: LS_HELP,
  keygen: KEYGEN_HELP,
  isolated: ISOLATED_HELP,
  serve: SERVE_HELP,
  ...SERVICE_HELPS,
  top: TOP_HELP,
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'worker':
      return runWorker(rest);
    case 'run':
      return runRun(rest);
    case 'demo':
      return runDemo(rest);
    case 'ls':
      return runLs(rest);
    case 'keygen':
      return runKeygen(rest);
    case 'isolated':
      return runIsolated(rest);
    case 'serve':
      return runServe(rest);
    case 'token':
    case 'submit':
    case 'status':
    case 'jobs':
    case 'history':
    case 'attach':
    case 'results':
    case 'kill':
    case 'hold':
    case 'release':
    case 'resubmit':
    case 'rm':
      return runServiceCommand(command, rest);
    case 'top':
      return runTop(rest);
    case 'version':
    case '--version':
    case '-v':
      process.stdout.write(`${PACKAGE_VERSION}\n`);
      return 0;
    case 'help':
    case '--help':
    case '-h':
    case undefined: {
      const topic = rest[0];
      process.stdout.write(topic !== undefined && helps[topic] !== undefined ? helps[topic] : HELP);
      return command === undefined ? 2 : 0;
    }
    default:
      process.stderr.write(`taskfarm: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = err as Error & { code?: string };
    process.stderr.write(`taskfarm: ${e.message ?? String(err)}\n`);
    // Usage errors (bad flags, bad values) exit 2, like `taskfarm run`'s.
    process.exitCode = e.code === 'FARM_ERR_INVALID_OPTION' || (e.code ?? '').startsWith('ERR_PARSE_ARGS_') ? 2 : 1;
  },
);
