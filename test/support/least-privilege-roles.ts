/**
 * The roles an operator creates for pgrelay with least privilege (README, "Roles pgrelay logs in
 * as"): the application's role `shop` (no grants beyond its tables, given by the test), a
 * `pg_monitor` role for health and lag, and a non-superuser PostgreSQL 15 failover role. Run as a
 * superuser on the primary, database postgres.
 */
export function leastPrivilegeRoles(password: { shop: string; monitor: string; failover: string }): string[] {
  return [
    `CREATE ROLE shop LOGIN PASSWORD '${password.shop}'`,
    `CREATE ROLE pgrelay_monitor LOGIN PASSWORD '${password.monitor}'`,
    'GRANT pg_monitor TO pgrelay_monitor',
    `CREATE ROLE pgrelay_failover LOGIN REPLICATION PASSWORD '${password.failover}'`,
    'GRANT pg_monitor TO pgrelay_failover',
    'GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO pgrelay_failover',
    'GRANT EXECUTE ON FUNCTION pg_reload_conf() TO pgrelay_failover',
    'GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names, primary_conninfo, primary_slot_name, default_transaction_read_only TO pgrelay_failover',
    'GRANT pg_signal_backend TO pgrelay_failover',
  ];
}
