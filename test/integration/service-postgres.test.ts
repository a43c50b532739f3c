/**
 * The job service on PostgreSQL: the same core on the other store backend (a private server on a
 * unix socket), with a real worker daemon.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { PostgresJobStore, createJobService, type Caller } from '../../dist/src/index.js';
import { Daemons, until } from '../helpers/daemons.js';
import { skipLoudly, startPostgres } from '../helpers/postgres.js';

const server = await startPostgres();
if ('skip' in server) skipLoudly('the job service on PostgreSQL', server.skip);
const ada: Caller = { user: 'ada', admin: false };

describe.skipIf('skip' in server)('job service on PostgreSQL', () => {
  if ('skip' in server) return;
  const daemons = new Daemons();
  afterEach(() => daemons.stopAll());
  afterAll(() => server.stop());

  it('runs a job to exact outputs, holds and releases it, and leaves counters equal to a recount', async () => {
    const ds = await daemons.start(1, ['--threads', '2']);
    const schema = `s${process.pid}`;
    const service = await createJobService({ store: await PostgresJobStore.open(server.config(), { schema }), peers: ds.map((d) => d.address) });
    const n = 20_000;
    const ticket = await service.submit(
      ada,
      { stages: [{ source: 'export default (x) => x * 2' }], hold: true },
      Array.from({ length: n }, (_, i) => ({ text: String(i), line: i + 1 })),
    );
    expect((await service.status(ada, ticket)).state).toBe('held');
    expect((await service.release(ada, ticket)).state).toMatch(/queued|running/);
    await until('done', async () => (await service.status(ada, ticket)).state === 'done', 60_000);
    let i = 0;
    for await (const r of service.results(ada, ticket)) {
      expect(r).toEqual({ index: i, output: String(i * 2) });
      i++;
    }
    expect(i).toBe(n);
    await service.close(1000);
    const store = await PostgresJobStore.open(server.config(), { schema });
    try {
      const job = (await store.getJob(ticket))!;
      expect(job.counts).toEqual({ pending: 0, running: 0, done: n, failed: 0 });
      expect(await store.recount(ticket)).toEqual(job.counts);
    } finally {
      await store.close();
    }
  });
});
