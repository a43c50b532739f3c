/**
 * A worker's page: what `GET /api/v1/workers` says of it, and, where the manager has the proposed
 * `GET /api/v1/workers/{id}`, what it ran, its task times and its losses with their reasons.
 */
import { useState } from 'preact/hooks';
import { ApiError, api, type Session, type Worker, type WorkerDetail } from '../api.js';
import { count, ms, shortTicket, time } from '../format.js';
import { useInterval } from '../live.js';
import { HistogramPlot } from './job.js';

/** The worker page. */
export function WorkerPage({ id }: { readonly id: string; readonly session: Session }) {
  const [worker, setWorker] = useState<Worker | null | undefined>(undefined);
  const [detail, setDetail] = useState<WorkerDetail | null | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  useInterval(
    () => {
      api.workers().then(
        (ws) => {
          setWorker(ws.find((w) => w.id === id) ?? null);
          setError(undefined);
        },
        (err: unknown) => setError((err as Error).message),
      );
      if (detail !== null) {
        api.worker(id).then(setDetail, (err: unknown) => {
          if (err instanceof ApiError && (err.status === 404 || err.status === 405)) setDetail(null);
        });
      }
    },
    5000,
    [id, detail === null],
  );
  const w = detail?.worker ?? worker;
  if (w === undefined) return <main class="page">{error ?? 'Loading…'}</main>;
  if (w === null) {
    return (
      <main class="page">
        <h1>Worker</h1>
        <p class="error" role="alert">
          The manager knows no worker with this id.
        </p>
        <p>
          <a href="/">Back to the overview</a>
        </p>
      </main>
    );
  }
  return (
    <main class="page worker" data-worker={w.id}>
      <h1>
        {w.host.length > 0 ? w.host : w.address} <span class={`badge worker-${w.state}`}>{w.state === 'idle' ? 'free' : w.state}</span>
      </h1>
      <p class="sub mono">
        {w.id} · {w.local ? 'local threads' : w.address}
      </p>
      {w.lost !== undefined ? (
        <p class="error" role="alert">
          {`Lost: ${w.lost}`}
        </p>
      ) : null}
      <section class="cards">
        <div class="card">
          <div class="card-n">{count(w.threads)}</div>
          <div class="card-l">threads</div>
        </div>
        <div class="card">
          <div class="card-n">{count(w.inFlight)}</div>
          <div class="card-l">in flight</div>
        </div>
        <div class="card">
          <div class="card-n">{count(w.completed)}</div>
          <div class="card-l">tasks done</div>
        </div>
        <div class="card">
          <div class="card-n">{ms(w.avgTaskMs)}</div>
          <div class="card-l">mean task</div>
        </div>
      </section>
      <section>
        <h2>Jobs</h2>
        {detail !== undefined && detail !== null ? (
          detail.jobs.length === 0 ? (
            <p class="empty">Nothing of yours ran here.</p>
          ) : (
            <table class="grid" id="worker-jobs">
              <thead>
                <tr>
                  <th>Job</th>
                  <th class="num">Done</th>
                  <th class="num">Failed</th>
                  <th class="num">Mean task</th>
                </tr>
              </thead>
              <tbody>
                {detail.jobs.map((j) => (
                  <tr key={j.ticket}>
                    <td>
                      <a href={`/jobs/${encodeURIComponent(j.ticket)}`}>{j.name.length > 0 ? j.name : shortTicket(j.ticket)}</a>
                    </td>
                    <td class="num">{count(j.done)}</td>
                    <td class="num">{count(j.failed)}</td>
                    <td class="num">{ms(j.avgTaskMs)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        ) : (
          <p>{w.jobs.length === 0 ? 'Running nothing now.' : `Running ${w.jobs.length} job(s) now.`}</p>
        )}
      </section>
      {detail !== undefined && detail !== null ? (
        <>
          <section>
            <h2>Task times</h2>
            <HistogramPlot id="worker-durations" title="Task durations on this worker" histogram={detail.durations} />
          </section>
          <section>
            <h2>Losses</h2>
            {detail.losses.length === 0 ? (
              <p class="empty">Never lost.</p>
            ) : (
              <table class="grid" id="losses">
                <thead>
                  <tr>
                    <th>When</th>
                    <th>Reason</th>
                    <th class="num">Tasks requeued</th>
                  </tr>
                </thead>
                <tbody>
                  {detail.losses.map((l, i) => (
                    <tr key={i}>
                      <td>{time(l.at)}</td>
                      <td>{l.reason}</td>
                      <td class="num">{count(l.requeued)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </section>
        </>
      ) : detail === null ? (
        <p class="sub">This manager does not report a worker's history (the proposed GET /api/v1/workers/&#123;id&#125;).</p>
      ) : null}
    </main>
  );
}
