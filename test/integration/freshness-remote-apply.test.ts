import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { startPgrelayProcess } from '../support/pgrelay-process.js';
import { startRelay, type Relay } from '../support/relay.js';
import { setApplyDelay } from '../support/apply-delay.js';

// The remote_apply shortcut (issue #17): the primary runs with synchronous_commit = remote_apply,
// so every commit it acknowledges has been applied on the synchronous standby; the two async
// replicas apply 200 ms late. With routing.fence_wait_ms 0 (no waiting for a replica at all), a
// client that writes and at once reads its row must find it, and the reads must run on the
// standby — located by the servers' own counters (pg_stat_user_tables), not by pgrelay's.

const APPLY_DELAY = '200ms';
const ITERATIONS = 100;

let cluster: LocalCluster;
let nextId = 1;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: true, settings: { synchronous_commit: 'remote_apply' } });
  await cluster.query('primary', 'CREATE TABLE ra (id bigint PRIMARY KEY, v text)');
  for (const name of ['standby1', 'replica1', 'replica2']) await cluster.waitForReplay(name);
  for (const name of ['replica1', 'replica2']) await setApplyDelay(cluster, name, APPLY_DELAY);
  const [row] = await cluster.query<{ level: string }>('primary', "SELECT current_setting('synchronous_commit') AS level");
  expect(row!.level).toBe('remote_apply');
  await cluster.query('primary', 'CREATE ROLE plain_monitor LOGIN PASSWORD $$plain$$', [], { superuser: true, database: 'postgres' });
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
});

async function relayWith(overrides: Record<string, unknown> = {}): Promise<Relay> {
  const relay = await startRelay(cluster, { routing: { consistency: 'session', fence_wait_ms: 0 }, ...overrides });
  onTestFinished(() => relay.stop());
  await vi.waitFor(() => expect(['standby1', 'replica1', 'replica2'].every((n) => relay.app.topology.node(n)!.fresh)).toBe(true), { timeout: 10_000, interval: 50 });
  return relay;
}

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  onTestFinished(() => c.end().catch(() => undefined));
  await c.connect();
  return c;
}

/** Scans of the table on each node, as that node counts them (after the relay closed its connections: flushed). */
async function scans(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const name of ['primary', 'standby1', 'replica1', 'replica2']) {
    const [row] = await cluster.query<{ n: string }>(name, "SELECT pg_stat_clear_snapshot(), (SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = 'ra')::text AS n", [], { superuser: true });
    out[name] = Number(row!.n);
  }
  return out;
}

function delta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]));
}

/** INSERT a row, then at once read it; returns how many reads missed their row. */
async function writeThenRead(c: pg.Client, iterations: number): Promise<number> {
  let misses = 0;
  for (let i = 0; i < iterations; i++) {
    const id = nextId++;
    await c.query('INSERT INTO ra (id, v) VALUES ($1, $2)', [id, 'x']);
    const row = (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM ra WHERE id = $1', [id])).rows[0]!;
    if (row.n !== 1) misses++;
  }
  return misses;
}

/** The relay stops (its server connections end, so each node's counters are flushed), then the scans it caused. */
async function scansCausedBy(relay: Relay, before: Record<string, number>): Promise<Record<string, number>> {
  await relay.stop();
  let d: Record<string, number> = {};
  await vi.waitFor(
    async () => {
      d = delta(await scans(), before);
      expect(d.primary! + d.standby1! + d.replica1! + d.replica2!).toBeGreaterThanOrEqual(ITERATIONS);
    },
    { timeout: 15_000, interval: 200 },
  );
  return d;
}

describe('remote_apply shortcut', () => {
  it('detects remote_apply and the standby in sync (/status capabilities)', async () => {
    const relay = await relayWith();
    await vi.waitFor(() => expect(relay.app.remoteApply.status()).toMatchObject({ state: 'on', standby: 'standby1' }), { timeout: 10_000, interval: 50 });
    const status = (await (await fetch(`${relay.adminUrl}/status`)).json()) as { capabilities: { remote_apply: { state: string; standby: string } } };
    expect(status.capabilities.remote_apply).toMatchObject({ state: 'on', standby: 'standby1' });
  }, 60_000);

  it('node-postgres writes, then reads its row at once: 0 stale, the reads counted on the standby, not on the primary', async () => {
    const relay = await relayWith();
    await vi.waitFor(() => expect(relay.app.remoteApply.status().state).toBe('on'), { timeout: 10_000, interval: 50 });
    const before = await scans();
    const c = await client(relay.url());
    const misses = await writeThenRead(c, ITERATIONS);
    await c.end();
    const d = await scansCausedBy(relay, before);
    console.log(`[remote_apply] ${ITERATIONS} write-then-read: ${misses} stale; scans ${JSON.stringify(d)}`);
    expect(misses).toBe(0);
    expect(d.standby1).toBeGreaterThanOrEqual(ITERATIONS * 0.95);
    expect(d.primary).toBeLessThanOrEqual(ITERATIONS * 0.05);
    expect(d.replica1! + d.replica2!).toBe(0);
  }, 120_000);

  it('workers: 2 — the workers, which check nothing themselves, use the leader\'s findings: reads at once on the standby, 0 stale', async () => {
    const relay = await startPgrelayProcess(cluster, { workers: 2, routing: { consistency: 'session', fence_wait_ms: 0 } });
    onTestFinished(() => relay.stop());
    const before = await scans();
    let misses = 0;
    // four clients, so that both workers serve some; the first health check of the primary may
    // come after their first writes: the shortcut is waited for by a warm-up round
    const clients = await Promise.all([0, 1, 2, 3].map(() => client(relay.url())));
    await vi.waitFor(async () => {
      const c = clients[0]!;
      const id = nextId++;
      await c.query('INSERT INTO ra (id, v) VALUES ($1, $2)', [id, 'warm']);
      expect((await c.query<{ p: number }>('SELECT inet_server_port() AS p')).rows[0]!.p).toBe(cluster.nodes.find((n) => n.name === 'standby1')!.port);
    }, { timeout: 15_000, interval: 200 });
    const warm = await scans();
    for (const c of clients) misses += await writeThenRead(c, ITERATIONS / 4);
    await Promise.all(clients.map((c) => c.end()));
    await relay.stop();
    let d: Record<string, number> = {};
    await vi.waitFor(async () => {
      d = delta(await scans(), warm);
      expect(d.primary! + d.standby1! + d.replica1! + d.replica2!).toBeGreaterThanOrEqual(ITERATIONS);
    }, { timeout: 15_000, interval: 200 });
    console.log(`[remote_apply] workers: 2, ${ITERATIONS} write-then-read: ${misses} stale; scans ${JSON.stringify(d)} (warm-up ${JSON.stringify(delta(warm, before))})`);
    expect(misses).toBe(0);
    expect(d.standby1).toBeGreaterThanOrEqual(ITERATIONS * 0.95);
    expect(d.replica1! + d.replica2!).toBe(0);
  }, 120_000);

  it('a session that lowers synchronous_commit (SET, or SET LOCAL in its transaction) does not use it: its reads go to the primary', async () => {
    const relay = await relayWith();
    await vi.waitFor(() => expect(relay.app.remoteApply.status().state).toBe('on'), { timeout: 10_000, interval: 50 });
    const before = await scans();
    const c = await client(relay.url());
    await c.query('SET synchronous_commit = on');
    let misses = await writeThenRead(c, ITERATIONS / 2);
    await c.query('RESET synchronous_commit');
    for (let i = 0; i < ITERATIONS / 2; i++) {
      const id = nextId++;
      await c.query('BEGIN');
      await c.query('SET LOCAL synchronous_commit = on');
      await c.query('INSERT INTO ra (id, v) VALUES ($1, $2)', [id, 'local-on']);
      await c.query('COMMIT');
      if ((await c.query<{ n: number }>('SELECT count(*)::int AS n FROM ra WHERE id = $1', [id])).rows[0]!.n !== 1) misses++;
    }
    await c.end();
    const d = await scansCausedBy(relay, before);
    console.log(`[remote_apply] lowered synchronous_commit: ${misses} stale; scans ${JSON.stringify(d)}`);
    expect(misses).toBe(0);
    expect(d.primary).toBeGreaterThanOrEqual(ITERATIONS * 0.9);
  }, 120_000);

  it('server default not remote_apply: only a session that SETs remote_apply itself uses it', async () => {
    await cluster.query('primary', 'ALTER SYSTEM SET synchronous_commit = on', [], { superuser: true, database: 'postgres' });
    await cluster.query('primary', 'SELECT pg_reload_conf()', [], { superuser: true, database: 'postgres' });
    onTestFinished(async () => {
      await cluster.query('primary', 'ALTER SYSTEM RESET synchronous_commit', [], { superuser: true, database: 'postgres' });
      await cluster.query('primary', 'SELECT pg_reload_conf()', [], { superuser: true, database: 'postgres' });
    });
    const relay = await relayWith();
    await vi.waitFor(() => expect(relay.app.remoteApply.status()).toMatchObject({ state: 'session', standby: 'standby1' }), { timeout: 10_000, interval: 50 });
    const before = await scans();
    const own = await client(relay.url());
    await own.query('SET synchronous_commit = remote_apply');
    let misses = await writeThenRead(own, ITERATIONS / 2);
    const other = await client(relay.url());
    misses += await writeThenRead(other, ITERATIONS / 2);
    await own.end();
    await other.end();
    const d = await scansCausedBy(relay, before);
    console.log(`[remote_apply] server default on: ${misses} stale; scans ${JSON.stringify(d)}`);
    expect(misses).toBe(0);
    // the SET session's reads on the standby, the other's on the primary
    expect(d.standby1).toBeGreaterThanOrEqual((ITERATIONS / 2) * 0.95);
    expect(d.primary).toBeGreaterThanOrEqual((ITERATIONS / 2) * 0.95);
  }, 120_000);

  it('a monitor role without pg_monitor cannot see sync_state: no shortcut, and /status says why', async () => {
    const relay = await relayWith({ health: { user: 'plain_monitor', password: 'plain' } });
    await vi.waitFor(() => expect(relay.app.remoteApply.status().reason).toContain('GRANT pg_monitor TO plain_monitor'), { timeout: 10_000, interval: 50 });
    expect(relay.app.remoteApply.status()).toMatchObject({ state: 'off', standby: null });
    const status = (await (await fetch(`${relay.adminUrl}/status`)).json()) as { capabilities: { remote_apply: { state: string; reason: string } } };
    expect(status.capabilities.remote_apply.state).toBe('off');
    expect(status.capabilities.remote_apply.reason).toContain('sync_state');
    const c = await client(relay.url());
    expect(await writeThenRead(c, 10)).toBe(0);
  }, 60_000);
});
