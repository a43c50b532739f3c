/**
 * The bench of the system tests on a virtual LAN (test/system/lan.test.ts, flapping.test.ts,
 * chaos.test.ts): real `taskfarm worker` daemons, TaskFarm clients (test/fixtures/lan-client.mjs),
 * Describe pollers, fake adverts, mDNS garbage and `taskfarm ls`, each in its own process on a host
 * of a virtual LAN (test/helpers/virtual-lan.ts); readers of their output lines and events with
 * deadlines; a seeded random generator; bounded polling. Everything a bench starts is stopped by
 * `dispose()` (SIGCONT first, so a stopped process can die), and the LAN is destroyed.
 *
 * Only for use inside `node scripts/isolated.mjs -- ...`: every process runs through the virtual
 * LAN's exec(), so every multicast stays in its namespaces.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect } from 'vitest';
import { Rng as BaseRng } from './fuzz.js';
import { createLan, exited, waitExit, waitForLine, type LanHost, type VirtualLan } from './virtual-lan.js';

export { exited, ip, netnsAvailable, netnsSkipReason, waitExit, type LanHost } from './virtual-lan.js';

const NODE = process.execPath;
const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'dist/client/cli.js');
const CLIENT = join(ROOT, 'test/fixtures/lan-client.mjs');
const DESCRIBE = join(ROOT, 'test/fixtures/chaos-describe.mjs');
const FAKE_ADVERT = join(ROOT, 'test/fixtures/lan-fake-advert.mjs');
const GARBAGE = join(ROOT, 'test/fixtures/lan-mdns-garbage.mjs');

// ---------------------------------------------------------------- seeded randomness

/** The fuzz tools' seeded PRNG (mulberry32), with the choices the fault tests need. */
export class Rng extends BaseRng {
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** Weighted choice: [[weight, value], ...]. */
  weighted<T>(choices: readonly (readonly [number, T])[]): T {
    const total = choices.reduce((s, [w]) => s + w, 0);
    let x = this.next() * total;
    for (const [w, v] of choices) {
      if ((x -= w) < 0) return v;
    }
    return choices[choices.length - 1]![1];
  }
  shuffle<T>(xs: readonly T[]): T[] {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }
}

/** The seed from TASKFARM_CHAOS_SEED (to replay a run), else a fresh one. */
export function chaosSeed(): number {
  const env = process.env['TASKFARM_CHAOS_SEED'];
  if (env !== undefined && env.trim() !== '') {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`TASKFARM_CHAOS_SEED must be an integer in [0, 2^32), got "${env}"`);
    return n;
  }
  return Math.floor(Math.random() * 0x100000000) >>> 0;
}

// ---------------------------------------------------------------- processes and their output

/** Sends `sig` to the child by pid; false when it is gone (or never started). */
export function signal(child: ChildProcess, sig: NodeJS.Signals): boolean {
  if (child.pid === undefined || exited(child)) return false;
  try {
    process.kill(child.pid, sig);
    return true;
  } catch {
    return false;
  }
}

/**
 * Bounded poll of a condition we cannot subscribe to (kernel or remote state): at most `ms` and at
 * most `maxTries` checks. Resolves with the check's truthy value.
 */
export async function pollUntil<T>(
  what: string,
  ms: number,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  everyMs = 50,
  maxTries = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < maxTries; i++) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, Math.min(everyMs, Math.max(1, deadline - Date.now()))));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** One line of a child, with the time it was read. */
export interface Line {
  readonly text: string;
  readonly t: number;
}

/** Collects a child's stdout and stderr lines; lets a test wait for one by predicate, with a deadline. */
export class Output {
  readonly lines: Line[] = [];
  readonly stderr: Line[] = [];
  readonly #waiters = new Set<() => void>();
  #buf = '';
  #errBuf = '';
  readonly name: string;
  readonly child: ChildProcess;
  static readonly MAX_LINES = 50_000;

  constructor(name: string, child: ChildProcess) {
    this.name = name;
    this.child = child;
    // virtual-lan's exec() already set utf8 on stdout; another listener gets the same chunks.
    child.stdout?.on('data', (chunk: string | Buffer) => {
      this.#buf += chunk.toString();
      let nl: number;
      while ((nl = this.#buf.indexOf('\n')) >= 0) {
        const text = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        if (this.lines.length < Output.MAX_LINES) this.onLine({ text, t: Date.now() });
      }
      this.#wake();
    });
    child.stderr?.on('data', (chunk: string | Buffer) => {
      this.#errBuf += chunk.toString();
      let nl: number;
      while ((nl = this.#errBuf.indexOf('\n')) >= 0) {
        if (this.stderr.length < Output.MAX_LINES) this.stderr.push({ text: this.#errBuf.slice(0, nl), t: Date.now() });
        this.#errBuf = this.#errBuf.slice(nl + 1);
      }
      this.#wake();
    });
    child.on('exit', () => setImmediate(() => this.#wake()));
  }

  protected onLine(line: Line): void {
    this.lines.push(line);
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  /** Resolves with the first item of `list()` (from `from`) that matches; rejects at the deadline or when the child exits. */
  protected waitIn<T>(list: () => readonly T[], pred: (x: T) => boolean, timeoutMs: number, what: string, from = 0): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let scanned = from;
      const finish = (err: Error | undefined, v?: T): void => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        if (err) reject(err);
        else resolve(v as T);
      };
      const check = (): void => {
        const items = list();
        for (; scanned < items.length; scanned++) {
          const item = items[scanned]!;
          if (pred(item)) return finish(undefined, item);
        }
        if (exited(this.child) && this.#buf === '')
          finish(new Error(`${this.name}: exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}\n${this.tail()}`));
      };
      const timer = setTimeout(() => finish(new Error(`${this.name}: no ${what} within ${timeoutMs} ms\n${this.tail()}`)), timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  /** Waits for a stdout line matching `re`, scanning from index `from`. */
  waitLine(re: RegExp, timeoutMs: number, from = 0): Promise<Line> {
    return this.waitIn(
      () => this.lines,
      (l) => re.test(l.text),
      timeoutMs,
      `stdout line ${re}`,
      from,
    );
  }

  /** Waits for a stderr line (daemon logs) matching `re`, scanning from index `from`. */
  waitErr(re: RegExp, timeoutMs: number, from = 0): Promise<Line> {
    return this.waitIn(
      () => this.stderr,
      (l) => re.test(l.text),
      timeoutMs,
      `stderr line ${re}`,
      from,
    );
  }

  /** Waits for the process to exit (bounded); its exit code. */
  async exit(timeoutMs: number): Promise<number | null> {
    await waitExit(this.child, timeoutMs);
    if (!exited(this.child)) throw new Error(`${this.name}: did not exit within ${timeoutMs} ms\n${this.tail()}`);
    return this.child.exitCode;
  }

  tail(k = 25): string {
    return [...this.lines.slice(-k).map((l) => `  | ${l.text}`), ...this.stderr.slice(-15).map((l) => `  ! ${l.text}`)].join('\n');
  }
}

// ---------------------------------------------------------------- clients (lan-client.mjs)

/** One JSON line printed by lan-client.mjs. */
export interface Ev {
  readonly e: string;
  readonly t: number;
  readonly [k: string]: unknown;
}

export interface WorkerStatsJson {
  id: string;
  host: string;
  address: string;
  completed: number;
  lost?: string;
}

export interface StatsJson {
  elapsedMs: number;
  completed: number;
  requeued: number;
  workers: WorkerStatsJson[];
}

/** A lan-client.mjs process: its JSON events. */
export class Client extends Output {
  readonly events: Ev[] = [];
  readonly startedAt = Date.now();

  protected override onLine(line: Line): void {
    super.onLine(line);
    try {
      const ev = JSON.parse(line.text) as Ev;
      this.events.push(typeof ev === 'object' && ev !== null && typeof ev.e === 'string' ? ev : { e: 'raw', t: line.t, line: line.text });
    } catch {
      this.events.push({ e: 'raw', t: line.t, line: line.text });
    }
  }

  next(pred: (e: Ev) => boolean, timeoutMs: number, what: string, from = 0): Promise<Ev> {
    return this.waitIn(() => this.events, pred, timeoutMs, what, from);
  }

  /** The run's last event: `done` or `error`. */
  result(timeoutMs: number): Promise<Ev> {
    return this.next((e) => e.e === 'done' || e.e === 'error', timeoutMs, 'done/error');
  }

  /** Held mode: let the paced input source end, so the run completes. */
  end(): void {
    if (!exited(this.child)) this.child.stdin?.write('end\n');
  }

  of(kind: string): Ev[] {
    return this.events.filter((e) => e.e === kind);
  }

  recruitedIds(): string[] {
    return this.of('recruited').map((e) => e['id'] as string);
  }

  /** Outputs delivered so far (last progress event). */
  done(): number {
    return (this.of('progress').at(-1)?.['done'] as number | undefined) ?? 0;
  }

  logs(level?: string): Ev[] {
    return this.of('log').filter((e) => level === undefined || e['level'] === level);
  }

  /** Log lines as text: "level msg fields-json". */
  logText(): string[] {
    return this.logs().map((e) => `${String(e['level'])} ${String(e['msg'])} ${JSON.stringify(e['fields'])}`);
  }

  /** The farm's "could not recruit worker" log lines (one per failed recruit attempt). */
  recruitFailures(): Ev[] {
    return this.logs().filter((e) => e['msg'] === 'could not recruit worker');
  }

  /** The whole event log, one line per event (progress events thinned), for failure messages. */
  eventLog(maxLines = 400): string {
    const rows: string[] = [];
    let lastProgress = 0;
    for (const ev of this.events) {
      if (ev.e === 'progress') {
        if (ev.t - lastProgress < 1000) continue;
        lastProgress = ev.t;
      }
      const { e, t, ...rest } = ev;
      const body = e === 'done' || e === 'error' ? JSON.stringify({ ...rest, stats: undefined }) : JSON.stringify(rest);
      rows.push(`  +${t - this.startedAt}ms ${e} ${body.slice(0, 300)}`);
    }
    const shown = rows.length > maxLines ? [...rows.slice(0, 50), `  ... ${rows.length - maxLines} lines left out ...`, ...rows.slice(-(maxLines - 50))] : rows;
    return [`${this.name} event log:`, ...shown, ...this.stderr.slice(-15).map((l) => `  ! ${l.text}`)].join('\n');
  }
}

/** The farm's stats() in a `done` or `error` event. */
export function statsOf(ev: Ev): StatsJson {
  return ev['stats'] as StatsJson;
}

/** Asserts-free summary of a finished run, for messages. */
export function runSummary(ev: Ev): string {
  const { stats: _s, execs: _x, t: _t, ...rest } = ev as Record<string, unknown>;
  return JSON.stringify(rest);
}

/** Asserts a finished run: done, every output present, correct and delivered exactly once. */
export function expectCompleted(c: Client, ev: Ev): void {
  expect(ev.e, `${c.name} ended with ${runSummary(ev)}\n${c.eventLog()}`).toBe('done');
  expect({ allCorrect: ev['allCorrect'], single: ev['single'], missing: ev['missing'], doubled: ev['doubled'], wrong: ev['wrong'] }, c.eventLog()).toEqual({
    allCorrect: true,
    single: true,
    missing: 0,
    doubled: 0,
    wrong: 0,
  });
}

// ---------------------------------------------------------------- the bench

/** A `taskfarm worker` on a LAN host. */
export interface Daemon {
  readonly host: LanHost;
  readonly child: ChildProcess;
  readonly out: Output;
  readonly port: number;
  readonly id: string;
  readonly cacheDir: string;
  readonly spawnedAt: number;
  readonly readyAt: number;
  /** host:port */
  readonly address: string;
}

/** Options of {@link Bench.daemon}. */
export interface DaemonOptions {
  /** --farm (default: the daemon's default farm). */
  readonly farm?: string;
  /** --cache-dir (default: a new temp folder); the same folder on the same host keeps the id. */
  readonly cacheDir?: string;
  /** @default 1 */
  readonly threads?: number;
  /** @default 'info' */
  readonly logLevel?: string;
  /** Deadline for its READY line. @default 20_000 */
  readonly readyMs?: number;
  readonly extraArgs?: readonly string[];
  /**
   * Run it under `unshare --pid --fork --kill-child`, so it cannot see the pids of the other
   * hosts' processes, as on a separate machine (child.pid is then unshare's; killing it kills the
   * daemon).
   */
  readonly ownPidNamespace?: boolean;
}

/** `taskfarm ls --json` row. */
export interface LsRow {
  id: string;
  host: string;
  addresses: string[];
  port: number;
  threads: number;
  state: string;
  proto: number;
  farm: string;
}

/** A finished `taskfarm ls`: exit code, its non-blank stdout lines, its stderr lines. */
export interface LsResult {
  readonly code: number | null;
  readonly lines: string[];
  readonly stderr: string[];
}

/** Everything one test starts: a LAN, processes on it, temp folders. dispose() removes it all. */
export class Bench {
  readonly procs: ChildProcess[] = [];
  readonly dirs: string[] = [];
  readonly outputs: Output[] = [];
  readonly lan: VirtualLan;
  readonly #onDispose: (() => void)[] = [];
  #disposed = false;

  private constructor(lan: VirtualLan) {
    this.lan = lan;
  }

  /** A LAN of `hosts` hosts; `prefix` (≤ 4 characters) names its namespaces. */
  static async create(hosts: number, prefix: string): Promise<Bench> {
    return new Bench(await createLan(hosts, { prefix }));
  }

  /** Host `i`, counted from 1 (h1, h2, ...). */
  host(i: number): LanHost {
    const h = this.lan.hosts[i - 1];
    if (h === undefined) throw new RangeError(`no host ${i}`);
    return h;
  }

  tempDir(): string {
    const d = mkdtempSync(join(tmpdir(), 'taskfarm-lan-'));
    this.dirs.push(d);
    return d;
  }

  /** Runs `cmd args` (node by default) on `host`, in the project root. */
  exec(host: LanHost, args: readonly string[], cmd = NODE): ChildProcess {
    const child = this.lan.exec(host, cmd, [...args], { cwd: ROOT });
    child.stdin?.on('error', () => {});
    this.procs.push(child);
    return child;
  }

  #output(name: string, child: ChildProcess): Output {
    const o = new Output(name, child);
    this.outputs.push(o);
    return o;
  }

  /** Starts `taskfarm worker` on `host`, advertising over mDNS (inside the namespaces only); resolves at READY. */
  async daemon(host: LanHost, opts: DaemonOptions = {}): Promise<Daemon> {
    const cacheDir = opts.cacheDir ?? this.tempDir();
    const args = [
      CLI,
      'worker',
      '--cache-dir',
      cacheDir,
      '--threads',
      String(opts.threads ?? 1),
      '--log-level',
      opts.logLevel ?? 'info',
      '--grace-ms',
      '2000',
      ...(opts.farm === undefined ? [] : ['--farm', opts.farm]),
      ...(opts.extraArgs ?? []),
    ];
    const spawnedAt = Date.now();
    const child = opts.ownPidNamespace === true ? this.exec(host, ['--pid', '--fork', '--kill-child', NODE, ...args], 'unshare') : this.exec(host, args);
    const out = this.#output(`daemon@${host.name}`, child);
    const m = await waitForLine(child, /^READY port=(\d+) id=(\S+)$/, opts.readyMs ?? 20_000);
    const port = Number(m[1]);
    return { host, child, out, port, id: m[2]!, cacheDir, spawnedAt, readyAt: Date.now(), address: `${host.address}:${port}` };
  }

  /** A lan-client.mjs process on `host` with `config` (see the fixture for its fields). */
  client(host: LanHost, config: Record<string, unknown>, name = `client@${host.name}`): Client {
    const c = new Client(name, this.exec(host, [CLIENT, JSON.stringify(config)]));
    this.outputs.push(c);
    return c;
  }

  /** A Describe poller (chaos-describe.mjs) on `host` watching `target`. */
  describePoller(host: LanHost, target: string, everyMs = 100, maxMs = 120_000): Output {
    return this.#output(`describe@${host.name}→${target}`, this.exec(host, [DESCRIBE, JSON.stringify({ target, everyMs, maxMs })]));
  }

  /** A fake `_taskfarm._tcp` advert (lan-fake-advert.mjs) on `host`; resolves once it is published. */
  async fakeAdvert(host: LanHost, advert: Record<string, unknown>): Promise<ChildProcess> {
    const child = this.exec(host, [FAKE_ADVERT, JSON.stringify(advert)]);
    this.#output(`fake@${host.name}`, child);
    await waitForLine(child, /^PUBLISHED /, 10_000);
    return child;
  }

  /** Garbage mDNS packets (lan-mdns-garbage.mjs) from `host` every `everyMs`; resolves once the first is sent. */
  async mdnsGarbage(host: LanHost, everyMs: number): Promise<ChildProcess> {
    const child = this.exec(host, [GARBAGE, JSON.stringify({ address: host.address, everyMs })]);
    this.#output(`garbage@${host.name}`, child);
    await waitForLine(child, /^SENT 1$/, 10_000);
    return child;
  }

  /** `taskfarm ls ARGS` on `host`, to completion (it must exit within `exitMs`). */
  async ls(host: LanHost, args: readonly string[], exitMs = 15_000): Promise<LsResult> {
    const out = this.#output(`ls@${host.name}`, this.exec(host, [CLI, 'ls', ...args]));
    const closed = new Promise<void>((resolve) => out.child.once('close', () => resolve()));
    const code = await out.exit(exitMs);
    await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]); // stdout fully read
    return { code, lines: out.lines.map((l) => l.text).filter((l) => l.trim() !== ''), stderr: out.stderr.map((l) => l.text) };
  }

  /** `taskfarm ls --json --timeout T` on `host`: its rows; throws unless it exits 0. */
  async lsRows(host: LanHost, timeoutMs = 800): Promise<LsRow[]> {
    const r = await this.ls(host, ['--json', '--timeout', String(timeoutMs)], timeoutMs + 15_000);
    if (r.code !== 0) throw new Error(`taskfarm ls exited ${r.code}\n${[...r.lines, ...r.stderr].join('\n')}`);
    return r.lines.map((l) => JSON.parse(l) as LsRow);
  }

  /** Runs `fn` first thing in dispose() (e.g. a fault driver clearing its timers). */
  onDispose(fn: () => void): void {
    this.#onDispose.push(fn);
  }

  /** SIGCONT + SIGKILL every process this bench started (by pid), destroys the LAN, removes the folders. Idempotent. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const fn of this.#onDispose) fn();
    const live = this.procs.filter((c) => !exited(c) && c.pid !== undefined);
    for (const c of live) {
      signal(c, 'SIGCONT'); // a stopped process must be continued to act on anything but SIGKILL
      signal(c, 'SIGKILL');
    }
    await Promise.all(live.map((c) => waitExit(c, 3000)));
    try {
      await this.lan.destroy();
    } finally {
      for (const d of this.dirs) rmSync(d, { recursive: true, force: true });
    }
  }
}

/**
 * One bench per test: registers an afterEach (in the calling describe) that disposes the benches
 * made during the test, and returns the function that makes them (namespaces named `prefix` unless
 * told otherwise).
 */
export function benchPerTest(prefix: string, disposeTimeoutMs = 30_000): (hosts: number, prefixOverride?: string) => Promise<Bench> {
  const made: Bench[] = [];
  afterEach(async () => {
    const benches = made.splice(0);
    for (const b of benches) await b.dispose();
  }, disposeTimeoutMs);
  return async (hosts, prefixOverride) => {
    const b = await Bench.create(hosts, prefixOverride ?? prefix);
    made.push(b);
    return b;
  };
}

// ---------------------------------------------------------------- fixtures' records

/**
 * The daemon's TLS certificate (`<cacheDir>/tls/cert.pem`): its DER size, and whether its base64 is
 * a multiple of 64 characters long. Such a certificate could once not be used by clients: the PEM
 * that fetchServerCertificate() rebuilt from the DER then had a blank line before its END line,
 * which OpenSSL refuses ("asn1 encoding routines::wrong tag"; see chaos.test.ts).
 */
export function certInfo(cacheDir: string): { derBytes: number; base64Chars: number; blankLineBug: boolean } {
  const pem = readFileSync(join(cacheDir, 'tls', 'cert.pem'), 'utf8');
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const base64Chars = der.toString('base64').length;
  return { derBytes: der.length, base64Chars, blankLineBug: base64Chars % 64 === 0 };
}

/** One execution recorded by chaos-mark.ts. */
export interface ExecRecord {
  v: number;
  exec: string;
  worker: string;
  host: string;
  start: number;
  end: number;
}

/** Every execution chaos-mark.ts recorded in `dir`. */
export function readExecs(dir: string): ExecRecord[] {
  const out: ExecRecord[] = [];
  for (const f of readdirSync(dir)) {
    if (!/^exec-\d+\.log$/.test(f)) continue;
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      if (line.trim() === '') continue;
      try {
        out.push(JSON.parse(line) as ExecRecord);
      } catch {
        // a line cut by a SIGKILL mid-write
      }
    }
  }
  return out;
}
