// A virtual LAN built from network namespaces, for tests that need real
// multicast (mDNS) between several "machines" without touching the real
// network. Only usable inside `node scripts/isolated.mjs -- ...`, which runs
// the test process in a private network/mount/PID namespace with a private
// /run/netns and sets TASKFARM_NETNS=1 when `ip netns` works there.
//
//   <lan ns>:  br0 (bridge, multicast snooping off) ── port p1 ── p2 ── ... pN
//                                                       │       │
//   <host ns>:                                    eth (10.k.0.1) (10.k.0.2) ...
//
// Each host namespace has lo up, one veth with 10.<k>.0.<i>/24 and a default
// route through it (without a route multicast sends fail with ENETUNREACH).
// Processes started with `exec()` also get their own UTS namespace whose
// hostname is the host's name, so os.hostname() differs per host as mDNS
// expects.

import { execFile, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';

export interface LanHost {
  /** Host name (also the hostname seen by processes started with exec()). */
  name: string;
  /** Network namespace of the host (`ip netns exec <ns> ...`). */
  ns: string;
  /** IPv4 address, 10.<k>.0.<i>. */
  address: string;
  /** The host's interface, inside `ns`. */
  iface: string;
  /** The bridge port of this host, inside the LAN's namespace. */
  bridgePort: string;
}

export interface VirtualLan {
  /** Namespace holding the bridge. */
  readonly ns: string;
  /** e.g. 10.23.0.0/24 */
  readonly subnet: string;
  readonly hosts: LanHost[];
  /** Every namespace this LAN created (bridge + hosts). */
  namespaces(): string[];
  /** A new host joins the LAN (hot-join). */
  addHost(): Promise<LanHost>;
  /** Partition: take the host's bridge port down. */
  cut(host: LanHost): Promise<void>;
  /** Undo cut(). */
  heal(host: LanHost): Promise<void>;
  /**
   * Start `cmd args...` on `host`. The returned child's pid is the command's
   * own pid (ip netns exec, unshare and sh all exec in place), so tests may
   * SIGKILL/SIGSTOP it directly. stdio defaults to pipes.
   */
  exec(host: LanHost, cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  /**
   * Kill every process started (SIGTERM, bounded wait, SIGKILL) and anything
   * else left inside the namespaces, then delete the namespaces. Idempotent.
   */
  destroy(): Promise<void>;
}

const env = process.env;

export const netnsAvailable: boolean = process.platform === 'linux' && env['TASKFARM_ISOLATED'] === '1' && env['TASKFARM_NETNS'] === '1';

export const netnsSkipReason: string = netnsAvailable
  ? ''
  : process.platform !== 'linux'
    ? 'virtual LAN needs Linux network namespaces'
    : env['TASKFARM_ISOLATED'] !== '1'
      ? 'not running in an isolated network namespace (run through `node scripts/isolated.mjs -- ...`, e.g. `npm test`)'
      : `no root-capable network namespace harness${env['TASKFARM_NETNS_UNAVAILABLE'] ? `: ${env['TASKFARM_NETNS_UNAVAILABLE']}` : ''}`;

const IP_TIMEOUT_MS = 10_000;
const TERM_GRACE_MS = 2_000;
const KILL_WAIT_MS = 3_000;
const IFNAMSIZ_MAX = 15;

// ---------------------------------------------------------------- small utilities

/** Runs `ip ARGS` (bounded); its stdout, or rejects with its stderr. */
export function ip(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: IP_TIMEOUT_MS, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ip ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** The child has exited (with a code or by a signal). */
export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Resolves when the child has exited or after `ms`, whichever comes first. */
export function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (exited(child) || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      child.off('exit', done);
      child.off('error', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    child.once('exit', done);
    child.once('error', done);
  });
}

function trySignal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone already */
  }
}

/** Bounded poll of a condition; used only for kernel state we cannot subscribe to. */
async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    if (await check()) return;
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

// ---------------------------------------------------------------- line reader

interface LineState {
  lines: string[];
  /** Index of the first line not yet consumed by a waitForLine match. */
  cursor: number;
  stdoutDone: boolean;
  exit: string | undefined;
  stderrTail: string[];
  notify: Set<() => void>;
}

const lineStates = new WeakMap<ChildProcess, LineState>();
const MAX_LINES = 20_000;

function splitLines(onLine: (line: string) => void): { data: (chunk: string) => void; end: () => void } {
  let buf = '';
  return {
    data(chunk: string): void {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, nl).replace(/\r$/, ''));
        buf = buf.slice(nl + 1);
      }
    },
    end(): void {
      if (buf !== '') onLine(buf);
      buf = '';
    },
  };
}

/** Start recording a child's stdout lines (and the tail of stderr). Idempotent. */
function track(child: ChildProcess): LineState {
  const known = lineStates.get(child);
  if (known) return known;
  const state: LineState = {
    lines: [],
    cursor: 0,
    stdoutDone: child.stdout === null,
    exit: undefined,
    stderrTail: [],
    notify: new Set(),
  };
  lineStates.set(child, state);
  const wake = (): void => {
    for (const fn of [...state.notify]) fn();
  };
  if (child.stdout) {
    const out = splitLines((line) => {
      state.lines.push(line);
      if (state.lines.length > MAX_LINES) {
        const drop = state.lines.length - MAX_LINES;
        state.lines.splice(0, drop);
        state.cursor = Math.max(0, state.cursor - drop);
      }
      wake();
    });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', out.data);
    const end = (): void => {
      if (state.stdoutDone) return;
      out.end();
      state.stdoutDone = true;
      wake();
    };
    child.stdout.on('end', end);
    child.stdout.on('close', end);
    child.stdout.on('error', end);
  }
  if (child.stderr) {
    const err = splitLines((line) => {
      state.stderrTail.push(line);
      if (state.stderrTail.length > 20) state.stderrTail.shift();
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', err.data);
    child.stderr.on('end', err.end);
  }
  if (exited(child)) state.exit = `exited (code ${child.exitCode}, signal ${child.signalCode})`;
  child.on('exit', (code, signal) => {
    state.exit = `exited (code ${code}, signal ${signal})`;
    wake();
  });
  child.on('error', (e) => {
    state.exit = `failed to start: ${e.message}`;
    state.stdoutDone = true;
    wake();
  });
  return state;
}

/**
 * Resolve with the match of the first stdout line (after the lines consumed by
 * earlier waitForLine matches on the same child) that matches `regex`. Rejects
 * if the child exits (and its stdout ends) first, or after `timeoutMs`.
 */
export function waitForLine(child: ChildProcess, regex: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const re = new RegExp(regex.source, regex.flags.replace(/[gy]/g, ''));
  const st = track(child);
  return new Promise<RegExpMatchArray>((resolve, reject) => {
    let scanned = st.cursor;
    let settled = false;
    const finish = (err: Error | undefined, m?: RegExpMatchArray): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      st.notify.delete(check);
      if (err) reject(err);
      else resolve(m as RegExpMatchArray);
    };
    const describe = (why: string): Error => {
      const out = st.lines
        .slice(-10)
        .map((l) => `  | ${l}`)
        .join('\n');
      const errTail = st.stderrTail
        .slice(-10)
        .map((l) => `  ! ${l}`)
        .join('\n');
      return new Error(
        `waitForLine(${re}) on pid ${child.pid ?? '?'}: ${why}` +
          (out ? `\n last stdout lines:\n${out}` : '') +
          (errTail ? `\n last stderr lines:\n${errTail}` : ''),
      );
    };
    function check(): void {
      if (settled) return;
      scanned = Math.max(scanned, st.cursor);
      for (; scanned < st.lines.length; scanned++) {
        const m = (st.lines[scanned] as string).match(re);
        if (m) {
          st.cursor = Math.max(st.cursor, scanned + 1);
          finish(undefined, m);
          return;
        }
      }
      if (child.stdout === null) finish(describe('child has no piped stdout'));
      else if (st.stdoutDone && st.exit !== undefined) finish(describe(`child ${st.exit} before a matching line`));
    }
    const timer = setTimeout(() => finish(describe(`no matching line within ${timeoutMs} ms`)), timeoutMs);
    st.notify.add(check);
    check();
  });
}

// ---------------------------------------------------------------- LAN

let lanCounter = 0;
const pidTag = (process.pid % 1296).toString(36).padStart(2, '0');
const liveLans = new Set<{ children: Set<ChildProcess>; namespaces: string[] }>();
let exitHookInstalled = false;

/** Last-resort cleanup if a test process exits without destroy(). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const lan of liveLans) {
      for (const c of lan.children) if (c.pid !== undefined && !exited(c)) trySignal(c.pid, 'SIGKILL');
      for (const ns of [...lan.namespaces].reverse()) {
        spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: IP_TIMEOUT_MS });
      }
    }
  });
}

export async function createLan(n: number, opts: { prefix?: string } = {}): Promise<VirtualLan> {
  if (!netnsAvailable) throw new Error(`virtual LAN unavailable: ${netnsSkipReason}`);
  if (!Number.isInteger(n) || n < 0 || n > 250) throw new RangeError(`createLan: bad host count ${n}`);
  const index = lanCounter++;
  const prefix =
    (opts.prefix ?? 'tf')
      .toLowerCase()
      .replace(/[^a-z0-9]/g, '')
      .slice(0, 4) || 'tf';
  // prefix(≤4) + pid tag(2) + lan index(base 36) — unique per LAN in this process and
  // (almost surely) across the parallel test workers sharing the isolated namespace.
  const tag = `${prefix}${pidTag}${index.toString(36)}`;
  const k = 10 + (((process.pid % 24) * 10 + index) % 240);
  const lanNs = `${tag}-lan`;
  const subnet = `10.${k}.0.0/24`;

  const children = new Set<ChildProcess>();
  const namespaces: string[] = [];
  const record = { children, namespaces };
  const hosts: LanHost[] = [];
  let nextHost = 1;
  let destroying: Promise<void> | undefined;
  let joining: Promise<unknown> = Promise.resolve();
  liveLans.add(record);
  installExitHook();

  const assertAlive = (what: string): void => {
    if (destroying) throw new Error(`virtual LAN ${tag}: ${what} after destroy()`);
  };
  const ownHost = (host: LanHost): LanHost => {
    if (!hosts.includes(host)) throw new Error(`virtual LAN ${tag}: ${host.name} is not one of its hosts`);
    return host;
  };

  async function addNamespace(ns: string): Promise<void> {
    namespaces.push(ns); // recorded first so a failure midway is still cleaned up
    await ip(['netns', 'add', ns]);
  }

  async function joinHost(): Promise<LanHost> {
    const i = nextHost++;
    if (i > 254) throw new RangeError(`virtual LAN ${tag}: no addresses left`);
    const host: LanHost = {
      name: `h${i}`,
      ns: `${tag}-h${i}`,
      address: `10.${k}.0.${i}`,
      iface: `${tag}e${i}`,
      bridgePort: `${tag}p${i}`,
    };
    if (host.iface.length > IFNAMSIZ_MAX || host.bridgePort.length > IFNAMSIZ_MAX) {
      throw new Error(`interface name too long: ${host.iface}/${host.bridgePort}`);
    }
    await addNamespace(host.ns);
    await ip(['link', 'add', host.iface, 'netns', host.ns, 'type', 'veth', 'peer', 'name', host.bridgePort, 'netns', lanNs]);
    await ip(['-n', lanNs, 'link', 'set', host.bridgePort, 'master', 'br0']);
    await ip(['-n', lanNs, 'link', 'set', host.bridgePort, 'up']);
    await ip(['-n', host.ns, 'link', 'set', 'lo', 'up']);
    await ip(['-n', host.ns, 'addr', 'add', `${host.address}/24`, 'dev', host.iface]);
    await ip(['-n', host.ns, 'link', 'set', host.iface, 'up']);
    await ip(['-n', host.ns, 'route', 'add', 'default', 'dev', host.iface]);
    await waitCarrier(host, true);
    hosts.push(host);
    return host;
  }

  async function waitCarrier(host: LanHost, up: boolean): Promise<void> {
    await until(`${host.name} carrier ${up ? 'up' : 'down'}`, 5_000, async () => {
      const out = await ip(['-n', host.ns, '-o', 'link', 'show', 'dev', host.iface]);
      return /[<,]LOWER_UP[,>]/.test(out) === up;
    });
  }

  async function killAll(): Promise<void> {
    const live = [...children].filter((c) => c.pid !== undefined && !exited(c));
    for (const c of live) {
      trySignal(c.pid as number, 'SIGTERM');
      trySignal(c.pid as number, 'SIGCONT'); // a SIGSTOPped process only acts on SIGTERM once continued
    }
    await Promise.all(live.map((c) => waitExit(c, TERM_GRACE_MS)));
    const stubborn = live.filter((c) => !exited(c));
    for (const c of stubborn) trySignal(c.pid as number, 'SIGKILL');
    await Promise.all(stubborn.map((c) => waitExit(c, KILL_WAIT_MS)));

    // Anything else still inside our namespaces (grandchildren, daemons that
    // double-forked): SIGKILL by pid, bounded wait until none is left.
    const pidsIn = async (ns: string): Promise<number[]> => {
      try {
        return (await ip(['netns', 'pids', ns]))
          .split(/\s+/)
          .filter((s) => /^\d+$/.test(s))
          .map(Number)
          .filter((pid) => pid !== process.pid);
      } catch {
        return [];
      }
    };
    const existing = namespaces.filter((ns) => ns !== lanNs);
    const leftover = async (): Promise<number[]> => (await Promise.all(existing.map(pidsIn))).flat();
    let pids = await leftover();
    if (pids.length > 0) {
      for (const pid of pids) trySignal(pid, 'SIGKILL');
      await until('processes in the LAN namespaces to die', KILL_WAIT_MS, async () => {
        pids = await leftover();
        for (const pid of pids) trySignal(pid, 'SIGKILL');
        return pids.length === 0;
      }).catch(() => undefined);
    }
  }

  async function doDestroy(): Promise<void> {
    await joining.catch(() => undefined);
    const errors: unknown[] = [];
    try {
      await killAll();
    } catch (e) {
      errors.push(e);
    }
    // Hosts first (their veths vanish with them), the bridge namespace last.
    const order = [...namespaces.filter((ns) => ns !== lanNs), ...namespaces.filter((ns) => ns === lanNs)];
    for (const ns of order) {
      try {
        await ip(['netns', 'del', ns]);
      } catch (e) {
        if (!/No such file|Cannot remove namespace file|does not exist/i.test(String(e))) errors.push(e);
      }
    }
    const listed = await ip(['netns', 'list']).catch(() => '');
    const still = order.filter((ns) => new RegExp(`^${ns}(\\s|$)`, 'm').test(listed));
    if (still.length > 0) errors.push(new Error(`namespaces still present: ${still.join(', ')}`));
    liveLans.delete(record);
    if (errors.length > 0) throw new AggregateError(errors, `virtual LAN ${tag}: destroy() failed`);
  }

  const lan: VirtualLan = {
    ns: lanNs,
    subnet,
    hosts,
    namespaces: () => [...namespaces],
    addHost(): Promise<LanHost> {
      assertAlive('addHost()');
      const p = joining.then(joinHost);
      joining = p.catch(() => undefined);
      return p;
    },
    async cut(host: LanHost): Promise<void> {
      assertAlive('cut()');
      ownHost(host);
      await ip(['-n', lanNs, 'link', 'set', host.bridgePort, 'down']);
      await waitCarrier(host, false);
    },
    async heal(host: LanHost): Promise<void> {
      assertAlive('heal()');
      ownHost(host);
      await ip(['-n', lanNs, 'link', 'set', host.bridgePort, 'up']);
      await waitCarrier(host, true);
    },
    exec(host: LanHost, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
      assertAlive('exec()');
      ownHost(host);
      // ip netns exec → unshare --uts → sh → cmd: each step execs in place, so
      // child.pid is the pid of `cmd` itself.
      const child = spawn(
        'ip',
        [
          'netns',
          'exec',
          host.ns,
          'unshare',
          '--uts',
          '--',
          'sh',
          '-c',
          'printf %s "$1" > /proc/sys/kernel/hostname && shift && exec "$@"',
          'sh',
          host.name,
          cmd,
          ...args,
        ],
        { stdio: 'pipe', ...opts },
      );
      children.add(child);
      child.once('exit', () => children.delete(child));
      child.once('error', () => children.delete(child));
      track(child);
      return child;
    },
    destroy(): Promise<void> {
      destroying ??= doDestroy();
      return destroying;
    },
  };

  try {
    await addNamespace(lanNs);
    await ip(['-n', lanNs, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'mcast_snooping', '0']);
    await ip(['-n', lanNs, 'link', 'set', 'br0', 'up']);
    for (let i = 0; i < n; i++) await lan.addHost();
  } catch (e) {
    await lan.destroy().catch(() => undefined);
    throw e;
  }
  return lan;
}
