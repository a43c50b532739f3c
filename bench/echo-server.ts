/**
 * Ceiling: a raw grpc-js bidirectional echo stream in its own process (bytes in, same bytes out),
 * the fastest one-message-per-task transport grpc-js offers. Prints `READY <port>`.
 */
import * as grpc from '@grpc/grpc-js';
import { ECHO_SERVICE } from './echo-service.js';

const server = new grpc.Server();
server.addService(ECHO_SERVICE, {
  Stream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    call.on('data', (b: Buffer) => call.write(b));
    call.on('end', () => call.end());
    call.on('error', () => {});
  },
});
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err !== null) throw err;
  process.stdout.write(`READY ${port}\n`);
});
process.on('SIGTERM', () => server.forceShutdown());
