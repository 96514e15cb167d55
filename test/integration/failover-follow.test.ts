import { beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { Load } from '../support/failover-load.js';
import { startRelay, type Relay } from '../support/relay.js';
import { useCleanups } from '../support/cleanups.js';

// failover.mode follow: an external manager promotes; pgrelay never does, and follows the node
// that is out of recovery on the highest timeline. Own cluster (it stops and promotes nodes).
const cleanups = useCleanups();
let cluster: LocalCluster;
let relay: Relay;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 1, standby: true });
  cleanups.push(() => cluster.stop());
  await cluster.query('primary', Load.createTableSql('followed'));
  // the health role may not enter the database "postgres": the checks fall back to template1
  await cluster.query('primary', 'REVOKE CONNECT ON DATABASE postgres FROM PUBLIC', [], { superuser: true, database: 'postgres' });
  for (const node of ['standby1', 'replica1']) await cluster.waitForReplay(node);
  relay = await startRelay(cluster, { failover: { mode: 'follow', wait_ms: 60_000 }, routing: { max_lag_ms: 60_000 } });
  cleanups.push(() => relay.stop());
});

describe('follow mode', () => {
  it('does not promote anything when the primary goes away', async () => {
    for (const node of ['primary', 'standby1', 'replica1']) expect(relay.app.health.lastResult(node), node).toBeDefined();
    await cluster.stopNode('primary');
    await vi.waitFor(() => expect(relay.app.topology.node('primary')!.up).toBe(false), { timeout: 30_000, interval: 50 });
    // let the health checks see the standby a few more times: it stays a standby
    let checks = 0;
    const count = (name: string) => {
      if (name === 'standby1') checks++;
    };
    relay.app.health.on('checked', count);
    cleanups.push(async () => relay.app.health.off('checked', count));
    await vi.waitFor(() => expect(checks).toBeGreaterThanOrEqual(3), { timeout: 30_000, interval: 50 });
    expect(await cluster.query('standby1', 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: true }]);
    expect(relay.app.topology.primaryName).toBe('primary');
    expect(relay.app.failover.lastFailover).toBeUndefined();
  });

  it('follows the standby promoted by hand: writes waiting for a primary go there', async () => {
    const load = new Load(relay.url(), 'followed');
    cleanups.push(() => load.stop());
    load.start(4, 2); // their writes wait for a primary (failover.wait_ms)
    await cluster.promote('standby1'); // pg_ctl promote
    const port = cluster.node('standby1').port;
    await vi.waitFor(() => expect(load.acks.filter((a) => a.port === port).length).toBeGreaterThan(8), { timeout: 60_000, interval: 50 });
    await load.stop();

    expect(relay.app.topology.primaryName).toBe('standby1');
    expect(relay.app.failover.lastFailover).toMatchObject({ kind: 'follow', from: 'primary', to: 'standby1', timeline: 2 });
    expect(relay.app.topology.node('primary')!.fenced).toBe(true);
    expect(load.errorsOf('writer')).toEqual([]);
    expect(load.acks.every((a) => a.port === port)).toBe(true);
    const ids = new Set((await cluster.query<{ id: string }>('standby1', 'SELECT id FROM followed')).map((r) => Number(r.id)));
    expect(load.acks.filter((a) => !ids.has(a.id))).toEqual([]);
  });

  it('keeps the old primary fenced when it starts again on its old timeline', async () => {
    await cluster.startNode('primary');
    await vi.waitFor(() => expect(relay.app.topology.node('primary')).toMatchObject({ up: true, inRecovery: false, timeline: 1, fenced: true }), { timeout: 30_000, interval: 100 });
    expect(relay.app.topology.primaryName).toBe('standby1');
  });
});
