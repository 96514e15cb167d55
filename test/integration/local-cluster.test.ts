import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/local/cluster.js';
import { useLocalCluster } from '../support/cluster-fixture.js';

/** Pids whose working directory lies under `dir`, found independently of the module under test. */
function processesUnder(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readlinkSync(`/proc/${entry}/cwd`).startsWith(dir)) pids.push(Number(entry));
    } catch {
      // gone, or a zombie
    }
  }
  return pids;
}

const WAIT = { timeout: 20_000, interval: 50 };

describe('LocalCluster', () => {
  const steps: string[] = [];
  // Built in beforeAll, stopped in afterAll (registered together by the fixture).
  const fixture = useLocalCluster({ onProgress: (step) => steps.push(step) });
  let cluster: LocalCluster;
  beforeAll(() => {
    cluster = fixture();
  });

  async function countOn(node: string, table: string): Promise<number> {
    const [row] = await cluster.query<{ n: number }>(node, `SELECT count(*)::int AS n FROM ${table}`);
    return row!.n;
  }

  async function syncNamesOn(node: string): Promise<string> {
    const [row] = await cluster.query<{ value: string }>(node, "SELECT current_setting('synchronous_standby_names') AS value");
    return row!.value;
  }

  async function expectEventually(node: string, table: string, n: number): Promise<void> {
    await vi.waitFor(async () => expect(await countOn(node, table)).toBe(n), WAIT);
  }

  it('builds a primary, a synchronous standby and two asynchronous replicas', async () => {
    expect(cluster.nodes.map((n) => [n.name, n.role])).toEqual([
      ['primary', 'primary'],
      ['standby1', 'standby'],
      ['replica1', 'replica'],
      ['replica2', 'replica'],
    ]);
    expect(new Set(cluster.nodes.map((n) => n.port)).size).toBe(4);
    expect(steps).toEqual(expect.arrayContaining(['initdb primary', 'base backup standby1', 'base backup replica2']));

    const replication = await cluster.query<{ application_name: string; state: string; sync_state: string }>(
      'primary',
      'SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY application_name',
    );
    expect(replication).toEqual([
      { application_name: 'replica1', state: 'streaming', sync_state: 'async' },
      { application_name: 'replica2', state: 'streaming', sync_state: 'async' },
      { application_name: 'standby1', state: 'streaming', sync_state: 'sync' },
    ]);

    for (const node of cluster.nodes) {
      const [row] = await cluster.query<{ recovery: boolean }>(node.name, 'SELECT pg_is_in_recovery() AS recovery');
      expect(row!.recovery).toBe(node.role !== 'primary');
    }
    // Each follower overrides the synchronous_standby_names it copied from the primary.
    expect(await syncNamesOn('standby1')).toBe('');
    expect(await syncNamesOn('primary')).toBe('FIRST 1 (standby1)');
  });

  it('authenticates the application user with SCRAM over TCP, as owner of its database', async () => {
    const client = new pg.Client({ connectionString: cluster.url('primary') });
    await client.connect();
    try {
      const { rows } = await client.query(
        "SELECT current_user AS who, current_database() AS db, pg_has_role('pg_monitor', 'member') AS monitor",
      );
      expect(rows[0]).toEqual({ who: 'app', db: 'app', monitor: true });
    } finally {
      await client.end();
    }
    const [row] = await cluster.query<{ encrypted: string }>(
      'primary',
      "SELECT left(rolpassword, 14) AS encrypted FROM pg_authid WHERE rolname = 'app'",
      [],
      { superuser: true },
    );
    expect(row!.encrypted).toBe('SCRAM-SHA-256$');
    await expect(cluster.query('primary', 'SELECT 1', [], { superuser: true })).resolves.toHaveLength(1);
    const { port } = cluster.node('replica1');
    expect(cluster.url('replica1', { superuser: true })).toBe(`postgres://postgres:postgres@127.0.0.1:${port}/app`);
    expect(() => cluster.node('nope')).toThrow(/no node named/);
  });

  it('replicates rows written on the primary to every follower', async () => {
    await cluster.query('primary', 'CREATE TABLE items (id int PRIMARY KEY)');
    await cluster.query('primary', 'INSERT INTO items SELECT generate_series(1, 10)');
    for (const name of ['standby1', 'replica1', 'replica2']) await expectEventually(name, 'items', 10);
  });

  it('pauseReplay freezes what a replica sees until resumeReplay', async () => {
    await cluster.pauseReplay('replica1');
    await cluster.query('primary', 'INSERT INTO items VALUES (11)');
    await cluster.waitForReplay('replica2');
    expect(await countOn('replica2', 'items')).toBe(11);
    expect(await countOn('replica1', 'items')).toBe(10);
    await expect(cluster.waitForReplay('replica1', 300)).rejects.toThrow(/timed out/);

    await cluster.resumeReplay('replica1');
    await cluster.waitForReplay('replica1');
    expect(await countOn('replica1', 'items')).toBe(11);
  });

  it('restarts the primary after kill -9, despite a stale pid file and a lingering backend', async () => {
    // A frozen backend cannot notice its postmaster's death: it lingers, attached to the old
    // shared memory, which would make a new postmaster refuse to start.
    const client = new pg.Client({ connectionString: cluster.url('primary') });
    client.on('error', () => {});
    await client.connect();
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const backendPid = rows[0]!.pid;
    process.kill(backendPid, 'SIGSTOP');

    const oldPid = cluster.postmasterPid('primary');
    expect(oldPid).toBeTypeOf('number');
    await cluster.signalNode('primary', 'SIGKILL');
    expect(cluster.postmasterPid('primary')).toBeUndefined();
    expect(fs.existsSync(`${cluster.node('primary').dataDir}/postmaster.pid`)).toBe(true);

    await cluster.startNode('primary');
    expect(cluster.postmasterPid('primary')).not.toBe(oldPid);
    expect(processesUnder(cluster.node('primary').dataDir)).not.toContain(backendPid);
    await client.end().catch(() => {});

    // A commit waits for the synchronous standby, so this also shows that it reconnected.
    await cluster.query('primary', 'INSERT INTO items VALUES (12)');
    for (const name of ['standby1', 'replica1', 'replica2']) await expectEventually(name, 'items', 12);
  });

  it('promotes the standby and repoints a replica to follow the new timeline', async () => {
    await cluster.stopNode('primary');
    await cluster.promote('standby1');
    expect(cluster.primary().name).toBe('standby1');
    expect(cluster.node('standby1').role).toBe('primary');
    const [state] = await cluster.query<{ recovery: boolean }>('standby1', 'SELECT pg_is_in_recovery() AS recovery');
    expect(state!.recovery).toBe(false);

    await cluster.repoint('replica1', 'standby1');
    await cluster.query('standby1', 'INSERT INTO items VALUES (13)'); // no sync partner: must not hang
    await expectEventually('replica1', 'items', 13);
    const [receiver] = await cluster.query<{ tli: number }>(
      'replica1',
      'SELECT received_tli AS tli FROM pg_stat_wal_receiver',
      [],
      { superuser: true },
    );
    expect(receiver!.tli).toBe(2);
    // replica2 was not repointed: it still waits for the old primary and misses the write.
    expect(await countOn('replica2', 'items')).toBe(12);
  });

  it('rejoins the former primary with pg_rewind when repointed', async () => {
    // It comes back as a second primary on the old timeline and takes a write there (locally
    // committed: its synchronous standby is gone), so its history diverges from the new primary's.
    await cluster.startNode('primary');
    await cluster.query('primary', 'BEGIN; SET LOCAL synchronous_commit = local; INSERT INTO items VALUES (99); COMMIT');
    expect(await countOn('primary', 'items')).toBe(13);

    await cluster.repoint('primary', 'standby1');
    expect(cluster.node('primary').role).toBe('replica');
    await cluster.waitForReplay('primary');
    // Row 99 was rewound away; row 13 arrived from the new primary.
    const [ids] = await cluster.query<{ ids: number[] }>('primary', 'SELECT array_agg(id ORDER BY id) AS ids FROM items');
    expect(ids!.ids).toEqual(Array.from({ length: 13 }, (_, i) => i + 1));
    const [row] = await cluster.query<{ recovery: boolean }>('primary', 'SELECT pg_is_in_recovery() AS recovery');
    expect(row!.recovery).toBe(true);
  });

  it('adds a synchronous standby to the current primary and removes a replica with its slot', async () => {
    const added = await cluster.addNode('standby');
    expect(added.name).toBe('standby2');
    const [sync] = await cluster.query<{ sync_state: string }>(
      'standby1',
      "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby2'",
    );
    expect(sync!.sync_state).toBe('sync');
    expect(await syncNamesOn('standby1')).toBe('FIRST 1 (standby2)');
    await cluster.query('standby1', 'INSERT INTO items VALUES (14)');
    await expectEventually('standby2', 'items', 14);

    // A copy of a primary that has a synchronous standby must not inherit that setting.
    const replica = await cluster.addNode('replica');
    expect(replica).toMatchObject({ name: 'replica3', role: 'replica' });
    expect(await syncNamesOn('replica3')).toBe('');
    await expectEventually('replica3', 'items', 14);

    await cluster.removeNode('replica1');
    expect(cluster.nodes.map((n) => n.name)).not.toContain('replica1');
    expect(fs.existsSync(`${cluster.baseDir}/replica1`)).toBe(false);
    const slots = await cluster.query('standby1', "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'replica1'");
    expect(slots).toHaveLength(0);
  });

  it('stop() kills even frozen nodes and leaves no process or file behind', async () => {
    await cluster.signalNode('replica2', 'SIGSTOP');
    const baseDir = cluster.baseDir;
    expect(processesUnder(baseDir).length).toBeGreaterThan(0);

    await cluster.stop();
    await cluster.stop(); // idempotent

    expect(processesUnder(baseDir)).toEqual([]);
    expect(spawnSync('pgrep', ['-f', baseDir]).stdout.toString().trim()).toBe('');
    expect(fs.existsSync(baseDir)).toBe(false);
  });
});
