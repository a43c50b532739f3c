/**
 * How the CLI shows an optimize job (issue 13): the best cost and parameters so far in `taskfarm
 * status`, and a line per generation while `attach` / `optimize --wait` follow it. Reads the
 * job's `result` (docs/API.md, optimize jobs) defensively: it is the manager's JSON.
 */

/** What an optimize job's `result` holds (while it runs, and at its end). */
interface OptimizeResultView {
  readonly fun?: unknown;
  readonly x?: unknown;
  readonly names?: unknown;
  readonly evaluations?: unknown;
  readonly generations?: unknown;
  readonly converged?: unknown;
  readonly reason?: unknown;
  readonly message?: unknown;
  readonly seed?: unknown;
  readonly history?: unknown;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** A cost or parameter value, short but exact enough to read. */
export function formatNumber(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e-4 && a < 1e7 ? String(Number(v.toPrecision(8))) : v.toExponential(6);
}

/** `a = 1.5, b = -2` (names when the result has them, else `x[i]`). */
export function formatPoint(x: unknown, names: unknown): string {
  if (!Array.isArray(x)) return '?';
  return x
    .map((v: unknown, i) => {
      const name = Array.isArray(names) && typeof names[i] === 'string' ? names[i] : `x[${i}]`;
      return `${name} = ${typeof v === 'number' ? formatNumber(v) : '?'}`;
    })
    .join(', ');
}

/** The status lines of an optimize job (in place of the task counts of a map job). */
export function describeOptimization(s: { readonly state: string; readonly generation: number | null; readonly result: unknown }): string[] {
  const r = (typeof s.result === 'object' && s.result !== null ? s.result : {}) as OptimizeResultView;
  const fun = num(r.fun);
  const lines: string[] = [];
  const generations = num(r.generations);
  const evaluations = num(r.evaluations);
  if (fun === undefined) {
    lines.push(`  optimize no generation evaluated yet`);
    return lines;
  }
  lines.push(
    `  optimize ${generations ?? (s.generation ?? 0) + 1} generation(s), ${evaluations ?? '?'} evaluations${num(r.seed) === undefined ? '' : `, seed ${String(r.seed)}`}`,
  );
  lines.push(`  best     cost ${formatNumber(fun)} at ${formatPoint(r.x, r.names)}`);
  if (typeof r.reason === 'string') {
    lines.push(`  stopped  ${r.reason}${r.converged === true ? ' (converged)' : ''}${typeof r.message === 'string' ? `: ${r.message}` : ''}`);
  }
  return lines;
}

/** The line `attach` prints for a `generation` event (`{generation, result}`), or undefined. */
export function generationLine(data: unknown): string | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const d = data as { generation?: unknown; result?: OptimizeResultView | null };
  const fun = num(d.result?.fun);
  if (typeof d.generation !== 'number' || fun === undefined) return undefined;
  return `generation ${d.generation}: best cost ${formatNumber(fun)}${num(d.result?.evaluations) === undefined ? '' : ` (${String(d.result?.evaluations)} evaluations)`}`;
}
