/**
 * Build of the dashboard: `npm run build` runs `vite build -c client/dashboard/vite.config.ts`,
 * which writes dist/dashboard/ (index.html and hashed assets), the folder `taskfarm serve` serves at `/`.
 * Everything the page needs is in that folder: no CDN, no web fonts.
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root: here,
  base: '/',
  logLevel: 'warn',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: fileURLToPath(new URL('../../dist/dashboard', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    reportCompressedSize: false,
    assetsInlineLimit: 0,
  },
});
