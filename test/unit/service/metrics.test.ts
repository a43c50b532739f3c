/**
 * The manager's Prometheus series: registered on a registry, fed through the recorder and the
 * sources, exposed in the text format, parsed back with a real parser, named by the conventions.
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { registerServiceMetrics, type ServiceMetricsSources } from '../../../src/service/metrics.js';
import { namingProblems, parseExposition, sample } from '../../helpers/prometheus.js';

const sources = (over: Partial<ServiceMetricsSources> = {}): ServiceMetricsSources => ({
  jobsByState: () => ({ running: 2, done: 5 }),
  tasksByState: () => Promise.resolve({ pending: 1000, running: 16, done: 84 }),
  workersByState: () => ({ busy: 3, lost: 1 }),
  ...over,
});

describe('registerServiceMetrics', () => {
  it('exposes every series of issue 12, parsed by a real parser, named by the Prometheus conventions', async () => {
    const registry = new Registry();
    const m = registerServiceMetrics(registry, sources());
    m.tasksSettled('done', 84);
    m.tasksSettled('failed');
    m.taskDurations([0.5, 3, 40, 1200]);
    m.recruited();
    m.recruited();
    m.lost('connection');
    m.lost('a reason nobody listed');
    m.requeued(8);
    m.speculated(2);
    m.shipped('sent', 4096);
    m.shipped('received', 1024);
    m.storeCommit(1.5);
    m.storeCommit(0.2, 'inputs');
    const text = await registry.metrics();
    const families = parseExposition(text);
    const names = families.map((f) => f.name);
    for (const n of [
      'taskfarm_jobs',
      'taskfarm_tasks',
      'taskfarm_workers',
      'taskfarm_tasks_completed_total',
      'taskfarm_task_duration_seconds',
      'taskfarm_recruits_total',
      'taskfarm_worker_losses_total',
      'taskfarm_tasks_requeued_total',
      'taskfarm_tasks_speculated_total',
      'taskfarm_shipped_bytes_total',
      'taskfarm_store_commit_duration_seconds',
    ]) {
      expect(names).toContain(n);
    }
    expect(namingProblems(families, 'taskfarm_')).toEqual([]);
    expect(families.find((f) => f.name === 'taskfarm_task_duration_seconds')?.type).toBe('HISTOGRAM');
    expect(families.find((f) => f.name === 'taskfarm_jobs')?.type).toBe('GAUGE');

    // Levels: every state present, the missing ones at 0.
    expect(sample(families, 'taskfarm_jobs', { state: 'running' })).toBe(2);
    expect(sample(families, 'taskfarm_jobs', { state: 'held' })).toBe(0);
    expect(families.find((f) => f.name === 'taskfarm_jobs')?.metrics).toHaveLength(6);
    expect(sample(families, 'taskfarm_tasks', { state: 'pending' })).toBe(1000);
    expect(sample(families, 'taskfarm_workers', { state: 'lost' })).toBe(1);
    // Happenings.
    expect(sample(families, 'taskfarm_tasks_completed_total', { outcome: 'done' })).toBe(84);
    expect(sample(families, 'taskfarm_tasks_completed_total', { outcome: 'failed' })).toBe(1);
    expect(sample(families, 'taskfarm_recruits_total')).toBe(2);
    expect(sample(families, 'taskfarm_worker_losses_total', { reason: 'connection' })).toBe(1);
    expect(sample(families, 'taskfarm_worker_losses_total', { reason: 'other' })).toBe(1);
    expect(sample(families, 'taskfarm_tasks_requeued_total')).toBe(8);
    expect(sample(families, 'taskfarm_shipped_bytes_total', { direction: 'sent' })).toBe(4096);
    // Histograms in seconds: 0.5 ms and 3 ms fall at or under 5 ms, 1.2 s under 2.5 s.
    const d = families.find((f) => f.name === 'taskfarm_task_duration_seconds')!.metrics[0]!;
    expect(Number(d.count)).toBe(4);
    expect(Number(d.sum)).toBeCloseTo(1.2435, 6);
    expect(Number(d.buckets?.['0.005'])).toBe(2);
    expect(Number(d.buckets?.['2.5'])).toBe(4);
    expect(families.find((f) => f.name === 'taskfarm_store_commit_duration_seconds')?.type).toBe('HISTOGRAM');
    expect(text).toContain('taskfarm_store_commit_duration_seconds_count{kind="inputs"} 1');
    expect(text).toContain('taskfarm_store_commit_duration_seconds_count{kind="outputs"} 1');
    expect(text).toContain('taskfarm_task_duration_seconds_bucket{le="+Inf"} 4');

    // Counted between scrapes, kept across them.
    m.shipped('sent', 10);
    m.taskDurations([700_000]);
    const again = parseExposition(await registry.metrics());
    expect(sample(again, 'taskfarm_shipped_bytes_total', { direction: 'sent' })).toBe(4106);
    expect(sample(again, 'taskfarm_shipped_bytes_total', { direction: 'received' })).toBe(1024);
    const d2 = again.find((f) => f.name === 'taskfarm_task_duration_seconds')!.metrics[0]!;
    expect(Number(d2.count)).toBe(5);
    expect(Number(d2.buckets?.['600'])).toBe(4);
  });

  it('leaves out the series of a source that fails, and serves the others', async () => {
    const registry = new Registry();
    registerServiceMetrics(
      registry,
      sources({
        tasksByState: () => Promise.reject(new Error('the store is down')),
      }),
    );
    const families = parseExposition(await registry.metrics());
    expect(families.find((f) => f.name === 'taskfarm_tasks')?.metrics ?? []).toHaveLength(0);
    expect(sample(families, 'taskfarm_jobs', { state: 'done' })).toBe(5);
  });

  it('ignores negative, NaN and infinite amounts instead of throwing', async () => {
    const registry = new Registry();
    const m = registerServiceMetrics(registry, sources());
    m.requeued(-3);
    m.shipped('sent', Number.NaN);
    m.taskDurations([Number.POSITIVE_INFINITY, -1]);
    m.storeCommit(-5);
    const families = parseExposition(await registry.metrics());
    expect(sample(families, 'taskfarm_tasks_requeued_total')).toBe(0);
    expect(sample(families, 'taskfarm_shipped_bytes_total', { direction: 'sent' })).toBe(0);
    expect(Number(families.find((f) => f.name === 'taskfarm_task_duration_seconds')!.metrics[0]!.count)).toBe(0);
  });
});
