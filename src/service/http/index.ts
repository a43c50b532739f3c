export { ServiceHttpServer, statusToJson, errorBody, SESSION_COOKIE, CSRF_HEADER, type ServiceHttpOptions } from './server.js';
export { ndjsonLines, ndjsonLineIterator, type NdjsonLine } from './ndjson.js';
