/**
 * Ceiling: a raw grpc-js bidirectional echo stream in its own process (bytes in, same bytes out),
 * the fastest one-message-per-task transport grpc-js offers. Prints `READY <port>`.
 *
 *   node dist/bench/echo-server.js [--tls DIR]
 *
 * With `--tls DIR` it serves over TLS with the certificate a daemon would make (DIR/cert.pem, made
 * on first use), so the ceiling includes the cost of the encryption every farm connection pays.
 */
import * as grpc from '@grpc/grpc-js';
import { loadOrCreateTlsIdentity } from '../src/security/index.js';
import { ECHO_SERVICE } from './echo-service.js';

const tlsAt = process.argv.indexOf('--tls');
const tlsDir = tlsAt >= 0 ? process.argv[tlsAt + 1] : undefined;
const identity = tlsDir !== undefined ? await loadOrCreateTlsIdentity(tlsDir, 'localhost') : undefined;
const credentials =
  identity !== undefined
    ? grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(identity.key), cert_chain: Buffer.from(identity.cert) }])
    : grpc.ServerCredentials.createInsecure();

const server = new grpc.Server();
server.addService(ECHO_SERVICE, {
  Stream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    call.on('data', (b: Buffer) => call.write(b));
    call.on('end', () => call.end());
    call.on('error', () => {});
  },
});
server.bindAsync('127.0.0.1:0', credentials, (err, port) => {
  if (err !== null) throw err;
  process.stdout.write(`READY ${port}\n`);
});
process.on('SIGTERM', () => server.forceShutdown());
