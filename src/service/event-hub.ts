/**
 * One notifier per job for the job's event subscribers (SSE): the service pokes it when it wrote
 * events; the hub reads the new ones from the store once, keeps a short tail in memory, and wakes
 * every subscriber. Subscribers that resume from an old sequence number replay from the store in
 * pages, then follow the tail. Watching never polls the scheduler: a hundred subscribers of one job
 * cost one store read per poke.
 */
import type { JobEvent, JobStore } from '../store/index.js';

/** Events kept in memory per job. */
const TAIL = 1024;
/** Events per store read. */
const PAGE = 1000;

/** The events of one job, for its subscribers. */
export class EventHub {
  readonly #store: JobStore;
  readonly #ticket: string;
  /** Pokes so far (events may have been written since the last sync). */
  #generation = 0;
  #syncedGeneration = -1;
  #syncing: Promise<void> | undefined;
  /** The tail holds every event with seq > #base. undefined until the first sync. */
  #base: number | undefined;
  #tail: JobEvent[] = [];
  #waiters = new Set<() => void>();
  #closed = false;
  /** Subscribers now. */
  subscribers = 0;

  constructor(store: JobStore, ticket: string) {
    this.#store = store;
    this.#ticket = ticket;
  }

  /** New events may be in the store: subscribers will read them. Synchronous and cheap. */
  poke(): void {
    this.#generation++;
    this.#wake();
  }

  /** Ends every subscription (the job was removed, or the service closes). */
  close(): void {
    this.#closed = true;
    this.#wake();
  }

  get closed(): boolean {
    return this.#closed;
  }

  #wake(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w();
  }

  /** Brings the tail up to date with every poke so far (one shared store read). */
  async #sync(): Promise<void> {
    while (this.#syncedGeneration !== this.#generation) {
      if (this.#syncing !== undefined) {
        await this.#syncing;
        continue;
      }
      const generation = this.#generation;
      this.#syncing = (async () => {
        if (this.#base === undefined) {
          const job = await this.#store.getJob(this.#ticket);
          this.#base = job?.lastEventSeq ?? 0;
          return; // the tail starts after what exists now; what follows comes with the next pokes
        }
        let after = this.#tail.length > 0 ? this.#tail[this.#tail.length - 1]!.seq : this.#base;
        for (;;) {
          const events = await this.#store.readEvents(this.#ticket, { after, limit: PAGE });
          for (const e of events) this.#tail.push(e);
          if (events.length > 0) after = events[events.length - 1]!.seq;
          if (events.length < PAGE) break;
        }
        if (this.#tail.length > TAIL) {
          const drop = this.#tail.length - TAIL;
          this.#base = this.#tail[drop - 1]!.seq;
          this.#tail = this.#tail.slice(drop);
        }
      })().finally(() => {
        this.#syncing = undefined;
      });
      await this.#syncing;
      this.#syncedGeneration = generation;
    }
  }

  /** Events after `after`, at most a page: from the tail when it covers them, else from the store (replay). */
  async #read(after: number): Promise<readonly JobEvent[]> {
    await this.#sync();
    const base = this.#base ?? 0;
    if (after >= base) {
      const out: JobEvent[] = [];
      // Sequence numbers have no gaps: the first event after `after` is at a known position.
      const first = this.#tail[0];
      let i = first === undefined ? 0 : Math.max(0, after - first.seq + 1);
      if (this.#tail[i] !== undefined && this.#tail[i]!.seq <= after) i = this.#tail.findIndex((e) => e.seq > after);
      if (i < 0) return out;
      for (; i < this.#tail.length && out.length < PAGE; i++) out.push(this.#tail[i]!);
      return out;
    }
    return this.#store.readEvents(this.#ticket, { after, limit: PAGE });
  }

  /** Resolves at the next poke (or at once if one came since `generation`), on close, or when `signal` aborts. */
  #next(generation: number, signal: AbortSignal): Promise<void> {
    if (this.#generation !== generation || this.#closed || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.#waiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.#waiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** The job's events after `after`, then new ones as they are poked in, until `signal` aborts or the hub closes. */
  async *subscribe(after: number, signal: AbortSignal): AsyncGenerator<JobEvent, void, undefined> {
    this.subscribers++;
    try {
      let cursor = after;
      while (!signal.aborted && !this.#closed) {
        const generation = this.#generation;
        const events = await this.#read(cursor);
        for (const e of events) {
          if (signal.aborted) return;
          cursor = e.seq;
          yield e;
        }
        if (events.length === 0) await this.#next(generation, signal);
      }
    } finally {
      this.subscribers--;
    }
  }
}
