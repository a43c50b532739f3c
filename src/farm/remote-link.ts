/**
 * A recruited worker daemon: Describe → Recruit → Install (only what it lacks) → Compute stream,
 * with application heartbeats both ways on top of gRPC keepalive.
 */
import { hostname } from 'node:os';
import {
  createWorkerClient,
  fromServiceError,
  PROTOCOL_VERSION,
  type ClientMessage,
  type ResultMessage,
  type WorkerClient,
  type WorkerDescription,
  type WorkerMessage,
  type grpc,
} from '../protocol/index.js';
import { FarmError, ProtocolError, StageSetupError, WorkerLostError } from '../errors.js';
import { formatTarget, type WorkerEndpoint } from '../discovery/index.js';
import type { Logger } from '../log.js';
import type { ExecResult, ExecTask } from '../worker/executor.js';
import type { PreparedStage } from './bundler.js';
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
  readonly logger: Logger;
}

type ComputeStream = grpc.ClientDuplexStream<ClientMessage, WorkerMessage>;

function toExecResult(r: ResultMessage): ExecResult {
  const d = r.duration_ms ?? 0;
  if (r.outcome === 'error' && r.error !== undefined) return { seq: r.seq, error: r.error, durationMs: d };
  if (r.value !== undefined) return { seq: r.seq, value: r.value, durationMs: d };
  return { seq: r.seq, error: { kind: 'bad-output', name: 'ProtocolError', message: 'result without value or error', stack: '', code: '' }, durationMs: d };
}

/** Describes the worker at one address, within the connect timeout. */
export async function describeWorker(target: string, timeoutMs: number): Promise<WorkerDescription> {
  const client = createWorkerClient(target, 1000);
  try {
    return await client.describe(timeoutMs);
  } finally {
    client.close();
  }
}

/** A worker daemon recruited by this client. See the module comment. */
export class RemoteLink implements WorkerLink {
  readonly info: WorkerInfo;
  bundlesSent = 0;
  readonly #client: WorkerClient;
  readonly #token: string;
  readonly #stream: ComputeStream;
  readonly #options: RemoteLinkOptions;
  #handlers: LinkHandlers | undefined;
  #lastHeard = Date.now();
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
    options: RemoteLinkOptions,
    handlers: LinkHandlers,
    onDescribed?: (desc: WorkerDescription) => boolean,
  ): Promise<RemoteLink> {
    const hosts = [endpoint.host, ...(endpoint.addresses ?? []).filter((a) => a !== endpoint.host)];
    let lastError: FarmError | undefined;
    for (const host of hosts) {
      const target = formatTarget(host, endpoint.port);
      const client = createWorkerClient(target, Math.min(options.heartbeatTimeoutMs, 1000));
      let desc: WorkerDescription;
      try {
        desc = await client.describe(options.connectTimeoutMs);
      } catch (err) {
        client.close();
        lastError = fromServiceError(err, endpoint.id ?? target, 'describe');
        continue;
      }
      try {
        return await RemoteLink.#recruit(client, target, desc, stages, options, handlers, onDescribed);
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
    options: RemoteLinkOptions,
    handlers: LinkHandlers,
    onDescribed?: (desc: WorkerDescription) => boolean,
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
        },
        options.connectTimeoutMs,
      );
    } catch (err) {
      throw fromServiceError(err, desc.id, 'recruit');
    }
    const token = lease.token;
    const info: WorkerInfo = Object.freeze({ id: desc.id, host: desc.hostname, address: target, threads: Math.max(1, lease.threads), local: false });
    const release = (): void => {
      client.release(token, 1000).catch(() => {});
    };
    let bundlesSent = 0;
    try {
      const hashes = stages.map((s) => s.hash);
      const { missing } = await client.install(token, { hashes, bundles: [] }, options.connectTimeoutMs);
      if (missing.length > 0) {
        const bundles = stages.filter((s) => missing.includes(s.hash)).map((s) => ({ hash: s.hash, code: s.code }));
        bundlesSent = bundles.length;
        const after = await client.install(token, { hashes, bundles }, Math.max(options.setupTimeoutMs, options.connectTimeoutMs));
        if (after.missing.length > 0) throw new ProtocolError(`worker ${desc.id} still lacks bundles ${after.missing.join(', ')} after Install`);
      }
    } catch (err) {
      release();
      throw err instanceof FarmError ? err : fromServiceError(err, desc.id, 'install');
    }
    const stream = client.compute(token);
    const link = new RemoteLink(info, client, token, stream, options);
    link.bundlesSent = bundlesSent;
    try {
      await link.#start(stages.map((s) => s.hash));
    } catch (err) {
      link.#gone = true;
      clearInterval(link.#timer);
      stream.cancel();
      release();
      throw err;
    }
    link.#handlers = handlers;
    return link;
  }

  #start(chain: string[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      const setupTimer = setTimeout(
        () => fail(new StageSetupError(this.info.id, { name: 'SetupTimeout', message: `loading the stages took over ${this.#options.setupTimeoutMs} ms`, stack: '', code: '' })),
        this.#options.setupTimeoutMs,
      );
      const fail = (err: FarmError): void => {
        clearTimeout(setupTimer);
        if (!ready) {
          ready = true;
          reject(err);
        } else this.#lost(err);
      };
      this.#stream.on('data', (msg: WorkerMessage) => {
        this.#lastHeard = Date.now();
        switch (msg.body) {
          case 'results':
            this.#handlers?.onResults(msg.results.results.map(toExecResult));
            return;
          case 'heartbeat':
            return;
          case 'ready':
            if (!ready) {
              ready = true;
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
      this.#write({ start: { chain } });
    });
  }

  #beat(): void {
    if (this.#gone) return;
    const silent = Date.now() - this.#lastHeard;
    if (silent > this.#options.heartbeatTimeoutMs) {
      this.#lost(new WorkerLostError(this.info.id, `missed heartbeats: nothing heard for ${silent} ms`));
      return;
    }
    this.#write({ heartbeat: { sent_at_ms: Date.now() } });
  }

  #write(msg: ClientMessage): void {
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
    this.#handlers?.onLost(err);
  }

  send(tasks: readonly ExecTask[]): void {
    if (this.#gone || tasks.length === 0) return;
    this.#write({ tasks: { tasks: tasks as ExecTask[] } });
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
