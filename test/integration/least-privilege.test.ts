import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { chromium } from 'playwright-core';
import { beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { stringify } from 'yaml';
import type { StatusDocument } from '../../src/admin/status.js';
import { App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { LocalCluster } from '../../src/local/cluster.js';
import { createLogger } from '../../src/util/log.js';
import { useCleanups } from '../support/cleanups.js';
import { leastPrivilegeRoles } from '../support/least-privilege-roles.js';

// pgrelay with least-privilege roles, created as an operator would (DESIGN.md "Roles pgrelay
// logs in as"), in front of a cluster of its own (primary, synchronous standby, two replicas):
// - `shop`: the application, LOGIN and privileges on its one table, nothing else;
// - `pgrelay_monitor`: LOGIN + pg_monitor;
// - `pgrelay_failover`: the PostgreSQL 15 grants for promote and re-point, no superuser.
// Where a read ran is read on the server (inet_server_port()).

const WAIT = { timeout: 30_000, interval: 50 };
const PASSWORD = { shop: 'shop-pw-41', monitor: 'monitor-pw-42', failover: 'failover-pw-43' };
const cleanups = useCleanups();
let cluster: LocalCluster;
let dir: string;
const portOf = new Map<number, string>();

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: true });
  cleanups.push(() => cluster.stop());
  dir = mkdtempSync(join(tmpdir(), 'pgrelay-least-privilege-'));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  for (const node of cluster.nodes) portOf.set(node.port, node.name);
  for (const sql of leastPrivilegeRoles(PASSWORD)) await cluster.query('primary', sql, [], { superuser: true, database: 'postgres' });
  // the application's table, in the application's database, owned by someone else
  await cluster.query('primary', 'CREATE TABLE lp_items (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())');
  await cluster.query('primary', 'GRANT SELECT, INSERT ON lp_items TO shop; GRANT USAGE ON SEQUENCE lp_items_id_seq TO shop');
  for (const name of ['standby1', 'replica1', 'replica2']) await cluster.waitForReplay(name);
});

function document(extra: { health?: Record<string, unknown>; failover?: Record<string, unknown>; routing?: Record<string, unknown> } = {}): Record<string, unknown> {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    nodes: cluster.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.role })),
    users: [{ name: 'shop', password: PASSWORD.shop }],
    routing: { consistency: 'eventual', balance: 'round_robin', lag_interval_ms: 100, max_lag_ms: 1000, ...extra.routing },
    ...(extra.health ? { health: extra.health } : {}),
    ...(extra.failover ? { failover: extra.failover } : {}),
  };
}

const MONITOR = { user: 'pgrelay_monitor', password: PASSWORD.monitor };

async function startRelay(doc: Record<string, unknown>): Promise<{ app: App; admin: string; url: string; logs: Record<string, unknown>[] }> {
  const logs: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const app = await App.start(parseConfig(stringify(doc), { source: 'test' }), { log: createLogger({ level: 'info', destination }), processMetrics: false });
  onTestFinished(() => app.stop());
  return { app, admin: `http://127.0.0.1:${app.adminAddress!.port}`, url: `postgres://shop:${PASSWORD.shop}@127.0.0.1:${app.listenAddress!.port}/app`, logs };
}

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  onTestFinished(() => c.end().catch(() => undefined));
  await c.connect();
  return c;
}

async function status(admin: string): Promise<StatusDocument> {
  return (await (await fetch(`${admin}/status`)).json()) as StatusDocument;
}

/** Where `count` reads through pgrelay ran, by node name (asked of the server that ran each). */
async function readsByNode(c: pg.Client, count: number): Promise<Map<string, number>> {
  const byNode = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const { rows } = await c.query<{ port: number }>('SELECT inet_server_port() AS port, count(*) FROM lp_items');
    const name = portOf.get(rows[0]!.port) ?? `port ${rows[0]!.port}`;
    byNode.set(name, (byNode.get(name) ?? 0) + 1);
  }
  return byNode;
}

function capabilityMetric(metrics: string, capability: string): number | undefined {
  const match = new RegExp(`^pgrelay_capability\\{capability="${capability}"\\} (\\S+)$`, 'm').exec(metrics);
  return match ? Number(match[1]) : undefined;
}

describe('only the application role (no health.user, no failover.user)', () => {
  it('serves reads from the replicas, judged from replay positions, and says what it cannot know', async () => {
    const relay = await startRelay(document());
    const c = await client(relay.url);
    await c.query('INSERT INTO lp_items DEFAULT VALUES');
    await vi.waitFor(async () => {
      const doc = await status(relay.admin);
      for (const name of ['standby1', 'replica1', 'replica2']) expect(doc.nodes.find((n) => n.name === name)!.health).toBe('up');
    }, WAIT);
    const byNode = await readsByNode(c, 90);
    console.log(`[least-privilege] app-only reads: ${JSON.stringify(Object.fromEntries(byNode))}`);
    expect(byNode.get('primary') ?? 0).toBe(0);
    for (const name of ['standby1', 'replica1', 'replica2']) expect(byNode.get(name)).toBeGreaterThanOrEqual(20);

    const doc = await status(relay.admin);
    expect(doc.capabilities.replica_reads).toMatchObject({ state: 'degraded', configured: true });
    expect(doc.capabilities.replica_reads!.reason).toContain('GRANT pg_monitor TO shop;');
    for (const name of ['standby1', 'replica1', 'replica2']) {
      const node = doc.nodes.find((n) => n.name === name)!;
      expect(node.not_known).toMatch(/whether it streams, from which node and on which timeline .*pg_stat_wal_receiver/);
      expect(node.lag_seconds).not.toBeNull();
    }
    expect(doc.nodes.find((n) => n.name === 'primary')!.not_known).toBeNull();
  });

  it('still excludes a replica that stops replaying, and takes it back once it catches up', async () => {
    const relay = await startRelay(document());
    const c = await client(relay.url);
    await vi.waitFor(async () => expect((await status(relay.admin)).nodes.find((n) => n.name === 'replica1')!.health).toBe('up'), WAIT);
    await cluster.pauseReplay('replica1');
    onTestFinished(() => cluster.resumeReplay('replica1'));
    // writes replica1 does not replay: its lag grows past max_lag_ms
    const writer = await client(cluster.url('primary'));
    let writing = true;
    const writes = (async () => {
      while (writing) {
        await writer.query('INSERT INTO lp_items DEFAULT VALUES');
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    onTestFinished(async () => {
      writing = false;
      await writes;
    });
    await vi.waitFor(async () => {
      const node = (await status(relay.admin)).nodes.find((n) => n.name === 'replica1')!;
      expect(node.health).toBe('stale');
      expect(node.stale_reason).toMatch(/replay is paused|exceeds max_lag_ms/);
    }, WAIT);
    const byNode = await readsByNode(c, 60);
    console.log(`[least-privilege] app-only reads with replica1 paused: ${JSON.stringify(Object.fromEntries(byNode))}`);
    expect(byNode.get('replica1') ?? 0).toBe(0);
    expect((byNode.get('standby1') ?? 0) + (byNode.get('replica2') ?? 0)).toBe(60);
    writing = false;
    await writes;
    await cluster.resumeReplay('replica1');
    await vi.waitFor(async () => expect((await status(relay.admin)).nodes.find((n) => n.name === 'replica1')!.health).toBe('up'), WAIT);
  });

  it('excludes a replica that stops receiving WAL once its lag passes max_lag_ms (it cannot see that the receiver stopped)', async () => {
    const relay = await startRelay(document());
    const c = await client(relay.url);
    await vi.waitFor(async () => expect((await status(relay.admin)).nodes.find((n) => n.name === 'replica2')!.health).toBe('up'), WAIT);
    const su = { superuser: true, database: 'postgres' };
    const [{ conninfo }] = await cluster.query<{ conninfo: string }>('replica2', "SELECT current_setting('primary_conninfo') AS conninfo", [], su);
    const setConninfo = async (value: string) => {
      await cluster.query('replica2', `ALTER SYSTEM SET primary_conninfo = '${value.replace(/'/g, "''")}'`, [], su);
      await cluster.query('replica2', 'SELECT pg_reload_conf()', [], su);
    };
    await setConninfo('');
    onTestFinished(() => setConninfo(conninfo));
    await vi.waitFor(async () => expect(await cluster.query('replica2', 'SELECT count(*)::int AS n FROM pg_stat_wal_receiver', [], su)).toEqual([{ n: 0 }]), WAIT);
    const writer = await client(cluster.url('primary'));
    let writing = true;
    const writes = (async () => {
      while (writing) {
        await writer.query('INSERT INTO lp_items DEFAULT VALUES');
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    onTestFinished(async () => {
      writing = false;
      await writes;
    });
    await vi.waitFor(async () => {
      const node = (await status(relay.admin)).nodes.find((n) => n.name === 'replica2')!;
      expect(node.health).toBe('stale');
      expect(node.stale_reason).toMatch(/exceeds max_lag_ms 1000/);
    }, WAIT);
    const byNode = await readsByNode(c, 40);
    expect(byNode.get('replica2') ?? 0).toBe(0);
    expect((byNode.get('standby1') ?? 0) + (byNode.get('replica1') ?? 0)).toBe(40);
    writing = false;
    await writes;
    await setConninfo(conninfo);
    await vi.waitFor(async () => expect((await status(relay.admin)).nodes.find((n) => n.name === 'replica2')!.health).toBe('up'), WAIT);
  });

  it('says at start, in /status, /health and pgrelay_capability, that failover is impossible and which grants fix it', async () => {
    const relay = await startRelay(document());
    const errors = relay.logs.filter((l) => l.level === 'error' && String(l.msg).startsWith('preflight:'));
    const text = errors.map((l) => String(l.msg)).join('\n');
    console.log(`[least-privilege] start errors:\n${text}`);
    // each names the role, the nodes and the statement that fixes it
    const monitorLine = errors.find((l) => l.grant === 'GRANT pg_monitor TO shop;')!;
    expect(monitorLine).toBeDefined();
    expect(monitorLine.role).toBe('shop');
    expect(monitorLine.nodes).toEqual(expect.arrayContaining(['primary', 'standby1', 'replica1', 'replica2']));
    expect(String(monitorLine.msg)).toMatch(/role shop lacks .*pg_read_all_stats.* on .*primary.*sync_state|which standby is synchronous is not known/);
    expect(text).toContain('GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO shop;');
    expect(text).toContain('GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names TO shop;');
    expect(text).toMatch(/failover: impossible \(the monitor role shop cannot see pg_stat_replication.sync_state on the primary primary/);
    // the errors come before the ready line (pgrelay listening)
    const listening = relay.logs.findIndex((l) => l.msg === 'pgrelay listening');
    expect(relay.logs.indexOf(monitorLine)).toBeLessThan(listening);

    const doc = await status(relay.admin);
    expect(doc.capabilities.failover).toMatchObject({ state: 'impossible', configured: true });
    expect(doc.capabilities.switchover).toMatchObject({ state: 'impossible' });
    expect(doc.capabilities.shortfalls.map((s) => s.grant)).toEqual(expect.arrayContaining(['GRANT pg_monitor TO shop;', 'GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO shop;', 'GRANT EXECUTE ON FUNCTION pg_reload_conf() TO shop;']));

    // /health: writes are served (200), and it says failover is impossible
    const health = await fetch(`${relay.admin}/health`);
    expect(health.status).toBe(200);
    const body = (await health.json()) as { status: string; failover: { state: string; reason: string } };
    expect(body.status).toBe('ok');
    expect(body.failover.state).toBe('impossible');
    expect(body.failover.reason).toContain('sync_state');

    const metrics = await (await fetch(`${relay.admin}/metrics`)).text();
    expect(capabilityMetric(metrics, 'replica_reads')).toBe(0);
    expect(capabilityMetric(metrics, 'failover')).toBe(0);
    expect(capabilityMetric(metrics, 'switchover')).toBe(0);
  });
});

describe('the topology page', () => {
  it('shows each capability with its state, its reason and the grants that fix it (headless Chromium)', async () => {
    const relay = await startRelay(document());
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
    onTestFinished(() => browser.close());
    const page = await browser.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(`${relay.admin}/`);
    await page.waitForSelector('[data-capability="failover"][data-state="impossible"]', { timeout: 10_000 });
    const failover = await page.textContent('[data-capability="failover"]');
    expect(failover).toContain('cannot see pg_stat_replication.sync_state');
    expect(failover).toContain('GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO shop;');
    expect(await page.getAttribute('[data-capability="replica_reads"]', 'data-state')).toBe('degraded');
    expect(await page.textContent('[data-capability="replica_reads"]')).toContain('GRANT pg_monitor TO shop;');
    await page.waitForSelector('[data-node="replica1"]');
    expect(pageErrors).toEqual([]);
  });
});

describe('pg_monitor for health, a failover role with the PostgreSQL 15 grants', () => {
  for (const failover of ['superuser', 'pgrelay_failover'] as const) {
    it(`${failover}: every capability ok, nothing unknown, replicas read`, async () => {
      const login = failover === 'superuser' ? { user: cluster.superuser, password: cluster.superuserPassword } : { user: 'pgrelay_failover', password: PASSWORD.failover };
      const relay = await startRelay(document({ health: MONITOR, failover: login }));
      expect(relay.logs.filter((l) => l.level === 'error')).toEqual([]);
      const doc = await status(relay.admin);
      expect(doc.capabilities.replica_reads!.state).toBe('ok');
      expect(doc.capabilities.failover!.state).toBe('ok');
      expect(doc.capabilities.switchover!.state).toBe('ok');
      expect(doc.capabilities.shortfalls).toEqual([]);
      await vi.waitFor(async () => {
        const nodes = (await status(relay.admin)).nodes;
        for (const name of ['standby1', 'replica1', 'replica2']) {
          const node = nodes.find((n) => n.name === name)!;
          expect(node.health).toBe('up');
          expect(node.not_known).toBeNull();
        }
      }, WAIT);
      const c = await client(relay.url);
      const byNode = await readsByNode(c, 30);
      expect(byNode.get('primary') ?? 0).toBe(0);
      const metrics = await (await fetch(`${relay.admin}/metrics`)).text();
      for (const capability of ['replica_reads', 'failover', 'switchover']) expect(capabilityMetric(metrics, capability)).toBe(1);
      const health = (await (await fetch(`${relay.admin}/health`)).json()) as { failover: { state: string } };
      expect(health.failover.state).toBe('ok');
    });
  }
});

describe('the synchronous standby setting changes', () => {
  it('failover turns impossible while the primary has no synchronous standby, and ok again, without a reload', async () => {
    const relay = await startRelay(document({ health: { ...MONITOR, interval_ms: 200 }, failover: { user: cluster.superuser, password: cluster.superuserPassword } }));
    expect(relay.app.preflight.report!.failover.state).toBe('ok');
    const [{ names }] = await cluster.query<{ names: string }>('primary', "SELECT current_setting('synchronous_standby_names') AS names");
    const setNames = async (value: string) => {
      await cluster.query('primary', `ALTER SYSTEM SET synchronous_standby_names = '${value.replace(/'/g, "''")}'`, [], { superuser: true, database: 'postgres' });
      await cluster.query('primary', 'SELECT pg_reload_conf()', [], { superuser: true, database: 'postgres' });
    };
    await setNames('');
    onTestFinished(() => setNames(names));
    await vi.waitFor(async () => {
      const health = (await (await fetch(`${relay.admin}/health`)).json()) as { failover: { state: string; reason: string } };
      expect(health.failover).toEqual({ state: 'impossible', reason: 'the primary primary has no synchronous standby (synchronous_standby_names is empty)' });
    }, WAIT);
    expect(relay.logs.some((l) => l.level === 'error' && String(l.msg).startsWith('preflight: failover: impossible'))).toBe(true);
    await setNames(names);
    await vi.waitFor(() => expect(relay.app.preflight.report!.failover.state).toBe('ok'), WAIT);
  });
});

describe('reload', () => {
  it('a reload that gives health its own pg_monitor role runs the preflight again: reads ok, nothing unknown', async () => {
    const relay = await startRelay(document({ failover: { mode: 'follow' } }));
    expect(relay.app.preflight.report!.replica_reads.state).toBe('degraded');
    await vi.waitFor(async () => expect((await status(relay.admin)).nodes.find((n) => n.name === 'replica2')!.not_known).not.toBeNull(), WAIT);
    relay.app.reload(parseConfig(stringify(document({ failover: { mode: 'follow' }, health: MONITOR })), { source: 'test' }));
    await vi.waitFor(async () => {
      const doc = await status(relay.admin);
      expect(doc.capabilities.replica_reads!.state).toBe('ok');
      expect(doc.capabilities.shortfalls).toEqual([]);
      for (const name of ['standby1', 'replica1', 'replica2']) expect(doc.nodes.find((n) => n.name === name)).toMatchObject({ not_known: null, health: 'up' });
    }, WAIT);
    const metrics = await (await fetch(`${relay.admin}/metrics`)).text();
    expect(capabilityMetric(metrics, 'replica_reads')).toBe(1);
    expect(relay.logs.some((l) => l.msg === 'preflight: replica_reads: ok (the monitor role pgrelay_monitor sees replay position, streaming state and timeline of every replica)')).toBe(true);
  });
});

describe('pgrelay check-config --connect', () => {
  function checkConfig(doc: Record<string, unknown>, name: string): Promise<{ code: number | null; out: string; err: string }> {
    const file = join(dir, `${name}.yaml`);
    writeFileSync(file, stringify(doc));
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['dist/main.js', 'check-config', '--connect', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, out, err }));
    });
  }

  it('exits 1 with an app-only config in managed mode, naming the missing grants', async () => {
    const result = await checkConfig(document(), 'app-only');
    console.log(`[least-privilege] check-config --connect (app only): exit ${result.code}\n${result.err}`);
    expect(result.code).toBe(1);
    expect(result.err).toContain('GRANT pg_monitor TO shop;');
    expect(result.err).toContain('GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO shop;');
    expect(result.err).toMatch(/^error: failover: impossible/m);
    expect(result.err).toContain('a configured feature cannot work');
    expect(result.out).toMatch(/replica_reads: degraded/);
  });

  it('exits 0 with pg_monitor for health and a superuser for failover', async () => {
    const result = await checkConfig(document({ health: MONITOR, failover: { user: cluster.superuser, password: cluster.superuserPassword } }), 'superuser');
    expect(result.err).toBe('');
    expect(result.code).toBe(0);
    expect(result.out).toMatch(/replica_reads: ok/);
    expect(result.out).toMatch(/failover: ok/);
    expect(result.out).toContain('the servers let pgrelay do what the configuration asks');
  });

  it('exits 0 with the non-superuser failover role of the README', async () => {
    const result = await checkConfig(document({ health: MONITOR, failover: { user: 'pgrelay_failover', password: PASSWORD.failover } }), 'minimal');
    expect(result.err).toBe('');
    expect(result.code).toBe(0);
  });

  it('exits 0 with an app-only config when failover is not pgrelay\u2019s job (reads degraded, said so)', async () => {
    const result = await checkConfig(document({ failover: { mode: 'follow' } }), 'follow');
    expect(result.code).toBe(0);
    expect(result.out).toMatch(/^warn: role shop lacks the privileges of pg_read_all_stats .*GRANT pg_monitor TO shop;/m);
  });
});

// Last in the file: it changes the cluster (standby1 becomes the primary).
describe('only the application role, after a promotion elsewhere (follow mode)', () => {
  it('excludes replicas still following the old primary once they replay WAL the new primary does not have', async () => {
    const relay = await startRelay(document({ failover: { mode: 'follow' } }));
    await vi.waitFor(async () => {
      const nodes = (await status(relay.admin)).nodes;
      for (const name of ['standby1', 'replica1', 'replica2']) expect(nodes.find((n) => n.name === name)!.health).toBe('up');
    }, WAIT);
    // an external manager promotes standby1; the replicas keep streaming from the old primary,
    // which (not stopped) goes on writing: they pass the point where standby1's timeline forked
    await cluster.promote('standby1');
    await vi.waitFor(() => expect(relay.app.topology.primaryName).toBe('standby1'), WAIT);
    expect(relay.app.topology.node('primary')!.fenced).toBe(true);
    const old = await client(cluster.url('primary', { superuser: true }));
    await old.query('SET synchronous_commit = local'); // its synchronous standby is gone
    const [{ lsn: newPrimaryLsn }] = await cluster.query<{ lsn: string }>('standby1', 'SELECT pg_current_wal_lsn()::text AS lsn');
    for (let i = 0; i < 50; i++) await old.query('INSERT INTO lp_items DEFAULT VALUES');
    // the replicas have replayed more WAL than the new primary has written
    await vi.waitFor(async () => {
      for (const name of ['replica1', 'replica2']) {
        const [row] = await cluster.query<{ ahead: boolean }>(name, 'SELECT pg_last_wal_replay_lsn() > $1::pg_lsn AS ahead', [newPrimaryLsn]);
        expect(row!.ahead).toBe(true);
      }
    }, WAIT);
    await vi.waitFor(async () => {
      const nodes = (await status(relay.admin)).nodes;
      for (const name of ['replica1', 'replica2']) {
        const node = nodes.find((n) => n.name === name)!;
        expect(node.health).toBe('stale');
        expect(node.stale_reason).toMatch(/that the primary standby1 did not have later: it follows another primary/);
      }
    }, WAIT);
    // and reads do not go there (the new primary answers them)
    const c = await client(relay.url);
    const byNode = await readsByNode(c, 30);
    console.log(`[least-privilege] app-only reads after the promotion: ${JSON.stringify(Object.fromEntries(byNode))}`);
    expect(byNode.get('replica1') ?? 0).toBe(0);
    expect(byNode.get('replica2') ?? 0).toBe(0);
    expect(byNode.get('standby1')).toBe(30);
  });
});
