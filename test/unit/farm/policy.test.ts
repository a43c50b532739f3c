import { describe, expect, it } from 'vitest';
import {
  allocate,
  batchSizeFor,
  decideRetry,
  ewma,
  isStuck,
  recruitBackoffMs,
  recruitFailureOf,
  shareRoom,
  WHOLE_JOB_MS,
  stragglerThresholdMs,
  windowFor,
  MAX_BATCH,
  type JobDemand,
} from '../../../src/farm/policy/index.js';
import { AuthenticationError, FarmError, FarmErrorCode, ProtocolError, WorkerBusyError, WorkerLostError } from '../../../src/errors.js';

const job = (id: string, priority: number, weight: number, demand: number): JobDemand => ({ id, priority, weight, demand });
const shares = (jobs: JobDemand[], capacity: number): Record<string, number> =>
  Object.fromEntries([...allocate(jobs, capacity)].map(([k, v]) => [k, Math.round(v * 1000) / 1000]));

describe('allocate (jobs, capacity) → slots', () => {
  it('a higher priority takes everything it can use', () => {
    expect(shares([job('low', 0, 1, Infinity), job('high', 10, 1, Infinity)], 12)).toEqual({ low: 0, high: 12 });
  });

  it('equal priorities share in proportion to their weights', () => {
    expect(shares([job('a', 0, 1, Infinity), job('b', 0, 1, Infinity)], 10)).toEqual({ a: 5, b: 5 });
    expect(shares([job('a', 0, 1, Infinity), job('b', 0, 3, Infinity)], 12)).toEqual({ a: 3, b: 9 });
  });

  it('backfill: what a higher priority cannot use goes to the lower ones', () => {
    expect(shares([job('high', 5, 1, 4), job('low', 0, 1, Infinity)], 12)).toEqual({ high: 4, low: 8 });
  });

  it('water-filling among equals: a job that needs less than its share gives the rest to its equals', () => {
    expect(shares([job('a', 0, 1, 2), job('b', 0, 1, Infinity), job('c', 0, 1, Infinity)], 12)).toEqual({ a: 2, b: 5, c: 5 });
    expect(shares([job('a', 0, 2, 1), job('b', 0, 1, 100)], 9)).toEqual({ a: 1, b: 8 });
  });

  it('never hands out more than the capacity, nor more than a job asks for', () => {
    const out = allocate([job('a', 1, 1, 3), job('b', 1, 1, 3), job('c', 0, 1, 3)], 5);
    expect([...out.values()].reduce((s, x) => s + x, 0)).toBeLessThanOrEqual(5 + 1e-9);
    expect(shares([job('a', 0, 1, 3)], 100)).toEqual({ a: 3 });
    expect(shares([job('a', 0, 1, 0)], 10)).toEqual({ a: 0 });
    expect(shares([], 10)).toEqual({});
    expect(shares([job('a', 0, 1, Infinity)], 0)).toEqual({ a: 0 });
  });

  it('three levels: each takes what it can, in order', () => {
    expect(shares([job('top', 2, 1, 3), job('mid', 1, 1, 4), job('bottom', 0, 1, Infinity)], 10)).toEqual({ top: 3, mid: 4, bottom: 3 });
  });
});

describe('decideRetry', () => {
  const settings = { retries: 1, maxAttempts: 3, maxWorkerLosses: 2 };
  const at = (errors: number, crashes: number, losses: number) => ({ errors, crashes, losses });
  it('a thrown task is retried while retries allow, then fails', () => {
    expect(decideRetry('thrown', at(1, 0, 0), settings)).toEqual({ action: 'requeue' });
    expect(decideRetry('thrown', at(2, 0, 0), settings)).toEqual({ action: 'fail', reason: 'thrown' });
    expect(decideRetry('timeout', at(2, 0, 0), settings)).toEqual({ action: 'fail', reason: 'timeout' });
    expect(decideRetry('thrown', at(1, 0, 0), { ...settings, retries: 0 })).toEqual({ action: 'fail', reason: 'thrown' });
  });
  it('a task that crashes its thread maxAttempts times fails; cancelled tasks always run again', () => {
    expect(decideRetry('crashed', at(0, 2, 0), settings)).toEqual({ action: 'requeue' });
    expect(decideRetry('crashed', at(0, 3, 0), settings)).toEqual({ action: 'fail', reason: 'crashed' });
    expect(decideRetry('cancelled', at(9, 9, 9), settings)).toEqual({ action: 'requeue' });
  });
  it('a task in flight on maxWorkerLosses lost workers is given up', () => {
    expect(decideRetry('lost', at(0, 0, 1), settings)).toEqual({ action: 'requeue' });
    expect(decideRetry('lost', at(0, 0, 2), settings)).toEqual({ action: 'fail', reason: 'lost' });
  });
  it('a stage that cannot load is fatal to the job; unserializable or undecodable tasks fail at once', () => {
    expect(decideRetry('setup', at(0, 0, 0), settings)).toEqual({ action: 'fatal', reason: 'setup' });
    expect(decideRetry('unserializable', at(0, 0, 0), settings)).toEqual({ action: 'fail', reason: 'unserializable' });
    expect(decideRetry('bad-input', at(0, 0, 0), settings)).toEqual({ action: 'fail', reason: 'bad-input' });
  });
});

describe('batch sizing', () => {
  it('about 4 ms of work per batch, 1 to 4096 tasks', () => {
    expect(batchSizeFor(-1)).toBe(1);
    expect(batchSizeFor(1)).toBe(4);
    expect(batchSizeFor(0.01)).toBe(400);
    expect(batchSizeFor(0)).toBe(MAX_BATCH);
    expect(batchSizeFor(1000)).toBe(1);
  });
  it('a window of 2 batches per thread plus one', () => {
    expect(windowFor(1)).toBe(3);
    expect(windowFor(8)).toBe(17);
    expect(windowFor(0)).toBe(3);
  });
  it('ewma starts at the first sample', () => {
    expect(ewma(-1, 10, 0.3)).toBe(10);
    expect(ewma(10, 20, 0.5)).toBe(15);
  });
});

describe('fair share of a known-size job', () => {
  const base = { total: 100, done: 0, contenders: 4, recruiting: 0, threads: 1, inFlight: 0, assigned: 0 };
  it('no worker holds more than its share of what is left (but always a window)', () => {
    expect(shareRoom(base)).toBe(25);
    expect(shareRoom({ ...base, inFlight: 20 })).toBe(5);
    expect(shareRoom({ ...base, done: 96, inFlight: 0 })).toBe(3); // the window of 2 × threads + 1
  });
  it('while workers are still being recruited, each keeps its share of the whole for them', () => {
    expect(shareRoom({ ...base, recruiting: 3, assigned: 20 })).toBe(5);
    expect(shareRoom({ ...base, recruiting: 3, assigned: 25 })).toBe(0);
  });
  it('the least loaded worker takes whole a job whose work left is less than a message costs; another, or a job of unknown task time, its share', () => {
    const cheap = { ...base, avgTaskMs: 0.01, workerInFlight: 0, fewestInFlight: 0 }; // 100 × 0.01 ms = 1 ms ≤ WHOLE_JOB_MS
    expect(100 * 0.01).toBeLessThanOrEqual(WHOLE_JOB_MS);
    expect(shareRoom(cheap)).toBe(100);
    expect(shareRoom({ ...cheap, done: 40, inFlight: 10 })).toBe(50);
    expect(shareRoom({ ...cheap, workerInFlight: 5 })).toBe(25); // another worker is idle
    expect(shareRoom({ ...cheap, workerInFlight: 5, fewestInFlight: 5 })).toBe(100); // every worker is as busy
    expect(shareRoom({ ...cheap, avgTaskMs: -1 })).toBe(25);
    expect(shareRoom({ ...cheap, avgTaskMs: 1 })).toBe(25); // 100 ms of work: split
    expect(shareRoom({ ...cheap, recruiting: 3 })).toBe(25);
  });
});

describe('recruit backoff', () => {
  it('busy workers are polled, refusals wait long, unreachable ones back off up to 5 s', () => {
    expect(recruitBackoffMs('busy', 7)).toBe(500);
    expect(recruitBackoffMs('refused', 1)).toBe(10_000);
    expect([0, 1, 2, 3, 4, 5, 6, 20].map((f) => recruitBackoffMs('unreachable', f))).toEqual([250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
  });

  it('a failed recruit is classified by its error: busy, retryable → unreachable, anything else → refused', () => {
    expect(recruitFailureOf(new WorkerBusyError('leased by another client'))).toBe('busy');
    expect(recruitFailureOf(new WorkerLostError('w1', 'connection refused'))).toBe('unreachable');
    expect(recruitFailureOf(new FarmError(FarmErrorCode.PROTOCOL, 'flaky', { retryable: true }))).toBe('unreachable');
    expect(recruitFailureOf(new ProtocolError('protocol 2, this client speaks 3'))).toBe('refused');
    expect(recruitFailureOf(new AuthenticationError('wrong farm key'))).toBe('refused');
  });
});

describe('speculation', () => {
  it('a straggler is beyond multiplier × median and minMs; unknown before the first result', () => {
    expect(stragglerThresholdMs({ multiplier: 3, minMs: 50 }, -1)).toBe(-1);
    expect(stragglerThresholdMs({ multiplier: 3, minMs: 50 }, 10)).toBe(50);
    expect(stragglerThresholdMs({ multiplier: 3, minMs: 50 }, 100)).toBe(300);
  });
  it('a task far beyond every task time seen is stuck, not straggling', () => {
    expect(isStuck(60, 0.01)).toBe(true); // an infinite loop among tiny tasks: no copy
    expect(isStuck(150, 20)).toBe(false); // a slow worker's 20 ms task: copied
    expect(isStuck(401, 20)).toBe(true); // over 20 × the longest task seen
    expect(isStuck(10_000, 0)).toBe(false); // nothing seen yet: not judged
  });
});
