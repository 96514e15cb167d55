import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// Bounded server-side resources whatever clients ask for: pools made for a database name are
// reclaimed once unused (a client naming many databases does not grow pgrelay for ever), and
// pool.max_per_node caps the server connections of a node across users and databases — a unit
// past the cap waits as it would for its own pool, then runs (or gets 53300 after
// checkout_timeout_ms).
const shared = sharedCluster();
const primary = shared.nodes.find((n) => n.role === 'primary')!.name;
const otherDb = 'pool_limits_db';
const relays: Relay[] = [];
const clients: pg.Client[] = [];

async function relayWith(overrides: Record<string, unknown>): Promise<Relay> {
  const relay = await startProtocolRelay(shared, overrides);
  relays.push(relay);
  return relay;
}

async function connect(relay: Relay, database = shared.database): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url({ database }) });
  clients.push(client);
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** Server connections pgrelay has open to the primary, over all its pools. */
function nodeConnections(relay: Relay): number {
  return relay.app.pools.ofNode(primary).reduce((sum, p) => {
    const s = p.stats();
    return sum + s.idle + s.active + s.connecting;
  }, 0);
}

const databases = (relay: Relay) => relay.app.pools.all().map((p) => p.login.database);

beforeAll(async () => {
  await queryNode(shared, primary, `DROP DATABASE IF EXISTS ${otherDb}`, [], true);
  await queryNode(shared, primary, `CREATE DATABASE ${otherDb}`, [], true);
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
  await queryNode(shared, primary, `DROP DATABASE IF EXISTS ${otherDb} WITH (FORCE)`, [], true);
});

describe('pool.max_per_node', () => {
  it('caps the connections of a node across databases: a unit past the cap waits, then runs when one frees', async () => {
    const relay = await relayWith({ pool: { size: 4, max_per_node: 2, checkout_timeout_ms: 30_000, idle_timeout_ms: 0 } });
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, nodeConnections(relay))), 5);
    try {
      const a = await connect(relay);
      const b = await connect(relay, otherDb);
      const c = await connect(relay);
      await a.query('BEGIN');
      await a.query('SELECT 1');
      await b.query('BEGIN');
      await b.query('SELECT 1');
      expect(nodeConnections(relay)).toBe(2);
      // c's pool may grow (size 4), the node may not
      const waiting = c.query<{ v: number }>('SELECT 3 AS v');
      await vi.waitFor(() => expect(relay.app.pools.get(primary, shared.user, shared.database).stats().waiting).toBe(1), { timeout: 10_000, interval: 10 });
      await b.query('COMMIT'); // its connection (other database) gives its slot to c's pool
      expect((await waiting).rows).toEqual([{ v: 3 }]);
      await a.query('COMMIT');
      // the node is at its cap with idle connections of the main database: another database's
      // unit closes one of them and runs without waiting
      for (let i = 0; i < 3; i++) expect((await b.query<{ v: number }>('SELECT $1::int AS v', [i])).rows).toEqual([{ v: i }]);
      expect(nodeConnections(relay)).toBeLessThanOrEqual(2);
    } finally {
      clearInterval(sampler);
    }
    expect(most).toBe(2);
  });

  it('a unit that cannot get a slot within checkout_timeout_ms gets 53300 naming the cap', async () => {
    const relay = await relayWith({ pool: { size: 4, max_per_node: 1, checkout_timeout_ms: 300, idle_timeout_ms: 0 } });
    const a = await connect(relay);
    const b = await connect(relay, otherDb);
    await a.query('BEGIN');
    await a.query('SELECT 1');
    await expect(b.query('SELECT 1')).rejects.toMatchObject({ code: '53300', message: expect.stringContaining('pool.max_per_node 1') });
    await a.query('COMMIT');
    expect((await b.query<{ v: number }>('SELECT 2 AS v')).rows).toEqual([{ v: 2 }]);
  });
});

describe('pools are reclaimed', () => {
  it('a pool for a database that does not exist, and one whose connections closed when idle, go away', async () => {
    const relay = await relayWith({ pool: { size: 2, idle_timeout_ms: 200 } });
    const names = ['pool_limits_nope_1', 'pool_limits_nope_2', 'pool_limits_nope_3'];
    for (const database of names) await expect(connect(relay, database)).rejects.toMatchObject({ code: '3D000' });
    const other = await connect(relay, otherDb);
    expect((await other.query<{ d: string }>('SELECT current_database() AS d')).rows).toEqual([{ d: otherDb }]);
    await other.end();
    expect(databases(relay)).toEqual(expect.arrayContaining([...names, otherDb]));
    await vi.waitFor(() => expect(databases(relay).filter((d) => d !== shared.database)).toEqual([]), { timeout: 20_000, interval: 50 });
    expect(relay.app.pools.reclaimed).toBeGreaterThanOrEqual(4);
    // a reclaimed pool is made again when needed
    const again = await connect(relay, otherDb);
    expect((await again.query<{ d: string }>('SELECT current_database() AS d')).rows).toEqual([{ d: otherDb }]);
  });
});

describe('pool.max_lifetime_ms (PgBouncer server_lifetime)', () => {
  it('closes a server connection that old when it comes back, never while a transaction holds it; a new one serves the next unit', async () => {
    const relay = await relayWith({ pool: { size: 1, max_lifetime_ms: 600 } });
    const client = await connect(relay);
    const pid = async () => (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const first = await pid();
    expect(await pid()).toBe(first);
    // a transaction that outlives the connection's lifetime keeps it to its end
    await client.query('BEGIN');
    expect(await pid()).toBe(first);
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(await pid()).toBe(first);
    await client.query('COMMIT');
    const second = await pid();
    expect(second).not.toBe(first);
    // the old backend is gone from the server
    await vi.waitFor(async () => expect(await queryNode(shared, primary, 'SELECT 1 FROM pg_stat_activity WHERE pid = $1', [first])).toEqual([]), { timeout: 10_000, interval: 50 });
    // an idle connection past its lifetime is closed by the pool's sweep, without a unit
    await vi.waitFor(() => expect(nodeConnections(relay)).toBe(0), { timeout: 10_000, interval: 50 });
    expect(await pid()).not.toBe(second);
  });
});
