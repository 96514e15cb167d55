import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { STEADY } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// Where units run and what clients are told (issue 16): a pin is a primary connection, never a
// replica's; checked on the servers themselves (inet_server_port()).
const shared = sharedCluster();
const primary = shared.nodes.find((n) => n.role === 'primary')!;
const replicas = shared.nodes.filter((n) => n.role !== 'primary');
const relays: Relay[] = [];
const clients: pg.Client[] = [];
const sqls: postgres.Sql[] = [];

async function relayWith(overrides: Record<string, unknown> = {}): Promise<Relay> {
  const relay = await startRelay(shared, { ...STEADY, routing: { consistency: 'eventual' }, ...overrides });
  relays.push(relay);
  return relay;
}

async function connect(relay: Relay): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url() });
  clients.push(client);
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function serverPort(client: pg.Client): Promise<number> {
  return Number((await client.query('SELECT inet_server_port() AS p')).rows[0].p);
}

async function pinnedSessions(relay: Relay): Promise<number> {
  return (await relay.app.metrics.pinnedSessions.get()).values[0]?.value ?? 0;
}

beforeAll(async () => {
  await queryNode(shared, primary.name, 'DROP TABLE IF EXISTS route_fix; CREATE TABLE route_fix (id serial PRIMARY KEY, v int)');
  for (const replica of replicas) {
    await vi.waitFor(async () => expect(await queryNode(shared, replica.name, "SELECT to_regclass('route_fix') IS NOT NULL AS ok")).toEqual([{ ok: true }]), { timeout: 30_000, interval: 100 });
  }
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await Promise.all(sqls.map((s) => s.end({ timeout: 1 }).catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
  await queryNode(shared, primary.name, 'DROP TABLE IF EXISTS route_fix');
});

describe('a pin is a primary connection', () => {
  const pinning: [string, string[]][] = [
    ['a session advisory lock', ['SELECT pg_advisory_lock(91601)']],
    ['set_config(…, false)', ["SELECT set_config('app.route_fix', '1', false)"]],
    ['SQL PREPARE', ['PREPARE route_fix_p AS SELECT 1']],
    ['DECLARE … WITH HOLD', ['BEGIN', 'DECLARE route_fix_c CURSOR WITH HOLD FOR SELECT 1', 'COMMIT']],
  ];
  for (const [what, statements] of pinning) {
    it(`${what} pins the client to the primary: its later writes succeed`, async () => {
      const relay = await relayWith();
      const client = await connect(relay);
      // a read first: the client's connection is a replica's until the pin
      expect(replicas.map((r) => r.port)).toContain(await serverPort(client));
      for (const sql of statements) await client.query(sql);
      expect((await pinnedSessions(relay))).toBe(1);
      expect(await serverPort(client)).toBe(primary.port);
      const inserted = await client.query('INSERT INTO route_fix (v) VALUES (1) RETURNING id');
      expect(inserted.rowCount).toBe(1);
    });
  }

  it('a pinning statement inside a read-only transaction on a replica is refused (0A000); the transaction is aborted, the client is not pinned', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    await client.query('BEGIN READ ONLY');
    expect(replicas.map((r) => r.port)).toContain(await serverPort(client));
    const error = await client.query('SELECT pg_advisory_lock(91602)').then(
      () => undefined,
      (e: { code?: string; message: string }) => e,
    );
    expect(error?.code).toBe('0A000');
    expect(error?.message).toMatch(/read-only transaction on a replica/);
    // in order, as the server's error: the transaction is aborted
    await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await client.query('ROLLBACK');
    expect((await pinnedSessions(relay))).toBe(0);
    expect((await client.query('INSERT INTO route_fix (v) VALUES (2)')).rowCount).toBe(1);
    // the lock was never taken anywhere
    const locks = await queryNode(shared, primary.name, "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 91602");
    expect(locks).toEqual([{ n: 0 }]);
  });

  it('pool.mode session: a client whose first statement is a read holds a primary connection; its writes succeed (postgres.js)', async () => {
    const relay = await relayWith({ pool: { mode: 'session', size: 2, checkout_timeout_ms: 30_000 } });
    const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    sqls.push(sql);
    const [first] = await sql`SELECT inet_server_port() AS p`;
    expect(Number(first!.p)).toBe(primary.port);
    const rows = await sql`INSERT INTO route_fix (v) VALUES (3) RETURNING v`;
    expect(rows.map((r) => r.v)).toEqual([3]);
  });
});
