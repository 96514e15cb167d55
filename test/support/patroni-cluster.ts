/**
 * The Patroni test harness: etcd (one member) and three Patroni-managed PostgreSQL 15 nodes on
 * loopback, built by PatroniCluster (src/local/patroni-cluster.ts, in src so that the drill,
 * `npm run drill:patroni`, runs it too), and pgrelays in this process that follow it.
 *
 *   const cluster = await PatroniCluster.create();   // ~30 s: bootstrap node1, then node2 and node3
 *   afterAll(() => cluster.stop());                  // also done at process exit if forgotten
 *   const relay = await startPatroniRelay(cluster);  // failover.mode patroni, nodes: []
 *   await cluster.killLeader();                      // kill -9 of the leader's patroni and postgres
 *   await cluster.restartMember('node1');            // Patroni rewinds it and it rejoins
 *   await cluster.switchover();                      // Patroni's own REST API, to the sync standby
 */
import pg from 'pg';
import { PatroniCluster, type PatroniMember } from '../../src/local/patroni-cluster.js';
import { startRelay, type Relay } from './relay.js';

export { PatroniCluster, type PatroniMember };

/** pgrelay in this process, following `cluster` through its REST API (no `nodes:` of its own). */
export function startPatroniRelay(cluster: PatroniCluster, overrides: Record<string, unknown> = {}): Promise<Relay> {
  return startRelay(
    { nodes: [], user: cluster.user, password: cluster.password, database: cluster.database },
    {
      failover: { mode: 'patroni' },
      patroni: { endpoints: cluster.endpoints, poll_ms: 500 },
      ...overrides,
    },
  );
}

/** One query through a connection string, on a connection of its own. */
export async function queryUrl<T = Record<string, unknown>>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.on('error', () => {});
  await client.connect();
  try {
    return (await client.query(sql, params)).rows as T[];
  } finally {
    await client.end().catch(() => {});
  }
}
