/**
 * A raw gRPC client of one daemon for tests that speak the protocol directly: TLS with the daemon's
 * certificate pinned, and `recruit()` performs the farm-key handshake (Describe with a nonce, then
 * Recruit with the client's proof), with optional overrides applied after the proof is computed.
 */
import { randomUUID } from 'node:crypto';
import { createWorkerClient, fetchServerCertificate, type WorkerClient } from '../../dist/src/protocol/grpc.js';
import type { LeaseReply, RecruitRequest, WorkerDescription } from '../../dist/src/protocol/messages.js';
import { clientProof, newClientNonce, proofsEqual, workerProof } from '../../dist/src/security/handshake.js';
import { PROTOCOL_VERSION, certFingerprint } from '../../dist/src/index.js';

export interface RawWorker {
  readonly client: WorkerClient;
  readonly fingerprint: string;
  /** Describe without a handshake nonce. */
  describe(deadlineMs: number): Promise<WorkerDescription>;
  /** Both calls of the handshake; `overrides` replace request fields after the proof is computed. */
  recruit(overrides?: Partial<RecruitRequest>, deadlineMs?: number, key?: Buffer): Promise<LeaseReply>;
  /** Describe with a fresh nonce, and the Recruit request that answers it (not sent). */
  handshake(key?: Buffer, clientId?: string): Promise<{ desc: WorkerDescription; request: RecruitRequest; workerProofOk: boolean }>;
  install: WorkerClient['install'];
  compute: WorkerClient['compute'];
  release: WorkerClient['release'];
  close(): void;
}

/** The farm key of this test run (set by the global setup). */
export function testKey(): Buffer {
  return Buffer.from(process.env['TASKFARM_KEY'] ?? '', 'base64url');
}

/** Connects to the daemon at `address` (`host:port`) over TLS, pinning the certificate it presents. */
export async function connectRaw(address: string): Promise<RawWorker> {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(i + 1));
  const certPem = await fetchServerCertificate(host, port, 5000);
  const fingerprint = certFingerprint(certPem);
  const client = createWorkerClient(address, 1000, { kind: 'pinned', certPem });
  async function handshake(key = testKey(), clientId = `test-${randomUUID()}`) {
    const clientNonce = newClientNonce();
    const desc = await client.describe({ client_nonce: clientNonce }, 5000);
    const fields = { workerId: desc.id, clientNonce, workerNonce: desc.worker_nonce, certFingerprint: fingerprint };
    const request: RecruitRequest = {
      client_id: clientId,
      protocol_version: PROTOCOL_VERSION,
      client_host: 'test-host',
      lease_timeout_ms: 3000,
      heartbeat_ms: 500,
      max_message_bytes: 64 * 1024 * 1024,
      client_nonce: clientNonce,
      worker_nonce: desc.worker_nonce,
      client_proof: clientProof(key, fields, clientId),
    };
    return { desc, request, workerProofOk: proofsEqual(workerProof(key, fields), desc.worker_proof) };
  }
  return {
    client,
    fingerprint,
    describe: (ms) => client.describe({ client_nonce: Buffer.alloc(0) }, ms),
    handshake,
    recruit: async (overrides = {}, ms = 5000, key = testKey()) => {
      const { request } = await handshake(key, overrides.client_id);
      return client.recruit({ ...request, ...overrides }, ms);
    },
    install: (token, req, ms) => client.install(token, req, ms),
    compute: (token) => client.compute(token),
    release: (token, ms) => client.release(token, ms),
    close: () => client.close(),
  };
}
