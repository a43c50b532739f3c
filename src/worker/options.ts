import { defaultCacheDir } from '../util/paths.js';
import { availableParallelism, hostname as osHostname, totalmem } from 'node:os';
import { silentLogger, type Logger } from '../log.js';
import { isIP } from 'node:net';
import { InvalidOptionError } from '../errors.js';
import { expectInteger, expectString } from '../util/validate.js';
import { FARM_KEY_BYTES, NO_KEY_HELP, parseFarmKey } from '../security/index.js';

/** Options of a worker daemon ({@link WorkerServer}). */
export interface WorkerServerOptions {
  /** TCP port to listen on; 0 picks a free one. @default 0 */
  readonly port?: number;
  /** Address to bind. @default '0.0.0.0' */
  readonly host?: string;
  /** Worker threads that run tasks. @default os.availableParallelism() */
  readonly threads?: number;
  /** Folder of the on-disk code cache and the worker id. @default `$XDG_CACHE_HOME/taskfarm` or `~/.cache/taskfarm` */
  readonly cacheDir?: string;
  /** Upper bound of the code cache on disk, in bytes. @default 1 GiB */
  readonly cacheMaxBytes?: number;
  /** Fixed worker id (instead of the stable one kept in the cache folder). */
  readonly id?: string;
  /** Name of the farm this worker belongs to. @default 'default' */
  readonly farm?: string;
  /** Heap limit of each worker thread in MB; a thread over it dies alone and is replaced. @default total memory / threads / 2 (at most 4096) */
  readonly threadMemoryMb?: number;
  /**
   * CPU priority of the task threads, as a Unix nice value (0 normal … 19 lowest). Above 0 the
   * workstation's own programs, and a job manager on the same machine, go first. On Linux only the
   * task threads are niced; on systems where nice is per process (macOS) the whole daemon is. A
   * value the system refuses is logged and tasks run at normal priority. @default 0
   */
  readonly nice?: number;
  /**
   * Linux: run the daemon's own thread (its event loop: gRPC, heartbeats, results on their way out)
   * under the `SCHED_BATCH` policy, so that its wake-ups do not preempt a running task; the task
   * threads keep the normal policy. It changes the scheduling of this process's main thread, so a
   * program that embeds a WorkerServer opts in; a failure (no `chrt`, or refused) is logged and
   * changes nothing. Ignored on other systems. @default false (the CLI daemon: true)
   */
  readonly schedBatch?: boolean;
  /** Longest lease timeout a client may ask for, in ms. @default 60000 */
  readonly maxLeaseTimeoutMs?: number;
  /** On drain (SIGTERM), how long in-flight tasks may take to finish, in ms. @default 10000 */
  readonly graceMs?: number;
  /** Advertise the worker on the LAN over mDNS (`_taskfarm._tcp`). @default false (the CLI daemon: true) */
  readonly advertise?: boolean;
  /** Interface address for mDNS on multi-homed machines (only it is advertised). @default every interface */
  readonly interface?: string;
  /**
   * The farm key (32 bytes, or its base64url text). Required unless `insecure`: only clients that
   * prove it may recruit the worker. See `taskfarm keygen`.
   */
  readonly key?: Uint8Array | string;
  /** Run without key and without TLS: anyone who can reach the port can run code. @default false */
  readonly insecure?: boolean;
  /** Most concurrent TCP connections; more are refused. @default 256 */
  readonly maxConnections?: number;
  /** Largest gRPC message accepted, in bytes. @default 64 MiB */
  readonly maxMessageBytes?: number;
  /** Largest code bundle accepted by Install, in bytes. @default 32 MiB */
  readonly maxBundleBytes?: number;
  /** Largest shared blob (option `shared` of clients) accepted by Upload, in bytes. @default 4 GiB */
  readonly maxSharedBytes?: number;
  /** Upper bound of the shared-data cache on disk, in bytes. @default 8 GiB */
  readonly sharedCacheMaxBytes?: number;
  /** Most tasks in flight on one lease; more fails the stream with RESOURCE_EXHAUSTED. @default 65536 */
  readonly maxInFlight?: number;
  /** Time a client has between Describe and Recruit (the handshake), in ms. @default 10000 */
  readonly handshakeMs?: number;
  /** A connection with no traffic for this long is closed, in ms. @default 30000 */
  readonly idleTimeoutMs?: number;
  /** Hostname reported to clients and stages. @default os.hostname() */
  readonly hostname?: string;
  readonly logger?: Logger;
}

/** {@link WorkerServerOptions} with every default filled in. */
export type ResolvedWorkerServerOptions = Readonly<Required<Omit<WorkerServerOptions, 'id' | 'interface' | 'key'>>> & {
  readonly id: string | undefined;
  readonly interface: string | undefined;
  /** The farm key's bytes; undefined only when insecure. */
  readonly key: Buffer | undefined;
};

/** Fills in defaults and validates; throws InvalidOptionError with the offending field. */
export function resolveWorkerServerOptions(input: WorkerServerOptions = {}): ResolvedWorkerServerOptions {
  const threads = input.threads ?? availableParallelism();
  expectInteger('threads', threads, 1, 1024);
  const o = {
    port: 0,
    host: '0.0.0.0',
    cacheDir: defaultCacheDir(),
    cacheMaxBytes: 1024 * 1024 * 1024,
    farm: 'default',
    threadMemoryMb: Math.max(64, Math.min(4096, Math.floor(totalmem() / 1024 / 1024 / threads / 2))),
    nice: 0,
    schedBatch: false,
    maxLeaseTimeoutMs: 60_000,
    graceMs: 10_000,
    hostname: osHostname(),
    advertise: false,
    insecure: false,
    maxConnections: 256,
    maxMessageBytes: 64 * 1024 * 1024,
    maxBundleBytes: 32 * 1024 * 1024,
    maxInFlight: 65_536,
    maxSharedBytes: 4 * 1024 * 1024 * 1024,
    sharedCacheMaxBytes: 8 * 1024 * 1024 * 1024,
    handshakeMs: 10_000,
    idleTimeoutMs: 30_000,
    logger: silentLogger,
    ...input,
    threads,
    id: input.id,
    interface: input.interface,
    key: input.key === undefined ? undefined : typeof input.key === 'string' ? parseFarmKey(input.key, 'option `key`') : Buffer.from(input.key),
  };
  if (o.key !== undefined && o.key.length !== FARM_KEY_BYTES) {
    throw new InvalidOptionError(`Expected \`key\` to be ${FARM_KEY_BYTES} bytes (see \`taskfarm keygen\`), got ${o.key.length}`);
  }
  if (o.key === undefined && !o.insecure) {
    throw new InvalidOptionError(`A worker needs the farm key, or \`insecure: true\` to run without one. ${NO_KEY_HELP}`);
  }
  if (o.key !== undefined && o.insecure) throw new InvalidOptionError('Give either a farm key or `insecure: true`, not both');
  expectInteger('maxConnections', o.maxConnections, 1);
  expectInteger('maxMessageBytes', o.maxMessageBytes, 64 * 1024);
  expectInteger('maxBundleBytes', o.maxBundleBytes, 1024);
  expectInteger('maxInFlight', o.maxInFlight, 1);
  expectInteger('maxSharedBytes', o.maxSharedBytes, 1);
  expectInteger('sharedCacheMaxBytes', o.sharedCacheMaxBytes, 1024 * 1024);
  expectInteger('handshakeMs', o.handshakeMs, 100);
  expectInteger('idleTimeoutMs', o.idleTimeoutMs, 1000);
  expectInteger('port', o.port, 0, 65_535);
  expectString('host', o.host);
  expectString('cacheDir', o.cacheDir);
  expectInteger('cacheMaxBytes', o.cacheMaxBytes, 1024 * 1024);
  expectString('farm', o.farm);
  expectInteger('threadMemoryMb', o.threadMemoryMb, 16);
  expectInteger('nice', o.nice, 0, 19);
  expectInteger('maxLeaseTimeoutMs', o.maxLeaseTimeoutMs, 500);
  expectInteger('graceMs', o.graceMs, 0);
  if (o.id !== undefined) expectString('id', o.id);
  if (o.interface !== undefined && isIP(o.interface) === 0) {
    throw new InvalidOptionError(`Expected \`interface\` to be an IP address of this machine, got ${JSON.stringify(o.interface)}`);
  }
  return Object.freeze(o);
}
