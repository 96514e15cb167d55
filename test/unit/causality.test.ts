import { beforeAll, describe, expect, it } from 'vitest';
import { Classifier } from '../../src/classify/classifier.js';
import { maskLiterals } from '../../src/classify/lexer.js';
import { sessionLevel } from '../../src/cluster/remote-apply.js';
import { Topology } from '../../src/cluster/topology.js';
import { Freshness, type AppliedWrites } from '../../src/routing/freshness.js';
import { Source } from '../support/write-lsn-source.js';
import { LagPolicy } from '../../src/routing/lag-policy.js';
import { Router } from '../../src/routing/router.js';

// The causality token's hint (after_lsn), its place in read constraints and routing, and the
// remote_apply shortcut's rules, on plain values.


describe('after_lsn hint', () => {
  let classifier: Classifier;
  beforeAll(async () => {
    classifier = await Classifier.create();
  });

  it('is read from the comment, the highest position of a text counts, the key does not hold it', () => {
    const m = maskLiterals('/* pgrelay:after_lsn=0/16B3748 */ SELECT 1');
    expect(m.afterLsn).toBe(0x16b3748n);
    expect(m.badAfterLsn).toBeUndefined();
    expect(m.key).toBe(maskLiterals('SELECT 1').key);
    expect(maskLiterals('SELECT 1 /* pgrelay:after_lsn=1/0 */ -- pgrelay:after_lsn=0/FFFFFFFF').afterLsn).toBe(1n << 32n);
    expect(maskLiterals('/* pgrelay:replica, after_lsn=A/b */ SELECT 1')).toMatchObject({ hint: 'replica', afterLsn: (0xan << 32n) | 0xbn });
    // inside a string it is no hint
    expect(maskLiterals("SELECT '/* pgrelay:after_lsn=zz */'").badAfterLsn).toBeUndefined();
  });

  it('a value that is not a pg_lsn is kept as written, for the 22P02', () => {
    for (const bad of ['0/XYZ', '16B3748', '1/2/3', '123456789/0', '']) {
      expect(maskLiterals(`/* pgrelay:after_lsn=${bad} */ SELECT 1`).badAfterLsn).toBe(bad);
    }
  });

  it('two texts of one shape with different positions share the shape\'s decision but keep their own position', () => {
    const a = classifier.classify('/* pgrelay:after_lsn=0/10 */ SELECT v FROM t WHERE id = 1');
    const misses = classifier.stats.misses;
    const b = classifier.classify('/* pgrelay:after_lsn=5/20 */ SELECT v FROM t WHERE id = 2');
    const plain = classifier.classify('SELECT v FROM t WHERE id = 3');
    expect(classifier.stats.misses).toBe(misses); // parsed once for the shape
    expect(a.afterLsn).toBe(0x10n);
    expect(b.afterLsn).toBe((5n << 32n) | 0x20n);
    expect(plain.afterLsn).toBeUndefined();
    expect([a.route, b.route, plain.route]).toEqual(['replica', 'replica', 'replica']);
  });
});

describe('read constraints and routing with a causality token', () => {
  function cluster(): { topology: Topology; router: Router } {
    const topology = new Topology([
      { name: 'p', host: 'h', port: 1, role: 'primary', weight: 1 },
      { name: 's', host: 'h', port: 2, role: 'standby', weight: 1 },
      { name: 'r', host: 'h', port: 3, role: 'replica', weight: 1 },
    ]);
    for (const node of topology.nodes.values()) node.inRecovery = node.name !== 'p';
    topology.node('s')!.replayLsn = 100n;
    topology.node('r')!.replayLsn = 50n;
    const router = new Router(topology, { balance: 'round_robin', fallback: 'primary' }, new LagPolicy({ maxLagMs: 1000, maxLagBytes: 0 }));
    return { topology, router };
  }
  const names = (router: Router, c: Parameters<Router['readCandidates']>[0]) => router.readCandidates(c).map((n) => n.name).sort();

  it('after_lsn: only replicas that replayed it, in every consistency mode', () => {
    const { router } = cluster();
    for (const mode of ['eventual', 'session', 'global'] as const) {
      const f = new Freshness(new Source(), mode);
      const c = f.readConstraints({}, { afterLsn: 80n } as never);
      expect(names(router, c)).toEqual(['s']);
    }
    expect(names(router, { afterLsn: 101n })).toEqual([]);
    expect(router.route('replica', { afterLsn: 101n })).toMatchObject({ kind: 'node', fallback: 'consistency' });
  });

  it('the session fence applies too: the later of the two', () => {
    const { router } = cluster();
    const source = new Source();
    const f = new Freshness(source, 'session');
    const session = {};
    f.wroteOnPrimary(session);
    source.sample(90n);
    expect(names(router, f.readConstraints(session, { afterLsn: 10n } as never))).toEqual(['s']);
    expect(names(router, f.readConstraints(session, { afterLsn: 200n } as never))).toEqual([]);
  });

  it('remote_apply: the node that applied the write serves at once (position not known yet), the others wait; never past an after_lsn', () => {
    const { router } = cluster();
    const source = new Source();
    let applies = true;
    const applied: AppliedWrites = { appliedOn: () => 's', stillApplies: (node) => applies && node === 's' };
    const f = new Freshness(source, 'session', applied);
    const session = {};
    f.wroteOnPrimary(session);
    expect(names(router, f.readConstraints(session, undefined))).toEqual(['s']);
    expect(names(router, f.readConstraints(session, { afterLsn: 150n } as never))).toEqual([]);
    // no longer the synchronous standby: the write's position decides again
    applies = false;
    expect(names(router, f.readConstraints(session, undefined))).toEqual([]);
    source.sample(40n);
    expect(names(router, f.readConstraints(session, undefined))).toEqual(['r', 's']);
  });

  it('the token: 0 before a write; the recorded position once known; a later sample while pending or outside session mode', () => {
    const source = new Source();
    const f = new Freshness(source, 'session');
    const session = {};
    const got: bigint[] = [];
    f.lastWritePosition(session, (lsn) => got.push(lsn));
    expect(got).toEqual([0n]);
    f.wroteOnPrimary(session);
    f.lastWritePosition(session, (lsn) => got.push(lsn));
    expect(got).toEqual([0n]);
    source.sample(77n); // the write's position and the token's sample
    expect(got).toEqual([0n, 77n]);
    f.lastWritePosition(session, (lsn) => got.push(lsn));
    expect(got).toEqual([0n, 77n, 77n]);
    const eventual = new Freshness(source, 'eventual');
    const other = {};
    eventual.lastWritePosition(other, (lsn) => got.push(lsn));
    eventual.wroteOnPrimary(other);
    eventual.lastWritePosition(other, (lsn) => got.push(lsn));
    source.sample(99n);
    expect(got).toEqual([0n, 77n, 77n, 0n, 99n]);
  });
});

describe("a session's own synchronous_commit (remote_apply shortcut)", () => {
  it('follows a session-level SET or startup parameter, DEFAULT and RESET mean the server\'s', () => {
    expect(sessionLevel('')).toBe('server');
    expect(sessionLevel('SET "application_name" TO \'x\'')).toBe('server');
    expect(sessionLevel('SET "synchronous_commit" TO \'remote_apply\'')).toBe('remote_apply');
    expect(sessionLevel('SET synchronous_commit = on')).toBe('on');
    expect(sessionLevel('set SESSION synchronous_commit to remote_apply')).toBe('remote_apply');
    expect(sessionLevel('SET synchronous_commit TO DEFAULT')).toBe('server');
    expect(sessionLevel('SET "synchronous_commit" TO \'on\';\nSET synchronous_commit = remote_apply')).toBe('remote_apply');
  });

  it('anything it cannot follow is no shortcut', () => {
    expect(sessionLevel(undefined)).toBeUndefined();
    expect(sessionLevel('SET "options" TO \'-c synchronous_commit=local\'')).toBeUndefined();
    expect(sessionLevel('SET synchronous_commit = bogus')).toBeUndefined();
  });
});
