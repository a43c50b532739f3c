export { ServiceHttpServer, statusToJson, SESSION_COOKIE, CSRF_HEADER, type ServiceHttpOptions } from './server.js';
