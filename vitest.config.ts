import { statSync } from 'node:fs';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/** The fault, LAN and security tests: real daemons whose heartbeats (about 1 s) decide whether a worker is lost. */
const FAULT_LANE = /\/test\/(system|robust|security|harness)\/|\/test\/integration\/faults\.test\.ts$/;

/** The batching measurements and the benchmarks' smoke run: CPU-bound, so they run last, beside the smallest files. */
const PERF = /\/test\/perf\//;

/**
 * Files run two at a time, in an order that pairs a fault test with another one: a fault test spends
 * most of its time waiting (for a heartbeat timeout, a link to heal), so it shares the 2 cores well
 * with an ordinary integration test, less well with a second virtual LAN. Within each lane, the
 * largest files first.
 */
class LaneSequencer extends BaseSequencer {
  override sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const size = (f: TestSpecification): number => statSync(f.moduleId).size;
    const bySize = (a: TestSpecification, b: TestSpecification): number => size(b) - size(a);
    const perf = files.filter((f) => PERF.test(f.moduleId));
    const faults = files.filter((f) => FAULT_LANE.test(f.moduleId)).sort(bySize);
    const others = files.filter((f) => !FAULT_LANE.test(f.moduleId) && !PERF.test(f.moduleId)).sort(bySize);
    const out: TestSpecification[] = [];
    for (let i = 0; i < Math.max(faults.length, others.length); i++) {
      if (i < faults.length) out.push(faults[i]!);
      if (i < others.length) out.push(others[i]!);
    }
    return Promise.resolve([...out, ...perf]);
  }
}

export default defineConfig({
  test: {
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 30_000,
    teardownTimeout: 10_000,
    reporters: ['default'],
    sequence: { sequencer: LaneSequencer },
    // Two files at a time, in the order of LaneSequencer.
    maxWorkers: 2,
  },
});
