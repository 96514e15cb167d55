import pg from 'pg';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { sharedCluster } from '../support/shared-cluster.js';

// Server-side prepared statements are bounded per server connection (pool.max_prepared_statements,
// as PgBouncer's max_prepared_statements): past the cap the least recently used is closed on that
// connection, and a client naming it again still gets correct answers (pgrelay prepares it again).
const shared = sharedCluster();
const relays: Relay[] = [];
const clients: pg.Client[] = [];
const sqls: postgres.Sql[] = [];
const CAP = 5;

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await Promise.all(sqls.map((s) => s.end({ timeout: 1 }).catch(() => undefined)));
  await Promise.all(relays.map((r) => r.stop()));
});

async function cappedRelay(): Promise<Relay> {
  const relay = await startProtocolRelay(shared, { pool: { size: 1, checkout_timeout_ms: 30_000, max_prepared_statements: CAP } });
  relays.push(relay);
  return relay;
}

/** Server-side statements on the relay's only server connection (pgrelay's own names). */
async function serverStatements(client: pg.Client): Promise<number> {
  return Number((await client.query("SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name LIKE 'pgrelay\\_%'")).rows[0].n);
}

describe('pool.max_prepared_statements', () => {
  it('pg named statements beyond the cap all answer correctly, in any order; the server connection holds at most the cap', async () => {
    const relay = await cappedRelay();
    const a = new pg.Client({ connectionString: relay.url() });
    clients.push(a);
    await a.connect();
    const b = new pg.Client({ connectionString: relay.url() });
    clients.push(b);
    await b.connect();
    const run = async (client: pg.Client, i: number) => Number((await client.query({ name: `q${i}`, text: `SELECT $1::int + ${i} AS v`, values: [1000] })).rows[0].v);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3 * CAP; i++) expect(await run(a, i)).toBe(1000 + i);
      expect(await serverStatements(a)).toBeLessThanOrEqual(CAP);
      // another client on the same server connection, its own names for some of the same texts
      for (let i = 3 * CAP - 1; i >= 0; i -= 2) expect(await run(b, i)).toBe(1000 + i);
    }
    // in a transaction too, and pipelined without waiting
    await a.query('BEGIN');
    const answers = await Promise.all(Array.from({ length: 2 * CAP }, (_, i) => run(a, i)));
    expect(answers).toEqual(Array.from({ length: 2 * CAP }, (_, i) => 1000 + i));
    await a.query('COMMIT');
    expect(await serverStatements(b)).toBeLessThanOrEqual(CAP);
  });

  it('postgres.js prepared queries beyond the cap, pipelined', async () => {
    const relay = await cappedRelay();
    const sql = postgres(relay.url(), { max: 2, prepare: true, onnotice: () => undefined });
    sqls.push(sql);
    const check = new pg.Client({ connectionString: relay.url() });
    clients.push(check);
    await check.connect();
    for (let round = 0; round < 3; round++) {
      const results = await Promise.all(Array.from({ length: 4 * CAP }, (_, i) => sql.unsafe(`SELECT $1::int * ${i + 1} AS v`, [round + 1], { prepare: true })));
      expect(results.map((r) => Number(r[0]!.v))).toEqual(Array.from({ length: 4 * CAP }, (_, i) => (round + 1) * (i + 1)));
    }
    expect(await serverStatements(check)).toBeLessThanOrEqual(CAP);
  });
});
