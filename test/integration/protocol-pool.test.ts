import pg from 'pg';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { dataRow, primaryOnly, RawClient, startProtocolRelay, type RawLogin } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';
import { usePgClients } from '../support/pg-clients.js';

// The server-connection pool as clients see it: a bounded wait then 53300, FIFO hand-over when a
// connection frees up, idle connections closed after idle_timeout_ms, and a connection the server
// killed while it sat idle in the pool thrown away instead of lent.
const shared = sharedCluster();
const cluster = primaryOnly(shared);
const primary = cluster.nodes[0]!.name;
const relays: Relay[] = [];
const connect = usePgClients();
const raws: RawClient[] = [];
const login: RawLogin = { user: cluster.user, password: cluster.password, database: cluster.database };

async function relayWith(overrides: Record<string, unknown>): Promise<Relay> {
  const relay = await startProtocolRelay(cluster, overrides);
  relays.push(relay);
  return relay;
}

function poolStats(relay: Relay) {
  return relay.app.pools.get(primary, cluster.user, cluster.database).stats();
}

/** The server backend that runs this client's next unit (through pgrelay). */
async function backendPid(client: pg.Client): Promise<number> {
  return (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
}

async function backendAlive(pid: number): Promise<boolean> {
  return (await queryNode(shared, primary, 'SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid], true)).length > 0;
}

afterAll(async () => {
  for (const r of raws) r.destroy();
  await Promise.all(relays.map((r) => r.stop()));
});

describe('pool', () => {
  it('fails a query with 53300 after checkout_timeout_ms while the only connection is in a transaction; the client stays usable', async () => {
    const relay = await relayWith({ pool: { size: 1, checkout_timeout_ms: 300 } });
    const holder = await connect(relay);
    const waiter = await connect(relay);
    await holder.query('BEGIN');
    await holder.query('SELECT 1');
    await expect(waiter.query('SELECT 2')).rejects.toMatchObject({ code: '53300', message: expect.stringContaining('no server connection') });
    // the extended protocol gets the same error, then the unit is skipped up to its Sync
    await expect(waiter.query('SELECT $1::int AS v', [3])).rejects.toMatchObject({ code: '53300' });
    await holder.query('COMMIT');
    expect((await waiter.query('SELECT 4 AS v')).rows[0].v).toBe(4);
    expect((await waiter.query('SELECT $1::int AS v', [5])).rows[0].v).toBe(5);
    expect((await holder.query('SELECT 6 AS v')).rows[0].v).toBe(6);
  });

  it('hands the connection to a waiting client when the transaction holding it ends', async () => {
    const relay = await relayWith({ pool: { size: 1, checkout_timeout_ms: 30_000 } });
    const holder = await connect(relay);
    const waiters = await Promise.all([connect(relay), connect(relay), connect(relay)]);
    await holder.query('BEGIN');
    await holder.query('SELECT 1'); // a plain BEGIN takes a connection with the transaction's first statement
    const pending: Promise<{ n: number; v: number }>[] = [];
    for (const [i, client] of waiters.entries()) {
      // transaction ids number the queries in the order the server ran them
      pending.push(client.query('SELECT txid_current()::int AS n, $1::int AS v', [i]).then((r) => r.rows[0]));
      await vi.waitFor(() => expect(poolStats(relay).waiting).toBe(i + 1), { timeout: 30_000, interval: 20 }); // queued in this order
    }
    await holder.query('COMMIT');
    const ran = await Promise.all(pending);
    expect(ran.sort((a, b) => a.n - b.n).map((r) => r.v)).toEqual([0, 1, 2]); // first come, first served
    const stats = poolStats(relay);
    expect(stats.idle + stats.active).toBe(1);
  });

  it('closes idle server connections after idle_timeout_ms', async () => {
    const relay = await relayWith({ pool: { size: 2, idle_timeout_ms: 300 } });
    const client = await connect(relay);
    const pid = await backendPid(client);
    expect(await backendAlive(pid)).toBe(true);
    await vi.waitFor(() => expect(poolStats(relay).idle).toBe(0), { timeout: 30_000, interval: 50 });
    await vi.waitFor(async () => expect(await backendAlive(pid)).toBe(false), { timeout: 30_000, interval: 100 });
    // the client did not notice: its next query gets a new server connection
    const next = await backendPid(client);
    expect(next).not.toBe(pid);
  });

  it('keeps idle server connections with idle_timeout_ms: 0', async () => {
    const relay = await relayWith({ pool: { size: 2, idle_timeout_ms: 0 } });
    const client = await connect(relay);
    const pid = await backendPid(client);
    // nothing to wait for but time: a bounded look at a connection that must still be there
    await new Promise((r) => setTimeout(r, 500));
    expect(poolStats(relay).idle).toBe(1);
    expect(await backendPid(client)).toBe(pid);
  });

  it('lets a new client with known startup settings connect while every server connection is held', async () => {
    const relay = await relayWith({ pool: { size: 1, checkout_timeout_ms: 300 } });
    const params = { application_name: 'proto-pool-startup', DateStyle: 'German, DMY' };
    const first = await RawClient.connect(relay.port, { ...login, params });
    raws.push(first);
    expect(first.parameters.get('application_name')).toBe('proto-pool-startup');
    const holder = await connect(relay);
    await holder.query('BEGIN');
    // the only server connection is in a transaction: the same settings need no server to check
    const second = await RawClient.connect(relay.port, { ...login, params });
    raws.push(second);
    expect(second.parameters.get('application_name')).toBe('proto-pool-startup');
    expect(second.parameters.get('DateStyle')).toBe('German, DMY');
    await holder.query('COMMIT');
    const rows = await second.query("SELECT current_setting('application_name'), to_char(date '2024-03-01', 'DD.MM.YYYY') = date '2024-03-01'::text");
    expect(rows.filter((m) => m.type === 'D').map((m) => dataRow(m.body))).toEqual([['proto-pool-startup', 't']]);
  });

  it('session pooling: a client keeps its server connection (and its temporary table) for its whole life', async () => {
    const relay = await relayWith({ pool: { mode: 'session', size: 2, checkout_timeout_ms: 30_000 } });
    const a = await connect(relay);
    const b = await connect(relay);
    const pidA = await backendPid(a);
    await a.query('CREATE TEMP TABLE proto_session_mode (v int)');
    for (let i = 0; i < 5; i++) {
      await b.query('SELECT 1');
      await a.query('INSERT INTO proto_session_mode VALUES ($1)', [i]);
      expect(await backendPid(a)).toBe(pidA);
    }
    expect((await a.query('SELECT count(*)::int AS n FROM proto_session_mode')).rows[0].n).toBe(5);
    expect(await backendPid(b)).not.toBe(pidA);
  });

  it('discards a connection terminated by the server while idle in the pool; the next query succeeds', async () => {
    const relay = await relayWith({ pool: { size: 1 } });
    const client = await connect(relay);
    const pid = await backendPid(client);
    expect(poolStats(relay).idle).toBe(1);
    const [row] = await queryNode<{ ok: boolean }>(shared, primary, 'SELECT pg_terminate_backend($1) AS ok', [pid], true);
    expect(row!.ok).toBe(true);
    await vi.waitFor(() => expect(poolStats(relay)).toMatchObject({ idle: 0, active: 0 }), { timeout: 30_000, interval: 20 });
    const next = await backendPid(client);
    expect(next).not.toBe(pid);
    expect((await client.query('SELECT $1::text AS v', ['fine'])).rows[0].v).toBe('fine');
  });
});
