/**
 * `taskfarm isolated -- <command>`: runs a command inside a private network namespace (only
 * loopback), from the current folder, so that mDNS and every other packet stay on this machine.
 * The work is scripts/isolated.mjs (shipped with the package); this is argv → child → exit code.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const ISOLATED_HELP = `Usage: taskfarm isolated -- <command> [args...]

Runs <command> in the current folder inside a private network namespace whose only interface is
loopback (Linux: root, or unprivileged user namespaces, and unshare from util-linux). Nothing it
sends, mDNS multicast included, can leave this machine: for trying a farm of local daemons with
mDNS discovery, or a program that uses it, on a machine whose network must not see it.

Each call is its own namespace: daemons and the client that must find each other have to be
started by the same call, for instance

  taskfarm isolated -- sh -c 'taskfarm worker --threads 1 & a=$!; taskfarm worker --threads 1 & b=$!;
                              node my-program.js; kill $a $b; wait'

When no namespace can be created it runs nothing: a message on stderr, exit status 125.
Otherwise the exit status is the command's (128+N when a signal N ended it). Signals sent to
taskfarm isolated (Ctrl-C) are passed on to the command. Same as the taskfarm-isolated command.

Options:
  -h, --help    show this help
`;

const script = fileURLToPath(new URL('../../scripts/isolated.mjs', import.meta.url));

/** Runs the wrapper to completion; resolves with the command's exit status. */
export function runIsolated(argv: readonly string[]): Promise<number> {
  if (argv[0] === '-h' || argv[0] === '--help') {
    process.stdout.write(ISOLATED_HELP);
    return Promise.resolve(0);
  }
  const rest = argv[0] === '--' ? argv.slice(1) : argv;
  if (rest.length === 0) {
    process.stderr.write(`taskfarm isolated: give a command to run\n\n${ISOLATED_HELP}`);
    return Promise.resolve(2);
  }
  const child = spawn(process.execPath, [script, '--', ...rest], { stdio: 'inherit' });
  // Ctrl-C reaches the whole foreground group: the wrapper passes it on; we only wait for it.
  const forward = (signal: NodeJS.Signals): void => {
    child.kill(signal);
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, forward);
  return new Promise<number>((resolve) => {
    child.once('error', (err) => {
      process.stderr.write(`taskfarm isolated: cannot start the wrapper: ${err.message}\n`);
      resolve(126);
    });
    child.once('exit', (code, signal) => {
      for (const s of signals) process.off(s, forward);
      resolve(code ?? 128 + (signal === null ? 1 : signalNumber(signal)));
    });
  });
}

function signalNumber(signal: NodeJS.Signals): number {
  return { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 }[signal as string] ?? 1;
}
