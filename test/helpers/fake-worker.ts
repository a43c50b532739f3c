/**
 * A fake worker daemon in the test process, for fuzzing the client: a grpc-js server with its own
 * self-signed TLS certificate that speaks the REAL farm-key handshake with the test run's key (so
 * clients trust it), and then misbehaves on the Compute stream as its {@link FakeBehaviour} says.
 * `close()` shuts it down.
 */
import { randomBytes } from 'node:crypto';
import { decodeInputs, encodeOutcomes } from '../../dist/src/protocol/batch.js';
import { grpc, workerServiceDefinition } from '../../dist/src/protocol/grpc.js';
import type {
  ClientMessage,
  DescribeRequest,
  InstallRequest,
  RecruitRequest,
  RemoteErrorMessage,
  WorkerDescription,
  WorkerMessage,
} from '../../dist/src/protocol/messages.js';
import { PACKAGE_VERSION, PROTOCOL_VERSION } from '../../dist/src/index.js';
import { clientProof, proofsEqual, workerProof } from '../../dist/src/security/handshake.js';
import { loadOrCreateTlsIdentity } from '../../dist/src/security/tls.js';
import { sha256 } from './raw-compute.js';

/**
 * One task as the fake receives it: its seq and its input, decoded from the batch's packed
 * `inputs` (undefined for every task of a batch whose inputs do not decode, which a TaskFarm
 * never sends).
 */
export interface FakeTask {
  readonly seq: number;
  readonly input: unknown;
}

/** A frame sent as is, instead of an encoded WorkerMessage. */
export class RawFrame {
  readonly bytes: Buffer;
  constructor(bytes: Buffer) {
    this.bytes = bytes;
  }
}

/** What a behaviour can do on the Compute stream of one lease. */
export interface FakeStream {
  /** 1 for the first lease the fake grants, 2 for the second, … */
  readonly lease: number;
  /** Every seq received on this stream so far. */
  readonly seqs: readonly number[];
  send(msg: WorkerMessage | RawFrame): void;
  /** Stops sending anything (heartbeats included); the stream stays open. */
  stall(): void;
  readonly stalled: boolean;
  /** Fails the stream with a gRPC status. */
  fail(code: grpc.status, details: string): void;
}

export interface FakeBehaviour {
  /** Called with every task batch. */
  onTasks(tasks: readonly FakeTask[], stream: FakeStream): void;
  /** Adjusts the Describe answer (after the proof is computed). */
  describe?(desc: WorkerDescription, request: DescribeRequest): WorkerDescription | Promise<WorkerDescription>;
}

/** The correct output for a spin.ts input `{ v, ms }` (or a number). */
export function correctOutput(input: unknown): number {
  const i = input as { v: number } | number;
  return typeof i === 'number' ? i * 2 : i.v * 2;
}

/**
 * One outcome the fake sends, packed into a ResultBatch by {@link resultBatch}: an output
 * (flag 0), an error (flag 1), or any flag with any value (`flag`/`raw`, to break the format).
 */
export type FakeOutcome =
  | { readonly seq: number; readonly value: unknown }
  | { readonly seq: number; readonly error: RemoteErrorMessage }
  | { readonly seq: number; readonly flag: number; readonly raw: unknown };

/** A well-formed ResultBatch message carrying `outcomes` in order (each with a 1 ms duration). */
export function resultBatch(outcomes: readonly FakeOutcome[]): WorkerMessage {
  const flags = new Uint8Array(outcomes.length);
  const values: unknown[] = [];
  outcomes.forEach((o, i) => {
    if ('value' in o) values.push(o.value);
    else if ('error' in o) {
      flags[i] = 1;
      values.push(o.error);
    } else {
      flags[i] = o.flag;
      values.push(o.raw);
    }
  });
  return rawResultBatch(
    outcomes.map((o) => o.seq),
    encodeOutcomes(flags, values),
  );
}

/** A ResultBatch message with the given `outcomes` bytes as they are (durations: one per seq unless given). */
export function rawResultBatch(seqs: readonly number[], outcomes: Uint8Array, durationsMs: readonly number[] = seqs.map(() => 1)): WorkerMessage {
  return { results: { seqs: [...seqs], outcomes, durations_ms: [...durationsMs] } };
}

/** What happened to the fake. */
export interface FakeStats {
  describes: number;
  recruits: number;
  refusedRecruits: number;
  installs: number;
  bundlesReceived: number;
  streams: number;
  tasksReceived: number;
}

export class FakeWorker {
  readonly id: string;
  readonly port: number;
  readonly fingerprint: string;
  readonly stats: FakeStats;
  readonly #server: grpc.Server;
  readonly #timers: Set<NodeJS.Timeout>;

  private constructor(id: string, port: number, fingerprint: string, server: grpc.Server, stats: FakeStats, timers: Set<NodeJS.Timeout>) {
    this.id = id;
    this.port = port;
    this.fingerprint = fingerprint;
    this.#server = server;
    this.stats = stats;
    this.#timers = timers;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Starts a fake worker on 127.0.0.1 with its TLS identity in `dir`. */
  static async start(opts: { key: Buffer; dir: string; behaviour: FakeBehaviour; id?: string; threads?: number; heartbeatMs?: number }): Promise<FakeWorker> {
    const id = opts.id ?? `fake-${randomBytes(4).toString('hex')}`;
    const threads = opts.threads ?? 2;
    const tls = await loadOrCreateTlsIdentity(opts.dir, `taskfarm-worker ${id}`);
    const stats: FakeStats = { describes: 0, recruits: 0, refusedRecruits: 0, installs: 0, bundlesReceived: 0, streams: 0, tasksReceived: 0 };
    const timers = new Set<NodeJS.Timeout>();
    const issued = new Map<string, Buffer>(); // worker nonce (hex) → client nonce
    const leases = new Set<string>();
    const bundles = new Set<string>();
    let leaseCount = 0;

    const def = workerServiceDefinition();
    const compute = def['Compute']!;
    const encode = compute.responseSerialize as (m: WorkerMessage) => Buffer;
    const service: grpc.ServiceDefinition = {
      ...def,
      Compute: { ...compute, responseSerialize: (m: WorkerMessage | RawFrame) => (m instanceof RawFrame ? m.bytes : encode(m)) },
    };
    const server = new grpc.Server({ 'grpc.keepalive_time_ms': 1000, 'grpc.keepalive_timeout_ms': 1000, 'grpc.keepalive_permit_without_calls': 1 });
    const leaseOf = (md: grpc.Metadata): string | undefined => {
      const v = md.get('taskfarm-lease');
      return v.length === 1 && typeof v[0] === 'string' && leases.has(v[0]) ? v[0] : undefined;
    };
    const unauthenticated = { code: grpc.status.UNAUTHENTICATED, details: 'no lease' };

    server.addService(service, {
      Describe: (call: grpc.ServerUnaryCall<DescribeRequest, WorkerDescription>, cb: grpc.sendUnaryData<WorkerDescription>) => {
        stats.describes++;
        const clientNonce = Buffer.from(call.request.client_nonce);
        let worker_nonce: Buffer = Buffer.alloc(0);
        let worker_proof: Buffer = Buffer.alloc(0);
        if (clientNonce.length >= 16) {
          worker_nonce = randomBytes(40);
          issued.set(worker_nonce.toString('hex'), clientNonce);
          worker_proof = workerProof(opts.key, { workerId: id, clientNonce, workerNonce: worker_nonce, certFingerprint: tls.fingerprint });
        }
        const desc: WorkerDescription = {
          id,
          hostname: 'fake-host',
          threads,
          protocol_version: PROTOCOL_VERSION,
          state: 'free',
          version: PACKAGE_VERSION,
          farm: 'default',
          secure: true,
          worker_nonce,
          worker_proof,
          max_message_bytes: 64 * 1024 * 1024,
          max_bundle_bytes: 32 * 1024 * 1024,
          max_shared_bytes: 0,
          max_in_flight: 65_536,
          max_programs: 16,
        };
        Promise.resolve(opts.behaviour.describe?.(desc, call.request) ?? desc).then(
          (d) => cb(null, d),
          (err: Error) => cb({ code: grpc.status.INTERNAL, details: err.message }),
        );
      },
      Recruit: (call: grpc.ServerUnaryCall<RecruitRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        const r = call.request;
        const clientNonce = issued.get(Buffer.from(r.worker_nonce).toString('hex'));
        issued.delete(Buffer.from(r.worker_nonce).toString('hex'));
        const expected =
          clientNonce === undefined
            ? undefined
            : clientProof(opts.key, { workerId: id, clientNonce, workerNonce: r.worker_nonce, certFingerprint: tls.fingerprint }, r.client_id);
        if (expected === undefined || !Buffer.from(r.client_nonce).equals(clientNonce!) || !proofsEqual(expected, r.client_proof)) {
          stats.refusedRecruits++;
          return cb({ code: grpc.status.UNAUTHENTICATED, details: 'the fake could not verify the client' });
        }
        stats.recruits++;
        leaseCount++;
        const token = randomBytes(24).toString('base64url');
        leases.add(token);
        cb(null, { token, lease_timeout_ms: 3000, worker_id: id, threads });
      },
      Install: (call: grpc.ServerUnaryCall<InstallRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        if (leaseOf(call.metadata) === undefined) return cb(unauthenticated);
        stats.installs++;
        for (const b of call.request.bundles) {
          if (sha256(b.code) === b.hash) {
            bundles.add(b.hash);
            stats.bundlesReceived++;
          }
        }
        cb(null, { missing: call.request.hashes.filter((h) => !bundles.has(h)) });
      },
      Release: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        const token = leaseOf(call.metadata);
        if (token === undefined) return cb(unauthenticated);
        leases.delete(token);
        cb(null, {});
      },
      Compute: (call: grpc.ServerDuplexStream<ClientMessage, WorkerMessage | RawFrame>) => {
        if (leaseOf(call.metadata) === undefined) {
          call.emit('error', unauthenticated);
          return;
        }
        stats.streams++;
        const seqs: number[] = [];
        let stalled = false;
        let ended = false;
        const heartbeat = setInterval(() => {
          if (!stalled && !ended) call.write({ heartbeat: { sent_at_ms: Date.now() } });
        }, opts.heartbeatMs ?? 200);
        timers.add(heartbeat);
        const stop = (): void => {
          ended = true;
          clearInterval(heartbeat);
          timers.delete(heartbeat);
        };
        const stream: FakeStream = {
          lease: leaseCount,
          seqs,
          send: (msg) => {
            if (!ended) call.write(msg);
          },
          stall: () => {
            stalled = true;
          },
          get stalled() {
            return stalled;
          },
          fail: (code, details) => {
            if (ended) return;
            stop();
            call.emit('error', { code, details });
          },
        };
        // Protocol 3: the stream is open (Ready{program 0}); each Start is answered Ready{program}.
        call.write({ ready: { threads, program: 0 } });
        call.on('data', (msg: ClientMessage) => {
          if (msg.body === 'start') stream.send({ ready: { threads, program: msg.start.program } });
          else if (msg.body === 'tasks') {
            const batch = msg.tasks.seqs;
            stats.tasksReceived += batch.length;
            seqs.push(...batch);
            let inputs: unknown[];
            try {
              inputs = decodeInputs(msg.tasks.inputs, batch.length);
            } catch {
              inputs = batch.map(() => undefined);
            }
            if (!stalled)
              opts.behaviour.onTasks(
                batch.map((seq, i) => ({ seq, input: inputs[i] })),
                stream,
              );
          }
        });
        call.on('end', () => {
          stop();
          call.end();
        });
        call.on('cancelled', stop);
        call.on('error', stop);
      },
    });
    const creds = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(tls.key), cert_chain: Buffer.from(tls.cert) }], false);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));
    return new FakeWorker(id, port, tls.fingerprint, server, stats, timers);
  }

  /** Shuts the server down (at once: streams are cancelled). */
  async close(): Promise<void> {
    for (const t of this.#timers) clearInterval(t);
    this.#timers.clear();
    this.#server.forceShutdown();
  }
}
