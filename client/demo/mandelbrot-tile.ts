/**
 * The demo's stage: renders one tile of the Mandelbrot set to RGB pixels. A module stage: the
 * client bundles this file with esbuild and ships it to the workers.
 */

/** One tile of the image. */
export interface Tile {
  /** Left and top pixel of the tile in the image. */
  x: number;
  y: number;
  /** Tile size in pixels. */
  w: number;
  h: number;
  /** Whole image size in pixels. */
  width: number;
  height: number;
  /** Centre of the view in the complex plane, and the width of the view. */
  cx: number;
  cy: number;
  span: number;
  maxIter: number;
  /** Samples per pixel side (antialiasing): 2 → 4 samples per pixel. */
  samples: number;
}

/** A rendered tile: RGB bytes, row-major. */
export interface RenderedTile {
  x: number;
  y: number;
  w: number;
  h: number;
  rgb: Uint8Array;
}

function palette(t: number): [number, number, number] {
  // A smooth cyclic palette (cosine gradient).
  const r = 0.5 + 0.5 * Math.cos(6.28318 * (t + 0.0));
  const g = 0.5 + 0.5 * Math.cos(6.28318 * (t + 0.1));
  const b = 0.5 + 0.5 * Math.cos(6.28318 * (t + 0.2));
  return [Math.round(r * 255), Math.round(g * 255), Math.round(b * 255)];
}

function escape(cr: number, ci: number, maxIter: number): number {
  let zr = 0;
  let zi = 0;
  let zr2 = 0;
  let zi2 = 0;
  let n = 0;
  while (n < maxIter && zr2 + zi2 <= 256) {
    zi = 2 * zr * zi + ci;
    zr = zr2 - zi2 + cr;
    zr2 = zr * zr;
    zi2 = zi * zi;
    n++;
  }
  // Smooth iteration count, or -1 inside the set.
  return n >= maxIter ? -1 : n + 1 - Math.log2(Math.log2(zr2 + zi2) / 2);
}

export default function renderTile(tile: Tile): RenderedTile {
  const { x, y, w, h, width, height, cx, cy, span, maxIter } = tile;
  const samples = Math.max(1, Math.floor(tile.samples));
  const rgb = new Uint8Array(w * h * 3);
  const scale = span / width;
  const x0 = cx - (width / 2) * scale;
  const y0 = cy - (height / 2) * scale;
  const sub = scale / samples;
  let o = 0;
  for (let py = y; py < y + h; py++) {
    for (let px = x; px < x + w; px++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let sy = 0; sy < samples; sy++) {
        for (let sx = 0; sx < samples; sx++) {
          const n = escape(x0 + px * scale + sx * sub, y0 + py * scale + sy * sub, maxIter);
          if (n < 0) continue; // inside: black
          const c = palette((n / 64) % 1);
          r += c[0];
          g += c[1];
          b += c[2];
        }
      }
      const k = samples * samples;
      rgb[o++] = Math.round(r / k);
      rgb[o++] = Math.round(g / k);
      rgb[o++] = Math.round(b / k);
    }
  }
  return { x, y, w, h, rgb };
}
