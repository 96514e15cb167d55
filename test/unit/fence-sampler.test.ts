import { afterEach, describe, expect, it, vi } from 'vitest';
import { FenceSampler } from '../../src/cluster/fence-sampler.js';
import type { NodeProbe } from '../../src/cluster/node-probe.js';
import { Topology } from '../../src/cluster/topology.js';

/** A probe that answers the replay query with whatever position its node is at now (after a macrotask). */
class FakeProbe {
  asked = 0;
  inflight = 0;
  maxInflight = 0;
  constructor(
    public lsn: string | null,
    public fail = false,
  ) {}
  async query<T>(): Promise<T> {
    this.asked++;
    this.inflight++;
    this.maxInflight = Math.max(this.maxInflight, this.inflight);
    await new Promise((resolve) => setTimeout(resolve, 1));
    this.inflight--;
    if (this.fail) throw new Error('connection lost');
    return { replay_lsn: this.lsn } as T;
  }
}

function setup() {
  const topology = new Topology([
    { name: 'primary', host: '127.0.0.1', port: 1, role: 'primary', weight: 1 },
    { name: 'replica1', host: '127.0.0.1', port: 2, role: 'replica', weight: 1 },
    { name: 'replica2', host: '127.0.0.1', port: 3, role: 'replica', weight: 1 },
    { name: 'replica3', host: '127.0.0.1', port: 4, role: 'replica', weight: 1 },
  ]);
  const probes: Record<string, FakeProbe> = { primary: new FakeProbe('0/900'), replica1: new FakeProbe('0/100'), replica2: new FakeProbe('0/100'), replica3: new FakeProbe('0/100') };
  const sampler = new FenceSampler({ topology, probe: (name) => probes[name] as unknown as NodeProbe });
  return { topology, probes, sampler };
}

let stop: (() => void) | undefined;
afterEach(() => {
  stop?.();
  stop = undefined;
});

describe('FenceSampler', () => {
  it('samples only while a wait is open, and ends the wait once a replica is past the fence', async () => {
    const { topology, probes, sampler } = setup();
    stop = () => sampler.stop();
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(probes.replica1!.asked).toBe(0); // nothing waits: nothing is asked
    const fence = 0x500n;
    const done = vi.fn();
    sampler.wait(() => (topology.node('replica2')!.replayLsn ?? 0n) >= fence, 5_000, done);
    await vi.waitFor(() => expect(probes.replica2!.asked).toBeGreaterThan(2), { timeout: 2_000, interval: 1 });
    expect(done).not.toHaveBeenCalled();
    expect(probes.primary!.asked).toBe(0); // the primary is no candidate
    probes.replica2!.lsn = '0/600';
    await vi.waitFor(() => expect(done).toHaveBeenCalledWith(true), { timeout: 2_000, interval: 1 });
    expect(topology.node('replica2')!.replayLsn).toBe(0x600n);
    expect(sampler.waiting).toBe(0);
    // one query in flight per node at a time
    expect(probes.replica2!.maxInflight).toBe(1);
    const asked = probes.replica2!.asked;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(probes.replica2!.asked - asked).toBeLessThanOrEqual(1); // sampling stopped with the last wait
  });

  it('a wait no replica satisfies ends with false after its timeout', async () => {
    const { sampler } = setup();
    stop = () => sampler.stop();
    const done = vi.fn();
    const started = performance.now();
    sampler.wait(() => false, 30, done);
    await vi.waitFor(() => expect(done).toHaveBeenCalledWith(false), { timeout: 2_000, interval: 1 });
    expect(performance.now() - started).toBeGreaterThanOrEqual(29);
    expect(done).toHaveBeenCalledTimes(1);
  });

  it('never lowers a position, and ignores replicas the lag monitor does not vouch for or excludes for their lag', async () => {
    const { topology, probes, sampler } = setup();
    stop = () => sampler.stop();
    topology.node('replica1')!.replayLsn = 0x800n;
    topology.node('replica2')!.replicating = false;
    probes.replica2!.lsn = '0/900';
    const lagging = topology.node('replica3')!;
    lagging.fresh = false; // excluded for its lag (or paused)
    const done = vi.fn();
    sampler.wait(() => false, 40, done);
    await vi.waitFor(() => expect(done).toHaveBeenCalled(), { timeout: 2_000, interval: 1 });
    expect(probes.replica1!.asked).toBeGreaterThan(0);
    expect(topology.node('replica1')!.replayLsn).toBe(0x800n);
    expect(probes.replica2!.asked).toBe(0);
    expect(topology.node('replica2')!.replayLsn).toBeUndefined();
    expect(probes.replica3!.asked).toBe(0);
  });

  it('a sample answered after the primary changed does not count', async () => {
    const { topology, probes, sampler } = setup();
    stop = () => sampler.stop();
    const gate: (() => void)[] = [];
    const held = probes.replica1!;
    held.query = async <T>() => {
      held.asked++;
      await new Promise<void>((resolve) => gate.push(resolve));
      return { replay_lsn: '0/700' } as T;
    };
    sampler.wait(() => false, 1_000, () => undefined);
    expect(held.asked).toBe(1);
    topology.primaryName = 'replica2'; // while the answer is on its way
    gate.shift()!();
    await vi.waitFor(() => expect(held.asked).toBe(2), { timeout: 2_000, interval: 1 });
    expect(topology.node('replica1')!.replayLsn).toBeUndefined();
  });

  it('a node that does not answer does not hold back sampling the others', async () => {
    const { topology, probes, sampler } = setup();
    stop = () => sampler.stop();
    const hung = probes.replica1!;
    hung.query = <T>() => {
      hung.asked++;
      return new Promise<T>(() => undefined);
    };
    const done = vi.fn();
    sampler.wait(() => (topology.node('replica2')!.replayLsn ?? 0n) >= 0x600n, 5_000, done);
    await vi.waitFor(() => expect(probes.replica2!.asked).toBeGreaterThan(3), { timeout: 2_000, interval: 1 });
    expect(hung.asked).toBe(1);
    probes.replica2!.lsn = '0/600';
    await vi.waitFor(() => expect(done).toHaveBeenCalledWith(true), { timeout: 2_000, interval: 1 });
    // a later wait samples replica2 at once, though replica1's answer is still outstanding
    const asked = probes.replica2!.asked;
    sampler.wait(() => false, 20, () => undefined);
    expect(probes.replica2!.asked).toBe(asked + 1);
  });

  it('stop() ends every open wait (false) and samples no more', async () => {
    const { probes, sampler } = setup();
    const done = vi.fn();
    sampler.wait(() => false, 10_000, done);
    sampler.stop();
    expect(done).toHaveBeenCalledWith(false);
    const asked = probes.replica1!.asked;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(probes.replica1!.asked).toBe(asked);
  });
});
