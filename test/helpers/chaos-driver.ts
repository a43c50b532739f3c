/**
 * The chaos driver of the soak (test/system/chaos.test.ts): from the test process, at random
 * intervals, it SIGKILLs a daemon (and restarts one on that host later, same cache folder, so same
 * id), SIGSTOPs a daemon (SIGCONT later), cuts a host's link (heals it later), and starts daemons on
 * hosts that join the LAN. All choices come from a seeded Rng.
 *
 * Invariant: at least `minHealthy` daemons are always healthy (running, not stopped, link up), so
 * that no run can legitimately fail for lack of workers. Every loop is bounded in count and time;
 * `stop()` ends the injection loop, then `recover()` undoes every fault still active (heal, SIGCONT,
 * finish pending restarts). The bench's dispose() first runs continueAll() (registered by the
 * constructor), then kills everything regardless.
 */
import { exited, signal, waitExit, type Bench, type Daemon, type LanHost, type Rng } from './lan-bench.js';

export type FaultKind = 'kill' | 'restart' | 'stop' | 'cont' | 'cut' | 'heal' | 'join';

/** One worker host of the soak and the daemon on it. */
export interface Slot {
  readonly host: LanHost;
  readonly cacheDir: string;
  daemon: Daemon | undefined;
  /** What is being done to its daemon: none, killed (restart pending), stopped (SIGCONT pending), starting. */
  daemonState: 'up' | 'killed' | 'stopped' | 'starting';
  /** Its link is cut (heal pending). */
  cut: boolean;
  /** Ids this host's daemons had (a restart keeps the id). */
  readonly ids: string[];
}

export interface FaultRecord {
  readonly kind: FaultKind;
  readonly host: string;
  readonly t: number;
  readonly detail?: string;
}

export interface ChaosOptions {
  /** Healthy daemons that must remain after any fault. */
  readonly minHealthy: number;
  /** Hosts that may join during the soak. */
  readonly maxJoins: number;
  /** Pause between two injections, ms. */
  readonly gapMs: readonly [number, number];
  /** How long a fault lasts before it is undone, ms. */
  readonly faultMs: readonly [number, number];
  /** Upper bound on injections (the loop is also bounded by stop()). */
  readonly maxFaults: number;
}

export class ChaosDriver {
  readonly slots: Slot[] = [];
  readonly faults: FaultRecord[] = [];
  readonly errors: string[] = [];
  readonly #bench: Bench;
  readonly #rng: Rng;
  readonly #o: ChaosOptions;
  readonly #t0 = Date.now();
  #stopping = false;
  #wakeStop: (() => void) | undefined;
  readonly #pending = new Set<Promise<void>>();
  /** Undo actions of active faults, run early by recover(). */
  readonly #undo = new Map<symbol, { timer: NodeJS.Timeout; run: () => Promise<void> }>();
  #loop: Promise<void> | undefined;
  #joins = 0;

  constructor(bench: Bench, rng: Rng, options: ChaosOptions) {
    this.#bench = bench;
    this.#rng = rng;
    this.#o = options;
    bench.onDispose(() => this.continueAll());
  }

  /** Adds a worker host whose daemon is already running. */
  adopt(host: LanHost, daemon: Daemon): Slot {
    const slot: Slot = { host, cacheDir: daemon.cacheDir, daemon, daemonState: 'up', cut: false, ids: [daemon.id] };
    this.slots.push(slot);
    return slot;
  }

  healthy(): Slot[] {
    return this.slots.filter((s) => s.daemonState === 'up' && !s.cut && s.daemon !== undefined && !exited(s.daemon.child));
  }

  /** Every daemon id that ran during the soak. */
  allIds(): string[] {
    return [...new Set(this.slots.flatMap((s) => s.ids))];
  }

  counts(): Record<FaultKind, number> {
    const c: Record<FaultKind, number> = { kill: 0, restart: 0, stop: 0, cont: 0, cut: 0, heal: 0, join: 0 };
    for (const f of this.faults) c[f.kind]++;
    return c;
  }

  #record(kind: FaultKind, host: LanHost, detail?: string): void {
    this.faults.push({ kind, host: host.name, t: Date.now() - this.#t0, ...(detail === undefined ? {} : { detail }) });
  }

  #track(p: Promise<void>): void {
    const q = p.catch((err: unknown) => {
      this.errors.push(String((err as Error)?.message ?? err).split('\n')[0]!);
    });
    this.#pending.add(q);
    void q.finally(() => this.#pending.delete(q));
  }

  /** Runs `undo` after `ms`, or at once when recover() is called first. */
  #later(ms: number, undo: () => Promise<void>): void {
    const key = Symbol('undo');
    const run = async (): Promise<void> => {
      const u = this.#undo.get(key);
      if (u === undefined) return;
      clearTimeout(u.timer);
      this.#undo.delete(key);
      await undo();
    };
    const timer = setTimeout(() => this.#track(run()), ms);
    this.#undo.set(key, { timer, run });
  }

  /** A pause that stop() cuts short. */
  #pause(ms: number): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#wakeStop = undefined;
        resolve();
      }, ms);
      this.#wakeStop = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  start(): void {
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    for (let i = 0; i < this.#o.maxFaults && !this.#stopping; i++) {
      await this.#pause(this.#rng.int(this.#o.gapMs[0], this.#o.gapMs[1]));
      if (this.#stopping) break;
      try {
        await this.#injectOne();
      } catch (err) {
        this.errors.push(`inject: ${String((err as Error)?.message ?? err).split('\n')[0]}`);
      }
    }
  }

  async #injectOne(): Promise<void> {
    const rng = this.#rng;
    const healthy = this.healthy();
    const canHurt = healthy.length > this.#o.minHealthy;
    const kind = rng.weighted<'kill' | 'stop' | 'cut' | 'join'>([
      [canHurt ? 3 : 0, 'kill'],
      [canHurt ? 3 : 0, 'stop'],
      [3, 'cut'],
      [this.#joins < this.#o.maxJoins ? (canHurt ? 0.6 : 3) : 0, 'join'],
    ]);
    const duration = rng.int(this.#o.faultMs[0], this.#o.faultMs[1]);
    switch (kind) {
      case 'kill': {
        const s = rng.pick(healthy);
        const d = s.daemon!;
        s.daemonState = 'killed';
        signal(d.child, 'SIGKILL');
        this.#record('kill', s.host, d.id);
        await waitExit(d.child, 5000);
        this.#later(duration, () => this.#restart(s));
        return;
      }
      case 'stop': {
        const s = rng.pick(healthy);
        const d = s.daemon!;
        s.daemonState = 'stopped';
        signal(d.child, 'SIGSTOP');
        this.#record('stop', s.host, d.id);
        this.#later(duration, async () => {
          signal(d.child, 'SIGCONT');
          s.daemonState = 'up';
          this.#record('cont', s.host, d.id);
        });
        return;
      }
      case 'cut': {
        // Any host not cut yet whose loss leaves enough healthy daemons (a host whose daemon is
        // stopped or dead may be cut too).
        const candidates = this.slots.filter((s) => !s.cut && (canHurt || !healthy.includes(s)));
        if (candidates.length === 0) return;
        const s = rng.pick(candidates);
        s.cut = true;
        this.#record('cut', s.host, s.daemonState);
        await this.#bench.lan.cut(s.host);
        this.#later(duration, async () => {
          await this.#bench.lan.heal(s.host);
          s.cut = false;
          this.#record('heal', s.host);
        });
        return;
      }
      case 'join': {
        this.#joins++;
        const host = await this.#bench.lan.addHost();
        this.#record('join', host);
        const cacheDir = this.#bench.tempDir();
        const slot: Slot = { host, cacheDir, daemon: undefined, daemonState: 'starting', cut: false, ids: [] };
        this.slots.push(slot);
        this.#track(
          (async () => {
            const d = await this.#bench.daemon(host, { cacheDir });
            slot.daemon = d;
            slot.ids.push(d.id);
            slot.daemonState = 'up';
          })(),
        );
        return;
      }
    }
  }

  async #restart(s: Slot): Promise<void> {
    s.daemonState = 'starting';
    const d = await this.#bench.daemon(s.host, { cacheDir: s.cacheDir });
    s.daemon = d;
    if (!s.ids.includes(d.id)) {
      s.ids.push(d.id);
      this.errors.push(`restart on ${s.host.name} got a new id ${d.id} (had ${s.ids[0]})`);
    }
    s.daemonState = 'up';
    this.#record('restart', s.host, d.id);
  }

  /** Ends the injection loop (no new fault); active faults stay until recover(). */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wakeStop?.();
    await this.#loop;
  }

  /** Undoes every active fault now (heal, SIGCONT, restart) and waits for pending work, bounded. */
  async recover(timeoutMs = 30_000): Promise<void> {
    await this.stop();
    for (const [, u] of [...this.#undo]) this.#track(u.run());
    const all = Promise.all([...this.#pending]);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
    if (this.#pending.size > 0) this.errors.push(`${this.#pending.size} recovery actions still pending after ${timeoutMs} ms`);
  }

  /** Safety net when the bench is disposed: SIGCONT every daemon this driver may have stopped, drop the pending undo timers. */
  continueAll(): void {
    for (const s of this.slots) if (s.daemon !== undefined) signal(s.daemon.child, 'SIGCONT');
    for (const [, u] of this.#undo) clearTimeout(u.timer);
    this.#undo.clear();
  }
}
