export { StaticDiscovery } from './static.js';
export { MemoryDiscovery } from './memory.js';
export { MdnsDiscovery, MdnsAdvertiser, type MdnsDiscoveryOptions, type AdvertisedWorker, type WorkerAdvert } from './mdns.js';
export { endpointKey, formatTarget, type Discovery, type DiscoveryEvents, type WorkerEndpoint } from './types.js';
