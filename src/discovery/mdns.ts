/**
 * DNS-SD over multicast DNS (RFC 6762/6763) with bonjour-service: the only module that imports it.
 *
 * A free daemon advertises `_taskfarm._tcp` (what clients recruit from); while recruited it sends
 * goodbyes for it and advertises `_taskfarm-busy._tcp` instead, so other clients are not offered it
 * but `taskfarm ls` still sees it. Instance names are the worker ids (unique on the link), so no
 * name probe is needed and a restarted daemon reclaims its own name.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { Bonjour, Service } from 'bonjour-service';
import type { Browser } from 'bonjour-service';
import { silentLogger, type Logger } from '../log.js';
import type { Discovery, DiscoveryEvents, WorkerEndpoint } from './types.js';

/** DNS-SD service type of a free worker. */
export const SERVICE_TYPE = 'taskfarm';
/** DNS-SD service type of a recruited worker (not offered to clients; seen by `taskfarm ls`). */
export const BUSY_SERVICE_TYPE = 'taskfarm-busy';

/** What a worker advertises in its TXT record. */
export interface WorkerAdvert {
  readonly id: string;
  readonly farm: string;
  readonly threads: number;
  readonly proto: number;
  readonly version: string;
  readonly hostname: string;
  /** False for a daemon run with --insecure (no key, no TLS). */
  readonly secure: boolean;
}

// bonjour-service advertises an A/AAAA record for every address of every interface. A daemon bound
// to one interface (--interface) must advertise only that address: filter the records per service.
const allowedAddresses = new Map<string, ReadonlySet<string>>();
// eslint-disable-next-line @typescript-eslint/unbound-method -- the original method, called below with .call(this)
const originalRecords = Service.prototype.records;
Service.prototype.records = function records(this: Service) {
  const all = originalRecords.call(this);
  const only = allowedAddresses.get(this.fqdn);
  if (only === undefined) return all;
  return all.filter((r) => (r.type !== 'A' && r.type !== 'AAAA') || only.has(String(r.data)));
};

interface MdnsSocketEvents {
  on(event: 'error' | 'warning', listener: (err: Error) => void): void;
}

/** Calls `report` at most once per `everyMs` per distinct message; counts what it held back. */
function throttled(report: (message: string) => void, everyMs = 10_000): (message: string) => void {
  const last = new Map<string, { at: number; held: number }>();
  return (message) => {
    const now = Date.now();
    const seen = last.get(message);
    if (seen !== undefined && now - seen.at < everyMs) {
      seen.held++;
      return;
    }
    if (last.size > 100) last.clear();
    last.set(message, { at: now, held: 0 });
    report(seen !== undefined && seen.held > 0 ? `${message} (and ${seen.held} more like it)` : message);
  };
}

function describeSocketProblem(err: Error): string {
  // multicast-dns reports a peer's undecodable packet through the same channel as socket errors.
  return err instanceof RangeError || /decode|offset|out of range|buffer/i.test(err.message)
    ? `ignoring an undecodable mDNS packet from the network (${err.message})`
    : `mDNS socket problem: ${err.message}`;
}

function createBonjour(iface: string | undefined, onError: (err: Error) => void): Bonjour {
  // Binding to a unicast address would stop multicast reception on Linux: bind the wildcard and
  // choose the interface for memberships and sending.
  const opts = iface === undefined ? {} : { interface: iface, bind: '0.0.0.0' };
  const bonjour = new Bonjour(opts as ConstructorParameters<typeof Bonjour>[0], onError);
  const mdns = (bonjour as unknown as { server?: { mdns?: MdnsSocketEvents } }).server?.mdns;
  // multicast-dns emits 'error' for EACCES/EADDRINUSE, which would crash the process unhandled.
  mdns?.on('error', onError);
  mdns?.on('warning', onError);
  return bonjour;
}

/** Options of an {@link MdnsAdvertiser}. */
export interface MdnsAdvertiserOptions {
  readonly advert: WorkerAdvert;
  readonly port: number;
  /** Send and answer on this interface address only, and advertise only it. */
  readonly interface?: string;
  readonly logger?: Logger;
}

/** A daemon's advertisement: free, busy (recruited) or gone. Transitions are serialized. */
export class MdnsAdvertiser {
  readonly #o: MdnsAdvertiserOptions;
  readonly #log: Logger;
  readonly #bonjour: Bonjour;
  readonly #boot = randomBytes(4).toString('hex');
  #service: Service | undefined;
  #chain: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(options: MdnsAdvertiserOptions) {
    this.#o = options;
    this.#log = options.logger ?? silentLogger;
    const warn = throttled((m) => this.#log.warn(m));
    this.#bonjour = createBonjour(options.interface, (err) => warn(describeSocketProblem(err)));
  }

  #enqueue(step: () => Promise<void>): Promise<void> {
    this.#chain = this.#chain.then(step, step);
    return this.#chain;
  }

  #stopCurrent(): Promise<void> {
    const s = this.#service;
    this.#service = undefined;
    if (s === undefined) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      (s.stop as ((callback: () => void) => void) | undefined)?.(() => {
        clearTimeout(timer);
        resolve();
      });
    }).finally(() => allowedAddresses.delete(s.fqdn));
  }

  #publish(type: string, extra: Record<string, string>): void {
    const a = this.#o.advert;
    const name = a.id;
    const txt = {
      farm: a.farm,
      id: a.id,
      threads: String(a.threads),
      proto: String(a.proto),
      ver: a.version,
      host: a.hostname,
      boot: this.#boot,
      ...(a.secure ? {} : { insecure: '1' }),
      ...extra,
    };
    const fqdn = `${name.split('.').join('-')}._${type}._tcp.local`;
    if (this.#o.interface !== undefined) allowedAddresses.set(fqdn, new Set([this.#o.interface]));
    this.#service = this.#bonjour.publish({ name, type, port: this.#o.port, host: `${a.id}.local`, txt, probe: false });
  }

  /** Advertises the worker as free (`_taskfarm._tcp`). */
  advertiseFree(): Promise<void> {
    return this.#enqueue(async () => {
      if (this.#closed) return;
      await this.#stopCurrent();
      this.#publish(SERVICE_TYPE, {});
      this.#log.info('advertising on mDNS', { type: `_${SERVICE_TYPE}._tcp`, name: this.#o.advert.id, port: this.#o.port });
    });
  }

  /** Withdraws the free advert (goodbye) and advertises the worker as recruited. */
  advertiseBusy(client: string): Promise<void> {
    return this.#enqueue(async () => {
      if (this.#closed) return;
      await this.#stopCurrent();
      this.#publish(BUSY_SERVICE_TYPE, { client: client.slice(0, 100) });
    });
  }

  /** Sends goodbyes and closes the socket. */
  close(): Promise<void> {
    return this.#enqueue(async () => {
      if (this.#closed) return;
      this.#closed = true;
      await this.#stopCurrent();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        this.#bonjour.destroy(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    });
  }
}

/** Options of an {@link MdnsDiscovery}. */
export interface MdnsDiscoveryOptions {
  /** Only workers of this farm are reported. @default 'default' */
  readonly farm?: string;
  /** Send queries and listen on this interface address only. */
  readonly interface?: string;
  /** How long start() listens before it resolves its snapshot, in ms. @default 300 */
  readonly lookupMs?: number;
  /** Re-send the query this often while running, in ms (recovers lost announcements). @default 5000 */
  readonly requeryMs?: number;
  /** Protocol version this client speaks: other versions are skipped with a warning. */
  readonly protocolVersion: number;
  /** Only report workers that require a farm key (true) or that run insecure (false). @default both */
  readonly secure?: boolean;
  /** Also browse recruited workers (for `taskfarm ls`). @default false */
  readonly includeBusy?: boolean;
  readonly logger?: Logger;
}

/** A worker as `taskfarm ls` shows it. */
export interface AdvertisedWorker extends WorkerEndpoint {
  readonly id: string;
  readonly advert: WorkerAdvert;
  readonly state: 'free' | 'recruited';
  /** The addresses in dialing order. */
  readonly addresses: readonly string[];
}

interface Seen {
  readonly fqdn: string;
  readonly id: string;
  readonly state: 'free' | 'recruited';
  endpoint: AdvertisedWorker;
}

function addressOrder(a: string): number {
  const v = isIP(a);
  if (v === 4) return 0;
  if (v === 6 && !/^fe80:/i.test(a)) return 1;
  return 2;
}

/** Dialable addresses, IPv4 first; IPv6 link-local only with a zone (`fe80::1%eth0`). */
export function orderAddresses(addresses: readonly string[]): string[] {
  const ok = [...new Set(addresses)].filter((a) => {
    const bare = a.split('%')[0]!;
    if (isIP(bare) === 0) return false;
    if (/^fe80:/i.test(bare) && !a.includes('%')) return false;
    return true;
  });
  return ok.sort((x, y) => addressOrder(x) - addressOrder(y));
}

/**
 * Finds workers by mDNS: a query when started (JJPF's lookup), then every announcement and goodbye
 * while running (its observer). Only the chosen farm's workers are reported; a worker seen on
 * several interfaces or addresses is merged by id; malformed adverts and other protocol versions
 * are reported as `warning` and skipped.
 */
export class MdnsDiscovery extends EventEmitter<DiscoveryEvents> implements Discovery {
  readonly #o: Required<Omit<MdnsDiscoveryOptions, 'interface' | 'secure'>> & { interface: string | undefined; secure: boolean | undefined };
  #bonjour: Bonjour | undefined;
  readonly #browsers: Browser[] = [];
  readonly #byFqdn = new Map<string, Seen>();
  /** Farm names of every well-formed taskfarm advert seen, ours or not (bounded). */
  readonly #farmsSeen = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #warn: (message: string) => void = (m) => this.emit('warning', m);

  constructor(options: MdnsDiscoveryOptions) {
    super();
    this.#o = {
      farm: 'default',
      lookupMs: 300,
      requeryMs: 5000,
      includeBusy: false,
      logger: silentLogger,
      ...options,
      interface: options.interface,
      secure: options.secure,
    };
  }

  start(): Promise<readonly WorkerEndpoint[]> {
    if (this.#bonjour !== undefined) return Promise.resolve(this.snapshot());
    const warn = throttled((m) => this.emit('warning', m));
    this.#warn = warn;
    const bonjour = createBonjour(this.#o.interface, (err) => warn(describeSocketProblem(err)));
    this.#bonjour = bonjour;
    const types: ['free' | 'recruited', string][] = [['free', SERVICE_TYPE]];
    if (this.#o.includeBusy) types.push(['recruited', BUSY_SERVICE_TYPE]);
    for (const [state, type] of types) {
      const browser = bonjour.find({ type, protocol: 'tcp' });
      const seen = (s: Service): void => this.#onService(s, state);
      browser.on('up', seen);
      browser.on('srv-update', seen);
      browser.on('txt-update', seen);
      browser.on('down', (s: Service) => this.#onDown(s));
      this.#browsers.push(browser);
    }
    this.#timer = setInterval(() => {
      for (const b of this.#browsers) b.update();
    }, this.#o.requeryMs);
    this.#timer.unref();
    return new Promise((resolve) => setTimeout(() => resolve(this.snapshot()), this.#o.lookupMs).unref());
  }

  #onService(s: Service, state: 'free' | 'recruited'): void {
    if (this.#closed) return;
    const txt = (s.txt ?? {}) as Record<string, unknown>;
    const str = (k: string): string | undefined => (typeof txt[k] === 'string' ? txt[k] : typeof txt[k] === 'number' ? String(txt[k]) : undefined);
    const id = str('id');
    const farm = str('farm');
    const proto = Number(str('proto'));
    const threads = Number(str('threads'));
    const where = `${s.name ?? '?'} (${s.referer?.address ?? '?'}:${s.port})`;
    if (id === undefined || !/^[\w.-]{1,128}$/.test(id) || farm === undefined || !Number.isInteger(proto) || !Number.isInteger(threads) || threads < 1) {
      this.#warn(`ignoring a malformed taskfarm advert from ${where}: TXT must carry id, farm, threads and proto`);
      return;
    }
    if (this.#farmsSeen.size < 64) this.#farmsSeen.add(farm.slice(0, 100));
    if (farm !== this.#o.farm) return;
    if (proto !== this.#o.protocolVersion) {
      this.#warn(`skipping worker ${id} at ${where}: it speaks taskfarm protocol ${proto}, this client speaks ${this.#o.protocolVersion}`);
      return;
    }
    if (!Number.isInteger(s.port) || s.port < 1 || s.port > 65535) {
      this.#warn(`ignoring worker ${id} at ${where}: invalid port`);
      return;
    }
    const fromPacket = s.referer?.address;
    const addresses = orderAddresses([...(fromPacket !== undefined ? [fromPacket] : []), ...(s.addresses ?? [])]);
    if (addresses.length === 0) {
      this.#warn(`ignoring worker ${id} at ${where}: no dialable address`);
      return;
    }
    const secure = str('insecure') !== '1';
    if (this.#o.secure !== undefined && secure !== this.#o.secure) {
      this.emit(
        'warning',
        secure
          ? `skipping worker ${id} at ${where}: it requires the farm key and this client has none`
          : `skipping worker ${id} at ${where}: it runs with --insecure (no key, no TLS) and this client has a farm key`,
      );
      return;
    }
    const advert: WorkerAdvert = { id, farm, threads, proto, version: str('ver') ?? '', hostname: str('host') ?? s.host, secure };
    this.#byFqdn.set(s.fqdn, {
      fqdn: s.fqdn,
      id,
      state,
      endpoint: Object.freeze({ id, host: addresses[0]!, port: s.port, addresses, name: s.name, advert, state }),
    });
    if (state === 'free') {
      const merged = this.#merged(id);
      if (merged !== undefined) this.emit('up', merged);
    }
  }

  /** One endpoint per worker id: addresses of every advert of it, the newest port. */
  #merged(id: string): AdvertisedWorker | undefined {
    const all = [...this.#byFqdn.values()].filter((x) => x.id === id && x.state === 'free');
    if (all.length === 0) return undefined;
    const last = all[all.length - 1]!.endpoint;
    const addresses = orderAddresses(all.flatMap((x) => x.endpoint.addresses));
    return { ...last, host: addresses[0] ?? last.host, addresses };
  }

  #onDown(s: Service): void {
    const seen = this.#byFqdn.get(s.fqdn);
    if (seen === undefined) return;
    this.#byFqdn.delete(s.fqdn);
    if (seen.state === 'free' && this.#merged(seen.id) === undefined) this.emit('down', seen.endpoint);
  }

  snapshot(): readonly WorkerEndpoint[] {
    return this.workers().filter((w) => w.state === 'free');
  }

  /**
   * The farm names of every well-formed taskfarm advert seen since start(), this farm's and
   * others' (sorted; at most 64): what to tell a user whose `farm` matches no worker.
   */
  farmsSeen(): string[] {
    return [...this.#farmsSeen].sort();
  }

  /** Every worker seen, free and (with includeBusy) recruited, one entry per id. */
  workers(): AdvertisedWorker[] {
    const byId = new Map<string, AdvertisedWorker>();
    for (const s of this.#byFqdn.values()) {
      const prev = byId.get(s.id);
      if (prev === undefined || (prev.state === 'recruited' && s.state === 'free')) byId.set(s.id, s.endpoint);
    }
    return [...byId.values()];
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    clearInterval(this.#timer);
    for (const b of this.#browsers) b.stop();
    const bonjour = this.#bonjour;
    if (bonjour === undefined) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      bonjour.destroy(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
