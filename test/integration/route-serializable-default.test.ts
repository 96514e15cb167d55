import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { STEADY } from '../support/protocol-client.js';
import { startRelay, unitsWithReason, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// default_transaction_isolation = serializable set on the role (ALTER ROLE … SET) or the database
// (ALTER DATABASE … SET) is not visible to pgrelay, and a hot standby refuses serializable
// transactions (0A000) — every read of such a client on a replica used to fail (issue 16). Now the
// refused read runs again on the primary (pgrelay_units_total{reason="rerouted_serializable"}) and
// the session's reads, and later sessions of that user in that database, go to the primary.
// Where each read ran is told by the servers (inet_server_port()).
const shared = sharedCluster();
const primary = shared.nodes.find((n) => n.role === 'primary')!;
const replicaPorts = shared.nodes.filter((n) => n.role !== 'primary').map((n) => n.port);
const ROLE = 'ser_default_role';
const ROLE_PASSWORD = 'ser-default-pw';
const DATABASE = 'ser_default_db';
const relays: Relay[] = [];
const clients: pg.Client[] = [];
const sqls: postgres.Sql[] = [];

/** A relay whose reads go to a replica (a busy machine's lag does not send them to the primary). */
async function relayWith(): Promise<Relay> {
  const relay = await startRelay(shared, {
    ...STEADY,
    routing: { consistency: 'eventual', max_lag_ms: 60_000 },
    users: [
      { name: shared.user, password: shared.password },
      { name: ROLE, password: ROLE_PASSWORD },
    ],
  });
  relays.push(relay);
  const probe = await client(relay.url());
  await vi.waitFor(async () => expect(replicaPorts).toContain(await port(probe)), { timeout: 20_000, interval: 50 });
  return relay;
}

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  clients.push(c);
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

function pgjs(url: string): postgres.Sql {
  const sql = postgres(url, { max: 1, onnotice: () => undefined });
  sqls.push(sql);
  return sql;
}

async function port(c: pg.Client, text = 'SELECT inet_server_port() AS p'): Promise<number> {
  return Number((await c.query(text)).rows[0].p);
}

const rerouted = (relay: Relay) => unitsWithReason(relay, 'rerouted_serializable');

beforeAll(async () => {
  await queryNode(shared, primary.name, `DROP DATABASE IF EXISTS ${DATABASE}; DROP ROLE IF EXISTS ${ROLE}`, [], true).catch(() => undefined);
  await queryNode(shared, primary.name, `CREATE ROLE ${ROLE} LOGIN PASSWORD '${ROLE_PASSWORD}'; GRANT CONNECT ON DATABASE ${shared.database} TO ${ROLE}`, [], true);
  await queryNode(shared, primary.name, `ALTER ROLE ${ROLE} IN DATABASE ${shared.database} SET default_transaction_isolation = 'serializable'`, [], true);
  await queryNode(shared, primary.name, `CREATE DATABASE ${DATABASE} OWNER ${shared.user}`, [], true);
  await queryNode(shared, primary.name, `ALTER DATABASE ${DATABASE} SET default_transaction_isolation = 'serializable'`, [], true);
  // the replicas have the role and the database
  for (const node of shared.nodes.filter((n) => n.role !== 'primary')) {
    await vi.waitFor(
      async () => expect(await queryNode(shared, node.name, `SELECT (SELECT count(*) FROM pg_roles WHERE rolname = '${ROLE}') + (SELECT count(*) FROM pg_database WHERE datname = '${DATABASE}') AS n`)).toEqual([{ n: '2' }]),
      { timeout: 30_000, interval: 100 },
    );
  }
});

afterAll(async () => {
  await Promise.all(sqls.map((s) => s.end({ timeout: 1 }).catch(() => undefined)));
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
  await queryNode(shared, primary.name, `DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`, [], true);
  await queryNode(shared, primary.name, `REVOKE CONNECT ON DATABASE ${shared.database} FROM ${ROLE}; DROP ROLE IF EXISTS ${ROLE}`, [], true);
});

describe('serializable by default on the role or the database: reads run on the primary', () => {
  it('set on the role (pg: simple Query; then postgres.js: extended protocol, a new session)', async () => {
    const relay = await relayWith();
    const url = relay.url({ user: ROLE, password: ROLE_PASSWORD });
    const a = await client(url);
    // the first read: refused by a replica, run again on the primary, without an error
    expect(await port(a, "SELECT inet_server_port() AS p, current_setting('transaction_isolation') AS i")).toBe(primary.port);
    expect(await rerouted(relay)).toBe(1);
    // from then on the session reads from the primary at once, in and out of transactions
    for (let i = 0; i < 3; i++) expect(await port(a)).toBe(primary.port);
    await a.query('BEGIN');
    expect((await a.query("SELECT inet_server_port() AS p, current_setting('transaction_isolation') AS i")).rows[0]).toEqual({ p: primary.port, i: 'serializable' });
    await a.query('COMMIT');
    expect(await rerouted(relay)).toBe(1);
    // the client's own default wins over the role's: its reads go to replicas; RESET: the role's again
    await a.query("SET default_transaction_isolation = 'read committed'");
    expect(replicaPorts).toContain(await port(a));
    await a.query('RESET default_transaction_isolation');
    expect(await port(a)).toBe(primary.port);
    // a later session of the same user in the same database reads from the primary from the start
    const b = pgjs(url);
    for (let i = 0; i < 3; i++) expect(Number((await b`SELECT inet_server_port() AS p, ${i}::int AS i`)[0]!.p)).toBe(primary.port);
    expect(await rerouted(relay)).toBe(1);
    // another user is not concerned
    const other = await client(relay.url());
    expect(replicaPorts).toContain(await port(other));
  });

  it('set on the database (postgres.js first: the refusal comes on Parse; then pg)', async () => {
    const relay = await relayWith();
    const url = relay.url({ database: DATABASE });
    const sql = pgjs(url);
    const [first] = await sql`SELECT inet_server_port() AS p, current_setting('transaction_isolation') AS i, ${1}::int AS one`;
    expect({ p: Number(first!.p), i: first!.i, one: first!.one }).toEqual({ p: primary.port, i: 'serializable', one: 1 });
    expect(await rerouted(relay)).toBe(1);
    expect(Number((await sql`SELECT inet_server_port() AS p`)[0]!.p)).toBe(primary.port);
    const c = await client(url);
    expect(await port(c)).toBe(primary.port);
    expect(await rerouted(relay)).toBe(1);
    // the shared database is not concerned
    const other = await client(relay.url());
    expect(replicaPorts).toContain(await port(other));
  });
});
