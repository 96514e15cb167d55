import { describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { Load } from '../support/failover-load.js';
import { adminRequest, startRelay } from '../support/relay.js';
import { useCleanups } from '../support/cleanups.js';

// The planned-switchover scenario (to the synchronous standby, then on to a replica) repeated under
// writers and readers, each round on a cluster of its own, with the second switchover asked the
// moment both replicas stream from the new primary: while pgrelay may still be settling that
// primary's synchronous standby. Every round: no client error, no reconnect, no lost write.
// PGRELAY_SWITCHOVER_ROUNDS sets the number of rounds (the evidence run used more).
const rounds = Number(process.env.PGRELAY_SWITCHOVER_ROUNDS ?? 3);
const cleanups = useCleanups();

async function switchover(adminUrl: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await adminRequest(adminUrl, 'POST', '/admin/switchover', body);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

describe('planned switchover, repeated', () => {
  it(`gives no client error and loses no write in ${rounds} rounds of two switchovers under load`, { timeout: 60_000 * rounds }, async () => {
    const outcomes: { round: number; errors: unknown[]; reconnects: number; lost: number[]; acks: number; reads: number }[] = [];
    for (let round = 1; round <= rounds; round++) {
      const cluster = await LocalCluster.create({ replicas: 2, standby: true });
      cleanups.push(() => cluster.stop());
      await cluster.query('primary', Load.createTableSql('repeat'));
      const relay = await startRelay(cluster, { pool: { size: 12 }, routing: { max_lag_ms: 60_000 } });
      cleanups.push(() => relay.stop());
      const load = new Load(relay.url(), 'repeat');
      cleanups.push(() => load.stop());
      load.start(8, 8);
      await vi.waitFor(() => expect(load.acks.length).toBeGreaterThan(60), { timeout: 30_000, interval: 20 });

      const first = await switchover(relay.adminUrl);
      expect(first, JSON.stringify(first.body)).toMatchObject({ status: 200, body: { status: 'done', to: 'standby1' } });
      // ask again the moment both replicas stream from standby1
      await vi.waitFor(async () => {
        const rows = await cluster.query<{ application_name: string; state: string }>('standby1', 'SELECT application_name, state FROM pg_stat_replication', [], { superuser: true });
        expect(rows.filter((r) => r.state === 'streaming').map((r) => r.application_name).sort()).toEqual(['replica1', 'replica2']);
      }, { timeout: 30_000, interval: 10 });
      const startedAt = performance.now();
      const second = await switchover(relay.adminUrl, { target: 'replica2' });
      expect(second, JSON.stringify(second.body)).toMatchObject({ status: 200, body: { status: 'done', to: 'replica2' } });
      const port = cluster.node('replica2').port;
      await vi.waitFor(() => expect(load.acksAfter(startedAt).filter((a) => a.port === port).length).toBeGreaterThan(8), { timeout: 30_000, interval: 20 });
      await load.stop();

      const ids = new Set((await cluster.query<{ id: string }>('replica2', 'SELECT id FROM repeat')).map((r) => Number(r.id)));
      outcomes.push({ round, errors: load.errors, reconnects: load.reconnects, lost: load.acks.filter((a) => !ids.has(a.id)).map((a) => a.id), acks: load.acks.length, reads: load.reads });
      await relay.stop();
      await cluster.stop();
    }
    const bad = outcomes.filter((o) => o.errors.length > 0 || o.reconnects > 0 || o.lost.length > 0);
    expect(bad, JSON.stringify(bad)).toEqual([]);
    expect(outcomes.every((o) => o.acks > 60 && o.reads > 0)).toBe(true);
    console.log(`switchover rounds: ${rounds}; writes acknowledged: ${outcomes.reduce((n, o) => n + o.acks, 0)}; reads: ${outcomes.reduce((n, o) => n + o.reads, 0)}; client errors: 0; lost: 0`);
  });
});
