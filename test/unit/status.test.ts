import { describe, expect, it } from 'vitest';
import { formatStatusTable } from '../../src/admin/status-command.js';
import { healthOf, nodeHealth } from '../../src/admin/status.js';
import { Topology } from '../../src/cluster/topology.js';
import type { NodeConfig } from '../../src/config/types.js';

const nodes: NodeConfig[] = [
  { name: 'primary', host: '127.0.0.1', port: 5432, role: 'primary', weight: 1 },
  { name: 'standby1', host: '127.0.0.1', port: 5433, role: 'standby', weight: 1 },
  { name: 'replica1', host: '127.0.0.1', port: 5434, role: 'replica', weight: 1 },
];

describe('GET /health', () => {
  it('is ok while the primary is up and not fenced', () => {
    expect(healthOf(new Topology(nodes), false)).toEqual({ ok: true, primary: 'primary' });
  });

  it('says why writes cannot be served', () => {
    const topology = new Topology(nodes);
    expect(healthOf(topology, true)).toEqual({ ok: false, primary: 'primary', reason: 'pgrelay is shutting down' });
    const primary = topology.node('primary')!;
    primary.up = false;
    primary.lastError = 'connection refused';
    expect(healthOf(topology, false)).toEqual({ ok: false, primary: 'primary', reason: 'primary primary is down (connection refused)' });
    primary.up = true;
    primary.fenced = true;
    expect(healthOf(topology, false)).toEqual({ ok: false, primary: 'primary', reason: 'primary primary is fenced' });
    topology.setPrimary(undefined);
    expect(healthOf(topology, false)).toEqual({ ok: false, primary: null, reason: 'no primary is known (failover in progress, or none configured)' });
    topology.setPrimary('standby1');
    expect(healthOf(topology, false)).toEqual({ ok: true, primary: 'standby1' });
  });
});

describe('node health', () => {
  it('is fenced, down, stale or up, in that order of precedence', () => {
    const topology = new Topology(nodes);
    const replica = topology.node('replica1')!;
    expect(nodeHealth(replica)).toBe('up');
    replica.fresh = false;
    expect(nodeHealth(replica)).toBe('stale');
    replica.up = false;
    expect(nodeHealth(replica)).toBe('down');
    replica.fenced = true;
    expect(nodeHealth(replica)).toBe('fenced');
    // a primary is never "stale": lag does not apply to it
    const primary = topology.node('primary')!;
    primary.fresh = false;
    expect(nodeHealth(primary)).toBe('up');
  });
});

describe('`pgrelay status` table', () => {
  const pool = (active: number, idle: number, waiting = 0) => ({ active, idle, waiting });
  const node = (name: string, role: string, extra: Record<string, unknown> = {}) => ({
    name,
    role,
    host: '127.0.0.1',
    port: 5432,
    up: true,
    fenced: false,
    fresh: true,
    lag_bytes: null as number | null,
    lag_seconds: null as number | null,
    inflight: 0,
    pools: [pool(1, 2)],
    ...extra,
  });

  it('prints one aligned row per node with health, lag, pools and unit counts', () => {
    const text = formatStatusTable({
      primary: 'primary',
      consistency: 'session',
      clients: 12,
      max_lag_ms: 1000,
      health: { ok: true, primary: 'primary' },
      nodes: [
        node('primary', 'primary', { health: 'up', inflight: 3, units: { reads: 5, writes: 40, other: 1 } }),
        node('replica1', 'replica', { health: 'stale', fresh: false, lag_seconds: 2.5, lag_bytes: 3 * 1024 * 1024, stale_reason: 'lags 2500 ms (max 1000 ms)', pools: [pool(0, 1, 2)] }),
        node('replica2', 'replica', { health: 'up', lag_seconds: 0.012, lag_bytes: 800 }),
      ],
      last_failover: { kind: 'failover', from: 'old', to: 'primary', durationMs: 1234, at: '2026-01-02T03:04:05.000Z', detectMs: 3000, timeline: 2, reason: 'old is down', dataLoss: false },
      draining_pools: [],
    });
    expect(text.split('\n')).toEqual([
      'primary: primary   writes: ok   consistency: session   max lag: 1.00s   clients: 12',
      'NODE      ROLE     ADDRESS         HEALTH  LAG            IN FLIGHT  POOL ACT/IDLE/WAIT  UNITS R/W',
      'primary   primary  127.0.0.1:5432  up      -              3          1/2/0               5/40',
      'replica1  replica  127.0.0.1:5432  stale   2.50s / 3.0MB  0          0/1/2               -',
      'replica2  replica  127.0.0.1:5432  up      12ms / 800B    0          1/2/0               -',
      '  replica1: lags 2500 ms (max 1000 ms)',
      'last failover: old -> primary (failover, 1.2 s, 2026-01-02T03:04:05.000Z)',
      '',
    ]);
  });

  it('lists capabilities that are not ok, with the grants that fix them', () => {
    const text = formatStatusTable({
      primary: 'primary',
      consistency: 'session',
      clients: 0,
      nodes: [node('primary', 'primary')],
      capabilities: {
        checked_at: '2026-01-02T03:04:05.000Z',
        replica_reads: { state: 'degraded', reason: 'the monitor role shop cannot see pg_stat_wal_receiver', configured: true },
        failover: { state: 'impossible', reason: 'sync_state not visible', configured: true },
        switchover: { state: 'ok', reason: 'fine', configured: true },
        shortfalls: [
          { role: 'shop', missing: 'pg_read_all_stats', grant: 'GRANT pg_monitor TO shop;', nodes: ['replica1'], features: ['replica_reads'], effects: [], disables: false },
          { role: 'shop', missing: 'pg_read_all_stats', grant: 'GRANT pg_monitor TO shop;', nodes: ['primary'], features: ['failover'], effects: [], disables: true },
        ],
        unchecked: [],
      },
    });
    expect(text.split('\n').slice(-5)).toEqual([
      'last failover: none',
      'replica reads: DEGRADED (the monitor role shop cannot see pg_stat_wal_receiver)',
      'failover: IMPOSSIBLE (sync_state not visible)',
      '  fix: GRANT pg_monitor TO shop;',
      '',
    ]);
  });

  it('reads an older /status without health words (derives them)', () => {
    const text = formatStatusTable({
      primary: null,
      consistency: 'eventual',
      clients: 0,
      nodes: [node('db1', 'primary', { up: false }), node('db2', 'replica', { fenced: true })],
    });
    expect(text).toContain('primary: none   consistency: eventual   clients: 0\n');
    expect(text).toMatch(/^db1 +primary +\S+ +down /m);
    expect(text).toMatch(/^db2 +replica +\S+ +fenced /m);
    expect(text).toContain('last failover: none');
  });
});
