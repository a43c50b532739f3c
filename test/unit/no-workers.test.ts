/**
 * The words a run uses when no worker computes (issue 9, item 1): one line per refused worker, and
 * the reason of a fallback or a NoWorkersError. Pure functions, table-driven.
 */
import { describe, expect, it } from 'vitest';
import { refusalReason, noWorkerReason, type NoWorkerFacts } from '../../src/farm/no-workers.js';
import { AuthenticationError, ProtocolError, WorkerBusyError, WorkerLostError } from '../../src/errors.js';

describe('refusalReason', () => {
  const t = '10.0.0.5:7000';
  const refused = Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:7000'), { code: 'ECONNREFUSED' });
  const cases: [string, Parameters<typeof refusalReason>, string][] = [
    [
      'connection refused (in the cause chain)',
      [t, new WorkerLostError(t, `no TLS connection to ${t}: connect ECONNREFUSED`, { cause: refused })],
      `${t}: connection refused (is \`taskfarm worker\` running there, on that port?)`,
    ],
    ['unknown host', [t, new WorkerLostError(t, 'getaddrinfo ENOTFOUND nohost')], `${t}: unknown host name`],
    [
      'wrong key: the message already names the target',
      [t, new AuthenticationError(`worker w1 at ${t} could not prove the farm key: it is not part of this farm`)],
      `worker w1 at ${t} could not prove the farm key: it is not part of this farm`,
    ],
    [
      'busy',
      [t, new WorkerBusyError('Worker w1 is busy: worker w1 is recruited by client c on h')],
      `${t}: busy: Worker w1 is busy: worker w1 is recruited by client c on h`,
    ],
    ['protocol', [t, new ProtocolError(`worker w1 at ${t} speaks taskfarm protocol 1`)], `worker w1 at ${t} speaks taskfarm protocol 1`],
    [
      'a lost worker: its reason, without "Worker … lost"',
      [t, new WorkerLostError('w1', 'describe: no answer before the deadline')],
      `${t}: describe: no answer before the deadline`,
    ],
    [
      'an insecure client and a TLS daemon',
      [t, new WorkerLostError(t, 'describe: unreachable (No connection established)'), true],
      `${t}: no plaintext connection (this client runs insecure; is the daemon there run with --insecure? One that requires the farm key and TLS cannot be used without the key)`,
    ],
  ];
  for (const [what, args, expected] of cases) it(what, () => expect(refusalReason(...args)).toBe(expected));
});

describe('noWorkerReason', () => {
  const base: NoWorkerFacts = { waitedMs: 3000, discovery: 'mdns', farm: 'physcis', farmsSeen: [], refusals: new Map(), warnings: [], allLost: false };
  const cases: [string, Partial<NoWorkerFacts>, string][] = [
    ['a mistyped farm: the farms seen', { farmsSeen: ['physics', 'default'] }, 'no worker of farm "physcis" answered; farms seen: physics, default'],
    [
      'no advert at all',
      {},
      'no worker of farm "physcis" answered within 3000 ms (no taskfarm advert seen: are daemons running on this network segment, with UDP port 5353 open? Routed networks: give peers)',
    ],
    ['our farm seen, nothing usable', { farm: 'default', farmsSeen: ['default'] }, 'no worker of farm "default" could be used within 3000 ms'],
    [
      'refusals win, one per worker',
      {
        refusals: new Map([
          ['a:1', 'a:1: connection refused'],
          ['b:2', 'worker w at b:2 could not prove the farm key'],
        ]),
      },
      'a:1: connection refused; worker w at b:2 could not prove the farm key',
    ],
    ['peers, nothing heard', { discovery: 'peers' }, 'no worker answered within 3000 ms'],
    ['custom discovery', { discovery: 'custom', waitedMs: 200 }, 'no worker answered within 200 ms'],
    [
      'skipped adverts are named (last three, once each)',
      { discovery: 'custom', warnings: ['w1', 'w2', 'w2', 'w3', 'w4'] },
      'no worker answered within 3000 ms; skipped: w2; w3; w4',
    ],
    [
      'all lost',
      { discovery: 'peers', allLost: true, refusals: new Map([['a:1', 'a:1: connection refused']]) },
      'every worker was lost and none came back within 3000 ms (a:1: connection refused)',
    ],
  ];
  for (const [what, facts, expected] of cases) it(what, () => expect(noWorkerReason({ ...base, ...facts })).toBe(expected));
});
