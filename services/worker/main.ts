/**
 * `taskfarm worker`: the worker daemon's entry point. Argument parsing, logging sink, signals and
 * exit codes only; the logic is WorkerServer in src/worker.
 */
import { parseArgs } from 'node:util';
import {
  FarmError,
  NO_KEY_HELP,
  WorkerServer,
  keyFileTooOpen,
  startMetricsServer,
  workerRegistry,
  type MetricsServer,
  resolveFarmKey,
  streamLogger,
  type LogLevel,
  type WorkerServerOptions,
} from '../../src/index.js';

export const WORKER_HELP = `Usage: taskfarm worker [options]

Runs a taskfarm worker daemon: it advertises itself on the LAN over mDNS (_taskfarm._tcp), waits
for one client at a time to recruit it, receives the client's code (cached on disk by hash) and
computes its tasks on a pool of worker threads. While recruited it stops advertising itself as free.

Options:
  --port N              TCP port to listen on (default 0: any free port; the port is printed)
  --host ADDR           address to bind (default 0.0.0.0: every IPv4 interface; the --interface
                        address when that is given)
  --threads N           worker threads (default: one per core)
  --cache-dir DIR       code cache and worker id folder (default $XDG_CACHE_HOME/taskfarm or ~/.cache/taskfarm)
  --id ID               fixed worker id (default: a stable id kept in the cache folder)
  --farm NAME           farm this worker belongs to (default: $TASKFARM_FARM or "default")
  --interface ADDR      multi-homed machines: use mDNS on this interface address only, and
                        advertise only this address
  --no-advertise        do not advertise on mDNS (clients then need --peers host:port)
  --key-file FILE       the farm key (default: $TASKFARM_KEY, $TASKFARM_KEY_FILE, or
                        ~/.config/taskfarm/farm.key; make one with \`taskfarm keygen\`)
  --insecure            run WITHOUT key and TLS: anyone who can reach the port runs code here
  --max-connections N   concurrent TCP connections (default 256)
  --max-message-mb MB   largest gRPC message accepted (default 64)
  --max-bundle-mb MB    largest code bundle accepted (default 32)
  --max-in-flight N     tasks in flight on one lease (default 65536)
  --handshake-ms MS     time between Describe and Recruit of the key handshake (default 10000)
  --idle-timeout-ms MS  close connections silent for this long (default 30000)
  --thread-memory-mb MB heap limit of each thread; a thread over it dies alone and is replaced
  --nice N              CPU priority of the task threads, a nice value from 0 (normal) to 19
                        (lowest; default 0); with 10, say, the machine's own programs go first. On
                        Linux only the task threads are niced; where nice is per process
                        (macOS), the whole daemon is
  --no-sched-batch      Linux: keep the daemon's own thread (gRPC, heartbeats) under the normal
                        scheduling policy. By default it runs as SCHED_BATCH (set with chrt), so
                        that its wake-ups do not preempt a running task; the task threads keep the
                        normal policy
  --grace-ms MS         on SIGTERM/SIGINT, time for in-flight tasks to finish (default 10000)
  --metrics-port N      serve Prometheus metrics at http://HOST:N/metrics (tasks, task durations,
                        leases, programs, threads, bytes received); HOST is 127.0.0.1, or the
                        --host address when that is given. Off by default
  --log-level LEVEL     debug | info | warn | error (default info)
  -h, --help            show this help

On start it prints one line to stdout: READY port=<port> id=<id>
(with --metrics-port, a line METRICS port=<port> comes before it)
SIGTERM or SIGINT: take no new work, finish in-flight tasks within the grace period, release the
client, exit 0. A second signal exits at once.
`;

function int(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n)) throw new FarmError('FARM_ERR_INVALID_OPTION', `--${name} expects an integer, got "${value}"`);
  return n;
}

/** Runs the daemon until a signal stops it. Returns the exit code. */
export async function runWorker(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      threads: { type: 'string' },
      'cache-dir': { type: 'string' },
      id: { type: 'string' },
      farm: { type: 'string' },
      interface: { type: 'string' },
      'no-advertise': { type: 'boolean' },
      'no-sched-batch': { type: 'boolean' },
      'key-file': { type: 'string' },
      insecure: { type: 'boolean' },
      'max-connections': { type: 'string' },
      'max-message-mb': { type: 'string' },
      'max-bundle-mb': { type: 'string' },
      'max-in-flight': { type: 'string' },
      'handshake-ms': { type: 'string' },
      'idle-timeout-ms': { type: 'string' },
      'thread-memory-mb': { type: 'string' },
      'grace-ms': { type: 'string' },
      nice: { type: 'string' },
      'metrics-port': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help === true) {
    process.stdout.write(WORKER_HELP);
    return 0;
  }
  const level = (values['log-level'] ?? 'info') as LogLevel;
  if (!['debug', 'info', 'warn', 'error'].includes(level)) {
    throw new FarmError('FARM_ERR_INVALID_OPTION', `--log-level expects debug, info, warn or error, got "${level}"`);
  }
  const opts: { -readonly [K in keyof WorkerServerOptions]: WorkerServerOptions[K] } = {
    logger: streamLogger('worker', level),
    advertise: values['no-advertise'] !== true,
    schedBatch: values['no-sched-batch'] !== true,
  };
  if (values.interface !== undefined) {
    opts.interface = values.interface;
    opts.host = values.interface;
  }
  const port = int('port', values.port);
  if (port !== undefined) opts.port = port;
  if (values.host !== undefined) opts.host = values.host;
  const threads = int('threads', values.threads);
  if (threads !== undefined) opts.threads = threads;
  if (values['cache-dir'] !== undefined) opts.cacheDir = values['cache-dir'];
  if (values.id !== undefined) opts.id = values.id;
  const farm = values.farm ?? process.env['TASKFARM_FARM'];
  if (farm !== undefined && farm.length > 0) opts.farm = farm;
  const mem = int('thread-memory-mb', values['thread-memory-mb']);
  if (mem !== undefined) opts.threadMemoryMb = mem;
  const nice = int('nice', values.nice);
  if (nice !== undefined) opts.nice = nice;
  const grace = int('grace-ms', values['grace-ms']);
  if (grace !== undefined) opts.graceMs = grace;
  const maxConnections = int('max-connections', values['max-connections']);
  if (maxConnections !== undefined) opts.maxConnections = maxConnections;
  const maxMessageMb = int('max-message-mb', values['max-message-mb']);
  if (maxMessageMb !== undefined) opts.maxMessageBytes = maxMessageMb * 1024 * 1024;
  const maxBundleMb = int('max-bundle-mb', values['max-bundle-mb']);
  if (maxBundleMb !== undefined) opts.maxBundleBytes = maxBundleMb * 1024 * 1024;
  const maxInFlight = int('max-in-flight', values['max-in-flight']);
  if (maxInFlight !== undefined) opts.maxInFlight = maxInFlight;
  const handshakeMs = int('handshake-ms', values['handshake-ms']);
  if (handshakeMs !== undefined) opts.handshakeMs = handshakeMs;
  const idleMs = int('idle-timeout-ms', values['idle-timeout-ms']);
  if (idleMs !== undefined) opts.idleTimeoutMs = idleMs;
  if (values.insecure === true) {
    if (values['key-file'] !== undefined) throw new FarmError('FARM_ERR_INVALID_OPTION', 'give either --key-file or --insecure, not both');
    opts.insecure = true;
    process.stderr.write(
      'taskfarm worker: WARNING: --insecure: no farm key and no TLS. Anyone who can reach this port can run any code on this ' +
        'machine as this user, and see all traffic. Use it only on an isolated, trusted network.\n',
    );
  } else {
    const key = resolveFarmKey({ keyFile: values['key-file'] });
    if (key === undefined) {
      process.stderr.write(`taskfarm worker: no farm key, refusing to start. ${NO_KEY_HELP}\nTo run without one on an isolated network, pass --insecure.\n`);
      return 2;
    }
    if (key.source.startsWith('file ') && keyFileTooOpen(key.source.slice(5))) {
      process.stderr.write(`taskfarm worker: warning: the farm key ${key.source} is readable by other users; chmod 600 it\n`);
    }
    opts.key = key.key;
  }

  const metricsPort = int('metrics-port', values['metrics-port']);
  if (metricsPort !== undefined && (metricsPort < 0 || metricsPort > 65_535)) {
    throw new FarmError('FARM_ERR_INVALID_OPTION', `--metrics-port expects a port in [0, 65535], got "${values['metrics-port']}"`);
  }

  const server = new WorkerServer(opts);
  let metrics: MetricsServer | undefined;
  if (metricsPort !== undefined) {
    const host = values.host ?? values.interface ?? '127.0.0.1';
    try {
      metrics = await startMetricsServer({ port: metricsPort, host, registry: workerRegistry(server) });
    } catch (err) {
      throw new FarmError('FARM_ERR_INVALID_OPTION', `--metrics-port ${metricsPort}: cannot listen on ${host}:${metricsPort}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  let started: { port: number; id: string };
  try {
    started = await server.start();
  } catch (err) {
    await metrics?.close();
    throw err;
  }
  const { port: bound, id } = started;
  if (metrics !== undefined) process.stdout.write(`METRICS port=${metrics.port}\n`);
  process.stdout.write(`READY port=${bound} id=${id}\n`);

  return await new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        // At once: no goodbye, no grace. The threads die with the process; clients see the stream
        // break and requeue its tasks, and the worker-id lock of a dead pid is taken over on restart.
        process.stderr.write(`taskfarm worker: ${signal} again, exiting now\n`);
        process.exit(1);
      }
      stopping = true;
      process.stderr.write(`taskfarm worker: ${signal}: finishing in-flight tasks (grace ${server.options.graceMs} ms), then exiting\n`);
      server.drain().then(
        async () => {
          await metrics?.close();
          resolve(0);
        },
        (err: unknown) => {
          process.stderr.write(`taskfarm worker: shutdown failed: ${String(err)}\n`);
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
