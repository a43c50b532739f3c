import { availableParallelism } from 'node:os';
import { isIP } from 'node:net';
import { InvalidOptionError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { defaultCacheDir } from '../util/paths.js';
import { describeValue, expectBoolean, expectInteger, expectNumber, expectString, parseHostPort } from '../util/validate.js';
import { preferCachedThenFastest, type SchedulingPolicy } from './scheduling.js';
import { resolveFarmKey } from '../security/index.js';
import type { Discovery } from '../discovery/index.js';

/**
 * Options of a {@link FarmPool}: how workers are found, trusted and kept. Every field is optional.
 */
export interface FarmPoolOptions {
  /**
   * Worker daemons to use, as `host:port` strings (static discovery, for networks where mDNS
   * does not reach). Exclusive with `discovery`.
   */
  readonly peers?: readonly string[];
  /**
   * How workers are found: `'mdns'` finds the farm's daemons on the LAN (DNS-SD over multicast DNS,
   * also those that start mid-run); `'local'` runs on threads of this process only; a
   * {@link Discovery} object plugs in any backend.
   * @default 'mdns' when `peers` is not given
   */
  readonly discovery?: 'mdns' | 'local' | Discovery;
  /** Only workers of this farm are recruited (mDNS). @default $TASKFARM_FARM or 'default' */
  readonly farm?: string;
  /** Multi-homed machines: use mDNS on this interface address only. @default every interface */
  readonly interface?: string;
  /**
   * The farm key as text (what `taskfarm keygen` writes). Only workers that prove it receive code
   * or tasks. @default option `keyFile`, `$TASKFARM_KEY`, `$TASKFARM_KEY_FILE`, or ~/.config/taskfarm/farm.key
   */
  readonly key?: string;
  /** A file holding the farm key. */
  readonly keyFile?: string;
  /** Use workers run with --insecure (no key, no TLS, plaintext). @default false */
  readonly insecure?: boolean;
  /** Threads of the in-process pool (`'local'`, and local fallback). @default os.availableParallelism() */
  readonly threads?: number;
  /**
   * When no worker can be used within `workerWaitMs`, compute on local threads (the `fallback` event
   * and a warning say why). Explicit `peers` are a promise: with them the run fails with
   * NoWorkersError, naming why each peer was refused, unless this is `true`.
   * @default true, or false when `peers` is given
   */
  readonly localFallback?: boolean;
  /**
   * How long to wait for a first worker (and for a new one after all were lost), in ms; then local
   * fallback or NoWorkersError. `Infinity`: jobs wait for workers as long as it takes (a job service).
   * @default 3000
   */
  readonly workerWaitMs?: number;
  /** Which of several idle workers gets work first. @default preferCachedThenFastest */
  readonly scheduling?: SchedulingPolicy;
  /** Interval of application heartbeats on each worker stream, in ms. @default 500 */
  readonly heartbeatMs?: number;
  /** A worker silent for this long is declared lost, in ms. @default 1500 */
  readonly heartbeatTimeoutMs?: number;
  /** A worker ends our lease after this long without hearing from us, in ms. @default 3000 */
  readonly leaseTimeoutMs?: number;
  /** Bound of one connect attempt (Describe/Recruit/Install) to one address, in ms. @default 2000 */
  readonly connectTimeoutMs?: number;
  /** Bound of loading the stages (import + setup()) on a worker, in ms. @default 120000 */
  readonly setupTimeoutMs?: number;
  /** Folder for bundles when computing on local threads. @default the daemon's default cache folder */
  readonly cacheDir?: string;
  /** Folder that relative module-stage paths resolve against. @default process.cwd() */
  readonly cwd?: string;
  /** Where log lines go. @default silent (or stderr for subsystems named in TASKFARM_TRACE) */
  readonly logger?: Logger;
}

/** Options of one job on a pool ({@link FarmPool.run}). Every field is optional. */
export interface JobOptions {
  /** A name shown in stats and logs. @default 'job-<n>' */
  readonly name?: string;
  /** Jobs of higher priority get the workers first (an integer). @default 0 */
  readonly priority?: number;
  /** Share of the workers among jobs of equal priority, in proportion to the weights (> 0). @default 1 */
  readonly weight?: number;
  /**
   * What a task that fails (after its retries) does: `'fail'` fails the job with the task's error;
   * `'collect'` settles the task as failed and the job goes on (`results()` yields `{ index, error }`,
   * `compute()` puts the TaskError in the output's place, `stats().failed` lists the indices).
   * @default 'fail'
   */
  readonly errors?: 'fail' | 'collect';
  /** A task whose execution crashed its thread this many times fails the job. @default 3 */
  readonly maxAttempts?: number;
  /** A task that was in flight on this many lost workers fails the job. @default 10 */
  readonly maxWorkerLosses?: number;
  /** How many times a task whose stage threw (or ran over `taskTimeoutMs`) is retried before the job fails. @default 0 */
  readonly retries?: number;
  /**
   * A task running longer than this on a worker is stopped there (its thread terminated and
   * replaced) and fails with TaskTimeoutError, under the same retry rules as a task that threw, in ms.
   * @default 0 (no limit)
   */
  readonly taskTimeoutMs?: number;
  /**
   * Backup copies of stragglers (Work Queue's fast abort, MapReduce's backup tasks): when nothing is
   * left to hand out and a worker is idle, the in-flight task that has run longest beyond
   * `multiplier` × the median task time (and at least `minMs`) is re-issued to the fastest idle
   * worker; the first result wins and the other copy is cancelled on its worker. At most one extra
   * copy per task. A task in flight longer than 20 × the longest task time seen is stuck, not
   * straggling: it gets no copy, and a copy already made is cancelled when it gets that far
   * (`taskTimeoutMs` stops such tasks). `false` turns it off.
   * @default { multiplier: 3, minMs: 50 }
   */
  readonly speculation?: false | { readonly multiplier?: number; readonly minMs?: number };
  /**
   * Data every task may read, shipped once per worker instead of once per task and cached on the
   * workers' disks by content: stages see it as `ctx.shared[name]`. Files ({@link sharedFile}),
   * Buffers and Uint8Arrays arrive as a Uint8Array shared by the worker's threads; other values are
   * structured-cloned once per thread. Each job hashes its shared data when it starts: wrap a large
   * value given to many jobs in {@link sharedValue} to hash it once.
   */
  readonly shared?: Readonly<Record<string, unknown>>;
  /** Cancels the run: compute() rejects with FarmAbortError and the workers are released. */
  readonly signal?: AbortSignal;
  /** Folder that relative module-stage paths resolve against. @default the pool's `cwd` */
  readonly cwd?: string;
}

/** Options of a {@link TaskFarm}: a private pool's options and its one job's. */
export interface TaskFarmOptions extends FarmPoolOptions, Omit<JobOptions, 'cwd' | 'name' | 'priority' | 'weight'> {}

/** {@link FarmPoolOptions} with defaults filled in. */
export interface ResolvedPoolOptions {
  readonly discovery: 'mdns' | 'local' | Discovery | { readonly peers: readonly string[] };
  readonly farm: string;
  readonly interface: string | undefined;
  /** The farm key's bytes (undefined: no key found, or insecure). */
  readonly key: Buffer | undefined;
  /** Where the key came from, for messages (never the key). */
  readonly keySource: string | undefined;
  readonly insecure: boolean;
  readonly threads: number;
  readonly localFallback: boolean;
  readonly workerWaitMs: number;
  readonly scheduling: SchedulingPolicy;
  readonly heartbeatMs: number;
  readonly heartbeatTimeoutMs: number;
  readonly leaseTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly setupTimeoutMs: number;
  readonly cacheDir: string;
  readonly cwd: string;
  readonly logger: Logger;
}

/** {@link JobOptions} with defaults filled in. */
export interface ResolvedJobOptions {
  readonly name: string | undefined;
  readonly priority: number;
  readonly weight: number;
  readonly errors: 'fail' | 'collect';
  readonly maxAttempts: number;
  readonly maxWorkerLosses: number;
  readonly retries: number;
  readonly taskTimeoutMs: number;
  /** Speculation settings, or false. */
  readonly speculation: false | { readonly multiplier: number; readonly minMs: number };
  readonly shared: Readonly<Record<string, unknown>>;
  readonly signal: AbortSignal | undefined;
  readonly cwd: string;
}

const POOL_KEYS = [
  'peers',
  'discovery',
  'farm',
  'interface',
  'key',
  'keyFile',
  'insecure',
  'threads',
  'localFallback',
  'workerWaitMs',
  'scheduling',
  'heartbeatMs',
  'heartbeatTimeoutMs',
  'leaseTimeoutMs',
  'connectTimeoutMs',
  'setupTimeoutMs',
  'cacheDir',
  'cwd',
  'logger',
] as const;
const JOB_KEYS = [
  'name',
  'priority',
  'weight',
  'errors',
  'maxAttempts',
  'maxWorkerLosses',
  'retries',
  'taskTimeoutMs',
  'speculation',
  'shared',
  'signal',
  'cwd',
] as const;
const TASK_FARM_KEYS = new Set<string>([...POOL_KEYS, ...JOB_KEYS.filter((k) => k !== 'name' && k !== 'priority' && k !== 'weight')]);

function checkKnown(what: string, input: object, known: ReadonlySet<string>): void {
  if (typeof input !== 'object' || input === null) throw new InvalidOptionError(`Expected ${what} to be an object, got ${typeof input}`);
  for (const key of Object.keys(input)) {
    if (!known.has(key)) throw new InvalidOptionError(`Unknown option \`${key}\`; known options: ${[...known].join(', ')}`);
  }
}

function pick<T extends object>(input: T, keys: readonly string[]): Partial<T> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (k in input) out[k] = (input as Record<string, unknown>)[k];
  return out as Partial<T>;
}

/** Options objects made by {@link resolvePoolOptions} (the key is resolved once, when they are made). */
const resolvedPools = new WeakSet<object>();

/** True for an object {@link resolvePoolOptions} returned. */
export function isResolvedPoolOptions(o: unknown): o is ResolvedPoolOptions {
  return typeof o === 'object' && o !== null && resolvedPools.has(o);
}

/** Fills in defaults and validates every field of a pool's options. Throws {@link InvalidOptionError}. */
export function resolvePoolOptions(input: FarmPoolOptions = {}): ResolvedPoolOptions {
  checkKnown('pool options', input, new Set(POOL_KEYS));
  if (input.peers !== undefined && input.discovery !== undefined) {
    throw new InvalidOptionError('Give either `peers` or `discovery`, not both');
  }
  let discovery: ResolvedPoolOptions['discovery'];
  if (input.peers !== undefined) {
    if (!Array.isArray(input.peers)) throw new InvalidOptionError('Expected `peers` to be an array of "host:port" strings');
    for (const p of input.peers as unknown[]) {
      if (typeof p !== 'string') throw new InvalidOptionError(`Expected \`peers\` entries to be "host:port" strings, got ${typeof p}`);
      parseHostPort('peers', p.trim());
    }
    discovery = { peers: input.peers };
  } else if (input.discovery === undefined || input.discovery === 'mdns') {
    discovery = 'mdns';
  } else if (input.discovery === 'local') {
    discovery = 'local';
  } else if (typeof input.discovery === 'object' && typeof input.discovery.start === 'function') {
    discovery = input.discovery;
  } else {
    throw new InvalidOptionError(`Expected \`discovery\` to be 'mdns', 'local' or a Discovery object, got ${JSON.stringify(input.discovery)}`);
  }
  const insecure = input.insecure ?? false;
  expectBoolean('insecure', insecure);
  if (insecure && (input.key !== undefined || input.keyFile !== undefined)) {
    throw new InvalidOptionError('Give either a farm key (`key`, `keyFile`) or `insecure: true`, not both');
  }
  // Local threads need no key; a malformed key is still an error wherever workers are used.
  const resolvedKey = discovery === 'local' || insecure ? undefined : resolveFarmKey({ key: input.key, keyFile: input.keyFile });
  const envFarm = process.env['TASKFARM_FARM'];
  const o: ResolvedPoolOptions = {
    discovery,
    farm: input.farm ?? (envFarm !== undefined && envFarm.length > 0 ? envFarm : 'default'),
    interface: input.interface,
    key: resolvedKey?.key,
    keySource: resolvedKey?.source,
    insecure,
    threads: input.threads ?? availableParallelism(),
    // Listed peers are a promise: a run given them does not quietly compute elsewhere.
    localFallback: input.localFallback ?? input.peers === undefined,
    workerWaitMs: input.workerWaitMs ?? 3000,
    scheduling: input.scheduling ?? preferCachedThenFastest,
    heartbeatMs: input.heartbeatMs ?? 500,
    heartbeatTimeoutMs: input.heartbeatTimeoutMs ?? 1500,
    leaseTimeoutMs: input.leaseTimeoutMs ?? 3000,
    connectTimeoutMs: input.connectTimeoutMs ?? 2000,
    setupTimeoutMs: input.setupTimeoutMs ?? 120_000,
    cacheDir: input.cacheDir ?? defaultCacheDir(),
    cwd: input.cwd ?? process.cwd(),
    logger: input.logger ?? silentLogger,
  };
  expectString('farm', o.farm);
  if (o.interface !== undefined && isIP(o.interface) === 0) {
    throw new InvalidOptionError(`Expected \`interface\` to be an IP address of this machine, got ${JSON.stringify(o.interface)}`);
  }
  expectInteger('threads', o.threads, 1, 1024);
  expectBoolean('localFallback', o.localFallback);
  if (o.workerWaitMs !== Number.POSITIVE_INFINITY) expectInteger('workerWaitMs', o.workerWaitMs, 0);
  if (typeof o.scheduling !== 'object' || o.scheduling === null || typeof o.scheduling.compare !== 'function') {
    throw new InvalidOptionError('Expected `scheduling` to be a SchedulingPolicy (an object with compare(a, b))');
  }
  expectInteger('heartbeatMs', o.heartbeatMs, 10);
  expectInteger('heartbeatTimeoutMs', o.heartbeatTimeoutMs, o.heartbeatMs + 1);
  expectInteger('leaseTimeoutMs', o.leaseTimeoutMs, 300);
  expectInteger('connectTimeoutMs', o.connectTimeoutMs, 10);
  expectInteger('setupTimeoutMs', o.setupTimeoutMs, 10);
  expectString('cacheDir', o.cacheDir);
  expectString('cwd', o.cwd);
  const frozen = Object.freeze(o);
  resolvedPools.add(frozen);
  return frozen;
}

/** Fills in defaults and validates every field of a job's options. Throws {@link InvalidOptionError}. */
export function resolveJobOptions(input: JobOptions = {}, poolCwd: string = process.cwd()): ResolvedJobOptions {
  checkKnown('job options', input, new Set(JOB_KEYS));
  const o: ResolvedJobOptions = {
    name: input.name,
    priority: input.priority ?? 0,
    weight: input.weight ?? 1,
    errors: input.errors ?? 'fail',
    maxAttempts: input.maxAttempts ?? 3,
    maxWorkerLosses: input.maxWorkerLosses ?? 10,
    retries: input.retries ?? 0,
    taskTimeoutMs: input.taskTimeoutMs ?? 0,
    speculation: input.speculation === false ? false : Object.freeze({ multiplier: input.speculation?.multiplier ?? 3, minMs: input.speculation?.minMs ?? 50 }),
    shared: input.shared ?? {},
    signal: input.signal,
    cwd: input.cwd ?? poolCwd,
  };
  if (o.name !== undefined) expectString('name', o.name);
  expectInteger('priority', o.priority, -1_000_000, 1_000_000);
  if (typeof o.weight !== 'number' || !Number.isFinite(o.weight) || o.weight <= 0) {
    throw new InvalidOptionError(`Expected \`weight\` to be a number > 0, got ${describeValue(o.weight)}`);
  }
  if (o.errors !== 'fail' && o.errors !== 'collect')
    throw new InvalidOptionError(`Expected \`errors\` to be 'fail' or 'collect', got ${describeValue(o.errors)}`);
  expectInteger('maxAttempts', o.maxAttempts, 1);
  expectInteger('maxWorkerLosses', o.maxWorkerLosses, 1);
  expectInteger('retries', o.retries, 0);
  expectInteger('taskTimeoutMs', o.taskTimeoutMs, 0, 2 ** 31 - 1);
  if (o.errors !== 'fail' && o.errors !== 'collect') {
    throw new InvalidOptionError(`Expected \`errors\` to be 'fail' or 'collect', got ${describeValue(o.errors)}`);
  }
  if (o.speculation !== false) {
    expectNumber('speculation.multiplier', o.speculation.multiplier, 1);
    expectInteger('speculation.minMs', o.speculation.minMs, 0);
  }
  if (typeof o.shared !== 'object' || o.shared === null || Array.isArray(o.shared)) {
    throw new InvalidOptionError('Expected `shared` to be an object of name → value (or sharedFile(path))');
  }
  expectString('cwd', o.cwd);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new InvalidOptionError('Expected `signal` to be an AbortSignal');
  return Object.freeze(o);
}

/** Splits and resolves a {@link TaskFarm}'s options into its pool's and its job's. Throws {@link InvalidOptionError}. */
export function resolveTaskFarmOptions(input: TaskFarmOptions = {}): { pool: ResolvedPoolOptions; job: ResolvedJobOptions } {
  checkKnown('options', input, TASK_FARM_KEYS);
  const pool = resolvePoolOptions(pick(input, POOL_KEYS));
  const job = resolveJobOptions(pick(input, JOB_KEYS), pool.cwd);
  return { pool, job };
}
