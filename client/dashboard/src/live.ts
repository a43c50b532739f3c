/**
 * Live data: the job's Server-Sent Events (docs/API.md), and a light periodic refresh that pauses
 * while the page is hidden. EventSource reconnects by itself and sends `Last-Event-ID`, so a
 * dropped stream resumes without repeats.
 */
import { useEffect, useRef } from 'preact/hooks';
import { api } from './api.js';

/** Handlers of a job's events, by type; `data` is the parsed JSON. */
export type EventHandlers = Partial<Record<'progress' | 'state' | 'failure' | 'generation', (data: unknown, seq: number) => void>>;

/**
 * Subscribes to the job's events while `enabled`, starting after `after` when given. The handlers
 * may change between renders without reopening the stream.
 */
export function useJobEvents(ticket: string | undefined, after: number | undefined, enabled: boolean, handlers: EventHandlers): void {
  const ref = useRef(handlers);
  ref.current = handlers;
  useEffect(() => {
    if (ticket === undefined || !enabled) return undefined;
    const source = new EventSource(api.eventsUrl(ticket, after), { withCredentials: true });
    const listen = (type: keyof EventHandlers) => (e: MessageEvent<string>) => {
      let data: unknown;
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      ref.current[type]?.(data, Number(e.lastEventId));
    };
    const types: (keyof EventHandlers)[] = ['progress', 'state', 'failure', 'generation'];
    const listeners = types.map((t) => [t, listen(t)] as const);
    for (const [t, l] of listeners) source.addEventListener(t, l);
    return () => {
      for (const [t, l] of listeners) source.removeEventListener(t, l);
      source.close();
    };
    // `after` only matters when the stream opens: a later value must not reopen it.
  }, [ticket, enabled]);
}

/** Calls `fn` now and every `everyMs` while the page is visible (and once when it becomes visible again). */
export function useInterval(fn: () => void, everyMs: number, deps: readonly unknown[] = []): void {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    let timer: ReturnType<typeof setInterval> | undefined;
    const start = (): void => {
      if (timer !== undefined) return;
      ref.current();
      timer = setInterval(() => ref.current(), everyMs);
    };
    const stop = (): void => {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    };
    const onVisibility = (): void => (document.hidden ? stop() : start());
    if (!document.hidden) start();
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      stop();
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, [everyMs, ...deps]);
}
