import { describe, expect, it } from 'vitest';
import { chooseFailoverTarget, discoverPrimary, evidenceMaxAgeMs, nodesToFence, type PlanNode, type ReplicationObservation } from '../../src/cluster/failover-plan.js';

function node(name: string, over: Partial<PlanNode> = {}): PlanNode {
  return {
    name,
    applicationName: name,
    configuredRole: name.startsWith('primary') ? 'primary' : name.startsWith('standby') ? 'standby' : 'replica',
    up: true,
    fenced: false,
    inRecovery: !name.startsWith('primary'),
    timeline: 1,
    walPosition: 100n,
    ...over,
  };
}

const down = { up: false } as const;

function seen(ssn: string, peers: [string, string][]): ReplicationObservation {
  return { synchronousStandbyNames: ssn, peers: peers.map(([applicationName, syncState]) => ({ applicationName, state: 'streaming', syncState })), at: 0 };
}

const cluster = () => [node('primary', down), node('standby1'), node('replica1', { walPosition: 300n }), node('replica2', { walPosition: 200n })];

describe('chooseFailoverTarget', () => {
  it('promotes the standby the primary reported as synchronous', () => {
    const choice = chooseFailoverTarget(cluster(), 'primary', seen('FIRST 1 (standby1)', [['standby1', 'sync'], ['replica1', 'async'], ['replica2', 'async']]), false);
    expect(choice).toMatchObject({ target: 'standby1', dataLoss: false });
  });

  it('follows the observation over the config: after a failover the synchronous one is a former replica', () => {
    const nodes = [node('primary', { fenced: true, up: false }), node('standby1', down), node('replica1'), node('replica2')];
    const choice = chooseFailoverTarget(nodes, 'standby1', seen('"replica1"', [['replica1', 'sync'], ['replica2', 'async']]), false);
    expect(choice.target).toBe('replica1');
  });

  it('never promotes an asynchronous replica when the synchronous standby is down', () => {
    const nodes = [node('primary', down), node('standby1', down), node('replica1'), node('replica2')];
    const choice = chooseFailoverTarget(nodes, 'primary', seen('standby1', [['standby1', 'sync'], ['replica1', 'async']]), false);
    expect(choice.target).toBeUndefined();
    expect(choice.reason).toMatch(/synchronous standby \(standby1\) is not available/);
  });

  it('with allow_data_loss promotes the replica holding the most WAL', () => {
    const nodes = [node('primary', down), node('standby1', down), node('replica1', { walPosition: 300n }), node('replica2', { walPosition: 500n })];
    const choice = chooseFailoverTarget(nodes, 'primary', seen('standby1', [['standby1', 'sync']]), true);
    expect(choice).toMatchObject({ target: 'replica2', dataLoss: true });
  });

  it('refuses when the primary had no synchronous standby at all', () => {
    const choice = chooseFailoverTarget(cluster(), 'primary', seen('', [['standby1', 'async'], ['replica1', 'async']]), false);
    expect(choice.target).toBeUndefined();
    expect(choice.reason).toMatch(/no synchronous standby/);
  });

  it('refuses when a standby was listed but none was in sync when last seen', () => {
    const choice = chooseFailoverTarget(cluster(), 'primary', seen('standby1', [['standby1', 'potential']]), false);
    expect(choice.target).toBeUndefined();
  });

  it('never promotes without evidence: the configured standby role alone is not (the primary was never observed)', () => {
    const choice = chooseFailoverTarget(cluster(), 'primary', undefined, false);
    expect(choice.target).toBeUndefined();
    expect(choice.reason).toMatch(/never observed/);
    const noStandby = [node('primary', down), node('replica1'), node('replica2')];
    expect(chooseFailoverTarget(noStandby, 'primary', undefined, false).target).toBeUndefined();
    // allow_data_loss: the node holding the most WAL, whatever its configured role
    expect(chooseFailoverTarget(cluster(), 'primary', undefined, true)).toMatchObject({ target: 'replica1', dataLoss: true });
  });

  it('evidence has an age: an observation older than the bound is no evidence', () => {
    const observed = { ...seen('FIRST 1 (standby1)', [['standby1', 'sync']]), at: 1_000_000 };
    const fresh = chooseFailoverTarget(cluster(), 'primary', observed, false, { now: 1_000_000 + 10_000, maxAgeMs: 10_000 });
    expect(fresh).toMatchObject({ target: 'standby1', dataLoss: false });
    const stale = chooseFailoverTarget(cluster(), 'primary', observed, false, { now: 1_000_000 + 10_001, maxAgeMs: 10_000 });
    expect(stale.target).toBeUndefined();
    expect(stale.reason).toMatch(/last observed 10 s ago \(more than 10 s\)/);
    expect(chooseFailoverTarget(cluster(), 'primary', observed, true, { now: 2_000_000, maxAgeMs: 10_000 })).toMatchObject({ target: 'replica1', dataLoss: true });
  });

  it('the default bound follows the health checks; the config key overrides it', () => {
    const health = { interval_ms: 1000, timeout_ms: 1000, failures: 3 };
    expect(evidenceMaxAgeMs(health, {})).toBe(10_000);
    expect(evidenceMaxAgeMs({ interval_ms: 250, timeout_ms: 500, failures: 2 }, {})).toBe(3000);
    expect(evidenceMaxAgeMs(health, { evidence_max_age_ms: 2500 })).toBe(2500);
  });

  it('skips nodes that are fenced, down or out of recovery', () => {
    const nodes = [node('primary', down), node('standby1', { fenced: true }), node('standby2', { inRecovery: false }), node('standby3')];
    const choice = chooseFailoverTarget(nodes, 'primary', seen('FIRST 3 (standby1, standby2, standby3)', [['standby1', 'sync'], ['standby2', 'sync'], ['standby3', 'sync']]), false);
    expect(choice.target).toBe('standby3');
  });

  it('matches standbys by application_name, case-insensitively', () => {
    const nodes = [node('primary', down), node('s1', { applicationName: 'Tokyo_A', configuredRole: 'replica' })];
    expect(chooseFailoverTarget(nodes, 'primary', seen('tokyo_a', [['Tokyo_A', 'sync']]), false).target).toBe('s1');
  });

  it('quorum: promotes the most advanced member while fewer than k members are missing', () => {
    const nodes = [node('primary', down), node('a', { walPosition: 10n }), node('b', { walPosition: 30n }), node('c', { walPosition: 20n })];
    const quorum = seen('ANY 2 (a, b, c)', [['a', 'quorum'], ['b', 'quorum'], ['c', 'quorum']]);
    expect(chooseFailoverTarget(nodes, 'primary', quorum, false).target).toBe('b');
    const bDown = [node('primary', down), node('a', { walPosition: 10n }), node('b', down), node('c', { walPosition: 20n })];
    expect(chooseFailoverTarget(bDown, 'primary', quorum, false).target).toBe('c');
    const twoDown = [node('primary', down), node('a', { walPosition: 10n }), node('b', down), node('c', down)];
    expect(chooseFailoverTarget(twoDown, 'primary', quorum, false)).toMatchObject({ target: undefined, reason: expect.stringMatching(/2 of the 3 quorum standbys are unavailable/) });
  });
});

describe('discoverPrimary', () => {
  it('keeps the current primary while it is the newest node out of recovery', () => {
    expect(discoverPrimary([node('primary'), node('standby1')], 'primary')).toEqual({ kind: 'keep' });
  });

  it('switches to the node out of recovery on the highest timeline', () => {
    const nodes = [node('primary', { timeline: 1 }), node('standby1', { inRecovery: false, timeline: 2 }), node('replica1')];
    expect(discoverPrimary(nodes, 'primary')).toEqual({ kind: 'switch', primary: 'standby1', timeline: 2 });
  });

  it('finds the primary when the configured one is down or in recovery', () => {
    const nodes = [node('primary', { inRecovery: true }), node('standby1', { inRecovery: false, timeline: 3 })];
    expect(discoverPrimary(nodes, 'primary')).toMatchObject({ kind: 'switch', primary: 'standby1' });
    expect(discoverPrimary([node('primary', down), node('standby1')], 'primary')).toEqual({ kind: 'keep' });
  });

  it('reports two unknown nodes on the same newest timeline as ambiguous', () => {
    const nodes = [node('primary', down), node('standby1', { inRecovery: false, timeline: 2 }), node('replica1', { inRecovery: false, timeline: 2 })];
    expect(discoverPrimary(nodes, 'primary')).toEqual({ kind: 'ambiguous', nodes: ['standby1', 'replica1'], timeline: 2 });
  });

  it('never picks a fenced node, even on a newer timeline', () => {
    const nodes = [node('primary', { fenced: true, timeline: 9 }), node('standby1', { inRecovery: false, timeline: 2 })];
    expect(discoverPrimary(nodes, 'standby1')).toEqual({ kind: 'keep' });
  });
});

describe('nodesToFence', () => {
  it('fences a former primary out of recovery on an older timeline', () => {
    const nodes = [node('primary', { timeline: 1 }), node('standby1', { inRecovery: false, timeline: 2 }), node('replica1', { timeline: 2 })];
    expect(nodesToFence(nodes, nodes[1])).toEqual([{ name: 'primary', reason: expect.stringMatching(/timeline 1, older than the primary standby1 \(timeline 2\)/) }]);
  });

  it('fences a second node out of recovery on the primary’s own timeline (split brain)', () => {
    const nodes = [node('primary', { timeline: 2 }), node('standby1', { inRecovery: false, timeline: 2 })];
    expect(nodesToFence(nodes, nodes[0]).map((f) => f.name)).toEqual(['standby1']);
  });

  it('leaves replicas, nodes that are down and nodes already fenced alone', () => {
    const nodes = [node('primary', { timeline: 2 }), node('old', { inRecovery: false, timeline: 1, up: false }), node('older', { inRecovery: false, timeline: 1, fenced: true }), node('replica1')];
    expect(nodesToFence(nodes, nodes[0])).toEqual([]);
    expect(nodesToFence(nodes, undefined)).toEqual([]);
  });
});
