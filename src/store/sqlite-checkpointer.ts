/**
 * The SQLite store's checkpointer: a worker thread with its own connection to the store's file that
 * copies the write-ahead log back into the database (`wal_checkpoint(PASSIVE)`) every
 * `intervalMs`, so that the writer's connection never does it inside a commit. A checkpoint fsyncs
 * and copies megabytes; in the writer's commit it held the manager's event loop for up to ~20 ms
 * (docs/PERFORMANCE.md). PASSIVE never blocks the writer or the readers.
 *
 * Messages: the thread posts `'ready'` once its connection is open; it answers `'stop'` with a last
 * checkpoint, closes its connection and ends.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

/** What the thread is started with. */
export interface CheckpointerInit {
  readonly path: string;
  readonly intervalMs: number;
  /**
   * Past this size of the log, a RESTART checkpoint follows the PASSIVE ones. The writer starts the
   * log again from its beginning only when it begins a transaction with every frame copied, which
   * a writer that commits without pause never does after a checkpoint on another connection;
   * RESTART holds the writer off while it copies the last frames (few: PASSIVE copied the rest),
   * for at most `restartWaitMs` of waiting on it and on the readers.
   */
  readonly restartBytes: number;
  readonly restartWaitMs: number;
}

interface CheckpointRow {
  busy: number;
  log: number;
  checkpointed: number;
}

const port = parentPort;
if (port === null) throw new Error('the SQLite checkpointer runs in a worker thread');
const init = workerData as CheckpointerInit;
const db = new Database(init.path, { fileMustExist: true });
db.pragma('synchronous = NORMAL');

const frameBytes = (db.pragma('page_size', { simple: true }) as number) + 24;

/**
 * Checkpoints until the log is copied (a few rounds: the writer keeps appending meanwhile); then,
 * if the log is past `restartBytes`, makes the writer start it again from its beginning.
 */
function step(): void {
  let row: CheckpointRow | undefined;
  for (let round = 0; round < 8; round++) {
    row = (db.pragma('wal_checkpoint(PASSIVE)') as CheckpointRow[])[0];
    if (row === undefined || row.log <= 0 || row.checkpointed >= row.log) break;
  }
  if (row === undefined || row.log * frameBytes <= init.restartBytes) return;
  db.pragma(`busy_timeout = ${init.restartWaitMs}`);
  try {
    db.pragma('wal_checkpoint(RESTART)');
  } finally {
    db.pragma('busy_timeout = 0');
  }
}

const timer = setInterval(() => {
  try {
    step();
  } catch {
    // SQLITE_BUSY and the like: the next round tries again.
  }
}, init.intervalMs);

port.on('message', (msg: unknown) => {
  if (msg !== 'stop') return;
  clearInterval(timer);
  try {
    step();
  } catch {
    // the writer's close checkpoints what is left
  }
  db.close();
  port.close();
});
port.postMessage('ready');
