/**
 * What pgrelay knows about functions without asking the server: which built-ins write (or hold
 * state that exists on one node only), which of those pin the session, and which built-ins are
 * plain reads. Everything else a text calls is a *user function*, routed by its volatility.
 */
import { BUILTIN_READ_FUNCTIONS } from './builtin-functions.js';

/**
 * Built-in functions that must run on the primary, by exact name. Each fails on a hot standby, or
 * changes state that only the primary's connection would carry.
 */
const WRITER_NAMES: ReadonlySet<string> = new Set([
  // sequences: nextval/setval write (currval/lastval read per-backend state: see PINNING_NAMES)
  'nextval', 'setval',
  // transaction ids: assigning one is a write
  'txid_current', 'txid_current_if_assigned', 'pg_current_xact_id', 'pg_current_xact_id_if_assigned',
  // WAL and backups (not available during recovery)
  'pg_switch_wal', 'pg_switch_xlog', 'pg_create_restore_point', 'pg_backup_start', 'pg_backup_stop',
  'pg_start_backup', 'pg_stop_backup', 'pg_log_standby_snapshot', 'pg_logical_emit_message',
  // notifications
  'pg_notify',
  // two-phase state: a hot standby lists no prepared transaction (the view pg_prepared_xacts: analyze.ts)
  'pg_prepared_xact',
  // session state that is not tracked: it would stay on whichever connection ran it
  'set_config',
  // large objects: loread/lowrite (the lo_* family is matched by prefix below)
  'loread', 'lowrite',
  // replication slots and origins
  'pg_drop_replication_slot', 'pg_replication_slot_advance', 'pg_copy_physical_replication_slot',
  'pg_copy_logical_replication_slot', 'pg_sync_replication_slots',
  // server control
  'pg_promote', 'pg_terminate_backend', 'pg_cancel_backend', 'pg_reload_conf', 'pg_rotate_logfile',
  'pg_rotate_logfile_old', 'pg_wal_replay_pause', 'pg_wal_replay_resume',
  // catalog and index maintenance
  'pg_import_system_collations', 'pg_nextoid', 'pg_extension_config_dump', 'pg_stop_making_pinned_objects',
  'brin_summarize_new_values', 'brin_summarize_range', 'brin_desummarize_range', 'gin_clean_pending_list',
  'pg_clear_relation_stats', 'pg_restore_relation_stats', 'pg_clear_attribute_stats', 'pg_restore_attribute_stats',
  // functions that run an SQL text they are given: it may write
  'query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema', 'ts_stat',
  // extensions: dblink, adminpack
  'dblink_exec', 'pg_file_write', 'pg_file_rename', 'pg_file_unlink', 'pg_file_sync',
]);

/** Built-in writers by prefix. */
const WRITER_PREFIXES: readonly string[] = [
  'pg_advisory_', // every advisory lock and unlock, session and transaction level
  'pg_try_advisory_',
  'lo_', // large objects: lo_create, lo_import, lo_unlink, lo_open, lo_put, lo_from_bytea, …
  'pg_current_wal_', // pg_current_wal_lsn, _insert_lsn, _flush_lsn
  'pg_current_xlog_', // their names before PostgreSQL 10
  'pg_create_', // pg_create_restore_point, pg_create_{physical,logical}_replication_slot
  'pg_stat_reset', // pg_stat_reset, _shared, _single_table_counters, _slru, …
  'pg_replication_origin_',
  'pg_logical_slot_',
  'binary_upgrade_',
];

/**
 * Built-ins whose effect lives in the server session, so the client stays on its connection:
 * session-level advisory locks outlive the transaction; a sequence's currval()/lastval() answer
 * what nextval()/setval() last returned *in that backend*: a client that asks them keeps its
 * connection from then on, so that its later nextval() and currval() meet in one backend.
 * nextval()/setval() alone do not pin (the routing corpus: a client drawing ids — an ORM's
 * sequence generator — must not hold a server connection for life).
 */
const PINNING_NAMES: ReadonlySet<string> = new Set([
  'pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock', 'pg_try_advisory_lock_shared',
  'currval', 'lastval',
]);

/**
 * Built-ins that pg_proc marks VOLATILE but that only read, and so may run on a replica. The
 * stable and immutable built-ins are in builtin-functions.ts.
 */
const VOLATILE_READS: readonly string[] = [
  'random', 'random_normal', 'setseed', 'clock_timestamp', 'timeofday', 'gen_random_uuid', 'uuidv4', 'uuidv7',
  'pg_sleep', 'pg_sleep_for', 'pg_sleep_until', 'current_query',
  'pg_is_in_recovery', 'pg_last_wal_receive_lsn', 'pg_last_wal_replay_lsn', 'pg_last_xact_replay_timestamp',
  'pg_is_wal_replay_paused', 'pg_get_wal_replay_pause_state',
  'pg_database_size', 'pg_relation_size', 'pg_table_size', 'pg_indexes_size', 'pg_total_relation_size', 'pg_tablespace_size',
  'pg_lock_status', 'pg_blocking_pids', 'pg_safe_snapshot_blocking_pids', 'pg_notification_queue_usage',
  'pg_stat_clear_snapshot', 'pg_stat_have_stats', 'pg_stat_file', 'pg_ls_dir', 'pg_ls_logdir', 'pg_ls_waldir',
  'pg_ls_tmpdir', 'pg_ls_archive_statusdir', 'pg_read_file', 'pg_read_binary_file', 'pg_current_logfile',
  'pg_control_checkpoint', 'pg_control_init', 'pg_control_recovery', 'pg_control_system',
  'pg_partition_tree', 'pg_partition_ancestors', 'pg_xact_commit_timestamp',
  'pg_xact_commit_timestamp_origin', 'pg_last_committed_xact', 'txid_status', 'pg_xact_status', 'pg_sequence_last_value',
  'pg_collation_actual_version', 'pg_database_collation_actual_version', 'pg_get_backend_memory_contexts',
  'pg_get_shmem_allocations', 'pg_hba_file_rules', 'pg_ident_file_mappings', 'pg_show_all_file_settings',
  'pg_jit_available', 'pg_get_multixact_members', 'pg_stat_get_recovery_prefetch', 'pg_get_wal_resource_managers',
  'pg_stat_get_xact_blocks_fetched', 'pg_stat_get_xact_blocks_hit', 'pg_stat_get_xact_function_calls',
  'pg_stat_get_xact_function_self_time', 'pg_stat_get_xact_function_total_time', 'pg_stat_get_xact_numscans',
  'pg_stat_get_xact_tuples_deleted', 'pg_stat_get_xact_tuples_fetched', 'pg_stat_get_xact_tuples_hot_updated',
  'pg_stat_get_xact_tuples_inserted', 'pg_stat_get_xact_tuples_returned', 'pg_stat_get_xact_tuples_updated',
  // built-ins newer than the generated list (PostgreSQL 16-18)
  'any_value', 'array_sample', 'array_shuffle', 'array_reverse', 'array_sort', 'erf', 'erfc', 'gamma', 'lgamma',
  'to_bin', 'to_oct', 'casefold', 'crc32', 'crc32c', 'date_add', 'date_subtract', 'uuid_extract_timestamp',
  'uuid_extract_version', 'pg_input_is_valid', 'pg_input_error_info', 'pg_basetype', 'to_regtypemod',
  'pg_column_toast_chunk_id', 'has_largeobject_privilege', 'pg_get_acl', 'pg_split_walfile_name', 'pg_stat_get_io',
  'pg_get_loaded_modules', 'pg_numa_available', 'pg_get_wal_summarizer_state', 'pg_available_wal_summaries',
  'pg_wal_summary_contents', 'json_scalar', 'system_user',
];

const READ_NAMES: ReadonlySet<string> = new Set([...BUILTIN_READ_FUNCTIONS.split(/\s+/).filter(Boolean), ...VOLATILE_READS]);

export type FunctionKind = 'writer' | 'pinning' | 'read' | 'user';

/** Whether a built-in name (unqualified, or in pg_catalog) writes. */
export function isBuiltinWriter(name: string): boolean {
  if (WRITER_NAMES.has(name)) return true;
  for (const prefix of WRITER_PREFIXES) if (name.startsWith(prefix)) return true;
  return false;
}

/**
 * What a call to `names` (its name as the parser gives it: `[name]` or `[schema, name]`) is.
 * A call qualified with a schema other than pg_catalog is always a user function; a pg_catalog
 * call that is not a known writer is a read.
 */
export function kindOfFunction(names: readonly string[]): FunctionKind {
  const name = names[names.length - 1] ?? '';
  const schema = names.length > 1 ? names[names.length - 2] : undefined;
  if (schema !== undefined && schema !== 'pg_catalog') return 'user';
  if (PINNING_NAMES.has(name)) return 'pinning';
  if (isBuiltinWriter(name)) return 'writer';
  if (schema === 'pg_catalog' || READ_NAMES.has(name)) return 'read';
  return 'user';
}

/**
 * System views that answer wrongly on a hot standby (not merely "for that server"): a read of one
 * goes to the primary.
 */
const PRIMARY_VIEWS: ReadonlyMap<string, string> = new Map([
  // PostgreSQL's regression test prepared_xacts: a standby replays PREPARE TRANSACTION but lists none
  ['pg_prepared_xacts', 'a hot standby lists no prepared transaction'],
  // the standbys and slots of the one logical primary (a replica lists only its own cascade)
  ['pg_stat_replication', "a replica lists only its own standbys, not the primary's"],
  ['pg_replication_slots', "a replica lists its own slots, not the primary's"],
]);

/** `name (why)` when a relation (unqualified or in pg_catalog) is such a view, else undefined. */
export function primaryViewReason(schema: string | undefined, name: string): string | undefined {
  if (schema !== undefined && schema !== 'pg_catalog') return undefined;
  const why = PRIMARY_VIEWS.get(name);
  return why === undefined ? undefined : `${name} (${why})`;
}

/**
 * Built-ins that only read, but answer for the server that runs them where the client means the
 * database pgrelay presents: one logical primary, whose writes go through. Drivers ask them to
 * tell a primary from a standby (libpq's and pgx's `target_session_attrs=primary`, asyncpg's,
 * Npgsql's), applications to tell whether they may write: a replica would say "in recovery".
 */
const PRIMARY_ANSWERS: ReadonlyMap<string, string> = new Map([['pg_is_in_recovery', 'pgrelay is one logical primary: a replica would answer that it is in recovery']]);

/** `name() (why)` when a call (its name as the parser gives it) is such a built-in, else undefined. */
export function primaryAnswerReason(names: readonly string[]): string | undefined {
  const name = names[names.length - 1] ?? '';
  const schema = names.length > 1 ? names[names.length - 2] : undefined;
  if (schema !== undefined && schema !== 'pg_catalog') return undefined;
  const why = PRIMARY_ANSWERS.get(name);
  return why === undefined ? undefined : `${name}() (${why})`;
}
