import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { Load } from '../support/failover-load.js';
import { startRelay, type Relay } from '../support/relay.js';
import { useCleanups } from '../support/cleanups.js';

// kill -9 of the primary under load, then of the promoted standby: managed failover keeps every
// acknowledged write, keeps idle clients connected, re-points the replicas, and fences the old
// primary when it comes back. This file builds its own cluster (it kills nodes).
const cleanups = useCleanups();
let cluster: LocalCluster;
let relay: Relay;

async function client(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: relay.url() });
  c.on('error', () => {});
  cleanups.push(() => c.end());
  await c.connect();
  return c;
}

/** Rows of a table on one node, straight from the server. */
async function idsOn(node: string, table: string): Promise<Set<number>> {
  const rows = await cluster.query<{ id: string }>(node, `SELECT id FROM ${table}`);
  return new Set(rows.map((r) => Number(r.id)));
}

/**
 * Re-pointed replicas replay a row written on the new primary. An asynchronous replica may have
 * received WAL past the point where the new timeline forked (it was ahead of the synchronous
 * standby when the primary was killed): it cannot follow without pg_rewind, which pgrelay cannot
 * run. Such a replica must then get no reads. At least `minFollowing` of them must follow.
 */
async function expectReplicasFollow(replicas: string[], id: string, minFollowing = 1): Promise<void> {
  const has = async (replica: string) => (await cluster.query(replica, 'SELECT 1 FROM chaos WHERE id = $1', [id]).catch(() => [])).length === 1;
  // settled: every replica follows, or gets no reads; and at least `minFollowing` follow
  const notFollowing = await vi.waitFor(
    async () => {
      const missing: string[] = [];
      for (const replica of replicas) if (!(await has(replica))) missing.push(replica);
      for (const replica of missing) {
        const node = relay.app.topology.node(replica)!;
        expect(node.fresh && node.replicating, `${replica} does not follow the new primary and still serves reads`).toBe(false);
      }
      expect(replicas.length - missing.length).toBeGreaterThanOrEqual(minFollowing);
      return missing;
    },
    { timeout: 30_000, interval: 100 },
  );
  for (const replica of notFollowing) {
    const node = relay.app.topology.node(replica)!;
    console.log(`[chaos] ${replica} does not follow the new primary (diverged before the fork): fresh=${node.fresh}, replicating=${node.replicating}, reason=${node.staleReason}`);
  }
}

async function status(): Promise<{ primary: string; nodes: { name: string; fenced: boolean; up: boolean }[] }> {
  return (await fetch(`${relay.adminUrl}/status`)).json() as never;
}

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: true });
  cleanups.push(() => cluster.stop());
  await cluster.query('primary', Load.createTableSql('chaos'));
  // the replicas must stay eligible under load on a busy machine: only failover is tested here
  relay = await startRelay(cluster, { pool: { size: 12 }, routing: { max_lag_ms: 60_000 } });
  cleanups.push(() => relay.stop());
});

describe('managed failover after kill -9', () => {
  let killedAt = 0;
  let load: Load;
  let idle: pg.Client;
  let inTransaction: pg.Client;

  it('keeps every acknowledged write, and readers and idle clients see no error', async () => {
    idle = await client();
    expect((await idle.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    inTransaction = await client();
    await inTransaction.query('BEGIN');
    await inTransaction.query("INSERT INTO chaos (writer, seq) VALUES (-1, 1)");

    load = new Load(relay.url(), 'chaos');
    cleanups.push(() => load.stop());
    load.start(8, 8);
    await vi.waitFor(() => expect(new Set(load.acks.map((a) => a.writer)).size).toBe(8), { timeout: 60_000, interval: 50 });
    await vi.waitFor(() => expect(load.reads).toBeGreaterThan(50), { timeout: 60_000, interval: 50 });
    await vi.waitFor(() => expect(load.acks.length).toBeGreaterThan(60), { timeout: 60_000, interval: 50 });

    killedAt = performance.now();
    await cluster.signalNode('primary', 'SIGKILL');
    const standbyPort = cluster.node('standby1').port;
    // writes succeed again through pgrelay, on the promoted standby
    await vi.waitFor(() => expect(load.acksAfter(killedAt).filter((a) => a.port === standbyPort).length).toBeGreaterThan(8), { timeout: 15_000, interval: 50 });
    await load.stop();

    expect(relay.app.topology.primaryName).toBe('standby1');
    expect(relay.app.failover.lastFailover).toMatchObject({ kind: 'failover', from: 'primary', to: 'standby1', dataLoss: false });
    const onNewPrimary = await idsOn('standby1', 'chaos');
    const lost = load.acks.filter((a) => !onNewPrimary.has(a.id));
    expect(lost).toEqual([]);
    expect(load.errorsOf('reader')).toEqual([]);
    // every writer error is about the connection to the dead primary, never a wrong answer
    for (const error of load.errorsOf('writer')) expect(error.code).toMatch(/^(08006|08007|08000|57P01|57P03)$/);

    // the idle client was connected before, idle during, and works after
    expect((await idle.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
    const write = await idle.query<{ port: number }>("INSERT INTO chaos (writer, seq) VALUES (-2, 1) RETURNING inet_server_port() AS port");
    expect(write.rows[0]!.port).toBe(standbyPort);

    const metrics = await (await fetch(`${relay.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/^pgrelay_failovers_total 1$/m);
    expect(metrics).toMatch(/^pgrelay_node_up\{node="primary",role="primary"\} 0$/m);
  });

  it('tells a client whose transaction was on the dead primary, and keeps its connection usable', async () => {
    await expect(inTransaction.query('SELECT 1')).rejects.toMatchObject({ code: '08006', message: expect.stringMatching(/connection to node primary lost/) });
    await inTransaction.query('ROLLBACK');
    const after = await inTransaction.query<{ port: number }>("INSERT INTO chaos (writer, seq) VALUES (-1, 2) RETURNING inet_server_port() AS port");
    expect(after.rows[0]!.port).toBe(cluster.node('standby1').port);
    // the uncommitted row of that transaction is nowhere
    expect(await cluster.query('standby1', 'SELECT 1 FROM chaos WHERE writer = -1 AND seq = 1')).toEqual([]);
  });

  it('re-points the replicas: they replay writes made on the new primary', async () => {
    const marker = await idle.query<{ id: string }>("INSERT INTO chaos (writer, seq) VALUES (-3, 1) RETURNING id");
    const id = marker.rows[0]!.id;
    await expectReplicasFollow(['replica1', 'replica2'], id);
    // and one of them became the new primary's synchronous standby (only once it streamed)
    await vi.waitFor(async () => {
      const rows = await cluster.query<{ application_name: string }>('standby1', "SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'", [], { superuser: true });
      expect(rows.map((r) => r.application_name)).toEqual([expect.stringMatching(/^replica[12]$/)]);
    }, { timeout: 30_000, interval: 100 });
  });

  it('fences the old primary when it comes back: no unit reaches it', async () => {
    await cluster.startNode('primary'); // it starts as a primary, on the old timeline
    const oldPort = cluster.node('primary').port;
    await vi.waitFor(() => expect(relay.app.topology.node('primary')).toMatchObject({ up: true, inRecovery: false, fenced: true }), { timeout: 30_000, interval: 100 });
    expect((await status()).nodes.find((n) => n.name === 'primary')).toMatchObject({ fenced: true, up: true });

    const c = await client();
    const ports = new Set<number>();
    for (let i = 0; i < 40; i++) {
      ports.add((await c.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port);
      ports.add((await c.query<{ port: number }>("INSERT INTO chaos (writer, seq) VALUES (-4, $1) RETURNING inet_server_port() AS port", [i])).rows[0]!.port);
    }
    expect(ports.has(oldPort)).toBe(false);
    expect(ports.has(cluster.node('standby1').port)).toBe(true);
    // pgrelay's only sessions there are its own monitoring connections
    const sessions = await cluster.query<{ application_name: string }>('primary', "SELECT application_name FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = 'app'", [], { superuser: true });
    expect(sessions.filter((s) => !s.application_name.startsWith('pgrelay '))).toEqual([]);
    expect(await cluster.query('primary', 'SELECT 1 FROM chaos WHERE writer = -4')).toEqual([]);
  });

  it('fails over a second time, to the new synchronous standby', async () => {
    // pgrelay must have seen the new primary's synchronous standby before it dies
    await vi.waitFor(() => {
      const peers = relay.app.health.lastResult('standby1')?.peers ?? [];
      expect(peers.some((p) => p.syncState === 'sync')).toBe(true);
    }, { timeout: 30_000, interval: 100 });
    const sync = relay.app.health.lastResult('standby1')!.peers.find((p) => p.syncState === 'sync')!.applicationName;

    const second = new Load(relay.url(), 'chaos');
    cleanups.push(() => second.stop());
    second.start(4, 4);
    await vi.waitFor(() => expect(second.acks.length).toBeGreaterThan(40), { timeout: 60_000, interval: 50 });
    const killed = performance.now();
    await cluster.signalNode('standby1', 'SIGKILL');
    const port = cluster.node(sync).port;
    await vi.waitFor(() => expect(second.acksAfter(killed).filter((a) => a.port === port).length).toBeGreaterThan(4), { timeout: 15_000, interval: 50 });
    await second.stop();

    expect(relay.app.topology.primaryName).toBe(sync);
    expect(relay.app.failover.lastFailover).toMatchObject({ kind: 'failover', from: 'standby1', to: sync });
    const ids = await idsOn(sync, 'chaos');
    expect(second.acks.filter((a) => !ids.has(a.id))).toEqual([]);
    expect(load.acks.filter((a) => !ids.has(a.id))).toEqual([]);
    expect(second.errorsOf('reader')).toEqual([]);
    // the last replica follows the newest primary
    const other = sync === 'replica1' ? 'replica2' : 'replica1';
    const marker = await idle.query<{ id: string }>("INSERT INTO chaos (writer, seq) VALUES (-5, 1) RETURNING id");
    await expectReplicasFollow([other], marker.rows[0]!.id, 0);
  });
});
