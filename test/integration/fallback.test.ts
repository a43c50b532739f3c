/**
 * Issue 9, item 1: misconfiguration never silently becomes "local threads". A run that computes on
 * local threads says why (the `fallback` event and a warning); a run given `peers` does not fall
 * back unless asked to, and fails with NoWorkersError naming why each peer was refused; a daemon
 * logs refused clients so its admin sees them. Real daemons on 127.0.0.1 (static peers, no mDNS).
 */
import { once } from 'node:events';
import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryDiscovery, NoWorkersError, TaskFarm, generateFarmKey, type Logger, type TaskFarmOptions } from '../../dist/src/index.js';
import { fixture, until } from '../helpers/daemons.js';
import { SecurityDaemons, settle } from '../helpers/security-daemons.js';

/** A logger that keeps every line as `level message fields`. */
function capturingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const at = (level: string) => (message: string, fields?: Record<string, unknown>) => {
    lines.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** A TCP port on 127.0.0.1 that nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

/** Builds a TaskFarm with no farm key anywhere in reach (environment, default file). */
function farmWithoutKey(options: TaskFarmOptions): TaskFarm<number, number> {
  const saved = { key: process.env['TASKFARM_KEY'], file: process.env['TASKFARM_KEY_FILE'] };
  delete process.env['TASKFARM_KEY'];
  delete process.env['TASKFARM_KEY_FILE'];
  try {
    // The test run's XDG_CONFIG_HOME holds no key file, so nothing else is found.
    return new TaskFarm<number, number>(fixture('double.ts'), [1, 2, 3], options);
  } finally {
    if (saved.key !== undefined) process.env['TASKFARM_KEY'] = saved.key;
    if (saved.file !== undefined) process.env['TASKFARM_KEY_FILE'] = saved.file;
  }
}

describe('a run that cannot use workers says why', () => {
  const daemons = new SecurityDaemons();
  afterEach(async () => {
    await daemons.stopAll();
  });

  it('no farm key: the fallback event and a warning say "no farm key" and how to make one; outputs computed locally', async () => {
    const log = capturingLogger();
    const farm = farmWithoutKey({ discovery: new MemoryDiscovery(), threads: 1, logger: log });
    const reasons: string[] = [];
    farm.on('fallback', (e) => reasons.push(e.reason));
    expect(await farm.compute()).toEqual([2, 4, 6]);
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatch(/^no farm key \(.*taskfarm keygen.*\)$/);
    expect(log.lines.filter((l) => l.startsWith('warn computing on local threads: no farm key'))).toHaveLength(1);
    expect(farm.stats().workers.map((w) => w.id)).toEqual(['local']);
  });

  it('no farm key with peers: NoWorkersError saying so, no fallback', async () => {
    const farm = farmWithoutKey({ peers: ['127.0.0.1:1'] });
    const fellBack: string[] = [];
    farm.on('fallback', (e) => fellBack.push(e.reason));
    const err = await settle(farm.compute());
    expect(err).toBeInstanceOf(NoWorkersError);
    expect((err as NoWorkersError).message).toMatch(/No farm key/);
    expect((err as NoWorkersError).message).toMatch(/taskfarm keygen/);
    expect(fellBack).toEqual([]);
  });

  it('dead peers: NoWorkersError naming each peer as "connection refused"; never local threads', async () => {
    const ports = [await closedPort(), await closedPort()];
    const peers = ports.map((p) => `127.0.0.1:${p}`);
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2], { peers, workerWaitMs: 400 });
    const fellBack: string[] = [];
    farm.on('fallback', (e) => fellBack.push(e.reason));
    const err = (await settle(farm.compute())) as NoWorkersError;
    expect(err).toBeInstanceOf(NoWorkersError);
    expect(err.code).toBe('FARM_ERR_NO_WORKERS');
    expect(err.refused.map((r) => r.target).sort()).toEqual([...peers].sort());
    for (const r of err.refused) expect(r.reason).toMatch(new RegExp(`^${r.target}: connection refused`));
    for (const p of peers) expect(err.message).toContain(`${p}: connection refused`);
    expect(err.message).toMatch(/localFallback: true/);
    expect(fellBack).toEqual([]);
    expect(farm.stats().workers).toEqual([]);
  });

  it('a peer with another farm key: NoWorkersError says it could not prove the key; the daemon logs the abandoned handshake', async () => {
    const d = await daemons.start({ key: generateFarmKey() }, ['--log-level', 'warn', '--handshake-ms', '300']);
    const log = capturingLogger();
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2], { peers: [d.address], workerWaitMs: 400, logger: log });
    const err = (await settle(farm.compute())) as NoWorkersError;
    expect(err).toBeInstanceOf(NoWorkersError);
    expect(err.refused).toHaveLength(1);
    expect(err.refused[0]!.reason).toMatch(new RegExp(`worker ${d.id} at ${d.address} could not prove the farm key`));
    expect(err.message).toContain(`worker ${d.id} at ${d.address} could not prove the farm key`);
    // The worker's admin sees it too (the client stops before sending anything, so the daemon can
    // only notice the handshake that was begun and never finished).
    await until('the daemon to warn about the abandoned handshake', () => /warn .*began the farm-key handshake and did not go on/.test(d.stderr()), 5000);
    expect(d.stderr()).toMatch(/check the key on that machine from=127\.0\.0\.1:\d+/);
  });

  it('a peer with another farm key and localFallback: true: computed locally, and the fallback reason names the worker and the key', async () => {
    const d = await daemons.start({ key: generateFarmKey() });
    const log = capturingLogger();
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1, 2], {
      peers: [d.address],
      workerWaitMs: 400,
      localFallback: true,
      threads: 1,
      logger: log,
    });
    const reasons: string[] = [];
    farm.on('fallback', (e) => reasons.push(e.reason));
    expect(await farm.compute()).toEqual([2, 4]);
    expect(reasons).toEqual([expect.stringMatching(new RegExp(`^worker ${d.id} at ${d.address} could not prove the farm key`))]);
    expect(log.lines.some((l) => l.startsWith(`warn computing on local threads: worker ${d.id} at ${d.address} could not prove the farm key`))).toBe(true);
  });

  it('a busy peer (recruited by another run): NoWorkersError says it is busy', async () => {
    const d = await daemons.start({ inherit: true });
    const holder = new TaskFarm<unknown, number>(
      fixture('spin.ts'),
      Array.from({ length: 80 }, (_, v) => ({ v, ms: 20 })),
      { peers: [d.address] },
    );
    const recruited = once(holder, 'recruited');
    const holding = settle(holder.compute());
    await recruited;
    const err = (await settle(new TaskFarm<number, number>(fixture('double.ts'), [1], { peers: [d.address], workerWaitMs: 400 }).compute())) as NoWorkersError;
    expect(err).toBeInstanceOf(NoWorkersError);
    expect(err.refused[0]!.reason).toMatch(new RegExp(`^${d.address}: busy: .*recruited by client`));
    expect(await holding).toHaveLength(80);
  });

  it('an insecure client and a keyed daemon: the client says no plaintext connection, the daemon warns that the client does not speak TLS', async () => {
    const d = await daemons.start({ inherit: true }, ['--log-level', 'warn']);
    const err = (await settle(
      new TaskFarm<number, number>(fixture('double.ts'), [1], { peers: [d.address], workerWaitMs: 400, insecure: true }).compute(),
    )) as NoWorkersError;
    expect(err).toBeInstanceOf(NoWorkersError);
    expect(err.refused[0]!.reason).toMatch(/no plaintext connection/);
    await until('the daemon to warn about a client without TLS', () => /warn .*does not speak TLS/.test(d.stderr()), 5000);
  });

  it('no worker found at all (an empty discovery): the fallback reason says none answered within workerWaitMs', async () => {
    const farm = new TaskFarm<number, number>(fixture('double.ts'), [1], { discovery: new MemoryDiscovery(), workerWaitMs: 200, threads: 1 });
    const reasons: string[] = [];
    farm.on('fallback', (e) => reasons.push(e.reason));
    expect(await farm.compute()).toEqual([2]);
    expect(reasons).toEqual(['no worker answered within 200 ms']);
  });
});
