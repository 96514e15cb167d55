/**
 * Text of the configuration files of a local cluster: postgresql.conf additions shared by every
 * node, per-node settings in postgresql.auto.conf, pg_hba.conf, the libpq passfile and conninfo
 * strings. Pure functions, no I/O.
 */

export type SettingValue = string | number | boolean;
export type Settings = Record<string, SettingValue>;

/**
 * Appended to the primary's postgresql.conf; pg_basebackup copies that file, so every node gets
 * these. Tuned for throwaway test clusters: fast, but full_page_writes stays on (torn pages would
 * make crash tests meaningless).
 */
export function commonSettings(extra: Record<string, string | number> = {}): Settings {
  return {
    listen_addresses: '127.0.0.1',
    password_encryption: 'scram-sha-256',
    max_connections: 200,
    shared_buffers: '32MB',
    fsync: false,
    full_page_writes: true,
    wal_level: 'replica',
    max_wal_senders: 10,
    max_replication_slots: 10,
    wal_keep_size: '256MB',
    // pg_rewind (used to rejoin a former primary) needs hint-bit changes in the WAL.
    wal_log_hints: true,
    hot_standby: true,
    hot_standby_feedback: true,
    recovery_target_timeline: 'latest',
    // A standby whose primary restarts reconnects within 0.5 s instead of the default 5 s; until
    // it does, every commit on the primary waits for the synchronous standby.
    wal_retrieve_retry_interval: '500ms',
    // Fresh replay positions in pg_stat_replication.
    wal_receiver_status_interval: '1s',
    // A fast shutdown of a primary waits for each connected standby to confirm the final WAL; a
    // frozen (SIGSTOP) standby would hold it for the default 60 s.
    wal_sender_timeout: '10s',
    wal_receiver_timeout: '10s',
    // Dynamic shared memory as files in the data directory rather than in /dev/shm: a node that
    // is killed -9 and then deleted (a test's usual end) leaks nothing outside its directory.
    dynamic_shared_memory_type: 'mmap',
    logging_collector: false,
    log_line_prefix: '%m [%p] %q%u@%d ',
    ...extra,
  };
}

/** Password auth over TCP (as RDS does), trust over the node's own Unix socket. */
export function hbaConf(): string {
  return [
    '# TYPE  DATABASE     USER  ADDRESS        METHOD',
    'local   all          all                  trust',
    'local   replication  all                  trust',
    'host    all          all   127.0.0.1/32   scram-sha-256',
    'host    replication  all   127.0.0.1/32   scram-sha-256',
    '',
  ].join('\n');
}

export function formatValue(value: SettingValue): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  if (typeof value === 'number') return String(value);
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

export function formatSettings(settings: Settings): string {
  return Object.entries(settings)
    .map(([name, value]) => `${name} = ${formatValue(value)}\n`)
    .join('');
}

/**
 * Replaces the given settings in a configuration file's text (first occurrence kept in place,
 * later duplicates dropped) and appends the ones not present. Comments and other lines stay.
 */
export function mergeSettings(text: string, settings: Settings): string {
  const pending = new Map(Object.entries(settings).map(([name, value]) => [name.toLowerCase(), { name, value }]));
  const written = new Set<string>();
  const lines: string[] = [];
  for (const line of text.split('\n')) {
    const name = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=|\s)/.exec(line)?.[1]?.toLowerCase();
    const replacement = name === undefined ? undefined : pending.get(name);
    if (name === undefined || replacement === undefined) {
      lines.push(line);
    } else if (!written.has(name)) {
      lines.push(`${replacement.name} = ${formatValue(replacement.value)}`);
      written.add(name);
    }
  }
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const missing: Settings = {};
  for (const [key, setting] of pending) if (!written.has(key)) missing[setting.name] = setting.value;
  return lines.join('\n') + '\n' + formatSettings(missing);
}

/** A libpq key/value connection string; values quoted so that spaces and quotes are safe. */
export function conninfo(params: Record<string, string | number>): string {
  return Object.entries(params)
    .map(([key, value]) => `${key}='${String(value).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
    .join(' ');
}

export interface PassfileEntry {
  host: string;
  user: string;
  password: string;
}

/** A libpq passfile (hostname:port:database:username:password), any port and database. */
export function passfile(entries: readonly PassfileEntry[]): string {
  const escape = (field: string) => field.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  return entries.map((e) => `${escape(e.host)}:*:*:${escape(e.user)}:${escape(e.password)}\n`).join('');
}

/**
 * The primary's synchronous_standby_names for the given standbys: the first connected one in the
 * list is synchronous (RDS Multi-AZ has exactly one); empty turns synchronous replication off.
 */
export function synchronousStandbyNames(standbyNames: readonly string[]): string {
  return standbyNames.length === 0 ? '' : `FIRST 1 (${standbyNames.join(', ')})`;
}
