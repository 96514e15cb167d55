import pg from 'pg';
import postgres from 'postgres';
import { serialize } from 'pg-protocol';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { RawClient } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// A read whose server connection is lost before any of its answer reached the client runs again
// on another connection: the client sees its rows, not an error. Writes, reads inside a
// transaction and reads the client has already had bytes of are not run again (08006 as before;
// 08007 for what may have written).
// The connection is lost with pg_terminate_backend (FATAL 57P01, then the server closes it), on
// whichever node the read went to.

const cluster = sharedCluster();
let relay: Relay;
const clients: pg.Client[] = [];

beforeAll(async () => {
  relay = await startRelay(cluster);
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await relay?.stop();
});

async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url() });
  client.on('error', () => undefined);
  clients.push(client);
  await client.connect();
  return client;
}

/** Terminates the backend (on any node) running a statement that contains `tag`; returns its node. */
async function terminateWhenRunning(tag: string): Promise<string> {
  let victim = '';
  await vi.waitFor(
    async () => {
      for (const node of cluster.nodes) {
        const rows = await queryNode<{ ok: boolean }>(
          cluster,
          node.name,
          "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
          [tag],
          true,
        );
        if (rows.some((r) => r.ok)) {
          victim = node.name;
          return;
        }
      }
      throw new Error(`no backend runs ${tag} yet`);
    },
    { timeout: 20_000, interval: 25 },
  );
  return victim;
}

function tag(name: string): string {
  return `replay_${name}_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
}

describe('a read whose server connection is lost before it answered', () => {
  it('runs again (simple protocol): node-postgres gets its row', async () => {
    const client = await connect();
    const t = tag('simple');
    const result = client.query(`SELECT pg_sleep(1) AS slept, 42 AS answer /* ${t} */`);
    const victim = await terminateWhenRunning(t);
    expect((await result).rows[0].answer).toBe(42);
    expect((await client.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    console.log(`[replay] simple read terminated on ${victim}: answered after running again`);
  });

  it('runs again (extended protocol, parameters): node-postgres and postgres.js get their rows', async () => {
    const client = await connect();
    const t = tag('extended');
    const result = client.query(`SELECT pg_sleep($1::float8) AS slept, $2::int AS answer /* ${t} */`, [1, 7]);
    await terminateWhenRunning(t);
    expect((await result).rows[0].answer).toBe(7);

    const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    try {
      const t2 = tag('postgresjs');
      const rows = sql.unsafe(`SELECT pg_sleep($1::float8) AS slept, $2::int AS answer /* ${t2} */`, [1, 9], { prepare: true }).execute(); // postgres.js queries are lazy
      await terminateWhenRunning(t2);
      expect((await rows)[0]!.answer).toBe(9);
    } finally {
      await sql.end({ timeout: 5 });
    }
  });

  it('runs again with a DEALLOCATE the client sent behind it (pgrelay answers that one itself), as a Query or through Parse/Bind/Execute: the client gets both answers, in order', async () => {
    const raw = await RawClient.connect(relay.port, { user: cluster.user, password: cluster.password, database: cluster.database });
    const types = (messages: { type: string }[]) => messages.map((m) => m.type);
    try {
      for (const form of ['simple', 'extended'] as const) {
        raw.send(Buffer.concat([serialize.parse({ name: 's1', text: 'SELECT 1' }), serialize.sync()]));
        expect(types(await raw.until('Z'))).toEqual(['1', 'Z']);
        const t = tag(`deallocate_${form}`);
        const read = `SELECT pg_sleep(1) AS slept, 42 AS answer /* ${t} */`;
        const extended = (text: string) => [serialize.parse({ text }), serialize.bind({}), serialize.execute({}), serialize.sync()];
        // both in one write: the DEALLOCATE waits behind the read, whose connection is then lost
        raw.send(Buffer.concat(form === 'simple' ? [serialize.query(read), serialize.query('DEALLOCATE s1')] : [...extended(read), ...extended('DEALLOCATE s1')]));
        await terminateWhenRunning(t);
        const answer = await raw.until('Z');
        expect(types(answer)).toEqual(form === 'simple' ? ['T', 'D', 'C', 'Z'] : ['1', '2', 'D', 'C', 'Z']);
        expect(answer.find((m) => m.type === 'D')!.body.toString('latin1')).toContain('42');
        const deallocate = await raw.until('Z');
        expect(types(deallocate)).toEqual(form === 'simple' ? ['C', 'Z'] : ['1', '2', 'C', 'Z']);
        expect(deallocate.find((m) => m.type === 'C')!.body.toString('latin1')).toContain('DEALLOCATE');
        // the name is gone, as on a direct connection
        raw.send(Buffer.concat([serialize.bind({ statement: 's1' }), serialize.execute({}), serialize.sync()]));
        expect(types(await raw.until('Z'))).toEqual(['E', 'Z']);
      }
    } finally {
      raw.destroy();
    }
  });

  it('is not run again when it may write (08007: it may have committed; the client stays usable)', async () => {
    const client = await connect();
    const t = tag('write');
    const result = client.query(`/* pgrelay:primary */ SELECT pg_sleep(1) AS slept /* ${t} */`).then(() => 'answered', (e: unknown) => e);
    await terminateWhenRunning(t);
    expect(await result).toMatchObject({ code: '08007' });
    expect((await client.query('SELECT 2 AS two')).rows[0].two).toBe(2);
  });

  it('is not run again inside a transaction (the transaction is gone: 08006, then ROLLBACK)', async () => {
    const client = await connect();
    const t = tag('transaction');
    await client.query('BEGIN READ ONLY');
    const result = client.query(`SELECT pg_sleep(1) AS slept /* ${t} */`).then(() => 'answered', (e: unknown) => e);
    await terminateWhenRunning(t);
    expect(await result).toMatchObject({ code: '08006' });
    await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await client.query('ROLLBACK');
    expect((await client.query('SELECT 3 AS three')).rows[0].three).toBe(3);
  });

  it('is not run again once rows reached the client', async () => {
    const client = await connect();
    const t = tag('streamed');
    // the first rows are sent before the sleep of the last one
    const result = client.query(`SELECT g, CASE WHEN g = 5000 THEN pg_sleep(2) END FROM generate_series(1, 5000) g /* ${t} */`).then(() => 'answered', (e: unknown) => e);
    await terminateWhenRunning(t);
    expect(await result).toMatchObject({ code: '08006' });
    expect((await client.query('SELECT 4 AS four')).rows[0].four).toBe(4);
  });
});
