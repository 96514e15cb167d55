import { describe, expect, it } from 'vitest';
import { Topology, type NodeStatus } from '../../src/cluster/topology.js';
import type { Balance, Fallback } from '../../src/config/types.js';
import { ProxyError } from '../../src/errors.js';
import { LagPolicy } from '../../src/routing/lag-policy.js';
import { LATENCY_HALF_LIFE_MS, Router, type Route, type RouterEnvironment } from '../../src/routing/router.js';

function cluster(replicas: { name: string; weight?: number }[]): Topology {
  return new Topology([
    { name: 'primary', host: '127.0.0.1', port: 5432, role: 'primary', weight: 1 },
    ...replicas.map((r, i) => ({ name: r.name, host: '127.0.0.1', port: 5433 + i, role: 'replica' as const, weight: r.weight ?? 1 })),
  ]);
}

function router(topology: Topology, balance: Balance = 'round_robin', fallback: Fallback = 'primary', env: Partial<RouterEnvironment> = {}): Router {
  return new Router(topology, { balance, fallback }, new LagPolicy({ maxLagMs: 1000, maxLagBytes: 0 }), env);
}

/** A deterministic uniform sequence (xorshift) for the random policies. */
function seeded(seed = 12345): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function counts(r: Router, n: number, before?: (i: number) => void): Map<string, number> {
  const out = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    before?.(i);
    const name = chosen(r.route('replica')).name;
    out.set(name, (out.get(name) ?? 0) + 1);
  }
  return out;
}

function node(t: Topology, name: string): NodeStatus {
  return t.node(name)!;
}

/** The node of a route that must be one. */
function chosen(route: Route): NodeStatus {
  if (route.kind !== 'node') throw new Error(`expected a node, got ${route.kind}`);
  return route.node;
}

function fallbackOf(route: Route): string | undefined {
  return chosen(route) && (route as Extract<Route, { kind: 'node' }>).fallback;
}

describe('Router: which replicas qualify', () => {
  it('sends writes to the primary and reads to replicas', () => {
    const t = cluster([{ name: 'r1' }]);
    const r = router(t);
    expect(r.route('primary')).toEqual({ kind: 'node', node: node(t, 'primary'), fallback: undefined });
    expect(r.route('replica')).toEqual({ kind: 'node', node: node(t, 'r1'), fallback: undefined });
  });

  it('skips replicas that are down, fenced, out of recovery, stale, not replicating, or the primary', () => {
    const t = cluster([{ name: 'r1' }, { name: 'r2' }, { name: 'r3' }, { name: 'r4' }, { name: 'r5' }, { name: 'r6' }]);
    node(t, 'r1').up = false;
    node(t, 'r2').fenced = true;
    node(t, 'r3').inRecovery = false;
    node(t, 'r4').fresh = false;
    node(t, 'r5').replicating = false;
    t.primaryName = 'r6';
    node(t, 'primary').role = 'replica';
    node(t, 'primary').up = false;
    expect(router(t).readCandidates()).toEqual([]);
    expect(router(t).anyReplicaServes()).toBe(false);
    node(t, 'r4').fresh = true;
    expect(router(t).readCandidates().map((n) => n.name)).toEqual(['r4']);
    expect(router(t).anyReplicaServes()).toBe(true);
  });

  it('a read run again after a lost connection avoids that replica; with no other one it goes to the primary', () => {
    const t = cluster([{ name: 'r1' }, { name: 'r2' }]);
    const r = router(t);
    expect(r.readCandidates({ avoidNode: 'r1' }).map((n) => n.name)).toEqual(['r2']);
    node(t, 'r2').fresh = false;
    expect(r.readCandidates({ avoidNode: 'r1' })).toEqual([]);
    expect(chosen(r.route('replica', { avoidNode: 'r1' }))).toBe(node(t, 'primary'));
  });

  it('read-your-writes: only replicas that replayed minLsn; a pending write sends the read to the primary', () => {
    const t = cluster([{ name: 'r1' }, { name: 'r2' }]);
    node(t, 'r1').replayLsn = 100n;
    node(t, 'r2').replayLsn = 200n;
    const r = router(t);
    expect(r.readCandidates({ minLsn: 150n }).map((n) => n.name)).toEqual(['r2']);
    expect(r.readCandidates({ minLsn: 200n }).map((n) => n.name)).toEqual(['r2']);
    expect(r.route('replica', { minLsn: 201n })).toEqual({ kind: 'node', node: node(t, 'primary'), fallback: 'consistency' });
    expect(r.route('replica', { minLsn: 0n, pendingWrite: true })).toEqual({ kind: 'node', node: node(t, 'primary'), fallback: 'consistency' });
  });

  it('a max_lag hint loosens or tightens the limit, but never admits a node the monitor does not vouch for', () => {
    const t = cluster([{ name: 'r1' }, { name: 'r2' }]);
    Object.assign(node(t, 'r1'), { fresh: false, lagSeconds: 3, lagBytes: 5000 });
    Object.assign(node(t, 'r2'), { fresh: true, lagSeconds: 0.5, lagBytes: 100 });
    const r = router(t);
    expect(r.readCandidates().map((n) => n.name)).toEqual(['r2']);
    expect(r.readCandidates({ maxLagMs: 5000 }).map((n) => n.name)).toEqual(['r1', 'r2']);
    expect(r.readCandidates({ maxLagMs: 100 }).map((n) => n.name)).toEqual([]);
    expect(fallbackOf(r.route('replica', { maxLagMs: 100 }))).toBe('lag');
    node(t, 'r1').replicating = false;
    expect(r.readCandidates({ maxLagMs: 60_000 }).map((n) => n.name)).toEqual(['r2']);
  });

  it('falls back to the primary with the reason, or fails with 57P03 under fallback: error', () => {
    const t = cluster([{ name: 'r1' }]);
    node(t, 'r1').fresh = false;
    expect(router(t).route('replica')).toEqual({ kind: 'node', node: node(t, 'primary'), fallback: 'lag' });
    const strict = router(t, 'round_robin', 'error');
    const refused = strict.route('replica');
    if (refused.kind !== 'refuse') throw new Error(`expected a refusal, got ${refused.kind}`);
    expect(refused.error).toBeInstanceOf(ProxyError);
    expect(refused.error.sqlstate).toBe('57P03');
    expect(refused.error.message).toMatch(/every replica is stale/);
    node(t, 'r1').up = false;
    expect(fallbackOf(router(t).route('replica'))).toBe('no_replica');
    expect(strict.route('replica')).toMatchObject({ kind: 'refuse', error: { message: expect.stringMatching(/no replica is up/) } });
    // read-your-writes never errors: the primary has the data
    node(t, 'r1').up = true;
    node(t, 'r1').fresh = true;
    expect(fallbackOf(strict.route('replica', { pendingWrite: true }))).toBe('consistency');
  });

  it('without a primary, reads that cannot use a replica wait', () => {
    const t = cluster([{ name: 'r1' }]);
    node(t, 'primary').up = false;
    expect(router(t).route('primary')).toEqual({ kind: 'wait', reason: 'no primary' });
    expect(chosen(router(t).route('replica')).name).toBe('r1');
    node(t, 'r1').fresh = false;
    expect(router(t).route('replica')).toEqual({ kind: 'wait', reason: 'no primary' });
  });
});

describe('Router: balancing policies', () => {
  it('round_robin takes replicas in turn', () => {
    const t = cluster([{ name: 'r1' }, { name: 'r2' }, { name: 'r3' }]);
    const r = router(t, 'round_robin');
    expect(Array.from({ length: 6 }, () => chosen(r.route('replica')).name)).toEqual(['r1', 'r2', 'r3', 'r1', 'r2', 'r3']);
  });

  it('random spreads uniformly', () => {
    const t = cluster([{ name: 'r1' }, { name: 'r2' }, { name: 'r3' }]);
    const c = counts(router(t, 'random', 'primary', { random: seeded() }), 30_000);
    for (const name of ['r1', 'r2', 'r3']) expect(c.get(name)!).toBeGreaterThan(9000);
    for (const name of ['r1', 'r2', 'r3']) expect(c.get(name)!).toBeLessThan(11_000);
  });

  it('least_connections picks the fewest in flight and rotates among ties', () => {
    const t = cluster([{ name: 'r1' }, { name: 'r2' }, { name: 'r3' }]);
    const r = router(t, 'least_connections');
    node(t, 'r1').inflight = 3;
    node(t, 'r2').inflight = 1;
    node(t, 'r3').inflight = 2;
    expect(chosen(r.route('replica')).name).toBe('r2');
    node(t, 'r1').inflight = 0;
    node(t, 'r2').inflight = 0;
    node(t, 'r3').inflight = 0;
    const c = counts(r, 300);
    expect([c.get('r1'), c.get('r2'), c.get('r3')]).toEqual([100, 100, 100]);
  });

  it('weighted gives exact shares, interleaved, and weight 0 only as a last resort', () => {
    const t = cluster([{ name: 'r1', weight: 5 }, { name: 'r2', weight: 1 }, { name: 'r3', weight: 1 }]);
    const r = router(t, 'weighted');
    const seq = Array.from({ length: 7 }, () => chosen(r.route('replica')).name);
    expect(seq.filter((n) => n === 'r1')).toHaveLength(5);
    expect(seq.filter((n) => n === 'r2')).toHaveLength(1);
    expect(seq.filter((n) => n === 'r3')).toHaveLength(1);
    expect(seq).toEqual(['r1', 'r1', 'r2', 'r1', 'r3', 'r1', 'r1']); // smooth: r2, r3 not bunched at the end
    const c = counts(r, 7000);
    expect([c.get('r1'), c.get('r2'), c.get('r3')]).toEqual([5000, 1000, 1000]);

    const z = cluster([{ name: 'r1', weight: 0 }, { name: 'r2', weight: 2 }]);
    expect(counts(router(z, 'weighted'), 100).get('r1')).toBeUndefined();
    node(z, 'r2').fresh = false;
    expect(chosen(router(z, 'weighted').route('replica')).name).toBe('r1');
  });

  it('latency (power of two choices) prefers the replica with less expected wait', () => {
    const t = cluster([{ name: 'r1' }, { name: 'r2' }]);
    let now = 0;
    const r = router(t, 'latency', 'primary', { random: seeded(), now: () => now });
    node(t, 'r1').latencyEwmaMs = 1;
    node(t, 'r2').latencyEwmaMs = 4;
    // warm up both (never-chosen replicas look free, so each is tried once)
    counts(r, 2);
    expect(counts(r, 100).get('r1')).toBe(100);
    // load moves work away: (4+1)×1 > (0+1)×4, while (2+1)×1 < (0+1)×4
    node(t, 'r1').inflight = 4;
    expect(chosen(r.route('replica')).name).toBe('r2');
    node(t, 'r1').inflight = 2;
    expect(chosen(r.route('replica')).name).toBe('r1');
  });

  it('latency compares two distinct candidates, each pair about equally often', () => {
    const t = cluster([{ name: 'r1' }, { name: 'r2' }, { name: 'r3' }]);
    const now = 0;
    const r = router(t, 'latency', 'primary', { random: seeded(7), now: () => now });
    // the slowest can never win a comparison, the fastest always does: r3 gets no work, r1 gets
    // the two pairs it is in (2/3), r2 the pair {r2, r3} (1/3)
    node(t, 'r1').latencyEwmaMs = 1;
    node(t, 'r2').latencyEwmaMs = 2;
    node(t, 'r3').latencyEwmaMs = 3;
    counts(r, 3);
    const c = counts(r, 30_000);
    expect(c.get('r3')).toBeUndefined();
    expect(c.get('r1')! / 30_000).toBeGreaterThan(0.63);
    expect(c.get('r1')! / 30_000).toBeLessThan(0.7);
  });

  it('latency retries a replica left idle (its old latency figure decays)', () => {
    const t = cluster([{ name: 'r1' }, { name: 'r2' }]);
    let now = 0;
    const r = router(t, 'latency', 'primary', { random: seeded(3), now: () => now });
    node(t, 'r1').latencyEwmaMs = 1;
    node(t, 'r2').latencyEwmaMs = 50; // one slow unit long ago
    counts(r, 2);
    const start = now;
    let picked = 'r1';
    while (picked === 'r1' && now - start < 60_000) {
      now += 100;
      picked = chosen(r.route('replica')).name;
    }
    // r2 wins once discounted below r1: 50 × 2^-((idle - 1 s) / 1 s) < 1, i.e. idle > 1 s + log2(50) s ≈ 6.64 s
    expect(picked).toBe('r2');
    expect(now - start).toBeGreaterThan(LATENCY_HALF_LIFE_MS * 6.5);
    expect(now - start).toBeLessThan(LATENCY_HALF_LIFE_MS * 7);
    // and r1, now the idle one, is still preferred next (its figure is the better one)
    now += 100;
    expect(chosen(r.route('replica')).name).toBe('r1');
  });
});
