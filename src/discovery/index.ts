export { StaticDiscovery } from './static.js';
export { MemoryDiscovery } from './memory.js';
export { endpointKey, formatTarget, type Discovery, type DiscoveryEvents, type WorkerEndpoint } from './types.js';
