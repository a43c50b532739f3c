/**
 * Headless Chromium from Debian (`/usr/bin/chromium`) driven by playwright-core: a fresh
 * `--user-data-dir` per browser, no network but the manager's (no background services, no
 * component updates, no QUIC), and a check on close that no process of that browser is left.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

/** Debian's Chromium (`apt-get install -y chromium`; `.ci/run` installs it when missing). */
export const CHROMIUM = '/usr/bin/chromium';

/** True when the browser tests can run here. */
export const HAVE_CHROMIUM = existsSync(CHROMIUM);

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A browser for one test. */
export interface TestBrowser {
  readonly context: BrowserContext;
  readonly page: Page;
  /** Messages of `console.error`, page errors and dialogs (an `alert()` from injected HTML lands here). */
  readonly problems: string[];
  readonly dialogs: string[];
  /** Closes the browser, waits until none of its processes is left (killing stragglers by pid), removes its profile. */
  close(): Promise<void>;
}

/** Pids of processes whose command line mentions `needle` (our unique profile folder). */
function pidsWith(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Launches Chromium with a fresh profile and opens one page. */
export async function openBrowser(): Promise<TestBrowser> {
  const profile = mkdtempSync(join(tmpdir(), 'taskfarm-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 900 },
    timeout: 30_000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);
  const problems: string[] = [];
  const dialogs: string[] = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('dialog', (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    // confirm() of the Cancel button is accepted; an alert() would be recorded (and fail the XSS test).
    void d.accept();
  });
  return {
    context,
    page,
    problems,
    dialogs,
    async close() {
      await context.close();
      const deadline = Date.now() + 10_000;
      let left = pidsWith(profile);
      while (left.length > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        left = pidsWith(profile);
      }
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      rmSync(profile, { recursive: true, force: true });
      if (left.length > 0) throw new Error(`Chromium processes ${left.join(', ')} were still running 10 s after close (killed)`);
    },
  };
}

/** Signs in through the page's form. */
export async function signIn(page: Page, url: string, token: string): Promise<void> {
  await page.goto(`${url}/`);
  await page.fill('#token', token);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=who]');
}
