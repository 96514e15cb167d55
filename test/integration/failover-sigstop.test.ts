import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { Load } from '../support/failover-load.js';
import { startRelay, type Relay } from '../support/relay.js';
import { useCleanups } from '../support/cleanups.js';

// A network-silent primary: every process of the node is stopped (SIGSTOP), so connections hang
// instead of being refused. Only the health-check timeout can find it. Own cluster (it stops nodes).
const cleanups = useCleanups();
let cluster: LocalCluster;
let relay: Relay;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: true });
  cleanups.push(() => cluster.stop());
  await cluster.query('primary', Load.createTableSql('silent'));
  relay = await startRelay(cluster, { pool: { size: 8 }, routing: { max_lag_ms: 60_000 }, health: { interval_ms: 500, timeout_ms: 1000, failures: 3 } });
  cleanups.push(() => relay.stop());
});

describe('a primary that stops answering (SIGSTOP)', () => {
  it('is found by the health-check timeout and failed over, with no acknowledged write lost', async () => {
    const load = new Load(relay.url(), 'silent');
    cleanups.push(() => load.stop());
    load.start(4, 4);
    await vi.waitFor(() => expect(load.acks.length).toBeGreaterThan(60), { timeout: 60_000, interval: 50 });

    const stoppedAt = performance.now();
    await cluster.signalNode('primary', 'SIGSTOP');
    cleanups.push(() => cluster.signalNode('primary', 'SIGCONT'));
    const standbyPort = cluster.node('standby1').port;
    await vi.waitFor(() => expect(load.acksAfter(stoppedAt).filter((a) => a.port === standbyPort).length).toBeGreaterThan(4), { timeout: 60_000, interval: 50 });
    await load.stop();

    const record = relay.app.failover.lastFailover;
    expect(record).toMatchObject({ kind: 'failover', from: 'primary', to: 'standby1', dataLoss: false });
    // found by the check timeout (connects hang), not by a refused connection
    expect(relay.app.topology.node('primary')!.lastError).toMatch(/time(d)? ?out|timeout expired/i);
    const ids = new Set((await cluster.query<{ id: string }>('standby1', 'SELECT id FROM silent')).map((r) => Number(r.id)));
    expect(load.acks.filter((a) => !ids.has(a.id))).toEqual([]);
    // writes that hung on the stopped primary got an error when it was given up, never a wrong answer
    for (const error of load.errorsOf('writer')) expect(error.code).toMatch(/^(08006|08007|08000|57P01|57P03)$/);
    expect(load.reconnects).toBe(0);
  });

  it('keeps the old primary fenced once it runs again (SIGCONT)', async () => {
    await cluster.signalNode('primary', 'SIGCONT');
    await vi.waitFor(() => expect(relay.app.topology.node('primary')).toMatchObject({ up: true, inRecovery: false, fenced: true }), { timeout: 30_000, interval: 100 });
    const client = new pg.Client({ connectionString: relay.url() });
    client.on('error', () => {});
    cleanups.push(() => client.end());
    await client.connect();
    const oldPort = cluster.node('primary').port;
    for (let i = 0; i < 30; i++) {
      expect((await client.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port).not.toBe(oldPort);
      expect((await client.query<{ port: number }>('INSERT INTO silent (writer, seq) VALUES (-1, $1) RETURNING inet_server_port() AS port', [i])).rows[0]!.port).toBe(cluster.node('standby1').port);
    }
    const status = (await (await fetch(`${relay.adminUrl}/status`)).json()) as { primary: string; nodes: { name: string; fenced: boolean }[] };
    expect(status.primary).toBe('standby1');
    expect(status.nodes.find((n) => n.name === 'primary')!.fenced).toBe(true);
  });
});
