import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { startRelay, type Relay } from '../support/relay.js';

// Freshness is judged against the *current* primary (DESIGN, "Pitfalls"): after the primary
// moves, an async replica still attached to the old one must not serve reads, whether the old
// primary is dead (its WAL receiver is not streaming) or back on its old timeline (streaming, with
// a replay position that may even be ahead of the new primary's). Own cluster: this test stops
// and promotes nodes. pgrelay runs in follow mode (an external manager promotes; pgrelay follows).

const WAIT = { timeout: 30_000, interval: 50 };
let cluster: LocalCluster;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 3, standby: false });
  await cluster.query('primary', 'CREATE TABLE notes (id bigint PRIMARY KEY, body text)');
  for (const name of ['replica1', 'replica2', 'replica3']) await cluster.waitForReplay(name);
});

afterAll(async () => {
  await cluster?.stop();
});

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  onTestFinished(() => c.end().catch(() => undefined));
  await c.connect();
  return c;
}

async function replayLsn(name: string): Promise<string> {
  const [row] = await cluster.query<{ lsn: string }>(name, 'SELECT pg_last_wal_replay_lsn()::text AS lsn');
  return row!.lsn;
}

describe('freshness after the primary moves', () => {
  it('a replica still attached to the old primary gets no reads; one re-pointed to the new primary does', async () => {
    const relay: Relay = await startRelay(cluster, {
      routing: { consistency: 'eventual', lag_interval_ms: 100, balance: 'round_robin' },
      health: { interval_ms: 250 },
      failover: { mode: 'follow', wait_ms: 60_000 },
    });
    onTestFinished(() => relay.stop());
    const { topology } = relay.app;
    const port = (name: string) => cluster.node(name).port;
    await vi.waitFor(() => {
      for (const name of ['replica1', 'replica2', 'replica3']) expect(topology.node(name)!.fresh).toBe(true);
    }, WAIT);

    // The old primary stops cleanly (every replica gets its last WAL), replica2 is promoted.
    await cluster.stopNode('primary', 'fast');
    await vi.waitFor(async () => {
      const positions = await Promise.all(['replica1', 'replica2', 'replica3'].map(replayLsn));
      expect(new Set(positions).size).toBe(1);
    }, WAIT);
    await cluster.promote('replica2');
    await vi.waitFor(() => expect(topology.primaryName).toBe('replica2'), WAIT);

    // replica1 and replica3 still point at the dead primary: not streaming, no reads
    await vi.waitFor(() => {
      for (const name of ['replica1', 'replica3']) {
        expect(topology.node(name)!.fresh).toBe(false);
        expect(topology.node(name)!.staleReason).toMatch(/WAL receiver|primary changed/);
      }
    }, WAIT);
    const c = await client(relay.url());
    await c.query("INSERT INTO notes VALUES (1, 'after the failover')");
    for (let i = 0; i < 20; i++) {
      const { rows } = await c.query<{ port: number; n: number }>('SELECT inet_server_port() AS port, count(*)::int AS n FROM notes WHERE id = 1');
      expect(rows[0]).toEqual({ port: port('replica2'), n: 1 });
    }

    // replica3 is re-pointed at the new primary: it streams its timeline and serves reads again
    await cluster.repoint('replica3', 'replica2');
    await vi.waitFor(() => expect(topology.node('replica3')!.fresh).toBe(true), WAIT);
    await vi.waitFor(async () => {
      const { rows } = await c.query<{ port: number; n: number }>('SELECT inet_server_port() AS port, count(*)::int AS n FROM notes WHERE id = 1');
      expect(rows[0]).toEqual({ port: port('replica3'), n: 1 });
    }, WAIT);

    // The old primary comes back on its old timeline (pgrelay fences it); replica1 streams from it
    // again, and now looks perfectly caught up by LSN alone. It must stay out.
    await cluster.startNode('primary');
    await vi.waitFor(() => expect(topology.node('primary')!.fenced).toBe(true), WAIT);
    await vi.waitFor(async () => {
      const [row] = await cluster.query<{ status: string | null }>('replica1', 'SELECT (SELECT status FROM pg_stat_wal_receiver) AS status');
      expect(row!.status).toBe('streaming');
      expect(topology.node('replica1')!.staleReason).toMatch(/timeline 1 while the primary replica2 is on timeline 2|streams from primary, which is not the primary/);
    }, WAIT);
    const [newPrimary] = await cluster.query<{ lsn: string }>('replica2', 'SELECT pg_current_wal_lsn()::text AS lsn');
    console.log(`[freshness] replica1 following the returned old primary: replay ${await replayLsn('replica1')}, new primary at ${newPrimary!.lsn}; excluded: ${topology.node('replica1')!.staleReason}`);
    expect(topology.node('replica1')!.fresh).toBe(false);
    const seen = new Map<number, number>();
    for (let i = 0; i < 200; i++) {
      await c.query("INSERT INTO notes VALUES ($1, 'new primary only')", [100 + i]);
      const { rows } = await c.query<{ port: number; n: number }>('SELECT inet_server_port() AS port, count(*)::int AS n FROM notes WHERE id <= $1', [100 + i]);
      seen.set(rows[0]!.port, (seen.get(rows[0]!.port) ?? 0) + 1);
    }
    console.log(`[freshness] reads after the old primary came back: ${JSON.stringify(Object.fromEntries([...seen].map(([p, n]) => [cluster.nodes.find((x) => x.port === p)!.name, n])))}`);
    expect(seen.get(port('replica1'))).toBeUndefined();
    expect(seen.get(port('primary'))).toBeUndefined();
  });
});
