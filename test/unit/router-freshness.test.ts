import { describe, expect, it } from 'vitest';
import type { Classification } from '../../src/classify/classifier.js';
import { Freshness, type WriteLsnSource } from '../../src/routing/freshness.js';
import { Source } from '../support/write-lsn-source.js';


const hinted = (maxLagMs: number) => ({ maxLagMs }) as unknown as Classification;

describe('Freshness (consistency modes)', () => {
  it('eventual: no constraint but a statement hint', () => {
    const source = new Source();
    const f = new Freshness(source, 'eventual');
    const a = {};
    f.wroteOnPrimary(a);
    expect(source.waiting).toHaveLength(0);
    expect(f.readConstraints(a, undefined)).toBeUndefined();
    expect(f.readConstraints(a, hinted(250))).toEqual({ maxLagMs: 250 });
  });

  it('session: reads go to the primary until the write position is known, then need that position', () => {
    const source = new Source();
    const f = new Freshness(source, 'session');
    const a = {};
    const b = {};
    expect(f.readConstraints(a, undefined)).toBeUndefined();
    f.wroteOnPrimary(a);
    expect(f.readConstraints(a, undefined)).toEqual({ minLsn: undefined, pendingWrite: true, maxLagMs: undefined });
    expect(f.readConstraints(b, undefined)).toBeUndefined(); // another client is not held back
    source.sample(500n);
    expect(f.readConstraints(a, hinted(100))).toEqual({ minLsn: 500n, pendingWrite: false, maxLagMs: 100 });
  });

  it('session: a second write keeps reads on the primary until its own position is known', () => {
    const source = new Source();
    const f = new Freshness(source, 'session');
    const a = {};
    f.wroteOnPrimary(a);
    const first = source.waiting.shift()!;
    f.wroteOnPrimary(a);
    first(100n);
    expect(f.readConstraints(a, undefined)).toMatchObject({ minLsn: 100n, pendingWrite: true });
    source.sample(300n);
    expect(f.readConstraints(a, undefined)).toMatchObject({ minLsn: 300n, pendingWrite: false });
    // positions only move forward
    f.wroteOnPrimary(a);
    source.sample(200n);
    expect(f.readConstraints(a, undefined)).toMatchObject({ minLsn: 300n, pendingWrite: false });
  });

  it('global: one client\'s write holds back every client\'s reads', () => {
    const source = new Source();
    const f = new Freshness(source, 'global');
    const a = {};
    const b = {};
    expect(f.readConstraints(b, undefined)).toEqual({ minLsn: undefined, pendingWrite: false, maxLagMs: undefined });
    f.wroteOnPrimary(a);
    expect(f.readConstraints(b, undefined)).toMatchObject({ pendingWrite: true });
    source.sample(900n);
    expect(f.readConstraints(b, undefined)).toMatchObject({ minLsn: 900n, pendingWrite: false });
  });

  it("session: a commit asks for no sample (the writes wait for the next one taken); the client's next read asks, once", () => {
    const asked: boolean[] = [];
    let hurried = 0;
    const waiting: ((lsn: bigint) => void)[] = [];
    const source: WriteLsnSource = {
      afterWrite: (done, soon) => {
        asked.push(soon ?? true);
        waiting.push(done);
      },
      hurry: () => hurried++,
    };
    const f = new Freshness(source, 'session');
    const a = {};
    f.wroteOnPrimary(a);
    f.wroteOnPrimary(a);
    // registered (a sample taken from now on covers them), but no sample asked for: a writer that does not read costs none
    expect(asked).toEqual([false, false]);
    expect(hurried).toBe(0);
    expect(f.readConstraints(a, undefined)).toMatchObject({ pendingWrite: true });
    expect(hurried).toBe(1);
    // reads waiting for the same writes do not ask again
    f.readConstraints(a, undefined);
    expect(hurried).toBe(1);
    for (const done of waiting.splice(0)) done(700n);
    expect(f.readConstraints(a, undefined)).toMatchObject({ minLsn: 700n, pendingWrite: false });
    // nothing pending: a read asks for nothing
    expect(hurried).toBe(1);
    // a later write: the next read asks again
    f.wroteOnPrimary(a);
    f.readConstraints(a, undefined);
    expect(hurried).toBe(2);
    // under global, a commit asks at once (every client's reads wait for it)
    const g = new Freshness(source, 'global');
    g.wroteOnPrimary(a);
    expect(asked.at(-1)).toBe(true);
  });

  it('session: with no replica to serve a read (primary only, or every replica down or lagging), a read asks for no sample; once one serves, it does', () => {
    let hurried = 0;
    const source: WriteLsnSource = { afterWrite: () => undefined, hurry: () => hurried++ };
    let replicaServes = false;
    const f = new Freshness(source, 'session', undefined, () => replicaServes);
    const a = {};
    f.wroteOnPrimary(a);
    expect(f.readConstraints(a, undefined)).toMatchObject({ pendingWrite: true });
    f.readConstraints(a, undefined);
    expect(hurried).toBe(0);
    replicaServes = true;
    f.readConstraints(a, undefined);
    expect(hurried).toBe(1);
  });

  it('switching modes on reload', () => {
    const source = new Source();
    const f = new Freshness(source, 'global');
    f.wroteOnPrimary({});
    f.configure('eventual');
    expect(f.readConstraints({}, undefined)).toBeUndefined();
    f.configure('global');
    expect(f.readConstraints({}, undefined)).toMatchObject({ pendingWrite: false, minLsn: undefined });
  });
});
