/**
 * The progress line of `taskfarm run` (issue 9, item 4): the rate counts from the first worker
 * joining, so the wait for workers does not drag it down, and the ETA follows from that rate.
 */
import { describe, expect, it } from 'vitest';
import { ProgressLine } from '../../dist/client/run.js';

// eslint-disable-next-line no-control-regex -- the terminal's erase-line sequence, ESC [ K
const strip = (line: string): string => line.replace(/^\r/, '').replace(/\x1b\[K$/, '');

describe('ProgressLine', () => {
  it('before any worker: "waiting for workers", no rate, no ETA', () => {
    const p = new ProgressLine(100);
    expect(strip(p.line({ done: 0, failed: 0, workers: 0 }, 3000))).toBe(`[${'.'.repeat(30)}] 0/100 0 worker(s) waiting for workers`);
  });

  it('the rate counts from the first worker, not from the start (3 s of discovery do not count), and gives the ETA', () => {
    const p = new ProgressLine(1000);
    p.line({ done: 0, failed: 0, workers: 0 }, 0);
    p.recruited(3000); // discovery took 3 s
    p.recruited(3500); // later workers do not move the origin
    // 2 s after the first worker: 400 done → 200/s; 600 left → 3 s.
    expect(strip(p.line({ done: 400, failed: 0, workers: 2 }, 5000))).toBe(`[${'#'.repeat(12)}${'.'.repeat(18)}] 400/1000 2 worker(s) 200/s ETA 3s`);
  });

  it('failures are shown; an unknown total (stdin) shows a count and no ETA; long ETAs in minutes and hours', () => {
    const p = new ProgressLine(undefined);
    p.recruited(0);
    expect(strip(p.line({ done: 50, failed: 2, workers: 1 }, 1000))).toBe('50 done (2 failed) 1 worker(s) 50/s');
    const q = new ProgressLine(100_000);
    q.recruited(0);
    expect(strip(q.line({ done: 10, failed: 0, workers: 1 }, 1000))).toMatch(/ 10\/s ETA 2h46m$/);
    const r = new ProgressLine(1000);
    r.recruited(0);
    expect(strip(r.line({ done: 10, failed: 0, workers: 1 }, 1000))).toMatch(/ 10\/s ETA 1m39s$/);
  });
});
