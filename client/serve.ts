/**
 * `taskfarm serve`: the job service's entry point. Argument parsing, the TLS identity, the logging
 * sink, signals and exit codes only; the service is the core's `createJobService` and the HTTP layer
 * is ServiceHttpServer.
 */
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Registry } from 'prom-client';
import {
  FarmError,
  NO_KEY_HELP,
  ServiceHttpServer,
  createJobService,
  keyFileTooOpen,
  loadOrCreateTlsIdentity,
  resolveFarmKey,
  streamLogger,
  type JobServiceFactoryOptions,
  type LogLevel,
} from '../src/index.js';

function defaultStateDir(): string {
  const base = process.env['XDG_STATE_HOME'];
  return join(base !== undefined && base.length > 0 ? base : join(homedir(), '.local', 'state'), 'taskfarm', 'manager');
}

export const SERVE_HELP = `Usage: taskfarm serve [options]

Runs the job service (the manager): a persistent queue of jobs on a store, computed on the farm's
worker daemons as one pool, with an HTTP/JSON API (docs/API.md) for the CLI, the library's
connect(), curl and the dashboard. Submit and walk away: jobs, inputs and outputs live in the store.

Options:
  --host ADDR          address to listen on (default 127.0.0.1). On any non-loopback address the
                       manager serves HTTPS with its own self-signed certificate (kept in the state
                       folder) and prints its SHA-256 fingerprint; clients pin it on first use
  --port N             TCP port (default 7800; 0: any free port, printed)
  --store PATH|URL     the job store: a SQLite file (default ~/.local/share/taskfarm/jobs.db) or a
                       postgres://user@host/db URL
  --peers H:P,...      worker daemons to use (default: the farm's daemons found over mDNS)
  --farm NAME          farm whose daemons to recruit (default $TASKFARM_FARM or "default")
  --key-file FILE      the farm key (default $TASKFARM_KEY, $TASKFARM_KEY_FILE or
                       ~/.config/taskfarm/farm.key); it also authorises \`taskfarm token create\`
  --insecure           recruit workers WITHOUT key and TLS (an isolated, trusted network only)
  --insecure-http      serve plain HTTP on a non-loopback address (tokens then travel in clear)
  --state-dir DIR      TLS certificate and key (default ${defaultStateDir()})
  --static DIR         serve this folder at / (the dashboard's built assets)
  --grace-ms MS        on SIGTERM, time for in-flight batches to finish (default 10000)
  --max-body-mb MB     largest JSON body (default 64)
  --max-line-mb MB     largest NDJSON line (default 1)
  --max-bundle-mb MB   largest bundle (default 16)
  --log-level LEVEL    debug | info | warn | error (default info)
  -h, --help           show this help

On start it prints one line to stdout once it accepts requests: READY port=<port>
SIGTERM or SIGINT: no new jobs or dispatch, in-flight batches finish within the grace period,
everything committed, exit 0. A second signal exits at once (still nothing acknowledged is lost).
`;

function int(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new FarmError('FARM_ERR_INVALID_OPTION', `--${name} expects an integer ≥ ${min}, got "${value}"`);
  return n;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Runs the manager until a signal stops it. Returns the exit code. */
export async function runServe(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      store: { type: 'string' },
      peers: { type: 'string' },
      farm: { type: 'string' },
      'key-file': { type: 'string' },
      insecure: { type: 'boolean' },
      'insecure-http': { type: 'boolean' },
      'state-dir': { type: 'string' },
      static: { type: 'string' },
      'grace-ms': { type: 'string' },
      'max-body-mb': { type: 'string' },
      'max-line-mb': { type: 'string' },
      'max-bundle-mb': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help === true) {
    process.stdout.write(SERVE_HELP);
    return 0;
  }
  const level = (values['log-level'] ?? 'info') as LogLevel;
  if (!['debug', 'info', 'warn', 'error'].includes(level))
    throw new FarmError('FARM_ERR_INVALID_OPTION', `--log-level expects debug, info, warn or error, got "${level}"`);
  const logger = streamLogger('manager', level);
  const host = values.host ?? '127.0.0.1';
  const port = int('port', values.port, 0) ?? 7800;
  if (port > 65_535) throw new FarmError('FARM_ERR_INVALID_OPTION', `--port expects an integer in [0, 65535], got "${port}"`);
  const graceMs = int('grace-ms', values['grace-ms'], 0) ?? 10_000;
  const mb = (name: string): number | undefined => {
    const n = int(name, values[name as 'max-body-mb'], 1);
    return n === undefined ? undefined : n * 1024 * 1024;
  };

  const factory: { -readonly [K in keyof JobServiceFactoryOptions]: JobServiceFactoryOptions[K] } = { logger };
  if (values.store !== undefined) factory.store = values.store;
  if (values.peers !== undefined)
    factory.peers = values.peers
      .split(',')
      .map((p) => p.trim())
      .filter((p) => p.length > 0);
  const farm = values.farm ?? process.env['TASKFARM_FARM'];
  if (farm !== undefined && farm.length > 0) factory.farm = farm;
  if (values.insecure === true) {
    if (values['key-file'] !== undefined) throw new FarmError('FARM_ERR_INVALID_OPTION', 'give either --key-file or --insecure, not both');
    factory.insecure = true;
    process.stderr.write('taskfarm serve: WARNING: --insecure: workers are recruited without the farm key or TLS, and no token can be minted.\n');
  } else {
    const key = resolveFarmKey({ keyFile: values['key-file'] });
    if (key === undefined) {
      process.stderr.write(`taskfarm serve: no farm key, refusing to start. ${NO_KEY_HELP}\n`);
      return 2;
    }
    if (key.source.startsWith('file ') && keyFileTooOpen(key.source.slice(5)))
      process.stderr.write(`taskfarm serve: warning: the farm key ${key.source} is readable by other users; chmod 600 it\n`);
    factory.key = key.key;
    if (values['key-file'] !== undefined) factory.keyFile = values['key-file'];
  }

  let tls: { cert: string; key: string } | undefined;
  if (!isLoopback(host) && values['insecure-http'] !== true) {
    const id = await loadOrCreateTlsIdentity(values['state-dir'] ?? defaultStateDir(), `taskfarm-manager ${hostname()}`);
    tls = { cert: id.cert, key: id.key };
    factory.certFingerprint = id.fingerprint;
    process.stdout.write(`taskfarm serve: HTTPS, certificate SHA-256 fingerprint ${id.fingerprint}\n`);
  } else {
    factory.certFingerprint = '';
    if (!isLoopback(host)) process.stderr.write(`taskfarm serve: WARNING: --insecure-http on ${host}: tokens and data travel in clear on the network.\n`);
  }

  const registry = new Registry();
  factory.registry = registry;
  const service = await createJobService(factory);
  const maxBody = mb('max-body-mb');
  const maxLine = mb('max-line-mb');
  const maxBundle = mb('max-bundle-mb');
  const http = await ServiceHttpServer.create({
    service,
    registry,
    logger,
    ...(tls === undefined ? {} : { tls }),
    ...(values.static === undefined ? {} : { staticDir: values.static }),
    ...(maxBody === undefined ? {} : { maxBodyBytes: maxBody }),
    ...(maxLine === undefined ? {} : { maxLineBytes: maxLine }),
    ...(maxBundle === undefined ? {} : { maxBundleBytes: maxBundle }),
  });
  let bound: { port: number; url: string };
  try {
    bound = await http.listen(host, port);
  } catch (err) {
    await service.close(0);
    throw new FarmError('FARM_ERR_INVALID_OPTION', `cannot listen on ${host}:${port}: ${(err as Error).message}`, { cause: err });
  }
  logger.info('manager listening', { url: bound.url });
  process.stdout.write(`READY port=${bound.port}\n`);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) {
        process.stderr.write(`taskfarm serve: second ${signal}: exiting now\n`);
        resolve(1);
        return;
      }
      stopping = true;
      logger.info('stopping', { signal, graceMs });
      http.beginShutdown();
      service
        .close(graceMs)
        .then(() => http.close())
        .then(
          () => resolve(0),
          (err: unknown) => {
            logger.error('shutdown failed', { error: (err as Error).message });
            resolve(1);
          },
        );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}
