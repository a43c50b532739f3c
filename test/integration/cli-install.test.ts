/**
 * Issue 9, item 3: the package installs from its tarball into another project, whose `taskfarm`
 * command and `import 'taskfarm'` then work. `npm pack` (scripts skipped: `npm test` has built dist/
 * already, and rebuilding it under the other test files would race them), then `npm ci --offline`
 * in a temporary project from a lockfile made of this clone's: the dependencies come from the local
 * npm cache, so the test needs no network (the README's `npm install ./taskfarm-x.y.z.tgz` resolves
 * them from the registry instead).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/daemons.js';
import { REPO } from '../helpers/cli.js';

const run = promisify(execFile);

interface Lock {
  packages: Record<string, { dev?: boolean; optional?: boolean }>;
}

describe('the packed tarball', () => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  it('installs into a temporary project; its bin runs a stage and `import { TaskFarm } from "taskfarm"` computes', { timeout: 180_000 }, async () => {
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
      version: string;
      license: string;
      engines: Record<string, string>;
      bin: Record<string, string>;
      dependencies: Record<string, string>;
      optionalDependencies: Record<string, string>;
      scripts: Record<string, string>;
      files: string[];
    };
    // A clone builds on `npm ci`, and a pack builds first: the tarball always has dist/.
    expect(pkg.scripts['prepare']).toBe('npm run build');

    const { stdout: packed } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir.path], { cwd: REPO });
    const [info] = JSON.parse(packed) as [{ filename: string; files: { path: string }[] }];
    const paths = info.files.map((f) => f.path);
    expect(paths).toEqual(
      expect.arrayContaining(['dist/client/cli.js', 'dist/src/index.js', 'dist/src/index.d.ts', 'proto/taskfarm.proto', 'scripts/isolated.mjs']),
    );
    expect(paths.filter((p) => p.startsWith('test/') || p.startsWith('src/') || p.startsWith('dist/bench/'))).toEqual([]);

    const tgz = join(dir.path, info.filename);
    const project = join(dir.path, 'project');
    await run('mkdir', ['-p', project]);
    const lock = JSON.parse(readFileSync(join(REPO, 'package-lock.json'), 'utf8')) as Lock;
    const packages: Record<string, unknown> = {
      '': { name: 'sweep', dependencies: { taskfarm: `file:${tgz}` } },
      'node_modules/taskfarm': {
        version: pkg.version,
        resolved: `file:${tgz}`,
        integrity: `sha512-${createHash('sha512').update(readFileSync(tgz)).digest('base64')}`,
        license: pkg.license,
        dependencies: pkg.dependencies,
        bin: pkg.bin,
        engines: pkg.engines,
      },
    };
    // taskfarm's dependencies sit where they sit in this clone (hoisted under node_modules/).
    // The store's drivers are optional (only `taskfarm serve` needs them; better-sqlite3 compiles for
    // minutes): a worker or a library user installs without them, so they are left out here.
    const optionalOnly = (path: string, entry: { optional?: boolean }): boolean => entry.optional === true && !path.startsWith('node_modules/@esbuild/');
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path.startsWith('node_modules/') && entry.dev !== true && !optionalOnly(path, entry)) packages[path] = entry;
    }
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'sweep', private: true, type: 'module', dependencies: { taskfarm: `file:${tgz}` } }));
    writeFileSync(join(project, 'package-lock.json'), JSON.stringify({ name: 'sweep', lockfileVersion: 3, requires: true, packages }));
    await run('npm', ['ci', '--offline', '--no-audit', '--no-fund'], { cwd: project, timeout: 150_000 });

    // The bins are installed and executable.
    for (const bin of ['taskfarm', 'taskfarm-isolated']) accessSync(join(project, 'node_modules/.bin', bin), constants.X_OK);
    const taskfarm = join(project, 'node_modules/.bin/taskfarm');
    expect((await run(taskfarm, ['version'], { cwd: project })).stdout).toBe(`${pkg.version}\n`);

    // Its bin bundles a TypeScript stage of the project (esbuild from the installed package) and runs it.
    writeFileSync(join(project, 'stage.ts'), 'export default (x: number): number => x + 1;\n');
    writeFileSync(join(project, 'inputs.jsonl'), '1\n2\n3\n');
    const r = await run(taskfarm, ['run', './stage.ts', '--inputs', 'inputs.jsonl', '--local', '--threads', '1', '--quiet'], { cwd: project });
    expect(r.stdout).toBe('2\n3\n4\n');

    // The library, imported by name from the project.
    writeFileSync(
      join(project, 'use.mjs'),
      "import { TaskFarm, PACKAGE_VERSION } from 'taskfarm';\n" +
        "const out = await new TaskFarm((x) => x * 3, [1, 2], { discovery: 'local', threads: 1 }).compute();\n" +
        'console.log(JSON.stringify({ version: PACKAGE_VERSION, out }));\n',
    );
    const used = await run(process.execPath, ['use.mjs'], { cwd: project });
    expect(JSON.parse(used.stdout)).toEqual({ version: pkg.version, out: [3, 6] });
  });
});
