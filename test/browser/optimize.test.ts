/**
 * An optimisation's job page in a real headless Chromium, against the manager of
 * test/browser/target.ts (a real `taskfarm serve` with two real worker daemons and a SQLite store):
 * an `optimize` job submitted through the API as `taskfarm optimize` submits it, its convergence
 * plotted live from the `generation` events while it runs and from the status's `result.history`
 * on a page opened after it ended, one point per committed generation, with the generation count,
 * best cost and best parameters the API reports.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { until } from '../helpers/daemons.js';
import { HAVE_CHROMIUM, launchBrowser, signIn, type SharedBrowser, type TestBrowser } from './browser.js';
import { startTarget, type Target } from './target.js';

/** The objective: the sphere function, each evaluation taking 30 ms (the run lasts a few seconds, long enough to watch). */
const OBJECTIVE = `export default async (x) => {
  await new Promise((resolve) => setTimeout(resolve, 30));
  return x.reduce((s, v) => s + v * v, 0);
};`;
const GENERATIONS = 30;

interface OptimizeStatus {
  readonly state: string;
  readonly kind: string;
  readonly generation: number | null;
  readonly result: {
    readonly fun: number;
    readonly x: number[];
    readonly names: string[];
    readonly generations: number;
    readonly evaluations: number;
    readonly reason?: string;
    readonly history: { generation: number; fun: number }[];
  } | null;
}

/** What the page shows of the optimisation, read at one instant. */
interface Shown {
  readonly state: string | null;
  readonly points: number;
  readonly canvas: boolean;
  readonly generations: string | null;
  readonly best: string | null;
  readonly evaluations: string | null;
  readonly reason: string | null;
}

/** The bits of the browser's globals the page functions below use (this file is type-checked without the DOM lib). */
interface PageElement {
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
  readonly textContent: string | null;
}
interface PageGlobals {
  document: { querySelector(selector: string): PageElement | null };
  marker?: number;
}

describe.skipIf(!HAVE_CHROMIUM)('an optimisation’s job page in Chromium, on a real taskfarm serve', () => {
  let target: Target;
  let browser: SharedBrowser;
  let b: TestBrowser;

  beforeAll(async () => {
    [target, browser] = await Promise.all([startTarget(), launchBrowser()]);
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await target?.close();
  });
  beforeEach(async () => {
    b = await browser.open();
  });
  afterEach(async () => {
    const problems = b.problems.filter((p) => !/Failed to load resource: the server responded with a status of (404|401)/.test(p));
    await b.close();
    expect(problems).toEqual([]);
  });

  /** Everything read in one evaluation, so that the point count and the summary are of the same render. */
  const shown = (): Promise<Shown> =>
    b.page.evaluate(() => {
      const d = (globalThis as unknown as PageGlobals).document;
      const attr = (sel: string, name: string): string | null => d.querySelector(sel)?.getAttribute(name) ?? null;
      return {
        state: attr('main.job', 'data-state'),
        points: Number(attr('#convergence', 'data-points') ?? -1),
        canvas: d.querySelector('#convergence canvas') !== null,
        generations: attr('[data-testid=opt-generations]', 'data-value'),
        best: attr('[data-testid=opt-best]', 'data-value'),
        evaluations: attr('[data-testid=opt-evaluations]', 'data-value'),
        reason: d.querySelector('[data-testid=opt-reason] .card-n')?.textContent ?? null,
      };
    });

  /** The page states what the finished job's status says, and plots one point per committed generation. */
  const expectFinished = async (status: OptimizeStatus): Promise<void> => {
    const r = status.result!;
    const s = await until('the page to show the finished optimisation', async () => {
      const v = await shown();
      return v.state === 'done' && v.points === r.history.length && v.reason !== null ? v : false;
    });
    expect(s).toEqual({
      state: 'done',
      points: r.generations,
      canvas: true,
      generations: String(r.generations),
      best: String(r.fun),
      evaluations: String(r.evaluations),
      reason: r.reason ?? null,
    });
    expect(await b.page.textContent('[data-testid=convergence-points]')).toBe(`${r.generations} generations plotted`);
    const params = await b.page.$$eval('#best-x tr', (rows) => rows.map((row) => [row.querySelector('th')?.textContent, row.querySelector('td')?.textContent]));
    expect(params).toEqual(r.names.map((n, i) => [n, String(r.x[i])]));
    // An optimisation has no tasks in the store: the page shows no task table nor task counts.
    expect(await b.page.$('#tasks')).toBeNull();
    expect(await b.page.$('[data-testid=count-done]')).toBeNull();
  };

  it('plots the convergence live while the job runs, and from the status’s history when opened later', async () => {
    const alice = target.as('alice');
    const submitted = await alice.request('POST', '/api/v1/jobs', {
      kind: 'optimize',
      name: 'convergence',
      hold: true,
      stages: [{ source: OBJECTIVE }],
      params: {
        space: {
          bounds: [
            [-5, 5],
            [-5, 5],
          ],
          names: ['a', 'b'],
        },
        populationSize: 8,
        seed: 7,
        maxGenerations: GENERATIONS,
      },
      inputs: [],
    });
    expect(submitted.status).toBe(201);
    const ticket = (submitted.json as { ticket: string }).ticket;
    const status = async (): Promise<OptimizeStatus> => {
      const r = await alice.request('GET', `/api/v1/jobs/${ticket}`);
      expect(r.status).toBe(200);
      return r.json as OptimizeStatus;
    };

    const { page } = b;
    await signIn(page, target.url, target.tokens.alice);
    await page.goto(`${target.url}/jobs/${ticket}`);
    await page.waitForSelector('#convergence canvas');
    expect(await shown()).toMatchObject({ state: 'held', points: 0, generations: null });
    await page.evaluate(() => ((globalThis as unknown as PageGlobals).marker = 42));

    // Released: the points come from the `generation` events (the page loads the status only on a
    // state change), so two different counts seen while the page says `running` were drawn live.
    expect((await alice.request('POST', `/api/v1/jobs/${ticket}/release`)).status).toBe(200);
    const first = await until('a first generation plotted while running', async () => {
      const v = await shown();
      return v.state === 'running' && v.points >= 1 ? v : false;
    });
    const later = await until('more generations plotted while running', async () => {
      const v = await shown();
      return v.state === 'running' && v.points > first.points ? v : false;
    });
    // The summary follows the same events: generations committed = points plotted.
    for (const v of [first, later]) expect(v.generations).toBe(String(v.points));
    expect(later.points).toBeLessThan(GENERATIONS);

    const done = await until(
      'the job to finish',
      async () => {
        const s = await status();
        return s.state === 'done' ? s : false;
      },
      30_000,
    );
    expect(done.kind).toBe('optimize');
    expect(done.result?.history.map((h) => h.generation)).toEqual(Array.from({ length: done.result?.generations ?? -1 }, (_, i) => i));
    await expectFinished(done);
    // Same document all along: nothing reloaded the page.
    expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).marker)).toBe(42);

    // Opened again with no event stream at all (answered 204: EventSource stops): the plot is the status's history alone.
    await page.route('**/api/v1/jobs/*/events**', (route) => route.fulfill({ status: 204 }));
    await page.reload();
    await page.waitForSelector('#convergence canvas');
    await expectFinished(done);
  }, 60_000);
});
