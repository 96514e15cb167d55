import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs (one object per line). Nothing that can carry a password or a query
 * parameter is ever passed to a logger: log the user name, node and SQLSTATE, never the SQL
 * text of a client's statement or its bind values. `redact` is a second line of defence.
 */
export function createLogger(options: { level?: string; pretty?: boolean; destination?: NodeJS.WritableStream } = {}): Logger {
  const base = {
    level: options.level ?? 'info',
    base: { name: 'pgrelay' },
    redact: { paths: ['password', '*.password', 'config.users[*].password', 'config.users[*].server_password'], censor: '***' },
  };
  if (options.pretty) {
    return pino(base, {
      write(line: string) {
        const entry = JSON.parse(line) as Record<string, unknown>;
        const { level, time, msg, name: _name, pid: _pid, hostname: _host, ...rest } = entry;
        const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
        (options.destination ?? process.stderr).write(`${new Date(time as number).toISOString().slice(11, 23)} ${pino.levels.labels[level as number] ?? level} ${String(msg ?? '')}${extra}\n`);
      },
    });
  }
  return options.destination ? pino(base, options.destination as never) : pino(base);
}

export const silentLogger: Logger = pino({ level: 'silent' });
