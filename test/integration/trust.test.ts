/**
 * Issue 9, item 8 (library): small things that erode trust. A gracefully drained worker is reported
 * as having left (draining), with the tasks it gave back; a module stage without a default export is
 * refused at bundle time, before anything is sent. Real daemons on 127.0.0.1.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidStageError, TaskFarm, type WorkerLostEvent } from '../../dist/src/index.js';
import { Daemons, fixture } from '../helpers/daemons.js';

describe('what a run reports', () => {
  const daemons = new Daemons();
  afterEach(async () => {
    await daemons.stopAll();
  });

  it(
    'a daemon stopped with SIGTERM mid-run is reported as "worker left (draining)", with the tasks it gave back as requeued',
    { timeout: 30_000 },
    async () => {
      const [a, b] = await daemons.start(2, ['--threads', '1', '--grace-ms', '100']);
      const n = 12;
      const farm = new TaskFarm<{ v: number; ms: number }, number>(
        fixture('spin.ts'),
        Array.from({ length: n }, (_, v) => ({ v, ms: 200 })),
        { peers: [a!.address, b!.address], speculation: false },
      );
      const lost: WorkerLostEvent[] = [];
      farm.on('lost', (e) => lost.push(e));
      let stopped = false;
      farm.on('progress', (p) => {
        if (!stopped && p.done >= 2 && p.workers === 2) {
          stopped = true;
          a!.child.kill('SIGTERM'); // graceful: 100 ms grace, its running task cannot finish in time
        }
      });
      const outputs = await farm.compute();
      expect(outputs).toEqual(Array.from({ length: n }, (_, v) => v * 2));
      expect(stopped).toBe(true);
      const left = lost.filter((e) => e.worker.id === a!.id);
      expect(left).toHaveLength(1);
      expect(left[0]).toMatchObject({ reason: 'worker left (draining)', draining: true });
      // The tasks it did not finish were requeued, and the event says how many: the summary agrees.
      expect(left[0]!.requeued).toBeGreaterThanOrEqual(1);
      expect(lost.reduce((sum, e) => sum + e.requeued, 0)).toBe(farm.stats().requeued);
      expect(farm.stats().workers.find((w) => w.id === a!.id)!.lost).toBe('worker left (draining)');
    },
  );

  it('a module stage without a default export: InvalidStageError at bundle time naming the file and its exports; nothing runs', async () => {
    const farm = new TaskFarm<number, number>(fixture('no-default.ts'), [1, 2], { peers: ['127.0.0.1:1'] });
    let recruited = 0;
    farm.on('recruited', () => recruited++);
    const err = (await farm.compute().catch((e: unknown) => e)) as InvalidStageError;
    expect(err).toBeInstanceOf(InvalidStageError);
    expect(err.code).toBe('FARM_ERR_INVALID_STAGE');
    expect(err.stageIndex).toBe(0);
    expect(err.message).toContain('no-default.ts has no default export (it exports simulate)');
    expect(err.message).toMatch(/export default function/);
    expect(recruited).toBe(0);
  });
});
