/**
 * A recruited worker daemon: Describe → Recruit → Install (only what it lacks) → Compute stream,
 * with application heartbeats both ways on top of gRPC keepalive.
 */
import { hostname } from 'node:os';
import {
  createWorkerClient,
  fetchServerCertificate,
  MAX_MESSAGE_BYTES,
  pemFingerprint,
  type ChannelSecurity,
  fromServiceError,
  PROTOCOL_VERSION,
  type ClientMessage,
  type SharedRef,
  type WorkerClient,
  type WorkerDescription,
  type WorkerMessage,
  type grpc,
} from '../protocol/index.js';
import { AuthenticationError, FarmError, InvalidStageError, ProtocolError, StageSetupError, WorkerLostError } from '../errors.js';
import { clientProof, newClientNonce, proofsEqual, workerProof } from '../security/handshake.js';
import { formatTarget, type WorkerEndpoint } from '../discovery/index.js';
import type { Logger } from '../log.js';
import type { ExecBatch } from '../worker/executor.js';
import type { PreparedStage } from './bundler.js';
import { sharedChunks, type PreparedShared } from './shared.js';
import type { LinkHandlers, WorkerInfo, WorkerLink } from './link.js';

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
  /** Tasks running longer are stopped on the worker (ms; 0: no limit). */
  readonly taskTimeoutMs: number;
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
export class RemoteLink implements WorkerLink {
  readonly info: WorkerInfo;
  bundlesSent = 0;
  sharedBytesSent = 0;
  maxInFlight = Number.MAX_SAFE_INTEGER;
  maxPayloadBytes = Number.MAX_SAFE_INTEGER;
  readonly #client: WorkerClient;
  readonly #token: string;
  readonly #stream: ComputeStream;
  readonly #options: RemoteLinkOptions;
  #handlers: LinkHandlers | undefined;
  #lastHeard = Date.now();
  #failStart: ((err: FarmError) => void) | undefined;
  #lastWritten = 0;
  #timer: NodeJS.Timeout | undefined;
  #gone = false;

  private constructor(info: WorkerInfo, client: WorkerClient, token: string, stream: ComputeStream, options: RemoteLinkOptions) {
    this.info = info;
    this.#client = client;
    this.#token = token;
    this.#stream = stream;
    this.#options = options;
  }

  /**
   * Recruits the worker at `endpoint` and gets it ready to compute `stages`. Tries the endpoint's
   * addresses in order, each within the connect timeout. Rejects with a {@link FarmError}:
   * WorkerBusyError (recruited by someone else), ProtocolError (version or farm mismatch, not a
   * taskfarm worker), WorkerLostError (unreachable), StageSetupError (the stages failed to load there).
   */
  static async open(
    endpoint: WorkerEndpoint,
    stages: readonly PreparedStage[],
    shared: readonly PreparedShared[],
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
          fingerprint = pemFingerprint(certPem);
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
        return await RemoteLink.#recruit(client, target, desc, stages, shared, options, handlers, onDescribed, clientNonce, fingerprint);
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
    stages: readonly PreparedStage[],
    shared: readonly PreparedShared[],
    options: RemoteLinkOptions,
    handlers: LinkHandlers,
    onDescribed: ((desc: WorkerDescription) => boolean) | undefined,
    clientNonce: Buffer,
    fingerprint: string,
  ): Promise<RemoteLink> {
    if (typeof desc.id !== 'string' || desc.id.length === 0) throw new ProtocolError(`${target} answered Describe without a worker id: not a taskfarm worker`);
    if (desc.protocol_version !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        `worker ${desc.id} at ${target} speaks taskfarm protocol ${desc.protocol_version} (taskfarm ${desc.version}); this client speaks ${PROTOCOL_VERSION}: skipped`,
      );
    }
    if (options.farm !== undefined && desc.farm !== options.farm) {
      throw new ProtocolError(`worker ${desc.id} at ${target} belongs to farm "${desc.farm}", not "${options.farm}": skipped`);
    }
    if (onDescribed !== undefined && !onDescribed(desc)) throw new ProtocolError(`worker ${desc.id} at ${target} is already in use by this run`);
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
    // On failure the lease is given back before the channel closes, so the worker is free at once.
    const release = (): Promise<void> => client.release(token, 1000).catch(() => {});
    let bundlesSent = 0;
    let sharedBytesSent = 0;
    try {
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
      const { missing, missing_shared } = await client.install(token, { hashes, bundles: [], shared: sharedHashes }, options.connectTimeoutMs);
      for (const hash of new Set(missing_shared)) {
        const s = shared.find((x) => x.hash === hash);
        if (s === undefined) continue;
        sharedBytesSent += await RemoteLink.#upload(client, token, s, Math.max(options.setupTimeoutMs, options.connectTimeoutMs));
      }
      if (missing.length > 0) {
        const bundles = stages.filter((s) => missing.includes(s.hash)).map((s) => ({ hash: s.hash, code: s.code }));
        bundlesSent = bundles.length;
        const after = await client.install(token, { hashes, bundles }, Math.max(options.setupTimeoutMs, options.connectTimeoutMs));
        if (after.missing.length > 0) throw new ProtocolError(`worker ${desc.id} still lacks bundles ${after.missing.join(', ')} after Install`);
      }
    } catch (err) {
      await release();
      throw err instanceof FarmError ? err : fromServiceError(err, desc.id, 'install');
    }
    const stream = client.compute(token);
    const link = new RemoteLink(info, client, token, stream, options);
    link.bundlesSent = bundlesSent;
    link.sharedBytesSent = sharedBytesSent;
    if (desc.max_in_flight > 0) link.maxInFlight = desc.max_in_flight;
    // Room for the message's own framing (seqs, field tags) next to the packed inputs.
    if (desc.max_message_bytes > 0) link.maxPayloadBytes = Math.max(0, desc.max_message_bytes - 64 * 1024);
    try {
      await link.#start(
        stages.map((s) => s.hash),
        shared.map((s) => ({ name: s.name, hash: s.hash, kind: s.kind })),
      );
    } catch (err) {
      link.#gone = true;
      clearInterval(link.#timer);
      stream.cancel();
      await release();
      throw err;
    }
    link.#handlers = handlers;
    return link;
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

  #start(chain: string[], shared: SharedRef[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      const setupTimer = setTimeout(
        () =>
          fail(
            new StageSetupError(this.info.id, {
              name: 'SetupTimeout',
              message: `loading the stages took over ${this.#options.setupTimeoutMs} ms`,
              stack: '',
              code: '',
            }),
          ),
        this.#options.setupTimeoutMs,
      );
      const fail = (err: FarmError): void => {
        clearTimeout(setupTimer);
        if (!ready) {
          ready = true;
          this.#failStart = undefined;
          reject(err);
        } else this.#lost(err);
      };
      // A worker that goes silent before it is ready (missed heartbeats) fails the start at once.
      this.#failStart = fail;
      this.#stream.on('data', (msg: WorkerMessage) => {
        this.#lastHeard = Date.now();
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
          case 'ready':
            if (!ready) {
              ready = true;
              this.#failStart = undefined;
              clearTimeout(setupTimer);
              resolve();
            }
            return;
          case 'start_failed':
            fail(new StageSetupError(this.info.id, msg.start_failed.error));
            return;
          case 'draining':
            this.#handlers?.onDraining();
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
        fail(new WorkerLostError(this.info.id, 'the worker ended the stream (it is shutting down or ended the lease)'));
      });
      this.#timer = setInterval(() => this.#beat(), this.#options.heartbeatMs);
      this.#write({ start: { chain, task_timeout_ms: this.#options.taskTimeoutMs, shared } });
    });
  }

  #beat(): void {
    if (this.#gone) return;
    const silent = Date.now() - this.#lastHeard;
    if (silent > this.#options.heartbeatTimeoutMs) {
      this.#lost(new WorkerLostError(this.info.id, `missed heartbeats: nothing heard for ${silent} ms`));
      return;
    }
    // Any message is a sign of life: a heartbeat is only needed when nothing else went out lately
    // (a farm of a thousand busy workers then spends nothing on heartbeats).
    if (Date.now() - this.#lastWritten >= this.#options.heartbeatMs * 0.9) this.#write({ heartbeat: { sent_at_ms: Date.now() } });
  }

  #write(msg: ClientMessage): void {
    this.#lastWritten = Date.now();
    try {
      this.#stream.write(msg);
    } catch (err) {
      this.#lost(new WorkerLostError(this.info.id, `writing to the stream failed: ${(err as Error).message}`));
    }
  }

  #lost(err: FarmError): void {
    if (this.#gone) return;
    this.#gone = true;
    clearInterval(this.#timer);
    this.#stream.cancel();
    this.#client.close();
    this.#options.logger.warn('worker lost', { worker: this.info.id, address: this.info.address, reason: err.message });
    const failStart = this.#failStart;
    this.#failStart = undefined;
    if (failStart !== undefined) failStart(err);
    else this.#handlers?.onLost(err);
  }

  send(batch: ExecBatch): void {
    if (this.#gone || batch.seqs.length === 0) return;
    this.#write({ tasks: { seqs: Array.from(batch.seqs), inputs: batch.inputs } });
  }

  cancel(seqs: readonly number[]): void {
    if (this.#gone || seqs.length === 0) return;
    this.#write({ cancel: { seqs: [...seqs] } });
  }

  async close(): Promise<void> {
    if (this.#gone) return;
    this.#gone = true;
    clearInterval(this.#timer);
    try {
      await this.#client.release(this.#token, 1000);
    } catch {
      // the worker may be gone; its lease expires by itself
    }
    this.#stream.cancel();
    this.#client.close();
  }
}
