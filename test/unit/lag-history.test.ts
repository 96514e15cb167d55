import { describe, expect, it } from 'vitest';
import { LagHistory } from '../../src/cluster/lag-history.js';

describe('LagHistory (time lag from primary position samples)', () => {
  it('knows nothing without samples', () => {
    expect(new LagHistory(60_000, 25).lag(0n, 0)).toBeUndefined();
  });

  it('reports 0 for a caught-up replica however long the primary has been idle', () => {
    const h = new LagHistory(60_000, 25);
    for (let t = 0; t <= 3_600_000; t += 250) h.add(t, 1000n);
    expect(h.lag(1000n, 3_600_000)).toEqual({ lagMs: 0, beyondHistory: false });
    // an idle run is kept as its first and last sample, not one slot per tick
    expect(h.size).toBe(2);
  });

  it('reports how long ago the primary was at the replay position (busy primary)', () => {
    const h = new LagHistory(60_000, 25);
    // the primary writes 1000 bytes per 250 ms tick
    for (let t = 0; t <= 10_000; t += 250) h.add(t, BigInt(t * 4));
    // the replica is where the primary was at t = 7000
    expect(h.lag(28_000n, 10_000)!.lagMs).toBeCloseTo(3000, 6);
    // between two samples: interpolated by position
    expect(h.lag(28_500n, 10_000)!.lagMs).toBeCloseTo(2875, 6);
    // at or past the newest sample: no lag
    expect(h.lag(40_000n, 10_000)!.lagMs).toBe(0);
    expect(h.lag(50_000n, 10_000)!.lagMs).toBe(0);
  });

  it('grows the lag of a replica that stopped while the primary went on', () => {
    const h = new LagHistory(60_000, 25);
    h.add(0, 100n);
    h.add(250, 100n);
    h.add(500, 200n); // a write between 250 and 500
    h.add(750, 200n);
    expect(h.lag(100n, 750)!.lagMs).toBe(500); // the primary was last at 100 at t=250
    expect(h.lag(100n, 5000)!.lagMs).toBe(4750);
    expect(h.lag(200n, 5000)!.lagMs).toBe(0);
  });

  it('counts lag from the last moment an idle primary sat at the replica position', () => {
    const h = new LagHistory(60_000, 25);
    for (let t = 0; t <= 10_000; t += 250) h.add(t, 500n);
    h.add(10_250, 900n);
    // the replica is at 500: the primary left 500 after t=10000, so the lag is about 0.25–0.5 s, not 10 s
    expect(h.lag(500n, 10_500)!.lagMs).toBe(500);
  });

  it('says when the replay position is older than every sample kept (a lower bound)', () => {
    const h = new LagHistory(1000, 10);
    for (let t = 0; t <= 5000; t += 100) h.add(t, BigInt(1000 + t));
    const estimate = h.lag(10n, 5000)!;
    expect(estimate.beyondHistory).toBe(true);
    // the history keeps about its horizon, so the bound is about the horizon
    expect(estimate.lagMs).toBeGreaterThanOrEqual(1000);
    expect(estimate.lagMs).toBeLessThanOrEqual(1100);
  });

  it('keeps at least the horizon of history in a bounded ring, whatever the sampling rate', () => {
    const h = new LagHistory(2000, 10);
    for (let t = 0; t <= 20_000; t += 1) h.add(t, BigInt(t));
    expect(h.size).toBeLessThanOrEqual(Math.ceil(2000 / 10) + 2);
    expect(h.latest()).toEqual({ atMs: 20_000, lsn: 20_000n });
    const oldest = h.oldest()!;
    expect(oldest.atMs).toBeLessThanOrEqual(18_000);
    expect(oldest.atMs).toBeGreaterThanOrEqual(17_990);
    expect(h.lag(19_000n, 20_000)!.lagMs).toBeCloseTo(1000, 6);
  });

  it('starts afresh when the position goes backwards (another primary)', () => {
    const h = new LagHistory(60_000, 25);
    h.add(0, 5000n);
    h.add(250, 6000n);
    h.add(500, 100n);
    expect(h.size).toBe(1);
    expect(h.oldest()).toEqual({ atMs: 500, lsn: 100n });
  });

  it('ignores samples that go back in time', () => {
    const h = new LagHistory(60_000, 25);
    h.add(1000, 10n);
    h.add(900, 20n);
    expect(h.latest()).toEqual({ atMs: 1000, lsn: 10n });
  });
});
