/**
 * `taskfarm demo`: a real farm on this machine. Starts worker daemons on 127.0.0.1, renders the
 * Mandelbrot set in tiles across them, SIGKILLs one daemon halfway so its tasks are rescheduled,
 * writes a PNG and prints what each worker did. No mDNS: the daemons are given as peers.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { InvalidOptionError, TaskFarm, generateFarmKey } from '../src/index.js';
import type { RenderedTile, Tile } from './demo/mandelbrot-tile.js';
import { encodePng } from './demo/png.js';
import { startDaemon, stopDaemon, type LocalDaemon } from './local-daemons.js';

export const DEMO_HELP = `Usage: taskfarm demo [options]

Starts worker daemons on 127.0.0.1 as child processes, renders the Mandelbrot set to a PNG in
tiles across them, kills one daemon with SIGKILL halfway through so you can see its tasks
rescheduled on the others, prints how many tiles each worker computed, and stops the daemons.
Runs entirely on loopback (no mDNS).

Options:
  --workers N     daemons to start (default 3, at least 2)
  --tiles N       tiles per side: N×N tasks (default 8)
  --width PX      image width (default 1200; height is 2/3 of it)
  --out FILE      PNG to write (default mandelbrot.png)
  --no-kill       do not kill a daemon
  -h, --help      show this help
`;

function positive(name: string, v: string | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidOptionError(`--${name} expects an integer >= ${min}, got "${v}"`);
  return n;
}

export async function runDemo(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      workers: { type: 'string' },
      tiles: { type: 'string' },
      width: { type: 'string' },
      out: { type: 'string' },
      'no-kill': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    process.stdout.write(DEMO_HELP);
    return 0;
  }
  const workers = positive('workers', values.workers, 3, 2);
  const perSide = positive('tiles', values.tiles, 8);
  const width = positive('width', values.width, 1200, 16);
  const height = Math.round((width * 2) / 3);
  const out = resolve(values.out ?? 'mandelbrot.png');
  const kill = values['no-kill'] !== true;

  const say = (line: string): void => void process.stdout.write(line + '\n');
  const cacheRoot = mkdtempSync(join(tmpdir(), 'taskfarm-demo-'));
  const daemons: LocalDaemon[] = [];
  const stopAll = (): Promise<unknown> => Promise.allSettled(daemons.map((d) => stopDaemon(d)));
  const onSignal = (): void => {
    void stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // A farm key for this demo only: the daemons get it in their environment, never on a command line.
    const key = generateFarmKey();
    say(`starting ${workers} worker daemons on 127.0.0.1 (1 thread each, farm key + TLS)…`);
    const started = await Promise.allSettled(
      Array.from({ length: workers }, (_, i) =>
        startDaemon(['--threads', '1', '--cache-dir', join(cacheRoot, `w${i}`), '--log-level', 'warn'], 20_000, { ...process.env, TASKFARM_KEY: key }),
      ),
    );
    for (const s of started) if (s.status === 'fulfilled') daemons.push(s.value);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    for (const d of daemons) say(`  worker ${d.id}  pid ${d.pid}  ${d.address}`);

    const tiles: Tile[] = [];
    const tw = Math.ceil(width / perSide);
    const th = Math.ceil(height / perSide);
    for (let y = 0; y < height; y += th) {
      for (let x = 0; x < width; x += tw) {
        tiles.push({
          x,
          y,
          w: Math.min(tw, width - x),
          h: Math.min(th, height - y),
          width,
          height,
          cx: -0.7453,
          cy: 0.1127,
          span: 0.0065,
          maxIter: 6000,
          samples: 2,
        });
      }
    }
    const stage = fileURLToPath(new URL('./demo/mandelbrot-tile.js', import.meta.url));
    const farm = new TaskFarm<Tile, RenderedTile>(stage, tiles, {
      peers: daemons.map((d) => d.address),
      localFallback: false,
      key,
      // The demo shows a lost worker's tiles being rescheduled; backup copies would blur that story.
      speculation: false,
    });
    const byId = new Map(daemons.map((d) => [d.id, d]));
    let victim: LocalDaemon | undefined;
    farm.on('recruited', (w) => say(`recruited ${w.id} at ${w.address}`));
    farm.on('lost', (e) =>
      say(
        e.draining
          ? `${e.worker.id} left (draining); ${e.requeued} of its tasks requeued`
          : `lost ${e.worker.id}: ${e.reason}; ${e.requeued} of its tasks requeued`,
      ),
    );
    say(`rendering ${width}×${height} in ${tiles.length} tiles…`);
    const t0 = Date.now();
    const image = new Uint8Array(width * height * 3);
    let done = 0;
    for await (const r of farm.results()) {
      if (r.error !== undefined) throw r.error;
      const t = r.output;
      for (let row = 0; row < t.h; row++) {
        image.set(t.rgb.subarray(row * t.w * 3, (row + 1) * t.w * 3), ((t.y + row) * width + t.x) * 3);
      }
      done++;
      if (kill && victim === undefined && done >= tiles.length / 2) {
        const busiest = farm.stats().workers.find((w) => byId.has(w.id) && w.lost === undefined);
        victim = busiest === undefined ? daemons[0]! : byId.get(busiest.id)!;
        say(`${done}/${tiles.length} tiles done: killing worker ${victim.id} (pid ${victim.pid}) with SIGKILL`);
        victim.child.kill('SIGKILL');
      }
    }
    const elapsed = Date.now() - t0;
    writeFileSync(out, encodePng(width, height, image));
    say(`done: ${tiles.length} tiles in ${(elapsed / 1000).toFixed(2)} s, ${farm.stats().requeued} task(s) rescheduled; image written to ${out}`);
    say('tiles per worker:');
    for (const w of farm.stats().workers) {
      say(`  ${w.id.padEnd(24)} ${w.address.padEnd(18)} ${String(w.completed).padStart(4)}${w.lost !== undefined ? `   (lost: ${w.lost})` : ''}`);
    }
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await stopAll();
    rmSync(cacheRoot, { recursive: true, force: true });
  }
}
