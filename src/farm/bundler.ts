/**
 * Code mobility, client side: every stage becomes a content-addressed bundle (an ES module). Module
 * stages are bundled with esbuild (the stage and its imports, TypeScript and npm packages included;
 * Node built-ins stay external), inline stages become a one-line module of their source.
 */
import { existsSync, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidStageError } from '../errors.js';
import { stageName, type Stage } from '../skeleton/index.js';
import { bundleHash } from '../protocol/index.js';
import { inlineStageModule } from './inline.js';

/** One stage, ready to ship: its bundle and the bundle's sha256. */
export interface PreparedStage {
  readonly hash: string;
  readonly code: Buffer;
  readonly name: string;
  readonly inline: boolean;
}

const REQUIRE_SHIM = "import { createRequire as __taskfarmCreateRequire } from 'node:module';\n" + 'const require = __taskfarmCreateRequire(import.meta.url);';

function modulePath(stage: string | URL, index: number, cwd: string): string {
  let path: string;
  if (stage instanceof URL || /^[a-z][a-z0-9+.-]*:\/\//i.test(stage) || stage.startsWith('file:')) {
    const url = stage instanceof URL ? stage : new URL(stage);
    if (url.protocol !== 'file:') {
      throw new InvalidStageError(`Stage ${index}: only file: URLs can be bundled, got ${url.href}; download the module and pass its path.`, {
        stageIndex: index,
      });
    }
    path = fileURLToPath(url);
  } else {
    path = isAbsolute(stage) ? stage : resolve(cwd, stage);
  }
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new InvalidStageError(
      `Stage ${index}: module not found: ${path}` +
        (stage instanceof URL || isAbsolute(String(stage)) ? '' : ` (relative stage paths resolve against the current directory, ${cwd})`),
      { stageIndex: index },
    );
  }
  return path;
}

/** A bundle made earlier, valid while none of the files it was made from changed. */
interface CachedBundle {
  readonly stage: PreparedStage;
  /** Every input file of the bundle with its modification time and size when it was bundled. */
  readonly inputs: readonly (readonly [path: string, mtimeMs: number, size: number])[];
}

/** Bundles by entry path (and working folder), most recently used last; bounded. */
const bundleCache = new Map<string, CachedBundle>();
const BUNDLE_CACHE_MAX = 256;
/** Inline stages by their function object. */
const inlineCache = new WeakMap<object, PreparedStage>();

function stillValid(entry: CachedBundle): boolean {
  for (const [path, mtimeMs, size] of entry.inputs) {
    try {
      const st = statSync(path);
      if (st.mtimeMs !== mtimeMs || st.size !== size) return false;
    } catch {
      return false;
    }
  }
  return true;
}

async function bundleModule(path: string, index: number, cwd: string): Promise<{ code: string; inputs: string[] }> {
  const esbuild = await import('esbuild');
  const build = (banner: string | undefined) =>
    esbuild.build({
      entryPoints: [path],
      absWorkingDir: cwd,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      write: false,
      sourcemap: 'inline',
      sourcesContent: false,
      logLevel: 'silent',
      legalComments: 'none',
      metafile: true,
      ...(banner === undefined ? {} : { banner: { js: banner } }),
    });
  let out;
  let code: string;
  let inputs: string[];
  try {
    out = await build(undefined);
    code = out.outputFiles[0]?.text ?? '';
    // CommonJS dependencies that require() Node built-ins need a real `require` in an ES module.
    if (code.includes('Dynamic require of ')) {
      out = await build(REQUIRE_SHIM);
      code = out.outputFiles[0]?.text ?? '';
    }
    inputs = Object.keys(out.metafile?.inputs ?? {})
      .filter((f) => !f.includes(':')) // namespaced inputs (e.g. `node:` built-ins) are not files
      .map((f) => resolve(cwd, f));
  } catch (err) {
    const errors = (err as { errors?: { text: string; location?: { file: string; line: number } | null }[] }).errors;
    const detail =
      errors !== undefined && errors.length > 0
        ? errors
            .slice(0, 5)
            .map((e) => (e.location ? `${e.location.file}:${e.location.line}: ${e.text}` : e.text))
            .join('; ')
        : err instanceof Error
          ? err.message
          : String(err);
    throw new InvalidStageError(`Stage ${index}: bundling ${path} failed: ${detail}`, { stageIndex: index, cause: err });
  }
  // A module stage is its default export: without one it would fail on every worker, so say it now.
  const exports = Object.values(out.metafile.outputs)[0]?.exports ?? [];
  if (!exports.includes('default')) {
    throw new InvalidStageError(
      `Stage ${index}: ${path} has no default export${exports.length > 0 ? ` (it exports ${exports.slice(0, 8).join(', ')})` : ''}. A module stage's ` +
        'default export is the stage: `export default function (input, ctx) { … }` (or a class with setData/run/getData).',
      { stageIndex: index },
    );
  }
  return { code, inputs };
}

/**
 * Bundles and hashes every stage of a normal-form chain, in order. Bundles are remembered: a stage
 * bundled before is not bundled again while none of its input files changed (checked by modification
 * time and size), so a job on a warm pool starts without running esbuild.
 */
export async function prepareStages(stages: readonly Stage[], cwd: string): Promise<PreparedStage[]> {
  const out: PreparedStage[] = [];
  for (let i = 0; i < stages.length; i++) {
    const stage = stages[i]!;
    if (typeof stage === 'function') {
      let prepared = inlineCache.get(stage);
      if (prepared === undefined) {
        const code = Buffer.from(inlineStageModule(stage, i), 'utf8');
        prepared = { hash: bundleHash(code), code, name: stageName(stage), inline: true };
        inlineCache.set(stage, prepared);
      }
      out.push(prepared);
      continue;
    }
    const path = modulePath(stage, i, cwd);
    const cacheKey = `${cwd}\0${path}`;
    const cached = bundleCache.get(cacheKey);
    if (cached !== undefined && stillValid(cached)) {
      bundleCache.delete(cacheKey);
      bundleCache.set(cacheKey, cached);
      out.push(cached.stage);
      continue;
    }
    const before = Date.now();
    const { code: text, inputs } = await bundleModule(path, i, cwd);
    const code = Buffer.from(text, 'utf8');
    const prepared: PreparedStage = { hash: bundleHash(code), code, name: stageName(stage), inline: false };
    out.push(prepared);
    // Files modified while esbuild read them could be cached stale: only cache what was older.
    const stats: [string, number, number][] = [];
    let stable = true;
    for (const f of inputs) {
      try {
        const st = statSync(f);
        if (st.mtimeMs >= before - 2) stable = false;
        stats.push([f, st.mtimeMs, st.size]);
      } catch {
        stable = false;
      }
    }
    if (stable) {
      bundleCache.set(cacheKey, { stage: prepared, inputs: stats });
      if (bundleCache.size > BUNDLE_CACHE_MAX) bundleCache.delete(bundleCache.keys().next().value!);
    }
  }
  return out;
}

/** Checks inline stages and module paths without bundling (cheap; runs before anything is sent). */
export function checkStages(stages: readonly Stage[], cwd: string): void {
  stages.forEach((stage, i) => {
    if (typeof stage === 'function') inlineStageModule(stage, i);
    else modulePath(stage, i, cwd);
  });
}
