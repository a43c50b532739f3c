/**
 * Sharing the pool between jobs, as a pure function (PARK's job manager: priorities with backfill).
 * Capacity is counted in batch slots (every worker keeps `2 × threads + 1` batches of about 4 ms of
 * work in flight), so a share of slots is a share of the workers' time.
 */

/** What the allocation policy knows about one job. */
export interface JobDemand {
  readonly id: string;
  /** Higher first. */
  readonly priority: number;
  /** Share among jobs of equal priority, > 0. */
  readonly weight: number;
  /** Slots it could use now: its batches in flight plus the batches its untaken tasks make (Infinity: unknown, many). */
  readonly demand: number;
}

/**
 * Splits `capacity` slots among jobs: higher priority first; jobs of equal priority share what is
 * left in proportion to their weights (water-filling: a job never gets more than its demand, and
 * what it cannot use goes to its equals); what a priority level cannot use goes to the levels below
 * (backfill). Returns fractional slots per job id; the sum never exceeds `capacity`.
 */
export function allocate(jobs: readonly JobDemand[], capacity: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const j of jobs) out.set(j.id, 0);
  let left = Math.max(0, capacity);
  const levels = [...new Set(jobs.map((j) => j.priority))].sort((a, b) => b - a);
  for (const level of levels) {
    if (left <= 0) break;
    let open = jobs.filter((j) => j.priority === level && j.demand > 0);
    // Water-filling: hand out `left` by weight; jobs whose demand is met drop out and give back the rest.
    while (open.length > 0 && left > 1e-9) {
      const totalWeight = open.reduce((s, j) => s + j.weight, 0);
      const perWeight = left / totalWeight;
      const capped = open.filter((j) => j.demand - out.get(j.id)! <= perWeight * j.weight);
      if (capped.length === 0) {
        for (const j of open) out.set(j.id, out.get(j.id)! + perWeight * j.weight);
        left = 0;
        break;
      }
      for (const j of capped) {
        const give = j.demand - out.get(j.id)!;
        out.set(j.id, j.demand);
        left -= give;
      }
      open = open.filter((j) => !capped.includes(j));
    }
  }
  return out;
}
