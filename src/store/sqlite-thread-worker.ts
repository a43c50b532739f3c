/**
 * The thread of a {@link ThreadedSqliteJobStore}: opens a {@link SqliteJobStore} and runs the calls
 * it is sent, each as it arrives (as calls on one thread would run), answering each with its
 * result or its error.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SqliteJobStore, type SqliteJobStoreOptions } from './sqlite.js';
import { errorToData, unpackOutputs, type PackedOutputs, type StoreCall, type StoreReply } from './sqlite-thread.js';
import type { ReadResultsOptions, ResultRow } from './types.js';

const port = parentPort;
if (port === null) throw new Error('sqlite-thread-worker runs as a worker thread of ThreadedSqliteJobStore');
const { path, options } = workerData as { path: string; options: SqliteJobStoreOptions };

/** The first `chunkSize` results after `after`: one read (SqliteJobStore reads chunk by chunk). */
async function readResultsChunk(store: SqliteJobStore, ticket: string, o: ReadResultsOptions): Promise<ResultRow[]> {
  const rows: ResultRow[] = [];
  const chunk = o.chunkSize ?? 10_000;
  for await (const r of store.readResults(ticket, o)) {
    rows.push(r);
    if (rows.length >= chunk) break;
  }
  return rows;
}

try {
  const store = await SqliteJobStore.open(path, options);
  const methods = store as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  port.on('message', (call: StoreCall) => {
    const args = [...call.args];
    let run: Promise<unknown>;
    try {
      if (call.packed !== undefined) args[call.packed] = JSON.parse(args[call.packed] as string);
      if (call.outputs === true) args[1] = unpackOutputs(args[1] as PackedOutputs);
      if (call.method === 'readResultsChunk') run = readResultsChunk(store, args[0] as string, args[1] ?? {});
      else {
        const fn = methods[call.method];
        if (typeof fn !== 'function') throw new Error(`no store method ${call.method}`);
        run = fn.apply(store, args);
      }
    } catch (err) {
      run = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    run.then(
      (value) => port.postMessage({ id: call.id, value } satisfies StoreReply),
      (err: unknown) => port.postMessage({ id: call.id, error: errorToData(err) } satisfies StoreReply),
    );
  });
  port.postMessage({ id: 0, value: null } satisfies StoreReply);
} catch (err) {
  port.postMessage({ id: 0, error: errorToData(err) } satisfies StoreReply);
}
