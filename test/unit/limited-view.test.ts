import { describe, expect, it } from 'vitest';
import { divergenceReason, type LimitedTrack } from '../../src/cluster/limited-view.js';
import { parseLsn } from '../../src/cluster/lsn.js';

// The lag monitor's limited view (no pg_monitor): a replica is vouched for by a sample of it taken
// before a primary sample it is not ahead of; one found ahead stays out until it goes back.

const sample = (atMs: number, lsn: string | null) => ({ atMs, row: { replay_lsn: lsn } });
const primary = (atMs: number, lsn: string) => ({ node: 'p2', atMs, currentLsn: parseLsn(lsn) });

describe('divergenceReason', () => {
  it('is unfit until a sample taken before a primary sample exists', () => {
    const track: LimitedTrack = { last: sample(100, '0/100'), previous: undefined, diverged: undefined };
    expect(divergenceReason(track, primary(90, '0/200'))).toMatch(/not yet compared/);
    track.previous = sample(95, '0/100');
    expect(divergenceReason(track, primary(90, '0/200'))).toMatch(/not yet compared/); // the replica answered after the primary sample was sent
    expect(divergenceReason(track, primary(120, '0/200'))).toBeUndefined();
    expect(divergenceReason(track, primary(120, '0/100'))).toBeUndefined(); // caught up exactly
  });

  it('a replica ahead of a later primary position follows another primary, and stays out while it does not go back', () => {
    const track: LimitedTrack = { last: sample(200, '0/300'), previous: sample(100, '0/300'), diverged: undefined };
    expect(divergenceReason(track, primary(150, '0/200'))).toMatch(/has replayed WAL \(0\/300\) that the primary p2 did not have later: it follows another primary/);
    // the primary passes its position: it still does not follow it
    track.previous = sample(200, '0/300');
    track.last = sample(300, '0/310');
    expect(divergenceReason(track, primary(250, '0/5000'))).toMatch(/it follows another primary/);
    // rewound (its position went back): judged afresh
    track.previous = sample(300, '0/310');
    track.last = sample(400, '0/100');
    expect(divergenceReason(track, primary(350, '0/5000'))).toBeUndefined();
    expect(track.diverged).toBeUndefined();
  });

  it('a divergence found against one primary does not carry over to the next', () => {
    const track: LimitedTrack = { last: sample(200, '0/300'), previous: sample(100, '0/250'), diverged: { primary: 'p1', lsn: parseLsn('0/250'), reason: 'old' } };
    expect(divergenceReason(track, primary(150, '0/400'))).toBeUndefined();
  });
});
