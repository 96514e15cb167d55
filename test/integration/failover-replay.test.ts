import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { startRelay, type Relay } from '../support/relay.js';
import { useCleanups } from '../support/cleanups.js';

// kill -9 of a node under a read that runs there, while the pool holds another connection to it
// whose backend has not died yet (here: stopped with SIGSTOP, so that it cannot). The read runs
// again; it must not go to that connection (it dies a moment later, and a read runs again only
// once), but wait until health checks have decided about the node. A primary alone, no failover:
// reads fall back to it (no replica), and the read waits for it to come back.
// Own cluster (it kills its primary).
const cleanups = useCleanups();
let cluster: LocalCluster;
let relay: Relay;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 0, standby: false });
  cleanups.push(() => cluster.stop());
  relay = await startRelay(cluster, {
    pool: { size: 2 },
    failover: { mode: 'off', wait_ms: 60_000 },
    health: { interval_ms: 500, timeout_ms: 1000, failures: 2 },
  });
  cleanups.push(() => relay.stop());
});

async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url() });
  client.on('error', () => undefined);
  cleanups.push(() => client.end().catch(() => undefined));
  await client.connect();
  return client;
}

describe('a read whose node was killed under it', () => {
  it('runs again only once health checks have decided about the node, not on a pooled connection to it that dies a moment later', async () => {
    const [reader, other] = [await connect(), await connect()];
    const tag = `killed_${Date.now()}`;
    // two pooled connections to the primary: both busy at once, then idle
    await Promise.all([reader.query(`SELECT pg_sleep(0.3) /* warm_${tag} */`), other.query(`SELECT pg_sleep(0.3) /* warm_${tag} */`)]);
    const result = reader.query(`SELECT pg_sleep(1) AS slept, 42 AS answer /* read_${tag} */`).then(
      (r) => r.rows[0].answer as number,
      (e: unknown) => e,
    );
    let idle = 0;
    await vi.waitFor(
      async () => {
        const rows = await cluster.query<{ pid: number; state: string; query: string }>('primary', 'SELECT pid, state, query FROM pg_stat_activity WHERE query LIKE $1', [`%_${tag} */`]);
        expect(rows.filter((r) => r.query.includes(`read_${tag}`) && r.state === 'active')).toHaveLength(1);
        const idleOnes = rows.filter((r) => r.query.includes(`warm_${tag}`) && r.state === 'idle');
        expect(idleOnes).toHaveLength(1);
        idle = idleOnes[0]!.pid;
      },
      { timeout: 10_000, interval: 25 },
    );
    // the idle connection's backend cannot notice the postmaster's death yet
    process.kill(idle, 'SIGSTOP');
    cleanups.push(async () => {
      try {
        process.kill(idle, 'SIGCONT');
      } catch {
        // gone already
      }
    });
    await cluster.signalNode('primary', 'SIGKILL');
    // the read's backend dies at once; health checks mark the node down
    await vi.waitFor(() => expect(relay.app.topology.node('primary')!.up).toBe(false), { timeout: 15_000, interval: 25 });
    // the stopped backend now dies too (its connection ends), and the node comes back
    process.kill(idle, 'SIGCONT');
    await vi.waitFor(() => expect(() => process.kill(idle, 0)).toThrow(), { timeout: 10_000, interval: 25 });
    await cluster.startNode('primary');
    // the read ran again once, on a new connection: its row, not 08006
    expect(await result).toBe(42);
    expect((await reader.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  });
});
