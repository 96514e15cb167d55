import { writeFileSync } from 'node:fs';
import net from 'node:net';
import pg from 'pg';
import postgres from 'postgres';
import { stringify } from 'yaml';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { useCleanups } from '../support/cleanups.js';
import { startPgrelayProcess, type PgrelayProcess } from '../support/pgrelay-process.js';
import { sumOf, valueOf } from '../support/prometheus-text.js';
import { relayDocument } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';
import { alive, childPids, freePort, scrape } from '../support/workers-process.js';

// workers: 2 through the real command (`pgrelay start --config FILE`): a leader process (health,
// lag, failover, admin) and two workers sharing the listening socket. Where statements ran is read
// on the servers (pg_stat_user_tables, inet_server_port()); which worker served whom from the
// per-worker gauge of the leader's aggregated /metrics.

const cluster = sharedCluster();
const cleanups = useCleanups();
const TABLE = `workers_items_${process.pid}`;
const replicas = cluster.nodes.filter((n) => n.role !== 'primary');
const replicaPorts = new Set(replicas.map((n) => n.port));
const primaryPort = cluster.nodes.find((n) => n.role === 'primary')!.port;
let relay: PgrelayProcess;
let adminUrl: string;
let overrides: Record<string, unknown>;

beforeAll(async () => {
  await queryNode(cluster, 'primary', `CREATE TABLE ${TABLE} (id bigint PRIMARY KEY, worker_test text)`);
  cleanups.push(() => queryNode(cluster, 'primary', `DROP TABLE IF EXISTS ${TABLE}`).then(() => undefined));
  await queryNode(cluster, 'primary', `INSERT INTO ${TABLE} SELECT g, 'seed' FROM generate_series(1, 10) g`);
  for (const node of replicas) {
    await vi.waitFor(async () => expect((await queryNode<{ n: string }>(cluster, node.name, `SELECT count(*) AS n FROM ${TABLE}`))[0]!.n).toBe('10'), { timeout: 30_000, interval: 50 });
  }
  const adminPort = await freePort();
  adminUrl = `http://127.0.0.1:${adminPort}`;
  overrides = {
    workers: 2,
    admin: { host: '127.0.0.1', port: adminPort },
    pool: { size: 4 },
    // lag rounds every 5 s: a read waiting for its client's write finds a replica within
    // fence_wait_ms only through the fast sampling the leader does for the workers
    routing: { consistency: 'session', max_lag_ms: 60_000, lag_interval_ms: 5000, fence_wait_ms: 500 },
  };
  relay = await startPgrelayProcess(cluster, overrides);
  cleanups.push(() => relay.stop());
  cleanups.push(() => endAll(clients));
  // the tests measure the steady state: every replica judged fresh by the leader's lag rounds (every
  // 5 s here; under a loaded machine the first round may not have judged them yet)
  await vi.waitFor(
    async () => {
      const status = (await (await fetch(`${adminUrl}/status`)).json()) as { nodes: { name: string; fresh: boolean }[] };
      for (const node of replicas) expect(status.nodes.find((n) => n.name === node.name)?.fresh, node.name).toBe(true);
    },
    { timeout: 30_000, interval: 100 },
  );
}, 120_000);

const clients: pg.Client[] = [];
async function connect(options: { user?: string; password?: string } = {}): Promise<pg.Client & { lost: Error[] }> {
  const client = Object.assign(new pg.Client({ connectionString: relay.url(options) }), { lost: [] as Error[] });
  client.on('error', (error) => client.lost.push(error));
  await client.connect();
  clients.push(client);
  return client;
}
async function endAll(list: pg.Client[]): Promise<void> {
  await Promise.all(list.map((c) => c.end().catch(() => undefined)));
}

/** Four clients, one after the other (node:cluster hands connections to the workers in turn). */
async function connectFour(): Promise<(pg.Client & { lost: Error[] })[]> {
  await settled();
  const four = [];
  for (let i = 0; i < 4; i++) four.push(await connect());
  await vi.waitFor(async () => expect(await perWorkerClients()).toEqual({ 1: 2, 2: 2 }), { timeout: 5_000, interval: 50 });
  return four;
}

/** Clients of earlier tests are gone on pgrelay's side too. */
async function settled(): Promise<void> {
  // a test that failed half-way left its clients open: they are not the next test's
  await endAll(clients.splice(0));
  await vi.waitFor(async () => expect(valueOf(await scrape(adminUrl), 'pgrelay_client_connections')).toBe(0), { timeout: 10_000, interval: 50 });
}

async function perWorkerClients(): Promise<Record<string, number>> {
  const families = await scrape(adminUrl);
  const family = families.get('pgrelay_worker_client_connections');
  return Object.fromEntries((family?.samples ?? []).map((s) => [s.labels.worker!, s.value]));
}

async function tableCounters(): Promise<Record<string, { seqScan: number; inserted: number }>> {
  const out: Record<string, { seqScan: number; inserted: number }> = {};
  for (const node of cluster.nodes) {
    const [row] = await queryNode<{ seq_scan: string; n_tup_ins: string }>(cluster, node.name, 'SELECT seq_scan, n_tup_ins FROM pg_stat_user_tables WHERE relname = $1', [TABLE]);
    out[node.name] = { seqScan: Number(row?.seq_scan ?? 0), inserted: Number(row?.n_tup_ins ?? 0) };
  }
  return out;
}

describe('workers: 2', () => {
  it('runs a leader and two workers, and both workers serve clients', async () => {
    expect(childPids(relay.pid)).toHaveLength(2);
    const four = await connectFour();
    const families = await scrape(adminUrl);
    expect(valueOf(families, 'pgrelay_client_connections')).toBe(4);
    expect(valueOf(families, 'pgrelay_workers')).toBe(2);
    // /status (the leader's) lists the workers with their clients
    await vi.waitFor(
      async () => {
        const status = (await (await fetch(`${adminUrl}/status`)).json()) as { clients: number; workers: { worker: number; pid: number; listening: boolean; clients: number }[] };
        expect(status.clients).toBe(4);
        expect(status.workers.map((w) => [w.worker, w.listening, w.clients])).toEqual([
          [1, true, 2],
          [2, true, 2],
        ]);
        expect(status.workers.map((w) => w.pid).sort()).toEqual(childPids(relay.pid).sort());
      },
      { timeout: 5_000, interval: 50 },
    );
    await endAll(four);
  });

  it('sends writes to the primary and reads to the replicas, from every worker (server-side counters)', async () => {
    const before = await tableCounters();
    const four = await connectFour();
    // reads first (no write of theirs to wait for), seq scans of the small table
    for (const client of four) for (let i = 0; i < 10; i++) expect((await client.query(`SELECT count(*)::int AS n FROM ${TABLE} WHERE worker_test = 'seed'`)).rows[0].n).toBe(10);
    const base = 1000 + Math.floor(Math.random() * 1_000_000) * 10;
    await Promise.all(four.map((client, i) => client.query(`INSERT INTO ${TABLE} VALUES ($1, 'routing'), ($2, 'routing')`, [base + 2 * i, base + 2 * i + 1])));
    await vi.waitFor(
      async () => {
        const after = await tableCounters();
        const replicaScans = replicas.reduce((sum, n) => sum + after[n.name]!.seqScan - before[n.name]!.seqScan, 0);
        expect(after.primary!.seqScan - before.primary!.seqScan).toBe(0);
        expect(replicaScans).toBe(40);
        expect(after.primary!.inserted - before.primary!.inserted).toBe(8);
      },
      { timeout: 15_000, interval: 200 },
    );
    const families = await scrape(adminUrl);
    expect(sumOf(families, 'pgrelay_queries_total', { node: 'primary' })).toBeGreaterThanOrEqual(4);
    // /status counts the workers' units per node too (the topology page's reads/s and writes/s)
    const status = (await (await fetch(`${adminUrl}/status`)).json()) as { nodes: { name: string; units: { reads: number; writes: number } }[] };
    expect(status.nodes.find((n) => n.name === 'primary')!.units.writes).toBeGreaterThanOrEqual(4);
    expect(status.nodes.filter((n) => n.name !== 'primary').reduce((sum, n) => sum + n.units.reads, 0)).toBeGreaterThanOrEqual(40);
    await endAll(four);
  });

  it('reads a client’s own write back from a replica at once: the leader samples replay positions for the workers', async () => {
    const before = sumOf(await scrape(adminUrl), 'pgrelay_fence_waits_total', { outcome: 'replica' });
    const four = await connectFour();
    const ports: number[] = [];
    const base = 2_000_000_000 + Math.floor(Math.random() * 1_000_000) * 100;
    await Promise.all(
      four.map(async (client, c) => {
        for (let i = 0; i < 10; i++) {
          const id = base + c * 20 + i;
          await client.query(`INSERT INTO ${TABLE} VALUES ($1, 'ryw')`, [id]);
          const read = await client.query(`SELECT worker_test, inet_server_port() AS port FROM ${TABLE} WHERE id = $1`, [id]);
          // never stale: the row is there
          expect(read.rows).toHaveLength(1);
          ports.push(read.rows[0].port as number);
        }
      }),
    );
    // lag rounds every 5 s and a 500 ms wait: reads reach a replica only through the fast samples
    const onReplicas = ports.filter((p) => replicaPorts.has(p)).length;
    expect(ports.filter((p) => p !== primaryPort && !replicaPorts.has(p))).toEqual([]);
    expect(onReplicas).toBeGreaterThan(ports.length / 2);
    const after = sumOf(await scrape(adminUrl), 'pgrelay_fence_waits_total', { outcome: 'replica' });
    expect(after - before).toBeGreaterThan(ports.length / 2);
    await endAll(four);
  });

  it('cancels a query from a new connection that lands on the other worker', async () => {
    const before = valueOf(await scrape(adminUrl), 'pgrelay_worker_cancels_forwarded_total') ?? 0;
    for (let i = 0; i < 4; i++) {
      const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined });
      try {
        const marker = `workers_cancel_${process.pid}_${i}`;
        const query = sql.unsafe(`SELECT pg_sleep(30) AS ${marker}`).execute();
        const outcome = query.then(
          () => undefined,
          (error: unknown) => error,
        );
        const started = performance.now();
        // cancel once the query runs on a server
        await vi.waitFor(
          async () => {
            let running = 0;
            for (const node of cluster.nodes) running += (await queryNode<{ n: number }>(cluster, node.name, 'SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE $1', [`%AS ${marker}%`], true))[0]!.n;
            expect(running).toBe(1);
          },
          { timeout: 10_000, interval: 50 },
        );
        query.cancel();
        expect(await outcome).toMatchObject({ code: '57014' });
        expect(performance.now() - started).toBeLessThan(10_000);
        // the session goes on
        expect((await sql`SELECT 1 AS one`)[0]!.one).toBe(1);
      } finally {
        await sql.end();
      }
    }
    const forwarded = (valueOf(await scrape(adminUrl), 'pgrelay_worker_cancels_forwarded_total') ?? 0) - before;
    expect(forwarded).toBeGreaterThanOrEqual(1);
    expect(forwarded).toBeLessThanOrEqual(4);
  });

  it('aggregates every worker’s metrics in the leader’s /metrics (valid exposition, sensible sums)', async () => {
    const four = await connectFour();
    for (const client of four) await client.query('SELECT 1');
    const families = await scrape(adminUrl);
    // gauges of the data path: the sum over workers
    expect(valueOf(families, 'pgrelay_client_connections')).toBe(4);
    expect(sumOf(families, 'pgrelay_worker_client_connections')).toBe(4);
    // gauges of the cluster: the leader's alone (not one per process)
    expect(valueOf(families, 'pgrelay_node_up', { node: 'primary' })).toBe(1);
    expect(valueOf(families, 'pgrelay_info')).toBe(1);
    const server = sumOf(families, 'pgrelay_pool_connections');
    // pool.size 4 divided between two workers: at most 2 per worker, node and user
    expect(server).toBeGreaterThanOrEqual(2);
    expect(families.get('pgrelay_query_duration_seconds')?.type).toBe('histogram');
    // a ratio is averaged over the workers, not summed
    const ratio = valueOf(families, 'pgrelay_classify_cache_hit_ratio')!;
    expect(ratio).toBeGreaterThan(0);
    expect(ratio).toBeLessThanOrEqual(1);
    // process metrics of every process (summed by prom-client's aggregators)
    expect(families.get('pgrelay_process_cpu_seconds_total')?.type).toBe('counter');
    expect(families.get('pgrelay_queries_total')?.type).toBe('counter');
    // a counter summed over workers is at least what this test sent
    expect(sumOf(families, 'pgrelay_client_connections_total')).toBeGreaterThanOrEqual(4);
    expect(sumOf(families, 'pgrelay_query_duration_seconds_count')).toBeGreaterThanOrEqual(4);
    await endAll(four);
  });

  it('applies a SIGHUP reload in every worker (a user added to the file logs in on both)', async () => {
    const newUser = { name: `wk_reload_${process.pid}`, password: 'reload-pw', server_user: cluster.user, server_password: cluster.password };
    const refused = new pg.Client({ connectionString: relay.url({ user: newUser.name, password: newUser.password }) });
    refused.on('error', () => undefined);
    await expect(refused.connect()).rejects.toMatchObject({ code: expect.stringMatching(/^28/) });
    const document = relayDocument(cluster, { log: { level: 'warn', format: 'json' }, ...overrides });
    document.users = [...(document.users as unknown[]), newUser];
    writeFileSync(relay.configPath, stringify(document));
    process.kill(relay.pid, 'SIGHUP');
    const logins: pg.Client[] = [];
    await vi.waitFor(
      async () => {
        const client = new pg.Client({ connectionString: relay.url({ user: newUser.name, password: newUser.password }) });
        client.on('error', () => undefined);
        await client.connect();
        logins.push(client);
        expect(logins.length).toBeGreaterThanOrEqual(4);
      },
      { timeout: 10_000, interval: 100 },
    );
    // the last four logins came in turn through both workers
    const counts = await perWorkerClients();
    expect(counts['1']).toBeGreaterThanOrEqual(2);
    expect(counts['2']).toBeGreaterThanOrEqual(2);
    for (const client of logins) expect((await client.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await endAll(logins);
  });

  it('restarts a worker that crashes; the other worker’s clients do not notice', async () => {
    const before = childPids(relay.pid);
    expect(before).toHaveLength(2);
    const four = await connectFour();
    process.kill(before[0]!, 'SIGKILL');
    const results = await Promise.allSettled(four.map((c) => c.query('SELECT 1 AS one')));
    const failed = results.filter((r) => r.status === 'rejected').length;
    expect(failed).toBe(2);
    // the others go on, in and out of transactions
    const survivors = four.filter((_, i) => results[i]!.status === 'fulfilled');
    for (const client of survivors) {
      await client.query('BEGIN');
      expect((await client.query(`SELECT count(*)::int AS n FROM ${TABLE} WHERE worker_test = 'seed'`)).rows[0].n).toBe(10);
      await client.query('COMMIT');
      expect(client.lost).toEqual([]);
    }
    await vi.waitFor(
      async () => {
        const now = childPids(relay.pid);
        expect(now).toHaveLength(2);
        expect(now).not.toContain(before[0]);
        const families = await scrape(adminUrl);
        expect(valueOf(families, 'pgrelay_workers')).toBe(2);
        expect(valueOf(families, 'pgrelay_worker_restarts_total')).toBe(1);
      },
      { timeout: 15_000, interval: 100 },
    );
    const fresh = await Promise.all([0, 1, 2, 3].map(() => connect()));
    for (const client of fresh) expect((await client.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await endAll([...four, ...fresh]);
  });

  it('stops the leader and every worker on SIGTERM: no process left', async () => {
    const pids = [relay.pid, ...childPids(relay.pid)];
    expect(pids).toHaveLength(3);
    await relay.stop();
    await vi.waitFor(() => expect(pids.filter(alive)).toEqual([]), { timeout: 10_000, interval: 50 });
  });
});

describe('workers: 2, leader killed', () => {
  it('leaves no worker behind when the leader dies without stopping them (kill -9)', async () => {
    const orphaned = await startPgrelayProcess(cluster, { workers: 2 });
    cleanups.push(() => orphaned.stop());
    const workers = childPids(orphaned.pid);
    expect(workers).toHaveLength(2);
    process.kill(orphaned.pid, 'SIGKILL');
    await vi.waitFor(() => expect([orphaned.pid, ...workers].filter(alive)).toEqual([]), { timeout: 15_000, interval: 50 });
  });
});

describe('workers: 2, port taken', () => {
  it('exits 1 with the reason when the workers cannot listen', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => holder.close(resolve)));
    const port = (holder.address() as net.AddressInfo).port;
    await expect(startPgrelayProcess(cluster, { workers: 2, listen: { host: '127.0.0.1', port } })).rejects.toThrow(/pgrelay exited \(1\) before it was ready:[\s\S]*EADDRINUSE[\s\S]*worker \d exited \(1\) before it listened/);
  });
});

describe('workers: 1', () => {
  it('is one process, as before the key existed: no fork', async () => {
    const single = await startPgrelayProcess(cluster, { workers: 1 });
    cleanups.push(() => single.stop());
    const client = new pg.Client({ connectionString: single.url() });
    await client.connect();
    expect((await client.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await client.end();
    expect(childPids(single.pid)).toEqual([]);
    await single.stop();
    expect(alive(single.pid)).toBe(false);
  });
});
