/**
 * EventHub (src/service/event-hub.ts): subscribers of one job share one store read per poke, resume
 * from any sequence number without repeats, and end when the hub closes.
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { EventHub } from '../../../src/service/event-hub.js';
import { SqliteJobStore, type JobEvent, type JobStore } from '../../../src/store/index.js';

const CODE = 'export default (x) => x;\n';
const HASH = createHash('sha256').update(CODE).digest('hex');

async function jobIn(store: JobStore): Promise<string> {
  await store.putBundles([{ hash: HASH, code: CODE }]);
  const ticket = await store.createJob({ owner: 'o', name: '', program: [{ name: 'id', hash: HASH }], options: {} });
  await store.commitSubmit(ticket); // event 1: state queued
  return ticket;
}

/** Counts readEvents calls. */
function counted(store: JobStore): { store: JobStore; reads: () => number } {
  let reads = 0;
  const proxy = new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (prop === 'readEvents') return (...args: unknown[]) => (reads++, (v as (...a: unknown[]) => unknown).apply(target, args));
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { store: proxy, reads: () => reads };
}

async function take(it: AsyncGenerator<JobEvent>, n: number): Promise<number[]> {
  const seqs: number[] = [];
  while (seqs.length < n) {
    const r = await it.next();
    if (r.done === true) break;
    seqs.push(r.value.seq);
  }
  return seqs;
}

describe('EventHub', () => {
  let store: SqliteJobStore;
  afterEach(async () => {
    await store.close();
  });

  it('serves many subscribers with one store read per poke, each seeing every event once and in order', async () => {
    store = await SqliteJobStore.open(':memory:');
    const ticket = await jobIn(store);
    const c = counted(store);
    const hub = new EventHub(c.store, ticket);
    const abort = new AbortController();
    const subs = Array.from({ length: 20 }, () => hub.subscribe(1, abort.signal));
    const firsts = subs.map((s) => s.next()); // every subscriber waits for events after seq 1
    await new Promise((r) => setImmediate(r));
    const before = c.reads();
    for (let round = 0; round < 5; round++) {
      await store.appendEvents(ticket, [
        { type: 'progress', data: { round } },
        { type: 'progress', data: { round, again: true } },
      ]);
      hub.poke();
    }
    const results = await Promise.all(subs.map(async (s, i) => [(await firsts[i]!).value!.seq, ...(await take(s, 9))]));
    for (const seqs of results) expect(seqs).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(c.reads() - before).toBeLessThanOrEqual(6);
    abort.abort();
    for (const s of subs) await s.return(undefined);
    expect(hub.subscribers).toBe(0);
  });

  it('replays from an old sequence number past the tail, then follows; a closed hub ends its subscriptions', async () => {
    store = await SqliteJobStore.open(':memory:');
    const ticket = await jobIn(store);
    await store.appendEvents(
      ticket,
      Array.from({ length: 2500 }, (_, i) => ({ type: 'progress', data: i })),
    );
    const hub = new EventHub(store, ticket);
    const abort = new AbortController();
    const sub = hub.subscribe(0, abort.signal);
    const seqs = await take(sub, 2501);
    expect(seqs).toEqual(Array.from({ length: 2501 }, (_, i) => i + 1));
    const next = sub.next();
    await store.appendEvents(ticket, [{ type: 'progress', data: 'live' }]);
    hub.poke();
    expect((await next).value?.seq).toBe(2502);
    const after = sub.next();
    hub.close();
    expect((await after).done).toBe(true);
  });
});
