import { EventEmitter } from 'node:events';
import { endpointKey, type Discovery, type DiscoveryEvents, type WorkerEndpoint } from './types.js';

/**
 * Discovery driven by hand: `add()` and `remove()` emit `up` and `down`. For tests and for programs
 * that learn about workers some other way (a scheduler, a config service).
 */
export class MemoryDiscovery extends EventEmitter<DiscoveryEvents> implements Discovery {
  readonly #endpoints = new Map<string, WorkerEndpoint>();

  constructor(initial: readonly WorkerEndpoint[] = []) {
    super();
    for (const e of initial) this.#endpoints.set(endpointKey(e), e);
  }

  /** Announces a worker (emits `up`). */
  add(endpoint: WorkerEndpoint): void {
    this.#endpoints.set(endpointKey(endpoint), endpoint);
    this.emit('up', endpoint);
  }

  /** Withdraws a worker (emits `down`). */
  remove(endpoint: WorkerEndpoint): void {
    this.#endpoints.delete(endpointKey(endpoint));
    this.emit('down', endpoint);
  }

  start(): Promise<readonly WorkerEndpoint[]> {
    return Promise.resolve(this.snapshot());
  }

  snapshot(): readonly WorkerEndpoint[] {
    return [...this.#endpoints.values()];
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
