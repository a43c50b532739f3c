/**
 * Traffic between a client and a daemon is encrypted (issue 4, test 4): a TCP proxy in this test
 * sits between a TaskFarm client (peers = the proxy) and a real daemon and records every byte both
 * ways. Inputs carry a marker, the inline stage's source carries another, the outputs echo both.
 * With the farm key (TLS) no marker is on the wire; the control run through the same kind of proxy
 * to an --insecure daemon shows them all (so the proxy does see plaintext when there is some).
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { TaskFarm } from '../../dist/src/index.js';
import { SecurityDaemons } from '../helpers/security-daemons.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/** The inline stage: its source text contains STAGE_MARKER; its output echoes the input's secret. */
const STAGE_MARKER = 'STAGE-SOURCE-MARKER-c41d9e7b20';
const echoStage = (x: { secret: string; i: number }): { echo: string; tag: string; i: number } => ({
  echo: x.secret,
  tag: 'STAGE-SOURCE-MARKER-c41d9e7b20',
  i: x.i,
});

interface Wire {
  sent: Buffer;
  received: Buffer;
  connections: number;
}

describe('traffic on the wire', () => {
  const daemons = new SecurityDaemons();
  const proxies: TcpProxy[] = [];

  afterEach(async () => {
    await Promise.all(proxies.splice(0).map((p) => p.close()));
    await daemons.stopAll();
  });

  /** Runs the echo stage through a recording proxy to `daemonPort`; returns the wire bytes. */
  async function runThroughProxy(daemonPort: number, secret: string, insecure: boolean): Promise<Wire> {
    const proxy = await TcpProxy.start('127.0.0.1', daemonPort);
    proxies.push(proxy);
    const n = 20;
    const inputs = Array.from({ length: n }, (_, i) => ({ secret: `${secret}#${i}`, i }));
    const farm = new TaskFarm<{ secret: string; i: number }, { echo: string; tag: string; i: number }>(echoStage, inputs, {
      peers: [proxy.address],
      localFallback: false,
      ...(insecure ? { insecure: true } : {}),
    });
    const outputs = await farm.compute();
    // The run really went through the proxy, and computed the right thing.
    expect(farm.stats().workers).toHaveLength(1);
    expect(farm.stats().workers[0]!.address).toBe(proxy.address);
    expect(outputs).toEqual(inputs.map((x) => ({ echo: x.secret, tag: STAGE_MARKER, i: x.i })));
    return { sent: proxy.sent(), received: proxy.received(), connections: proxy.connections };
  }

  it('with the farm key, neither the input marker nor the stage source nor the outputs appear in the bytes on the wire; an --insecure run shows them', async () => {
    const [keyed, open] = await Promise.all([daemons.start({ inherit: true }), daemons.start({ insecure: true })]);
    const secret = `SECRET-PAYLOAD-7f3a-${randomBytes(8).toString('hex')}`;
    const stageBundleLine = 'export default ((x) =>';

    const tls = await runThroughProxy(keyed.port, secret, false);
    // Traffic went both ways (bundle, tasks, results): several KB, on at least the certificate
    // fetch and the gRPC channel.
    expect(tls.connections).toBeGreaterThanOrEqual(2);
    expect(tls.sent.length).toBeGreaterThan(2000);
    expect(tls.received.length).toBeGreaterThan(1000);
    // It is TLS from the first byte (a handshake record), both ways.
    expect(tls.sent[0]).toBe(0x16);
    expect(tls.received[0]).toBe(0x16);
    for (const [dir, bytes] of [
      ['client → daemon', tls.sent],
      ['daemon → client', tls.received],
    ] as const) {
      for (const marker of [secret, STAGE_MARKER, stageBundleLine, 'SECRET-PAYLOAD', 'STAGE-SOURCE-MARKER', process.env['TASKFARM_KEY']!]) {
        expect(bytes.includes(Buffer.from(marker)), `${dir} contains ${JSON.stringify(marker)} in clear`).toBe(false);
      }
    }

    // Control: the same through a proxy to an --insecure daemon, with an insecure client.
    const secret2 = `SECRET-PAYLOAD-7f3a-${randomBytes(8).toString('hex')}`;
    const plain = await runThroughProxy(open.port, secret2, true);
    expect(plain.sent.includes(Buffer.from(`${secret2}#7`)), 'inputs in clear').toBe(true);
    expect(plain.sent.includes(Buffer.from(STAGE_MARKER)), 'stage source in clear').toBe(true);
    expect(plain.sent.includes(Buffer.from(stageBundleLine)), 'bundle in clear').toBe(true);
    expect(plain.received.includes(Buffer.from(`${secret2}#7`)), 'outputs in clear').toBe(true);
    expect(plain.received.includes(Buffer.from(STAGE_MARKER)), 'outputs in clear').toBe(true);
    console.log(
      `on the wire: TLS run ${tls.sent.length}+${tls.received.length} bytes over ${tls.connections} connections, no marker; ` +
        `--insecure run ${plain.sent.length}+${plain.received.length} bytes, markers visible`,
    );
  });
});
