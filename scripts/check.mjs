#!/usr/bin/env node
// The quality gate, `npm run check` (and so `npm test`): runs the checks below, as many at once as
// the machine has cores (CHECK_JOBS=n to choose), longest first, and fails if any of them fails.
// Each is an npm script of its own, to run alone while fixing what it found:
//
//   lint          ESLint: typescript-eslint with type information, import boundaries (eslint.config.js)
//   typecheck     tsc --noEmit with noUnusedLocals/noUnusedParameters (tsconfig.json), and the dashboard's tsconfig
//   format:check  Prettier over the whole tree (`npm run format` rewrites)
//   check:cycles  madge --circular: no import cycles
//   check:dead    knip: no unused files, exports, types or dependencies (knip.json)
//
// A check's output is printed when it fails (all of it) and otherwise only its time. No caches:
// type-aware lint results of a file depend on other files, and CI starts from a fresh clone anyway.

import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';

/** npm scripts, longest first (ESLint builds the whole type program: it is the critical path). */
const CHECKS = ['lint', 'typecheck', 'format:check', 'check:cycles', 'check:dead'];

const jobs = Math.max(1, Number.parseInt(process.env.CHECK_JOBS ?? '', 10) || availableParallelism());
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const started = performance.now();
/** @type {Set<import('node:child_process').ChildProcess>} */
const running = new Set();

/** @param {string} name @returns {Promise<boolean>} */
function run(name) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(npm, ['run', '--silent', name], { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    /** @type {Buffer[]} */
    const out = [];
    child.stdout.on('data', (b) => out.push(b));
    child.stderr.on('data', (b) => out.push(b));
    const finish = (/** @type {boolean} */ ok, /** @type {string} */ why) => {
      running.delete(child);
      const s = ((performance.now() - t0) / 1000).toFixed(1);
      if (ok) process.stdout.write(`check: ${name} ok (${s} s)\n`);
      else {
        const text = Buffer.concat(out).toString('utf8').trimEnd();
        process.stdout.write(`\ncheck: ${name} FAILED (${why}, ${s} s) — run \`npm run ${name}\` to see it alone\n${text}\n\n`);
      }
      resolve(ok);
    };
    child.once('error', (err) => finish(false, err.message));
    child.once('close', (code, signal) => finish(code === 0, signal === null ? `exit ${code}` : signal));
  });
}

for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.once(sig, () => {
    for (const child of running) child.kill(sig);
    process.exitCode = 130;
  });
}

const queue = [...CHECKS];
/** @type {string[]} */
const failed = [];
await Promise.all(
  Array.from({ length: Math.min(jobs, queue.length) }, async () => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) if (!(await run(name))) failed.push(name);
  }),
);
const total = ((performance.now() - started) / 1000).toFixed(1);
if (failed.length > 0) {
  process.stdout.write(`check: FAILED: ${failed.join(', ')} (${total} s)\n`);
  process.exitCode = 1;
} else process.stdout.write(`check: all ${CHECKS.length} checks passed (${total} s, ${Math.min(jobs, CHECKS.length)} at a time)\n`);
