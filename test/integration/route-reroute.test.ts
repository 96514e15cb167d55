import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { dataRow, RawClient, serialize, STEADY, types } from '../support/protocol-client.js';
import { startRelay, unitsWithReason as units, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';
import { usePgClients } from '../support/pg-clients.js';

// A read a replica refuses as a write (25006: a volatile function behind a view, a user-defined
// operator) runs again on the primary, is counted as rerouted_readonly, and its shape goes to
// the primary from then on (issue 16). Where it ran is checked on the servers themselves.
const shared = sharedCluster();
const primary = shared.nodes.find((n) => n.role === 'primary')!;
const replicas = shared.nodes.filter((n) => n.role !== 'primary');
const relays: Relay[] = [];
const connect = usePgClients();
const sqls: postgres.Sql[] = [];

/** A relay whose reads go to a replica (lag under a busy machine does not send them to the primary). */
async function relayWith(): Promise<Relay> {
  const relay = await startRelay(shared, { ...STEADY, routing: { consistency: 'eventual', max_lag_ms: 60_000 } });
  relays.push(relay);
  const probe = new pg.Client({ connectionString: relay.url() });
  await probe.connect();
  try {
    const ports = replicas.map((r) => r.port);
    await vi.waitFor(async () => expect(ports).toContain(Number((await probe.query('SELECT inet_server_port() AS p')).rows[0].p)), { timeout: 20_000, interval: 50 });
  } finally {
    await probe.end();
  }
  return relay;
}

/** Rows the statements wrote with `tag`, on the primary, and the port of the server that wrote each. */
async function written(tag: string): Promise<number[]> {
  const rows = await queryNode<{ port: number }>(shared, primary.name, 'SELECT port FROM reroute_log WHERE tag = $1 ORDER BY id', [tag]);
  return rows.map((r) => Number(r.port));
}

beforeAll(async () => {
  await queryNode(
    shared,
    primary.name,
    `DROP VIEW IF EXISTS reroute_v; DROP OPERATOR IF EXISTS ### (text, int); DROP TABLE IF EXISTS reroute_log;
     CREATE TABLE reroute_log (id serial PRIMARY KEY, tag text, port int);
     CREATE OR REPLACE FUNCTION reroute_write(t text) RETURNS int LANGUAGE sql VOLATILE AS $$ INSERT INTO reroute_log (tag, port) VALUES (t, inet_server_port()) RETURNING port $$;
     CREATE VIEW reroute_v AS SELECT reroute_write(current_setting('application_name')) AS x, inet_server_port() AS p;
     CREATE OR REPLACE FUNCTION reroute_op(t text, n int) RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT reroute_write(t) + n $$;
     CREATE OPERATOR ### (LEFTARG = text, RIGHTARG = int, FUNCTION = reroute_op);
     CREATE OR REPLACE FUNCTION lower(t text, n int) RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT reroute_write(t) + n $$`,
  );
  for (const replica of replicas) {
    await vi.waitFor(async () => expect(await queryNode(shared, replica.name, "SELECT to_regclass('reroute_v') IS NOT NULL AS ok")).toEqual([{ ok: true }]), { timeout: 30_000, interval: 100 });
  }
});

afterAll(async () => {
  await Promise.all(sqls.map((s) => s.end({ timeout: 1 }).catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
  await queryNode(shared, primary.name, 'DROP VIEW IF EXISTS reroute_v; DROP OPERATOR IF EXISTS ### (text, int); DROP FUNCTION IF EXISTS reroute_op(text, int); DROP FUNCTION IF EXISTS lower(text, int); DROP FUNCTION IF EXISTS reroute_write(text); DROP TABLE IF EXISTS reroute_log');
});

describe('a read a replica refuses as a write runs on the primary', () => {
  it('a volatile function that writes behind a view, through pg (extended protocol)', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    await client.query("SET application_name = 'reroute_ext'");
    const first = await client.query({ text: 'SELECT x, p FROM reroute_v WHERE $1::int = 1', values: [1] });
    expect(first.rows).toEqual([{ x: primary.port, p: primary.port }]);
    expect(await units(relay, 'rerouted_readonly')).toBe(1);
    // the shape is remembered: the next one goes to the primary at once
    const second = await client.query({ text: 'SELECT x, p FROM reroute_v WHERE $1::int = 1', values: [1] });
    expect(second.rows).toEqual([{ x: primary.port, p: primary.port }]);
    expect(await units(relay, 'rerouted_readonly')).toBe(1);
    expect(await written('reroute_ext')).toEqual([primary.port, primary.port]);
    // other reads still go to the replicas
    const read = await client.query('SELECT inet_server_port() AS p');
    expect(replicas.map((r) => r.port)).toContain(Number(read.rows[0].p));
  });

  it('a volatile function that writes behind a view, through a simple Query (pg, then postgres.js)', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    await client.query("SET application_name = 'reroute_simple'");
    const first = await client.query('SELECT x, p FROM reroute_v');
    expect(first.rows).toEqual([{ x: primary.port, p: primary.port }]);
    expect(await units(relay, 'rerouted_readonly')).toBe(1);
    const second = await client.query('SELECT x, p FROM reroute_v');
    expect(second.rows).toEqual([{ x: primary.port, p: primary.port }]);
    expect(await units(relay, 'rerouted_readonly')).toBe(1);
    expect(await written('reroute_simple')).toEqual([primary.port, primary.port]);

    const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined, connection: { application_name: 'reroute_pgjs' } });
    sqls.push(sql);
    const rows = await sql.unsafe('SELECT x, p FROM reroute_v');
    expect(rows.map((r) => ({ x: Number(r.x), p: Number(r.p) }))).toEqual([{ x: primary.port, p: primary.port }]);
    expect(await written('reroute_pgjs')).toEqual([primary.port]);
  });

  it('a user-defined operator whose function writes', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    const first = await client.query("SELECT 'reroute_op'::text ### 1 AS v, inet_server_port() AS p");
    expect(first.rows).toEqual([{ v: primary.port + 1, p: primary.port }]);
    expect(await units(relay, 'rerouted_readonly')).toBe(1);
    expect(await written('reroute_op')).toEqual([primary.port]);
  });

  it('a user overload of a built-in read name (lower) whose function writes', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    const first = await client.query("SELECT lower('reroute_lower', 2) AS v, inet_server_port() AS p");
    expect(first.rows).toEqual([{ v: primary.port + 2, p: primary.port }]);
    expect(await units(relay, 'rerouted_readonly')).toBe(1);
    expect(await written('reroute_lower')).toEqual([primary.port]);
  });

  it('raw extended protocol: heads the client already has are not sent twice (Flush before Sync, then a pipeline)', async () => {
    const relay = await relayWith();
    const raw = await RawClient.connect(relay.port, { user: shared.user, password: shared.password, database: shared.database, params: { application_name: 'reroute_raw' } });
    try {
      const unit = (text: string) => [serialize.parse({ text }), serialize.bind({}), serialize.describe({ type: 'P' }), serialize.execute({})];
      // the answers up to the refusal reach the client before its Sync is sent
      raw.send(Buffer.concat([...unit("SELECT p::text FROM reroute_v WHERE 'flush' <> ''"), serialize.flush()]));
      const flushed = await raw.until('C');
      expect(types(flushed)).toEqual(['1', '2', 'T', 'D', 'C']);
      expect(dataRow(flushed[3]!.body)).toEqual([String(primary.port)]);
      raw.send(serialize.sync());
      expect(types(await raw.until('Z'))).toEqual(['Z']);
      expect(await units(relay, 'rerouted_readonly')).toBe(1);
      // the shape is remembered: behind a read on a replica, in one packet, the view goes to the primary
      raw.send(Buffer.concat([...unit('SELECT inet_server_port()::text'), serialize.sync(), ...unit("SELECT p::text FROM reroute_v WHERE 'pipeline' <> ''"), serialize.sync()]));
      const first = await raw.until('Z');
      const second = await raw.until('Z');
      expect(types(first)).toEqual(['1', '2', 'T', 'D', 'C', 'Z']);
      expect(types(second)).toEqual(['1', '2', 'T', 'D', 'C', 'Z']);
      expect(dataRow(second[3]!.body)).toEqual([String(primary.port)]);
      expect(await units(relay, 'rerouted_readonly')).toBe(1);
    } finally {
      raw.destroy();
    }
    expect(await written('reroute_raw')).toEqual([primary.port, primary.port]);
  });

  it('after rows reached the client the refusal is the client’s error, as today', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    // one Query, two statements: the first one's row is the client's before the replica refuses the second
    await expect(client.query("SELECT 1 AS one; SELECT x FROM reroute_v WHERE 'rows first' <> ''")).rejects.toMatchObject({ code: '25006' });
    expect(await units(relay, 'rerouted_readonly')).toBe(0);
    // the session goes on
    expect((await client.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
  });

  it('inside a transaction the refusal is the client’s error, as today', async () => {
    const relay = await relayWith();
    const client = await connect(relay);
    await client.query('BEGIN READ ONLY');
    await expect(client.query('SELECT x FROM reroute_v')).rejects.toMatchObject({ code: '25006' });
    await client.query('ROLLBACK');
    expect(await units(relay, 'rerouted_readonly')).toBe(0);
  });
});
