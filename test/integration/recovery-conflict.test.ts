import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/local/cluster.js';
import { unitsWithReason, type Relay } from '../support/relay.js';
import { type ShopReplica, startShopReplica } from '../support/shop-replica.js';

// A replica cancels a read that holds up the replay of the primary's WAL ("canceling statement
// due to conflict with recovery", 40001), here at once (max_standby_streaming_delay = 0) when the
// primary takes an ACCESS EXCLUSIVE lock on the table the read scans. Before, the client got the
// 40001. Now a read outside a transaction whose rows had not started to reach the client runs
// again on the primary, as a read a replica refuses as a write does (route-reroute.test.ts).
// Least-privilege roles; where the read ran is told by the servers (inet_server_port()).

const PASSWORD = { shop: 'shop-pw-97', monitor: 'monitor-pw-98', failover: 'failover-pw-99' };
let shop: ShopReplica;
let cluster: LocalCluster;
let relay: Relay;

beforeAll(async () => {
  shop = await startShopReplica('rc_items', PASSWORD);
  ({ cluster, relay } = shop);
  await cluster.query('replica1', 'ALTER SYSTEM SET max_standby_streaming_delay = 0', [], { superuser: true, database: 'postgres' });
  await cluster.query('replica1', 'SELECT pg_reload_conf()', [], { superuser: true, database: 'postgres' });
}, 120_000);

afterAll(async () => {
  await relay?.stop();
  await cluster?.stop();
});

const rerouted = () => unitsWithReason(relay, 'rerouted_conflict');

describe('a read a replica cancels for a conflict with recovery', () => {
  it.each([
    ['a simple Query', false],
    ['the extended protocol', true],
  ])('runs again on the primary: %s', async (_name, extended) => {
    const client = new pg.Client({ connectionString: relay.url({ user: 'shop', password: PASSWORD.shop }) });
    await client.connect();
    try {
      const before = await rerouted();
      const text = 'SELECT pg_sleep(2)::text AS slept, inet_server_port() AS port, count(*)::int AS n FROM rc_items';
      const reading = client.query(extended ? { text: `${text} WHERE $1::int > 0`, values: [1] } : text);
      // the read is under way on the replica: the primary takes a lock whose replay it holds up
      await vi.waitFor(async () => {
        const rows = await cluster.query('replica1', "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(2)%'", [], { superuser: true, database: 'postgres' });
        expect(rows).toHaveLength(1);
      }, { timeout: 10_000, interval: 20 });
      await cluster.query('primary', 'BEGIN; LOCK TABLE rc_items IN ACCESS EXCLUSIVE MODE; COMMIT');
      const { rows } = await reading;
      expect(rows).toEqual([{ slept: '', port: cluster.node('primary').port, n: 20 }]);
      expect(await rerouted()).toBe(before + 1);
      // the next read goes to the replica again: a conflict is the moment's, not the statement's
      const next = await client.query('SELECT inet_server_port() AS port, count(*)::int AS n FROM rc_items');
      expect(next.rows).toEqual([{ port: cluster.node('replica1').port, n: 20 }]);
    } finally {
      await client.end();
    }
  });
});
