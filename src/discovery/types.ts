import type { EventEmitter } from 'node:events';

/** Where a worker daemon can be reached, as a discovery backend knows it. */
export interface WorkerEndpoint {
  /** Address to dial (IPv4, IPv6 or a hostname). */
  readonly host: string;
  /** TCP port of the daemon. */
  readonly port: number;
  /** The worker's id, when the backend knows it (mDNS does; a static peer list does not). */
  readonly id?: string;
  /** Further addresses of the same worker, tried in order after `host`. */
  readonly addresses?: readonly string[];
  /** Human-readable name (mDNS instance name, or `host:port`). */
  readonly name?: string;
}

/** Events of a {@link Discovery}. */
export interface DiscoveryEvents {
  /** A worker appeared (or re-announced itself: treat as a possible restart). */
  up: [endpoint: WorkerEndpoint];
  /** A worker said goodbye. Liveness is the stream's job: a dead worker may never send this. */
  down: [endpoint: WorkerEndpoint];
  /** A non-fatal problem worth a log line (a malformed advert, a send failure). */
  warning: [message: string];
}

/**
 * How a TaskFarm finds workers: JJPF's synchronous lookup ({@link Discovery.start} resolves the
 * workers known now) plus its asynchronous observer (`up`/`down` events for the whole run).
 * A backend must never throw from an event handler and must stop all I/O on {@link Discovery.close}.
 */
export interface Discovery extends EventEmitter<DiscoveryEvents> {
  /** Starts observing; resolves with a snapshot of the workers known now (possibly empty). */
  start(): Promise<readonly WorkerEndpoint[]>;
  /** The workers known now. */
  snapshot(): readonly WorkerEndpoint[];
  /** Stops observing and releases sockets. Idempotent. */
  close(): Promise<void>;
}

/** A stable key for an endpoint: its id when known, else `host:port`. */
export function endpointKey(e: WorkerEndpoint): string {
  return e.id !== undefined && e.id.length > 0 ? `id:${e.id}` : `addr:${formatTarget(e.host, e.port)}`;
}

/** `host:port`, with IPv6 addresses bracketed. */
export function formatTarget(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
