/**
 * Helpers for the fault-tolerance system tests (test/system/flapping.test.ts, chaos.test.ts): a
 * bench on a virtual LAN (daemons, clients, pollers, `taskfarm ls`), line/event readers with
 * deadlines, a seeded random generator, and bounded polling. Everything a bench starts is stopped by
 * `dispose()` (SIGCONT first, so a stopped process can die), and the LAN is destroyed.
 *
 * Only for use inside `node scripts/isolated.mjs -- ...` (see virtual-lan.ts).
 */
import { Rng as BaseRng } from './fuzz.js';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLan, waitForLine, type LanHost, type VirtualLan } from './virtual-lan.js';

export const NODE = process.execPath;
export const ROOT = new URL('../../', import.meta.url).pathname;
export const CLI = join(ROOT, 'dist/client/cli.js');
export const CHAOS_CLIENT = join(ROOT, 'test/fixtures/chaos-client.mjs');
export const CHAOS_DESCRIBE = join(ROOT, 'test/fixtures/chaos-describe.mjs');

// ---------------------------------------------------------------- seeded randomness

/** The fuzz tools' seeded PRNG (mulberry32), with the choices the chaos driver needs. */
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

export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Resolves when the child exited, or after `ms`. */
export function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (exited(child)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      child.off('exit', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    child.once('exit', done);
  });
}

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
          if (pred(items[scanned]!)) return finish(undefined, items[scanned]!);
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

  tail(k = 25): string {
    return [...this.lines.slice(-k).map((l) => `  | ${l.text}`), ...this.stderr.slice(-15).map((l) => `  ! ${l.text}`)].join('\n');
  }
}

/** One JSON line printed by chaos-client.mjs. */
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

/** A chaos-client.mjs process: its JSON events. */
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

export function statsOf(ev: Ev): StatsJson {
  return ev['stats'] as StatsJson;
}

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
  readonly address: string;
}

/** `taskfarm ls --json` row. */
export interface LsRow {
  id: string;
  host: string;
  addresses: string[];
  port: number;
  threads: number;
  state: string;
}

/** Everything one test starts: a LAN, processes on it, temp folders. dispose() removes it all. */
export class Bench {
  readonly procs: ChildProcess[] = [];
  readonly dirs: string[] = [];
  readonly outputs: Output[] = [];
  readonly lan: VirtualLan;
  #disposed = false;

  private constructor(lan: VirtualLan) {
    this.lan = lan;
  }

  static async create(hosts: number, prefix = 'cha'): Promise<Bench> {
    return new Bench(await createLan(hosts, { prefix }));
  }

  host(i: number): LanHost {
    const h = this.lan.hosts[i - 1];
    if (h === undefined) throw new RangeError(`no host ${i}`);
    return h;
  }

  tempDir(): string {
    const d = mkdtempSync(join(tmpdir(), 'taskfarm-chaos-'));
    this.dirs.push(d);
    return d;
  }

  exec(host: LanHost, args: string[], cmd = NODE): ChildProcess {
    const child = this.lan.exec(host, cmd, args, { cwd: ROOT });
    child.stdin?.on('error', () => {});
    this.procs.push(child);
    return child;
  }

  /** Starts `taskfarm worker` (1 thread unless told) on `host`, advertising over mDNS; resolves at READY. */
  async daemon(host: LanHost, opts: { cacheDir?: string; threads?: number; logLevel?: string; readyMs?: number; extraArgs?: string[] } = {}): Promise<Daemon> {
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
      ...(opts.extraArgs ?? []),
    ];
    const spawnedAt = Date.now();
    const child = this.exec(host, args);
    const out = new Output(`daemon@${host.name}`, child);
    this.outputs.push(out);
    const m = await waitForLine(child, /^READY port=(\d+) id=(\S+)$/, opts.readyMs ?? 20_000);
    const port = Number(m[1]);
    return { host, child, out, port, id: m[2]!, cacheDir, spawnedAt, readyAt: Date.now(), address: `${host.address}:${port}` };
  }

  client(host: LanHost, config: Record<string, unknown>, name = `client@${host.name}`): Client {
    const c = new Client(name, this.exec(host, [CHAOS_CLIENT, JSON.stringify(config)]));
    this.outputs.push(c);
    return c;
  }

  /** A Describe poller (chaos-describe.mjs) on `host` watching `target`. */
  describePoller(host: LanHost, target: string, everyMs = 100, maxMs = 120_000): Output {
    const o = new Output(`describe@${host.name}→${target}`, this.exec(host, [CHAOS_DESCRIBE, JSON.stringify({ target, everyMs, maxMs })]));
    this.outputs.push(o);
    return o;
  }

  /** `taskfarm ls --json` on `host`, to completion. */
  async ls(host: LanHost, timeoutMs = 800): Promise<LsRow[]> {
    const out = new Output(`ls@${host.name}`, this.exec(host, [CLI, 'ls', '--json', '--timeout', String(timeoutMs)]));
    this.outputs.push(out);
    const closed = new Promise<void>((resolve) => out.child.once('close', () => resolve()));
    await waitExit(out.child, timeoutMs + 15_000);
    if (!exited(out.child)) throw new Error(`taskfarm ls did not exit\n${out.tail()}`);
    await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]); // stdout fully read
    if (out.child.exitCode !== 0) throw new Error(`taskfarm ls exited ${out.child.exitCode}\n${out.tail()}`);
    return out.lines.filter((l) => l.text.trim() !== '').map((l) => JSON.parse(l.text) as LsRow);
  }

  /** SIGCONT + SIGKILL every process this bench started (by pid), destroys the LAN, removes the folders. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
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
 * The daemon's TLS certificate (`<cacheDir>/tls/cert.pem`): its DER size, and whether its base64 is
 * a multiple of 64 characters long. Such a certificate cannot be used by clients: the PEM that
 * fetchServerCertificate() rebuilds from the DER then has a blank line before its END line, which
 * OpenSSL refuses ("asn1 encoding routines::wrong tag"; product bug, see chaos.test.ts).
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

/** Asserts-free summary of a finished run, for messages. */
export function runSummary(ev: Ev): string {
  const { stats: _s, execs: _x, t: _t, ...rest } = ev as Record<string, unknown>;
  return JSON.stringify(rest);
}
