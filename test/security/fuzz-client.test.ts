/**
 * Fuzzing the client (issue 4, test 6): a fake worker in this process (grpc-js, its own
 * self-signed certificate, the REAL farm-key handshake with the test run's key, so the client
 * trusts it) misbehaves on its Compute stream, next to one real daemon in `peers`. Whatever it
 * does, every run completes with every output correct and delivered once, and a worker that breaks
 * the protocol is dropped (a `lost` event). Each run is bounded by an abort signal.
 * TASKFARM_FUZZ_SEED=<n> replays the random choices.
 */
import { serialize } from 'node:v8';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TaskFarm, UnsendableInputError, type WorkerLostEvent } from '../../dist/src/index.js';
import type { ResultMessage } from '../../dist/src/protocol/messages.js';
import { fixture } from '../helpers/daemons.js';
import { FakeWorker, RawFrame, correctOutput, type FakeBehaviour, type FakeTask } from '../helpers/fake-worker.js';
import { Rng } from '../helpers/fuzz.js';
import { connectRaw, testKey } from '../helpers/raw-worker.js';
import { SecurityDaemons, alive, type SecurityDaemon } from '../helpers/security-daemons.js';

const N = 100;
const INPUTS = Array.from({ length: N }, (_, v) => ({ v, ms: 4 }));

interface Outcome {
  seen: Map<number, number[]>;
  lost: WorkerLostEvent[];
  error: unknown;
  ms: number;
  completedByFake: number;
}

describe('fuzzing the client with a misbehaving (key-holding) worker', () => {
  const daemons = new SecurityDaemons();
  const fakes: FakeWorker[] = [];
  const rng = Rng.fromEnv();
  let real: SecurityDaemon;

  beforeAll(async () => {
    real = await daemons.start({ inherit: true });
    console.log(`[fuzz-client] seed ${rng.seed} (replay with TASKFARM_FUZZ_SEED=${rng.seed})`);
  });
  afterEach(async () => {
    await Promise.all(fakes.splice(0).map((f) => f.close()));
  });
  afterAll(async () => {
    await daemons.stopAll();
  });

  async function fake(behaviour: FakeBehaviour, id?: string): Promise<FakeWorker> {
    const f = await FakeWorker.start({ key: testKey(), dir: daemons.tempDir(), behaviour, ...(id === undefined ? {} : { id }) });
    fakes.push(f);
    return f;
  }

  /** One run over [fake, real], collecting every delivery; bounded by an abort signal. */
  async function run(f: FakeWorker, inputs: readonly unknown[] = INPUTS): Promise<Outcome> {
    const farm = new TaskFarm<unknown, number>(fixture('spin.ts'), inputs, {
      peers: [f.address, real.address],
      localFallback: false,
      heartbeatMs: 150,
      heartbeatTimeoutMs: 600,
      signal: AbortSignal.timeout(15_000),
    });
    const lost: WorkerLostEvent[] = [];
    farm.on('lost', (e) => lost.push(e));
    const seen = new Map<number, number[]>();
    const t0 = performance.now();
    let error: unknown;
    try {
      for await (const { index, output } of farm.results()) seen.set(index, [...(seen.get(index) ?? []), output]);
    } catch (err) {
      error = err;
    }
    const completedByFake = farm
      .stats()
      .workers.filter((w) => w.id === f.id)
      .reduce((n, w) => n + w.completed, 0);
    return { seen, lost, error, ms: performance.now() - t0, completedByFake };
  }

  function expectCorrectAndSingle(o: Outcome, n = N): void {
    expect(o.error).toBeUndefined();
    expect(o.seen.size).toBe(n);
    for (let i = 0; i < n; i++) expect(o.seen.get(i), `input ${i}`).toEqual([i * 2]);
  }

  const answer = (tasks: readonly FakeTask[]): ResultMessage[] => tasks.map((t) => ({ seq: t.seq, value: correctOutput(t.payload) }));

  it('results for seqs it was never sent (wrong values, errors) are ignored; then it stalls mid-stream and is lost; every output correct and single', async () => {
    let first = true;
    const f = await fake({
      onTasks(tasks, s) {
        const top = Math.max(...s.seqs);
        const bogus: ResultMessage[] = Array.from({ length: 6 }, (_, k) =>
          k % 3 === 2
            ? { seq: top + 1000 + rng.int(0, 1e6), error: { kind: 'thrown', name: 'Error', message: 'bogus', stack: '', code: '' } }
            : { seq: top + 1000 + rng.int(0, 1e6), value: serialize(-1) },
        );
        if (first) {
          first = false;
          s.send({ results: { results: [...bogus, ...answer(tasks)] } });
        } else {
          s.send({ results: { results: bogus } });
          s.stall();
        }
      },
    });
    const o = await run(f);
    expectCorrectAndSingle(o);
    expect(f.stats.tasksReceived).toBeGreaterThan(0);
    expect(o.lost.some((e) => e.worker.id === f.id)).toBe(true);
    console.log(`[fuzz-client] bogus seqs + stall: ${o.ms.toFixed(0)} ms, fake got ${f.stats.tasksReceived} tasks on ${f.stats.recruits} lease(s), delivered ${o.completedByFake}; lost ${o.lost.length}x`);
  });

  it('outputs that do not decode: the worker is dropped, the tasks are recomputed elsewhere', async () => {
    const f = await fake({
      onTasks(tasks, s) {
        s.send({
          results: {
            results: tasks.map((t) => {
              const junk = rng.bytes(rng.int(0, 32));
              if (junk.length > 0 && junk[0] === 0xff) junk[0] = 0;
              return { seq: t.seq, value: junk };
            }),
          },
        });
      },
    });
    const o = await run(f);
    expectCorrectAndSingle(o);
    expect(o.completedByFake).toBe(0);
    expect(o.lost.some((e) => e.worker.id === f.id && /cannot be decoded/.test(e.reason))).toBe(true);
    console.log(`[fuzz-client] undecodable outputs: ${o.ms.toFixed(0)} ms, fake recruited ${f.stats.recruits}x, dropped ${o.lost.length}x`);
  });

  it('malformed and garbage messages on the stream (unknown field, truncated frame, random bytes): the stream fails, the worker is lost', async () => {
    let k = 0;
    const f = await fake({
      onTasks(tasks, s) {
        // Valid protobuf, but nothing the client knows: ignored.
        s.send(new RawFrame(Buffer.from([0x78, 0x01])));
        const kind = k++ % 3;
        const good = Buffer.from([0x12]); // field 2 (results), length-delimited …
        if (kind === 0) s.send(new RawFrame(rng.bytes(rng.int(1, 200))));
        else if (kind === 1) s.send(new RawFrame(Buffer.concat([good, Buffer.from([0xff, 0xff, 0x03]), rng.bytes(10)]))); // … with a length far past the end
        else s.send(new RawFrame(Buffer.from([0x12, 0x05, 0x0a, 0x03, 0x08, 0x80]))); // truncated varint inside
        // Whatever the client made of it, these answers must not count if the stream broke first.
        s.send({ results: { results: tasks.map((t) => ({ seq: t.seq, value: serialize(-1) })) } });
      },
    });
    const o = await run(f);
    expect(o.error).toBeUndefined();
    expect(o.seen.size).toBe(N);
    // -1 never made it into the outputs.
    for (let i = 0; i < N; i++) expect(o.seen.get(i), `input ${i}`).toEqual([i * 2]);
    expect(o.lost.some((e) => e.worker.id === f.id)).toBe(true);
    console.log(`[fuzz-client] garbage frames: ${o.ms.toFixed(0)} ms, fake recruited ${f.stats.recruits}x, lost ${o.lost.length}x: ${o.lost[0]?.reason}`);
  });

  it('duplicate results (a wrong value after the right one, whole batches again) are ignored: every output once', async () => {
    const f = await fake({
      onTasks(tasks, s) {
        const right = answer(tasks);
        s.send({ results: { results: right } });
        s.send({ results: { results: tasks.map((t) => ({ seq: t.seq, value: serialize(-1) })) } });
        s.send({ results: { results: [...right, ...right] } });
      },
    });
    const o = await run(f);
    expectCorrectAndSingle(o);
    expect(o.completedByFake).toBeGreaterThan(0);
    // As documented (docs/ARCHITECTURE.md, docs/SECURITY.md), a duplicate is dropped, not its worker.
    expect(o.lost).toEqual([]);
    console.log(`[fuzz-client] duplicates: ${o.ms.toFixed(0)} ms, fake delivered ${o.completedByFake} outputs (each once)`);
  });

  it('a worker that stalls mid-stream (no results, no heartbeats) is lost by missed heartbeats; its tasks are recomputed', async () => {
    let first = true;
    const f = await fake({
      onTasks(tasks, s) {
        if (first) {
          first = false;
          s.send({ results: { results: answer(tasks) } });
          return;
        }
        s.stall();
      },
    });
    const o = await run(f);
    expectCorrectAndSingle(o);
    const lost = o.lost.filter((e) => e.worker.id === f.id);
    expect(lost.length).toBeGreaterThan(0);
    expect(lost[0]!.reason).toMatch(/heartbeat/);
    expect(lost[0]!.requeued).toBeGreaterThan(0);
  });

  it('a relaying man in the middle (its own certificate, the real daemon’s Describe answer) is not trusted: nothing but Describe reaches it', async () => {
    const upstream = await connectRaw(real.address);
    try {
      const f = await fake({
        onTasks() {},
        // Relay: ask the real daemon with the client's nonce, answer with its (valid, but bound to
        // the real certificate) proof.
        describe: async (_desc, req) => upstream.client.describe({ client_nonce: req.client_nonce }, 2000),
      });
      const o = await run(f);
      expectCorrectAndSingle(o);
      expect(f.stats.describes).toBeGreaterThan(0);
      expect(f.stats.recruits + f.stats.refusedRecruits).toBe(0);
      expect(f.stats.installs).toBe(0);
      expect(f.stats.tasksReceived).toBe(0);
      expect(o.lost).toEqual([]);
    } finally {
      upstream.close();
    }
  });

  // BUG (product): a Result with neither `value` nor `error` is turned into a task error of kind
  // 'bad-output' (src/farm/remote-link.ts toExecResult, line 50), which src/farm/run.ts
  // #onTaskError (default branch, line 514) treats as the task's own failure: the whole run fails
  // with TaskError. A malformed result is a protocol violation by the worker (docs/SECURITY.md: the
  // client survives a worker that answers garbage); expected: drop the worker like an undecodable
  // output, recompute the task elsewhere, and complete the run. Marked `fails` until fixed.
  it.fails('a result with neither value nor error: the worker is dropped and the run completes (BUG: the run fails with TaskError)', async () => {
    const f = await fake({
      onTasks(tasks, s) {
        s.send({ results: { results: tasks.map((t) => ({ seq: t.seq })) } });
      },
    });
    const o = await run(f);
    if (o.error !== undefined) console.log(`[fuzz-client] empty result: the run failed with ${(o.error as Error).name} (${(o.error as { code?: string }).code})`);
    expectCorrectAndSingle(o);
    expect(o.lost.some((e) => e.worker.id === f.id)).toBe(true);
  });

  // FINDING (design, not marked as a bug): the limits a worker advertises in Describe are trusted
  // for the whole run. A worker (here a key holder) that claims max_message_bytes = 1025 makes the
  // client fail the run with UnsendableInputError as soon as one input is dispatched to it, although
  // the real daemon next to it could take every input (src/farm/run.ts #pump, line 419: the check
  // uses the session's limit and finishes the run instead of skipping that worker). The same happens
  // with two honest daemons of different --max-message-mb. This test shows the current behaviour.
  it('FINDING: one worker advertising a tiny message limit fails the run for everyone', async () => {
    const f = await fake({
      onTasks(tasks, s) {
        s.send({ results: { results: answer(tasks) } });
      },
      describe: (desc) => ({ ...desc, max_message_bytes: 1025 }),
    });
    const o = await run(f);
    expect(o.error).toBeInstanceOf(UnsendableInputError);
    console.log(`[fuzz-client] a worker claiming max_message_bytes=1025 failed the run: ${(o.error as Error).name} for input ${(o.error as UnsendableInputError).index}`);
  });

  it('afterwards the real daemon is alive and serves a normal run', async () => {
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [real.address], localFallback: false });
    expect(await farm.compute()).toEqual([2, 4, 6]);
    expect(alive(real.pid)).toBe(true);
  });
});
