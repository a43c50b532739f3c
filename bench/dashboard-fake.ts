/**
 * The fake manager of test/helpers/fake-manager.ts as a process of its own, for bench/dashboard.ts
 * until `taskfarm serve` is merged (the bench measures a manager's CPU from outside, by pid).
 *   node dist/bench/dashboard-fake.js --workers N   → prints `READY <url> <token>`
 */
import { parseArgs } from 'node:util';
import { startFakeManager } from '../test/helpers/fake-manager.js';

const { values } = parseArgs({ options: { workers: { type: 'string' }, static: { type: 'string' } } });
const token = 'tf_bench_token';
const manager = await startFakeManager({
  tokens: { [token]: { user: 'bench', admin: true } },
  workers: Number(values.workers ?? 100),
  threads: 2,
  ...(values.static === undefined ? {} : { staticDir: values.static }),
});
process.stdout.write(`READY ${manager.url} ${token}\n`);
const stop = (): void => void manager.close().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
