import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { dataRow, RawClient, serialize, STEADY, type BackendMessage } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';

// Read-your-writes for a write pipelined behind a unit that attached the primary connection for
// another reason (a SET goes wherever the session is): the write's position is recorded, and a
// read right after it does not go to a replica that has not replayed it. A cluster of our own
// whose replica's replay is paused (the replica stays eligible on lag: max_lag_ms is huge), so
// a read that reaches the replica misses the row for certain.

let cluster: LocalCluster;
let relay: Relay;
let primaryPort: number;
let replicaPort: number;
const clients: pg.Client[] = [];

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 1, standby: false });
  primaryPort = cluster.node('primary').port;
  replicaPort = cluster.node('replica1').port;
  await cluster.query('primary', 'CREATE TABLE ryw (id int PRIMARY KEY)');
  await cluster.waitForReplay('replica1');
  await cluster.query('replica1', 'SELECT pg_wal_replay_pause()', [], { superuser: true, database: 'postgres' });
  relay = await startRelay(cluster, { ...STEADY, routing: { consistency: 'session', max_lag_ms: 3_600_000 } });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await relay?.stop();
  await cluster?.stop();
});

const rows = (messages: BackendMessage[]) => messages.filter((m) => m.type === 'D').map((m) => dataRow(m.body));
const query = (text: string) => serialize.query(text);

describe('read-your-writes for a write pipelined behind another unit', () => {
  it('a read of a fresh client goes to the paused replica (it is eligible)', async () => {
    const client = new pg.Client({ connectionString: relay.url() });
    clients.push(client);
    await client.connect();
    expect(Number((await client.query('SELECT inet_server_port() AS p')).rows[0].p)).toBe(replicaPort);
  });

  it('SET and INSERT in one packet, then a read: the read sees the row (it runs on the primary)', async () => {
    const raw = await RawClient.connect(relay.port, { user: cluster.user, password: cluster.password, database: cluster.database });
    try {
      raw.send(Buffer.concat([query("SET application_name = 'ryw'"), query('INSERT INTO ryw VALUES (1)')]));
      await raw.until('Z');
      await raw.until('Z');
      const answer = rows(await raw.query('SELECT count(*)::int, inet_server_port() FROM ryw WHERE id = 1'));
      expect(answer).toEqual([['1', String(primaryPort)]]);
    } finally {
      raw.destroy();
    }
    // the replica has not replayed it: a read there would have missed it
    expect(await cluster.query('replica1', 'SELECT count(*)::int AS n FROM ryw WHERE id = 1')).toEqual([{ n: 0 }]);
  });

  it('node-postgres, one statement at a time: SET, INSERT, then a read sees the row (a control)', async () => {
    const client = new pg.Client({ connectionString: relay.url() });
    clients.push(client);
    await client.connect();
    await client.query("SET application_name = 'ryw2'");
    await client.query('INSERT INTO ryw VALUES (2)');
    const row = (await client.query('SELECT count(*)::int AS n, inet_server_port() AS p FROM ryw WHERE id = 2')).rows[0];
    expect([row.n, Number(row.p)]).toEqual([1, primaryPort]);
  });
});
