import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';
import { usePgClients, usePostgresJs } from '../support/pg-clients.js';

// currval()/lastval() answer what nextval() last returned in the server backend. Under
// transaction pooling a client's autocommit nextval (explicit, or a column default) runs on a
// backend that may serve another client next (issue 16): the answer a client gets is its own
// value (the backend it drew on, when no other client used it since) or PostgreSQL's own 55000
// "not yet defined in this session" — never another client's value.
const shared = sharedCluster();
const primary = shared.nodes.find((n) => n.role === 'primary')!.name;
const relays: Relay[] = [];
const connect = usePgClients();
const pgjs = usePostgresJs();

async function relayWith(size: number): Promise<Relay> {
  const relay = await startProtocolRelay(shared, { pool: { size, checkout_timeout_ms: 30_000 } });
  relays.push(relay);
  return relay;
}

const value = (rows: { v: unknown }[]) => Number(rows[0]!.v);

beforeAll(async () => {
  await queryNode(
    shared,
    primary,
    `DROP TABLE IF EXISTS seq_items, seq_pairs; DROP SEQUENCE IF EXISTS seq_a, seq_pair;
     CREATE SEQUENCE seq_a;
     CREATE TABLE seq_items (id serial PRIMARY KEY, note text);
     CREATE SEQUENCE seq_pair;
     CREATE TABLE seq_pairs (x int DEFAULT nextval('seq_pair'), y text, z int DEFAULT -1 * currval('seq_pair'))`,
  );
});

afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()));
  await queryNode(shared, primary, 'DROP TABLE IF EXISTS seq_items, seq_pairs; DROP SEQUENCE IF EXISTS seq_a, seq_pair');
});

describe('currval and lastval after an autocommit nextval', () => {
  it('pool size 1, two clients drawing in turn: a client never reads the other’s value (55000 instead); with nobody in between, its own', async () => {
    const relay = await relayWith(1);
    const a = await connect(relay);
    const b = pgjs(relay);
    const mine = value((await a.query("SELECT nextval('seq_a') AS v")).rows);
    const theirs = value(await b`SELECT nextval('seq_a') AS v`);
    expect(theirs).toBeGreaterThan(mine);
    // the one backend last drew theirs: a is told its currval is not defined, not given theirs
    await expect(a.query("SELECT currval('seq_a') AS v")).rejects.toMatchObject({ code: '55000' });
    await expect(a.query('SELECT lastval() AS v')).rejects.toMatchObject({ code: '55000' });
    await expect(b`SELECT currval('seq_a') AS v`).rejects.toMatchObject({ code: '55000' });
    // a column default's nextval, then nobody in between: the answer is a's own (and pins a)
    const id = value((await a.query("INSERT INTO seq_items (note) VALUES ('a') RETURNING id AS v")).rows);
    expect(value((await a.query("SELECT currval('seq_items_id_seq') AS v")).rows)).toBe(id);
    expect(value((await a.query('SELECT lastval() AS v')).rows)).toBe(id);
    await a.end();
    // the backend a drew on is b's now: its sequence state is forgotten first
    await expect(b`SELECT lastval() AS v`).rejects.toMatchObject({ code: '55000' });
  });

  it('pool size 2: the next unit goes back to the backend the client drew on when no other client used it since (explicit nextval, a column default, a default read by another default)', async () => {
    const relay = await relayWith(2);
    const a = await connect(relay);
    const b = pgjs(relay);
    for (let round = 0; round < 3; round++) {
      // b holds one backend in a transaction while a draws on the other one
      await b`BEGIN`;
      const theirs = value(await b`SELECT nextval('seq_a') AS v`);
      const mine = value((await a.query("SELECT nextval('seq_a') AS v")).rows);
      const id = value((await a.query("INSERT INTO seq_items (note) VALUES ('a') RETURNING id AS v")).rows);
      await b`COMMIT`;
      // b's backend is now the idle one on top: a's next units still go to a's own
      expect(mine).not.toBe(theirs);
      expect(value((await a.query("SELECT currval('seq_a') AS v")).rows)).toBe(mine);
      expect(value((await a.query("SELECT currval('seq_items_id_seq') AS v")).rows)).toBe(id);
      expect(value((await a.query('SELECT lastval() AS v')).rows)).toBe(id);
      // b's own currval: its backend was used by nobody else
      expect(value(await b`SELECT currval('seq_a') AS v`)).toBe(theirs);
    }
  });

  it('pool size 2: a currval hidden in a column default reads the client’s own nextval', async () => {
    const relay = await relayWith(2);
    const a = await connect(relay);
    const b = pgjs(relay);
    await b`BEGIN`;
    await b`SELECT nextval('seq_pair')`;
    await a.query("INSERT INTO seq_pairs (y) VALUES ('a1')");
    await b`COMMIT`;
    // x given, z = -currval: the backend a drew on
    await a.query("INSERT INTO seq_pairs (x, y) VALUES (100, 'a2')");
    const rows = (await a.query<{ x: number; y: string; z: number }>("SELECT x, y, z FROM seq_pairs WHERE y LIKE 'a_' ORDER BY y")).rows;
    expect(rows[1]!.z).toBe(rows[0]!.z);
    expect(rows[0]!.z).toBe(-rows[0]!.x);
  });
});
