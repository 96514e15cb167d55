import { beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { Load } from '../support/failover-load.js';
import { ADMIN_HEADERS, adminRequest, type Relay, startRelay } from '../support/relay.js';
import { useCleanups } from '../support/cleanups.js';

// Planned switchover (POST /admin/switchover) under load: clients see a pause, never an error, and
// no acknowledged write is lost. Own cluster (it promotes nodes).
const cleanups = useCleanups();
let cluster: LocalCluster;
let relay: Relay;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: true });
  cleanups.push(() => cluster.stop());
  await cluster.query('primary', Load.createTableSql('planned'));
  relay = await startRelay(cluster, { pool: { size: 12 }, routing: { max_lag_ms: 60_000 } });
  cleanups.push(() => relay.stop());
});

async function switchover(body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await adminRequest(relay.adminUrl, 'POST', '/admin/switchover', body);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** Runs a switchover under 8 writers and 8 readers and checks: no client error, nothing lost. */
async function underLoad(body: unknown, expectedTarget: string): Promise<void> {
  const load = new Load(relay.url(), 'planned');
  cleanups.push(() => load.stop());
  load.start(8, 8);
  await vi.waitFor(() => expect(load.acks.length).toBeGreaterThan(60), { timeout: 60_000, interval: 50 });
  const startedAt = performance.now();
  const answer = await switchover(body);
  expect(answer, JSON.stringify(answer.body)).toMatchObject({ status: 200, body: { status: 'done', to: expectedTarget } });
  const port = cluster.node(expectedTarget).port;
  await vi.waitFor(() => expect(load.acksAfter(startedAt).filter((a) => a.port === port).length).toBeGreaterThan(8), { timeout: 60_000, interval: 50 });
  await load.stop();

  expect(load.errors).toEqual([]);
  expect(load.reconnects).toBe(0);
  const ids = new Set((await cluster.query<{ id: string }>(expectedTarget, 'SELECT id FROM planned')).map((r) => Number(r.id)));
  expect(load.acks.filter((a) => !ids.has(a.id))).toEqual([]);
  expect(relay.app.topology.primaryName).toBe(expectedTarget);
}

describe('planned switchover', () => {
  it('refuses bad requests without touching the cluster', async () => {
    expect(await switchover('{not json')).toMatchObject({ status: 400, body: { status: 'rejected' } });
    expect(await switchover({ target: 42 })).toMatchObject({ status: 400 });
    expect(await switchover({ target: 'nope' })).toMatchObject({ status: 400, body: { error: expect.stringMatching(/no node named "nope"/) } });
    expect(await switchover({ target: 'primary' })).toMatchObject({ status: 400, body: { error: expect.stringMatching(/already the primary/) } });
    expect(relay.app.topology.primaryName).toBe('primary');
    expect(relay.app.failover.lastFailover).toBeUndefined();
  });

  it('moves writes to the synchronous standby with no client error and no lost write', async () => {
    await underLoad(undefined, 'standby1');
    expect(relay.app.failover.lastFailover).toMatchObject({ kind: 'switchover', from: 'primary', to: 'standby1' });
    // the old primary refuses writes and gets no units
    expect(relay.app.topology.node('primary')!.fenced).toBe(true);
    // /status says why
    const status = (await (await fetch(`${relay.adminUrl}/status`, { headers: ADMIN_HEADERS })).json()) as { nodes: { name: string; fenced: boolean; fenced_reason: string | null }[] };
    expect(status.nodes.find((n) => n.name === 'primary')).toMatchObject({ fenced: true, fenced_reason: expect.stringMatching(/switched over to standby1/) });
    expect(status.nodes.find((n) => n.name === 'standby1')).toMatchObject({ fenced: false, fenced_reason: null });
    const [setting] = await cluster.query<{ default_transaction_read_only: string }>('primary', 'SHOW default_transaction_read_only');
    expect(setting!.default_transaction_read_only).toBe('on');
    const metrics = await (await fetch(`${relay.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/^pgrelay_failovers_total 1$/m);
  });

  it('switches over again to a replica named in the request, once it streams from the new primary', async () => {
    await vi.waitFor(async () => {
      const rows = await cluster.query<{ application_name: string; state: string }>('standby1', 'SELECT application_name, state FROM pg_stat_replication', [], { superuser: true });
      expect(rows.filter((r) => r.state === 'streaming').map((r) => r.application_name).sort()).toEqual(['replica1', 'replica2']);
    }, { timeout: 30_000, interval: 100 });
    await underLoad({ target: 'replica2' }, 'replica2');
    // the remaining replica follows the newest primary
    const [marker] = await cluster.query<{ id: string }>('replica2', "INSERT INTO planned (writer, seq) VALUES (-1, 1) RETURNING id");
    await vi.waitFor(async () => expect(await cluster.query('replica1', 'SELECT 1 FROM planned WHERE id = $1', [marker!.id])).toHaveLength(1), { timeout: 30_000, interval: 100 });
  });
});
