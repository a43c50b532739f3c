import { defineConfig } from 'vitest/config';

/**
 * The fault, LAN and security tests: real daemons whose heartbeats (about 1 s) decide whether a
 * worker is lost. They run one file at a time, in a lane of their own.
 */
const faultLane = [
  'test/system/**/*.test.ts',
  'test/robust/**/*.test.ts',
  'test/security/**/*.test.ts',
  'test/harness/**/*.test.ts',
  'test/integration/faults.test.ts',
];

export default defineConfig({
  test: {
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 30_000,
    teardownTimeout: 10_000,
    reporters: ['default'],
    // Two lanes run side by side, each one file at a time: the fault lane and everything else. Most
    // of a fault test's time is waiting (for a heartbeat timeout, a link to heal), so two files at once
    // on a 2-core machine cut the wall time nearly in half without starving anyone's heartbeats; the
    // benchmarks' smoke run (CPU-bound) runs after both, alone.
    projects: [
      { extends: true, test: { name: 'faults', include: faultLane, fileParallelism: false, sequence: { groupOrder: 0 } } },
      {
        extends: true,
        test: { name: 'main', include: ['test/**/*.test.ts'], exclude: [...faultLane, 'test/perf/**'], fileParallelism: false, sequence: { groupOrder: 0 } },
      },
      { extends: true, test: { name: 'perf', include: ['test/perf/**/*.test.ts'], fileParallelism: false, sequence: { groupOrder: 1 } } },
    ],
  },
});
