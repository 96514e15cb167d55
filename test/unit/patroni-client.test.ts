import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { endpointLabel, parseClusterDocument, PatroniApiError } from '../../src/cluster/patroni-client.js';
import { nodeConfigOf } from '../../src/cluster/patroni.js';

/** What Patroni 3.0.2 answered to GET /cluster on the test cluster (one member mid-switchover). */
const CLUSTER = JSON.stringify({
  members: [
    { name: 'node1', role: 'replica', state: 'running', api_url: 'http://127.0.0.1:46587/patroni', host: '127.0.0.1', port: 37801, timeline: 2, lag: 0 },
    { name: 'node2', role: 'leader', state: 'running', api_url: 'http://127.0.0.1:45469/patroni', host: '127.0.0.1', port: 46047, timeline: 2 },
    { name: 'node3', role: 'sync_standby', state: 'stopping', api_url: 'http://127.0.0.1:35233/patroni', host: '127.0.0.1', port: 35583, lag: 'unknown', tags: { noloadbalance: true } },
  ],
  scheduled_switchover: { at: '2026-11-26T17:02:54.404000+00:00', from: 'node2', to: 'node3' },
});

describe('Patroni GET /cluster document', () => {
  it('maps members, the leader, the sync standby and a scheduled switchover', () => {
    const view = parseClusterDocument(CLUSTER, 'http://127.0.0.1:8008');
    expect(view.leader).toBe('node2');
    expect(view.syncStandbys).toEqual(['node3']);
    expect(view.paused).toBe(false);
    expect(view.members.map((m) => [m.name, m.role, m.host, m.port, m.timeline, m.lagBytes])).toEqual([
      ['node1', 'replica', '127.0.0.1', 37801, 2, 0],
      ['node2', 'leader', '127.0.0.1', 46047, 2, undefined],
      // "lag": "unknown" is no number
      ['node3', 'sync_standby', '127.0.0.1', 35583, undefined, undefined],
    ]);
    expect(view.members[2]!.tags).toEqual({ noloadbalance: true });
    expect(view.scheduledSwitchover).toEqual({ atMs: Date.parse('2026-11-26T17:02:54.404Z'), from: 'node2', to: 'node3' });
  });

  it('trusts no leader when two members claim it, and skips members without a name', () => {
    const view = parseClusterDocument(
      JSON.stringify({ members: [{ name: 'a', role: 'leader' }, { name: 'b', role: 'leader' }, { role: 'replica' }, { name: '', role: 'replica' }], pause: true }),
    );
    expect(view.leader).toBeUndefined();
    expect(view.members.map((m) => m.name)).toEqual(['a', 'b']);
    expect(view.paused).toBe(true);
  });

  it('a standby cluster\'s leader (standby_leader) is no leader for writes', () => {
    const view = parseClusterDocument(JSON.stringify({ members: [{ name: 'a', role: 'standby_leader', host: 'h', port: 5432 }] }));
    expect(view.leader).toBeUndefined();
  });

  it('rejects what is not a /cluster document', () => {
    expect(() => parseClusterDocument('<html>')).toThrow(PatroniApiError);
    expect(() => parseClusterDocument('{"state": "running"}')).toThrow(/no "members" list/);
  });

  it('never shows endpoint credentials in labels', () => {
    expect(endpointLabel('http://patroni:s3cret-pw@10.0.0.1:8008/')).toBe('http://10.0.0.1:8008');
    expect(endpointLabel('not a url')).not.toContain('not a url');
  });
});

describe('Patroni members as nodes', () => {
  const config = parseConfig(
    'users: [{name: app, password: x}]\nfailover: {mode: patroni}\npatroni: {endpoints: ["http://127.0.0.1:8008"]}\nnodes:\n  - {name: node1, host: ignored, weight: 3}\n',
    { env: {} },
  );
  const view = parseClusterDocument(CLUSTER);

  it('takes the address from Patroni and the weight from nodes:', () => {
    expect(nodeConfigOf(view.members[0]!, config, 'node2')).toEqual({ name: 'node1', host: '127.0.0.1', port: 37801, role: 'replica', weight: 3 });
    expect(nodeConfigOf(view.members[2]!, config, 'node2')).toEqual({ name: 'node3', host: '127.0.0.1', port: 35583, role: 'standby', weight: 1 });
  });

  it('marks the leader primary only when it is pgrelay\'s primary (promotion confirmed)', () => {
    expect(nodeConfigOf(view.members[1]!, config, 'node2')!.role).toBe('primary');
    expect(nodeConfigOf(view.members[1]!, config, undefined)!.role).toBe('standby');
  });

  it('leaves out a member without an address', () => {
    expect(nodeConfigOf({ ...view.members[0]!, host: undefined }, config, undefined)).toBeUndefined();
  });
});
