/**
 * Words for "why no worker is computing": one line per refused worker, and the reason a run gives
 * when it falls back to local threads or fails with NoWorkersError. Pure functions.
 */
import { type FarmError, WorkerBusyError, WorkerLostError } from '../errors.js';

/** Error codes of the socket layer found anywhere in an error's message or `cause` chain. */
function socketCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 6; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
    const m = /\b(ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET)\b/.exec(String((e as Error).message ?? ''));
    if (m !== null) return m[1];
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Why the worker at `target` could not be recruited, in one line that starts with (or contains)
 * the target: connection refused, unreachable, wrong farm key, busy, another protocol, ...
 * `insecure`: this client runs without a key (plaintext), so a TLS daemon looks unreachable.
 */
export function refusalReason(target: string, err: FarmError, insecure = false): string {
  if (insecure && err instanceof WorkerLostError && /^describe: unreachable/.test(err.reason)) {
    return (
      `${target}: no plaintext connection (this client runs insecure; is the daemon there run with --insecure? One that requires ` +
      'the farm key and TLS cannot be used without the key)'
    );
  }
  switch (socketCode(err)) {
    case 'ECONNREFUSED':
      return `${target}: connection refused (is \`taskfarm worker\` running there, on that port?)`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `${target}: host unreachable`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `${target}: unknown host name`;
    case 'ETIMEDOUT':
      return `${target}: no answer (timed out)`;
    default:
  }
  const text = err instanceof WorkerLostError ? err.reason : err.message;
  const busy = err instanceof WorkerBusyError ? 'busy: ' : '';
  return text.includes(target) ? `${busy}${text}` : `${target}: ${busy}${text}`;
}

/** What a run knows when it has had no worker for `waitedMs`. */
export interface NoWorkerFacts {
  readonly waitedMs: number;
  /** How workers were looked for. */
  readonly discovery: 'mdns' | 'peers' | 'custom';
  /** The farm looked for (mDNS). */
  readonly farm: string;
  /** Farms whose adverts mDNS saw (ours included when seen). */
  readonly farmsSeen: readonly string[];
  /** The last refusal of each worker tried, by target. */
  readonly refusals: ReadonlyMap<string, string>;
  /** Discovery's warnings (skipped adverts), most recent last. */
  readonly warnings: readonly string[];
  /** True when workers had been computing and every one of them was lost. */
  readonly allLost: boolean;
}

/**
 * Why no worker is computing, e.g. `no worker of farm "physcis" answered; farms seen: physics`, or
 * `worker w1 at 10.0.0.5:7000 could not prove the farm key: …`. One line, no trailing period.
 */
export function noWorkerReason(f: NoWorkerFacts): string {
  const head = f.allLost ? `every worker was lost and none came back within ${f.waitedMs} ms` : '';
  const refused = [...f.refusals.values()];
  let why: string;
  if (refused.length > 0) {
    why = refused.join('; ');
  } else if (f.discovery === 'mdns') {
    const others = f.farmsSeen.filter((x) => x !== f.farm);
    why =
      others.length > 0
        ? `no worker of farm "${f.farm}" answered; farms seen: ${others.join(', ')}`
        : f.farmsSeen.includes(f.farm)
          ? `no worker of farm "${f.farm}" could be used within ${f.waitedMs} ms`
          : `no worker of farm "${f.farm}" answered within ${f.waitedMs} ms (no taskfarm advert seen: are daemons running on this ` +
            'network segment, with UDP port 5353 open? Routed networks: give peers)';
  } else {
    why = `no worker answered within ${f.waitedMs} ms`;
  }
  const skipped = f.warnings.length > 0 ? `; skipped: ${[...new Set(f.warnings)].slice(-3).join('; ')}` : '';
  return head.length > 0 ? `${head} (${why}${skipped})` : `${why}${skipped}`;
}
