/**
 * A job's page: counts per state, throughput over time, the task-duration histogram, an
 * optimisation's convergence, failures with their remote stacks, the task table (keyset pages
 * from the store: never every task), the job's options, and the owner's actions.
 */
import { useCallback, useEffect, useMemo, useState } from 'preact/hooks';
import type { AlignedData } from 'uplot';
import {
  ApiError,
  api,
  bestCostOf,
  FINAL_STATES,
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
import { count, duration, jsonText, ms, rate, shortTicket, time } from '../format.js';
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

function ConvergencePlot({ points }: { readonly points: readonly [number, number][] }) {
  const logScale = points.length > 0 && points.every(([, c]) => c > 0);
  const data = useMemo<AlignedData>(() => [points.map(([g]) => g), points.map(([, c]) => c)], [points]);
  const options = useMemo(
    () => ({
      legend: { show: false },
      scales: { x: { time: false }, y: logScale ? { distr: 3 } : {} },
      axes: [{ label: 'generation' }, { label: 'best cost' }],
      series: [{}, { label: 'best cost', stroke: '#6a1b9a', width: 2, points: { show: true, size: 4 } }],
    }),
    [logScale],
  );
  return <Plot id="convergence" title="Convergence (best cost per generation)" options={options} data={data} />;
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

/** The job page. */
export function JobPage({ ticket }: { readonly ticket: string; readonly session: Session }) {
  const [job, setJob] = useState<JobStatus | undefined>(undefined);
  const [missing, setMissing] = useState<string | undefined>(undefined);
  const [stats, setStats] = useState<JobStats | null | undefined>(undefined);
  const [samples, setSamples] = useState<[number, number][]>([]);
  const [generations, setGenerations] = useState<[number, number][]>([]);
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<string | undefined>(undefined);
  /** Bumped when the tables should reload (a state change, an action). */
  const [version, setVersion] = useState(0);

  const load = useCallback(() => {
    api.job(ticket).then(
      (j) => {
        setJob(j);
        setMissing(undefined);
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
      if (stats === null) return;
      api.stats(ticket).then(setStats, (err: unknown) => {
        // The manager lacks the proposed stats route: the page plots the live rate instead.
        if (err instanceof ApiError && (err.status === 404 || err.status === 405)) setStats(null);
      });
    },
    STATS_MS,
    [ticket, stats === null],
  );

  const optimize = job?.kind === 'optimize';
  // Map jobs start their stream at the job's last event (only what happens from now on); an
  // optimisation replays from the start to draw its convergence from every `generation` event.
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
      const c = bestCostOf(g.result);
      if (c !== undefined)
        setGenerations((list) => [...list.filter(([n]) => n !== g.generation), [g.generation, c] as [number, number]].sort((a, b) => a[0] - b[0]));
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
  const c = job.counts;
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
      <section class="cards" aria-label="Tasks per state">
        {(['pending', 'running', 'done', 'failed'] as const).map((s) => (
          <div class={`card task-${s}`} key={s} data-testid={`count-${s}`}>
            <div class="card-n">{count(c[s])}</div>
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
      <Progress counts={c} total={job.total} />
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
        {optimize ? (
          <div>
            <h2>Convergence</h2>
            <ConvergencePlot points={generations} />
          </div>
        ) : null}
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
        <Failures ticket={job.ticket} failed={c.failed} version={version} />
      </section>
      <section>
        <h2>Tasks</h2>
        <Tasks ticket={job.ticket} total={job.total} version={version} />
      </section>
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
            <tr>
              <th>inputs</th>
              <td class="mono">{count(job.total)}</td>
            </tr>
          </tbody>
        </table>
      </section>
    </main>
  );
}
