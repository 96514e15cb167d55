import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { App } from '../../src/app.js';
import { LocalCluster } from '../../src/local/cluster.js';
import { useCleanups } from '../support/cleanups.js';
import { leastPrivilegeRoles } from '../support/least-privilege-roles.js';
import { capturedLog, startRelay, type Relay } from '../support/relay.js';

// The synchronous standby goes silent or dies, with failover.mode managed and the README's
// least-privilege roles, against a cluster of its own (primary, synchronous standby, one replica).
// PostgreSQL makes every commit wait for the standby synchronous_standby_names lists: before,
// every write through pgrelay then waited for as long as the standby stayed away. Now:
// 1. the standby stopped (SIGSTOP; the primary keeps its walsender for a minute): the replica,
//    once it has flushed the primary's WAL, becomes the synchronous standby, and the write that
//    waited commits; then the replica dies (kill -9) and the standby, back, takes its place;
// 2. with both gone, synchronous replication is cleared (the primary acknowledges alone, and says
//    so); when the replica streams again, it is the synchronous standby again;
// 3. the primary dies: the replica is promoted, with every acknowledged write.

const WAIT = { timeout: 30_000, interval: 100 };
const PASSWORD = { shop: 'shop-pw-94', monitor: 'monitor-pw-95', failover: 'failover-pw-96' };
const cleanups = useCleanups();
let cluster: LocalCluster;
let app: App;
let client: pg.Client;
let relay: Relay;
let logs: Record<string, unknown>[] = [];

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 1, standby: true });
  cleanups.push(() => cluster.stop());
  for (const sql of leastPrivilegeRoles(PASSWORD)) await cluster.query('primary', sql, [], { superuser: true, database: 'postgres' });
  await cluster.query('primary', 'CREATE TABLE ssl_orders (id bigserial PRIMARY KEY, note text)');
  await cluster.query('primary', 'GRANT SELECT, INSERT ON ssl_orders TO shop; GRANT USAGE ON SEQUENCE ssl_orders_id_seq TO shop');
  for (const name of ['standby1', 'replica1']) await cluster.waitForReplay(name);
  // PostgreSQL's default (the local cluster's is 10 s): a silent standby's walsender stays a minute
  await cluster.query('primary', "ALTER SYSTEM SET wal_sender_timeout = '60s'", [], { superuser: true, database: 'postgres' });
  await cluster.query('primary', 'SELECT pg_reload_conf()', [], { superuser: true, database: 'postgres' });
  const captured = capturedLog();
  logs = captured.lines;
  relay = await startRelay(
    { ...cluster, user: 'shop', password: PASSWORD.shop },
    {
      health: { interval_ms: 300, timeout_ms: 1000, failures: 3, user: 'pgrelay_monitor', password: PASSWORD.monitor },
      failover: { mode: 'managed', wait_ms: 20_000, user: 'pgrelay_failover', password: PASSWORD.failover },
    },
    { log: captured.log },
  );
  app = relay.app;
  cleanups.push(() => relay.stop());
  client = new pg.Client({ connectionString: relay.url() });
  client.on('error', () => undefined);
  cleanups.push(() => client.end().catch(() => undefined));
  await client.connect();
}, 120_000);

/** An INSERT through pgrelay; fails the test if it has not committed within 30 s. */
async function insert(note: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`INSERT '${note}' still waits after 30 s`)), 30_000)));
  try {
    await Promise.race([client.query('INSERT INTO ssl_orders (note) VALUES ($1)', [note]), stuck]);
  } finally {
    clearTimeout(timer);
  }
}

const onPrimary = async (sql: string) => (await cluster.query<{ v: string }>('primary', sql, [], { superuser: true, database: 'postgres' }))[0]?.v;
const syncNames = () => onPrimary("SELECT current_setting('synchronous_standby_names') AS v");

describe('the synchronous standby dies', () => {
  it('writes go on: the replica becomes the synchronous standby; without it, the primary acknowledges alone until the replica streams again; a failover then promotes it with every acknowledged write', async () => {
    await insert('both up');
    expect(await syncNames()).toMatch(/standby1/);

    // a silent standby (stopped: the primary keeps its walsender until wal_sender_timeout, a
    // minute): once the health checks find it down, the replica takes its place
    await cluster.signalNode('standby1', 'SIGSTOP');
    await insert('standby silent');
    await vi.waitFor(() => expect(app.failover.syncKeeper.settled, 'replica1 synchronous while standby1 is silent').toEqual({ primary: 'primary', standby: 'replica1' }), WAIT);
    expect(await syncNames()).toBe('"replica1"');
    expect(await onPrimary("SELECT sync_state AS v FROM pg_stat_replication WHERE application_name = 'replica1'")).toBe('sync');
    expect(logs.some((l) => l.msg === 'the synchronous standby is lost: another replica is the synchronous standby now' && l.standby === 'replica1')).toBe(true);
    await cluster.signalNode('standby1', 'SIGCONT');

    // the replica now dies: the standby, streaming again, takes its place
    await cluster.signalNode('replica1', 'SIGKILL');
    await insert('replica gone');
    await vi.waitFor(() => expect(app.failover.syncKeeper.settled, 'standby1 synchronous again').toEqual({ primary: 'primary', standby: 'standby1' }), WAIT);
    expect(await syncNames()).toBe('"standby1"');

    // and the standby too, for good: no follower streams
    await cluster.signalNode('standby1', 'SIGKILL');
    await insert('no follower');
    expect(await syncNames()).toBe('');
    await vi.waitFor(() => expect(app.failover.syncKeeper.settled, 'synchronous replication cleared').toEqual({ primary: 'primary', standby: undefined }), WAIT);
    expect(logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('the synchronous standby is lost and no other replica streams'))).toBe(true);

    await cluster.startNode('replica1');
    await vi.waitFor(() => expect(app.failover.syncKeeper.settled, 'replica1 made the synchronous standby again').toEqual({ primary: 'primary', standby: 'replica1' }), WAIT);
    expect(await syncNames()).toBe('"replica1"');
    await insert('replica back');

    await cluster.signalNode('primary', 'SIGKILL');
    await vi.waitFor(() => expect(app.topology.primaryName, 'replica1 promoted').toBe('replica1'), WAIT);
    const notes = (await client.query<{ note: string }>('SELECT note FROM ssl_orders ORDER BY id')).rows.map((r) => r.note);
    expect(notes).toEqual(['both up', 'standby silent', 'replica gone', 'no follower', 'replica back']);
    expect(await cluster.query('replica1', 'SELECT pg_is_in_recovery() AS r')).toEqual([{ r: false }]);
  }, 180_000);
});
