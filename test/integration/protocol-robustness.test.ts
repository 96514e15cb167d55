import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { errorFields, primaryOnly, RawClient, rawMessage, serialize, startupPacket, types, type RawLogin, startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// Bad input at the protocol level, from a raw socket: the offending client gets an ErrorResponse
// with the right SQLSTATE and is closed, everyone else goes on. Clean ends (Terminate) and abrupt
// ones (a socket closed mid-transaction) leave no server connection in a transaction.
const shared = sharedCluster();
const cluster = primaryOnly(shared);
const primary = cluster.nodes[0]!.name;
let relay: Relay;
const raws: RawClient[] = [];
const clients: pg.Client[] = [];

function login(params: Record<string, string> = {}): RawLogin {
  return { user: cluster.user, password: cluster.password, database: cluster.database, params };
}

async function raw(params: Record<string, string> = {}): Promise<RawClient> {
  const client = await RawClient.connect(relay.port, login(params));
  raws.push(client);
  return client;
}

async function pgClient(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url() });
  clients.push(client);
  await client.connect();
  return client;
}

function poolStats() {
  return relay.app.pools.get(primary, cluster.user, cluster.database).stats();
}

/** The FATAL error a client got before the server closed its connection. */
async function fatalThenClosed(client: RawClient): Promise<Map<string, string>> {
  const messages = await client.closedByServer();
  expect(types(messages)).toEqual(['E']);
  const fields = errorFields(messages[0]!.body);
  expect(fields.get('S')).toBe('FATAL');
  return fields;
}

beforeAll(async () => {
  relay = await startProtocolRelay(cluster, { pool: { size: 4 }, client: { max_message_bytes: 64 * 1024 } });
  await queryNode(shared, primary, 'DROP TABLE IF EXISTS proto_robust; CREATE TABLE proto_robust (id int)');
});

afterAll(async () => {
  for (const r of raws) r.destroy();
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await relay?.stop();
});

describe('malformed client input', () => {
  it('answers an unknown message type with 08P01 and closes that client only, while another query runs', async () => {
    const other = await pgClient();
    const bad = await raw();
    const running = other.query('SELECT pg_sleep(0.3), 42 AS v');
    bad.send(rawMessage('?', Buffer.from('garbage')));
    const fields = await fatalThenClosed(bad);
    expect(fields.get('C')).toBe('08P01');
    expect(fields.get('M')).toMatch(/invalid frontend message type 63/);
    expect((await running).rows[0].v).toBe(42);
    expect((await other.query('SELECT 1 AS v')).rows[0].v).toBe(1);
  });

  it('answers a message with an invalid length with 08P01 and closes the client', async () => {
    const bad = await raw();
    bad.send(rawMessage('Q', Buffer.from('SELECT 1\0'), 2));
    const fields = await fatalThenClosed(bad);
    expect(fields.get('C')).toBe('08P01');
    expect(fields.get('M')).toMatch(/invalid message length/);
  });

  it('refuses a message larger than client.max_message_bytes before buffering it', async () => {
    const bad = await raw();
    const header = Buffer.alloc(5);
    header[0] = 'Q'.charCodeAt(0);
    header.writeInt32BE(10 * 1024 * 1024, 1);
    bad.send(header); // only the header: pgrelay must not wait for 10 MB
    const fields = await fatalThenClosed(bad);
    expect(fields.get('C')).toBe('08P01');
    expect(fields.get('M')).toMatch(/exceeds the limit/);
  });

  it('passes on the server\'s 08P01 for a Bind whose body is malformed, and the session goes on', async () => {
    const client = await raw();
    // a Bind whose parameter count promises more than it holds: PostgreSQL reports 08P01 itself
    client.send(Buffer.concat([serialize.parse({ text: 'SELECT $1::int' }), rawMessage('B', Buffer.from([0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9])), serialize.sync()]));
    const messages = await client.until('Z');
    const error = messages.find((m) => m.type === 'E');
    expect(error && errorFields(error.body).get('C')).toBe('08P01');
    // the session goes on, as it does against PostgreSQL
    expect(types(await client.query('SELECT 1'))).toEqual(['T', 'D', 'C', 'Z']);
  });
});

describe('ends of a session', () => {
  it('closes cleanly on Terminate and gives the server connection back', async () => {
    const client = await raw();
    await client.query('SELECT 1');
    client.send(serialize.end());
    expect(await client.closedByServer()).toEqual([]);
    await vi.waitFor(() => expect(poolStats().active).toBe(0), { timeout: 30_000, interval: 20 });
  });

  it('does not leave a transaction open on the server when a client disconnects mid-transaction', async () => {
    const name = 'proto-robust-midtx';
    const client = await raw({ application_name: name });
    expect(types(await client.query('BEGIN'))).toEqual(['C', 'Z']);
    expect(types(await client.query('INSERT INTO proto_robust VALUES (1)'))).toEqual(['C', 'Z']);
    const during = await queryNode<{ state: string }>(shared, primary, 'SELECT state FROM pg_stat_activity WHERE application_name = $1', [name], true);
    expect(during).toEqual([{ state: 'idle in transaction' }]);
    client.destroy();
    await vi.waitFor(
      async () => {
        const rows = await queryNode(shared, primary, "SELECT pid FROM pg_stat_activity WHERE usename = $1 AND state LIKE 'idle in transaction%' AND application_name = $2", [cluster.user, name], true);
        expect(rows).toEqual([]);
      },
      { timeout: 30_000, interval: 100 },
    );
    expect(await queryNode(shared, primary, 'SELECT id FROM proto_robust')).toEqual([]);
    // and nothing of the app user in the whole cluster is left idle in a transaction by pgrelay
    await vi.waitFor(async () => {
      const stuck = await queryNode(shared, primary, "SELECT pid FROM pg_stat_activity WHERE usename = $1 AND state LIKE 'idle in transaction%' AND application_name LIKE 'proto-robust%'", [cluster.user], true);
      expect(stuck).toEqual([]);
    }, { timeout: 30_000, interval: 100 });
  });

  it('does not leave a transaction open when a client disconnects in the middle of a result', async () => {
    const name = 'proto-robust-midresult';
    const client = await raw({ application_name: name });
    await client.query('BEGIN');
    client.send(serialize.query("SELECT repeat('x', 1000) FROM generate_series(1, 100000)"));
    await client.next(); // the result has started
    client.destroy();
    await vi.waitFor(
      async () => {
        const rows = await queryNode(shared, primary, 'SELECT state FROM pg_stat_activity WHERE application_name = $1', [name], true);
        expect(rows).toEqual([]);
      },
      { timeout: 30_000, interval: 100 },
    );
    const other = await pgClient();
    expect((await other.query('SELECT 7 AS v')).rows[0].v).toBe(7);
  });
});

describe('startup packets', () => {
  it('answers protocol 3.2 with NegotiateProtocolVersion (3.0, unknown _pq_ options listed) and serves the client', async () => {
    const client = await RawClient.open(relay.port);
    raws.push(client);
    const seen = await client.login({ ...login({ '_pq_.test_option': 'on' }), protocol: (3 << 16) | 2 });
    const negotiate = seen.find((m) => m.type === 'v');
    expect(negotiate).toBeDefined();
    expect(negotiate!.body.readInt32BE(0)).toBe(196608); // newest supported: 3.0
    expect(negotiate!.body.readInt32BE(4)).toBe(1);
    expect(negotiate!.body.toString('utf8', 8)).toBe('_pq_.test_option\0');
    const rows = await client.query('SELECT 5');
    expect(types(rows)).toEqual(['T', 'D', 'C', 'Z']);
  });

  it('refuses protocol 2.0 with FATAL 0A000', async () => {
    const client = await RawClient.open(relay.port);
    raws.push(client);
    client.send(startupPacket(2 << 16, { user: cluster.user, database: cluster.database }));
    const fields = await fatalThenClosed(client);
    expect(fields.get('C')).toBe('0A000');
    expect(fields.get('M')).toMatch(/unsupported frontend protocol 2\.0/);
  });

  it('refuses an invalid startup packet length with 08P01', async () => {
    const client = await RawClient.open(relay.port);
    raws.push(client);
    const packet = Buffer.alloc(8);
    packet.writeInt32BE(4, 0);
    packet.writeInt32BE(196608, 4);
    client.send(packet);
    const fields = await fatalThenClosed(client);
    expect(fields.get('C')).toBe('08P01');
  });
});
