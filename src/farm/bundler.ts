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
import { bundleHash } from '../worker/code-cache.js';
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

async function bundleModule(path: string, index: number, cwd: string): Promise<string> {
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
  try {
    out = await build(undefined);
    code = out.outputFiles[0]?.text ?? '';
    // CommonJS dependencies that require() Node built-ins need a real `require` in an ES module.
    if (code.includes('Dynamic require of ')) {
      out = await build(REQUIRE_SHIM);
      code = out.outputFiles[0]?.text ?? '';
    }
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
  return code;
}

/** Bundles and hashes every stage of a normal-form chain, in order. */
export async function prepareStages(stages: readonly Stage[], cwd: string): Promise<PreparedStage[]> {
  const out: PreparedStage[] = [];
  for (let i = 0; i < stages.length; i++) {
    const stage = stages[i]!;
    let text: string;
    let inline = false;
    if (typeof stage === 'function') {
      text = inlineStageModule(stage, i);
      inline = true;
    } else {
      text = await bundleModule(modulePath(stage, i, cwd), i, cwd);
    }
    const code = Buffer.from(text, 'utf8');
    out.push({ hash: bundleHash(code), code, name: stageName(stage), inline });
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
