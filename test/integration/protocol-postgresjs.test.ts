import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// postgres.js through pgrelay. postgres.js pipelines queries on one connection, prepares every
// query by default (Parse + Describe statement + Flush, then Bind/Execute/Sync once it knows the
// parameter types) and cancels with its own CancelRequest: the driver that stresses the unit
// boundary most.
const cluster = sharedCluster();
let relay: Relay;
const opened: postgres.Sql[] = [];

function connect(options: postgres.Options<Record<string, postgres.PostgresType>> = {}): postgres.Sql {
  const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined, ...options });
  opened.push(sql);
  return sql;
}

beforeAll(async () => {
  relay = await startProtocolRelay(cluster, { pool: { size: 4, checkout_timeout_ms: 30_000 } });
  await queryNode(cluster, 'primary', 'DROP TABLE IF EXISTS proto_pgjs; CREATE TABLE proto_pgjs (id int PRIMARY KEY, label text)');
});

afterAll(async () => {
  await Promise.all(opened.map((sql) => sql.end({ timeout: 1 }).catch(() => undefined)));
  await relay?.stop();
});

describe('postgres.js through pgrelay', () => {
  it('runs simple and extended queries, with and without parameters', async () => {
    const sql = connect();
    expect(await sql`SELECT 1 AS one`).toEqual([{ one: 1 }]);
    expect(await sql`SELECT ${2}::int + ${3}::int AS sum`).toEqual([{ sum: 5 }]);
    expect(await sql`SELECT ${'text'}::text AS t, ${null}::int AS n`).toEqual([{ t: 'text', n: null }]);
    // the same shape again: the statement is prepared already, only Bind/Execute/Sync go out
    expect(await sql`SELECT ${20}::int + ${30}::int AS sum`).toEqual([{ sum: 50 }]);
    expect(await sql.unsafe('SELECT $1::int * 2 AS v', [21], { prepare: false })).toEqual([{ v: 42 }]);
    const [row] = await sql.unsafe('SELECT 7 AS v');
    expect(row).toEqual({ v: 7 });
  });

  it('runs a multi-statement simple query with sql.unsafe', async () => {
    const sql = connect();
    const results = await sql.unsafe(`
      INSERT INTO proto_pgjs VALUES (1, 'one'), (2, 'two') RETURNING id;
      UPDATE proto_pgjs SET label = upper(label) WHERE id = 2 RETURNING label;
      SELECT id, label FROM proto_pgjs WHERE id <= 2 ORDER BY id;
    `);
    expect(results).toHaveLength(3);
    expect([...results[0]]).toEqual([{ id: 1 }, { id: 2 }]);
    expect([...results[1]]).toEqual([{ label: 'TWO' }]);
    expect([...results[2]]).toEqual([
      { id: 1, label: 'one' },
      { id: 2, label: 'TWO' },
    ]);
    // an error in the second statement: the first statement's work is rolled back with it
    await expect(sql.unsafe("INSERT INTO proto_pgjs VALUES (3, 'three'); SELECT 1 / 0; SELECT 2")).rejects.toMatchObject({ code: '22012' });
    expect(await sql`SELECT count(*)::int AS n FROM proto_pgjs WHERE id = 3`).toEqual([{ n: 0 }]);
  });

  it('pipelines 200 queries on one connection and gets every answer in order', async () => {
    const sql = connect({ max: 1 });
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 3 === 0 ? sql`SELECT ${i}::int AS v` : i % 3 === 1 ? sql`SELECT ${i}::int + 0 AS v` : sql.unsafe(`SELECT ${i} AS v`))));
    expect(answers.map((rows) => rows[0]!.v)).toEqual(Array.from({ length: 200 }, (_, i) => i));
  });

  it('runs transactions with sql.begin, commits and rolls back', async () => {
    const sql = connect();
    const inserted = await sql.begin(async (tx) => {
      await tx`INSERT INTO proto_pgjs VALUES (10, 'tx')`;
      const [row] = await tx`SELECT label FROM proto_pgjs WHERE id = ${10}`;
      return row!.label;
    });
    expect(inserted).toBe('tx');
    await expect(
      sql.begin(async (tx) => {
        await tx`INSERT INTO proto_pgjs VALUES (11, 'rolled back')`;
        throw new Error('abort on purpose');
      }),
    ).rejects.toThrow('abort on purpose');
    const rows = await queryNode<{ id: number }>(cluster, 'primary', 'SELECT id FROM proto_pgjs WHERE id IN (10, 11) ORDER BY id');
    expect(rows).toEqual([{ id: 10 }]);
  });

  it('recovers from an error in the middle of a transaction', async () => {
    const sql = connect();
    await expect(
      sql.begin(async (tx) => {
        await tx`INSERT INTO proto_pgjs VALUES (20, 'x')`;
        await tx`SELECT * FROM proto_no_such_table`;
      }),
    ).rejects.toMatchObject({ code: '42P01' });
    // errors in a savepoint do not end the transaction
    const label = await sql.begin(async (tx) => {
      await tx`INSERT INTO proto_pgjs VALUES (21, 'kept')`;
      await tx.savepoint((sp) => sp`SELECT 1 / ${0}::int`).catch((error: { code: string }) => expect(error.code).toBe('22012'));
      const [row] = await tx`SELECT label FROM proto_pgjs WHERE id = ${21}`;
      return row!.label;
    });
    expect(label).toBe('kept');
    await expect(sql`SELECT ${1}::int / 0`).rejects.toMatchObject({ code: '22012' });
    expect(await sql`SELECT ${5}::int AS v`).toEqual([{ v: 5 }]);
    expect(await queryNode(cluster, 'primary', 'SELECT id FROM proto_pgjs WHERE id IN (20, 21) ORDER BY id')).toEqual([{ id: 21 }]);
  });

  it('shares prepared statements across 16 clients on 4 server connections', async () => {
    const clients = Array.from({ length: 16 }, () => connect());
    await Promise.all(
      clients.map(async (sql, c) => {
        for (let i = 0; i < 70; i++) {
          const [row] = await sql`SELECT ${c}::int * 1000 + ${i}::int AS v, ${`c${c}`}::text AS who`;
          expect(row).toEqual({ v: c * 1000 + i, who: `c${c}` });
        }
      }),
    );
    const primary = cluster.nodes.find((n) => n.role === 'primary')!.name;
    const stats = relay.app.pools.get(primary, cluster.user, cluster.database).stats();
    expect(stats.idle + stats.active).toBeLessThanOrEqual(4);
  });

  it('delivers notifications to sql.listen', async () => {
    const listener = connect();
    const notifier = connect();
    const received: string[] = [];
    const { unlisten } = await listener.listen('proto_pgjs_channel', (payload) => received.push(payload));
    await notifier.notify('proto_pgjs_channel', 'first');
    await notifier`SELECT pg_notify('proto_pgjs_channel', ${'second'})`;
    await vi.waitFor(() => expect(received).toEqual(['first', 'second']), { timeout: 30_000, interval: 50 });
    await unlisten();
  });

  it('copies in with .writable() and out with .readable()', async () => {
    const sql = connect();
    await sql`DROP TABLE IF EXISTS proto_pgjs_copy`;
    await sql`CREATE TABLE proto_pgjs_copy (id int, label text)`;
    const lines = Array.from({ length: 20_000 }, (_, i) => `${i}\tlabel ${i}\n`);
    await pipeline(Readable.from(lines), await sql`COPY proto_pgjs_copy FROM STDIN`.writable());
    expect(await sql`SELECT count(*)::int AS n, sum(id)::int AS s FROM proto_pgjs_copy`).toEqual([{ n: 20_000, s: (19_999 * 20_000) / 2 }]);
    let text = '';
    await pipeline(
      await sql`COPY (SELECT id, label FROM proto_pgjs_copy ORDER BY id) TO STDOUT`.readable(),
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          text += chunk.toString();
          callback();
        },
      }),
    );
    const out = text.split('\n').filter(Boolean);
    expect(out).toHaveLength(20_000);
    expect(out[12_345]).toBe('12345\tlabel 12345');
    // the connection is usable after both copies
    expect(await sql`SELECT ${1}::int AS v`).toEqual([{ v: 1 }]);
  });

  it('cancels a running query with query.cancel() and stays usable', async () => {
    const sql = connect();
    await sql`SELECT 1`; // connected: the cancel key is known
    const sleeping = sql`SELECT pg_sleep(30) /* postgres.js cancel */`;
    const settled = sleeping.then(
      () => undefined,
      (error: unknown) => error,
    );
    await vi.waitFor(async () => {
      const rows = await queryNode(cluster, 'primary', "SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30) /* postgres.js cancel */' AND state = 'active'");
      expect(rows).toHaveLength(1);
    }, { timeout: 30_000, interval: 50 });
    const started = Date.now();
    sleeping.cancel();
    expect(await settled).toMatchObject({ code: '57014' });
    expect(Date.now() - started).toBeLessThan(25_000); // generous: well under the 30 s sleep
    expect(await sql`SELECT ${2}::int AS v`).toEqual([{ v: 2 }]);
  });
});
