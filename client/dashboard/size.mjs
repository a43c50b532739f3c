#!/usr/bin/env node
// Prints the dashboard's page weight after `vite build`: every JS and CSS asset, raw and gzipped.
// Exits 1 when the page's JavaScript is over the budget of issue 12 (200 KB gzipped), so a build
// that breaks it fails. `--json` prints the figures as JSON (the bench reads them).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const BUDGET_JS_GZIP = 200 * 1024;
const dir = new URL('../../dist/dashboard/assets/', import.meta.url).pathname;

export function measure() {
  const files = readdirSync(dir).filter((f) => f.endsWith('.js') || f.endsWith('.css'));
  const rows = files.map((f) => {
    const bytes = readFileSync(join(dir, f));
    return { file: f, bytes: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
  });
  const js = rows.filter((r) => r.file.endsWith('.js'));
  return { rows, jsBytes: js.reduce((a, r) => a + r.bytes, 0), jsGzip: js.reduce((a, r) => a + r.gzip, 0), budget: BUDGET_JS_GZIP };
}

if (process.argv[1] === new URL(import.meta.url).pathname) {
  const m = measure();
  if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(m)}\n`);
  else {
    for (const r of m.rows)
      process.stdout.write(
        `dashboard: ${r.file.padEnd(28)} ${(r.bytes / 1024).toFixed(1).padStart(7)} KB  gzip ${(r.gzip / 1024).toFixed(1).padStart(6)} KB\n`,
      );
    process.stdout.write(`dashboard: page JavaScript ${(m.jsGzip / 1024).toFixed(1)} KB gzipped (budget ${m.budget / 1024} KB)\n`);
  }
  if (m.jsGzip > m.budget) {
    process.stderr.write(`dashboard: the page's JavaScript is ${(m.jsGzip / 1024).toFixed(1)} KB gzipped, over the ${m.budget / 1024} KB budget\n`);
    process.exitCode = 1;
  }
}
