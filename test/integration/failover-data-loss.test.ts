import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { startRelay, type Relay } from '../support/relay.js';
import { useCleanups } from '../support/cleanups.js';

// The standby and then the primary are lost: only an asynchronous replica is left. Managed
// failover must not promote it (acknowledged writes may be missing there) unless
// failover.allow_data_loss says so; mode off never changes the primary. Own cluster.
const cleanups = useCleanups();
let cluster: LocalCluster;
let managed: Relay;
let off: Relay;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 1, standby: true });
  cleanups.push(() => cluster.stop());
  await cluster.query('primary', 'CREATE TABLE lossy (id serial PRIMARY KEY)');
  const common = { health: { interval_ms: 500, timeout_ms: 1000, failures: 3 } };
  managed = await startRelay(cluster, { ...common, failover: { wait_ms: 1500 } });
  cleanups.push(() => managed.stop());
  off = await startRelay(cluster, { ...common, failover: { mode: 'off', wait_ms: 1500 } });
  cleanups.push(() => off.stop());
});

async function write(relay: Relay): Promise<number> {
  const client = new pg.Client({ connectionString: relay.url() });
  client.on('error', () => {});
  await client.connect();
  try {
    return (await client.query<{ port: number }>('INSERT INTO lossy DEFAULT VALUES RETURNING inet_server_port() AS port')).rows[0]!.port;
  } finally {
    await client.end();
  }
}

describe('no synchronous standby left', () => {
  it('does not promote an asynchronous replica: writes wait failover.wait_ms, then 57P03', async () => {
    await cluster.stopNode('standby1', 'immediate');
    await vi.waitFor(() => expect(managed.app.topology.node('standby1')!.up).toBe(false), { timeout: 30_000, interval: 50 });
    await cluster.signalNode('primary', 'SIGKILL');
    for (const relay of [managed, off]) await vi.waitFor(() => expect(relay.app.topology.node('primary')!.up).toBe(false), { timeout: 30_000, interval: 50 });
    // a few more rounds of checks: still nobody promoted
    let checks = 0;
    const count = (name: string) => void (name === 'replica1' && checks++);
    managed.app.health.on('checked', count);
    cleanups.push(async () => managed.app.health.off('checked', count));
    await vi.waitFor(() => expect(checks).toBeGreaterThanOrEqual(4), { timeout: 30_000, interval: 50 });
    expect(await cluster.query('replica1', 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: true }]);
    expect(managed.app.failover.lastFailover).toBeUndefined();
    await expect(write(managed)).rejects.toMatchObject({ code: '57P03', message: expect.stringMatching(/no primary is available/) });
  });

  it('with allow_data_loss (applied by a reload) promotes the replica holding the most WAL', async () => {
    managed.app.reload({ ...managed.config, failover: { ...managed.config.failover, allow_data_loss: true } });
    await vi.waitFor(() => expect(managed.app.topology.primaryName).toBe('replica1'), { timeout: 30_000, interval: 50 });
    expect(managed.app.failover.lastFailover).toMatchObject({ kind: 'failover', from: 'primary', to: 'replica1', dataLoss: true });
    expect(await write(managed)).toBe(cluster.node('replica1').port);
  });

  it('mode off never changes the primary (health only): writes keep waiting, then 57P03', async () => {
    await vi.waitFor(() => expect(off.app.topology.node('replica1')).toMatchObject({ up: true, inRecovery: false, role: 'primary' }), { timeout: 30_000, interval: 50 });
    expect(off.app.topology.primaryName).toBe('primary');
    expect(off.app.failover.lastFailover).toBeUndefined();
    // a client's startup needs the primary too: it waits failover.wait_ms, then is refused
    await expect(write(off)).rejects.toMatchObject({ code: '57P03' });
  });
});
