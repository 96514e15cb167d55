import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { useCleanups } from '../support/cleanups.js';
import { Load } from '../support/failover-load.js';
import { startPgrelayProcess, type PgrelayProcess } from '../support/pgrelay-process.js';
import { valueOf } from '../support/prometheus-text.js';
import { adminRequest } from '../support/relay.js';
import { freePort, scrape } from '../support/workers-process.js';

// workers: 2 and a planned switchover (POST /admin/switchover to the leader): the leader holds
// units for the primary in every worker (its fence reaches them as topology), drains what every
// worker has running there (their busy counts), then promotes; both workers' writes then go to
// the new primary, with no client error and no acknowledged write lost. Own cluster (it promotes).
const cleanups = useCleanups();
let cluster: LocalCluster;
let relay: PgrelayProcess;
let adminUrl: string;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 1, standby: true });
  cleanups.push(() => cluster.stop());
  await cluster.query('primary', Load.createTableSql('workers_planned'));
  const adminPort = await freePort();
  adminUrl = `http://127.0.0.1:${adminPort}`;
  relay = await startPgrelayProcess(cluster, { workers: 2, admin: { host: '127.0.0.1', port: adminPort }, pool: { size: 12 }, routing: { max_lag_ms: 60_000 } });
  cleanups.push(() => relay.stop());
}, 180_000);

async function perWorkerClients(): Promise<Record<string, number>> {
  const family = (await scrape(adminUrl)).get('pgrelay_worker_client_connections');
  return Object.fromEntries((family?.samples ?? []).map((s) => [s.labels.worker!, s.value]));
}

describe('workers: 2, planned switchover', () => {
  it('moves every worker’s writes to the new primary with no client error and no lost write', async () => {
    const load = new Load(relay.url(), 'workers_planned');
    cleanups.push(() => load.stop());
    load.start(8, 8);
    await vi.waitFor(() => expect(load.acks.length).toBeGreaterThan(60), { timeout: 60_000, interval: 50 });
    // the 16 clients are spread over both workers (node:cluster hands each new connection to the
    // next worker that took its last one: on a loaded machine the split can be as uneven as 13/3)
    const spread = await perWorkerClients();
    expect(spread['1']! + spread['2']!).toBe(16);
    expect(spread['1']).toBeGreaterThanOrEqual(2);
    expect(spread['2']).toBeGreaterThanOrEqual(2);

    const startedAt = performance.now();
    const response = await adminRequest(adminUrl, 'POST', '/admin/switchover');
    const body = (await response.json()) as Record<string, unknown>;
    expect({ status: response.status, body }, JSON.stringify(body)).toMatchObject({ status: 200, body: { status: 'done', from: 'primary', to: 'standby1' } });
    const newPort = cluster.node('standby1').port;
    await vi.waitFor(() => expect(load.acksAfter(startedAt).filter((a) => a.port === newPort).length).toBeGreaterThan(16), { timeout: 60_000, interval: 50 });
    await load.stop();

    expect(load.errors).toEqual([]);
    expect(load.reconnects).toBe(0);
    // every writer (8 clients over both workers) committed on the new primary afterwards
    expect(new Set(load.acksAfter(startedAt).filter((a) => a.port === newPort).map((a) => a.writer)).size).toBe(8);
    const ids = new Set((await cluster.query<{ id: string }>('standby1', 'SELECT id FROM workers_planned')).map((r) => Number(r.id)));
    expect(load.acks.filter((a) => !ids.has(a.id))).toEqual([]);

    // new clients, one after the other (two per worker): their writes commit on the new primary
    for (let i = 0; i < 4; i++) {
      const client = new pg.Client({ connectionString: relay.url() });
      await client.connect();
      try {
        const row = (await client.query('INSERT INTO workers_planned (writer, seq) VALUES (100, $1) RETURNING inet_server_port() AS port', [i])).rows[0];
        expect(row.port).toBe(newPort);
      } finally {
        await client.end();
      }
    }
    const families = await scrape(adminUrl);
    expect(valueOf(families, 'pgrelay_failovers_total')).toBe(1);
    expect(valueOf(families, 'pgrelay_node_fenced', { node: 'primary' })).toBe(1);
  });
});
