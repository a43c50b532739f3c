/** Formatting for people: counts, rates, durations, times. */

const int = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const one = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

/** 1234567 → "1,234,567". */
export function count(n: number): string {
  return int.format(n);
}

/** Tasks per second, or "—" when unknown. */
export function rate(r: number | null | undefined): string {
  if (r === null || r === undefined || !Number.isFinite(r)) return '—';
  return r >= 100 ? `${int.format(r)}/s` : `${one.format(r)}/s`;
}

/** Seconds → "1h 02m", "3m 05s", "12.5s", or "—" when unknown. */
export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '—';
  if (seconds < 60) return `${one.format(seconds)}s`;
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0 ? `${h}h ${String(m).padStart(2, '0')}m` : `${m}m ${String(sec).padStart(2, '0')}s`;
}

/** Milliseconds → "12.3 ms" / "1.2 s". */
export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  return v >= 1000 ? `${one.format(v / 1000)} s` : `${one.format(v)} ms`;
}

/** An ISO time → local date and time, or "—". */
export function time(iso: string | null | undefined): string {
  if (iso === null || iso === undefined) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** Done (and failed) over total, as a fraction in [0, 1]. */
export function fraction(done: number, total: number): number {
  return total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
}

/** A JSON value as short text for a table cell (at most `max` characters). */
export function jsonText(v: unknown, max = 120): string {
  let s: string;
  try {
    s = typeof v === 'string' ? v : (JSON.stringify(v) ?? String(v));
  } catch {
    s = String(v);
  }
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** The first 8 characters of a ticket (a UUID). */
export function shortTicket(ticket: string): string {
  return ticket.slice(0, 8);
}

/** A cost → 6 significant digits ("0.0123457", "1.23457e-9"), or "—" when unknown. */
export function cost(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  return a === 0 || (a >= 1e-4 && a < 1e7) ? String(Number(v.toPrecision(6))) : v.toExponential(5).replace(/\.?0+e/, 'e');
}
