/**
 * A recruited worker daemon: Describe → Recruit → Compute stream (open, Ready{0}); then per program
 * Install (only what it lacks) → Upload shared data → Start → Ready{program}. Application heartbeats
 * both ways on top of gRPC keepalive. Protocol 3: one lease runs several programs.
 */
import { hostname } from 'node:os';
import {
  createWorkerClient,
  fetchServerCertificate,
  MAX_MESSAGE_BYTES,
  type ChannelSecurity,
  fromServiceError,
  Liveness,
  PROTOCOL_VERSION,
  PACKAGE_VERSION,
  type ClientMessage,
  type WorkerClient,
  type WorkerDescription,
  type WorkerMessage,
  type grpc,
} from '../protocol/index.js';
import { AuthenticationError, FarmError, InvalidStageError, ProtocolError, StageSetupError, WorkerLostError } from '../errors.js';
import { certFingerprint, clientProof, newClientNonce, proofsEqual, workerProof } from '../security/index.js';
import { formatTarget, type WorkerEndpoint } from '../discovery/index.js';
import type { Logger } from '../log.js';
import type { ExecBatch } from '../protocol/index.js';
import { sharedChunks, type PreparedShared } from './shared.js';
import type { LinkHandlers, LinkProgram, PrepareResult, WorkerInfo, WorkerLink } from './link.js';

/** Timing knobs of a remote link. */
export interface RemoteLinkOptions {
  readonly clientId: string;
  readonly connectTimeoutMs: number;
  readonly heartbeatMs: number;
  readonly heartbeatTimeoutMs: number;
  readonly leaseTimeoutMs: number;
  readonly setupTimeoutMs: number;
  /** Only workers of this farm are recruited (undefined: any). */
  readonly farm: string | undefined;
  /** The farm key; undefined only in insecure mode (plaintext, workers run with --insecure). */
  readonly key: Buffer | undefined;
  readonly logger: Logger;
}

type ComputeStream = grpc.ClientDuplexStream<ClientMessage, WorkerMessage>;

/**
 * Describes the worker at one address, within the timeout, without authenticating it (for
 * `taskfarm ls`; never use the answer to decide where to send code or tasks).
 */
export async function describeWorker(target: string, timeoutMs: number, tls = true): Promise<WorkerDescription> {
  const client = createWorkerClient(target, 1000, tls ? { kind: 'unverified' } : { kind: 'plaintext' });
  try {
    return await client.describe({ client_nonce: Buffer.alloc(0) }, timeoutMs);
  } finally {
    client.close();
  }
}

/** A worker daemon recruited by this client. See the module comment. */
/** A program on this link: its number on the stream and its state. */
interface StreamProgram {
  readonly id: number;
  readonly ready: Promise<PrepareResult>;
  settled: boolean;
  ok: boolean;
  resolve: (r: PrepareResult) => void;
  reject: (err: FarmError) => void;
  /** Cost of preparing it, known once the uploads are done. */
  cost: PrepareResult;
}

export class RemoteLink implements WorkerLink {
  info: WorkerInfo;
  maxInFlight = Number.MAX_SAFE_INTEGER;
  maxPayloadBytes = Number.MAX_SAFE_INTEGER;
  maxPrograms = 16;
  readonly #client: WorkerClient;
  readonly #token: string;
  readonly #stream: ComputeStream;
  readonly #options: RemoteLinkOptions;
  readonly #desc: WorkerDescription;
  #handlers: LinkHandlers | undefined;
  #failStart: ((err: FarmError) => void) | undefined;
  #liveness: Liveness | undefined;
  #gone = false;
  #goodbye: { reason: string; detail: string } | undefined;
  readonly #programs = new Map<string, StreamProgram>();
  readonly #byId = new Map<number, StreamProgram>();
  #nextProgram = 1;

  private constructor(info: WorkerInfo, client: WorkerClient, token: string, stream: ComputeStream, options: RemoteLinkOptions, desc: WorkerDescription) {
    this.info = info;
    this.#client = client;
    this.#token = token;
    this.#stream = stream;
    this.#options = options;
    this.#desc = desc;
  }

  /**
   * Recruits the worker at `endpoint` and opens its Compute stream. Tries the endpoint's addresses
   * in order, each within the connect timeout. Rejects with a {@link FarmError}: WorkerBusyError
   * (recruited by someone else), ProtocolError (version or farm mismatch, not a taskfarm worker),
   * AuthenticationError (not of this farm), WorkerLostError (unreachable).
   */
  static async open(
    endpoint: WorkerEndpoint,
    options: RemoteLinkOptions,
    handlers: LinkHandlers,
    onDescribed?: (desc: WorkerDescription) => boolean,
  ): Promise<RemoteLink> {
    const hosts = [endpoint.host, ...(endpoint.addresses ?? []).filter((a) => a !== endpoint.host)];
    let lastError: FarmError | undefined;
    for (const host of hosts) {
      const target = formatTarget(host, endpoint.port);
      const name = endpoint.id ?? target;
      const deadline = Date.now() + options.connectTimeoutMs;
      let fingerprint = '';
      let security: ChannelSecurity = { kind: 'plaintext' };
      if (options.key !== undefined) {
        // Pin the certificate the worker presents; the handshake below proves it is the farm's.
        try {
          const certPem = await fetchServerCertificate(host, endpoint.port, options.connectTimeoutMs);
          fingerprint = certFingerprint(certPem);
          security = { kind: 'pinned', certPem };
        } catch (err) {
          lastError = new WorkerLostError(
            name,
            `no TLS connection to ${target}: ${(err as Error).message} (is it a taskfarm worker? one run with --insecure cannot be used with a farm key)`,
            { cause: err },
          );
          continue;
        }
      }
      const client = createWorkerClient(target, Math.min(options.heartbeatTimeoutMs, 1000), security);
      const clientNonce = newClientNonce();
      let desc: WorkerDescription;
      try {
        desc = await client.describe({ client_nonce: clientNonce }, Math.max(10, deadline - Date.now()));
      } catch (err) {
        client.close();
        lastError = fromServiceError(err, name, 'describe');
        continue;
      }
      try {
        if (options.key !== undefined) {
          const expected = workerProof(options.key, { workerId: desc.id, clientNonce, workerNonce: desc.worker_nonce, certFingerprint: fingerprint });
          if (!desc.secure || !proofsEqual(expected, desc.worker_proof)) {
            throw new AuthenticationError(
              `worker ${desc.id || '?'} at ${target} could not prove the farm key: it is not part of this farm (another key, ` +
                `no key, or a spoofed advert); nothing was sent to it`,
            );
          }
        } else if (desc.secure) {
          throw new AuthenticationError(`worker ${desc.id} at ${target} requires the farm key, and this client has none`);
        }
        return await RemoteLink.#recruit(client, target, desc, options, handlers, onDescribed, clientNonce, fingerprint);
      } catch (err) {
        client.close();
        throw err;
      }
    }
    throw lastError ?? new WorkerLostError(endpoint.id ?? endpoint.host, 'no address to try');
  }

  static async #recruit(
    client: WorkerClient,
    target: string,
    desc: WorkerDescription,
    options: RemoteLinkOptions,
    handlers: LinkHandlers,
    onDescribed: ((desc: WorkerDescription) => boolean) | undefined,
    clientNonce: Buffer,
    fingerprint: string,
  ): Promise<RemoteLink> {
    if (typeof desc.id !== 'string' || desc.id.length === 0) throw new ProtocolError(`${target} answered Describe without a worker id: not a taskfarm worker`);
    if (desc.protocol_version !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        `worker ${desc.id} at ${target} speaks taskfarm protocol ${desc.protocol_version} (taskfarm ${desc.version}); this client speaks ` +
          `protocol ${PROTOCOL_VERSION} (taskfarm ${PACKAGE_VERSION}): skipped. Install the same taskfarm version on client and workers.`,
      );
    }
    if (options.farm !== undefined && desc.farm !== options.farm) {
      throw new ProtocolError(`worker ${desc.id} at ${target} belongs to farm "${desc.farm}", not "${options.farm}": skipped`);
    }
    if (onDescribed !== undefined && !onDescribed(desc)) throw new ProtocolError(`worker ${desc.id} at ${target} is already in use by this client`);
    let lease;
    try {
      lease = await client.recruit(
        {
          client_id: options.clientId,
          protocol_version: PROTOCOL_VERSION,
          client_host: hostname(),
          lease_timeout_ms: options.leaseTimeoutMs,
          heartbeat_ms: options.heartbeatMs,
          max_message_bytes: MAX_MESSAGE_BYTES,
          client_nonce: clientNonce,
          worker_nonce: desc.worker_nonce,
          client_proof:
            options.key === undefined
              ? Buffer.alloc(0)
              : clientProof(options.key, { workerId: desc.id, clientNonce, workerNonce: desc.worker_nonce, certFingerprint: fingerprint }, options.clientId),
        },
        options.connectTimeoutMs,
      );
    } catch (err) {
      throw fromServiceError(err, desc.id, 'recruit');
    }
    const token = lease.token;
    const info: WorkerInfo = Object.freeze({ id: desc.id, host: desc.hostname, address: target, threads: Math.max(1, lease.threads), local: false });
    const stream = client.compute(token);
    const link = new RemoteLink(info, client, token, stream, options, desc);
    if (desc.max_in_flight > 0) link.maxInFlight = desc.max_in_flight;
    if (desc.max_programs > 0) link.maxPrograms = desc.max_programs;
    // Room for the message's own framing (seqs, field tags) next to the packed inputs.
    if (desc.max_message_bytes > 0) link.maxPayloadBytes = Math.max(0, desc.max_message_bytes - 64 * 1024);
    try {
      await link.#open();
    } catch (err) {
      link.#gone = true;
      link.#liveness?.stop();
      stream.cancel();
      // The lease is given back before the channel closes, so the worker is free at once.
      await client.release(token, 1000).catch(() => {});
      throw err;
    }
    link.#handlers = handlers;
    return link;
  }

  /**
   * Installs what the worker lacks of `program` (bundles, shared data) and starts it on the stream.
   * See {@link WorkerLink.prepare}.
   */
  prepare(program: LinkProgram): Promise<PrepareResult> {
    const known = this.#programs.get(program.key);
    if (known !== undefined) return known.ready;
    let resolve!: (r: PrepareResult) => void;
    let reject!: (err: FarmError) => void;
    const ready = new Promise<PrepareResult>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    ready.catch(() => {}); // the caller awaits it; a failure must not become an unhandled rejection here
    const id = this.#nextProgram++;
    const entry: StreamProgram = { id, ready, settled: false, ok: false, resolve, reject, cost: { bundlesSent: 0, sharedBytesSent: 0 } };
    this.#programs.set(program.key, entry);
    this.#byId.set(id, entry);
    this.#install(program, entry).catch((err: unknown) => {
      const fe = err instanceof FarmError ? err : fromServiceError(err, this.info.id, 'install');
      this.#settle(entry, fe);
    });
    return ready;
  }

  #settle(entry: StreamProgram, error?: FarmError): void {
    if (entry.settled) return;
    entry.settled = true;
    if (error === undefined) {
      entry.ok = true;
      entry.resolve(entry.cost);
      return;
    }
    for (const [key, e] of this.#programs) if (e === entry) this.#programs.delete(key);
    this.#byId.delete(entry.id);
    entry.reject(error);
  }

  async #install(program: LinkProgram, entry: StreamProgram): Promise<void> {
    const { stages, shared } = program;
    const desc = this.#desc;
    const token = this.#token;
    const client = this.#client;
    const options = this.#options;
    const tooBig = stages.findIndex((s) => desc.max_bundle_bytes > 0 && s.code.length > desc.max_bundle_bytes);
    if (tooBig >= 0) {
      throw new InvalidStageError(
        `Stage ${tooBig} (${stages[tooBig]!.name}) bundles to ${stages[tooBig]!.code.length} bytes; worker ${desc.id} accepts bundles of at most ` +
          `${desc.max_bundle_bytes} bytes (daemon option --max-bundle-mb). Import less, or raise the limit on the workers.`,
        { stageIndex: tooBig },
      );
    }
    const tooLarge = shared.find((s) => desc.max_shared_bytes > 0 && s.size > desc.max_shared_bytes);
    if (tooLarge !== undefined) {
      throw new InvalidStageError(
        `Shared data "${tooLarge.name}" is ${tooLarge.size} bytes; worker ${desc.id} accepts at most ${desc.max_shared_bytes} bytes ` +
          '(daemon option --max-shared-mb).',
      );
    }
    const hashes = stages.map((s) => s.hash);
    const sharedHashes = shared.map((s) => s.hash);
    const slow = Math.max(options.setupTimeoutMs, options.connectTimeoutMs);
    const { missing, missing_shared } = await client.install(token, { hashes, bundles: [], shared: sharedHashes }, options.connectTimeoutMs);
    let sharedBytesSent = 0;
    let bundlesSent = 0;
    for (const hash of new Set(missing_shared)) {
      const s = shared.find((x) => x.hash === hash);
      if (s === undefined) continue;
      sharedBytesSent += await RemoteLink.#upload(client, token, s, slow);
    }
    if (missing.length > 0) {
      const bundles = stages.filter((s) => missing.includes(s.hash)).map((s) => ({ hash: s.hash, code: s.code }));
      bundlesSent = bundles.length;
      const after = await client.install(token, { hashes, bundles }, slow);
      if (after.missing.length > 0) throw new ProtocolError(`worker ${desc.id} still lacks bundles ${after.missing.join(', ')} after Install`);
    }
    entry.cost = { bundlesSent, sharedBytesSent };
    if (this.#gone) throw new WorkerLostError(this.info.id, 'the link closed while the program was installed');
    const setupTimer = setTimeout(
      () =>
        this.#settle(
          entry,
          new StageSetupError(this.info.id, {
            name: 'SetupTimeout',
            message: `loading the stages took over ${options.setupTimeoutMs} ms`,
            stack: '',
            code: '',
          }),
        ),
      options.setupTimeoutMs,
    );
    setupTimer.unref();
    void entry.ready.finally(() => clearTimeout(setupTimer)).catch(() => {});
    this.#write({
      start: {
        program: entry.id,
        chain: hashes,
        task_timeout_ms: program.taskTimeoutMs,
        shared: shared.map((s) => ({ name: s.name, hash: s.hash, kind: s.kind })),
      },
    });
  }

  isReady(programKey: string): boolean {
    return this.#programs.get(programKey)?.ok === true;
  }

  unload(programKey: string): void {
    const entry = this.#programs.get(programKey);
    if (entry === undefined) return;
    this.#programs.delete(programKey);
    this.#byId.delete(entry.id);
    this.#settle(entry, new StageSetupError(this.info.id, { name: 'Unloaded', message: 'the program was unloaded', stack: '', code: '' }));
    if (!this.#gone) this.#write({ unload: { programs: [entry.id] } });
  }

  /** Uploads one shared blob in chunks; resolves with the bytes sent. */
  static async #upload(client: WorkerClient, token: string, s: PreparedShared, deadlineMs: number): Promise<number> {
    const { stream, reply } = client.upload(token, deadlineMs);
    reply.catch(() => {}); // awaited below; a failure also ends the writes
    let sent = 0;
    let first = true;
    for await (const data of sharedChunks(s)) {
      const chunk = first ? { hash: s.hash, total_bytes: s.size, data } : { hash: '', total_bytes: 0, data };
      first = false;
      sent += data.byteLength;
      if (!stream.write(chunk)) await new Promise<void>((r) => stream.once('drain', () => r()));
    }
    stream.end();
    await reply;
    return sent;
  }

  /** Waits for the stream to open (Ready{program 0}); from then on, routes what the worker sends. */
  #open(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let open = false;
      const openTimer = setTimeout(
        () => fail(new WorkerLostError(this.info.id, `the Compute stream did not open within ${this.#options.setupTimeoutMs} ms`)),
        this.#options.setupTimeoutMs,
      );
      const fail = (err: FarmError): void => {
        clearTimeout(openTimer);
        if (!open) {
          open = true;
          this.#failStart = undefined;
          reject(err);
        } else this.#lost(err);
      };
      // A worker that goes silent before the stream is open (missed heartbeats) fails the open at once.
      this.#failStart = fail;
      this.#stream.on('data', (msg: WorkerMessage) => {
        this.#liveness?.heard();
        switch (msg.body) {
          case 'results':
            this.#handlers?.onResults({
              seqs: Uint32Array.from(msg.results.seqs),
              outcomes: msg.results.outcomes,
              durations: Float32Array.from(msg.results.durations_ms),
            });
            return;
          case 'heartbeat':
            return;
          case 'ready': {
            if (msg.ready.program === 0) {
              if (!open) {
                open = true;
                this.#failStart = undefined;
                clearTimeout(openTimer);
                if (msg.ready.threads > 0) this.info = Object.freeze({ ...this.info, threads: msg.ready.threads });
                resolve();
              }
              return;
            }
            const entry = this.#byId.get(msg.ready.program);
            if (entry !== undefined) this.#settle(entry);
            return;
          }
          case 'start_failed': {
            const entry = this.#byId.get(msg.start_failed.program);
            if (entry !== undefined) this.#settle(entry, new StageSetupError(this.info.id, msg.start_failed.error));
            return;
          }
          case 'draining':
            this.#handlers?.onDraining();
            return;
          case 'goodbye':
            this.#goodbye = { reason: String(msg.goodbye.reason), detail: String(msg.goodbye.detail) };
            return;
          default:
            this.#options.logger.warn('ignoring a malformed message from a worker', { worker: this.info.id });
        }
      });
      this.#stream.on('error', (err) => {
        if (this.#gone) return;
        fail(fromServiceError(err, this.info.id, 'compute'));
      });
      this.#stream.on('end', () => {
        if (this.#gone) return;
        const bye = this.#goodbye;
        fail(
          new WorkerLostError(
            this.info.id,
            bye === undefined
              ? 'the worker ended the stream (it is shutting down or ended the lease)'
              : bye.reason === 'draining'
                ? 'worker left (draining)'
                : `the worker ended the lease (${bye.reason}: ${bye.detail})`,
          ),
        );
      });
      // Any message is a sign of life: a heartbeat only goes out when nothing else did lately (a farm
      // of a thousand busy workers then spends nothing on heartbeats).
      this.#liveness = new Liveness({
        heartbeatMs: this.#options.heartbeatMs,
        timeoutMs: this.#options.heartbeatTimeoutMs,
        sendHeartbeat: () => this.#write({ heartbeat: { sent_at_ms: Date.now() } }),
        onSilent: (silent) => this.#lost(new WorkerLostError(this.info.id, `missed heartbeats: nothing heard for ${silent} ms`)),
      });
      // The first message opens the stream on the worker's side.
      this.#write({ heartbeat: { sent_at_ms: Date.now() } });
    });
  }

  #write(msg: ClientMessage): void {
    this.#liveness?.wrote();
    try {
      this.#stream.write(msg);
    } catch (err) {
      this.#lost(new WorkerLostError(this.info.id, `writing to the stream failed: ${(err as Error).message}`));
    }
  }

  #lost(err: FarmError): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#liveness?.stop();
    this.#stream.cancel();
    this.#client.close();
    const goodbye = this.#goodbye?.reason;
    if (goodbye !== undefined) this.#options.logger.info('worker ended the lease', { worker: this.info.id, address: this.info.address, reason: err.message });
    else this.#options.logger.warn('worker lost', { worker: this.info.id, address: this.info.address, reason: err.message });
    for (const entry of this.#programs.values()) this.#settle(entry, err);
    const failStart = this.#failStart;
    this.#failStart = undefined;
    if (failStart !== undefined) failStart(err);
    else this.#handlers?.onLost(err, goodbye);
  }

  send(programKey: string, batch: ExecBatch, priority: number): void {
    if (this.#gone || batch.seqs.length === 0) return;
    const entry = this.#programs.get(programKey);
    if (entry === undefined || !entry.ok) throw new Error(`program ${programKey.slice(0, 16)} is not ready on worker ${this.info.id}`);
    this.#write({ tasks: { seqs: Array.from(batch.seqs), inputs: batch.inputs, program: entry.id, priority } });
  }

  cancel(seqs: readonly number[]): void {
    if (this.#gone || seqs.length === 0) return;
    this.#write({ cancel: { seqs: [...seqs] } });
  }

  async close(): Promise<void> {
    if (this.#gone) return;
    this.#gone = true;
    this.#liveness?.stop();
    const closed = new WorkerLostError(this.info.id, 'released');
    for (const entry of this.#programs.values()) this.#settle(entry, closed);
    try {
      await this.#client.release(this.#token, 1000);
    } catch {
      // the worker may be gone; its lease expires by itself
    }
    this.#stream.cancel();
    this.#client.close();
  }
}
