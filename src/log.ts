/**
 * Logging. The library is silent by default: pass a {@link Logger} in the options, or set
 * `TASKFARM_TRACE=farm,worker,discovery` (or `all`) to trace subsystems on stderr.
 */

/** Structured fields attached to a log line. */
export type LogFields = Readonly<Record<string, unknown>>;

/** A pluggable logger. Every method must be cheap and must not throw. */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

const noop = (): void => {};

/** A logger that drops everything (the default). */
export const silentLogger: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });

function formatFields(fields: LogFields | undefined): string {
  if (fields === undefined) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    parts.push(`${k}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`);
  }
  return parts.length === 0 ? '' : ' ' + parts.join(' ');
}

/** Level names in increasing severity. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const levels: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/**
 * A logger that writes one line per entry to a stream (stderr by default): `time level [name] message k=v`.
 * @param name - component name shown in each line
 * @param minLevel - entries below this level are dropped
 */
export function streamLogger(name: string, minLevel: LogLevel = 'info', write: (line: string) => void = (line) => process.stderr.write(line)): Logger {
  const min = levels[minLevel];
  const at =
    (level: LogLevel) =>
    (message: string, fields?: LogFields): void => {
      if (levels[level] < min) return;
      write(`${new Date().toISOString()} ${level.padEnd(5)} [${name}] ${message}${formatFields(fields)}\n`);
    };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

function traced(): Set<string> {
  const raw = process.env['TASKFARM_TRACE'] ?? '';
  return new Set(
    raw
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0),
  );
}

/**
 * The logger a component should use: the user's logger, or a stderr tracer when
 * `TASKFARM_TRACE` names the component (or `all`).
 */
export function componentLogger(component: string, logger: Logger | undefined): Logger {
  if (logger !== undefined && logger !== silentLogger) return logger;
  const t = traced();
  if (t.has('all') || t.has(component)) return streamLogger(component, 'debug');
  return silentLogger;
}
