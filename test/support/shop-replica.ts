import { expect, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { leastPrivilegeRoles } from './least-privilege-roles.js';
import { startRelay, type Relay } from './relay.js';
import { transactionOutcomes } from './transaction-outcomes.js';

/** Passwords of the least-privilege roles (see leastPrivilegeRoles). */
export interface RolePasswords {
  shop: string;
  monitor: string;
  failover: string;
}

/** What a test of the application's reads through pgrelay starts with. */
export interface ShopReplica {
  cluster: LocalCluster;
  relay: Relay;
  /** scans of the table on each node so far (the servers' own pg_stat_user_tables counters) */
  scans(): Promise<Record<string, number>>;
  /** the replica's scans of the table so far */
  replicaScans(): Promise<number>;
  /** the value of row `id` on the primary */
  valueOf(id: number): Promise<number>;
  /** pgrelay_transactions_total by outcome so far (see transactionOutcomes) */
  outcomes(): Promise<Record<string, number>>;
}

/**
 * A primary and one asynchronous replica, the least-privilege roles an operator creates, a table
 * `table` (id 1–20, v = id × 10) the application's role `shop` may read and update, and pgrelay
 * in front with `shop` as its user, the monitor role for health and lag, read-your-writes with a
 * fast lag sample — once the replica is fresh. Stop both in afterAll.
 */
export async function startShopReplica(table: string, password: RolePasswords): Promise<ShopReplica> {
  const cluster = await LocalCluster.create({ replicas: 1, standby: false });
  let relay: Relay | undefined;
  try {
    for (const sql of leastPrivilegeRoles(password)) await cluster.query('primary', sql, [], { superuser: true, database: 'postgres' });
    await cluster.query('primary', `CREATE TABLE ${table} (id int PRIMARY KEY, v int NOT NULL)`);
    await cluster.query('primary', `INSERT INTO ${table} SELECT g, g * 10 FROM generate_series(1, 20) g`);
    await cluster.query('primary', `GRANT SELECT, UPDATE ON ${table} TO shop`);
    await cluster.waitForReplay('replica1');
    relay = await startRelay(cluster, {
      users: [{ name: 'shop', password: password.shop }],
      health: { user: 'pgrelay_monitor', password: password.monitor },
      routing: { consistency: 'session', fence_wait_ms: 500, max_lag_ms: 60_000, lag_interval_ms: 100 },
    });
    const started = relay;
    await vi.waitFor(() => expect(started.app.topology.node('replica1')!.fresh).toBe(true), { timeout: 20_000, interval: 100 });
  } catch (error) {
    // what was started stops: the caller gets nothing to stop
    await relay?.stop();
    await cluster.stop();
    throw error;
  }
  const scans = async () => {
    const out: Record<string, number> = {};
    for (const name of ['primary', 'replica1']) {
      const [row] = await cluster.query<{ n: string }>(name, `SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) AS n FROM pg_stat_user_tables WHERE relname = '${table}'`);
      out[name] = Number(row!.n);
    }
    return out;
  };
  const started = relay;
  return {
    cluster,
    relay,
    scans,
    replicaScans: async () => (await scans()).replica1!,
    valueOf: async (id) => {
      const [row] = await cluster.query<{ v: number }>('primary', `SELECT v FROM ${table} WHERE id = $1`, [id]);
      return row!.v;
    },
    outcomes: () => transactionOutcomes(started),
  };
}
