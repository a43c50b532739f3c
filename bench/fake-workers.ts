/**
 * For the scale benchmark: K minimal taskfarm workers in ONE process, each its own gRPC server on
 * 127.0.0.1 (plaintext, like `taskfarm worker --insecure`), computing `x * 2` inline on the main
 * thread (no worker threads: 1,000 real daemons, or 1,000 thread pools, do not fit on 2 cores).
 * They speak the real protocol, so the client does exactly what it does with real daemons.
 * Usage: node fake-workers.js K → prints `READY port1,port2,…`.
 */
import * as grpc from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { workerServiceDefinition } from '../src/protocol/grpc.js';
import { decodeInputs, encodeOutcomes } from '../src/protocol/batch.js';
import { PROTOCOL_VERSION, PACKAGE_VERSION } from '../src/protocol/version.js';
import type { ClientMessage, WorkerMessage } from '../src/protocol/messages.js';

async function startOne(i: number): Promise<number> {
  const id = `fake-${i}-${randomBytes(3).toString('hex')}`;
  let state = 'free';
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024, 'grpc.max_send_message_length': 64 * 1024 * 1024 });
  server.addService(workerServiceDefinition(), {
    Describe: (_c: unknown, cb: grpc.sendUnaryData<unknown>) =>
      cb(null, {
        id,
        hostname: 'fake',
        threads: 1,
        protocol_version: PROTOCOL_VERSION,
        state,
        version: PACKAGE_VERSION,
        farm: 'default',
        secure: false,
        max_message_bytes: 64 * 1024 * 1024,
        max_bundle_bytes: 32 * 1024 * 1024,
        max_in_flight: 65536,
      }),
    Recruit: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => {
      state = 'recruited';
      cb(null, { token: randomBytes(8).toString('hex'), lease_timeout_ms: 3000, worker_id: id, threads: 1 });
    },
    Install: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { missing: [] }),
    Compute: (call: grpc.ServerDuplexStream<ClientMessage, WorkerMessage>) => {
      // Like a real worker: a heartbeat only when nothing else went out lately.
      let lastWritten = 0;
      const write = (m: WorkerMessage): void => {
        lastWritten = Date.now();
        call.write(m);
      };
      const beat = setInterval(() => {
        if (Date.now() - lastWritten >= 450) write({ heartbeat: { sent_at_ms: Date.now() } });
      }, 500);
      // Protocol 3: the stream is open (Ready{program 0}); each Start is answered Ready{program}.
      write({ ready: { threads: 1, program: 0 } });
      call.on('data', (m: ClientMessage) => {
        if (m.body === 'start') write({ ready: { threads: 1, program: m.start.program } });
        else if (m.body === 'tasks') {
          const n = m.tasks.seqs.length;
          const inputs = decodeInputs(m.tasks.inputs, n) as number[];
          const out = inputs.map((x) => x * 2);
          write({ results: { seqs: m.tasks.seqs, outcomes: encodeOutcomes(new Uint8Array(n), out), durations_ms: new Array<number>(n).fill(0.001) } });
        }
      });
      const end = (): void => {
        clearInterval(beat);
        state = 'free';
      };
      call.on('end', () => {
        end();
        call.end();
      });
      call.on('cancelled', end);
      call.on('error', end);
    },
    Release: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => {
      state = 'free';
      cb(null, {});
    },
  });
  return new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err === null ? resolve(port) : reject(err))),
  );
}

const k = Number(process.argv[2] ?? 10);
const ports: number[] = [];
for (let i = 0; i < k; i += 50) ports.push(...(await Promise.all(Array.from({ length: Math.min(50, k - i) }, (_, j) => startOne(i + j)))));
process.stdout.write(`READY ${ports.join(',')}\n`);
process.on('SIGTERM', () => process.exit(0));
