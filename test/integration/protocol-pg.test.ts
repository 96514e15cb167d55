import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// node-postgres through pgrelay: the wire protocol as a real driver uses it, with transaction
// pooling onto few server connections. Everything here runs against the real local cluster; the
// relays front the primary only, so that a read right after a write cannot land on a lagging
// replica (routing is tested elsewhere).
const cluster = sharedCluster();
let relay: Relay;
const clients: pg.Client[] = [];

async function connect(options: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url(), ...options });
  clients.push(client);
  await client.connect();
  return client;
}

beforeAll(async () => {
  relay = await startProtocolRelay(cluster, { pool: { size: 4, checkout_timeout_ms: 30_000 } });
  await queryNode(cluster, 'primary', 'DROP TABLE IF EXISTS proto_pg; CREATE TABLE proto_pg (id serial PRIMARY KEY, name text, n int)');
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await relay?.stop();
});

describe('node-postgres through pgrelay', () => {
  it('logs in with SCRAM and runs simple and extended queries', async () => {
    const client = await connect();
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect((await client.query('SELECT $1::int + $2::int AS sum', [2, 3])).rows).toEqual([{ sum: 5 }]);
    const multi = await client.query('SELECT 1 AS a; SELECT 2 AS b');
    expect(Array.isArray(multi)).toBe(true);
  });

  it('rejects a wrong password with 28P01', async () => {
    const client = new pg.Client({ connectionString: relay.url({ password: 'wrong' }) });
    await expect(client.connect()).rejects.toMatchObject({ code: '28P01' });
  });

  it('rejects an unknown user with the same error as a wrong password', async () => {
    const client = new pg.Client({ connectionString: relay.url({ user: 'nobody', password: 'x' }) });
    await expect(client.connect()).rejects.toMatchObject({ code: '28P01', message: 'password authentication failed for user "nobody"' });
  });

  it('writes and reads back through the proxy', async () => {
    const client = await connect();
    await client.query("INSERT INTO proto_pg (name, n) VALUES ('a', 1), ('b', 2)");
    const rows = await queryNode<{ name: string }>(cluster, 'primary', 'SELECT name FROM proto_pg ORDER BY id');
    expect(rows.map((r) => r.name)).toEqual(expect.arrayContaining(['a', 'b']));
  });

  it('reuses named prepared statements 1,000 times across 16 clients sharing 4 server connections', async () => {
    const many = await Promise.all(Array.from({ length: 16 }, () => connect()));
    await Promise.all(
      many.map(async (client, c) => {
        for (let i = 0; i < 1000 / 16 + 1; i++) {
          const result = await client.query({ name: 'add_two', text: 'SELECT $1::int + 2 AS v', values: [c * 1000 + i] });
          expect(result.rows[0].v).toBe(c * 1000 + i + 2);
          if (i % 10 === 0) {
            const other = await client.query({ name: `other_${c % 3}`, text: `SELECT $1::text || '-${c % 3}' AS v`, values: ['x'] });
            expect(other.rows[0].v).toBe(`x-${c % 3}`);
          }
        }
      }),
    );
    const pools = relay.app.pools.all();
    const serverConnections = pools.reduce((sum, p) => sum + p.stats().idle + p.stats().active, 0);
    expect(serverConnections).toBeLessThanOrEqual(4);
  });

  it('recovers from an error in the middle of a transaction', async () => {
    const client = await connect();
    await client.query('BEGIN');
    await client.query("INSERT INTO proto_pg (name) VALUES ('in-tx')");
    await expect(client.query('SELECT * FROM no_such_table')).rejects.toMatchObject({ code: '42P01' });
    await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await client.query('ROLLBACK');
    expect((await client.query('SELECT 2 AS two')).rows[0].two).toBe(2);
    const rows = await queryNode(cluster, 'primary', "SELECT 1 FROM proto_pg WHERE name = 'in-tx'");
    expect(rows).toHaveLength(0);
  });

  it('recovers from an error in an extended-protocol unit', async () => {
    const client = await connect();
    await expect(client.query('SELECT $1::int / 0', [1])).rejects.toMatchObject({ code: '22012' });
    expect((await client.query('SELECT $1::int AS v', [7])).rows[0].v).toBe(7);
  });

  it('keeps SET search_path to the client that set it, with clients sharing one server connection', async () => {
    const tiny = await startProtocolRelay(cluster, { pool: { size: 1, checkout_timeout_ms: 30_000 } });
    try {
      await queryNode(cluster, 'primary', 'CREATE SCHEMA IF NOT EXISTS proto_a; DROP TABLE IF EXISTS proto_a.t; CREATE TABLE proto_a.t (v text); INSERT INTO proto_a.t VALUES (\'from a\')');
      const a = new pg.Client({ connectionString: tiny.url() });
      const b = new pg.Client({ connectionString: tiny.url() });
      await a.connect();
      await b.connect();
      try {
        await a.query('SET search_path TO proto_a, public');
        for (let i = 0; i < 5; i++) {
          expect((await a.query('SHOW search_path')).rows[0].search_path).toBe('proto_a, public');
          expect((await b.query('SHOW search_path')).rows[0].search_path).toBe('"$user", public');
          expect((await a.query('SELECT v FROM t')).rows[0].v).toBe('from a');
          await expect(b.query('SELECT v FROM t')).rejects.toMatchObject({ code: '42P01' });
        }
        await a.query('RESET search_path');
        expect((await a.query('SHOW search_path')).rows[0].search_path).toBe('"$user", public');
      } finally {
        await a.end();
        await b.end();
      }
    } finally {
      await tiny.stop();
    }
  });

  it('applies startup parameters (application_name, options) per client', async () => {
    const client = await connect({ application_name: 'proto-test', options: '-c statement_timeout=1234' } as pg.ClientConfig);
    expect((await client.query('SHOW application_name')).rows[0].application_name).toBe('proto-test');
    expect((await client.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('1234ms');
    const other = await connect();
    expect((await other.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('0');
  });

  it('copies in and out', async () => {
    const client = await connect();
    await queryNode(cluster, 'primary', 'DROP TABLE IF EXISTS proto_copy; CREATE TABLE proto_copy (id int, label text)');
    const lines = Array.from({ length: 5000 }, (_, i) => `${i}\tlabel ${i}\n`);
    await pipeline(Readable.from(lines), client.query(copyFrom('COPY proto_copy FROM STDIN')));
    expect((await client.query('SELECT count(*)::int AS n, sum(id)::bigint AS s FROM proto_copy')).rows[0]).toEqual({ n: 5000, s: String((4999 * 5000) / 2) });
    let text = '';
    await pipeline(
      client.query(copyTo('COPY (SELECT id, label FROM proto_copy ORDER BY id) TO STDOUT')),
      new Writable({
        write(chunk, _enc, cb) {
          text += chunk.toString();
          cb();
        },
      }),
    );
    expect(text.split('\n').filter(Boolean)).toHaveLength(5000);
    expect(text.startsWith('0\tlabel 0\n')).toBe(true);
  });

  it('streams a 1,000,000-row result with the right count and sum', async () => {
    const client = await connect();
    const result = await client.query('SELECT g AS n FROM generate_series(1, 1000000) g');
    expect(result.rows).toHaveLength(1_000_000);
    let sum = 0;
    for (const row of result.rows) sum += row.n;
    expect(sum).toBe((1_000_000 * 1_000_001) / 2);
  });

  it('delivers NOTIFY to a listening client', async () => {
    const listener = await connect();
    const notifier = await connect();
    const received: string[] = [];
    listener.on('notification', (n) => received.push(n.payload ?? ''));
    await listener.query('LISTEN proto_channel');
    await notifier.query("NOTIFY proto_channel, 'hello'");
    await notifier.query("SELECT pg_notify('proto_channel', 'again')");
    await vi.waitFor(() => expect(received).toEqual(['hello', 'again']), { timeout: 30_000, interval: 50 });
  });

  it('cancels pg_sleep(30) long before it ends, and the client stays usable', async () => {
    const client = await connect();
    const sleeping = client.query('SELECT pg_sleep(30) /* protocol-pg cancel */');
    sleeping.catch(() => undefined);
    await vi.waitFor(async () => {
      const rows = await queryNode(cluster, 'primary', "SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30) /* protocol-pg cancel */' AND state = 'active'");
      expect(rows).toHaveLength(1);
    }, { timeout: 30_000, interval: 50 });
    const started = Date.now();
    // the key the client got from pgrelay at startup (what libpq's PQcancel would send)
    const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
    await sendCancelRequest(relay.port, processID, secretKey);
    await expect(sleeping).rejects.toMatchObject({ code: '57014' });
    expect(Date.now() - started).toBeLessThan(25_000); // generous (a loaded machine): well under the 30 s sleep
    expect((await client.query('SELECT 1 AS v')).rows[0].v).toBe(1);
  });
});

async function sendCancelRequest(port: number, processId: number, secretKey: number): Promise<void> {
  const net = await import('node:net');
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      const packet = Buffer.alloc(16);
      packet.writeInt32BE(16, 0);
      packet.writeInt32BE(80877102, 4);
      packet.writeInt32BE(processId, 8);
      packet.writeInt32BE(secretKey, 12);
      socket.end(packet);
    });
    socket.on('close', () => resolve());
    socket.on('error', reject);
  });
}
