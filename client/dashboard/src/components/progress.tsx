/** A job's progress bar: done (green) and failed (red) over total. */
import type { Counts } from '../api.js';
import { count, fraction } from '../format.js';

/** Props of {@link Progress}. */
export interface ProgressProps {
  readonly counts: Counts;
  readonly total: number;
}

/** A progress bar with an accessible value (`aria-valuenow` in percent). */
export function Progress({ counts, total }: ProgressProps) {
  const done = fraction(counts.done, total);
  const failed = fraction(counts.failed, total);
  const pct = Math.floor((done + failed) * 1000) / 10;
  return (
    <div
      class="progress"
      role="progressbar"
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={pct}
      title={`${count(counts.done)} done, ${count(counts.failed)} failed of ${count(total)}`}
    >
      <div class="progress-done" style={{ width: `${done * 100}%` }} />
      <div class="progress-failed" style={{ width: `${failed * 100}%` }} />
      <span class="progress-label">{`${pct}%`}</span>
    </div>
  );
}

/** A job state as a coloured badge. */
export function StateBadge({ state }: { readonly state: string }) {
  return <span class={`badge state-${state}`}>{state}</span>;
}
