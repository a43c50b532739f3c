import { execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLan, netnsAvailable, netnsSkipReason, waitForLine } from '../helpers/virtual-lan.js';
import type { LanHost, VirtualLan } from '../helpers/virtual-lan.js';

const NODE = process.execPath;
const MARKER = `tf-vlan-test-${process.pid}`;

/** Scripts run with `node -e`; the marker comment lets us find leftovers in `ps`. */
const tcpServer = (addr: string, port: number): string => `// ${MARKER}
const net = require('node:net');
net.createServer((c) => c.on('data', (d) => c.end('ECHO ' + d))).listen(${port}, '${addr}', () => console.log('READY'));`;

const tcpClient = (addr: string, port: number, msg: string): string => `// ${MARKER}
const c = require('node:net').connect(${port}, '${addr}', () => c.write('${msg}'));
c.setEncoding('utf8');
c.on('data', (d) => console.log(d));
c.on('error', (e) => { console.log('ERROR ' + e.code); process.exit(1); });`;

/** Sends TF <seq> to 224.0.0.251:5353 every 50 ms; on "MARK" (stdin) prints the next seq. */
const mcastSender = (addr: string): string => `// ${MARKER}
const s = require('node:dgram').createSocket({ type: 'udp4', reuseAddr: true });
let seq = 0;
const tick = () => {
  const n = seq++;
  s.send(Buffer.from('TF ' + n), 5353, '224.0.0.251', (err) => {
    console.log('SENT ' + n + (err ? ' ' + err.code : ''));
    setTimeout(tick, 50);
  });
};
s.bind(0, '${addr}', () => {
  s.setMulticastInterface('${addr}');
  s.setMulticastTTL(255);
  s.setMulticastLoopback(false);
  console.log('READY');
  tick();
});
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    if (buf.slice(0, i).trim() === 'MARK') console.log('MARKED ' + seq);
    buf = buf.slice(i + 1);
  }
});`;

/** mDNS-style receiver: joins 224.0.0.251 on its LAN address, prints GOT <seq> <from>. */
const mcastReceiver = (addr: string): string => `// ${MARKER}
const s = require('node:dgram').createSocket({ type: 'udp4', reuseAddr: true });
s.on('message', (m, r) => console.log('GOT ' + String(m).split(' ')[1] + ' ' + r.address));
s.bind(5353, () => {
  s.addMembership('224.0.0.251', '${addr}');
  console.log('READY ' + require('node:os').hostname());
});`;

const idle = `// ${MARKER}
process.on('SIGTERM', () => {}); // must be SIGKILLed
console.log('READY ' + process.pid);
setInterval(() => {}, 1000);`;

const withGrandchild = `// ${MARKER}
const g = require('node:child_process').spawn(process.execPath, ['-e', '// ${MARKER} grandchild\\nsetInterval(() => {}, 1000)'], { stdio: 'ignore', detached: true });
g.unref();
console.log('READY ' + process.pid + ' ' + g.pid);
setInterval(() => {}, 1000);`;

function node(lan: VirtualLan, host: LanHost, script: string): ChildProcess {
  return lan.exec(host, NODE, ['-e', script]);
}

/** Consume lines matching `re` (group 1 = integer) until one is >= min; returns all values seen. */
async function readSeqUntil(child: ChildProcess, re: RegExp, min: number, deadline: number): Promise<number[]> {
  const seen: number[] = [];
  for (;;) {
    const m = await waitForLine(child, re, Math.max(1, deadline - Date.now()));
    const v = Number(m[1]);
    seen.push(v);
    if (v >= min) return seen;
  }
}

async function mark(sender: ChildProcess, deadline: number): Promise<number> {
  sender.stdin?.write('MARK\n');
  const m = await waitForLine(sender, /^MARKED (\d+)$/, Math.max(1, deadline - Date.now()));
  return Number(m[1]);
}

function ipNetnsList(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((s) => s !== '');
}

/** Alive = exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function markedProcesses(): string[] {
  return execFileSync('ps', ['-eo', 'pid=,stat=,args='], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(MARKER) && !(l.trim().split(/\s+/)[1] ?? '').startsWith('Z'));
}

const title = netnsAvailable ? 'virtual LAN' : `virtual LAN (skipped: ${netnsSkipReason})`;

describe.skipIf(!netnsAvailable)(title, { timeout: 15_000 }, () => {
  let lan: VirtualLan;

  beforeAll(async () => {
    lan = await createLan(3);
  }, 15_000);

  afterAll(async () => {
    await lan?.destroy();
  }, 15_000);

  it('builds 3 hosts with distinct addresses on one /24', () => {
    expect(lan.hosts).toHaveLength(3);
    const prefix = lan.subnet.replace(/0\/24$/, '');
    expect(lan.hosts.map((h) => h.address)).toEqual([`${prefix}1`, `${prefix}2`, `${prefix}3`]);
    for (const h of lan.hosts) {
      expect(h.iface.length).toBeLessThanOrEqual(15);
      expect(h.bridgePort.length).toBeLessThanOrEqual(15);
    }
    const names = ipNetnsList();
    for (const ns of lan.namespaces()) expect(names).toContain(ns);
  });

  it('exec() returns the command pid and sets the host name', async () => {
    const h3 = lan.hosts[2] as LanHost;
    const child = node(lan, h3, `console.log('PID ' + process.pid + ' HOST ' + require('node:os').hostname())`);
    const m = await waitForLine(child, /^PID (\d+) HOST (\S+)$/, 5_000);
    expect(Number(m[1])).toBe(child.pid);
    expect(m[2]).toBe('h3');
  });

  it('h1 reaches h2 over TCP', async () => {
    const [h1, h2] = lan.hosts as [LanHost, LanHost];
    const server = node(lan, h2, tcpServer(h2.address, 7001));
    await waitForLine(server, /^READY$/, 5_000);
    const client = node(lan, h1, tcpClient(h2.address, 7001, 'hello from h1'));
    await waitForLine(client, /^ECHO hello from h1$/, 5_000);
    server.kill('SIGKILL');
  });

  it('multicast to 224.0.0.251:5353 crosses the bridge; cut() stops it, heal() restores it', async () => {
    const deadline = Date.now() + 12_000;
    const [h1, h2, h3] = lan.hosts as [LanHost, LanHost, LanHost];
    const recv2 = node(lan, h2, mcastReceiver(h2.address));
    const recv3 = node(lan, h3, mcastReceiver(h3.address));
    expect((await waitForLine(recv2, /^READY (\S+)$/, 5_000))[1]).toBe('h2');
    await waitForLine(recv3, /^READY/, 5_000);
    const sender = node(lan, h1, mcastSender(h1.address));
    await waitForLine(sender, /^READY$/, 5_000);

    // Flows: h2 hears h1.
    const first = await waitForLine(recv2, /^GOT (\d+) (\S+)$/, 5_000);
    expect(first[2]).toBe(h1.address);

    // Partition h2. Every datagram numbered >= m1 was sent after cut() returned.
    await lan.cut(h2);
    const m1 = await mark(sender, deadline);
    const lastCutSeq = m1 + 9;
    await readSeqUntil(sender, /^SENT (\d+)/, lastCutSeq, deadline); // 10 datagrams sent during the cut
    const h3During = await readSeqUntil(recv3, /^GOT (\d+)/, lastCutSeq, deadline); // h3 still hears them

    // Heal; every datagram numbered >= m2 was sent after heal() returned.
    await lan.heal(h2);
    const m2 = await mark(sender, deadline);
    expect(m2).toBeGreaterThan(lastCutSeq);
    // Once h2 prints a post-heal datagram, anything that arrived during the cut was printed before it.
    const h2Seen = await readSeqUntil(recv2, /^GOT (\d+)/, m2, deadline);
    const duringCut = h2Seen.filter((s) => s >= m1 && s <= lastCutSeq);
    expect(duringCut).toEqual([]);
    expect(h3During.filter((s) => s >= m1 && s <= lastCutSeq).length).toBeGreaterThan(0);
  });

  it('addHost() hot-joins a 4th host that can talk to the others', async () => {
    const h4 = await lan.addHost();
    expect(h4.name).toBe('h4');
    expect(lan.hosts).toHaveLength(4);
    const h1 = lan.hosts[0] as LanHost;
    const server = node(lan, h1, tcpServer(h1.address, 7002));
    await waitForLine(server, /^READY$/, 5_000);
    const client = node(lan, h4, tcpClient(h1.address, 7002, 'hello from h4'));
    await waitForLine(client, /^ECHO hello from h4$/, 5_000);
  });

  it('destroy() kills every process (stopped, TERM-ignoring, grandchildren) and removes every namespace; idempotent', async () => {
    const small = await createLan(2, { prefix: 'tfd' });
    expect(small.ns).not.toBe(lan.ns);
    expect(small.subnet).not.toBe(lan.subnet);
    const [a, b] = small.hosts as [LanHost, LanHost];
    const p1 = node(small, a, idle);
    const p2 = node(small, b, withGrandchild);
    const pid1 = Number((await waitForLine(p1, /^READY (\d+)$/, 5_000))[1]);
    const m2 = await waitForLine(p2, /^READY (\d+) (\d+)$/, 5_000);
    const [pid2, grandchild] = [Number(m2[1]), Number(m2[2])];
    expect(pid1).toBe(p1.pid);
    process.kill(pid1, 'SIGSTOP');
    for (const pid of [pid1, pid2, grandchild]) expect(alive(pid)).toBe(true);

    await small.destroy();
    await small.destroy(); // idempotent

    for (const pid of [pid1, pid2, grandchild]) expect(alive(pid)).toBe(false);
    const names = ipNetnsList();
    for (const ns of small.namespaces()) expect(names).not.toContain(ns);
    expect(() => small.exec(a, 'true', [])).toThrow(/after destroy/);
  });

  it('destroy() of the main LAN leaves no namespace and no process', async () => {
    const extra = node(lan, lan.hosts[1] as LanHost, idle);
    await waitForLine(extra, /^READY/, 5_000);
    await lan.destroy();
    const names = ipNetnsList();
    for (const ns of lan.namespaces()) expect(names).not.toContain(ns);
    expect(alive(extra.pid as number)).toBe(false);
    expect(markedProcesses()).toEqual([]);
  });
});
