import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Paths pino censors in every log object: a second line of defence. The first is the rule that
 * nothing which can carry a password or a query parameter is ever handed to a logger: log the
 * user name, node, SQLSTATE and pgrelay's own messages, never the SQL text of a client's
 * statement, its bind values, a startup parameter's value or a server's error text about them.
 */
export const REDACTED_PATHS = [
  'password',
  'server_password',
  '*.password',
  '*.server_password',
  'users[*].password',
  'users[*].server_password',
  '*.users[*].password',
  '*.users[*].server_password',
  'params',
  '*.params',
  'parameters',
  '*.parameters',
  'sql',
  '*.sql',
  'query',
  '*.query',
];

export interface LoggerOptions {
  level?: string;
  /** one human-readable line per entry (`HH:MM:SS.mmm level message {fields}`), for the demo and tests */
  pretty?: boolean;
  /** default: stdout for JSON lines, stderr for pretty lines */
  destination?: NodeJS.WritableStream;
}

/**
 * Structured logs: one JSON object per line, with `level` as a word (debug, info, warn, error),
 * `time` in ISO 8601, `name: "pgrelay"` and `msg`; or the same entries as pretty lines.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const base: pino.LoggerOptions = {
    level: options.level ?? 'info',
    base: { name: 'pgrelay' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: REDACTED_PATHS, censor: '***' },
  };
  if (options.pretty) {
    const out = options.destination ?? process.stderr;
    return pino(base, { write: (line: string) => void out.write(prettyLine(line)) });
  }
  return options.destination ? pino(base, options.destination as pino.DestinationStream) : pino(base);
}

/** A JSON log line as `HH:MM:SS.mmm level message {other fields}`. */
export function prettyLine(line: string): string {
  const entry = JSON.parse(line) as Record<string, unknown>;
  const { level, time, msg, name: _name, pid: _pid, hostname: _host, ...rest } = entry;
  const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
  const clock = typeof time === 'string' ? time.slice(11, 23) : new Date(Number(time)).toISOString().slice(11, 23);
  return `${clock} ${String(level).padEnd(5)} ${String(msg ?? '')}${extra}\n`;
}

export const silentLogger: Logger = pino({ level: 'silent' });
