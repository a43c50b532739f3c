export { StaticDiscovery } from './static.js';
export { MemoryDiscovery } from './memory.js';
export {
  MdnsDiscovery,
  MdnsAdvertiser,
  orderAddresses,
  SERVICE_TYPE,
  BUSY_SERVICE_TYPE,
  type MdnsDiscoveryOptions,
  type MdnsAdvertiserOptions,
  type AdvertisedWorker,
  type WorkerAdvert,
} from './mdns.js';
export { endpointKey, formatTarget, type Discovery, type DiscoveryEvents, type WorkerEndpoint } from './types.js';
