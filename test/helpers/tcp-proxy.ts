/**
 * A TCP proxy on 127.0.0.1 that forwards every connection to one target and records every byte
 * both ways, for tests that look at what is on the wire. `close()` ends every connection.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export class TcpProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #toTarget: Buffer[] = [];
  readonly #fromTarget: Buffer[] = [];
  #connections = 0;
  readonly port: number;

  private constructor(server: Server, port: number) {
    this.#server = server;
    this.port = port;
  }

  /** Starts a proxy to `targetHost:targetPort` on a free port of 127.0.0.1. */
  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    let self: TcpProxy | undefined;
    const server = createServer((client) => {
      const proxy = self!;
      proxy.#connections++;
      const upstream = connect({ host: targetHost, port: targetPort });
      proxy.#sockets.add(client);
      proxy.#sockets.add(upstream);
      client.on('data', (d: Buffer) => {
        proxy.#toTarget.push(Buffer.from(d));
        upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => {
        proxy.#fromTarget.push(Buffer.from(d));
        client.write(d);
      });
      const close = (): void => {
        client.destroy();
        upstream.destroy();
      };
      client.on('end', () => upstream.end());
      upstream.on('end', () => client.end());
      client.on('error', close);
      upstream.on('error', close);
      client.on('close', () => {
        proxy.#sockets.delete(client);
        upstream.destroy();
      });
      upstream.on('close', () => {
        proxy.#sockets.delete(upstream);
        client.destroy();
      });
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
    });
    self = new TcpProxy(server, port);
    return self;
  }

  /** `127.0.0.1:<port>` */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Connections proxied so far. */
  get connections(): number {
    return this.#connections;
  }

  /** Bytes client → target so far. */
  sent(): Buffer {
    return Buffer.concat(this.#toTarget);
  }

  /** Bytes target → client so far. */
  received(): Buffer {
    return Buffer.concat(this.#fromTarget);
  }

  /** Stops listening and destroys every proxied connection. */
  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
