/** Types of the parse-prometheus-text-format package (it ships none). */
declare module 'parse-prometheus-text-format' {
  interface MetricFamily {
    readonly name: string;
    readonly help: string;
    readonly type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED';
    readonly metrics: readonly { readonly labels?: Record<string, string>; readonly value?: string; readonly buckets?: Record<string, string>; readonly count?: string; readonly sum?: string }[];
  }
  export default function parsePrometheusTextFormat(text: string): MetricFamily[];
}
