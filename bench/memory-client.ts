/**
 * For the memory benchmark, in its own process so its RSS is its own: computes `x * 2` on N inputs
 * from a generator (never an array) over the given daemons, and prints
 * `{"ms":…,"peakRssMb":…,"checked":…}` (peak RSS sampled every 20 ms, and the kernel's maxRSS).
 */
import { TaskFarm } from '../src/index.js';

const n = Number(process.argv[2]);
const peers = (process.argv[3] ?? '').split(',').filter((s) => s.length > 0);
let peak = process.memoryUsage().rss;
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
function* inputs(): Generator<number> {
  for (let i = 0; i < n; i++) yield i;
}
const t0 = performance.now();
let checked = 0;
let sum = 0;
const farm = new TaskFarm<number, number>(
  (x: number) => x * 2,
  inputs(),
  peers.length > 0 ? { peers, localFallback: false } : { discovery: 'local', threads: 2 },
);
for await (const { index, output } of farm.results({ ordered: true })) {
  if (output !== index * 2) throw new Error(`wrong output for ${index}`);
  sum += output;
  checked++;
}
const ms = performance.now() - t0;
clearInterval(sampler);
peak = Math.max(peak, process.memoryUsage().rss);
process.stdout.write(JSON.stringify({ ms, peakRssMb: peak / 1048576, maxRssMb: process.resourceUsage().maxRSS / 1024, checked, sum }) + '\n');
