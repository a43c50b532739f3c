/**
 * A job's page: counts per state, throughput over time, the task-duration histogram, failures
 * with their remote stacks, the task table (keyset pages from the store: never every task), the
 * job's options, and the owner's actions. An optimisation (no tasks in the store) shows instead its
 * best cost, parameters and generations, and its convergence: the status's `result.history` when
 * the page loads, then a point per `generation` event as each generation is committed.
 */
import { useCallback, useEffect, useMemo, useState } from 'preact/hooks';
import type { AlignedData } from 'uplot';
import {
  ApiError,
  api,
  bestCostOf,
  convergenceOf,
  FINAL_STATES,
  mergeConvergence,
  optimizeResultOf,
  type ConvergencePoint,
  type GenerationEvent,
  type Histogram,
  type JobAction,
  type JobStats,
  type JobStatus,
  type ProgressEvent,
  type Session,
  type StateEvent,
  type TaskFailure,
  type TaskRow,
  type TaskState,
} from '../api.js';
import { cost, count, duration, jsonText, ms, rate, shortTicket, time } from '../format.js';
import { useInterval, useJobEvents } from '../live.js';
import { Plot, barsPath } from '../components/plot.js';
import { Progress, StateBadge } from '../components/progress.js';

const PAGE = 50;
const STATS_MS = 5000;
/** Live throughput samples kept (one per progress event, ≤ 4 a second). */
const MAX_SAMPLES = 2400;

/** Which actions a job's state allows (docs/API.md Actions). */
function allowed(j: JobStatus): JobAction[] {
  const out: JobAction[] = [];
  if (j.state === 'queued' || j.state === 'running' || j.state === 'held') out.push('cancel');
  if (j.state === 'queued' || j.state === 'running') out.push('hold');
  if (j.state === 'held') out.push('release');
  if (FINAL_STATES.includes(j.state)) {
    if (j.counts.failed > 0) out.push('resubmit-failed');
    out.push('resubmit');
  }
  return out;
}

const ACTION_LABEL: Record<JobAction, string> = {
  cancel: 'Cancel',
  hold: 'Hold',
  release: 'Release',
  'resubmit-failed': 'Resubmit failed',
  resubmit: 'Resubmit all',
};

/** Bucket labels of a duration histogram: "≤ 10 ms", …, "> 60 s". */
function bucketLabels(h: Histogram): string[] {
  return h.counts.map((_, i) => (i < h.bounds.length ? `≤ ${ms((h.bounds[i] ?? 0) * 1000)}` : `> ${ms((h.bounds[h.bounds.length - 1] ?? 0) * 1000)}`));
}

/** A histogram as a bar chart (x: bucket number, labelled by its bound). */
export function HistogramPlot({ id, title, histogram }: { readonly id: string; readonly title: string; readonly histogram: Histogram }) {
  const labels = useMemo(() => bucketLabels(histogram), [histogram]);
  const data = useMemo<AlignedData>(() => [histogram.counts.map((_, i) => i), [...histogram.counts]], [histogram]);
  const options = useMemo(
    () => ({
      legend: { show: false },
      cursor: { show: false },
      scales: { x: { time: false, range: [-0.5, Math.max(1, histogram.counts.length) - 0.5] as [number, number] } },
      axes: [{ values: (_u: unknown, splits: number[]) => splits.map((v) => (Number.isInteger(v) ? (labels[v] ?? '') : '')), size: 40 }, { label: 'tasks' }],
      series: [{}, { label: 'tasks', fill: 'rgba(46, 125, 50, 0.6)', stroke: '#2e7d32', paths: barsPath, points: { show: false } }],
    }),
    [labels, histogram.counts.length],
  );
  return <Plot id={id} title={title} options={options} data={data} />;
}

function ThroughputPlot({ data }: { readonly data: AlignedData }) {
  const options = useMemo(
    () => ({
      legend: { show: false },
      scales: { x: { time: true } },
      axes: [{}, { label: 'tasks/s' }],
      series: [{}, { label: 'tasks/s', stroke: '#1565c0', fill: 'rgba(21, 101, 192, 0.15)', width: 2 }],
    }),
    [],
  );
  return <Plot id="throughput" title="Throughput (tasks/s)" options={options} data={data} />;
}

function ConvergencePlot({ points }: { readonly points: readonly ConvergencePoint[] }) {
  const logScale = points.length > 0 && points.every(([, c]) => c > 0);
  const data = useMemo<AlignedData>(() => [points.map(([g]) => g), points.map(([, c]) => c)], [points]);
  const options = useMemo(
    () => ({
      legend: { show: false },
      scales: { x: { time: false }, y: logScale ? { distr: 3 } : {} },
      // uPlot's own labels round small costs on a log scale to "0": ours keep 6 significant digits
      // (on a log scale, at the powers of ten only, as uPlot's: its other ticks are the 2…9 between them).
      axes: [
        { label: 'generation' },
        {
          label: 'best cost',
          size: 70,
          values: (_u: unknown, splits: number[]) =>
            splits.map((v) => (!logScale || Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9 ? cost(v) : '')),
        },
      ],
      series: [{}, { label: 'best cost', stroke: '#6a1b9a', width: 2, points: { show: true, size: 4 } }],
    }),
    [logScale],
  );
  // uPlot takes its scales when it is built: a change to or from a log scale builds it again.
  return <Plot key={logScale ? 'log' : 'linear'} id="convergence" title="Convergence (best cost per generation)" options={options} data={data} />;
}

/** An optimisation's best cost, generations, evaluations, how it ended, and its best parameters. */
function OptimizeSummary({ job }: { readonly job: JobStatus }) {
  const r = optimizeResultOf(job.result);
  if (r === undefined) return <p class="sub">{job.state === 'queued' || job.state === 'held' ? 'Not started yet.' : 'No generation committed yet.'}</p>;
  const x = r.x ?? [];
  return (
    <>
      <section class="cards" aria-label="Optimisation">
        <div class="card" data-testid="opt-generations" data-value={r.generations ?? ''}>
          <div class="card-n">{r.generations === undefined ? '—' : count(r.generations)}</div>
          <div class="card-l">generations</div>
        </div>
        <div class="card" data-testid="opt-best" data-value={r.fun ?? ''}>
          <div class="card-n" title={r.fun === undefined ? '' : String(r.fun)}>
            {cost(r.fun)}
          </div>
          <div class="card-l">best cost</div>
        </div>
        <div class="card" data-testid="opt-evaluations" data-value={r.evaluations ?? ''}>
          <div class="card-n">{r.evaluations === undefined ? '—' : count(r.evaluations)}</div>
          <div class="card-l">evaluations</div>
        </div>
        {r.reason !== undefined ? (
          <div class="card" data-testid="opt-reason">
            <div class="card-n">{r.reason}</div>
            <div class="card-l">{r.converged === true ? 'converged' : 'stopped by'}</div>
          </div>
        ) : null}
      </section>
      {r.message !== undefined ? <p class="sub">{r.message}</p> : null}
      {x.length > 0 ? (
        <table class="grid kv" id="best-x">
          <tbody>
            {x.map((v, i) => (
              <tr key={i}>
                <th>{r.names?.[i] ?? `x[${i}]`}</th>
                <td class="mono num">{String(v)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </>
  );
}

function FailureRow({ index, error }: { readonly index: number; readonly error: TaskFailure }) {
  return (
    <tr data-index={index}>
      <td class="num mono">{index}</td>
      <td>
        <strong>{error.name}</strong>: {error.message}
        {error.stack !== undefined && error.stack.length > 0 ? (
          <details>
            <summary>remote stack</summary>
            <pre class="stack">{error.stack}</pre>
          </details>
        ) : null}
      </td>
      <td class="num">{error.attempts ?? '—'}</td>
    </tr>
  );
}

function Failures({ ticket, failed, version }: { readonly ticket: string; readonly failed: number; readonly version: number }) {
  const [rows, setRows] = useState<{ index: number; error: TaskFailure }[]>([]);
  const [cursors, setCursors] = useState<(number | undefined)[]>([undefined]);
  const [next, setNext] = useState<number | null>(null);
  const [error, setError] = useState<string | undefined>(undefined);
  const after = cursors[cursors.length - 1];
  useEffect(() => {
    if (failed === 0) return;
    api.failures(ticket, { after, limit: 20 }).then(
      (p) => {
        setRows(p.failures);
        setNext(p.next);
        setError(undefined);
      },
      (err: unknown) => setError((err as Error).message),
    );
  }, [ticket, after, failed > 0, version]);
  if (failed === 0) return <p class="empty">No failures.</p>;
  return (
    <>
      {error !== undefined ? <p class="error">{error}</p> : null}
      <table class="grid" id="failures">
        <thead>
          <tr>
            <th class="num">Input</th>
            <th>Error</th>
            <th class="num">Attempts</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <FailureRow key={r.index} index={r.index} error={r.error} />
          ))}
        </tbody>
      </table>
      <div class="pager">
        <button type="button" disabled={cursors.length <= 1} onClick={() => setCursors((c) => c.slice(0, -1))}>
          ← Previous
        </button>
        <button type="button" disabled={next === null} onClick={() => next !== null && setCursors((c) => [...c, next])}>
          Next →
        </button>
      </div>
    </>
  );
}

function Tasks({ ticket, total, version }: { readonly ticket: string; readonly total: number; readonly version: number }) {
  const [state, setState] = useState<TaskState | ''>('');
  const [cursors, setCursors] = useState<(number | undefined)[]>([undefined]);
  const [page, setPage] = useState<{ tasks: TaskRow[]; next: number | null } | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [jump, setJump] = useState('');
  const after = cursors[cursors.length - 1];
  useEffect(() => {
    let stale = false;
    api.tasks(ticket, { state: state === '' ? undefined : state, after, limit: PAGE }).then(
      (p) => {
        if (stale) return;
        setPage(p);
        setError(undefined);
      },
      (err: unknown) => !stale && setError((err as Error).message),
    );
    return () => {
      stale = true;
    };
  }, [ticket, state, after, version]);
  const first = page?.tasks[0]?.index;
  const last = page?.tasks[page.tasks.length - 1]?.index;
  const go = (e: Event): void => {
    e.preventDefault();
    const n = Number(jump);
    if (!Number.isInteger(n) || n < 0 || n >= total) return setError(`Enter an input index from 0 to ${total - 1}`);
    setCursors([undefined, n - 1]);
  };
  return (
    <>
      <form class="toolbar" onSubmit={go}>
        <label>
          State{' '}
          <select
            id="task-state"
            value={state}
            onChange={(e) => {
              setState((e.target as HTMLSelectElement).value as TaskState | '');
              setCursors([undefined]);
            }}
          >
            <option value="">all</option>
            <option value="pending">pending</option>
            <option value="running">running</option>
            <option value="done">done</option>
            <option value="failed">failed</option>
          </select>
        </label>
        <label>
          From index{' '}
          <input
            id="task-jump"
            type="number"
            min={0}
            max={Math.max(0, total - 1)}
            value={jump}
            onInput={(e) => setJump((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit">Go</button>
        <span class="sub" data-testid="task-range">
          {first === undefined ? 'no tasks on this page' : `inputs ${count(first)}–${count(last ?? first)} of ${count(total)}`}
        </span>
      </form>
      {error !== undefined ? <p class="error">{error}</p> : null}
      <table class="grid" id="tasks">
        <thead>
          <tr>
            <th class="num">Index</th>
            <th>State</th>
            <th>Input</th>
            <th>Output / error</th>
          </tr>
        </thead>
        <tbody>
          {(page?.tasks ?? []).map((t) => (
            <tr key={t.index} data-index={t.index}>
              <td class="num mono">{t.index}</td>
              <td>
                <span class={`badge task-${t.state}`}>{t.state}</span>
              </td>
              <td class="mono">{jsonText(t.input)}</td>
              <td class="mono">
                {t.error !== null ? `${t.error.name}: ${t.error.message}` : t.output === null || t.output === undefined ? '' : jsonText(t.output)}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <div class="pager">
        <button type="button" id="tasks-prev" disabled={cursors.length <= 1} onClick={() => setCursors((c) => c.slice(0, -1))}>
          ← Previous
        </button>
        <button
          type="button"
          id="tasks-next"
          disabled={page?.next === null || page === undefined}
          onClick={() => page?.next != null && setCursors((c) => [...c, page.next ?? undefined])}
        >
          Next →
        </button>
      </div>
    </>
  );
}

/** A map job's counts per state, throughput, task durations, workers, failures and tasks. */
function MapSections({
  job,
  stats,
  throughput,
  version,
}: {
  readonly job: JobStatus;
  readonly stats: JobStats | null | undefined;
  readonly throughput: AlignedData;
  readonly version: number;
}) {
  return (
    <>
      <section class="cards" aria-label="Tasks per state">
        {(['pending', 'running', 'done', 'failed'] as const).map((s) => (
          <div class={`card task-${s}`} key={s} data-testid={`count-${s}`}>
            <div class="card-n">{count(job.counts[s])}</div>
            <div class="card-l">{s}</div>
          </div>
        ))}
        <div class="card">
          <div class="card-n">{rate(job.rate)}</div>
          <div class="card-l">rate</div>
        </div>
        <div class="card">
          <div class="card-n">{job.state === 'running' ? duration(job.etaSeconds) : '—'}</div>
          <div class="card-l">ETA</div>
        </div>
      </section>
      <Progress counts={job.counts} total={job.total} />
      <section class="plots">
        <div>
          <h2>Throughput</h2>
          <ThroughputPlot data={throughput} />
          {stats === null ? <p class="sub">Live rate since this page opened (the manager has no `/stats` route).</p> : null}
        </div>
        <div>
          <h2>Task durations</h2>
          {stats !== null && stats !== undefined ? (
            <>
              <HistogramPlot id="durations" title="Task durations" histogram={stats.durations} />
              <p class="sub">{`${count(stats.durations.count)} tasks, mean ${ms(stats.durations.count > 0 ? (stats.durations.sum / stats.durations.count) * 1000 : null)}`}</p>
            </>
          ) : (
            <p class="sub">{stats === null ? 'This manager does not report task durations (GET …/stats).' : 'Loading…'}</p>
          )}
        </div>
      </section>
      {stats !== null && stats !== undefined && stats.workers.length > 0 ? (
        <section>
          <h2>Workers on this job</h2>
          <table class="grid" id="job-workers">
            <thead>
              <tr>
                <th>Worker</th>
                <th class="num">Done</th>
                <th class="num">Failed</th>
                <th class="num">Mean task</th>
              </tr>
            </thead>
            <tbody>
              {stats.workers.map((w) => (
                <tr key={w.id}>
                  <td>
                    <a href={`/workers/${encodeURIComponent(w.id)}`}>{w.host.length > 0 ? w.host : w.id}</a>
                  </td>
                  <td class="num">{count(w.done)}</td>
                  <td class="num">{count(w.failed)}</td>
                  <td class="num">{ms(w.avgTaskMs)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ) : null}
      <section>
        <h2>Failures</h2>
        <Failures ticket={job.ticket} failed={job.counts.failed} version={version} />
      </section>
      <section>
        <h2>Tasks</h2>
        <Tasks ticket={job.ticket} total={job.total} version={version} />
      </section>
    </>
  );
}

/** The job page. */
export function JobPage({ ticket }: { readonly ticket: string; readonly session: Session }) {
  const [job, setJob] = useState<JobStatus | undefined>(undefined);
  const [missing, setMissing] = useState<string | undefined>(undefined);
  const [stats, setStats] = useState<JobStats | null | undefined>(undefined);
  const [samples, setSamples] = useState<[number, number][]>([]);
  const [generations, setGenerations] = useState<readonly ConvergencePoint[]>([]);
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<string | undefined>(undefined);
  /** Bumped when the tables should reload (a state change, an action). */
  const [version, setVersion] = useState(0);

  const load = useCallback(() => {
    api.job(ticket).then(
      (j) => {
        setJob(j);
        setMissing(undefined);
        // The convergence so far (a finished job's whole); the `generation` events add the next ones.
        if (j.kind === 'optimize') setGenerations((list) => mergeConvergence(list, convergenceOf(j.result)));
      },
      (err: unknown) => {
        if (err instanceof ApiError && err.status === 404) setMissing('No such job, or not yours.');
        else setMissing((err as Error).message);
      },
    );
  }, [ticket]);
  useEffect(load, [load]);

  useInterval(
    () => {
      // Asked at once, beside the status (not after it): the first render waits for the slower of the two.
      // An optimisation has no tasks in the store, hence no task statistics.
      if (stats === null || job?.kind === 'optimize') return;
      api.stats(ticket).then(setStats, (err: unknown) => {
        // An older manager without the stats route: the page plots the live rate instead.
        if (err instanceof ApiError && (err.status === 404 || err.status === 405)) setStats(null);
      });
    },
    STATS_MS,
    [ticket, stats === null],
  );

  const optimize = job?.kind === 'optimize';
  // Map jobs start their stream at the job's last event (only what happens from now on). An
  // optimisation replays from the start: the status's history may lag its last `generation` event
  // (the event is committed with the checkpoint, the history just after), and a point of a
  // generation the history already has only replaces itself.
  useJobEvents(ticket, optimize ? 0 : job?.lastEventSeq, job !== undefined, {
    progress: (d) => {
      const p = d as ProgressEvent;
      // A stream opened without `after` (a manager without `lastEventSeq`) replays old progress
      // first: counts never go back within a run (a resubmit reloads the status), so older ones are skipped.
      const settled = p.counts.done + p.counts.failed;
      const current = job === undefined ? 0 : job.counts.done + job.counts.failed;
      if (settled < current) return;
      setJob((j) => (j === undefined ? j : { ...j, counts: p.counts, rate: p.rate, etaSeconds: p.etaSeconds }));
      if (p.rate !== null) setSamples((s) => [...s.slice(-(MAX_SAMPLES - 1)), [Date.now() / 1000, p.rate ?? 0]]);
    },
    state: (d) => {
      const s = d as StateEvent;
      setJob((j) => (j === undefined ? j : { ...j, state: s.state }));
      setVersion((v) => v + 1);
      load();
    },
    failure: () => setVersion((v) => v + 1),
    generation: (d) => {
      const g = d as GenerationEvent;
      if (typeof g.generation !== 'number') return;
      const c = bestCostOf(g.result);
      if (c !== undefined) setGenerations((list) => mergeConvergence(list, [[g.generation, c]]));
      // The summary follows the newest generation (a replayed older event changes nothing).
      const next = optimizeResultOf(g.result);
      setJob((j) => {
        if (j === undefined || next === undefined) return j;
        const seen = optimizeResultOf(j.result)?.generations ?? 0;
        if ((next.generations ?? 0) <= seen) return j;
        return { ...j, generation: g.generation, result: { ...(j.result as object | null), ...next } };
      });
    },
  });

  const throughput = useMemo<AlignedData>(() => {
    if (stats !== null && stats !== undefined && stats.throughput.done.length > 0) {
      const t0 = Date.parse(stats.throughput.start) / 1000;
      const dt = stats.throughput.intervalSeconds;
      return [stats.throughput.done.map((_, i) => t0 + (i + 1) * dt), stats.throughput.done.map((n) => n / dt)];
    }
    return [samples.map(([t]) => t), samples.map(([, r]) => r)];
  }, [stats, samples]);

  const act = async (action: JobAction): Promise<void> => {
    if (job === undefined) return;
    if ((action === 'cancel' || action === 'resubmit') && !window.confirm(`${ACTION_LABEL[action]} job “${job.name || shortTicket(job.ticket)}”?`)) return;
    setBusy(true);
    setActionError(undefined);
    try {
      setJob(await api.act(job.ticket, action));
      setVersion((v) => v + 1);
    } catch (err) {
      setActionError((err as Error).message);
      load();
    } finally {
      setBusy(false);
    }
  };

  if (missing !== undefined && job === undefined) {
    return (
      <main class="page">
        <h1>Job {shortTicket(ticket)}</h1>
        <p class="error" role="alert">
          {missing}
        </p>
        <p>
          <a href="/">Back to the overview</a>
        </p>
      </main>
    );
  }
  if (job === undefined) return <main class="page">Loading…</main>;
  return (
    <main class="page job" data-ticket={job.ticket} data-state={job.state}>
      <h1>
        <span id="job-name">{job.name.length > 0 ? job.name : shortTicket(job.ticket)}</span> <StateBadge state={job.state} />
      </h1>
      <p class="sub mono">
        {job.ticket} · {job.owner} · {job.kind} · submitted {time(job.createdAt)}
        {job.startedAt !== null ? ` · started ${time(job.startedAt)}` : ''}
        {job.finishedAt !== null ? ` · finished ${time(job.finishedAt)}` : ''}
      </p>
      <div class="actions">
        {allowed(job).map((a) => (
          <button type="button" key={a} id={`action-${a}`} class={a === 'cancel' ? 'danger' : ''} disabled={busy} onClick={() => void act(a)}>
            {ACTION_LABEL[a]}
          </button>
        ))}
        {actionError !== undefined ? (
          <span class="error" role="alert">
            {actionError}
          </span>
        ) : null}
      </div>
      {job.error !== null ? (
        <p class="error" role="alert">
          {`${job.error.code}: ${job.error.message}${job.error.index !== undefined ? ` (input ${job.error.index})` : ''}`}
        </p>
      ) : null}
      {optimize ? (
        <section>
          <OptimizeSummary job={job} />
          <h2>Convergence</h2>
          <ConvergencePlot points={generations} />
          <p class="sub" data-testid="convergence-points">{`${count(generations.length)} generations plotted`}</p>
        </section>
      ) : (
        <MapSections job={job} stats={stats} throughput={throughput} version={version} />
      )}
      <section>
        <h2>Options</h2>
        <table class="grid kv" id="options">
          <tbody>
            {Object.entries(job.options).map(([k, v]) => (
              <tr key={k}>
                <th>{k}</th>
                <td class="mono">{jsonText(v, 400)}</td>
              </tr>
            ))}
            {optimize ? null : (
              <tr>
                <th>inputs</th>
                <td class="mono">{count(job.total)}</td>
              </tr>
            )}
          </tbody>
        </table>
      </section>
    </main>
  );
}
