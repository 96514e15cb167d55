import { afterAll, describe, expect, it } from 'vitest';
import { ServerPipeline } from '../../src/pool/server-pipeline.js';
import { primaryOnly, startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { sharedCluster } from '../support/shared-cluster.js';
import { usePgClients } from '../support/pg-clients.js';

// Pipelining (pool.pipeline_depth): with every connection of the pool busy, self-contained units
// of several clients are queued on one server connection, and each client gets its own answers.
const shared = sharedCluster();
const cluster = primaryOnly(shared);
const primary = cluster.nodes[0]!.name;
const relays: Relay[] = [];
const connect = usePgClients();
const ends: (() => Promise<void>)[] = [];

async function relayWith(overrides: Record<string, unknown>): Promise<Relay> {
  const relay = await startProtocolRelay(cluster, overrides);
  relays.push(relay);
  return relay;
}

afterAll(async () => {
  for (const end of ends) await end();
  await Promise.all(relays.map((r) => r.stop()));
});

describe('pipelining', () => {
  it('answers each of 24 node-postgres clients with its own rows over one server connection (simple and extended)', async () => {
    const relay = await relayWith({ pool: { size: 1, pipeline_depth: 8 } });
    const clients = await Promise.all(Array.from({ length: 24 }, () => connect(relay)));
    // one sample of each shape first: only shapes known to be short are queued behind others
    await clients[0]!.query('SELECT 1 AS id, pg_backend_pid() AS pid');
    await clients[0]!.query('SELECT $1::int AS id, pg_backend_pid() AS pid', [1]);
    const before = ServerPipeline.queuedUnits;
    const pids = new Set<number>();
    await Promise.all(
      clients.map(async (client, id) => {
        for (let round = 0; round < 30; round++) {
          const simple = await client.query(`SELECT ${id} AS id, pg_backend_pid() AS pid`);
          expect(simple.rows).toEqual([{ id, pid: expect.any(Number) }]);
          const extended = await client.query('SELECT $1::int AS id, pg_backend_pid() AS pid', [id]);
          expect(extended.rows).toEqual([{ id, pid: expect.any(Number) }]);
          pids.add(simple.rows[0].pid);
          pids.add(extended.rows[0].pid);
        }
      }),
    );
    console.log("queued", ServerPipeline.queuedUnits - before);
    expect(pids.size).toBe(1);
    expect(ServerPipeline.queuedUnits - before).toBeGreaterThan(50);
    expect(relay.app.pools.get(primary, cluster.user, cluster.database).stats().active + relay.app.pools.get(primary, cluster.user, cluster.database).stats().idle).toBe(1);
  });
});
