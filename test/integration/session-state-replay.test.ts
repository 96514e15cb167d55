import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STEADY, startProtocolRelay } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';
import { nodePort, queryNode, sharedCluster } from '../support/shared-cluster.js';

// A client's session settings follow it to whichever server connection serves its next unit
// (transaction pooling: pgrelay replays them there). Each test uses a pool of one server
// connection and a second client whose units run on it in between, so that every unit of the
// first client is served after a replay of its state.
const shared = sharedCluster();
const primary = shared.nodes.find((n) => n.role === 'primary')!.name;
const relays: Relay[] = [];
const clients: pg.Client[] = [];
const sqls: postgres.Sql[] = [];
const ROLES = ['ssr_a', 'ssr_b', 'ssr_u8', 'ssr_u9'];

async function relayWith(overrides: Record<string, unknown>): Promise<Relay> {
  const relay = await startProtocolRelay(shared, { pool: { size: 1, checkout_timeout_ms: 30_000 }, ...overrides });
  relays.push(relay);
  return relay;
}

async function connect(relay: Relay, user?: { user: string; password: string }): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url(user) });
  clients.push(client);
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

function superuserRelay(): Promise<Relay> {
  return relayWith({
    users: [
      { name: shared.user, password: shared.password },
      { name: shared.superuser, password: shared.superuserPassword },
    ],
  });
}

const asSuperuser = () => ({ user: shared.superuser, password: shared.superuserPassword });

async function dropRoles(): Promise<void> {
  for (const role of ROLES) await queryNode(shared, primary, `DROP OWNED BY ${role} CASCADE; DROP ROLE ${role}`, [], true).catch(() => undefined);
  for (const role of ROLES) await queryNode(shared, primary, `DROP ROLE IF EXISTS ${role}`, [], true);
}

beforeAll(async () => {
  await dropRoles();
  for (const role of ROLES) await queryNode(shared, primary, `CREATE ROLE ${role}`, [], true);
  await queryNode(shared, primary, `GRANT ssr_a, ssr_b TO ${shared.user}; GRANT ssr_u9 TO ssr_u8`, [], true);
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await Promise.all(sqls.map((s) => s.end({ timeout: 1 }).catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
  await dropRoles();
});

describe('a session state replay that fails', () => {
  it("fails the client's unit with the server's error and retires the server connection: the unit never runs with the previous client's role", async () => {
    const relay = await relayWith({});
    const a = await connect(relay);
    const b = await connect(relay);
    await a.query('SET ROLE ssr_a');
    expect((await a.query('SELECT current_user AS u')).rows[0].u).toBe('ssr_a');
    await b.query('SET ROLE ssr_b');
    const before = (await b.query('SELECT current_user AS u, pg_backend_pid() AS pid')).rows[0];
    expect(before.u).toBe('ssr_b');
    // a may no longer become ssr_a: replaying its SET ROLE fails on the connection b left as ssr_b
    await queryNode(shared, primary, `REVOKE ssr_a FROM ${shared.user}`, [], true);
    try {
      const failure = await a.query('SELECT current_user AS u').then(
        (r) => ({ ran: r.rows[0].u as string }),
        (error: { code?: string; message: string }) => ({ code: error.code, message: error.message }),
      );
      expect(failure).toEqual({ code: '42501', message: 'permission denied to set role "ssr_a"' });
      // the same for an extended-protocol unit (a parameter makes pg use Parse/Bind/Execute)
      await expect(a.query('SELECT current_user AS u, $1::int AS n', [1])).rejects.toMatchObject({ code: '42501' });
      // the connection that failed the replay is gone; b gets a fresh one, with its own role
      const after = (await b.query('SELECT current_user AS u, pg_backend_pid() AS pid')).rows[0];
      expect(after.u).toBe('ssr_b');
      expect(after.pid).not.toBe(before.pid);
      // a's session goes on: once it may set the role again, its units run as ssr_a
      await queryNode(shared, primary, `GRANT ssr_a TO ${shared.user}`, [], true);
      expect((await a.query('SELECT current_user AS u')).rows[0].u).toBe('ssr_a');
    } finally {
      await queryNode(shared, primary, `GRANT ssr_a TO ${shared.user}`, [], true);
    }
  });

  it('postgres.js (extended protocol): the failing unit gets the error, the next client is unaffected', async () => {
    const relay = await relayWith({});
    const a = postgres(relay.url(), { max: 1, onnotice: () => undefined, prepare: true });
    sqls.push(a);
    const b = await connect(relay);
    await a`SET ROLE ssr_a`;
    await b.query('SET ROLE ssr_b');
    await queryNode(shared, primary, `REVOKE ssr_a FROM ${shared.user}`, [], true);
    try {
      await expect(a`SELECT current_user AS u, ${1}::int AS n`).rejects.toMatchObject({ code: '42501' });
      expect((await b.query('SELECT current_user AS u')).rows[0].u).toBe('ssr_b');
    } finally {
      await queryNode(shared, primary, `GRANT ssr_a TO ${shared.user}`, [], true);
    }
  });
});

describe('replayed settings are the ones the session has', () => {
  it("a partial SET datestyle merges with the startup DateStyle (PostgreSQL's horology test)", async () => {
    const relay = await relayWith({});
    const a = postgres(relay.url(), { max: 1, onnotice: () => undefined, connection: { DateStyle: 'Postgres, MDY' } });
    sqls.push(a);
    const b = await connect(relay);
    expect((await a`SHOW datestyle`)[0]!.DateStyle).toBe('Postgres, MDY');
    await a`SET datestyle TO dmy`;
    await b.query('SET datestyle TO iso');
    await b.query('SELECT 1');
    expect((await a`SHOW datestyle`)[0]!.DateStyle).toBe('Postgres, DMY');
    expect((await a.unsafe("SELECT '2001-02-03 04:05:06'::timestamp::text AS t"))[0]!.t).toBe('Sat 03 Feb 04:05:06 2001');
    // and a second partial SET on top of that
    await a`SET datestyle TO sql`;
    await b.query('SELECT 1');
    expect((await a`SHOW datestyle`)[0]!.DateStyle).toBe('SQL, DMY');
    expect((await b.query('SHOW datestyle')).rows[0].DateStyle).toBe('ISO, MDY');
  });

  it("SET SESSION AUTHORIZATION, SET ROLE, RESET SESSION AUTHORIZATION, RESET ALL as PostgreSQL's privileges test runs them", async () => {
    const relay = await superuserRelay();
    const a = await connect(relay, asSuperuser());
    const b = await connect(relay, asSuperuser());
    const who = async () => {
      await b.query('SELECT 1'); // b's unit in between: a's next unit comes after a replay
      return (await a.query("SELECT session_user AS s, current_user AS c, current_setting('role') AS r")).rows[0];
    };
    await a.query('SET SESSION AUTHORIZATION ssr_u8');
    await a.query('SET ROLE ssr_u9');
    expect(await who()).toEqual({ s: 'ssr_u8', c: 'ssr_u9', r: 'ssr_u9' });
    await a.query('RESET SESSION AUTHORIZATION');
    expect(await who()).toEqual({ s: shared.superuser, c: shared.superuser, r: 'none' });
    await a.query('SET ROLE ssr_u9');
    await a.query('SET SESSION AUTHORIZATION ssr_u8');
    expect(await who()).toEqual({ s: 'ssr_u8', c: 'ssr_u8', r: 'none' });
    await a.query('SET ROLE ssr_u9');
    // RESET ALL leaves the role and the session authorization alone
    await a.query('RESET ALL');
    expect(await who()).toEqual({ s: 'ssr_u8', c: 'ssr_u9', r: 'ssr_u9' });
    await a.query('SET SESSION AUTHORIZATION DEFAULT');
    expect(await who()).toEqual({ s: shared.superuser, c: shared.superuser, r: 'none' });
    // DISCARD ALL resets both
    await a.query('SET SESSION AUTHORIZATION ssr_u8');
    await a.query('SET ROLE ssr_u9');
    await a.query('DISCARD ALL');
    expect(await who()).toEqual({ s: shared.superuser, c: shared.superuser, r: 'none' });
    expect((await b.query('SELECT session_user AS s, current_user AS c')).rows[0]).toEqual({ s: shared.superuser, c: shared.superuser });
  });
});

describe('default_transaction_isolation = serializable (a hot standby refuses it with 0A000)', () => {
  async function routedRelay(): Promise<Relay> {
    const relay = await startRelay(shared, { ...STEADY, routing: { consistency: 'eventual' } });
    relays.push(relay);
    return relay;
  }
  const primaryPort = nodePort(shared, primary);

  it('a SET of it, or of the session characteristics, sends the reads of the session to the primary; RESET sends them back to replicas', async () => {
    const relay = await routedRelay();
    const a = await connect(relay);
    const port = async () => Number((await a.query('SELECT inet_server_port() AS p')).rows[0].p);
    expect(await port()).not.toBe(primaryPort);
    await a.query("SET default_transaction_isolation = 'serializable'");
    expect((await a.query('SHOW transaction_isolation')).rows[0].transaction_isolation).toBe('serializable');
    expect(await port()).toBe(primaryPort);
    expect((await a.query('SELECT count(*)::int AS n FROM pg_class WHERE relname = $1', ['pg_class'])).rows[0].n).toBe(1);
    await a.query('RESET default_transaction_isolation');
    expect(await port()).not.toBe(primaryPort);
    await a.query('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE');
    expect(await port()).toBe(primaryPort);
    await a.query('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED');
    expect(await port()).not.toBe(primaryPort);
  });

  it('as a startup setting (options -c with pg, a startup parameter with postgres.js)', async () => {
    const relay = await routedRelay();
    const a = new pg.Client({ connectionString: relay.url(), options: '-c default_transaction_isolation=serializable' });
    clients.push(a);
    a.on('error', () => undefined);
    await a.connect();
    expect(Number((await a.query('SELECT inet_server_port() AS p')).rows[0].p)).toBe(primaryPort);
    const b = postgres(relay.url(), { max: 1, onnotice: () => undefined, connection: { default_transaction_isolation: 'serializable' } });
    sqls.push(b);
    expect(Number((await b`SELECT inet_server_port() AS p`)[0]!.p)).toBe(primaryPort);
    expect((await b`SHOW transaction_isolation`)[0]!.transaction_isolation).toBe('serializable');
    await b`RESET ALL`;
    // RESET ALL goes back to the startup value: still serializable
    expect(Number((await b`SELECT inet_server_port() AS p`)[0]!.p)).toBe(primaryPort);
  });
});
