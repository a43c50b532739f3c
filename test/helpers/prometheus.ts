/**
 * Prometheus exposition checks for the metrics tests: parse with a real parser
 * (parse-prometheus-text-format) and check the naming conventions Prometheus documents
 * (https://prometheus.io/docs/practices/naming/): snake_case with a prefix, `_total` on counters
 * and only on counters, base units (`_seconds`, `_bytes`), no unit-less durations.
 */
import parsePrometheusTextFormat, { type MetricFamily } from 'parse-prometheus-text-format';

export type { MetricFamily };

/** Parses exposition text; throws when it is not exposition. */
export function parseExposition(text: string): MetricFamily[] {
  const families = parsePrometheusTextFormat(text);
  if (!Array.isArray(families)) throw new Error('not Prometheus exposition');
  return families;
}

/** Naming problems of the families whose names start with `prefix` (empty when all is well). */
export function namingProblems(families: readonly MetricFamily[], prefix: string): string[] {
  const problems: string[] = [];
  for (const f of families) {
    if (!f.name.startsWith(prefix)) continue;
    if (!/^[a-z][a-z0-9_]*$/.test(f.name)) problems.push(`${f.name}: not snake_case`);
    if (f.help.length === 0) problems.push(`${f.name}: no HELP`);
    if (f.type === 'COUNTER' && !f.name.endsWith('_total')) problems.push(`${f.name}: a counter without _total`);
    if (f.type !== 'COUNTER' && f.name.endsWith('_total')) problems.push(`${f.name}: _total on a ${f.type.toLowerCase()}`);
    if (/_(ms|milliseconds|minutes|hours|kb|mb|kilobytes|megabytes)(_|$)/.test(f.name)) problems.push(`${f.name}: not in base units`);
    if (/duration|latency|time/.test(f.name) && !/_seconds(_total)?$/.test(f.name)) problems.push(`${f.name}: a duration not in _seconds`);
    if (f.type === 'HISTOGRAM' && !/_(seconds|bytes)$/.test(f.name)) problems.push(`${f.name}: a histogram without its unit`);
  }
  return problems;
}

/** The value of one sample (by labels), or undefined. */
export function sample(families: readonly MetricFamily[], name: string, labels: Record<string, string> = {}): number | undefined {
  const f = families.find((x) => x.name === name);
  const m = f?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  if (m === undefined) return undefined;
  return Number(m.value ?? m.count);
}
