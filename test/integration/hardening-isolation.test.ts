import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorFields, primaryOnly, RawClient, serialize, type BackendMessage } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// Isolation between clients that take turns on one server connection (transaction pooling, pool
// size 1): what one client does to its session — its role, its session authorization, its
// prepared statements, its temporary tables — is never seen by, and cannot be undone by, the next
// client on that connection. (Confidentiality between clients of the same database role is not
// promised: PostgreSQL itself shows a role the activity and prepared statements of its own
// sessions.)
const cluster = primaryOnly(sharedCluster());
const otherRole = 'hardening_iso_role';
const relays: Relay[] = [];
const clients: pg.Client[] = [];

async function relayWith(overrides: Record<string, unknown>, users?: { user: string; password: string }): Promise<Relay> {
  const relay = await startRelay(users ? { ...cluster, ...users } : cluster, { pool: { size: 1, checkout_timeout_ms: 30_000 }, ...overrides });
  relays.push(relay);
  return relay;
}

async function connect(relay: Relay, user?: { user: string; password: string }): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url(user) });
  clients.push(client);
  await client.connect();
  return client;
}

beforeAll(async () => {
  await queryNode(cluster, 'primary', `DROP ROLE IF EXISTS ${otherRole}`, [], true);
  await queryNode(cluster, 'primary', `CREATE ROLE ${otherRole} NOLOGIN; GRANT ${otherRole} TO ${cluster.user}`, [], true);
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
  await queryNode(cluster, 'primary', `DROP ROLE IF EXISTS ${otherRole}`, [], true);
});

const currentUser = async (c: pg.Client) => (await c.query<{ u: string }>('SELECT current_user AS u')).rows[0]!.u;

describe('session state on a shared server connection', () => {
  it('SET ROLE stays with the client that ran it (RESET ALL does not reset the role)', async () => {
    const relay = await relayWith({});
    const a = await connect(relay);
    const b = await connect(relay);
    await a.query(`SET ROLE ${otherRole}`);
    for (let i = 0; i < 3; i++) {
      expect(await currentUser(a)).toBe(otherRole);
      expect(await currentUser(b)).toBe(cluster.user);
    }
    await a.query('RESET ROLE');
    expect(await currentUser(a)).toBe(cluster.user);
  });

  it('SET SESSION AUTHORIZATION stays with the client that ran it', async () => {
    const relay = await relayWith({}, { user: cluster.superuser, password: cluster.superuserPassword });
    const su = { user: cluster.superuser, password: cluster.superuserPassword };
    const a = await connect(relay, su);
    const b = await connect(relay, su);
    await a.query(`SET SESSION AUTHORIZATION ${cluster.user}`);
    const who = async (c: pg.Client) => (await c.query<{ s: string; u: string }>('SELECT session_user AS s, current_user AS u')).rows[0];
    for (let i = 0; i < 3; i++) {
      expect(await who(a)).toEqual({ s: cluster.user, u: cluster.user });
      expect(await who(b)).toEqual({ s: cluster.superuser, u: cluster.superuser });
    }
  });
});

describe('prepared statements on a shared server connection', () => {
  async function serverStatementNames(relay: Relay): Promise<string[]> {
    const probe = await connect(relay);
    const rows = (await probe.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name')).rows;
    return rows.map((r) => r.name);
  }

  function summary(messages: BackendMessage[]): string[] {
    return messages.map((m) => (m.type === 'E' ? `E ${errorFields(m.body).get('C')} ${errorFields(m.body).get('M')}` : m.type));
  }

  it('a client cannot DEALLOCATE another client’s statement, in or out of a transaction', async () => {
    const relay = await relayWith({});
    const a = await connect(relay);
    const run = () => a.query({ name: 'a_stmt', text: "SELECT 'from a'::text AS v" });
    expect((await run()).rows).toEqual([{ v: 'from a' }]);
    // the server-side name of a's statement is visible to the same role (PostgreSQL shows it)
    const names = (await serverStatementNames(relay)).filter((n) => n.startsWith('pgrelay_'));
    expect(names.length).toBeGreaterThan(0);
    const b = await RawClient.connect(relay.port, { user: cluster.user, password: cluster.password, database: cluster.database });
    try {
      for (const name of names) {
        expect(summary(await b.query(`DEALLOCATE ${name}`))).toEqual([`E 26000 prepared statement "${name}" does not exist`, 'Z']);
        expect(summary(await b.query('BEGIN'))).toEqual(['C', 'Z']);
        expect(summary(await b.query(`DEALLOCATE PREPARE ${name}`))).toEqual([`E 26000 prepared statement "${name}" does not exist`, 'Z']);
        const aborted = await b.query('SELECT 1');
        expect(errorFields(aborted.find((m) => m.type === 'E')!.body).get('C')).toBe('25P02');
        expect(summary(await b.query('ROLLBACK'))).toEqual(['C', 'Z']);
      }
    } finally {
      b.destroy();
    }
    for (let i = 0; i < 3; i++) expect((await run()).rows).toEqual([{ v: 'from a' }]);
    expect(await serverStatementNames(relay)).toEqual(expect.arrayContaining(names));
  });

  it('a client’s statement names are its own: another client binding the same name gets 26000', async () => {
    const relay = await relayWith({});
    const a = await connect(relay);
    expect((await a.query({ name: 'mine', text: "SELECT 'a''s statement'::text AS v" })).rows).toEqual([{ v: "a's statement" }]);
    const b = await RawClient.connect(relay.port, { user: cluster.user, password: cluster.password, database: cluster.database });
    try {
      b.send(Buffer.concat([serialize.bind({ statement: 'mine' }), serialize.execute({}), serialize.sync()]));
      expect(summary(await b.until('Z'))).toEqual(['E 26000 prepared statement "mine" does not exist', 'Z']);
    } finally {
      b.destroy();
    }
  });

  it('a temporary table is its creator’s alone (the creator is pinned to its connection)', async () => {
    const relay = await relayWith({ pool: { size: 2, checkout_timeout_ms: 30_000 } });
    const a = await connect(relay);
    const b = await connect(relay);
    await a.query("CREATE TEMP TABLE hardening_tmp AS SELECT 'a''s row'::text AS v");
    expect((await a.query('SELECT v FROM hardening_tmp')).rows).toEqual([{ v: "a's row" }]);
    await expect(b.query('SELECT v FROM hardening_tmp')).rejects.toMatchObject({ code: '42P01' });
  });

  it('set_config(…, false) stays with the client that ran it (pinned); set_config(…, true) lasts for its transaction', async () => {
    const relay = await relayWith({ pool: { size: 2, checkout_timeout_ms: 30_000 } });
    const a = await connect(relay);
    const b = await connect(relay);
    const setting = async (c: pg.Client) => (await c.query<{ v: string }>("SELECT current_setting('application_name') AS v")).rows[0]!.v;
    const before = await setting(b);
    // a transaction-local value is gone after its transaction, for everyone
    await a.query('BEGIN');
    await a.query("SELECT set_config('application_name', 'local_only', true)");
    expect(await setting(a)).toBe('local_only');
    await a.query('COMMIT');
    expect(await setting(a)).toBe(before);
    // a session value stays with its client; the other client never sees it (with the idle
    // connections taken in turns, it would be served by the one that ran it)
    await a.query("SELECT set_config('application_name', 'a_session', false)");
    for (let i = 0; i < 4; i++) {
      expect(await setting(a)).toBe('a_session');
      expect(await setting(b)).toBe(before);
    }
  });
});
