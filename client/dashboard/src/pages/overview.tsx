/**
 * The overview: the farm's workers and the caller's jobs (everyone's for an admin who asks). The
 * lists are refreshed every few seconds (two light API calls: counters, never tasks); the running
 * jobs' progress moves live from their event streams in between.
 */
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, FINAL_STATES, type JobStatus, type ProgressEvent, type Session, type StateEvent, type Worker } from '../api.js';
import { count, duration, rate, shortTicket } from '../format.js';
import { useInterval, useJobEvents } from '../live.js';
import { Progress, StateBadge } from '../components/progress.js';

/** Lists refresh period, ms. */
const REFRESH_MS = 5000;
/**
 * Event streams the overview keeps open at most. A browser allows 6 HTTP/1.1 connections per
 * origin: the other running jobs move with the periodic refresh.
 */
const MAX_STREAMS = 4;

function JobRow({ job, live }: { readonly job: JobStatus; readonly live: boolean }) {
  const [now, setNow] = useState<JobStatus>(job);
  // A refresh brought a newer status: it replaces what the events said.
  useEffect(() => setNow(job), [job]);
  useJobEvents(job.ticket, job.lastEventSeq, live && !FINAL_STATES.includes(job.state), {
    progress: (d) => {
      const p = d as ProgressEvent;
      // Replayed old progress (a stream opened without `after`) must not move the bar back.
      setNow((j) =>
        p.counts.done + p.counts.failed < j.counts.done + j.counts.failed ? j : { ...j, counts: p.counts, rate: p.rate, etaSeconds: p.etaSeconds },
      );
    },
    state: (d) => {
      const s = d as StateEvent;
      setNow((j) => ({ ...j, state: s.state }));
    },
  });
  const j = now;
  return (
    <tr data-ticket={j.ticket} data-state={j.state}>
      <td class="name">
        <a href={`/jobs/${encodeURIComponent(j.ticket)}`}>{j.name.length > 0 ? j.name : shortTicket(j.ticket)}</a>
        <div class="sub mono">{shortTicket(j.ticket)}</div>
      </td>
      <td>{j.owner}</td>
      <td>
        <StateBadge state={j.state} />
      </td>
      <td class="wide">
        <Progress counts={j.counts} total={j.total} />
        <div
          class="sub"
          data-testid="job-counts"
        >{`${count(j.counts.done)} / ${count(j.total)} done${j.counts.failed > 0 ? `, ${count(j.counts.failed)} failed` : ''}`}</div>
      </td>
      <td class="num">{rate(j.rate)}</td>
      <td class="num">{j.state === 'running' ? duration(j.etaSeconds) : '—'}</td>
    </tr>
  );
}

interface WorkerRate {
  readonly completed: number;
  readonly at: number;
  readonly perSecond: number | null;
}

/** The overview page. */
export function Overview({ session }: { readonly session: Session }) {
  const [all, setAll] = useState(false);
  const [jobs, setJobs] = useState<JobStatus[] | undefined>(undefined);
  const [more, setMore] = useState(false);
  const [workers, setWorkers] = useState<Worker[] | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const rates = useRef(new Map<string, WorkerRate>());

  useInterval(
    () => {
      Promise.all([api.jobs({ all, limit: 100 }), api.workers()]).then(
        ([page, ws]) => {
          const at = performance.now();
          const next = new Map<string, WorkerRate>();
          for (const w of ws) {
            const before = rates.current.get(w.id);
            const dt = before === undefined ? 0 : (at - before.at) / 1000;
            // Measured between two refreshes; before the second one, what its busy threads do at its mean task time.
            const estimate =
              w.state === 'busy' && w.avgTaskMs > 0 ? (Math.min(w.threads, Math.max(1, w.inFlight)) * 1000) / w.avgTaskMs : w.state === 'busy' ? null : 0;
            const perSecond = before === undefined || dt <= 0 ? (before?.perSecond ?? estimate) : Math.max(0, (w.completed - before.completed) / dt);
            next.set(w.id, { completed: w.completed, at, perSecond });
          }
          rates.current = next;
          setJobs(page.jobs);
          setMore(page.next !== null);
          setWorkers(ws);
          setError(undefined);
        },
        (err: unknown) => setError((err as Error).message),
      );
    },
    REFRESH_MS,
    [all],
  );

  const names = useMemo(() => new Map((jobs ?? []).map((j) => [j.ticket, j.name.length > 0 ? j.name : shortTicket(j.ticket)])), [jobs]);
  const streamed = useMemo(
    () =>
      new Set(
        (jobs ?? [])
          .filter((j) => j.state === 'running')
          .slice(0, MAX_STREAMS)
          .map((j) => j.ticket),
      ),
    [jobs],
  );

  const byState = (list: readonly { state: string }[]): string =>
    Object.entries(list.reduce<Record<string, number>>((acc, x) => ((acc[x.state] = (acc[x.state] ?? 0) + 1), acc), {}))
      .map(([s, n]) => `${n} ${s}`)
      .join(', ');

  return (
    <main class="page overview">
      {error !== undefined ? (
        <p class="error" role="alert">
          {`Could not refresh: ${error}`}
        </p>
      ) : null}
      <section aria-labelledby="workers-h">
        <h2 id="workers-h">
          Workers{' '}
          <span class="sub" data-testid="workers-summary">
            {workers === undefined ? '' : `${workers.length} (${byState(workers) || 'none'})`}
          </span>
        </h2>
        {workers === undefined ? (
          <p>Loading…</p>
        ) : workers.length === 0 ? (
          <p class="empty">No worker recruited yet.</p>
        ) : (
          <table class="grid" id="workers">
            <thead>
              <tr>
                <th>Host</th>
                <th class="num">Threads</th>
                <th>State</th>
                <th class="num">Tasks/s</th>
                <th class="num">Done</th>
                <th>Current job</th>
              </tr>
            </thead>
            <tbody>
              {workers.map((w) => (
                <tr key={w.id} data-worker={w.id} data-state={w.state}>
                  <td>
                    <a href={`/workers/${encodeURIComponent(w.id)}`}>{w.host.length > 0 ? w.host : w.address}</a>
                    <div class="sub mono">{w.local ? 'local threads' : w.address}</div>
                  </td>
                  <td class="num">{count(w.threads)}</td>
                  <td>
                    <span class={`badge worker-${w.state}`}>{w.state === 'idle' ? 'free' : w.state}</span>
                    {w.lost !== undefined ? <div class="sub">{w.lost}</div> : null}
                  </td>
                  <td class="num">{rate(rates.current.get(w.id)?.perSecond)}</td>
                  <td class="num">{count(w.completed)}</td>
                  <td>
                    {w.jobs.length === 0
                      ? '—'
                      : w.jobs.map((t, i) => (
                          <span key={t}>
                            {i > 0 ? ', ' : ''}
                            {names.has(t) ? <a href={`/jobs/${encodeURIComponent(t)}`}>{names.get(t)}</a> : <span class="sub">another job</span>}
                          </span>
                        ))}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section aria-labelledby="jobs-h">
        <h2 id="jobs-h">
          {all ? 'All jobs' : 'Your jobs'}{' '}
          <span class="sub" data-testid="jobs-summary">
            {jobs === undefined ? '' : `${jobs.length}${more ? '+' : ''} (${byState(jobs) || 'none'})`}
          </span>
          {session.admin ? (
            <label class="toggle">
              <input type="checkbox" checked={all} onChange={(e) => setAll((e.target as HTMLInputElement).checked)} /> every user's
            </label>
          ) : null}
        </h2>
        {jobs === undefined ? (
          <p>Loading…</p>
        ) : jobs.length === 0 ? (
          <p class="empty">
            No jobs yet. Submit one with <code>taskfarm submit</code>.
          </p>
        ) : (
          <table class="grid" id="jobs">
            <thead>
              <tr>
                <th>Name</th>
                <th>Owner</th>
                <th>State</th>
                <th>Progress</th>
                <th class="num">Rate</th>
                <th class="num">ETA</th>
              </tr>
            </thead>
            <tbody>
              {jobs.map((j) => (
                <JobRow key={j.ticket} job={j} live={streamed.has(j.ticket)} />
              ))}
            </tbody>
          </table>
        )}
        {more ? <p class="sub">The 100 newest are shown; `taskfarm jobs --json` lists them all.</p> : null}
      </section>
    </main>
  );
}
