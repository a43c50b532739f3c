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
import { encodeOutcomes } from '../../dist/src/protocol/batch.js';
import { fixture } from '../helpers/daemons.js';
import {
  FakeWorker,
  RawFrame,
  correctOutput,
  rawResultBatch,
  resultBatch,
  type FakeBehaviour,
  type FakeOutcome,
  type FakeTask,
} from '../helpers/fake-worker.js';
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
      // These tests are about how the client treats a misbehaving worker, not about backup copies.
      speculation: false,
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

  const answer = (tasks: readonly FakeTask[]): FakeOutcome[] => tasks.map((t) => ({ seq: t.seq, value: correctOutput(t.input) }));
  const wrong = (tasks: readonly FakeTask[]): FakeOutcome[] => tasks.map((t) => ({ seq: t.seq, value: -1 }));

  it('results for seqs it was never sent (wrong values, errors) are ignored; then it stalls mid-stream and is lost; every output correct and single', async () => {
    let first = true;
    const f = await fake({
      onTasks(tasks, s) {
        const top = Math.max(...s.seqs);
        const bogus: FakeOutcome[] = Array.from({ length: 6 }, (_, k) =>
          k % 3 === 2
            ? { seq: top + 1000 + rng.int(0, 1e6), error: { kind: 'thrown', name: 'Error', message: 'bogus', stack: '', code: '' } }
            : { seq: top + 1000 + rng.int(0, 1e6), value: -1 },
        );
        if (first) {
          first = false;
          // Packed: the bogus seqs and the real answers in one ResultBatch.
          s.send(resultBatch([...bogus, ...answer(tasks)]));
        } else {
          s.send(resultBatch(bogus));
          s.stall();
        }
      },
    });
    const o = await run(f);
    expectCorrectAndSingle(o);
    expect(f.stats.tasksReceived).toBeGreaterThan(0);
    expect(o.lost.some((e) => e.worker.id === f.id)).toBe(true);
    console.log(
      `[fuzz-client] bogus seqs + stall: ${o.ms.toFixed(0)} ms, fake got ${f.stats.tasksReceived} tasks on ${f.stats.recruits} lease(s), delivered ${o.completedByFake}; lost ${o.lost.length}x`,
    );
  });

  it('outputs that do not decode: the worker is dropped, the tasks are recomputed elsewhere', async () => {
    // Packed: a ResultBatch whose `outcomes` are not v8 at all, are v8 but not [flags, values], hold
    // the wrong number of entries, or whose durations do not match its seqs.
    const kinds = new Map<string, number>();
    const f = await fake({
      onTasks(tasks, s) {
        const seqs = tasks.map((t) => t.seq);
        const outputs = tasks.map((t) => correctOutput(t.input));
        const kind = rng.pick(['junk', 'not-a-pair', 'swapped', 'short', 'long', 'durations'] as const);
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
        if (kind === 'junk') {
          const junk = rng.bytes(rng.int(0, 32));
          if (junk.length > 0 && junk[0] === 0xff) junk[0] = 0; // no v8 header: never decodes
          s.send(rawResultBatch(seqs, junk));
        } else if (kind === 'not-a-pair')
          s.send(rawResultBatch(seqs, serialize(outputs))); // the outputs alone
        else if (kind === 'swapped') s.send(rawResultBatch(seqs, serialize([outputs, new Uint8Array(outputs.length)])));
        else if (kind === 'short') s.send(rawResultBatch(seqs, encodeOutcomes(new Uint8Array(outputs.length - 1), outputs.slice(1))));
        else if (kind === 'long') s.send(rawResultBatch(seqs, encodeOutcomes(new Uint8Array(outputs.length + 1), [...outputs, 0])));
        else s.send(rawResultBatch(seqs, encodeOutcomes(new Uint8Array(outputs.length), outputs), [...seqs.map(() => 1), 1]));
      },
    });
    const o = await run(f);
    expectCorrectAndSingle(o);
    expect(o.completedByFake).toBe(0);
    expect(o.lost.some((e) => e.worker.id === f.id && /cannot be decoded/.test(e.reason))).toBe(true);
    console.log(
      `[fuzz-client] undecodable outputs: ${o.ms.toFixed(0)} ms, fake recruited ${f.stats.recruits}x, dropped ${o.lost.length}x (${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')})`,
    );
  });

  it('malformed and garbage messages on the stream (unknown field, truncated frame, random bytes): the stream fails, the worker is lost', async () => {
    let k = 0;
    const f = await fake({
      onTasks(tasks, s) {
        // Valid protobuf, but nothing the client knows: ignored.
        s.send(new RawFrame(Buffer.from([0x78, 0x01])));
        const kind = k++ % 3;
        const good = Buffer.from([0x12]); // field 2 (results: a ResultBatch), length-delimited …
        if (kind === 0) s.send(new RawFrame(rng.bytes(rng.int(1, 200))));
        else if (kind === 1)
          s.send(new RawFrame(Buffer.concat([good, Buffer.from([0xff, 0xff, 0x03]), rng.bytes(10)]))); // … with a length far past the end
        else s.send(new RawFrame(Buffer.from([0x12, 0x04, 0x0a, 0x02, 0x08, 0x80]))); // packed seqs whose last varint is truncated
        // Whatever the client made of it, these answers must not count if the stream broke first.
        s.send(resultBatch(wrong(tasks)));
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
        // Within one ResultBatch: every seq twice, the right value first, then a wrong one.
        s.send(resultBatch([...right, ...wrong(tasks)]));
        // Across batches: wrong values for the same seqs, then the right ones twice again.
        s.send(resultBatch(wrong(tasks)));
        s.send(resultBatch([...right, ...right]));
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
          s.send(resultBatch(answer(tasks)));
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

  // A Result with neither `value` nor `error` cannot be expressed in the packed format; its closest
  // equivalents are outcomes that break the [flags, values] contract: flag 1 (error) with a value
  // that is not an error object, or a flag other than 0 and 1. Both are protocol violations by the
  // worker (docs/SECURITY.md: the client survives a worker that answers garbage): expected, the
  // worker is dropped like one sending undecodable outcomes, its tasks are recomputed elsewhere and
  // the run completes.
  // (Regression: both once failed the whole run with TaskError.)
  it('an outcome flagged as an error whose value is not an error object: the worker is dropped and the run completes', async () => {
    const f = await fake({
      onTasks(tasks, s) {
        s.send(resultBatch(tasks.map((t) => ({ seq: t.seq, flag: 1, raw: rng.pick([correctOutput(t.input), 'oops', null, undefined, [1, 2], 42n]) }))));
      },
    });
    const o = await run(f);
    if (o.error !== undefined)
      console.log(`[fuzz-client] flag 1 with a non-error value: the run failed with ${(o.error as Error).name} (${(o.error as { code?: string }).code})`);
    expectCorrectAndSingle(o);
    expect(o.lost.some((e) => e.worker.id === f.id)).toBe(true);
  });

  it('an outcome whose flag is neither 0 nor 1: the worker is dropped and the run completes', async () => {
    const f = await fake({
      onTasks(tasks, s) {
        s.send(resultBatch(tasks.map((t) => ({ seq: t.seq, flag: rng.int(2, 255), raw: correctOutput(t.input) }))));
      },
    });
    const o = await run(f);
    if (o.error !== undefined)
      console.log(`[fuzz-client] flag other than 0/1: the run failed with ${(o.error as Error).name} (${(o.error as { code?: string }).code})`);
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
        s.send(resultBatch(answer(tasks)));
      },
      describe: (desc) => ({ ...desc, max_message_bytes: 1025 }),
    });
    const o = await run(f);
    expect(o.error).toBeInstanceOf(UnsendableInputError);
    console.log(
      `[fuzz-client] a worker claiming max_message_bytes=1025 failed the run: ${(o.error as Error).name} for input ${(o.error as UnsendableInputError).index}`,
    );
  });

  it('afterwards the real daemon is alive and serves a normal run', async () => {
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], { peers: [real.address], localFallback: false });
    expect(await farm.compute()).toEqual([2, 4, 6]);
    expect(alive(real.pid)).toBe(true);
  });
});
