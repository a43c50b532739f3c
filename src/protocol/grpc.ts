/**
 * The only place that loads the gRPC runtime and the proto definition. Everything else talks to
 * workers through the helpers exported here.
 */
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { isIP } from 'node:net';
import * as protoLoader from '@grpc/proto-loader';
import { findPackageFile } from '../util/package-root.js';
import type {
  ClientMessage,
  DescribeRequest,
  InstallReply,
  InstallRequest,
  LeaseReply,
  RecruitRequest,
  UploadChunk,
  UploadReply,
  WorkerDescription,
  WorkerMessage,
} from './messages.js';

export { grpc };

let definition: grpc.GrpcObject | undefined;

function loadDefinition(): grpc.GrpcObject {
  if (definition !== undefined) return definition;
  const pkg = protoLoader.loadSync(findPackageFile('proto/taskfarm.proto'), {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  definition = grpc.loadPackageDefinition(pkg);
  return definition;
}

/** The service definition of taskfarm.v1.Worker. */
export function workerServiceDefinition(): grpc.ServiceDefinition {
  const ns = (loadDefinition()['taskfarm'] as grpc.GrpcObject)['v1'] as grpc.GrpcObject;
  const ctor = ns['Worker'] as grpc.ServiceClientConstructor;
  return ctor.service;
}

/** Default maximum size of one gRPC message, both ways (64 MiB: bundles and large batches fit). */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * How long a keepalive ping may go unanswered before gRPC drops the connection. Long on purpose:
 * grpc-js times the answer with a timer, and after a stall of this process's own event loop (a burst
 * of results from a hundred streams, GC, a slow machine) that timer fires before the socket with
 * the answer is read. At 1 s it dropped every one of 100 or 1,000 healthy workers at once, several
 * times a run (bench `scale`). A silent peer is caught first by the protocol's heartbeats
 * (src/protocol/liveness.ts), which discount such stalls.
 */
const KEEPALIVE_TIMEOUT_MS = 10_000;

/** Channel options for both ends: a keepalive ping every `keepaliveMs`, the connection dropped after {@link KEEPALIVE_TIMEOUT_MS} without an answer. */
export function channelOptions(keepaliveMs: number): grpc.ChannelOptions {
  return {
    'grpc.keepalive_time_ms': keepaliveMs,
    'grpc.keepalive_timeout_ms': Math.max(keepaliveMs, KEEPALIVE_TIMEOUT_MS),
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': Math.min(keepaliveMs, 1000),
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    // Never reconnect behind our back: a lost worker is re-recruited explicitly.
    'grpc.enable_retries': 0,
    'grpc.initial_reconnect_backoff_ms': 200,
    'grpc.max_reconnect_backoff_ms': 1000,
  };
}

/** The typed client of one worker daemon. */
export interface WorkerClient {
  describe(request: DescribeRequest, deadlineMs: number): Promise<WorkerDescription>;
  recruit(request: RecruitRequest, deadlineMs: number): Promise<LeaseReply>;
  install(token: string, request: InstallRequest, deadlineMs: number): Promise<InstallReply>;
  compute(token: string): grpc.ClientDuplexStream<ClientMessage, WorkerMessage>;
  /** Starts an Upload stream (write chunks, end, await the reply). */
  upload(token: string, deadlineMs: number): { stream: grpc.ClientWritableStream<UploadChunk>; reply: Promise<UploadReply> };
  release(token: string, deadlineMs: number): Promise<void>;
  /** Waits until the channel is connected, or rejects at the deadline. */
  waitForReady(deadlineMs: number): Promise<void>;
  close(): void;
}

function leaseMetadata(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('taskfarm-lease', token);
  return md;
}

/**
 * How a channel secures itself: `plaintext` (a worker run with --insecure); `pinned` (TLS, and the
 * worker must present exactly this self-signed certificate — fingerprints are then authenticated by
 * the farm-key handshake); `unverified` (TLS without checking the certificate: only for Describe,
 * e.g. `taskfarm ls`, never to send code or tasks).
 */
export type ChannelSecurity = { readonly kind: 'plaintext' } | { readonly kind: 'unverified' } | { readonly kind: 'pinned'; readonly certPem: string };

/**
 * Fetches the certificate a TLS server presents (no verification: the caller pins it and the farm
 * key handshake authenticates it). Rejects on a connection error or after `timeoutMs`.
 */
export function fetchServerCertificate(host: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host,
      port,
      rejectUnauthorized: false,
      ALPNProtocols: ['h2'],
      ...(isIP(host) === 0 ? { servername: host } : {}),
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no TLS handshake within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const raw = socket.getPeerCertificate(false).raw;
      socket.end();
      socket.destroy();
      if (raw === undefined || raw.length === 0) return reject(new Error('the server presented no certificate'));
      try {
        // Node writes the PEM (hand-made line breaks once produced a blank line for some sizes).
        resolve(new X509Certificate(raw).toString());
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
    socket.once('error', (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
  });
}

function credentialsFor(security: ChannelSecurity): grpc.ChannelCredentials {
  switch (security.kind) {
    case 'plaintext':
      return grpc.credentials.createInsecure();
    case 'unverified':
      return grpc.credentials.createSsl(null, null, null, { rejectUnauthorized: false });
    case 'pinned': {
      const expected = new X509Certificate(security.certPem).raw;
      return grpc.credentials.createSsl(Buffer.from(security.certPem), null, null, {
        // The certificate names no host: what matters is that it is exactly the pinned one (same DER bytes).
        checkServerIdentity: (_host, cert) =>
          cert.raw?.equals(expected) === true ? undefined : new Error('the worker presented a different certificate than the pinned one'),
      });
    }
  }
}

/** Creates a client for the worker at `target` (`host:port`). Nothing is sent until a call is made. */
export function createWorkerClient(target: string, keepaliveMs: number, security: ChannelSecurity = { kind: 'plaintext' }): WorkerClient {
  const Ctor = grpc.makeGenericClientConstructor(workerServiceDefinition(), 'Worker');
  // Workers are dialled by address; an IP address is not a valid TLS server name (RFC 6066).
  const options =
    security.kind === 'plaintext' ? channelOptions(keepaliveMs) : { ...channelOptions(keepaliveMs), 'grpc.ssl_target_name_override': 'taskfarm-worker' };
  const raw = new Ctor(target, credentialsFor(security), options) as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  const deadline = (ms: number): grpc.CallOptions => ({ deadline: Date.now() + ms });
  function unary<Req, Res>(method: string, request: Req, md: grpc.Metadata, ms: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      const fn = raw[method] as (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Res) => void) => void;
      fn.call(raw, request, md, deadline(ms), (err, res) => (err === null ? resolve(res) : reject(err)));
    });
  }
  return {
    describe: (request, ms) => unary('Describe', request, new grpc.Metadata(), ms),
    recruit: (request, ms) => unary('Recruit', request, new grpc.Metadata(), ms),
    install: (token, request, ms) => unary('Install', request, leaseMetadata(token), ms),
    compute: (token) => (raw['Compute'] as (md: grpc.Metadata) => grpc.ClientDuplexStream<ClientMessage, WorkerMessage>).call(raw, leaseMetadata(token)),
    upload: (token, ms) => {
      let stream!: grpc.ClientWritableStream<UploadChunk>;
      const reply = new Promise<UploadReply>((resolve, reject) => {
        stream = (
          raw['Upload'] as (
            md: grpc.Metadata,
            opts: grpc.CallOptions,
            cb: (err: grpc.ServiceError | null, res: UploadReply) => void,
          ) => grpc.ClientWritableStream<UploadChunk>
        ).call(raw, leaseMetadata(token), deadline(ms), (err, res) => (err === null ? resolve(res) : reject(err)));
      });
      return { stream, reply };
    },
    release: async (token, ms) => {
      await unary('Release', {}, leaseMetadata(token), ms);
    },
    waitForReady: (ms) =>
      new Promise((resolve, reject) => raw.waitForReady(Date.now() + ms, (err) => (err === undefined || err === null ? resolve() : reject(err)))),
    close: () => raw.close(),
  };
}

/** True when `err` is a gRPC ServiceError (has a numeric `code` and `details`). */
export function isServiceError(err: unknown): err is grpc.ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number' && 'details' in err;
}
