/**
 * A uPlot chart as a component: created once on mount, fed new data with setData, resized with
 * its box. uPlot draws on a canvas; its axis labels are our own fixed strings (never user text).
 */
import { useEffect, useRef } from 'preact/hooks';
import uPlot, { type AlignedData, type Options } from 'uplot';
import 'uplot/dist/uPlot.min.css';

/** Props of {@link Plot}. */
export interface PlotProps {
  /** Test hook and accessible name. */
  readonly id: string;
  readonly title: string;
  /** uPlot options without width/height/title (set here). */
  readonly options: Omit<Options, 'width' | 'height' | 'title'>;
  readonly data: AlignedData;
  /** Height in CSS pixels. @default 220 */
  readonly height?: number;
}

/** A uPlot chart; `data-points` on its box says how many x values it draws (for tests). */
export function Plot({ id, title, options, data, height = 220 }: PlotProps) {
  const box = useRef<HTMLDivElement>(null);
  const chart = useRef<uPlot | null>(null);
  useEffect(() => {
    const el = box.current;
    if (el === null) return undefined;
    const width = Math.max(240, el.clientWidth);
    const u = new uPlot({ ...options, width, height, title }, data, el);
    chart.current = u;
    const observer = new ResizeObserver(() => u.setSize({ width: Math.max(240, el.clientWidth), height }));
    observer.observe(el);
    return () => {
      observer.disconnect();
      u.destroy();
      chart.current = null;
    };
    // The chart is built once; data changes go through setData below.
  }, []);
  useEffect(() => {
    chart.current?.setData(data);
  }, [data]);
  const points = data[0]?.length ?? 0;
  return <div class="plot" id={id} role="img" aria-label={title} data-points={String(points)} ref={box} />;
}

/** Bars for a histogram or per-interval counts. */
export const barsPath: uPlot.Series.PathBuilder = uPlot.paths.bars?.({ size: [0.8, 64] }) ?? uPlot.paths.linear!();
