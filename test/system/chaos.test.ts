/**
 * The chaos soak, on a virtual LAN (network namespaces joined by a bridge; mDNS never leaves them):
 * ~5 worker hosts running `taskfarm worker` + 1 client host. Farms run back to back (each a client
 * process, test/fixtures/lan-client.mjs, a few hundred tasks of varied duration, default mDNS
 * discovery, heartbeat 200 ms / timeout 1000 ms, localFallback off) while a seeded chaos driver
 * (test/helpers/chaos-driver.ts) SIGKILLs daemons (and restarts them, same cache folder), SIGSTOPs
 * and SIGCONTs them, cuts and heals host links, and starts daemons on hosts that join the LAN. At
 * least two daemons are always healthy, so no run can legitimately fail for lack of workers.
 *
 * Every run must end with every output present, correct and single (checked by the client, in its
 * done line) within its deadline; a hang or a failure fails the test with the run's event log.
 *
 * Time: TASKFARM_SOAK_SECONDS (default 100) of chaos; no new run starts when the budget is nearly
 * spent, so the default soak stays under 3 minutes. Replay the same random choices with
 * TASKFARM_CHAOS_SEED=<seed> (timings still vary). Figures are printed with the prefix `[chaos]`.
 *
 * Only ever run inside `node scripts/isolated.mjs -- npx vitest run test/system/chaos.test.ts`.
 */
import { describe, expect, it } from 'vitest';
import {
  Rng,
  benchPerTest,
  certInfo,
  chaosSeed,
  exited,
  netnsAvailable,
  netnsSkipReason,
  pollUntil,
  runSummary,
  statsOf,
  waitExit,
  type Client,
  type Ev,
} from '../helpers/lan-bench.js';
import { ChaosDriver } from '../helpers/chaos-driver.js';

const log = (msg: string): void => console.log(`[chaos] ${msg}`);

const SOAK_SECONDS = Number(process.env['TASKFARM_SOAK_SECONDS'] ?? 60);
if (!Number.isFinite(SOAK_SECONDS) || SOAK_SECONDS < 10)
  throw new Error(`TASKFARM_SOAK_SECONDS must be a number ≥ 10, got ${process.env['TASKFARM_SOAK_SECONDS']}`);
const BUDGET_MS = SOAK_SECONDS * 1000;
/** A run that takes longer than this hangs. */
const RUN_DEADLINE_MS = 30_000;
/** Setup (LAN, daemons) + the final run + teardown. */
const OVERHEAD_MS = 45_000;
const WORKER_HOSTS = 5;

/**
 * Client options of every run (setupTimeoutMs stays at its default: a worker frozen while it loads
 * the stages is declared lost by its missed heartbeats, as any other).
 */
const RUN_OPTIONS = {
  heartbeatMs: 200,
  heartbeatTimeoutMs: 1000,
  leaseTimeoutMs: 2000,
  connectTimeoutMs: 1000,
  workerWaitMs: 5000,
  localFallback: false,
};

interface RunRecord {
  readonly i: number;
  readonly n: number;
  readonly ms: number;
  readonly lost: number;
  readonly recruited: number;
  readonly workers: number;
  /** 'worker lost' logged for a worker that never had a session (lost while being recruited). */
  readonly lostInSetup: number;
  readonly missing: number;
  readonly doubled: number;
  readonly wrong: number;
}

function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

const seed = chaosSeed();
const title = netnsAvailable ? 'chaos soak on a virtual LAN' : `chaos soak on a virtual LAN (skipped: ${netnsSkipReason})`;

describe.skipIf(!netnsAvailable)(title, () => {
  // A chaos driver continues every daemon it stopped and drops its pending undo timers when its
  // bench is disposed (see ChaosDriver).
  const newBench = benchPerTest('cha');

  it(
    `farms back to back under random kills, stops, partitions and joins: every output present, correct and single; no run hangs`,
    { timeout: BUDGET_MS + RUN_DEADLINE_MS + OVERHEAD_MS },
    async () => {
      const t0 = Date.now();
      log(`seed ${seed} (replay: TASKFARM_CHAOS_SEED=${seed}); budget ${SOAK_SECONDS} s; run deadline ${RUN_DEADLINE_MS} ms; setupTimeoutMs default`);
      const chaosRng = new Rng(seed ^ 0xc4a05);
      const runRng = new Rng(seed ^ 0x5eed);

      const b = await newBench(WORKER_HOSTS + 1, 'soak');
      const clientHost = b.host(WORKER_HOSTS + 1);
      const workerHosts = Array.from({ length: WORKER_HOSTS }, (_, i) => b.host(i + 1));
      const daemons = await Promise.all(workerHosts.map((h) => b.daemon(h)));
      const d = new ChaosDriver(b, chaosRng, {
        minHealthy: 2,
        maxJoins: Math.min(12, 2 + Math.floor(SOAK_SECONDS / 60)),
        gapMs: [300, 1500],
        faultMs: [300, 3500],
        maxFaults: Math.ceil(BUDGET_MS / 300) + 1,
      });
      daemons.forEach((dm, i) => d.adopt(workerHosts[i]!, dm));
      const setupMs = Date.now() - t0;

      const runs: RunRecord[] = [];
      const durations: number[] = [];
      const chaosStart = Date.now();
      d.start();
      let failure: Error | undefined;
      const maxRuns = Math.ceil(BUDGET_MS / 500);
      try {
        for (let i = 0; i < maxRuns; i++) {
          const elapsed = Date.now() - chaosStart;
          // Stop starting runs when the budget is nearly spent (the longest run so far, with a margin, must fit).
          const estimate = Math.max(5000, 1.5 * Math.max(0, ...durations));
          if (elapsed + estimate > BUDGET_MS) break;
          const n = runRng.int(150, 400);
          // Varied durations: tiny (0 ms), small (2 ms), ~20 ms.
          const ms = Array.from({ length: n }, () =>
            runRng.weighted<number>([
              [5, 0],
              [2, 2],
              [3, runRng.int(15, 25)],
            ]),
          );
          const c = b.client(clientHost, { stage: 'spin.ts', n, ms, options: RUN_OPTIONS }, `run ${i}`);
          const started = Date.now();
          let end: Ev;
          try {
            end = await c.result(RUN_DEADLINE_MS);
          } catch (err) {
            failure = new Error(
              `run ${i} (n=${n}) did not finish within ${RUN_DEADLINE_MS} ms: it hangs\n${(err as Error).message.split('\n')[0]}\n${c.eventLog()}\nfaults so far: ${JSON.stringify(d.faults.slice(-30))}`,
            );
            break;
          }
          durations.push(Date.now() - started);
          if (end.e === 'done') runs.push(record(i, n, c, end));
          if (end.e !== 'done' || end['single'] !== true || end['allCorrect'] !== true) {
            failure = new Error(`run ${i} (n=${n}) ended with ${runSummary(end)}\n${c.eventLog()}\nfaults so far: ${JSON.stringify(d.faults.slice(-30))}`);
            break;
          }
          await waitExit(c.child, 5000);
        }
      } finally {
        await d.recover();
      }
      const chaosMs = Date.now() - chaosStart;
      const counts = d.counts();
      const sum = (f: (r: RunRecord) => number): number => runs.reduce((s, r) => s + f(r), 0);
      const summary = (extra: string[]): void =>
        log(
          [
            `seed ${seed}; duration ${((Date.now() - t0) / 1000).toFixed(1)} s (setup ${(setupMs / 1000).toFixed(1)} s, chaos ${(chaosMs / 1000).toFixed(1)} s of a ${SOAK_SECONDS} s budget)`,
            `runs ${runs.length}, tasks checked ${sum((r) => r.n)}; run time p50 ${percentile(durations, 50)} ms, p90 ${percentile(durations, 90)} ms, max ${Math.max(0, ...durations)} ms`,
            `faults injected: ${Object.entries(counts)
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')} (${d.slots.length} worker hosts, ${d.allIds().length} daemon ids)`,
            `lost-worker events ${sum((r) => r.lost)} (max ${Math.max(0, ...runs.map((r) => r.lost))} in one run); recruits ${sum((r) => r.recruited)}; ` +
              `workers lost while being recruited (setup phase, no 'lost' event) ${sum((r) => r.lostInSetup)}; local fallbacks 0 (off)`,
            `outputs lost ${sum((r) => r.missing)}, doubled ${sum((r) => r.doubled)}, wrong ${sum((r) => r.wrong)}`,
            ...extra,
            ...(d.errors.length > 0 ? [`driver problems: ${d.errors.join(' | ')}`] : []),
          ].join('\n  '),
        );
      if (failure) {
        summary(['FAILED: see the error']);
        throw failure;
      }

      // After the chaos, every daemon comes back into the pool: one last run recruits all of them.
      const live = d.slots.filter((s) => s.daemon !== undefined && !exited(s.daemon.child));
      const alive = live.map((s) => s.daemon!.id);
      const last = b.client(clientHost, { stage: 'spin.ts', n: 1_000_000, ms: 5, held: true, options: RUN_OPTIONS }, 'final run');
      let allBack = true;
      let lastEnd: Ev | undefined;
      try {
        try {
          await pollUntil('every live daemon recruited by the final run', 20_000, () => alive.every((id) => last.recruitedIds().includes(id)));
        } catch {
          allBack = false;
        }
        last.end();
        lastEnd = await last.result(RUN_DEADLINE_MS);
      } finally {
        summary([
          `final run: ${lastEnd ? `${String(lastEnd['n'])} tasks, ${lastEnd.e}` : 'did not end'}; recruited ${new Set(last.recruitedIds()).size} of the ${alive.length} live daemons` +
            (allBack ? '' : ` (MISSING: ${alive.filter((id) => !last.recruitedIds().includes(id)).join(', ')})`),
        ]);
      }
      expect(lastEnd.e, last.eventLog()).toBe('done');
      expect(lastEnd['single'] && lastEnd['allCorrect'], last.eventLog()).toBe(true);
      expect(d.errors, 'chaos driver problems').toEqual([]);
      expect(runs.length).toBeGreaterThanOrEqual(3);
      expect(counts.kill + counts.stop + counts.cut).toBeGreaterThan(0);
      expect({ missing: sum((r) => r.missing), doubled: sum((r) => r.doubled), wrong: sum((r) => r.wrong) }).toEqual({ missing: 0, doubled: 0, wrong: 0 });
      expect(allBack, `daemons not recruited after the chaos: ${alive.filter((id) => !last.recruitedIds().includes(id)).join(', ')}\n${last.eventLog()}`).toBe(
        true,
      );
    },
  );

  // Regression, found by a long soak: a daemon whose TLS certificate is 430–432 bytes of DER (its
  // base64 a multiple of 64 characters; a 3-character hostname, or a 12-character --id) could never be
  // recruited: the client rebuilt the PEM by hand and produced a blank line, which OpenSSL refused.
  it(
    'a daemon whose certificate is 430–432 bytes (a 3-character hostname, or a 12-character --id) is recruited like any other',
    { timeout: 60_000 },
    async () => {
      const b = await newBench(3, 'pem');
      const [ok, bad] = await Promise.all([
        b.daemon(b.host(1), { extraArgs: ['--id', 'h9-2405788c'] }), // 11 characters: a 2-character hostname
        b.daemon(b.host(2), { extraArgs: ['--id', 'h10-81fe6e8d'] }), // 12 characters: a 3-character hostname
      ]);
      const [okCert, badCert] = [certInfo(ok.cacheDir), certInfo(bad.cacheDir)];
      const c = b.client(b.host(3), { stage: 'spin.ts', n: 200, ms: 5, options: RUN_OPTIONS }, 'client (certificate sizes)');
      const end = await c.result(30_000);
      const refused = c.recruitFailures().map((e) => String((e['fields'] as Record<string, unknown>)['error']));
      log(
        `certificate PEM bug: ${ok.id} cert ${okCert.derBytes} bytes DER (${okCert.base64Chars} base64 chars), ${bad.id} cert ${badCert.derBytes} bytes DER ` +
          `(${badCert.base64Chars} base64 chars, a multiple of 64: ${badCert.blankLineBug}); the run recruited [${c.recruitedIds().join(', ')}] and ended ${end.e}; ` +
          `recruit errors: ${[...new Set(refused)].join(' | ') || 'none'}`,
      );
      expect(end.e, c.eventLog()).toBe('done');
      expect(c.recruitedIds()).toContain(ok.id);
      expect(c.recruitedIds(), `recruit errors: ${refused.join(' | ')}`).toContain(bad.id);
    },
  );
});

function record(i: number, n: number, c: Client, end: Ev): RunRecord {
  // A 'worker lost' log line with no 'lost' event for that worker in the same instant: a loss
  // while it was being recruited (before Ready), which the run never hears of.
  const lostInSetup = c
    .logs('warn')
    .filter((e) => e['msg'] === 'worker lost')
    .filter((e) => {
      const id = (e['fields'] as Record<string, unknown>)['worker'];
      return !c.of('lost').some((l) => l['id'] === id && Math.abs(l.t - e.t) < 50);
    }).length;
  return {
    i,
    n,
    ms: end['ms'] as number,
    lost: c.of('lost').length,
    recruited: c.of('recruited').length,
    workers: new Set(statsOf(end).workers.map((w) => w.id)).size,
    lostInSetup,
    missing: end['missing'] as number,
    doubled: end['doubled'] as number,
    wrong: end['wrong'] as number,
  };
}
