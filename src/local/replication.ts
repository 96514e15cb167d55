/**
 * Replication between the nodes of a LocalCluster, done in SQL: the roles a new cluster starts
 * with, replication slots, synchronous_standby_names, ALTER SYSTEM with a reload, and waiting for
 * streaming and replay.
 */
import { pollUntil, type NodeClient } from './node-client.js';
import { synchronousStandbyNames, type Settings } from './node-config.js';

export interface ClusterRoles {
  user: string;
  password: string;
  database: string;
  superuser: string;
  replicationUser: string;
  replicationPassword: string;
}

/** The application role (with pg_monitor), its database and the replication role, on a new primary. */
export async function createRoles(sql: NodeClient, primaryName: string, roles: ClusterRoles): Promise<void> {
  await sql.withClient(primaryName, { superuser: true, database: 'postgres' }, async (client) => {
    const user = client.escapeIdentifier(roles.user);
    if (roles.user !== roles.superuser) {
      await client.query(`CREATE ROLE ${user} LOGIN PASSWORD ${client.escapeLiteral(roles.password)}`);
      // Lets the application (and pgrelay's lag monitor) read pg_stat_replication and friends.
      await client.query(`GRANT pg_monitor TO ${user}`);
    }
    if (roles.database !== 'postgres') {
      await client.query(`CREATE DATABASE ${client.escapeIdentifier(roles.database)} OWNER ${user}`);
    }
    if (roles.replicationUser !== roles.superuser) {
      const role = client.escapeIdentifier(roles.replicationUser);
      await client.query(`CREATE ROLE ${role} LOGIN REPLICATION PASSWORD ${client.escapeLiteral(roles.replicationPassword)}`);
    }
  });
}

/** ALTER SYSTEM SET … then a reload; returns once a new session sees the values. */
export async function alterSystem(sql: NodeClient, name: string, settings: Settings): Promise<void> {
  await sql.withClient(name, { superuser: true, database: 'postgres' }, async (client) => {
    for (const [key, value] of Object.entries(settings)) {
      await client.query(`ALTER SYSTEM SET ${client.escapeIdentifier(key)} = ${client.escapeLiteral(String(value))}`);
    }
    await client.query('SELECT pg_reload_conf()');
  });
  await pollUntil(`${name} to reload its configuration`, 10_000, async () => {
    for (const [key, value] of Object.entries(settings)) {
      const [row] = await sql.superQuery<{ value: string }>(name, 'SELECT current_setting($1) AS value', [key]);
      if (row?.value !== String(value)) return undefined;
    }
    return true;
  });
}

/** Points the primary's synchronous_standby_names at `standbys`, unless it already is. */
export async function setSynchronousStandbys(
  sql: NodeClient,
  primaryName: string,
  standbys: readonly string[],
  step: (step: string) => void,
): Promise<void> {
  const wanted = synchronousStandbyNames(standbys);
  const [row] = await sql.superQuery<{ value: string }>(primaryName, "SELECT current_setting('synchronous_standby_names') AS value");
  if (row?.value === wanted) return;
  step(`synchronous standby ${standbys.join(', ') || 'none'}`);
  await alterSystem(sql, primaryName, { synchronous_standby_names: wanted });
}

export async function ensureSlot(sql: NodeClient, holder: string, slotName: string): Promise<void> {
  await sql.superQuery(
    holder,
    `SELECT pg_create_physical_replication_slot($1, true)
      WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`,
    [slotName],
  );
}

/** Drops a slot once its walsender has noticed the node is gone (an active slot cannot be dropped). */
export async function dropSlot(sql: NodeClient, holder: string, slotName: string): Promise<void> {
  await pollUntil(`slot ${slotName} on ${holder} to be dropped`, 15_000, async () => {
    const rows = await sql.superQuery<{ active: boolean }>(
      holder,
      `SELECT active, CASE WHEN NOT active THEN pg_drop_replication_slot(slot_name) END
         FROM pg_replication_slots WHERE slot_name = $1`,
      [slotName],
    );
    return rows.length === 0 || rows.every((row) => !row.active) ? true : undefined;
  });
}

/**
 * Until the primary streams to each of `expected()` (asked again at every poll), and, when
 * `expectSync`, a synchronous standby is 'sync'.
 */
export async function waitForStreaming(
  sql: NodeClient,
  primaryName: string,
  names: readonly string[],
  expected: () => string[],
  expectSync: boolean,
): Promise<void> {
  await pollUntil(`streaming to ${names.join(', ')}`, 60_000, async () => {
    const rows = await sql.query<{ application_name: string; state: string; sync_state: string }>(
      primaryName,
      'SELECT application_name, state, sync_state FROM pg_stat_replication',
    );
    const streaming = new Set(rows.filter((r) => r.state === 'streaming').map((r) => r.application_name));
    if (!expected().every((name) => streaming.has(name))) return undefined;
    if (expectSync && !rows.some((r) => r.sync_state === 'sync')) return undefined;
    return true;
  });
}

/**
 * Waits until `name` has replayed everything `primaryName` had written when called. LSNs alone
 * would mislead across a failover: a node stuck on a diverged old timeline can be "ahead" of
 * the new primary, so the node must also be receiving the primary's timeline.
 */
export async function waitForReplay(sql: NodeClient, primaryName: string, name: string, timeoutMs: number): Promise<void> {
  const [row] = await sql.superQuery<{ lsn: string; timeline: number }>(
    primaryName,
    `SELECT pg_current_wal_lsn()::text AS lsn,
            ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline`,
  );
  const { lsn, timeline } = row!;
  await pollUntil(`${name} to replay up to ${lsn} on timeline ${timeline}`, timeoutMs, async () => {
    const [replay] = await sql.superQuery<{ done: boolean | null }>(
      name,
      `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn
              AND (SELECT received_tli FROM pg_stat_wal_receiver) = $2 AS done`,
      [lsn, timeline],
    );
    return replay?.done === true ? true : undefined;
  });
}
