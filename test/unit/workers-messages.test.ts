import { describe, expect, it } from 'vitest';
import { Topology } from '../../src/cluster/topology.js';
import { processIdFor, slotOfProcessId } from '../../src/workers/backend-keys.js';
import { applySnapshot, snapshotOf } from '../../src/workers/messages.js';

const nodes = [
  { name: 'primary', host: '127.0.0.1', port: 5432, role: 'primary' as const, weight: 1 },
  { name: 'replica1', host: '127.0.0.1', port: 5433, role: 'replica' as const, weight: 1 },
];

describe('workers: topology snapshots', () => {
  it('makes a worker’s topology the leader’s, through JSON, keeping what the worker measures itself', () => {
    const leader = new Topology(nodes);
    const replica = leader.node('replica1')!;
    replica.replayLsn = 0x1_0000_0010n;
    replica.lagSeconds = 0.25;
    replica.lagBytes = 512;
    replica.fresh = false;
    replica.staleReason = 'lag 250 ms';
    leader.node('primary')!.fenced = true;
    leader.setPrimary('replica1');

    const worker = new Topology(nodes);
    worker.node('replica1')!.inflight = 3;
    worker.node('replica1')!.latencyEwmaMs = 7;
    let changes = 0;
    worker.on('change', () => changes++);
    applySnapshot(worker, JSON.parse(JSON.stringify(snapshotOf(leader))));
    expect(changes).toBe(1);
    expect(worker.primaryName).toBe('replica1');
    const copied = worker.node('replica1')!;
    expect(copied).toMatchObject({ role: 'primary', replayLsn: 0x1_0000_0010n, lagSeconds: 0.25, lagBytes: 512, fresh: false, staleReason: 'lag 250 ms', inflight: 3, latencyEwmaMs: 7 });
    expect(worker.node('primary')!.fenced).toBe(true);
    // the same snapshot again changes nothing; a lag figure alone is not a topology change
    applySnapshot(worker, snapshotOf(leader));
    expect(changes).toBe(1);
    replica.lagSeconds = 0.5;
    applySnapshot(worker, snapshotOf(leader));
    expect(changes).toBe(1);
    expect(worker.node('replica1')!.lagSeconds).toBe(0.5);
  });

  it('adds and removes nodes as the leader lists them, and says which went down', () => {
    const leader = new Topology([...nodes, { name: 'replica2', host: '10.0.0.2', port: 5432, role: 'replica', weight: 2 }]);
    leader.node('replica1')!.up = false;
    const worker = new Topology(nodes);
    expect(applySnapshot(worker, snapshotOf(leader))).toEqual(['replica1']);
    expect([...worker.nodes.keys()]).toEqual(['primary', 'replica1', 'replica2']);
    expect(worker.node('replica2')).toMatchObject({ host: '10.0.0.2', weight: 2 });
    const smaller = new Topology([nodes[0]!]);
    applySnapshot(worker, snapshotOf(smaller));
    expect([...worker.nodes.keys()]).toEqual(['primary']);
  });
});

describe('workers: backend keys', () => {
  it('carries the worker slot in a positive int32 process id', () => {
    for (const slot of [1, 2, 77, 128]) {
      for (let i = 0; i < 200; i++) {
        const id = processIdFor(slot, () => false);
        expect(id).toBeGreaterThan(0);
        expect(id).toBeLessThanOrEqual(0x7fffffff);
        expect(slotOfProcessId(id)).toBe(slot);
      }
    }
  });

  it('never hands out an id in use', () => {
    const taken = new Set<number>();
    const first = processIdFor(3, () => false);
    taken.add(first);
    let calls = 0;
    const next = processIdFor(3, (id) => {
      calls++;
      // the first draw is refused whatever it is
      return calls === 1 || taken.has(id);
    });
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(taken.has(next)).toBe(false);
  });
});
