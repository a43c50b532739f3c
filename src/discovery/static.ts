import { EventEmitter } from 'node:events';
import { InvalidOptionError } from '../errors.js';
import { parseHostPort } from '../util/validate.js';
import type { Discovery, DiscoveryEvents, WorkerEndpoint } from './types.js';

/**
 * A fixed list of `host:port` peers (for routed networks where mDNS does not reach). The farm keeps
 * retrying peers it cannot reach or that are busy, so a daemon started later is still recruited.
 */
export class StaticDiscovery extends EventEmitter<DiscoveryEvents> implements Discovery {
  readonly #endpoints: readonly WorkerEndpoint[];

  constructor(peers: readonly string[]) {
    super();
    if (!Array.isArray(peers)) throw new InvalidOptionError('Expected `peers` to be an array of "host:port" strings');
    const seen = new Set<string>();
    const endpoints: WorkerEndpoint[] = [];
    for (const p of peers) {
      if (typeof p !== 'string') throw new InvalidOptionError(`Expected \`peers\` entries to be "host:port" strings, got ${typeof p}`);
      const { host, port } = parseHostPort('peers', p.trim());
      const key = `${host}:${port}`;
      if (seen.has(key)) continue;
      seen.add(key);
      endpoints.push(Object.freeze({ host, port, name: p.trim() }));
    }
    this.#endpoints = Object.freeze(endpoints);
  }

  start(): Promise<readonly WorkerEndpoint[]> {
    return Promise.resolve(this.#endpoints);
  }

  snapshot(): readonly WorkerEndpoint[] {
    return this.#endpoints;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
