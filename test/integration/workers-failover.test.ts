import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { useCleanups } from '../support/cleanups.js';
import { Load } from '../support/failover-load.js';
import { startPgrelayProcess, type PgrelayProcess } from '../support/pgrelay-process.js';
import { valueOf } from '../support/prometheus-text.js';
import { freePort, scrape } from '../support/workers-process.js';

// workers: 2 and a managed failover (kill -9 of the primary): the leader's health checks find it,
// its failover promotes the synchronous standby, and every worker's clients write there next —
// idle clients of both workers without an error. Own cluster (it kills the primary).
const cleanups = useCleanups();
let cluster: LocalCluster;
let relay: PgrelayProcess;
let adminUrl: string;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 0, standby: true });
  cleanups.push(() => cluster.stop());
  await cluster.query('primary', Load.createTableSql('workers_failover'));
  const adminPort = await freePort();
  adminUrl = `http://127.0.0.1:${adminPort}`;
  relay = await startPgrelayProcess(cluster, { workers: 2, admin: { host: '127.0.0.1', port: adminPort }, pool: { size: 8 }, routing: { max_lag_ms: 60_000 } });
  cleanups.push(() => relay.stop());
}, 180_000);

async function perWorkerClients(): Promise<Record<string, number>> {
  const family = (await scrape(adminUrl)).get('pgrelay_worker_client_connections');
  return Object.fromEntries((family?.samples ?? []).map((s) => [s.labels.worker!, s.value]));
}

describe('workers: 2, managed failover', () => {
  it('moves every worker’s writes to the promoted standby; idle clients of both workers see no error', async () => {
    const idle: (pg.Client & { errors: Error[] })[] = [];
    for (let i = 0; i < 4; i++) {
      const client = Object.assign(new pg.Client({ connectionString: relay.url() }), { errors: [] as Error[] });
      client.on('error', (error) => client.errors.push(error));
      await client.connect();
      cleanups.push(() => client.end());
      expect((await client.query('INSERT INTO workers_failover (writer, seq) VALUES (-1, $1) RETURNING inet_server_port() AS port', [i])).rows[0].port).toBe(cluster.node('primary').port);
      idle.push(client);
    }
    await vi.waitFor(async () => expect(await perWorkerClients()).toEqual({ 1: 2, 2: 2 }), { timeout: 5_000, interval: 50 });
    const load = new Load(relay.url(), 'workers_failover');
    cleanups.push(() => load.stop());
    load.start(4, 0);
    await vi.waitFor(() => expect(load.acks.length).toBeGreaterThan(40), { timeout: 60_000, interval: 50 });

    const killedAt = performance.now();
    await cluster.signalNode('primary', 'SIGKILL');
    const standbyPort = cluster.node('standby1').port;
    await vi.waitFor(() => expect(load.acksAfter(killedAt).filter((a) => a.port === standbyPort).length).toBeGreaterThan(8), { timeout: 30_000, interval: 50 });
    await load.stop();

    // the idle clients of both workers write on the new primary, with no error on the way
    for (const [i, client] of idle.entries()) {
      expect((await client.query('INSERT INTO workers_failover (writer, seq) VALUES (-2, $1) RETURNING inet_server_port() AS port', [i])).rows[0].port).toBe(standbyPort);
      expect(client.errors).toEqual([]);
    }
    // no acknowledged write lost
    const ids = new Set((await cluster.query<{ id: string }>('standby1', 'SELECT id FROM workers_failover')).map((r) => Number(r.id)));
    expect(load.acks.filter((a) => !ids.has(a.id))).toEqual([]);
    const families = await scrape(adminUrl);
    expect(valueOf(families, 'pgrelay_failovers_total')).toBe(1);
    expect(valueOf(families, 'pgrelay_node_up', { node: 'primary' })).toBe(0);
    const status = (await (await fetch(`${adminUrl}/status`)).json()) as { primary: string };
    expect(status.primary).toBe('standby1');
  });
});
