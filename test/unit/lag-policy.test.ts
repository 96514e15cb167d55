import { describe, expect, it } from 'vitest';
import { Topology, type NodeStatus } from '../../src/cluster/topology.js';
import { REENTRY_FRACTION } from '../../src/routing/eligibility.js';
import { LagPolicy, lagLimits } from '../../src/routing/lag-policy.js';
import { Router } from '../../src/routing/router.js';

// The one lag policy: the lag monitor reports readings, the policy records who serves reads,
// the router routes on that; a reload replaces the limits for the next reading.

function replica(): { topology: Topology; node: NodeStatus } {
  const topology = new Topology([
    { name: 'primary', host: '127.0.0.1', port: 5432, role: 'primary', weight: 1 },
    { name: 'r1', host: '127.0.0.1', port: 5433, role: 'replica', weight: 1 },
  ]);
  return { topology, node: topology.node('r1')! };
}

describe('LagPolicy', () => {
  it('decides from a reading, with hysteresis, and says when eligibility changed', () => {
    const { node } = replica();
    const policy = new LagPolicy({ maxLagMs: 1000, maxLagBytes: 0 });
    expect(policy.report(node, { lagMs: 100, lagBytes: 10, replayPaused: false }, undefined)).toBe(false);
    expect(node.fresh).toBe(true);
    expect(policy.report(node, { lagMs: 1500, lagBytes: 10, replayPaused: false }, undefined)).toBe(true);
    expect(node.fresh).toBe(false);
    expect(node.staleReason).toMatch(/exceeds max_lag_ms 1000/);
    // back under the limit but not yet under 80 % of it: still stale
    expect(policy.report(node, { lagMs: 900, lagBytes: 10, replayPaused: false }, undefined)).toBe(false);
    expect(node.fresh).toBe(false);
    expect(policy.report(node, { lagMs: 1000 * REENTRY_FRACTION, lagBytes: 10, replayPaused: false }, undefined)).toBe(true);
    expect(node.fresh).toBe(true);
    expect(node.staleReason).toBeUndefined();
  });

  it('a node without a reading the monitor vouches for serves no reads, with the reason', () => {
    const { node } = replica();
    const policy = new LagPolicy({ maxLagMs: 1000, maxLagBytes: 0 });
    expect(policy.report(node, undefined, 'WAL receiver is stopping, not streaming')).toBe(true);
    expect(node.fresh).toBe(false);
    expect(node.replicating).toBe(false);
    expect(node.staleReason).toBe('WAL receiver is stopping, not streaming');
    expect(policy.report(node, { lagMs: 0, lagBytes: 0, replayPaused: false }, undefined)).toBe(true);
    expect(node.replicating).toBe(true);
    expect(node.fresh).toBe(true);
  });

  it('a reload replaces the limits for the next reading, and the router’s error names them', () => {
    const { topology, node } = replica();
    const policy = new LagPolicy(lagLimits({ max_lag_ms: 1000, max_lag_bytes: 0 }));
    const router = new Router(topology, { balance: 'round_robin', fallback: 'error' }, policy);
    policy.report(node, { lagMs: 500, lagBytes: 10, replayPaused: false }, undefined);
    expect(router.route('replica')).toMatchObject({ kind: 'node', node });
    policy.configure(lagLimits({ max_lag_ms: 200, max_lag_bytes: 5 }));
    expect(policy.limits).toEqual({ maxLagMs: 200, maxLagBytes: 5 });
    policy.report(node, { lagMs: 500, lagBytes: 10, replayPaused: false }, undefined);
    expect(node.fresh).toBe(false);
    expect(router.route('replica')).toMatchObject({ kind: 'refuse', error: { message: expect.stringMatching(/lag limit 200 ms \/ 5 bytes/) } });
  });

  it('checks a statement’s own limit against the raw figures, keeping the byte limit', () => {
    const { node } = replica();
    const policy = new LagPolicy({ maxLagMs: 1000, maxLagBytes: 100 });
    node.lagSeconds = 2;
    node.lagBytes = 50;
    expect(policy.within(node, 3000)).toBe(true);
    expect(policy.within(node, 1000)).toBe(false);
    node.lagBytes = 500;
    expect(policy.within(node, 3000)).toBe(false);
    node.lagSeconds = undefined;
    expect(policy.within(node, 3000)).toBe(false);
  });
});
