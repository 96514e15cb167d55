import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { LocalCluster } from '../../src/local/cluster.js';
import { useCleanups } from '../support/cleanups.js';
import { leastPrivilegeRoles } from '../support/least-privilege-roles.js';
import { capturedLog } from '../support/relay.js';

// Failover with least-privilege roles, against a cluster of its own (primary, synchronous
// standby, one replica):
// 1. the monitor role is the application's (no pg_monitor): it cannot see which standby is
//    synchronous, so pgrelay says at start that failover is impossible, and on a kill -9 of the
//    primary it promotes nothing and says why (even with a superuser for failover);
// 2. the README's roles (pgrelay_monitor with pg_monitor, pgrelay_failover with the PostgreSQL 15
//    grants, no superuser) fail over: the standby is promoted, no acknowledged write is lost, the
//    replica is re-pointed and becomes the new primary's synchronous standby;
// 3. the same failover role carries out a switchover (ALTER SYSTEM default_transaction_read_only,
//    ending the application's sessions on the old primary through pg_signal_backend).

const WAIT = { timeout: 60_000, interval: 50 };
const PASSWORD = { shop: 'shop-pw-51', monitor: 'monitor-pw-52', failover: 'failover-pw-53' };
const cleanups = useCleanups();
let cluster: LocalCluster;
/** the relay of the README's roles (tests 2 and 3) */
let minimal: Awaited<ReturnType<typeof startRelay>>;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 1, standby: true });
  cleanups.push(() => cluster.stop());
  for (const sql of leastPrivilegeRoles(PASSWORD)) await cluster.query('primary', sql, [], { superuser: true, database: 'postgres' });
  await cluster.query('primary', 'CREATE TABLE lpf_orders (id bigserial PRIMARY KEY, note text)');
  await cluster.query('primary', 'GRANT SELECT, INSERT ON lpf_orders TO shop; GRANT USAGE ON SEQUENCE lpf_orders_id_seq TO shop');
  for (const name of ['standby1', 'replica1']) await cluster.waitForReplay(name);
});

async function startRelay(extra: Record<string, unknown>): Promise<{ app: App; url: string; logs: Record<string, unknown>[] }> {
  const { log, lines: logs } = capturedLog();
  const doc = {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    nodes: cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
    users: [{ name: 'shop', password: PASSWORD.shop }],
    health: { interval_ms: 300, timeout_ms: 1000, failures: 3 },
    ...extra,
  };
  const app = await App.start(parseConfig(stringify(doc), { source: 'test' }), { log, processMetrics: false });
  cleanups.push(() => app.stop());
  return { app, url: `postgres://shop:${PASSWORD.shop}@127.0.0.1:${app.listenAddress!.port}/app`, logs };
}

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  cleanups.push(() => c.end().catch(() => undefined));
  await c.connect();
  return c;
}

async function insert(c: pg.Client, note: string): Promise<number> {
  return (await c.query<{ port: number }>('INSERT INTO lpf_orders (note) VALUES ($1) RETURNING inet_server_port() AS port', [note])).rows[0]!.port;
}

describe('failover with least-privilege roles', () => {
  it('without pg_monitor for health: says at start that failover is impossible, and promotes nothing when the primary dies', async () => {
    const relay = await startRelay({ health: { interval_ms: 300, timeout_ms: 1000, failures: 3 }, failover: { wait_ms: 500, user: cluster.superuser, password: cluster.superuserPassword } });
    expect(relay.app.preflight.report!.failover).toMatchObject({ state: 'impossible', reason: expect.stringContaining('cannot see pg_stat_replication.sync_state') });
    const c = await client(relay.url);
    expect(await insert(c, 'before')).toBe(cluster.node('primary').port);
    await cluster.signalNode('primary', 'SIGKILL');
    await vi.waitFor(() => expect(relay.app.topology.node('primary')!.up).toBe(false), WAIT);
    await vi.waitFor(() => {
      const line = relay.logs.find((l) => l.msg === 'primary is down and cannot be failed over: no node has every acknowledged commit');
      expect(line?.reason).toMatch(/which standby was synchronous is not known: the monitor role could not see pg_stat_replication.sync_state/);
    }, WAIT);
    expect(await cluster.query('standby1', 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: true }]);
    expect(relay.app.failover.lastFailover).toBeUndefined();
    await relay.app.stop();
    await cluster.startNode('primary');
    await cluster.waitForReplay('standby1');
  });

  it('pg_monitor + the PostgreSQL 15 failover grants (no superuser): promotes the standby, loses nothing, re-points the replica', async () => {
    const relay = (minimal = await startRelay({
      health: { interval_ms: 300, timeout_ms: 1000, failures: 3, user: 'pgrelay_monitor', password: PASSWORD.monitor },
      failover: { wait_ms: 30_000, user: 'pgrelay_failover', password: PASSWORD.failover },
    }));
    const report = relay.app.preflight.report!;
    expect([report.replica_reads.state, report.failover.state, report.switchover.state]).toEqual(['ok', 'ok', 'ok']);
    expect(report.shortfalls).toEqual([]);
    const c = await client(relay.url);
    const acknowledged: string[] = [];
    for (let i = 0; i < 20; i++) {
      await insert(c, `w${i}`);
      acknowledged.push(`w${i}`);
    }
    await cluster.signalNode('primary', 'SIGKILL');
    await vi.waitFor(() => expect(relay.app.topology.primaryName).toBe('standby1'), WAIT);
    expect(relay.app.failover.lastFailover).toMatchObject({ kind: 'failover', from: 'primary', to: 'standby1', dataLoss: false });
    console.log(`[least-privilege] failover by pgrelay_failover in ${Math.round(relay.app.failover.lastFailover!.durationMs)} ms`);
    expect(await insert(c, 'after')).toBe(cluster.node('standby1').port);
    const notes = (await cluster.query<{ note: string }>('standby1', 'SELECT note FROM lpf_orders')).map((r) => r.note);
    expect(notes).toEqual(expect.arrayContaining([...acknowledged, 'after']));
    // the replica streams from the new primary and is its synchronous standby
    await vi.waitFor(async () => {
      const peers = await cluster.query<{ app: string; state: string; sync: string }>('standby1', 'SELECT application_name AS app, state, sync_state AS sync FROM pg_stat_replication', [], { superuser: true, database: 'postgres' });
      expect(peers).toContainEqual({ app: 'replica1', state: 'streaming', sync: 'sync' });
    }, WAIT);
    await vi.waitFor(() => expect(relay.app.topology.node('replica1')!.fresh).toBe(true), WAIT);
    // while the new primary had no synchronous standby yet, failover was impossible (and said so); now it is ok again
    await vi.waitFor(() => expect(relay.app.preflight.report!.failover).toMatchObject({ state: 'ok' }), WAIT);
    const verdicts = relay.logs.filter((l) => l.capability === 'failover').map((l) => l.state);
    expect(verdicts.at(-1)).toBe('ok');
  });

  it('the same failover role carries out a switchover, ending the application\u2019s own sessions on the old primary', async () => {
    const relay = minimal;
    await vi.waitFor(() => expect(relay.app.topology.primaryName).toBe('standby1'), WAIT);
    await vi.waitFor(() => expect(relay.app.topology.node('replica1')!.role).toBe('standby'), WAIT);
    // a session of the application straight to the current primary, which the switchover must end
    const direct = new pg.Client({ host: cluster.node('standby1').host, port: cluster.node('standby1').port, user: 'shop', password: PASSWORD.shop, database: 'app' });
    const directErrors: Error[] = [];
    direct.on('error', (e) => directErrors.push(e));
    cleanups.push(() => direct.end().catch(() => undefined));
    await direct.connect();
    const result = await relay.app.failover.switchover('replica1');
    expect(result).toMatchObject({ from: 'standby1', to: 'replica1' });
    await vi.waitFor(() => expect(directErrors.map((e) => (e as { code?: string }).code)).toContain('57P01'), WAIT);
    const c = await client(relay.url);
    expect(await insert(c, 'after switchover')).toBe(cluster.node('replica1').port);
  });
});
