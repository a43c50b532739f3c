/**
 * Inline stage sources (`{"source": "export default (x) => x * 2"}`) bundled by the manager, so a
 * thin client with curl can run a job. The source may import Node built-ins only: resolving
 * anything else would read files of the manager's machine into a bundle that runs on the workers.
 */
import { builtinModules } from 'node:module';
import { createHash } from 'node:crypto';
import { bundleHash } from '../protocol/index.js';
import type { Bundle } from '../store/index.js';
import { InvalidRequestError } from './errors.js';

const BUILTINS = new Set(builtinModules);
const cache = new Map<string, Bundle>();
const CACHE_MAX = 64;

/**
 * Bundles one inline stage source into an ES module (esbuild: TypeScript accepted, ES2022 for Node
 * 20, an inline source map naming `field`). Throws {@link InvalidRequestError} naming `field` when it
 * does not compile, imports anything but a Node built-in, or has no default export. Bundles of the
 * same source are remembered (a bounded cache).
 */
export async function bundleSource(source: string, field: string): Promise<Bundle> {
  const key = createHash('sha256').update(field).update('\0').update(source).digest('hex');
  const hit = cache.get(key);
  if (hit !== undefined) {
    cache.delete(key);
    cache.set(key, hit);
    return hit;
  }
  const esbuild = await import('esbuild');
  let result: Awaited<ReturnType<typeof esbuild.build>>;
  try {
    result = await esbuild.build({
      stdin: { contents: source, loader: 'ts', sourcefile: field, resolveDir: '/' },
      absWorkingDir: '/',
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
      plugins: [
        {
          name: 'taskfarm-builtins-only',
          setup(build) {
            build.onResolve({ filter: /.*/ }, (args) => {
              const bare = args.path.startsWith('node:') ? args.path.slice(5) : args.path;
              if (BUILTINS.has(bare) || BUILTINS.has(bare.split('/')[0] ?? '')) return { path: args.path, external: true };
              return {
                errors: [
                  {
                    text: `cannot import ${JSON.stringify(args.path)}: an inline source may import Node built-ins only (bundle the stage with \`taskfarm submit\`, which uploads its imports)`,
                  },
                ],
              };
            });
          },
        },
      ],
    });
  } catch (err) {
    const errors = (err as { errors?: { text: string; location?: { line: number; column: number } | null }[] }).errors;
    const detail =
      errors !== undefined && errors.length > 0
        ? errors
            .slice(0, 3)
            .map((e) => (e.location ? `line ${e.location.line}:${e.location.column + 1}: ${e.text}` : e.text))
            .join('; ')
        : err instanceof Error
          ? err.message
          : String(err);
    throw new InvalidRequestError(`\`${field}\` does not compile: ${detail}`, { field: field }, { cause: err });
  }
  const output = Object.values(result.metafile?.outputs ?? {})[0];
  if (output !== undefined && !output.exports.includes('default')) {
    throw new InvalidRequestError(`\`${field}\` has no default export: export the stage function (or a process object), e.g. \`export default (x) => x * 2\``, {
      field: field,
    });
  }
  const code = result.outputFiles?.[0]?.text ?? '';
  const bundle: Bundle = { hash: bundleHash(code), code };
  cache.set(key, bundle);
  if (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value!);
  return bundle;
}
