/**
 * Ceiling: an in-process pool of plain worker_threads (the piscina model): one postMessage per
 * task, a fixed number in flight, `x * 2`. Returns tasks/s.
 */
import { Worker } from 'node:worker_threads';

const THREAD = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => parentPort.postMessage({ id: m.id, v: m.v * 2 }));
`;

export async function poolCeiling(tasks: number, threads = 2, inFlight = 64): Promise<number> {
  const workers = Array.from({ length: threads }, () => new Worker(THREAD, { eval: true }));
  await Promise.all(workers.map((w) => new Promise<void>((r) => w.once('online', () => r()))));
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let sent = 0;
    let done = 0;
    const loads = new Array<number>(threads).fill(0);
    const send = (): void => {
      let w = 0;
      for (let i = 1; i < threads; i++) if (loads[i]! < loads[w]!) w = i;
      loads[w]!++;
      workers[w]!.postMessage({ id: sent, v: sent });
      sent++;
    };
    workers.forEach((worker, i) =>
      worker.on('message', () => {
        loads[i]!--;
        done++;
        if (done === tasks) resolve();
        else if (sent < tasks) send();
      }),
    );
    for (let i = 0; i < Math.min(inFlight, tasks); i++) send();
  });
  const ms = performance.now() - t0;
  await Promise.all(workers.map((w) => w.terminate()));
  return (tasks / ms) * 1000;
}
