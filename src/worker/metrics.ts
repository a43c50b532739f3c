/**
 * The worker daemon's Prometheus series (`taskfarm worker --metrics-port N`), with prom-client:
 * read from the {@link WorkerServer}'s counters at each scrape, plus a task-duration histogram fed
 * by its `results` event. Served by a small HTTP server of its own (`GET /metrics` only), apart
 * from the gRPC port, on 127.0.0.1 unless the daemon binds another address.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { WorkerServer } from './server.js';

/** Bucket bounds, in seconds, of task durations: 1 ms to 10 min (the manager's too). */
const TASK_DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/** A counter whose value is read from a source at each scrape (a total kept elsewhere). */
function mirroredCounter(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/**
 * Registers the daemon's series on `registry`: tasks completed, task durations, tasks in flight,
 * leases (granted, held now), programs loaded, threads (now, crashed, replaced), bytes received.
 * Call once per registry and server.
 */
export function registerWorkerMetrics(registry: Registry, server: WorkerServer): void {
  mirroredCounter(
    registry,
    'taskfarm_worker_tasks_completed_total',
    'Tasks whose outcome (output or error) was sent to a client',
    () => server.stats.tasksCompleted,
  );
  const durations = new Histogram({
    name: 'taskfarm_worker_task_duration_seconds',
    help: 'Run time of tasks on this worker',
    buckets: TASK_DURATION_BUCKETS,
    registers: [registry],
  });
  server.on('results', (ms) => {
    for (let i = 0; i < ms.length; i++) durations.observe((ms[i] ?? 0) / 1000);
  });
  new Gauge({
    name: 'taskfarm_worker_tasks_in_flight',
    help: 'Tasks accepted on the current lease and not answered yet',
    registers: [registry],
    collect() {
      this.set(server.stats.inFlight);
    },
  });
  mirroredCounter(registry, 'taskfarm_worker_leases_total', 'Leases granted to clients', () => server.stats.leases);
  new Gauge({
    name: 'taskfarm_worker_leased',
    help: '1 while a client holds the lease, else 0',
    registers: [registry],
    collect() {
      this.set(server.stats.leased ? 1 : 0);
    },
  });
  new Gauge({
    name: 'taskfarm_worker_programs_loaded',
    help: 'Programs loaded on the threads',
    registers: [registry],
    collect() {
      this.set(server.stats.programsLoaded);
    },
  });
  new Gauge({
    name: 'taskfarm_worker_threads',
    help: 'Worker threads running (0 before the first lease starts them)',
    registers: [registry],
    collect() {
      this.set(server.stats.threads);
    },
  });
  mirroredCounter(
    registry,
    'taskfarm_worker_threads_crashed_total',
    'Threads that died (exit, out of memory) and were replaced',
    () => server.stats.threadsCrashed,
  );
  mirroredCounter(
    registry,
    'taskfarm_worker_threads_replaced_total',
    'Threads replaced for any reason (crashes, tasks over their time limit, cancelled tasks)',
    () => server.stats.threadsReplaced,
  );
  new Counter({
    name: 'taskfarm_worker_received_bytes_total',
    help: 'Payload bytes received from clients, by kind (inputs, bundles, shared)',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      this.reset();
      const b = server.stats.bytesReceived;
      this.inc({ kind: 'inputs' }, b.inputs);
      this.inc({ kind: 'bundles' }, b.bundles);
      this.inc({ kind: 'shared' }, b.shared);
    },
  });
}

/** Options of {@link startMetricsServer}. */
export interface MetricsServerOptions {
  /** TCP port; 0 picks a free one. */
  readonly port: number;
  /** Address to bind. @default '127.0.0.1' */
  readonly host?: string;
  /** The series to serve. */
  readonly registry: Registry;
}

/** A running metrics endpoint. */
export interface MetricsServer {
  /** The bound port. */
  readonly port: number;
  /** Stops serving (open connections are closed). */
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (Prometheus text format) of `registry`; every other path answers 404.
 * Resolves once it listens; rejects when the port cannot be bound (in use, no permission).
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { registry } = options;
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(path === '/metrics' ? 405 : 404, { 'content-type': 'text/plain; charset=utf-8', ...(path === '/metrics' ? { allow: 'GET, HEAD' } : {}) });
      res.end(path === '/metrics' ? 'Only GET /metrics\n' : 'Not found: this port serves GET /metrics only\n');
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
        res.end(`collecting metrics failed: ${(err as Error).message}\n`);
      },
    );
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: options.port, host: options.host ?? '127.0.0.1' }, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr !== null ? addr.port : options.port);
    });
  });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** A registry with the daemon's series and Node's process metrics (`process_*`, `nodejs_*`). */
export function workerRegistry(server: WorkerServer): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  registerWorkerMetrics(registry, server);
  return registry;
}
