/**
 * The job statistics the job page plots (`GET …/stats`): the duration histogram over the metric's
 * buckets, throughput intervals that widen instead of growing past 720, per-worker figures, and a
 * round trip through the JSON the store keeps; the loss reasons of the metrics.
 */
import { describe, expect, it } from 'vitest';
import { FIRST_INTERVAL_S, JobStatsTracker, MAX_INTERVALS, statsViewOf } from '../../../src/service/job-stats.js';
import { TASK_DURATION_BUCKETS } from '../../../src/service/metrics.js';
import { lossReasonOf } from '../../../src/service/service-stats.js';

const host = (id: string): string => `host-of-${id}`;

describe('JobStatsTracker', () => {
  it('counts durations into the buckets of taskfarm_task_duration_seconds (upper bounds inclusive)', () => {
    const t = new JobStatsTracker(undefined, 0);
    for (const ms of [0.5, 1, 1.5, 40, 1200, 10 * 60 * 1000 + 1]) t.timed({ durationMs: ms, workerId: 'w1' });
    const v = t.view(host);
    expect(v.durations.bounds).toEqual(TASK_DURATION_BUCKETS);
    expect(v.durations.counts).toHaveLength(TASK_DURATION_BUCKETS.length + 1);
    expect(v.durations.counts[0]).toBe(2); // 0.5 ms and exactly 1 ms
    expect(v.durations.counts[1]).toBe(1); // 1.5 ms ≤ 2.5 ms
    expect(v.durations.counts[TASK_DURATION_BUCKETS.indexOf(0.05)]).toBe(1); // 40 ms
    expect(v.durations.counts[TASK_DURATION_BUCKETS.indexOf(2.5)]).toBe(1); // 1.2 s
    expect(v.durations.counts.at(-1)).toBe(1); // over 10 min
    expect(v.durations.count).toBe(6);
    expect(v.durations.sum).toBeCloseTo((0.5 + 1 + 1.5 + 40 + 1200 + 600_001) / 1000, 9);
    expect(v.workers).toEqual([{ id: 'w1', host: 'host-of-w1', done: 6, failed: 0, avgTaskMs: (0.5 + 1 + 1.5 + 40 + 1200 + 600_001) / 6 }]);
  });

  it('bins settled tasks per interval from the start, and merges intervals two by two past 720', () => {
    const I = FIRST_INTERVAL_S * 1000;
    const t = new JobStatsTracker(undefined, 1_000_000);
    t.settled(10, 0, 1_000_000);
    t.settled(5, 1, 1_000_000 + I - 1);
    t.settled(7, 0, 1_000_000 + 2.4 * I);
    let v = t.view(host).throughput;
    expect(v).toEqual({ intervalSeconds: FIRST_INTERVAL_S, start: 1_000_000, done: [15, 0, 7], failed: [1, 0, 0] });
    // One more just past the 720th interval: the intervals double and nothing is lost.
    t.settled(1, 0, 1_000_000 + MAX_INTERVALS * FIRST_INTERVAL_S * 1000);
    v = t.view(host).throughput;
    expect(v.intervalSeconds).toBe(2 * FIRST_INTERVAL_S);
    expect(v.done.length).toBeLessThanOrEqual(MAX_INTERVALS);
    expect(v.done[0]).toBe(15);
    expect(v.done[1]).toBe(7);
    expect(v.done.reduce((a, b) => a + b, 0)).toBe(23);
    expect(v.failed.reduce((a, b) => a + b, 0)).toBe(1);
    // A day later, still at most 720 intervals.
    t.settled(1, 0, 1_000_000 + 86_400_000);
    expect(t.view(host).throughput.done.length).toBeLessThanOrEqual(MAX_INTERVALS);
  });

  it('survives the JSON the store keeps, and reads unreadable stats as empty', () => {
    const t = new JobStatsTracker(undefined, 5);
    t.timed({ durationMs: 3, workerId: 'a' });
    t.timed({ durationMs: 5, workerId: 'a' });
    t.failedOn('b');
    t.settled(2, 1, 5);
    const again = new JobStatsTracker(t.toJSON(host), 99);
    again.timed({ durationMs: 10, workerId: 'a' });
    const v = again.view(host);
    expect(v.durations.count).toBe(3);
    expect(v.throughput).toMatchObject({ start: 5, done: [2], failed: [1] });
    expect(v.workers.find((w) => w.id === 'a')).toEqual({ id: 'a', host: 'host-of-a', done: 3, failed: 0, avgTaskMs: 6 });
    expect(v.workers.find((w) => w.id === 'b')).toMatchObject({ done: 0, failed: 1, avgTaskMs: -1 });
    const empty = statsViewOf('{not json', host, 7);
    expect(empty).toEqual({
      durations: { bounds: TASK_DURATION_BUCKETS, counts: new Array<number>(TASK_DURATION_BUCKETS.length + 1).fill(0), count: 0, sum: 0 },
      throughput: { intervalSeconds: FIRST_INTERVAL_S, start: 7, done: [], failed: [] },
      workers: [],
    });
  });
});

describe('lossReasonOf', () => {
  it('labels the pool’s loss reasons', () => {
    expect(lossReasonOf({ reason: 'missed heartbeats: nothing heard for 4500 ms', draining: false })).toBe('silent');
    expect(lossReasonOf({ reason: 'worker left (draining)', draining: true })).toBe('drained');
    expect(lossReasonOf({ reason: 'sent a malformed outcome for input 3', draining: false })).toBe('protocol');
    expect(lossReasonOf({ reason: 'writing to the stream failed: EPIPE', draining: false })).toBe('connection');
    expect(lossReasonOf({ reason: 'something new', draining: false })).toBe('other');
  });
});
