/**
 * The dashboard in a real headless Chromium (Debian's, driven by playwright-core), against the
 * manager of test/browser/target.ts (the fake API until `taskfarm serve` is merged; then a real
 * manager with real daemons and a real store: TASKFARM_DASHBOARD_TARGET=real). The tests use the
 * page as a person does and check what they see against what the API says.
 */
import { mkdirSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { HAVE_CHROMIUM, openBrowser, signIn, type TestBrowser } from './browser.js';
import { DEFAULT_TARGET, startTarget, type Target } from './target.js';

const KIND = process.env['TASKFARM_DASHBOARD_TARGET'] ?? DEFAULT_TARGET;
const SCREENSHOTS = new URL('../../docs/screenshots/', import.meta.url).pathname;

if (!HAVE_CHROMIUM) {
  process.stderr.write(
    '\n*** test/browser: /usr/bin/chromium is missing: the browser tests are SKIPPED (apt-get install -y chromium; .ci/run does it) ***\n\n',
  );
}

/** The bits of the browser's globals the page functions below use (this file is type-checked without the DOM lib). */
interface PageGlobals {
  document: { cookie: string };
  localStorage: Record<string, string>;
  sessionStorage: Record<string, string>;
  marker?: number;
}

/** Polls `check` until it returns true (or a value), failing after `ms`. */
async function until<T>(what: string, check: () => Promise<T | false | undefined> | T | false | undefined, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== false && v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `n` tasks of `ms` each, as inputs of the test stage. */
const slow = (n: number, ms: number): { i: number; ms: number }[] => Array.from({ length: n }, (_, i) => ({ i, ms }));

describe.skipIf(!HAVE_CHROMIUM)(`dashboard in Chromium (${KIND} manager)`, () => {
  let target: Target;
  let b: TestBrowser;

  beforeAll(async () => {
    target = await startTarget();
  }, 120_000);
  afterAll(async () => {
    await target?.close();
  });
  beforeEach(async () => {
    b = await openBrowser();
  });
  afterEach(async () => {
    const problems = b.problems.filter((p) => !/Failed to load resource: the server responded with a status of (404|401)/.test(p));
    await b.close();
    expect(problems).toEqual([]);
  });

  it('signs in with a token into an HttpOnly SameSite=Strict session, survives a reload, and signs out', async () => {
    const { page } = b;
    await page.goto(`${target.url}/`);
    await page.fill('#token', 'tf_not_a_token');
    await page.click('button[type=submit]');
    await expect.poll(() => page.textContent('[role=alert]')).toMatch(/unknown|revoked|token/i);

    await signIn(page, target.url, target.tokens.alice);
    expect(await page.textContent('[data-testid=who]')).toBe('alice');
    const cookies = await b.context.cookies(target.url);
    const session = cookies.find((c) => c.name === 'taskfarm_session');
    expect(session).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
    expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).document.cookie)).not.toContain('taskfarm_session');
    // The page keeps no token anywhere a script could read it.
    expect(
      await page.evaluate(
        () =>
          JSON.stringify({ ...(globalThis as unknown as PageGlobals).localStorage }) +
          JSON.stringify({ ...(globalThis as unknown as PageGlobals).sessionStorage }),
      ),
    ).not.toContain(target.tokens.alice);

    await page.reload();
    await page.waitForSelector('[data-testid=who]');
    await page.click('text=Sign out');
    await page.waitForSelector('#token');
    await page.reload();
    await page.waitForSelector('#token');
  });

  it('shows the workers and jobs the API reports, with the same counts', async () => {
    const alice = target.as('alice');
    const tickets = [
      await alice.submit({ name: 'overview-held', inputs: slow(5, 1), hold: true }),
      await alice.submit({ name: 'overview-quick', inputs: [1, 2, 3] }),
      await alice.submit({ name: 'overview-slow', inputs: slow(400, 25) }),
    ];
    await until('the quick job to finish', async () => (await alice.status(tickets[1]!)).state === 'done');
    const { page } = b;
    await signIn(page, target.url, target.tokens.alice);
    await page.waitForSelector('#jobs tbody tr');
    await page.waitForSelector('#workers tbody tr');

    const apiJobs = await alice.jobs();
    const apiWorkers = await alice.workers();
    const shownJobs = await page.$$eval('#jobs tbody tr', (rows) => rows.map((r) => r.getAttribute('data-ticket')));
    expect(new Set(shownJobs)).toEqual(new Set(apiJobs.map((j) => j.ticket)));
    for (const t of tickets) expect(shownJobs).toContain(t);
    const shownWorkers = await page.$$eval('#workers tbody tr', (rows) => rows.map((r) => r.getAttribute('data-worker')));
    expect(new Set(shownWorkers)).toEqual(new Set(apiWorkers.map((w) => w.id)));
    expect(await page.textContent('[data-testid=workers-summary]')).toContain(`${apiWorkers.length} (`);
    expect(await page.textContent('[data-testid=jobs-summary]')).toMatch(new RegExp(`^${apiJobs.length} \\(`));
    // Each row says what the API says: name, owner, state, done of total.
    const held = (await alice.status(tickets[0]!)) as { state: string; total: number };
    const row = page.locator(`#jobs tr[data-ticket="${tickets[0]}"]`);
    expect(await row.getAttribute('data-state')).toBe(held.state);
    expect(await row.locator('td.name a').textContent()).toBe('overview-held');
    expect(await row.locator('[data-testid=job-counts]').textContent()).toBe(`0 / ${held.total} done`);
    const quick = page.locator(`#jobs tr[data-ticket="${tickets[1]}"]`);
    expect(await quick.getAttribute('data-state')).toBe('done');
    expect(await quick.locator('[data-testid=job-counts]').textContent()).toBe('3 / 3 done');
    await target.as('alice').request('POST', `/api/v1/jobs/${tickets[2]}/cancel`);
  });

  it('moves a running job’s progress live, without a reload', async () => {
    const alice = target.as('alice');
    const ticket = await alice.submit({ name: 'live-progress', inputs: slow(300, 40) });
    const { page } = b;
    await signIn(page, target.url, target.tokens.alice);
    const bar = page.locator(`#jobs tr[data-ticket="${ticket}"] [role=progressbar]`);
    await bar.waitFor();
    await page.evaluate(() => ((globalThis as unknown as PageGlobals).marker = 42));
    const first = Number(await bar.getAttribute('aria-valuenow'));
    const later = await until('the progress bar to move', async () => {
      const v = Number(await bar.getAttribute('aria-valuenow'));
      return v > first && v >= 5 ? v : false;
    });
    expect(later).toBeGreaterThan(first);
    // Same document: nothing reloaded the page.
    expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).marker)).toBe(42);
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: `${SCREENSHOTS}overview.png`, fullPage: true });
    await alice.request('POST', `/api/v1/jobs/${ticket}/cancel`);
  });

  it('renders the job page’s plots: throughput and task durations', async () => {
    const alice = target.as('alice');
    const inputs = [...slow(400, 5), ...slow(200, 30), ...slow(60, 80), { i: 999, fail: 'bad <b>input</b> 999' }];
    const ticket = await alice.submit({ name: 'plots', inputs, errors: 'collect' });
    await until('some tasks to finish', async () => (await alice.status(ticket)).counts.done >= 100);
    const { page } = b;
    await signIn(page, target.url, target.tokens.alice);
    await page.goto(`${target.url}/jobs/${ticket}`);
    await page.waitForSelector('#throughput canvas');
    await page.waitForSelector('#durations canvas');
    await until('the histogram to have data', async () => Number(await page.getAttribute('#durations', 'data-points')) > 0);
    await until('the throughput plot to have data', async () => Number(await page.getAttribute('#throughput', 'data-points')) > 0);
    // Something is drawn on each canvas (not a blank box).
    for (const id of ['#throughput', '#durations']) {
      const inked = await page.$eval(`${id} canvas`, (c) => {
        const canvas = c as unknown as {
          width: number;
          height: number;
          getContext(k: '2d'): { getImageData(x: number, y: number, w: number, h: number): { data: ArrayLike<number> } };
        };
        const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i]! > 0) n++;
        return n;
      });
      expect(inked).toBeGreaterThan(100);
    }
    await until('the job to end', async () => ['done', 'failed'].includes((await alice.status(ticket)).state), 60_000);
    await page.reload();
    await page.waitForSelector('#failures tbody tr');
    // The failure is listed with its index and message, as text.
    expect(await page.textContent('#failures tr[data-index="660"]')).toContain('bad <b>input</b> 999');
    expect(await page.$$('#failures b')).toHaveLength(0);
    await page.click('#failures summary');
    expect(await page.textContent('#failures pre.stack')).toMatch(/bad <b>input<\/b> 999/);
    expect(await page.textContent('[data-testid=count-done]')).toContain('660');
    expect(await page.textContent('[data-testid=count-failed]')).toContain('1');
    await page.waitForSelector('#options');
    expect(await page.textContent('#options')).toContain('collect');
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: `${SCREENSHOTS}job.png`, fullPage: true });
  });

  it('cancels a job with a click on Cancel (the API then says cancelled)', async () => {
    const alice = target.as('alice');
    const ticket = await alice.submit({ name: 'to-cancel', inputs: slow(500, 50) });
    await until('the job to run', async () => (await alice.status(ticket)).state === 'running');
    const { page } = b;
    await signIn(page, target.url, target.tokens.alice);
    await page.goto(`${target.url}/jobs/${ticket}`);
    await page.click('#action-cancel');
    expect(b.dialogs.some((d) => d.startsWith('confirm'))).toBe(true);
    await until('the API to say cancelled', async () => (await alice.status(ticket)).state === 'cancelled');
    await page.waitForSelector('main.job[data-state=cancelled]');
    expect(await page.isVisible('#action-cancel')).toBe(false);
    expect(await page.isVisible('#action-resubmit')).toBe(true);
  });

  it("neither lists nor opens another user's job", async () => {
    const bobTicket = await target.as('bob').submit({ name: 'bobs-secret-job', inputs: [1, 2], hold: true });
    const { page } = b;
    await signIn(page, target.url, target.tokens.alice);
    await page.waitForSelector('#jobs tbody tr, .empty');
    expect(await page.content()).not.toContain('bobs-secret-job');
    expect(await page.$(`[data-ticket="${bobTicket}"]`)).toBeNull();
    await page.goto(`${target.url}/jobs/${bobTicket}`);
    await expect.poll(() => page.textContent('[role=alert]')).toMatch(/No such job/);
    expect(await page.content()).not.toContain('bobs-secret-job');
    expect((await target.as('alice').request('GET', `/api/v1/jobs/${bobTicket}`)).status).toBe(404);
    expect((await target.as('alice').request('POST', `/api/v1/jobs/${bobTicket}/cancel`)).status).toBe(404);
    // An admin sees it when asking for every user's jobs.
    await page.click('text=Sign out');
    await signIn(page, target.url, target.tokens.admin);
    await page.check('.toggle input');
    await page.waitForSelector(`#jobs tr[data-ticket="${bobTicket}"]`);
  });

  it('shows a job named <img src=x onerror=alert(1)> as text', async () => {
    const name = '<img src=x onerror=alert(1)>';
    const ticket = await target.as('alice').submit({ name, inputs: [{ i: 1, fail: '<script>alert(2)</script>' }], errors: 'collect' });
    await until('the job to end', async () => ['done', 'failed'].includes((await target.as('alice').status(ticket)).state));
    const { page } = b;
    await signIn(page, target.url, target.tokens.alice);
    const link = page.locator(`#jobs tr[data-ticket="${ticket}"] td.name a`);
    await link.waitFor();
    expect(await link.textContent()).toBe(name);
    expect(await page.$$('#jobs img')).toHaveLength(0);
    await link.click();
    await page.waitForSelector('#job-name');
    expect(await page.textContent('#job-name')).toBe(name);
    await page.waitForSelector('#failures tbody tr');
    expect(await page.textContent('#failures tbody')).toContain('<script>alert(2)</script>');
    expect(await page.$$('main img, main script')).toHaveLength(0);
    expect(b.dialogs.filter((d) => d.startsWith('alert'))).toEqual([]);
  });

  it('pages through a job of 1,000,000 tasks (keyset pages, never every task)', async () => {
    const ticket = await target.as('alice').submit({ name: 'million', count: 1_000_000, hold: true });
    const { page } = b;
    const biggest: number[] = [];
    page.on('response', (r) => {
      const m = /\/tasks\?.*limit=(\d+)/.exec(r.url());
      if (m !== null) biggest.push(Number(m[1]));
    });
    await signIn(page, target.url, target.tokens.alice);
    await page.goto(`${target.url}/jobs/${ticket}`);
    await page.waitForSelector('#tasks tbody tr');
    const indices = async (): Promise<number[]> => page.$$eval('#tasks tbody tr', (rows) => rows.map((r) => Number(r.getAttribute('data-index'))));
    expect(await indices()).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(await page.textContent('[data-testid=count-pending]')).toContain('1,000,000');
    await page.click('#tasks-next');
    await until('the second page', async () => (await indices())[0] === 50);
    expect(await indices()).toEqual(Array.from({ length: 50 }, (_, i) => 50 + i));
    await page.click('#tasks-prev');
    await until('the first page again', async () => (await indices())[0] === 0);
    await page.fill('#task-jump', '999990');
    await page.click('.toolbar button[type=submit]');
    await until('the last page', async () => (await indices())[0] === 999_990);
    expect(await indices()).toEqual(Array.from({ length: 10 }, (_, i) => 999_990 + i));
    expect(await page.isDisabled('#tasks-next')).toBe(true);
    await page.selectOption('#task-state', 'done');
    await until('an empty page of done tasks', async () => (await page.textContent('[data-testid=task-range]')) === 'no tasks on this page');
    expect(Math.max(...biggest)).toBeLessThanOrEqual(1000);
    await target.as('alice').request('DELETE', `/api/v1/jobs/${ticket}`);
  });

  it('shows a worker’s page: threads, tasks done, its task times', async () => {
    const alice = target.as('alice');
    const ticket = await alice.submit({ name: 'for-workers', inputs: slow(40, 5) });
    await until('the job to end', async () => (await alice.status(ticket)).state === 'done');
    const worker = (await alice.workers())[0]!;
    const { page } = b;
    await signIn(page, target.url, target.tokens.alice);
    await page.click(`#workers tr[data-worker="${worker.id}"] a`);
    await page.waitForSelector(`main.worker[data-worker="${worker.id}"]`);
    expect(await page.textContent('main.worker h1')).toContain(worker.host);
    if (KIND === 'fake') {
      // The proposed GET /api/v1/workers/{id}: what it ran and its task times.
      await page.waitForSelector('#worker-jobs');
      await page.waitForSelector('#worker-durations canvas');
    }
  });

  it.skipIf(KIND !== 'fake')('draws an optimisation’s convergence from its generation events', async () => {
    // The fake stands in for issue 13's optimisation jobs (kind "optimize", one `generation` event per population).
    const res = await target.as('alice').request('POST', '/api/v1/jobs', {
      name: 'fit',
      kind: 'optimize',
      params: { population: 10 },
      stages: [{ source: 'export default (x) => x' }],
      inputs: slow(60, 2),
    });
    const ticket = (res.json as { ticket: string }).ticket;
    const { page } = b;
    await signIn(page, target.url, target.tokens.alice);
    await page.goto(`${target.url}/jobs/${ticket}`);
    await page.waitForSelector('#convergence canvas');
    await until('six generations plotted', async () => Number(await page.getAttribute('#convergence', 'data-points')) >= 6);
  });
});
