import { describe, expect, it } from 'vitest';
import { judgeLag, REENTRY_FRACTION, withinLag } from '../../src/routing/eligibility.js';

const limits = { maxLagMs: 1000, maxLagBytes: 0 };
const reading = (lagMs: number, lagBytes = 0, replayPaused = false) => ({ lagMs, lagBytes, replayPaused });

describe('eligibility with hysteresis', () => {
  it('turns stale only past the limit', () => {
    expect(judgeLag(true, reading(1000), limits).fresh).toBe(true);
    const v = judgeLag(true, reading(1001), limits);
    expect(v.fresh).toBe(false);
    expect(v.reason).toMatch(/exceeds max_lag_ms 1000/);
  });

  it('comes back only at or under 80% of the limit', () => {
    expect(REENTRY_FRACTION).toBe(0.8);
    expect(judgeLag(false, reading(999), limits).fresh).toBe(false);
    expect(judgeLag(false, reading(801), limits).fresh).toBe(false);
    expect(judgeLag(false, reading(800), limits).fresh).toBe(true);
    expect(judgeLag(false, reading(0), limits).fresh).toBe(true);
  });

  it('does not flap on a lag oscillating around the limit', () => {
    let fresh = true;
    const seen: boolean[] = [];
    for (const lag of [900, 1100, 950, 1050, 990, 1010, 850, 790, 950, 1000, 1001]) {
      fresh = judgeLag(fresh, reading(lag), limits).fresh;
      seen.push(fresh);
    }
    expect(seen).toEqual([true, false, false, false, false, false, false, true, true, true, false]);
  });

  it('applies the byte limit only when set, with the same hysteresis', () => {
    expect(judgeLag(true, reading(10, 10_000_000), limits).fresh).toBe(true);
    const bytes = { maxLagMs: 1000, maxLagBytes: 1000 };
    expect(judgeLag(true, reading(10, 1000), bytes).fresh).toBe(true);
    expect(judgeLag(true, reading(10, 1001), bytes).reason).toMatch(/max_lag_bytes 1000/);
    expect(judgeLag(false, reading(10, 900), bytes).fresh).toBe(false);
    expect(judgeLag(false, reading(10, 800), bytes).fresh).toBe(true);
    // both limits must be back
    expect(judgeLag(false, reading(900, 100), bytes).fresh).toBe(false);
  });

  it('excludes a paused replica once WAL is waiting, not before', () => {
    expect(judgeLag(true, reading(0, 0, true), limits).fresh).toBe(true);
    const v = judgeLag(true, reading(5, 100, true), limits);
    expect(v.fresh).toBe(false);
    expect(v.reason).toMatch(/paused/);
    expect(judgeLag(false, reading(5, 100, true), limits).fresh).toBe(false);
  });

  it('a statement limit (hint) is checked without hysteresis, and unknown lag never passes', () => {
    expect(withinLag({ lagMs: 4000, lagBytes: 10, replayPaused: false }, 5000, 0)).toBe(true);
    expect(withinLag({ lagMs: 4000, lagBytes: 10, replayPaused: false }, 3000, 0)).toBe(false);
    expect(withinLag({ lagMs: 1, lagBytes: 10, replayPaused: true }, 5000, 0)).toBe(false);
    expect(withinLag({ lagMs: 1, lagBytes: 2000, replayPaused: false }, 5000, 1000)).toBe(false);
    expect(withinLag({ lagMs: undefined, lagBytes: undefined, replayPaused: false }, 5000, 0)).toBe(false);
  });
});
