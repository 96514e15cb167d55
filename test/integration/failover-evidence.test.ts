import { beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { startRelay, type Relay } from '../support/relay.js';
import { useCleanups } from '../support/cleanups.js';

// pgrelay (re)started while the primary is already down has never seen the primary's replication
// state, so it does not know which node has every acknowledged commit: the `standby` role in the
// YAML is a hint, not evidence. Managed failover must not promote anything then, unless
// failover.allow_data_loss says so. Own cluster.
const cleanups = useCleanups();
let cluster: LocalCluster;
let relay: Relay;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 0, standby: true });
  cleanups.push(() => cluster.stop());
  await cluster.query('primary', 'CREATE TABLE evidence (id serial PRIMARY KEY)');
  await cluster.stopNode('primary', 'immediate');
  relay = await startRelay(cluster, { health: { interval_ms: 300, timeout_ms: 1000, failures: 2 }, failover: { wait_ms: 500 } });
  cleanups.push(() => relay.stop());
});

describe('failover without evidence', () => {
  it('pgrelay started while the primary is down does not promote the configured standby', async () => {
    await vi.waitFor(() => expect(relay.app.topology.node('primary')!.up).toBe(false), { timeout: 30_000, interval: 50 });
    // many rounds of checks (each one lets failover try again): still nobody promoted
    let checks = 0;
    const count = (name: string) => void (name === 'standby1' && checks++);
    relay.app.health.on('checked', count);
    cleanups.push(async () => relay.app.health.off('checked', count));
    await vi.waitFor(() => expect(checks).toBeGreaterThanOrEqual(8), { timeout: 30_000, interval: 50 });
    expect(relay.app.failover.lastFailover).toBeUndefined();
    expect(await cluster.query('standby1', 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: true }]);
  });

  it('with allow_data_loss (applied by a reload) it promotes, and says that it may have lost data', async () => {
    relay.app.reload({ ...relay.config, failover: { ...relay.config.failover, allow_data_loss: true } });
    await vi.waitFor(() => expect(relay.app.topology.primaryName).toBe('standby1'), { timeout: 30_000, interval: 50 });
    expect(relay.app.failover.lastFailover).toMatchObject({ kind: 'failover', from: 'primary', to: 'standby1', dataLoss: true });
    expect(await cluster.query('standby1', 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: false }]);
  });
});
