/**
 * System tests on a virtual LAN (network namespaces joined by a bridge, test/helpers/virtual-lan.ts):
 * real `taskfarm worker` daemons advertising over mDNS on some hosts, TaskFarm clients
 * (test/fixtures/lan-client.mjs) discovering them over mDNS on others, all started by the bench in
 * test/helpers/lan-bench.ts. Issue: "LAN discovery over mDNS, hot-joining workstations, and a
 * virtual LAN".
 *
 * Only ever run inside `node scripts/isolated.mjs -- ...`: every multicast stays in the namespaces.
 *
 * Figures (latencies, run times) are printed with console.log, prefixed `[lan]`.
 */
import { describe, expect, it } from 'vitest';
import {
  benchPerTest,
  expectCompleted,
  ip,
  netnsAvailable,
  netnsSkipReason,
  statsOf,
  waitExit,
  type Client,
  type Daemon,
  type Ev,
  type LanHost,
  type LsRow,
} from '../helpers/lan-bench.js';
import { PROTOCOL_VERSION } from '../../dist/src/protocol/version.js';

const log = (msg: string): void => console.log(`[lan] ${msg}`);

// ---------------------------------------------------------------- tests

const title = netnsAvailable ? 'taskfarm on a virtual LAN (mDNS)' : `taskfarm on a virtual LAN (skipped: ${netnsSkipReason})`;

describe.skipIf(!netnsAvailable)(title, () => {
  const newBench = benchPerTest('sys', 20_000);

  it('1. discovery with no options: a client finds and uses the daemons of the other hosts', { timeout: 40_000 }, async () => {
    const b = await newBench(4);
    const daemons = await Promise.all([1, 2, 3].map((i) => b.daemon(b.host(i))));
    const client = b.client(b.host(4), { stage: 'spin.ts', n: 240, ms: 10 });
    const end = await client.result(25_000);
    expectCompleted(client, end);

    const ids = daemons.map((d) => d.id).sort();
    expect(client.recruitedIds().sort()).toEqual(ids);
    for (const r of client.of('recruited')) {
      const d = daemons.find((x) => x.id === r['id'])!;
      expect(r['host']).toBe(d.host.name);
      expect(r['address']).toBe(`${d.host.address}:${d.port}`);
    }
    const ws = statsOf(end).workers;
    expect(ws.map((w) => w.id).sort()).toEqual(ids);
    for (const w of ws) expect(w.completed, `worker ${w.id}`).toBeGreaterThan(0);
    expect(ws.reduce((s, w) => s + w.completed, 0)).toBe(240);
    const t0 = client.of('start')[0]!.t;
    log(
      `discovery: recruited ${client
        .of('recruited')
        .map((r) => `${String(r['host'])}@+${r.t - t0}ms`)
        .join(', ')}; run ${String(end['ms'])} ms; per worker ${ws.map((w) => `${w.host}=${w.completed}`).join(' ')}`,
    );
  });

  it('2. hot-join: a daemon started on a new host mid-run receives tasks within about a second', { timeout: 40_000 }, async () => {
    const b = await newBench(3);
    const first2 = await Promise.all([b.daemon(b.host(1)), b.daemon(b.host(2))]);
    const client = b.client(b.host(3), { stage: 'spin.ts', n: 5000, ms: 20, held: true });
    // Mid-run: both first daemons are computing.
    for (const d0 of first2) await client.next((e) => e.e === 'first' && e['id'] === d0.id, 20_000, `first output from ${d0.id}`);

    const h4 = await b.lan.addHost();
    const d = await b.daemon(h4);
    const recruited = await client.next((e) => e.e === 'recruited' && e['id'] === d.id, 10_000, `recruited ${d.id}`);
    const first = await client.next((e) => e.e === 'first' && e['id'] === d.id, 10_000, `first output from ${d.id}`);
    client.end();
    const end = await client.result(15_000);
    expectCompleted(client, end);

    expect(recruited['host']).toBe('h4');
    const w = statsOf(end).workers.find((x) => x.id === d.id)!;
    expect(w.completed).toBeGreaterThan(0);
    const toReady = d.readyAt - d.spawnedAt;
    const toRecruited = recruited.t - d.spawnedAt;
    const toFirst = first.t - d.spawnedAt;
    log(
      `hot-join: from spawning the daemon on h4: READY +${toReady} ms, recruited +${toRecruited} ms (${recruited.t - d.readyAt} ms after READY), ` +
        `first completed task +${toFirst} ms; it completed ${w.completed} of ${String(end['n'])} tasks`,
    );
    // From READY (the daemon's own start-up, TLS identity included, is not the farm's doing).
    expect(first.t - d.readyAt).toBeLessThan(3000);
  });

  it('3. a recruited daemon is not offered to a second client, and is offered again after release', { timeout: 50_000 }, async () => {
    const b = await newBench(4);
    const d = await b.daemon(b.host(1));
    // A protocol-99 advert: every client logs a warning about it as soon as its mDNS browser hears
    // answers, which tells the test that the client's discovery is running.
    await b.fakeAdvert(b.host(3), { id: 'probe-proto99', proto: 99, port: 9 });
    const discovering = (c: Client): Promise<Ev> =>
      c.next((e) => e.e === 'log' && /probe-proto99.*protocol 99/.test(String(e['msg'])), 15_000, 'discovery running');

    const a = b.client(b.host(2), { stage: 'spin.ts', n: 5000, ms: 20, held: true }, 'client A');
    await a.next((e) => e.e === 'first' && e['id'] === d.id, 15_000, 'A computing on the daemon');

    // taskfarm ls sees it, recruited (busy advert + live Describe).
    const ls = await b.ls(b.host(3), ['--json', '--timeout', '800']);
    expect(ls.code).toBe(0);
    const rows = ls.lines.map((l) => JSON.parse(l) as LsRow);
    expect(rows.map((r) => [r.id, r.state])).toEqual([[d.id, 'recruited']]);

    // Client B finds nobody: the daemon no longer answers for _taskfarm._tcp.
    const bClient = b.client(b.host(4), { stage: 'double.ts', n: 5, options: { workerWaitMs: 1500 } }, 'client B');
    const bEnd = await bClient.result(15_000);
    expect(bEnd.e, bClient.tail()).toBe('error');
    expect(bEnd['name']).toBe('NoWorkersError');
    // It says why: nothing of farm "default" could be used (the protocol-99 advert was skipped).
    expect(bEnd['message']).toMatch(/no worker of farm "default" could be used within 1500 ms; skipped: .*probe-proto99.*protocol 99/);
    expect(bClient.recruitedIds()).toEqual([]);
    await discovering(bClient); // it was listening
    expect(bClient.recruitFailures(), bClient.logText().join('\n')).toEqual([]);
    expect(bClient.logText().filter((l) => l.includes(d.id) || l.includes(`:${d.port}`))).toEqual([]);

    // Client C starts waiting while A still holds the daemon.
    const c = b.client(b.host(4), { stage: 'double.ts', n: 20, options: { workerWaitMs: 15_000 } }, 'client C');
    await discovering(c);
    expect(c.recruitedIds()).toEqual([]);

    // A finishes and releases it: the waiting C is offered it (announcement), and so is a new client D.
    a.end();
    const aEnd = await a.result(15_000);
    expectCompleted(a, aEnd);
    const releasedAt = aEnd.t;
    const cEnd = await c.result(20_000);
    expectCompleted(c, cEnd);
    expect(c.recruitedIds()).toEqual([d.id]);
    const dC = b.client(b.host(4), { stage: 'double.ts', n: 20, options: { workerWaitMs: 5000 } }, 'client D');
    const dEnd = await dC.result(15_000);
    expectCompleted(dC, dEnd);
    expect(dC.recruitedIds()).toEqual([d.id]);
    log(
      `busy/free: A held ${d.id} (${String(aEnd['n'])} tasks); ls showed it recruited; B gave up after ${String(bEnd['ms'])} ms without trying it; ` +
        `waiting C recruited it ${c.of('recruited')[0]!.t - releasedAt} ms after A finished; new client D recruited it ${dC.of('recruited')[0]!.t - dC.of('start')[0]!.t} ms after its start`,
    );
  });

  it('4. partition: a cut worker host is detected within the heartbeat timeout and its tasks are rescheduled', { timeout: 40_000 }, async () => {
    const b = await newBench(4);
    const heartbeatMs = 200;
    const heartbeatTimeoutMs = 1000;
    const daemons = await Promise.all([1, 2, 3].map((i) => b.daemon(b.host(i))));
    const client = b.client(b.host(4), {
      stage: 'spin.ts',
      n: 5000,
      ms: 20,
      held: true,
      // Loss detection is what is measured: no backup copies that could finish the run first.
      options: { heartbeatMs, heartbeatTimeoutMs, connectTimeoutMs: 1000, speculation: false },
    });
    const first = await client.next((e) => e.e === 'first', 20_000, 'a first output');
    const victim = daemons.find((d) => d.id === first['id'])!;

    const cutStart = Date.now();
    await b.lan.cut(victim.host);
    const cutDone = Date.now();
    const lost = await client.next((e) => e.e === 'lost', 10_000, 'lost');
    expect(lost['id']).toBe(victim.id);
    const latency = lost.t - cutStart;
    // Its requeued tasks and more get done by the others.
    const doneAtLoss = client.done();
    await client.next((e) => e.e === 'progress' && (e['done'] as number) >= doneAtLoss + 30, 15_000, '30 more outputs after the loss');
    // Healed, the worker comes back into the same run (its lease there ends; it re-advertises).
    const healStart = Date.now();
    await b.lan.heal(victim.host);
    const back = await client.next((e) => e.e === 'recruited' && e['id'] === victim.id && e.t >= healStart, 20_000, 're-recruit after heal');
    client.end();
    const end = await client.result(15_000);
    expectCompleted(client, end);

    expect(client.of('lost')).toHaveLength(1);
    const st = statsOf(end);
    const v = st.workers.find((w) => w.id === victim.id)!;
    expect(v.lost).toBeDefined();
    expect(st.requeued).toBeGreaterThanOrEqual(lost['requeued'] as number);
    // Every output was delivered by exactly one session (the victim has two: before the cut, after heal).
    expect(st.workers.reduce((s, w) => s + w.completed, 0)).toBe(end['n']);
    expect(st.workers.filter((w) => w.id === victim.id)).toHaveLength(2);
    log(
      `partition: cut ${victim.host.name} (ip link down took ${cutDone - cutStart} ms); lost after ${latency} ms ` +
        `(heartbeat ${heartbeatMs} ms, timeout ${heartbeatTimeoutMs} ms), ${String(lost['requeued'])} tasks requeued; reason: ${String(lost['reason'])}; ` +
        `healed ${healStart - cutStart} ms after the cut, recruited again ${back.t - healStart} ms after heal`,
    );
    expect(latency).toBeLessThan(heartbeatTimeoutMs + heartbeatMs + 1000);
  });

  it('5. a daemon restarted on the same host (same cache dir, same id) is recruited again in the same run', { timeout: 40_000 }, async () => {
    const b = await newBench(4);
    const daemons = await Promise.all([1, 2, 3].map((i) => b.daemon(b.host(i))));
    const victim = daemons[0]!;
    const client = b.client(b.host(4), { stage: 'spin.ts', n: 5000, ms: 20, held: true });
    const first = await client.next((e) => e.e === 'first' && e['id'] === victim.id, 20_000, `first output from ${victim.id}`);

    const killedAt = Date.now();
    process.kill(victim.child.pid!, 'SIGKILL');
    await waitExit(victim.child, 5000);
    const lost = await client.next((e) => e.e === 'lost' && e['id'] === victim.id, 10_000, 'lost');
    const again = await b.daemon(victim.host, { cacheDir: victim.cacheDir });
    expect(again.id).toBe(victim.id);
    const re = await client.next((e) => e.e === 'recruited' && e['id'] === victim.id && e.t >= again.spawnedAt, 10_000, 're-recruited');
    await client.next((e) => e.e === 'first' && e['id'] === victim.id && e['idx'] !== first['idx'], 10_000, 'first output after restart');
    client.end();
    const end = await client.result(15_000);
    expectCompleted(client, end);

    expect(client.recruitedIds().filter((id) => id === victim.id)).toHaveLength(2);
    const entries = statsOf(end).workers.filter((w) => w.id === victim.id);
    expect(entries).toHaveLength(2);
    expect(entries[0]!.lost).toBeDefined();
    expect(entries[1]!.completed).toBeGreaterThan(0);
    log(
      `restart: SIGKILL → lost after ${lost.t - killedAt} ms (${String(lost['reason']).slice(0, 80)}); restarted daemon (port ${victim.port} → ${again.port}) ` +
        `recruited ${re.t - again.spawnedAt} ms after its spawn (${re.t - again.readyAt} ms after READY)`,
    );
  });

  it('6. two farms on one LAN do not mix; an advert of another protocol version is skipped with a warning', { timeout: 40_000 }, async () => {
    const b = await newBench(5);
    const [blue1, blue2, red] = await Promise.all([
      b.daemon(b.host(1), { farm: 'blue' }),
      b.daemon(b.host(2), { farm: 'blue' }),
      b.daemon(b.host(3), { farm: 'red' }),
    ]);
    const fakePort = 9;
    await b.fakeAdvert(b.host(4), { id: 'fake-proto99', farm: 'blue', proto: 99, port: fakePort, threads: 4 });

    const blue = b.client(b.host(4), { stage: 'spin.ts', n: 160, ms: 10, options: { farm: 'blue' } }, 'blue client');
    const redC = b.client(b.host(5), { stage: 'spin.ts', n: 60, ms: 10, options: { farm: 'red' } }, 'red client');
    const [blueEnd, redEnd] = await Promise.all([blue.result(25_000), redC.result(25_000)]);
    expectCompleted(blue, blueEnd);
    expectCompleted(redC, redEnd);

    expect(blue.recruitedIds().sort()).toEqual([blue1.id, blue2.id].sort());
    expect(redC.recruitedIds()).toEqual([red.id]);
    for (const w of statsOf(blueEnd).workers) expect(w.completed, w.id).toBeGreaterThan(0);
    // The proto-99 worker: a warning naming it and the protocol, never a recruit attempt.
    const warned = blue.logs('warn').filter((e) => /fake-proto99/.test(String(e['msg'])) && /protocol 99/.test(String(e['msg'])));
    expect(warned.length, blue.logText().join('\n')).toBeGreaterThan(0);
    expect(blue.recruitFailures(), blue.logText().join('\n')).toEqual([]);
    expect(redC.recruitFailures(), redC.logText().join('\n')).toEqual([]);
    // The red client does not even look at blue adverts.
    expect(redC.logText().filter((l) => l.includes('fake-proto99'))).toEqual([]);
    log(`farms: blue recruited ${blue.recruitedIds().join(',')}; red recruited ${redC.recruitedIds().join(',')}; warning: ${String(warned[0]!['msg'])}`);
  });

  it(
    '7. bogus adverts (closed port, silent address, garbage packets) do not delay the run beyond one bounded connect attempt',
    { timeout: 60_000 },
    async () => {
      const b = await newBench(6);
      const connectTimeoutMs = 1000;
      const [h1, h2, h3, h4, h5, h6] = [1, 2, 3, 4, 5, 6].map((i) => b.host(i)) as [LanHost, LanHost, LanHost, LanHost, LanHost, LanHost];
      const daemons = await Promise.all([b.daemon(h1), b.daemon(h2)]);
      const ids = daemons.map((d) => d.id).sort();
      const config = { stage: 'spin.ts', n: 300, ms: 10, options: { connectTimeoutMs } };

      // (a) an advert for a port where nothing listens (connection refused).
      const fakeA = await b.fakeAdvert(h4, { id: 'bogus-closed', port: 9 });
      // (b) an advert from a host that never answers the client: the client's host h3 gets a permanent
      //     neighbour entry that maps h5's address to a MAC address no host has. h5's multicast adverts
      //     still reach h3, but every unicast packet from h3 to h5 goes nowhere (no RST, no ICMP), as
      //     with a machine that dropped off the network right after advertising: each recruit attempt
      //     runs into connectTimeoutMs.
      await ip(['-n', h3.ns, 'neigh', 'replace', h5.address, 'lladdr', '02:00:00:00:de:ad', 'dev', h3.iface, 'nud', 'permanent']);
      const fakeB = await b.fakeAdvert(h5, { id: 'bogus-silent', port: 7000 });
      // (c) garbage: random bytes, broken packets, malformed TXT, port 0.
      const garbage = await b.mdnsGarbage(h6, 200);

      const bogus = b.client(h3, config, 'client (bogus adverts)');
      const bogusEnd = await bogus.result(25_000);
      expectCompleted(bogus, bogusEnd);
      expect(bogus.recruitedIds().sort()).toEqual(ids);
      // It did see (and try) the bogus ones, and skipped the malformed ones with warnings.
      const tried = bogus
        .recruitFailures()
        .map((e) => `${String((e['fields'] as Record<string, unknown>)['target'])} ${String((e['fields'] as Record<string, unknown>)['error'])}`);
      const warnings = bogus.logs('warn').map((e) => String(e['msg']));

      // Baseline: same LAN, same daemons, no bogus adverts.
      for (const p of [fakeA, fakeB, garbage]) p.kill('SIGTERM');
      await Promise.all([fakeA, fakeB, garbage].map((p) => waitExit(p, 5000)));
      await ip(['-n', h3.ns, 'neigh', 'del', h5.address, 'dev', h3.iface]);
      const base = b.client(h3, config, 'client (baseline)');
      const baseEnd = await base.result(25_000);
      expectCompleted(base, baseEnd);
      expect(base.recruitedIds().sort()).toEqual(ids);
      expect(base.recruitFailures()).toEqual([]);

      const when = (c: Client): string => {
        const t0 = c.of('start')[0]!.t;
        return c
          .of('recruited')
          .map((r) => `+${r.t - t0}`)
          .join('/');
      };
      log(
        `bogus adverts: run ${String(bogusEnd['ms'])} ms (real daemons recruited at ${when(bogus)} ms) vs baseline ${String(baseEnd['ms'])} ms ` +
          `(recruited at ${when(base)} ms); connectTimeoutMs ${connectTimeoutMs}`,
      );
      const attempts = new Map<string, number>();
      for (const t of tried) attempts.set(t, (attempts.get(t) ?? 0) + 1);
      log(`bogus adverts: failed recruit attempts: ${[...attempts].map(([t, k]) => `${k}× ${t}`).join(' | ')}`);
      log(`bogus adverts: ${warnings.length} warnings, distinct: ${[...new Set(warnings.map((w) => w.replace(/\d+\.\d+\.\d+\.\d+/g, 'A')))].join(' | ')}`);
      expect(tried.some((t) => t.startsWith(`${h4.address}:9 `))).toBe(true);
      expect(tried.some((t) => t.startsWith(`${h5.address}:7000 `) && /deadline|no TLS handshake within/.test(t))).toBe(true);
      expect(warnings.some((w) => /malformed taskfarm advert/.test(w))).toBe(true);
      expect(warnings.some((w) => /garbage-port0.*invalid port/.test(w))).toBe(true);
      expect(bogusEnd['ms'] as number).toBeLessThanOrEqual((baseEnd['ms'] as number) + connectTimeoutMs + 2000);
    },
  );

  it('8. taskfarm ls shows the daemons and their state (free / recruited), as JSON and as a table', { timeout: 40_000 }, async () => {
    const b = await newBench(5);
    const daemons = await Promise.all([1, 2, 3].map((i) => b.daemon(b.host(i))));
    const [d1, d2, d3] = daemons as [Daemon, Daemon, Daemon];
    // A client that recruits exactly d1 (static peers: no mDNS on its side).
    const holder = b.client(b.host(4), { stage: 'spin.ts', n: 5000, ms: 20, held: true, options: { peers: [`${d1.host.address}:${d1.port}`] } });
    await holder.next((e) => e.e === 'recruited', 15_000, 'recruited');

    const [json, table] = await Promise.all([b.ls(b.host(5), ['--json', '--timeout', '800']), b.ls(b.host(5), ['--timeout', '800'])]);
    expect(json.code).toBe(0);
    const rows = json.lines.map((l) => JSON.parse(l) as LsRow);
    expect(rows.map((r) => r.id).sort()).toEqual(daemons.map((d) => d.id).sort());
    for (const d of daemons) {
      const r = rows.find((x) => x.id === d.id)!;
      expect(r).toMatchObject({
        host: d.host.name,
        port: d.port,
        threads: 1,
        proto: PROTOCOL_VERSION,
        farm: 'default',
        state: d === d1 ? 'recruited' : 'free',
      });
      expect(r.addresses[0]).toBe(d.host.address);
    }

    expect(table.code).toBe(0);
    const [header, ...body] = table.lines;
    expect(header!.split(/\s+/)).toEqual(['ID', 'HOST', 'ADDRESSES', 'PORT', 'THREADS', 'STATE', 'PROTO', 'SECURITY']);
    const cells = body.map((l) => l.split(/\s+/));
    expect(cells.map((c) => c[1])).toEqual(['h1', 'h2', 'h3']); // sorted by host
    for (const d of daemons) {
      const c = cells.find((x) => x[0] === d.id)!;
      expect(c).toEqual([d.id, d.host.name, d.host.address, String(d.port), '1', d === d1 ? 'recruited' : 'free', String(PROTOCOL_VERSION), 'key+tls']);
    }
    log(`ls table while h1 is recruited:\n${table.lines.join('\n')}`);

    // After the client releases it, every daemon is listed free again.
    holder.end();
    expectCompleted(holder, await holder.result(15_000));
    const after = await b.lsRows(b.host(5));
    expect(after.map((r) => [r.id, r.state]).sort()).toEqual([d1, d2, d3].map((d) => [d.id, 'free']).sort());
  });
  // Regression (found while testing the issue's scenarios): workstations whose home folders are
  // shared over NFS share the default cache folder (~/.cache/taskfarm). The id lock is a pid, which
  // can only be checked on the machine that wrote it, so id slots are kept per hostname.
  it('9. two workstations sharing one cache folder (NFS-shared home) get different ids and are both used', { timeout: 40_000 }, async () => {
    const b = await newBench(4);
    const shared = b.tempDir();
    const dA = await b.daemon(b.host(1), { cacheDir: shared });
    const dB = await b.daemon(b.host(2), { cacheDir: shared, ownPidNamespace: true });
    const dC = await b.daemon(b.host(3));
    const client = b.client(b.host(4), { stage: 'spin.ts', n: 240, ms: 10 });
    const end = await client.result(25_000);
    expectCompleted(client, end);
    const lsRows = await b.lsRows(b.host(4));
    log(
      `shared cache folder: daemon ids h1=${dA.id} h2=${dB.id} h3=${dC.id}; the client recruited ` +
        `${client
          .of('recruited')
          .map((r) => `${String(r['id'])}@${String(r['host'])}`)
          .join(', ')}; ls lists ${lsRows.map((r) => `${r.id}@${r.host}`).join(', ')}`,
    );
    expect({
      distinctIds: new Set([dA.id, dB.id, dC.id]).size,
      recruitedHosts: client
        .of('recruited')
        .map((r) => String(r['host']))
        .sort(),
      listedHosts: lsRows.map((r) => r.host).sort(),
    }).toEqual({ distinctIds: 3, recruitedHosts: ['h1', 'h2', 'h3'], listedHosts: ['h1', 'h2', 'h3'] });
  });
});
