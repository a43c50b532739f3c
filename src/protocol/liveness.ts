/**
 * Liveness of one side of a lease, the same on both ends: send a heartbeat when nothing else was
 * written for `heartbeatMs` (any message is a sign of life, so a busy stream sends none), and declare
 * the peer silent when nothing was heard from it for `timeoutMs`. The worker uses it for its lease
 * (expiry) and stream (heartbeats); the client for every link. Timers are unref'd and global
 * (`setInterval`), so tests drive it with fake timers.
 */

/** Options of a {@link Liveness}. */
export interface LivenessOptions {
  /** Send a heartbeat when nothing was written for this long, in ms; 0: never send. */
  readonly heartbeatMs: number;
  /** The peer is silent after this long without a message from it, in ms; 0: never. */
  readonly timeoutMs: number;
  /** How often the clock is looked at, in ms. @default a quarter of the shorter of the two, at least 10 */
  readonly checkMs?: number;
  /** Writes a heartbeat (the caller's message). */
  readonly sendHeartbeat: () => void;
  /** Called once when the peer has been silent for `timeoutMs`; the liveness stops then. */
  readonly onSilent: (silentMs: number) => void;
}

/** See the module comment. */
export class Liveness {
  readonly #o: LivenessOptions;
  readonly #timer: NodeJS.Timeout;
  #lastHeard = Date.now();
  #lastWritten = Date.now();
  #lastCheck = Date.now();
  readonly #checkMs: number;
  #stopped = false;

  constructor(options: LivenessOptions) {
    this.#o = options;
    const periods = [options.heartbeatMs, options.timeoutMs].filter((x) => x > 0);
    const checkMs = options.checkMs ?? Math.max(10, Math.floor(Math.min(...periods, 60_000) / 4));
    this.#checkMs = checkMs;
    this.#timer = setInterval(() => this.#check(), checkMs);
    this.#timer.unref();
  }

  /** Something arrived from the peer. */
  heard(): void {
    this.#lastHeard = Date.now();
  }

  /** Something was written to the peer (no heartbeat is needed for a while). */
  wrote(): void {
    this.#lastWritten = Date.now();
  }

  /** When the peer was last heard from (Date.now()). */
  get lastHeard(): number {
    return this.#lastHeard;
  }

  /** Stops the clock. Idempotent. */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
  }

  #check(): void {
    if (this.#stopped) return;
    const now = Date.now();
    // A check that comes late means this process's own event loop was stalled (GC, a long
    // synchronous stretch, CPU starvation): what the peer sent meanwhile may still be unread in the
    // socket. The stall does not count as the peer's silence.
    const late = now - this.#lastCheck - this.#checkMs;
    this.#lastCheck = now;
    if (late > this.#checkMs) this.#lastHeard = Math.min(now, this.#lastHeard + late);
    const silent = now - this.#lastHeard;
    if (this.#o.timeoutMs > 0 && silent > this.#o.timeoutMs) {
      this.stop();
      this.#o.onSilent(silent);
      return;
    }
    if (this.#o.heartbeatMs > 0 && now - this.#lastWritten >= this.#o.heartbeatMs * 0.9) {
      this.#lastWritten = now;
      this.#o.sendHeartbeat();
    }
  }
}
