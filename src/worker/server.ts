/**
 * The worker daemon's core: the gRPC service (Describe, Recruit, Install, Compute, Release), the
 * lease (one client at a time, ended by Release, by the end of the Compute stream or by silence),
 * the code cache and the executor.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { openSync, readSync, closeSync } from 'node:fs';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { componentLogger, type Logger } from '../log.js';
import {
  grpc,
  channelOptions,
  workerServiceDefinition,
  PROTOCOL_VERSION,
  PACKAGE_VERSION,
  LEASE_METADATA_KEY,
  type ClientMessage,
  type DescribeRequest,
  type SharedRef,
  type UploadChunk,
  type UploadReply,
  type InstallReply,
  type InstallRequest,
  type LeaseReply,
  type RecruitRequest,
  type WorkerDescription,
  type WorkerMessage,
  type RemoteErrorMessage,
  GoodbyeReason,
  INLINE_BUNDLE_MARKER,
  Liveness,
  encodeFailures,
  type ExecResults,
} from '../protocol/index.js';
import { MdnsAdvertiser } from '../discovery/index.js';
import { WorkerNonces, clientProof, loadOrCreateTlsIdentity, proofsEqual, workerProof, type TlsIdentity } from '../security/index.js';
import { CodeCache, BundleRejectedError } from './code-cache.js';
import { Executor, ExecutorStartError } from './executor.js';
import { acquireWorkerIdentity, type WorkerIdentity } from './identity.js';
import { resolveWorkerServerOptions, type ResolvedWorkerServerOptions, type WorkerServerOptions } from './options.js';
import type { ChainEntry } from './thread-protocol.js';
import { enterBatchPolicy } from './sched.js';

/** State of a worker as reported by Describe. */
export type WorkerState = 'free' | 'recruited' | 'draining';

/** Events of a {@link WorkerServer}. */
export interface WorkerServerEvents {
  /** A client took the lease. */
  recruited: [clientId: string];
  /** The lease ended; `reason` says why (released, stream ended, expired, drain). */
  released: [clientId: string, reason: string];
  /** A Compute stream's chain was loaded and the first tasks can run. */
  computing: [clientId: string];
  /** Outcomes of tasks went back to the client: their run times in ms (metrics). */
  results: [durationsMs: Float32Array];
}

/** Counters of a {@link WorkerServer} since it started (metrics: `taskfarm worker --metrics-port`). */
export interface WorkerServerStats {
  /** Tasks whose outcome (output or error) was sent to a client. */
  readonly tasksCompleted: number;
  /** Tasks accepted on the current lease and not answered yet. */
  readonly inFlight: number;
  /** Leases granted so far. */
  readonly leases: number;
  /** True while a client holds the lease. */
  readonly leased: boolean;
  /** Programs loaded on the threads now. */
  readonly programsLoaded: number;
  /** Threads now (0 before the first lease starts them). */
  readonly threads: number;
  /** Threads that died (exit, out of memory) and were replaced. */
  readonly threadsCrashed: number;
  /** Threads replaced for any reason (crashes, tasks over their time limit, cancelled tasks). */
  readonly threadsReplaced: number;
  /** Payload bytes received from clients: task inputs, code bundles, shared data. */
  readonly bytesReceived: { readonly inputs: number; readonly bundles: number; readonly shared: number };
}

interface Lease {
  readonly token: string;
  readonly clientId: string;
  readonly clientHost: string;
  readonly timeoutMs: number;
  readonly heartbeatMs: number;
  /** Result messages stay below this size (the smaller of the client's and our limit). */
  readonly maxMessageBytes: number;
  /** Expiry of the lease (nothing heard from the client) and heartbeats on its stream. */
  readonly liveness: Liveness;
  session: Session | undefined;
  streamOpened: boolean;
}

type ComputeCall = grpc.ServerDuplexStream<ClientMessage, WorkerMessage>;

/** A program started on a stream: which loaded program it is, and its tasks' time limit. */
interface StreamProgram {
  readonly key: string;
  readonly timeoutMs: number;
  ready: boolean;
}

interface Session {
  readonly call: ComputeCall;
  /** Programs started on this stream, by the client's number. */
  readonly programs: Map<number, StreamProgram>;
  ended: boolean;
  /** seqs accepted on this stream and not yet answered. */
  readonly inFlight: Set<number>;
}

const MIN_LEASE_TIMEOUT_MS = 300;
/** Programs one lease may have started at once (and the executor keeps loaded). */
const MAX_PROGRAMS = 16;
const DEFAULT_LEASE_TIMEOUT_MS = 3000;
const DEFAULT_HEARTBEAT_MS = 500;

function statusError(code: grpc.status, details: string): grpc.ServerErrorResponse {
  return Object.assign(new Error(details), { code, details });
}

/**
 * A worker daemon. Start it with {@link WorkerServer.start}; stop it with {@link WorkerServer.drain}
 * (graceful: in-flight tasks finish) or {@link WorkerServer.close}.
 * @example
 * const server = new WorkerServer({ port: 7000, threads: 4 });
 * const { port } = await server.start();
 */
export class WorkerServer extends EventEmitter<WorkerServerEvents> {
  readonly options: ResolvedWorkerServerOptions;
  readonly #log: Logger;
  readonly #server: grpc.Server;
  readonly #cache: CodeCache;
  readonly #sharedCache: CodeCache;
  #identity: WorkerIdentity | undefined;
  #advertiser: MdnsAdvertiser | undefined;
  #lease: Lease | undefined;
  #state: WorkerState = 'free';
  /** The thread pool: created for the first lease, kept warm (with its loaded programs) across leases. */
  #executor: Executor | undefined;
  #executorStarting: Promise<Executor> | undefined;
  #port = 0;
  #started = false;
  #closed = false;
  /** The daemon's thread runs as SCHED_BATCH (options.schedBatch, and chrt succeeded). */
  #schedBatch = false;
  #tls: TlsIdentity | undefined;
  #nonces: WorkerNonces;
  #net: NetServer | undefined;
  readonly #sockets = new Set<Socket>();
  #injector: { injectConnection(s: Socket): void; destroy(): void } | undefined;
  #tasksCompleted = 0;
  #leases = 0;
  readonly #received = { inputs: 0, bundles: 0, shared: 0 };

  constructor(options: WorkerServerOptions = {}) {
    super();
    this.options = resolveWorkerServerOptions(options);
    this.#log = componentLogger('worker', this.options.logger);
    this.#cache = new CodeCache(`${this.options.cacheDir}/bundles`, this.options.cacheMaxBytes);
    this.#sharedCache = new CodeCache(`${this.options.cacheDir}/shared`, this.options.sharedCacheMaxBytes, '.bin');
    this.#nonces = new WorkerNonces(this.options.handshakeMs);
    this.#server = new grpc.Server({
      ...channelOptions(1000),
      'grpc.max_concurrent_streams': 64,
      'grpc.max_connection_idle_ms': this.options.idleTimeoutMs,
      'grpc.max_receive_message_length': this.options.maxMessageBytes,
      'grpc.max_send_message_length': this.options.maxMessageBytes,
    });
    this.#server.addService(workerServiceDefinition(), {
      Describe: (call: grpc.ServerUnaryCall<DescribeRequest, WorkerDescription>, cb: grpc.sendUnaryData<WorkerDescription>) => {
        const desc = this.describe(call.request.client_nonce);
        if (desc.worker_nonce.length > 0) this.#handshakeBegun(desc.worker_nonce, call.getPeer());
        cb(null, desc);
      },
      Recruit: (call: grpc.ServerUnaryCall<RecruitRequest, LeaseReply>, cb: grpc.sendUnaryData<LeaseReply>) => this.#recruit(call, cb),
      Install: (call: grpc.ServerUnaryCall<InstallRequest, InstallReply>, cb: grpc.sendUnaryData<InstallReply>) => {
        this.#install(call).then(
          (reply) => cb(null, reply),
          (err: unknown) => cb(err as grpc.ServiceError),
        );
      },
      Compute: (call: ComputeCall) => this.#compute(call),
      Upload: (call: grpc.ServerReadableStream<UploadChunk, UploadReply>, cb: grpc.sendUnaryData<UploadReply>) => this.#upload(call, cb),
      Release: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        const lease = this.#leaseOf(call.metadata);
        if (lease === undefined) return cb(statusError(grpc.status.UNAUTHENTICATED, NO_LEASE));
        this.#endLease(lease, 'released by the client', GoodbyeReason.RELEASED);
        cb(null, {});
      },
    });
  }

  /** The worker's id (stable across restarts of the same install). Valid after {@link start}. */
  get id(): string {
    return this.options.id ?? this.#identity?.id ?? '';
  }

  /** The port the daemon listens on. Valid after {@link start}. */
  get port(): number {
    return this.#port;
  }

  /** Current state: free, recruited or draining. */
  get state(): WorkerState {
    return this.#state;
  }

  /** Counters since start (cheap: read them at every metrics scrape). */
  get stats(): WorkerServerStats {
    const executor = this.#executor;
    return {
      tasksCompleted: this.#tasksCompleted,
      inFlight: this.#lease?.session?.inFlight.size ?? 0,
      leases: this.#leases,
      leased: this.#lease !== undefined,
      programsLoaded: executor?.programsLoaded ?? 0,
      threads: executor?.threads ?? 0,
      threadsCrashed: executor?.crashedThreads ?? 0,
      threadsReplaced: executor?.replacedThreads ?? 0,
      bytesReceived: { ...this.#received },
    };
  }

  /** Binds the port and starts serving. Resolves with the bound port. */
  async start(): Promise<{ port: number; id: string }> {
    if (this.#started) throw new Error('WorkerServer.start() called twice');
    this.#started = true;
    if (this.options.id === undefined) this.#identity = acquireWorkerIdentity(this.options.cacheDir, this.options.hostname);
    // Set before the listener opens, so before any task thread exists: they inherit the policy and
    // leave it as they start. Linux only; elsewhere the option does nothing.
    const batching = this.options.schedBatch && process.platform === 'linux' ? enterBatchPolicy() : undefined;
    if (this.options.insecure) {
      this.#log.warn('INSECURE: no farm key and no TLS; anyone who can reach this port can run code on this machine');
    } else {
      this.#tls = await loadOrCreateTlsIdentity(`${this.options.cacheDir}/tls`, `taskfarm-worker ${this.id}`);
    }
    if (batching !== undefined) {
      const why = await batching;
      if (why === undefined) this.#schedBatch = true;
      else this.#log.warn("the daemon's thread keeps the normal scheduling policy, so it may preempt a task thread between two tasks", { reason: why });
    }
    // Our own listener in front of gRPC. It bounds the connections, terminates TLS itself (so that a
    // handshake that does not complete within handshakeMs — a half-open or trickling connection — is
    // closed), and hands gRPC the decrypted connection. Once a connection speaks HTTP/2, gRPC's
    // keepalive catches dead peers and `grpc.max_connection_idle_ms` closes connections without calls.
    const injector = this.#server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    this.#injector = injector;
    const track = (socket: Socket): void => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
      socket.on('error', () => {});
    };
    let net: NetServer;
    if (this.#tls !== undefined) {
      const tlsServer = createTlsServer(
        {
          key: this.#tls.key,
          cert: this.#tls.cert,
          ALPNProtocols: ['h2'],
          // A connection silent (or trickling) before its TLS handshake completes is idle too.
          handshakeTimeout: Math.min(this.options.handshakeMs, this.options.idleTimeoutMs),
          minVersion: 'TLSv1.2',
        },
        (tlsSocket) => {
          track(tlsSocket);
          injector.injectConnection(tlsSocket);
        },
      );
      tlsServer.on('connection', (raw: Socket) => track(raw));
      tlsServer.on('tlsClientError', (err, socket) => {
        // A plaintext client (one run with --insecure, or an older taskfarm) fails here: tell the admin.
        if (/wrong version number|http request|unknown protocol|record layer failure/i.test(err.message)) {
          this.#warnRefused('tls', 'refused a connection that does not speak TLS (a client run with --insecure?); this worker requires the farm key and TLS', {
            from: socket.remoteAddress,
          });
        } else this.#log.debug('a TLS handshake failed', { from: socket.remoteAddress, error: err.message });
        socket.destroy();
      });
      net = tlsServer;
    } else {
      // Plaintext (--insecure): the connection is gRPC's at once; its idle limit closes silent ones.
      net = createServer({ noDelay: true }, (socket) => {
        track(socket);
        injector.injectConnection(socket);
      });
    }
    net.maxConnections = this.options.maxConnections;
    this.#net = net;
    this.#port = await new Promise<number>((resolve, reject) => {
      net.once('error', reject);
      net.listen({ port: this.options.port, host: this.options.host }, () => {
        net.off('error', reject);
        const addr = net.address();
        resolve(typeof addr === 'object' && addr !== null ? addr.port : this.options.port);
      });
    });
    this.#log.info('worker listening', { id: this.id, port: this.#port, threads: this.options.threads, tls: !this.options.insecure });
    if (this.options.advertise) {
      this.#advertiser = new MdnsAdvertiser({
        advert: {
          id: this.id,
          farm: this.options.farm,
          threads: this.options.threads,
          proto: PROTOCOL_VERSION,
          version: PACKAGE_VERSION,
          hostname: this.options.hostname,
          secure: !this.options.insecure,
        },
        port: this.#port,
        ...(this.options.interface === undefined ? {} : { interface: this.options.interface }),
        logger: this.#log,
      });
      // JJPF's rule: advertised while free, withdrawn while recruited.
      this.on('recruited', (client) => void this.#advertiser?.advertiseBusy(client));
      this.on('released', () => {
        if (this.#state === 'free') void this.#advertiser?.advertiseFree();
      });
      await this.#advertiser.advertiseFree();
    }
    return { port: this.#port, id: this.id };
  }

  /** What Describe answers; with a client nonce, the worker's half of the handshake. */
  describe(clientNonce?: Uint8Array): WorkerDescription {
    let worker_nonce: Uint8Array = Buffer.alloc(0);
    let worker_proof: Uint8Array = Buffer.alloc(0);
    const key = this.options.key;
    if (key !== undefined && clientNonce !== undefined && clientNonce.length >= 16 && clientNonce.length <= 64) {
      worker_nonce = this.#nonces.issue(clientNonce);
      worker_proof = workerProof(key, { workerId: this.id, clientNonce, workerNonce: worker_nonce, certFingerprint: this.#tls?.fingerprint ?? '' });
    }
    return {
      secure: !this.options.insecure,
      worker_nonce,
      worker_proof,
      max_message_bytes: this.options.maxMessageBytes,
      max_bundle_bytes: this.options.maxBundleBytes,
      max_in_flight: this.options.maxInFlight,
      max_shared_bytes: this.options.maxSharedBytes,
      max_programs: MAX_PROGRAMS,
      id: this.id,
      hostname: this.options.hostname,
      threads: this.options.threads,
      protocol_version: PROTOCOL_VERSION,
      state: this.#state,
      version: PACKAGE_VERSION,
      farm: this.options.farm,
    };
  }

  #recruit(call: grpc.ServerUnaryCall<RecruitRequest, LeaseReply>, cb: grpc.sendUnaryData<LeaseReply>): void {
    const req = call.request;
    this.#pendingHandshakes.delete(Buffer.from(req.worker_nonce).toString('hex'));
    if (req.protocol_version !== PROTOCOL_VERSION) {
      this.#warnRefused(
        'protocol',
        `refused a recruit from a client that speaks taskfarm protocol ${req.protocol_version} (this worker speaks ${PROTOCOL_VERSION}, taskfarm ${PACKAGE_VERSION}): install the same taskfarm version on client and workers`,
        { from: call.getPeer(), client: req.client_host.slice(0, 100) },
      );
      return cb(
        statusError(
          grpc.status.FAILED_PRECONDITION,
          `protocol version mismatch: this worker speaks taskfarm protocol ${PROTOCOL_VERSION} (taskfarm ${PACKAGE_VERSION}), ` +
            `the client speaks ${req.protocol_version}; install the same taskfarm version on client and workers`,
        ),
      );
    }
    const key = this.options.key;
    if (key !== undefined) {
      const why = this.#authenticate(key, req);
      if (why !== undefined) {
        this.#warnRefused('key', `refused a recruit that did not prove the farm key: ${why}`, { from: call.getPeer(), client: req.client_host.slice(0, 100) });
        return cb(statusError(grpc.status.UNAUTHENTICATED, `worker ${this.id} refused the recruit: ${why}`));
      }
    }
    if (this.#state === 'draining' || this.#closed) return cb(statusError(grpc.status.UNAVAILABLE, 'worker is shutting down'));
    if (this.#lease !== undefined) {
      this.#log.debug('busy: a second client asked for the lease', { client: req.client_host.slice(0, 100), holder: this.#lease.clientHost });
      return cb(
        statusError(
          grpc.status.RESOURCE_EXHAUSTED,
          `worker ${this.id} is recruited by client ${this.#lease.clientId}${this.#lease.clientHost ? ` on ${this.#lease.clientHost}` : ''}`,
        ),
      );
    }
    const timeoutMs = Math.min(
      this.options.maxLeaseTimeoutMs,
      Math.max(MIN_LEASE_TIMEOUT_MS, req.lease_timeout_ms > 0 ? req.lease_timeout_ms : DEFAULT_LEASE_TIMEOUT_MS),
    );
    const heartbeatMs = Math.max(50, Math.min(timeoutMs, req.heartbeat_ms > 0 ? req.heartbeat_ms : DEFAULT_HEARTBEAT_MS));
    const token = randomBytes(24).toString('base64url');
    const lease: Lease = {
      token,
      clientId: req.client_id.slice(0, 200),
      clientHost: req.client_host.slice(0, 200),
      timeoutMs,
      heartbeatMs,
      maxMessageBytes: Math.min(this.options.maxMessageBytes, req.max_message_bytes > 0 ? req.max_message_bytes : 4 * 1024 * 1024),
      session: undefined,
      streamOpened: false,
      // A heartbeat only when nothing else went to the client lately: results are signs of life too.
      liveness: new Liveness({
        heartbeatMs,
        timeoutMs,
        checkMs: Math.max(50, Math.floor(Math.min(heartbeatMs, timeoutMs / 4))),
        sendHeartbeat: () => {
          if (lease.session !== undefined) this.#write(lease.session, { heartbeat: { sent_at_ms: Date.now() } });
        },
        onSilent: () => this.#endLease(lease, `expired: no message from the client for ${lease.timeoutMs} ms`, GoodbyeReason.EXPIRED),
      }),
    };
    this.#lease = lease;
    this.#leases++;
    this.#state = 'recruited';
    this.#log.info('recruited', { client: lease.clientId, clientHost: lease.clientHost, leaseTimeoutMs: timeoutMs });
    this.emit('recruited', lease.clientId);
    cb(null, { token, lease_timeout_ms: timeoutMs, worker_id: this.id, threads: this.options.threads });
  }

  /** When each kind of refusal was last logged, and how many were held back since. */
  readonly #refused = new Map<string, { at: number; held: number }>();

  /**
   * Logs a refused client at warn level, so the worker's admin sees why a client could not use it:
   * at most once a second per kind of refusal (a stranger hammering the port must not flood the log).
   */
  #warnRefused(kind: string, message: string, fields?: Record<string, unknown>): void {
    const now = Date.now();
    const last = this.#refused.get(kind);
    if (last !== undefined && now - last.at < 1000) {
      last.held++;
      return;
    }
    const held = last?.held ?? 0;
    this.#refused.set(kind, { at: now, held: 0 });
    this.#log.warn(held > 0 ? `${message} (and ${held} more refused since the last report)` : message, fields);
  }

  /** Handshakes begun by Describe and not yet followed by a Recruit: worker nonce (hex) → when, from whom. Bounded. */
  readonly #pendingHandshakes = new Map<string, { at: number; from: string }>();
  #handshakeSweep: NodeJS.Timeout | undefined;

  #handshakeBegun(workerNonce: Uint8Array, from: string): void {
    // A flood of Describes must not grow this: past the bound, handshakes are simply not followed.
    if (this.#pendingHandshakes.size >= 256) return;
    this.#pendingHandshakes.set(Buffer.from(workerNonce).toString('hex'), { at: Date.now(), from });
    if (this.#handshakeSweep === undefined) {
      this.#handshakeSweep = setInterval(() => this.#sweepHandshakes(), 1000);
      this.#handshakeSweep.unref();
    }
  }

  /**
   * A client that begins the key handshake and never recruits has, most likely, another farm key:
   * it cannot verify this worker's proof, so it stops there and sends nothing. Say so to the admin.
   */
  #sweepHandshakes(): void {
    const now = Date.now();
    for (const [nonce, h] of this.#pendingHandshakes) {
      if (now - h.at < this.options.handshakeMs) continue;
      this.#pendingHandshakes.delete(nonce);
      this.#warnRefused(
        'abandoned',
        `a client began the farm-key handshake and did not go on within ${this.options.handshakeMs} ms: a client whose farm key is not ` +
          "this worker's stops there (it cannot verify this worker's proof); check the key on that machine",
        { from: h.from },
      );
    }
    if (this.#pendingHandshakes.size === 0) {
      clearInterval(this.#handshakeSweep);
      this.#handshakeSweep = undefined;
    }
  }

  /** Why the client's handshake fails, or undefined when it proves the farm key. */
  #authenticate(key: Buffer, req: RecruitRequest): string | undefined {
    const clientNonce = req.client_nonce;
    const workerNonce = req.worker_nonce;
    if (clientNonce.length < 16 || clientNonce.length > 64 || workerNonce.length === 0 || req.client_proof.length === 0) {
      return 'no farm-key handshake (the client has no key, or speaks an older protocol)';
    }
    const nonceProblem = this.#nonces.check(workerNonce, clientNonce);
    if (nonceProblem !== undefined) return nonceProblem;
    const expected = clientProof(key, { workerId: this.id, clientNonce, workerNonce, certFingerprint: this.#tls?.fingerprint ?? '' }, req.client_id);
    if (!proofsEqual(expected, req.client_proof)) return "the client's farm key is not this worker's farm key";
    // Only a proven client uses up a nonce, so strangers cannot fill the table of used ones.
    return this.#nonces.redeem(workerNonce, clientNonce);
  }

  #leaseOf(metadata: grpc.Metadata): Lease | undefined {
    const values = metadata.get(LEASE_METADATA_KEY);
    const token = values.length === 1 && typeof values[0] === 'string' ? values[0] : undefined;
    const lease = this.#lease;
    if (token === undefined || lease === undefined || token !== lease.token) return undefined;
    lease.liveness.heard();
    return lease;
  }

  async #install(call: grpc.ServerUnaryCall<InstallRequest, InstallReply>): Promise<InstallReply> {
    const lease = this.#leaseOf(call.metadata);
    if (lease === undefined) throw statusError(grpc.status.UNAUTHENTICATED, NO_LEASE);
    const req = call.request;
    if (req.hashes.length > 256 || req.bundles.length > 256) throw statusError(grpc.status.INVALID_ARGUMENT, 'at most 256 bundles per Install');
    for (const b of req.bundles) {
      if (b.code.length > this.options.maxBundleBytes) {
        throw statusError(
          grpc.status.INVALID_ARGUMENT,
          `bundle ${String(b.hash).slice(0, 16)}… is ${b.code.length} bytes; this worker accepts bundles of at most ${this.options.maxBundleBytes} bytes (--max-bundle-mb)`,
        );
      }
    }
    for (const h of req.hashes) {
      if (!CodeCache.isHash(h)) throw statusError(grpc.status.INVALID_ARGUMENT, `not a sha256 hex digest: ${JSON.stringify(h.slice(0, 80))}`);
    }
    for (const b of req.bundles) {
      this.#received.bundles += b.code.length;
      try {
        await this.#cache.put(b.hash, b.code);
      } catch (err) {
        if (err instanceof BundleRejectedError) throw statusError(grpc.status.INVALID_ARGUMENT, err.message);
        throw statusError(grpc.status.INTERNAL, `storing bundle failed: ${(err as Error).message}`);
      }
    }
    const shared = req.shared ?? [];
    for (const h of shared) {
      if (!CodeCache.isHash(h)) throw statusError(grpc.status.INVALID_ARGUMENT, `not a sha256 hex digest: ${JSON.stringify(h.slice(0, 80))}`);
    }
    return { missing: this.#cache.missing(req.hashes), missing_shared: this.#sharedCache.missing(shared) };
  }

  /** Receives one shared blob in chunks; verified against its hash before it is kept. */
  #upload(call: grpc.ServerReadableStream<UploadChunk, UploadReply>, cb: grpc.sendUnaryData<UploadReply>): void {
    const lease = this.#leaseOf(call.metadata);
    if (lease === undefined) return cb(statusError(grpc.status.UNAUTHENTICATED, NO_LEASE));
    let put: ReturnType<CodeCache['beginPut']> | undefined;
    let failed = false;
    const fail = (code: grpc.status, why: string): void => {
      if (failed) return;
      failed = true;
      put?.abort();
      call.destroy();
      cb(statusError(code, why));
    };
    call.on('data', (chunk: UploadChunk) => {
      if (failed) return;
      if (this.#lease !== lease) return fail(grpc.status.UNAUTHENTICATED, 'the lease ended during the upload');
      lease.liveness.heard();
      try {
        if (put === undefined) {
          if (!CodeCache.isHash(chunk.hash)) return fail(grpc.status.INVALID_ARGUMENT, 'the first chunk must name the sha256 of the shared data');
          const total = Number(chunk.total_bytes);
          if (!Number.isSafeInteger(total) || total < 0 || total > this.options.maxSharedBytes) {
            return fail(
              grpc.status.INVALID_ARGUMENT,
              `shared data of ${total} bytes; this worker accepts at most ${this.options.maxSharedBytes} bytes (--max-shared-mb)`,
            );
          }
          put = this.#sharedCache.beginPut(chunk.hash, total);
        }
        this.#received.shared += chunk.data.length;
        put.write(chunk.data);
      } catch (err) {
        fail(grpc.status.INVALID_ARGUMENT, (err as Error).message);
      }
    });
    call.on('error', () => {
      failed = true;
      put?.abort();
    });
    call.on('end', () => {
      if (failed) return;
      if (put === undefined) return fail(grpc.status.INVALID_ARGUMENT, 'an empty upload');
      const p = put;
      p.finish().then(
        () => cb(null, { received: p.received() }),
        (err: unknown) => {
          failed = true;
          cb(statusError(err instanceof BundleRejectedError ? grpc.status.INVALID_ARGUMENT : grpc.status.INTERNAL, (err as Error).message));
        },
      );
    });
  }

  #compute(call: ComputeCall): void {
    const lease = this.#leaseOf(call.metadata);
    if (lease === undefined) {
      call.emit('error', statusError(grpc.status.UNAUTHENTICATED, NO_LEASE));
      return;
    }
    if (lease.streamOpened) {
      call.emit('error', statusError(grpc.status.FAILED_PRECONDITION, 'this lease already has a Compute stream'));
      return;
    }
    lease.streamOpened = true;
    const session: Session = {
      call,
      programs: new Map(),
      ended: false,
      inFlight: new Set(),
    };
    lease.session = session;
    call.on('data', (msg: ClientMessage) => {
      if (this.#lease !== lease) return;
      lease.liveness.heard();
      this.#onClientMessage(lease, session, msg);
    });
    call.on('end', () => this.#endLease(lease, 'the stream ended (the client closed it, or the connection dropped)'));
    call.on('error', (err) => this.#endLease(lease, `stream error: ${err.message}`));
    call.on('cancelled', () => this.#endLease(lease, 'the client cancelled the stream'));
    // The threads start with the first stream (and stay for later leases); the client learns the
    // stream is open, and how many threads run, from Ready{program 0}.
    this.#threads().then(
      (executor) => {
        if (this.#lease !== lease || session.ended) return;
        executor.maxResultBytes = lease.maxMessageBytes - 1024;
        this.#write(session, { ready: { threads: executor.threads, program: 0 } });
        this.emit('computing', lease.clientId);
      },
      (err: unknown) => this.#failStream(lease, `the worker's threads failed to start: ${(err as Error).message}`, grpc.status.INTERNAL),
    );
  }

  /** The daemon's executor, started once. */
  #threads(): Promise<Executor> {
    if (this.#executor !== undefined) return Promise.resolve(this.#executor);
    this.#executorStarting ??= (async () => {
      const executor = new Executor({
        threads: this.options.threads,
        workerId: this.id,
        hostname: this.options.hostname,
        resourceLimits: { maxOldGenerationSizeMb: this.options.threadMemoryMb },
        nice: this.options.nice,
        leaveBatch: this.#schedBatch,
        maxPrograms: MAX_PROGRAMS,
        logger: this.#log,
        onResults: (results) => this.#onResults(results),
      });
      try {
        await executor.start();
      } catch (err) {
        this.#executorStarting = undefined;
        throw err;
      }
      if (this.#closed) {
        await executor.close();
        throw new Error('the worker is shutting down');
      }
      this.#executor = executor;
      return executor;
    })();
    return this.#executorStarting;
  }

  #onClientMessage(lease: Lease, session: Session, msg: ClientMessage): void {
    switch (msg.body) {
      case 'start': {
        const id = msg.start.program;
        if (!Number.isInteger(id) || id <= 0) return this.#failStream(lease, 'Start must name a program number above 0 (protocol 3)');
        if (session.programs.has(id)) return this.#failStream(lease, `program ${id} started twice on one stream`);
        if (session.programs.size >= MAX_PROGRAMS) {
          return this.#failStream(lease, `more than ${MAX_PROGRAMS} programs started on one stream (Unload some first)`, grpc.status.RESOURCE_EXHAUSTED);
        }
        void this.#start(lease, session, id, msg.start.chain, msg.start.task_timeout_ms, msg.start.shared);
        return;
      }
      case 'tasks': {
        const { seqs, inputs, program } = msg.tasks;
        const p = session.programs.get(program);
        if (p === undefined || !p.ready || this.#executor === undefined)
          return this.#failStream(lease, `tasks sent for program ${program}, which is not ready on this stream`);
        if (seqs.length === 0) return;
        this.#received.inputs += inputs.length;
        if (this.#state === 'draining') {
          // Too late: tell the client these never ran, so it requeues them without counting an attempt.
          this.#writeFailures(session, seqs, cancelled('the worker is shutting down'));
          return;
        }
        if (session.inFlight.size + seqs.length > this.options.maxInFlight) {
          return this.#failStream(lease, `more than ${this.options.maxInFlight} tasks in flight on one lease`, grpc.status.RESOURCE_EXHAUSTED);
        }
        const before = session.inFlight.size;
        for (const s of seqs) session.inFlight.add(s);
        if (session.inFlight.size !== before + seqs.length) {
          return this.#failStream(lease, 'a sequence id was sent twice while in flight');
        }
        this.#executor.submit({ seqs: Uint32Array.from(seqs), inputs, program: p.key, priority: msg.tasks.priority, timeoutMs: p.timeoutMs });
        return;
      }
      case 'cancel': {
        const seqs = new Set(msg.cancel.seqs);
        for (const s of seqs) session.inFlight.delete(s);
        this.#executor?.cancel(seqs);
        return;
      }
      case 'unload':
        // The client is done with them; the executor keeps them loaded (least recently used go first).
        for (const id of msg.unload.programs) session.programs.delete(id);
        return;
      case 'heartbeat':
        return;
      default:
        this.#log.warn('ignoring a malformed message from the client', { client: lease.clientId });
    }
  }

  async #start(lease: Lease, session: Session, id: number, chain: readonly string[], taskTimeoutMs: number, sharedRefs: readonly SharedRef[]): Promise<void> {
    const startFailed = (name: string, message: string): void => {
      session.programs.delete(id);
      this.#write(session, { start_failed: { program: id, error: { kind: 'setup', name, message, stack: '', code: '' } } });
    };
    // Reserved at once: a second Start with this number is a protocol error even while this one loads.
    session.programs.set(id, { key: '', timeoutMs: 0, ready: false });
    if (chain.length === 0 || chain.length > 256) return startFailed('BadProgram', `a program has 1 to 256 stages, this one ${chain.length}`);
    const entries: ChainEntry[] = [];
    for (const hash of chain) {
      if (!this.#cache.has(hash)) return startFailed('BundleMissing', `bundle ${hash} is not installed on this worker (call Install first)`);
      const path = this.#cache.pathOf(hash);
      entries.push({ hash, path, inline: isInlineBundle(path) });
    }
    const shared: { name: string; kind: 'bytes' | 'value'; path: string }[] = [];
    for (const ref of sharedRefs) {
      if (!this.#sharedCache.has(ref.hash) || (ref.kind !== 'bytes' && ref.kind !== 'value') || ref.name.length === 0) {
        return startFailed('SharedMissing', `shared data "${ref.name}" (${ref.hash}) is not uploaded to this worker, or malformed`);
      }
      shared.push({ name: ref.name, kind: ref.kind, path: this.#sharedCache.pathOf(ref.hash) });
    }
    const key = [...chain, ...sharedRefs.map((r) => `${r.name}=${r.kind}:${r.hash}`)].join(',');
    try {
      const executor = await this.#threads();
      await executor.loadProgram({ key, chain: entries, shared });
    } catch (err) {
      if (this.#lease !== lease || session.ended) return;
      const remote: RemoteErrorMessage =
        err instanceof ExecutorStartError
          ? err.remote
          : { kind: 'setup', name: 'Error', message: (err as Error).message, stack: (err as Error).stack ?? '', code: '' };
      this.#log.warn('loading a program failed', { client: lease.clientId, error: remote.message });
      session.programs.delete(id);
      this.#write(session, { start_failed: { program: id, error: remote } });
      return;
    }
    if (this.#lease !== lease || session.ended || !session.programs.has(id)) return;
    session.programs.set(id, { key, timeoutMs: taskTimeoutMs, ready: true });
    this.#log.debug('program loaded', { program: id, stages: entries.length });
    this.#write(session, { ready: { threads: this.options.threads, program: id } });
  }

  #onResults(results: ExecResults): void {
    const session = this.#lease?.session;
    if (session === undefined || session.ended) return;
    for (const seq of results.seqs) session.inFlight.delete(seq);
    this.#tasksCompleted += results.seqs.length;
    if (this.listenerCount('results') > 0) this.emit('results', results.durations);
    // Outcomes of cancelled tasks may ride along: the client ignores seqs it no longer waits for.
    this.#write(session, { results: { seqs: Array.from(results.seqs), outcomes: results.outcomes, durations_ms: Array.from(results.durations) } });
  }

  #writeFailures(session: Session, seqs: readonly number[], error: RemoteErrorMessage): void {
    if (seqs.length === 0) return;
    this.#write(session, { results: { seqs: [...seqs], outcomes: encodeFailures(seqs.length, error), durations_ms: new Array<number>(seqs.length).fill(0) } });
  }

  #write(session: Session, msg: WorkerMessage): void {
    if (session.ended) return;
    this.#lease?.liveness.wrote();
    try {
      session.call.write(msg);
    } catch (err) {
      this.#log.warn('writing to the client failed', { error: (err as Error).message });
    }
  }

  #failStream(lease: Lease, why: string, code: grpc.status = grpc.status.FAILED_PRECONDITION): void {
    this.#log.warn('protocol error from the client', { client: lease.clientId, why });
    const session = lease.session;
    if (session !== undefined && !session.ended) {
      this.#write(session, { goodbye: { reason: GoodbyeReason.PROTOCOL_ERROR, detail: why } });
      session.ended = true;
      session.call.emit('error', statusError(code, why));
    }
    this.#endLease(lease, `protocol error: ${why}`);
  }

  /** Ends the lease; `goodbye` tells the client why when it is the worker's own decision. */
  #endLease(lease: Lease, reason: string, goodbye?: GoodbyeReason): void {
    if (this.#lease !== lease) return;
    this.#lease = undefined;
    lease.liveness.stop();
    const session = lease.session;
    if (session !== undefined) {
      if (goodbye !== undefined) this.#write(session, { goodbye: { reason: goodbye, detail: reason } });
      if (!session.ended) {
        session.ended = true;
        try {
          session.call.end();
        } catch {
          // the stream is already gone
        }
      }
      if (session.inFlight.size > 0) {
        this.#executor?.cancel(session.inFlight);
        session.inFlight.clear();
      }
    }
    if (this.#state === 'recruited') this.#state = 'free';
    this.#log.info('lease ended', { client: lease.clientId, reason });
    this.emit('released', lease.clientId, reason);
  }

  /**
   * Graceful shutdown: accepts no new lease or task, lets in-flight tasks finish (at most
   * `graceMs`), sends their results, ends the lease and stops serving.
   */
  async drain(graceMs = this.options.graceMs): Promise<void> {
    if (this.#closed) return;
    this.#state = 'draining';
    const goodbye = this.#advertiser?.close();
    const lease = this.#lease;
    const session = lease?.session;
    if (lease !== undefined && session !== undefined && !session.ended) {
      this.#write(session, { draining: { grace_ms: graceMs } });
      const executor = this.#executor;
      if (executor !== undefined) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([executor.onIdle(), new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
        clearTimeout(timer);
      }
      // Let the threads' last outcomes arrive before the stream ends.
      await new Promise<void>((r) => setImmediate(r));
      this.#writeFailures(session, [...session.inFlight], cancelled('the worker shut down before this task finished'));
      session.inFlight.clear();
    }
    if (lease !== undefined) this.#endLease(lease, 'the worker is shutting down', GoodbyeReason.DRAINING);
    await goodbye;
    await this.close();
  }

  /** Stops serving at once: ends the lease, terminates the threads, closes the port. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#handshakeSweep);
    this.#state = 'draining';
    const goodbye = this.#advertiser?.close();
    if (this.#lease !== undefined) this.#endLease(this.#lease, 'the worker is shutting down', GoodbyeReason.DRAINING);
    await goodbye;
    const executor = this.#executor ?? (await this.#executorStarting?.catch(() => undefined));
    this.#executor = undefined;
    await executor?.close();
    // Stop accepting; the listener's close completes once every connection is gone (below).
    const net = this.#net;
    const listenerClosed = new Promise<void>((resolve) => (net === undefined ? resolve() : net.close(() => resolve())));
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.#server.forceShutdown();
        for (const s of this.#sockets) s.destroy();
        resolve();
      }, 1000);
      this.#server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    this.#injector?.destroy();
    for (const s of this.#sockets) s.destroy();
    await listenerClosed;
    this.#identity?.release();
    this.#log.info('worker stopped', { id: this.id });
  }
}

const NO_LEASE = 'no valid lease token: Recruit first (every call after Recruit carries its lease token)';

function cancelled(message: string): RemoteErrorMessage {
  return { kind: 'cancelled', name: 'Cancelled', message, stack: '', code: '' };
}

function isInlineBundle(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(INLINE_BUNDLE_MARKER.length);
    readSync(fd, buf, 0, buf.length, 0);
    return buf.toString('utf8') === INLINE_BUNDLE_MARKER;
  } finally {
    closeSync(fd);
  }
}
