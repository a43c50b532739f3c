#!/usr/bin/env node
// Run a command inside a private network namespace so that nothing it does
// (mDNS multicast in particular) can reach the machine's real interfaces.
//
//   node scripts/isolated.mjs [--or-unisolated] -- <command> [args...]
//   taskfarm isolated -- <command> [args...]        (the same, from any folder)
//
// The command runs in the current folder. Each call is one namespace: daemons and the client that
// must see each other's mDNS have to run inside the same call (e.g. one `sh -c '…'` or a script).
//
// Layers (outer → inner):
//   outer node (this script, host namespaces)
//     └─ unshare --net --mount --pid --fork --kill-child --mount-proc --propagation private
//          └─ sh (PID 1 of the new PID namespace: reaps orphans, nothing else)
//               └─ inner node (this script again, with --taskfarm-isolated-inner)
//                    └─ <command>
//
// Inside, before the command runs: loopback is brought up, a private tmpfs is
// mounted on /run/netns (so `ip netns add` in tests never touches the host's
// /run/netns), and `ip netns add/exec/del` is probed. The command sees:
//   TASKFARM_ISOLATED=1  it runs in a network namespace whose only interface is lo
//   TASKFARM_NETNS=1     (possibly mapped) root and `ip netns` works: tests may
//                        build a virtual LAN (test/helpers/virtual-lan.ts)
// If no namespace can be created at all (neither root nor unprivileged user
// namespaces), nothing runs: a message on stderr, exit status 125. Only with
// --or-unisolated (what `npm test` passes) does the command then run anyway, with
// TASKFARM_ISOLATED=0 and without TASKFARM_NETNS: tests that multicast skip
// themselves.
//
// Lifetime: when the command exits, PID 1 of the PID namespace exits and the
// kernel SIGKILLs every process left in it; the network namespaces created
// inside vanish with the last process and the private mount namespace. If the
// outer node dies, the inner one sees EOF on its control pipe and exits; if
// unshare dies, --kill-child SIGKILLs the namespace's PID 1.
//
// SIGINT/SIGTERM/SIGHUP received by the outer script are sent over the control
// pipe (fd 3) and forwarded to the command by the inner script. Exit status is
// the command's, or 128+signal.
//
// No dependencies; Linux only for the isolated path.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
const REPO = path.resolve(path.dirname(SELF), '..');
const INNER_FLAG = '--taskfarm-isolated-inner';
const CONTROL_FD = 3;
const FORWARDED = /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP']);
const PROBE_TIMEOUT_MS = 5000;
const NO_NAMESPACE_WHY = 'no network namespace can be created here (it needs root, or unprivileged user namespaces, and `unshare` from util-linux)';
/** Exit status when isolation is impossible and nothing was run. */
const CANNOT_ISOLATE = 125;

const debug =
  process.env.TASKFARM_ISOLATED_DEBUG === '1' ? (/** @type {string} */ msg) => process.stderr.write(`taskfarm[isolated ${process.pid}]: ${msg}\n`) : () => {};

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  let inner = false;
  let orUnisolated = false;
  let rest = argv;
  if (rest[0] === INNER_FLAG) {
    inner = true;
    rest = rest.slice(1);
  }
  if (rest[0] === '--or-unisolated') {
    orUnisolated = true;
    rest = rest.slice(1);
  }
  if (rest[0] === '--') rest = rest.slice(1);
  return { inner, orUnisolated, command: rest };
}

const { inner, orUnisolated, command } = parseArgs(process.argv.slice(2));
if (command.length === 0) {
  process.stderr.write('usage: taskfarm isolated -- <command> [args...]   (or: node scripts/isolated.mjs -- <command> [args...])\n');
  process.exit(2);
}

// ---------------------------------------------------------------- helpers

/** Environment with <repo>/node_modules/.bin first on PATH. */
function baseEnv() {
  const env = { ...process.env };
  const bin = path.join(REPO, 'node_modules', '.bin');
  const parts = (env.PATH ?? '').split(path.delimiter).filter((p) => p !== '' && p !== bin);
  env.PATH = [bin, ...parts].join(path.delimiter);
  return env;
}

/**
 * Names of the network interfaces of *this process's* network namespace.
 * /proc/self/net/dev is per network namespace; /sys/class/net is not reliable
 * after `unshare --net` (it shows the namespace of whoever mounted sysfs), so it
 * is only a fallback.
 */
function listInterfaces() {
  try {
    const text = fs.readFileSync('/proc/self/net/dev', 'utf8');
    return text
      .split('\n')
      .slice(2)
      .map((line) => line.split(':')[0]?.trim() ?? '')
      .filter((name) => name !== '');
  } catch {
    try {
      return fs.readdirSync('/sys/class/net');
    } catch {
      return null;
    }
  }
}

/** True when the only network interface this process can see is lo. */
function reallyIsolated() {
  const ifaces = listInterfaces();
  return ifaces !== null && ifaces.length > 0 && ifaces.every((name) => name === 'lo');
}

function signalNumber(sig) {
  return os.constants.signals[sig] ?? 0;
}

function exitLike(code, signal) {
  if (signal) return 128 + signalNumber(signal);
  return code ?? 1;
}

/** Run a short helper command synchronously; never throws. */
function run(cmd, args, timeout = PROBE_TIMEOUT_MS) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout, killSignal: 'SIGKILL', encoding: 'utf8' });
  const ok = r.status === 0 && !r.error;
  const why = r.error ? r.error.message : (r.stderr || r.stdout || `exit ${r.status ?? r.signal}`).trim();
  debug(`${cmd} ${args.join(' ')} -> ${ok ? 'ok' : `FAILED (${why})`}`);
  return { ok, why, notFound: /** @type {NodeJS.ErrnoException | undefined} */ (r.error)?.code === 'ENOENT' };
}

/**
 * Spawn the command with inherited stdio and the given env; forward signals;
 * exit with its status. `control` (optional) is a readable stream of
 * newline-separated signal names from the outer script; EOF on it means the
 * outer script is gone and the command must go too.
 */
function runCommand(env, control) {
  const [cmd, ...args] = command;
  const child = spawn(cmd, args, { stdio: 'inherit', env });
  let exiting = false;

  // A Ctrl-C reaches every process of the foreground group (including the
  // command itself) and may also arrive via the control pipe: forward each
  // signal at most once per short window so the command doesn't see a burst.
  const lastForward = new Map();
  const forward = (sig) => {
    if (exiting || child.exitCode !== null || child.signalCode !== null) return;
    const now = Date.now();
    if (now - (lastForward.get(sig) ?? 0) < 250) return;
    lastForward.set(sig, now);
    debug(`forwarding ${sig} to ${child.pid}`);
    try {
      child.kill(sig);
    } catch {
      /* already gone */
    }
  };
  for (const sig of FORWARDED) process.on(sig, () => forward(sig));

  if (control) {
    let buf = '';
    control.setEncoding('utf8');
    control.on('data', (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const sig = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        const known = FORWARDED.find((s) => s === sig);
        if (known) forward(known);
      }
    });
    const parentGone = () => {
      if (exiting) return;
      exiting = true;
      debug('control pipe closed: outer script is gone, killing the command');
      try {
        child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
      // PID 1 (sh) exits after us and the kernel kills whatever is left.
      process.exit(137);
    };
    control.on('end', parentGone);
    control.on('error', parentGone);
  }

  child.on('error', (err) => {
    const code = /** @type {NodeJS.ErrnoException} */ (err).code;
    process.stderr.write(`taskfarm: cannot run ${cmd}: ${code === 'ENOENT' ? 'command not found' : err.message}\n`);
    exiting = true;
    process.exit(code === 'ENOENT' ? 127 : 126);
  });
  child.on('exit', (code, signal) => {
    exiting = true;
    process.exit(exitLike(code, signal));
  });
}

// ---------------------------------------------------------------- inner: inside the namespaces

function innerMain() {
  if (!reallyIsolated()) {
    // Never run anything that might multicast on a real network.
    process.stderr.write(`taskfarm: refusing to run: expected an isolated network namespace but see interfaces ${JSON.stringify(listInterfaces())}\n`);
    process.exit(1);
  }
  const env = baseEnv();
  env.TASKFARM_ISOLATED = '1';
  delete env.TASKFARM_NETNS;

  // 1. loopback
  const lo = run('ip', ['link', 'set', 'lo', 'up']);
  if (lo.notFound) {
    process.stderr.write(
      "taskfarm: 'ip' (iproute2) not found: loopback inside the isolated namespace is probably DOWN " +
        '(127.0.0.1 unusable) and the virtual LAN is unavailable\n',
    );
  } else if (!lo.ok) {
    process.stderr.write(`taskfarm: could not bring up loopback in the isolated namespace: ${lo.why}\n`);
  }

  // 2. private /run/netns, 3. probe `ip netns`
  const isRoot = typeof process.geteuid === 'function' && process.geteuid() === 0;
  let netnsWhy = '';
  if (lo.notFound) netnsWhy = "'ip' not found";
  else if (!isRoot) netnsWhy = 'not (mapped) root inside the namespace';
  else {
    const mounted = mountPrivateNetnsDir();
    if (mounted !== true) netnsWhy = `no private /run/netns: ${mounted}`;
    else {
      const probe = 'tfprobe';
      const add = run('ip', ['netns', 'add', probe]);
      const exec = add.ok ? run('ip', ['netns', 'exec', probe, 'true']) : add;
      if (add.ok) run('ip', ['netns', 'del', probe]);
      if (!add.ok) netnsWhy = `ip netns add failed: ${add.why}`;
      else if (!exec.ok) netnsWhy = `ip netns exec failed: ${exec.why}`;
    }
  }
  if (netnsWhy === '') env.TASKFARM_NETNS = '1';
  else {
    env.TASKFARM_NETNS_UNAVAILABLE = netnsWhy;
    process.stderr.write(`taskfarm: isolated, but no virtual LAN (${netnsWhy}); tests that need it will be skipped\n`);
  }

  let control;
  try {
    fs.fstatSync(CONTROL_FD);
    control = new net.Socket({ fd: CONTROL_FD, readable: true, writable: false });
  } catch {
    control = undefined;
  }
  runCommand(env, control);
}

/** Mount a tmpfs on /run/netns in our private mount namespace. Returns true or a reason. */
function mountPrivateNetnsDir() {
  try {
    fs.mkdirSync('/run/netns', { recursive: true });
  } catch (err) {
    // Unprivileged (user-namespace) case without an existing /run/netns: we
    // can't create it on the host filesystem, so shadow all of /run with a
    // tmpfs — only this private mount namespace sees it.
    debug(`mkdir /run/netns failed (${err.code}); mounting a tmpfs on /run instead`);
    const runTmp = run('mount', ['-n', '-t', 'tmpfs', '-o', 'mode=0755,size=8m', 'taskfarm-run', '/run']);
    if (!runTmp.ok) return `mkdir /run/netns: ${err.code}; mount tmpfs on /run: ${runTmp.why}`;
    try {
      fs.mkdirSync('/run/netns', { recursive: true });
    } catch (err2) {
      return `mkdir /run/netns: ${err2.code}`;
    }
  }
  // -n: don't write /run/mount/utab on the host filesystem.
  const m = run('mount', ['-n', '-t', 'tmpfs', '-o', 'mode=0755,size=4m', 'taskfarm-netns', '/run/netns']);
  if (!m.ok) return `mount tmpfs on /run/netns: ${m.why}`;
  // Double-check that it really is our tmpfs before letting `ip netns add` write there.
  try {
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
    const ours = mounts.filter((l) => l.split(' ')[4] === '/run/netns').pop();
    if (!ours || !/ - tmpfs taskfarm-netns /.test(ours)) return '/run/netns is not our tmpfs after mounting';
  } catch (err) {
    return `cannot read /proc/self/mountinfo: ${err.message}`;
  }
  return true;
}

// ---------------------------------------------------------------- outer: pick a namespace flavour

const COMMON = ['--net', '--mount', '--propagation', 'private', '--fork', '--kill-child'];
const VARIANTS = [
  { name: 'root+pid', root: true, flags: [...COMMON, '--pid', '--mount-proc'] },
  { name: 'root', root: true, flags: COMMON },
  { name: 'userns+pid', root: false, flags: ['--user', '--map-root-user', ...COMMON, '--pid', '--mount-proc'] },
  { name: 'userns', root: false, flags: ['--user', '--map-root-user', ...COMMON] },
];

function pickVariant() {
  if (process.platform !== 'linux') return undefined;
  const isRoot = typeof process.geteuid === 'function' && process.geteuid() === 0;
  for (const v of VARIANTS) {
    if (v.root && !isRoot) continue;
    const r = run('unshare', [...v.flags, '--', 'true']);
    if (r.notFound) return undefined;
    if (r.ok) return v;
  }
  return undefined;
}

function passthrough(env) {
  runCommand(env, undefined);
}

function outerMain() {
  const env = baseEnv();
  // `npm run isolated -- <cmd>` runs in the package root: go back to the folder npm was called from.
  if (process.env.npm_lifecycle_event === 'isolated' && process.env.INIT_CWD) process.chdir(process.env.INIT_CWD);

  if (env.TASKFARM_ISOLATED === '1' && reallyIsolated()) {
    // Already inside (e.g. `npm run isolated -- bash`, then `npm test`).
    debug('already isolated: running the command directly');
    passthrough(env);
    return;
  }

  const variant = pickVariant();
  if (!variant) {
    if (!orUnisolated) {
      // Never run a command that may multicast on the real network just because we could not isolate it.
      process.stderr.write(`taskfarm isolated: ${NO_NAMESPACE_WHY}; refusing to run ${JSON.stringify(command.join(' '))} without isolation\n`);
      process.exit(CANNOT_ISOLATE);
    }
    process.stderr.write(`taskfarm: ${NO_NAMESPACE_WHY}; running without isolation: tests that need mDNS or the virtual LAN will be skipped\n`);
    env.TASKFARM_ISOLATED = '0';
    delete env.TASKFARM_NETNS;
    passthrough(env);
    return;
  }
  debug(`using unshare variant ${variant.name}`);

  env.TASKFARM_ISOLATED = '1';
  env.TASKFARM_ISOLATION = variant.name;
  delete env.TASKFARM_NETNS;
  // PID 1 of a PID namespace must reap orphans, which node can't do: use sh.
  // `0<&0` keeps stdin (an async list would get /dev/null otherwise).
  const init = variant.flags.includes('--pid') ? ['sh', '-c', '"$@" 0<&0 & child=$!; wait "$child"; exit $?', 'taskfarm-init'] : [];
  const args = [...variant.flags, '--', ...init, process.execPath, SELF, INNER_FLAG, '--', ...command];
  const child = spawn('unshare', args, { stdio: ['inherit', 'inherit', 'inherit', 'pipe'], env });
  const control = /** @type {import('node:net').Socket} */ (child.stdio[CONTROL_FD]);
  control.on('error', () => {});

  for (const sig of FORWARDED) {
    process.on(sig, () => {
      debug(`got ${sig}, telling the inner script`);
      if (!control.destroyed) control.write(`${sig}\n`);
    });
  }
  child.on('error', (err) => {
    process.stderr.write(`taskfarm: cannot run unshare: ${err.message}\n`);
    process.exit(126);
  });
  child.on('exit', (code, signal) => {
    process.exit(exitLike(code, signal));
  });
}

if (inner) innerMain();
else outerMain();
