/**
 * The dashboard's build (`npm run build` → dist/dashboard/): it exists, its JavaScript is within
 * issue 12's budget (printed), it loads nothing from the web, and its sources never turn text into
 * HTML.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';

const DIST = new URL('../../../dist/dashboard/', import.meta.url).pathname;
const SRC = new URL('../../../client/dashboard/src/', import.meta.url).pathname;

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));
}

describe('dashboard build', () => {
  it('is built by npm run build, with the page JavaScript ≤ 200 KB gzipped', () => {
    const assets = files(DIST);
    expect(assets.some((f) => f.endsWith('index.html'))).toBe(true);
    const js = assets.filter((f) => f.endsWith('.js'));
    expect(js.length).toBeGreaterThan(0);
    const gz = js.reduce((n, f) => n + gzipSync(readFileSync(f), { level: 9 }).length, 0);
    process.stdout.write(`dashboard: page JavaScript ${(gz / 1024).toFixed(1)} KB gzipped (budget 200 KB)\n`);
    expect(gz).toBeLessThanOrEqual(200 * 1024);
  });

  it('loads nothing from the web: every script and stylesheet is the manager’s own', () => {
    const html = readFileSync(join(DIST, 'index.html'), 'utf8');
    for (const m of html.matchAll(/(?:src|href)="([^"]+)"/g)) expect(m[1]).toMatch(/^\/assets\//);
    for (const f of files(DIST).filter((x) => x.endsWith('.css'))) {
      const css = readFileSync(f, 'utf8');
      expect(css).not.toMatch(/@import|url\(\s*['"]?(https?:)?\/\//);
    }
    // In the JavaScript, the only absolute URLs are XML namespace names and a link in an error text.
    for (const f of files(DIST).filter((x) => x.endsWith('.js'))) {
      const urls = [...readFileSync(f, 'utf8').matchAll(/https?:\/\/[^\s"'`)]+/g)].map((m) => m[0]);
      for (const u of urls) expect(u).toMatch(/^http:\/\/www\.w3\.org\/|^https:\/\/github\.com\/preactjs\//);
    }
  });

  it('never renders text as HTML (no innerHTML, no dangerouslySetInnerHTML, no document.write)', () => {
    for (const f of files(SRC)) {
      const text = readFileSync(f, 'utf8');
      expect(text, f).not.toMatch(/innerHTML|outerHTML|dangerouslySetInnerHTML|insertAdjacentHTML|document\.write/);
    }
  });
});
