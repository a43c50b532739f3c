/**
 * Fault-tolerance system tests on a virtual LAN (network namespaces joined by a bridge; mDNS never
 * leaves them): a flapping link, silent lease-holders, and a worker whose stream breaks while its
 * tasks finish. Real `taskfarm worker` daemons, TaskFarm clients in their own processes
 * (test/fixtures/lan-client.mjs, started by test/helpers/lan-bench.ts), faults injected from the test process (ip link down/up, SIGSTOP).
 *
 * Only ever run inside `node scripts/isolated.mjs -- npx vitest run test/system/flapping.test.ts`.
 * Figures are printed with console.log, prefixed `[flap]`. Random choices are seeded: the seed is
 * printed; TASKFARM_CHAOS_SEED=<seed> replays the same choices (timings still vary).
 */
import { describe, expect, it } from 'vitest';
import {
  Rng,
  benchPerTest,
  chaosSeed,
  expectCompleted,
  netnsAvailable,
  netnsSkipReason,
  pollUntil,
  readExecs,
  signal,
  statsOf,
  type Client,
  type Daemon,
  type Ev,
  type Line,
} from '../helpers/lan-bench.js';

const log = (msg: string): void => console.log(`[flap] ${msg}`);

const HEARTBEAT_MS = 200;
const HEARTBEAT_TIMEOUT_MS = 1000;
const LEASE_TIMEOUT_MS = 3000;
const FAST = { heartbeatMs: HEARTBEAT_MS, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, leaseTimeoutMs: LEASE_TIMEOUT_MS, connectTimeoutMs: 1000 };

/**
 * The duration of a fault (how long a link stays down or up): the stimulus of the test, not a way
 * to wait for something to happen. Everything the tests wait *for* is an event with a deadline.
 */
function hold(ms: number): Promise<void> {
  return ms <= 0 ? Promise.resolve() : new Promise((r) => setTimeout(r, ms));
}

/** Index (in the run's stats.workers / 'first' idx) of the latest session of worker `id`. */
function lastSessionIdx(c: Client, id: string): number {
  const rec = c.of('recruited');
  for (let i = rec.length - 1; i >= 0; i--) if (rec[i]!['id'] === id) return i;
  return -1;
}

/** True while `id` has a live session in the client's run (recruited once more than lost). */
function live(c: Client, id: string): boolean {
  return c.of('recruited').filter((e) => e['id'] === id).length === c.of('lost').filter((e) => e['id'] === id).length + 1;
}

/**
 * Freezes `d` (SIGSTOP) while it loads the stages of chaos-slow-setup.ts (its setup() announces
 * itself on the daemon's stderr, then takes 1.5 s), and waits for the client to log "worker lost"
 * for it. The caller SIGCONTs it in a finally.
 */
async function freezeInSetup(d: Daemon, client: Client): Promise<{ stoppedAt: number; lostLog: Ev }> {
  await d.out.waitErr(/chaos-slow-setup: setup started/, 20_000);
  expect(signal(d.child, 'SIGSTOP')).toBe(true);
  const stoppedAt = Date.now();
  const lostLog = await client.next(
    (x) => x.e === 'log' && x['msg'] === 'worker lost' && (x['fields'] as Record<string, unknown>)['worker'] === d.id,
    10_000,
    `"worker lost" logged for ${d.id}`,
  );
  return { stoppedAt, lostLog };
}

/** The states a chaos-describe.mjs poller printed, as `state@ms` relative to `t0`. */
function describeTimeline(lines: readonly Line[], t0: number): string {
  return lines
    .map((l) => {
      try {
        const j = JSON.parse(l.text) as { state?: string; e?: string };
        return `${j.state ?? j.e ?? '?'}@${l.t - t0}`;
      } catch {
        return `?@${l.t - t0}`;
      }
    })
    .join(' ');
}

const seed = chaosSeed();
const title = netnsAvailable
  ? 'fault tolerance on a virtual LAN: flapping links, silent workers, broken streams'
  : `fault tolerance on a virtual LAN (skipped: ${netnsSkipReason})`;

describe.skipIf(!netnsAvailable)(title, () => {
  const newBench = benchPerTest('flp');

  it(
    '1. a recruited worker whose link flaps 5 times (shorter and longer than the heartbeat timeout): the run completes, every output correct and single',
    { timeout: 120_000 },
    async () => {
      const rng = new Rng(seed ^ 0x0f1a);
      log(`seed ${seed} (TASKFARM_CHAOS_SEED=${seed} replays the schedule)`);
      const b = await newBench(4);
      const daemons = await Promise.all([1, 2, 3].map((i) => b.daemon(b.host(i))));
      const victim = daemons[0]!;
      const client = b.client(b.host(4), { stage: 'spin.ts', n: 1_000_000, ms: 30, held: true, ahead: 48, options: FAST }, 'client (flapping)');
      await client.next((e) => e.e === 'first' && e['id'] === victim.id, 20_000, `first output from ${victim.id}`);

      // 5 cuts: two shorter than the heartbeat timeout, three longer; up intervals 0.3–2 s.
      const downs = rng.shuffle([rng.int(250, 700), rng.int(300, 800), rng.int(1400, 2000), rng.int(1500, 2200), rng.int(1800, 2500)]);
      const schedule = downs.map((downMs) => ({ downMs, upMs: rng.int(300, 2000) }));
      log(
        `flapping ${victim.host.name} (${victim.id}): ${schedule.map((f) => `down ${f.downMs} ms / up ${f.upMs} ms`).join(', ')}; heartbeat ${HEARTBEAT_MS}/${HEARTBEAT_TIMEOUT_MS} ms`,
      );

      const flaps: { downMs: number; upMs: number; cutAt: number; healAt: number; liveAtCut: boolean }[] = [];
      const started = Date.now();
      for (const f of schedule) {
        const liveAtCut = live(client, victim.id);
        const cutAt = Date.now();
        await b.lan.cut(victim.host);
        await hold(f.downMs - (Date.now() - cutAt));
        const healAt = Date.now();
        await b.lan.heal(victim.host);
        flaps.push({ ...f, cutAt, healAt, liveAtCut });
        await hold(f.upMs - (Date.now() - healAt));
        expect(Date.now() - started, 'the flapping schedule overran').toBeLessThan(60_000);
      }
      const lastHeal = flaps.at(-1)!.healAt;
      const doneBeforeEnd = client.done();

      // After the last heal the worker is expected back in the run (re-recruited); wait for it, bounded.
      let rejoined: Ev | undefined;
      try {
        await pollUntil('the victim to have a live session again', 15_000, () => live(client, victim.id));
        const idx = lastSessionIdx(client, victim.id);
        rejoined = await client.next((e) => e.e === 'first' && e['idx'] === idx, 10_000, `an output from ${victim.id}'s latest session`);
      } catch (err) {
        log(`the victim did not rejoin the run after the last heal: ${(err as Error).message.split('\n')[0]}`);
      }
      client.end();
      const end = await client.result(30_000);
      expectCompleted(client, end);

      const lost = client.of('lost');
      const recruitedVictim = client.of('recruited').filter((e) => e['id'] === victim.id);
      // Only the flapping worker may be lost; the others never were.
      expect(
        lost.map((e) => e['id']).filter((id) => id !== victim.id),
        client.eventLog(),
      ).toEqual([]);
      expect(lost.length, client.eventLog()).toBeGreaterThanOrEqual(1);
      const st = statsOf(end);
      expect(st.workers.reduce((s, w) => s + w.completed, 0)).toBe(end['n']);
      // Per flap: was the worker lost during (or just after) it, and when did it come back?
      const rows = flaps.map((f, k) => {
        const nextCut = flaps[k + 1]?.cutAt ?? Infinity;
        const l = lost.find((e) => e.t >= f.cutAt && e.t < nextCut);
        const r = recruitedVictim.find((e) => e.t >= f.healAt && e.t < nextCut);
        return (
          `  flap ${k + 1}: down ${f.healAt - f.cutAt} ms (${f.downMs > HEARTBEAT_TIMEOUT_MS ? 'longer' : 'shorter'} than the timeout), recruited at the cut: ${f.liveAtCut}; ` +
          (l ? `lost ${l.t - f.cutAt} ms after the cut (${String(l['reason']).slice(0, 60)}, ${String(l['requeued'])} requeued)` : 'not lost') +
          (r ? `; re-recruited ${r.t - f.healAt} ms after heal` : '')
        );
      });
      log(
        `flapping: ${victim.id} lost ${lost.length} times, re-recruited ${recruitedVictim.length - 1} times; ` +
          `${String(end['n'])} outputs, all correct and single; run ${String(end['ms'])} ms; ${doneBeforeEnd} outputs during the flapping; ` +
          `${rejoined ? `back with outputs ${rejoined.t - lastHeal} ms after the last heal` : 'NOT back after the last heal'}\n${rows.join('\n')}`,
      );
      // Every cut longer than the heartbeat timeout that hit a recruited worker lost it.
      for (const [k, f] of flaps.entries()) {
        if (!f.liveAtCut || f.healAt - f.cutAt < HEARTBEAT_TIMEOUT_MS + HEARTBEAT_MS + 300) continue;
        const nextCut = flaps[k + 1]?.cutAt ?? Infinity;
        expect(
          lost.some((e) => e.t >= f.cutAt && e.t < nextCut),
          `flap ${k + 1} (${f.healAt - f.cutAt} ms down) lost the worker\n${client.eventLog()}`,
        ).toBe(true);
      }
    },
  );

  describe('2. a silent lease-holder (a real daemon SIGSTOPped right after it was recruited)', () => {
    it('among others: declared lost within the heartbeat timeout, the others finish the run', { timeout: 60_000 }, async () => {
      const b = await newBench(4, 'sil');
      const daemons = await Promise.all([1, 2, 3].map((i) => b.daemon(b.host(i))));
      const n = 300;
      const client = b.client(b.host(4), { stage: 'spin.ts', n, ms: 10, options: FAST }, 'client (silent among others)');
      let frozen: Daemon | undefined;
      try {
        // SIGSTOP on the client's `recruited` event: the session exists, its first tasks are on the way.
        const rec = await client.next((e) => e.e === 'recruited', 20_000, 'a first recruited worker');
        frozen = daemons.find((d) => d.id === rec['id'])!;
        expect(signal(frozen.child, 'SIGSTOP')).toBe(true);
        const stoppedAt = Date.now();
        const lost = await client.next((e) => e.e === 'lost' && e['id'] === frozen!.id, 10_000, `lost ${frozen.id}`);
        const end = await client.result(30_000);
        expectCompleted(client, end);
        const st = statsOf(end);
        const f = st.workers.find((w) => w.id === frozen!.id)!;
        const others = st.workers.filter((w) => w.id !== frozen!.id);
        log(
          `silent among others: SIGSTOP ${frozen.id} ${stoppedAt - rec.t} ms after its recruited event; declared lost ${lost.t - stoppedAt} ms after ` +
            `(${String(lost['reason'])}; ${String(lost['requeued'])} tasks requeued; it had delivered ${f.completed}); ` +
            `run ${String(end['ms'])} ms, the others delivered ${others.map((w) => `${w.host}=${w.completed}`).join(' ')}`,
        );
        expect(lost.t - stoppedAt).toBeLessThan(HEARTBEAT_TIMEOUT_MS + HEARTBEAT_MS + 1000);
        expect(lost['reason']).toMatch(/heartbeat|keepalive|dropped/i);
        expect(others.reduce((s, w) => s + w.completed, 0)).toBe(n - f.completed);
        expect(end['ms'] as number).toBeLessThan(20_000);
      } finally {
        if (frozen) signal(frozen.child, 'SIGCONT');
      }
    });

    it('as the only worker, with localFallback: the run completes on local threads within a bounded time', { timeout: 60_000 }, async () => {
      const b = await newBench(2, 'sil');
      const d = await b.daemon(b.host(1));
      const workerWaitMs = 1500;
      const n = 200;
      const client = b.client(
        b.host(2),
        { stage: 'spin.ts', n, ms: 10, options: { ...FAST, localFallback: true, workerWaitMs, threads: 2 } },
        'client (silent alone)',
      );
      try {
        const rec = await client.next((e) => e.e === 'recruited' && e['id'] === d.id, 20_000, 'the daemon recruited');
        expect(signal(d.child, 'SIGSTOP')).toBe(true);
        const stoppedAt = Date.now();
        const lost = await client.next((e) => e.e === 'lost' && e['id'] === d.id, 10_000, `lost ${d.id}`);
        const local = await client.next((e) => e.e === 'recruited' && e['local'] === true, 10_000, 'local threads');
        const end = await client.result(30_000);
        expectCompleted(client, end);
        const st = statsOf(end);
        const dw = st.workers.find((w) => w.id === d.id)!;
        const lw = st.workers.find((w) => w.id === 'local')!;
        log(
          `silent alone: SIGSTOP ${stoppedAt - rec.t} ms after recruited; declared lost ${lost.t - stoppedAt} ms after (${String(lost['reason'])}); ` +
            `local threads ${local.t - lost.t} ms after the loss (workerWaitMs ${workerWaitMs}); run done ${end.t - stoppedAt} ms after the SIGSTOP ` +
            `(daemon delivered ${dw.completed}, local ${lw.completed})`,
        );
        expect(lost.t - stoppedAt).toBeLessThan(HEARTBEAT_TIMEOUT_MS + HEARTBEAT_MS + 1000);
        expect(local.t - lost.t).toBeLessThan(workerWaitMs + 1500);
        expect(lw.completed).toBe(n - dw.completed);
        expect(end.t - stoppedAt).toBeLessThan(HEARTBEAT_TIMEOUT_MS + workerWaitMs + 10_000);
      } finally {
        signal(d.child, 'SIGCONT');
      }
    });

    it(
      'frozen while loading the stages (after the lease was granted, before Ready), among others, streamed inputs: the other finishes the run',
      { timeout: 60_000 },
      async () => {
        const b = await newBench(3, 'sil');
        const [d, e] = await Promise.all([b.daemon(b.host(1)), b.daemon(b.host(2))]);
        // Held mode: an async source, so the workload's size is unknown (no shares kept for workers
        // being recruited).
        const client = b.client(
          b.host(3),
          { stage: 'chaos-slow-setup.ts', n: 1_000_000, ms: 15, held: true, options: { ...FAST, setupTimeoutMs: 60_000 } },
          'client (frozen in setup)',
        );
        try {
          const { stoppedAt, lostLog } = await freezeInSetup(d, client);
          await client.next((x) => x.e === 'progress' && (x['done'] as number) >= 150, 20_000, '150 outputs');
          client.end();
          const end = await client.result(30_000);
          expectCompleted(client, end);
          // Protocol 3: a worker joins the pool (recruited) before the job's program loads on it; the
          // frozen one joined, computed nothing, and was lost.
          expect(new Set(client.recruitedIds())).toEqual(new Set([d.id, e.id]));
          log(
            `frozen in setup (streamed inputs): the client logged "worker lost" for it ${lostLog.t - stoppedAt} ms after the SIGSTOP ` +
              `(${String((lostLog['fields'] as Record<string, unknown>)['reason'])}); ` +
              `run done ${end.t - stoppedAt} ms after the SIGSTOP, all ${String(end['n'])} outputs from ${e.id}`,
          );
          expect(lostLog.t - stoppedAt).toBeLessThan(HEARTBEAT_TIMEOUT_MS + HEARTBEAT_MS + 1000);
        } finally {
          signal(d.child, 'SIGCONT');
        }
      },
    );

    // Regression: a worker that went silent while loading the stages was declared lost by its
    // heartbeats but the recruit attempt waited for setupTimeoutMs (120 s), while a known-size run
    // kept a share of the work for it.
    it(
      'frozen while loading the stages, among others, array inputs: the others finish the run without waiting for setupTimeoutMs',
      { timeout: 90_000 },
      async () => {
        const b = await newBench(3, 'sil');
        const [d, e] = await Promise.all([b.daemon(b.host(1)), b.daemon(b.host(2))]);
        const n = 250;
        // Long, so that "did not wait for it" stays distinguishable from a slow run on a loaded machine
        // (6 s quiet, up to ~10.5 s seen with other test files and benchmarks on the same 2 cores).
        const setupTimeoutMs = 30_000;
        const client = b.client(
          b.host(3),
          { stage: 'chaos-slow-setup.ts', n, ms: 15, options: { ...FAST, setupTimeoutMs } },
          'client (frozen in setup, array)',
        );
        try {
          const { stoppedAt, lostLog } = await freezeInSetup(d, client);
          const end = await client.result(setupTimeoutMs + 20_000);
          // The longest stretch without a new output while nothing was in flight.
          let stall = 0;
          let stallAt: unknown;
          let since: Ev | undefined;
          for (const p of client.of('progress')) {
            if (since !== undefined && p['done'] === since['done'] && p['inFlight'] === 0) {
              if (p.t - since.t > stall) {
                stall = p.t - since.t;
                stallAt = p['done'];
              }
            } else since = p;
          }
          log(
            `frozen in setup (array inputs): "worker lost" logged ${lostLog.t - stoppedAt} ms after the SIGSTOP; run ${end.e} ${end.t - stoppedAt} ms after the SIGSTOP ` +
              `(setupTimeoutMs ${setupTimeoutMs}); longest stall with nothing in flight ${stall} ms at ${String(stallAt)}/${n} outputs; ` +
              `${String(end['n'] ?? end['message'])}`,
          );
          expectCompleted(client, end);
          expect(new Set(client.recruitedIds())).toEqual(new Set([d.id, e.id]));
          expect(end.t - stoppedAt, "the run waited for the frozen worker's setup timeout").toBeLessThan(setupTimeoutMs / 2);
        } finally {
          signal(d.child, 'SIGCONT');
        }
      },
    );

    // Regression: the same, as the only worker: the run once failed with StageSetupError instead of
    // recruiting it again once it answered.
    it(
      'the only worker, frozen while loading the stages and continued after it was declared lost, is recruited again and the run completes',
      { timeout: 60_000 },
      async () => {
        const b = await newBench(2, 'sil');
        const d = await b.daemon(b.host(1));
        const setupTimeoutMs = 8000;
        const client = b.client(
          b.host(2),
          { stage: 'chaos-slow-setup.ts', n: 100, ms: 10, options: { ...FAST, setupTimeoutMs, workerWaitMs: 30_000, localFallback: false } },
          'client (only worker frozen in setup)',
        );
        try {
          const { stoppedAt, lostLog } = await freezeInSetup(d, client);
          const errMark = d.out.stderr.length;
          expect(signal(d.child, 'SIGCONT')).toBe(true);
          const contAt = Date.now();
          // It ends the broken lease and is free again...
          const leaseEnd = await d.out.waitErr(/lease ended/, 10_000, errMark);
          const end = await client.result(setupTimeoutMs + 15_000);
          log(
            `frozen in setup, alone: "worker lost" logged ${lostLog.t - stoppedAt} ms after the SIGSTOP; SIGCONT ${contAt - stoppedAt} ms after it; ` +
              `the daemon ended the lease ${leaseEnd.t - contAt} ms after the SIGCONT (${leaseEnd.text.replace(/^.*lease ended /, '')}); ` +
              `the run then ${end.e === 'done' ? `completed ${end.t - contAt} ms after the SIGCONT` : `FAILED ${end.t - contAt} ms after the SIGCONT with ${String(end['name'])}: ${String(end['message'])}`}; ` +
              `recruited: [${client.recruitedIds().join(',')}]`,
          );
          // ...so the run recruits it again and completes.
          expectCompleted(client, end);
          // Recruited (joined the pool), lost while loading the stages, recruited again.
          expect(client.recruitedIds()).toEqual([d.id, d.id]);
          expect(end.t - contAt).toBeLessThan(setupTimeoutMs);
        } finally {
          signal(d.child, 'SIGCONT');
        }
      },
    );
  });

  describe('3. a worker whose stream breaks while its tasks finish (link cut for longer than the heartbeat timeout, then healed)', () => {
    it('same run: its results from the partition are dropped, its lease ends, and the run recruits it again', { timeout: 90_000 }, async () => {
      const b = await newBench(4, 'brk');
      const [v, o] = await Promise.all([b.daemon(b.host(1)), b.daemon(b.host(2))]);
      const dir = b.tempDir();
      const poller = b.describePoller(b.host(4), v.address);
      const client = b.client(
        b.host(3),
        { stage: 'chaos-mark.ts', n: 1_000_000, ms: 150, dir, execs: true, held: true, ahead: 16, options: FAST },
        'client (broken stream)',
      );
      for (const d of [v, o]) await client.next((e) => e.e === 'first' && e['id'] === d.id, 20_000, `first output from ${d.id}`);

      const errMark = v.out.stderr.length;
      const cutAt = Date.now();
      await b.lan.cut(v.host);
      const cutDone = Date.now();
      const lost = await client.next((e) => e.e === 'lost' && e['id'] === v.id, 10_000, `lost ${v.id}`);
      const doneAtLoss = client.done();
      await client.next((e) => e.e === 'progress' && (e['done'] as number) >= doneAtLoss + 5, 15_000, '5 more outputs from the other worker');
      await hold(cutAt + HEARTBEAT_TIMEOUT_MS + 1500 - Date.now()); // the partition lasts 2.5 s
      const healAt = Date.now();
      await b.lan.heal(v.host);
      const again = await client.next((e) => e.e === 'recruited' && e['id'] === v.id && e.t >= healAt, 20_000, `${v.id} recruited again after heal`);
      const idx = client.of('recruited').indexOf(again);
      await client.next((e) => e.e === 'first' && e['idx'] === idx, 15_000, `an output from ${v.id}'s new session`);
      client.end();
      const end = await client.result(30_000);
      expectCompleted(client, end);

      // What the worker computed while it was cut off: executions that ended after the link was down.
      const execs = readExecs(dir);
      const during = execs.filter((x) => x.worker === v.id && x.end > cutDone && x.end < healAt);
      const delivered = end['execs'] as Record<string, string>;
      const dropped = during.filter((x) => delivered[String(x.v)] !== x.exec);
      const leaseEnd = v.out.stderr.slice(errMark).find((l) => /lease ended/.test(l.text));
      log(
        `broken stream (same run): cut ${v.host.name} → lost after ${lost.t - cutAt} ms (${String(lost['reason'])}, ${String(lost['requeued'])} requeued); ` +
          `${during.length} tasks finished on it during the partition (inputs ${during.map((x) => x.v).join(',')}), ${dropped.length} of their results dropped; ` +
          `its lease ended ${leaseEnd ? `${leaseEnd.t - healAt} ms after heal (${leaseEnd.text.replace(/^.*lease ended /, '')})` : 'never (no log line)'}; ` +
          `re-recruited ${again.t - healAt} ms after heal; Describe saw: ${describeTimeline(poller.lines, cutAt)} (ms from the cut)`,
      );
      expect(during.length, 'the cut-off worker finished some tasks during the partition').toBeGreaterThan(0);
      // None of them made it into the outputs: each of those inputs got exactly one output, from another execution.
      expect(dropped.map((x) => x.v)).toEqual(during.map((x) => x.v));
      for (const x of during) {
        const other = execs.find((y) => y.exec === delivered[String(x.v)]);
        expect(other, `input ${x.v}: its output comes from a recorded execution`).toBeDefined();
      }
      expect(leaseEnd, v.out.tail()).toBeDefined();
      expect(leaseEnd!.t - healAt).toBeLessThan(LEASE_TIMEOUT_MS + 2000);
      const st = statsOf(end);
      expect(st.workers.filter((w) => w.id === v.id).map((w) => w.lost !== undefined)).toEqual([true, false]);
      // After the run released it, it is free.
      const rows = await b.lsRows(b.host(4));
      expect(rows.filter((r) => r.id === v.id).map((r) => r.state)).toEqual(['free']);
    });

    it('run over during the partition: after heal its lease is gone (Describe: free) and the next run recruits it', { timeout: 90_000 }, async () => {
      const b = await newBench(4, 'brk');
      const [v, o] = await Promise.all([b.daemon(b.host(1)), b.daemon(b.host(2))]);
      const dir = b.tempDir();
      const poller = b.describePoller(b.host(4), v.address);
      const r2 = b.client(b.host(3), { stage: 'chaos-mark.ts', n: 1_000_000, ms: 150, dir, execs: true, held: true, ahead: 16, options: FAST }, 'run 1');
      for (const d of [v, o]) await r2.next((e) => e.e === 'first' && e['id'] === d.id, 20_000, `first output from ${d.id}`);

      const errMark = v.out.stderr.length;
      const cutAt = Date.now();
      await b.lan.cut(v.host);
      const cutDone = Date.now();
      const lost = await r2.next((e) => e.e === 'lost' && e['id'] === v.id, 10_000, `lost ${v.id}`);
      r2.end(); // the run ends while the worker is cut off: the other worker finishes it
      const end2 = await r2.result(20_000);
      expectCompleted(r2, end2);
      await hold(cutAt + HEARTBEAT_TIMEOUT_MS + 1500 - Date.now()); // the partition lasts (at least) 2.5 s
      const healAt = Date.now();
      const pollerMark = poller.lines.length; // its state lines from before the heal do not count
      await b.lan.heal(v.host);
      const free = await poller.waitLine(/"state":"free"/, LEASE_TIMEOUT_MS + 5000, pollerMark);
      const freeAfterHeal = free.t - healAt;

      const execs = readExecs(dir);
      const during = execs.filter((x) => x.worker === v.id && x.end > cutDone && x.end < healAt);
      const delivered = end2['execs'] as Record<string, string>;
      const leaseEnd = v.out.stderr.slice(errMark).find((l) => /lease ended/.test(l.text));
      const rows = await b.lsRows(b.host(4));

      // The next run recruits it again.
      const r3 = b.client(b.host(3), { stage: 'spin.ts', n: 60, ms: 20, options: FAST }, 'run 2');
      const end3 = await r3.result(30_000);
      expectCompleted(r3, end3);
      log(
        `broken stream (run over): lost after ${lost.t - cutAt} ms; run 1 done ${end2.t - cutAt} ms after the cut with ${String(end2['n'])} outputs; ` +
          `${during.length} tasks finished on the cut-off worker during the partition; its lease ended ` +
          `${leaseEnd ? `${leaseEnd.t - healAt} ms after heal (${leaseEnd.text.replace(/^.*lease ended /, '')})` : 'never (no log line)'}; ` +
          `Describe showed it free ${freeAfterHeal} ms after heal (Describe saw: ${describeTimeline(poller.lines, cutAt)} ms from the cut); ls: ${rows.map((r) => `${r.host}=${r.state}`).join(' ')}; ` +
          `run 2 recruited ${r3.recruitedIds().join(',')} (per worker ${statsOf(end3)
            .workers.map((w) => `${w.host}=${w.completed}`)
            .join(' ')})`,
      );
      expect(during.length).toBeGreaterThan(0);
      for (const x of during) expect(delivered[String(x.v)], `input ${x.v}`).not.toBe(x.exec);
      expect(free.t - healAt).toBeLessThan(LEASE_TIMEOUT_MS + 2000);
      expect(rows.filter((r) => r.id === v.id).map((r) => r.state)).toEqual(['free']);
      expect(r3.recruitedIds()).toContain(v.id);
    });
  });
});
