import pg from 'pg';
import { afterAll, describe } from 'vitest';
import { PostgresJobStore } from '../../src/store/index.js';
import { filesUnder, describeStoreConformance } from '../helpers/store-conformance.js';
import { skipLoudly, startPostgres } from '../helpers/postgres.js';

const server = await startPostgres();
if ('skip' in server) skipLoudly('the job store conformance suite on PostgreSQL', server.skip);

describe.skipIf('skip' in server)('PostgreSQL', () => {
  if ('skip' in server) return;
  afterAll(() => server.stop());
  let n = 0;

  describeStoreConformance('postgres', async () => {
    const schema = `t${process.pid}_${++n}`;
    const store = await PostgresJobStore.open(server.config(), { schema });
    const admin = new pg.Client(server.config());
    await admin.connect();
    return {
      store,
      reopen: () => PostgresJobStore.open(server.config(), { schema }),
      files: async () => {
        await admin.query('CHECKPOINT');
        return filesUnder(server.dataDir);
      },
      countRows: async (table) => Number((await admin.query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.${table}`)).rows[0]?.n),
      dispose: async () => {
        await admin.query(`DROP SCHEMA ${schema} CASCADE`);
        await admin.end();
      },
    };
  });
});
