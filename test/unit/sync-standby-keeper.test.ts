import { describe, expect, it, vi } from 'vitest';
import type { Config } from '../../src/config/types.js';
import type { ReplicationObservation } from '../../src/cluster/failover-plan.js';
import type { HealthChecker } from '../../src/cluster/health-checker.js';
import type { NodeAdmin } from '../../src/cluster/node-admin.js';
import { SyncStandbyKeeper } from '../../src/cluster/sync-standby-keeper.js';
import { Topology } from '../../src/cluster/topology.js';
import { silentLogger } from '../../src/util/log.js';

// What the keeper of the synchronous standby decides from the primary's replication view (the
// integration test sync-standby-lost.test.ts runs it against a real cluster).

const GRACE = 1_000; // the keeper's least grace (health interval + timeout below are shorter)

function setup() {
  const topology = new Topology([
    { name: 'primary', host: '127.0.0.1', port: 1, role: 'primary', weight: 1 },
    { name: 'replica1', host: '127.0.0.1', port: 3, role: 'replica', weight: 1 },
    { name: 'standby1', host: '127.0.0.1', port: 2, role: 'standby', weight: 1 },
  ] as never);
  topology.node('primary')!.inRecovery = false;
  for (const name of ['standby1', 'replica1']) topology.node(name)!.inRecovery = true;
  const set: string[] = [];
  const admin = {
    setSynchronousStandbyNames: vi.fn(async (_node: unknown, value: string) => void set.push(value)),
    caughtUpStandby: vi.fn(async (_node: unknown, names: readonly string[]) => names[0]),
    // the follower named last is reported synchronous
    streamingPeers: vi.fn(async () => [{ applicationName: (set.at(-1) ?? '').replace(/"/g, ''), state: 'streaming', syncState: 'sync' }]),
  };
  const told: ReplicationObservation[] = [];
  const errors: string[] = [];
  const log = Object.assign(Object.create(silentLogger) as typeof silentLogger, { error: (_fields: unknown, message: string) => void errors.push(message) });
  const keeper = new SyncStandbyKeeper({
    topology,
    health: { applicationName: (name: string) => name } as unknown as HealthChecker,
    admin: admin as unknown as NodeAdmin,
    log,
    config: () => ({ health: { interval_ms: 100, timeout_ms: 200 } }) as Config,
    replicationSet: (_primary, view) => void told.push(view),
  });
  const view = (names: string, ...peers: [string, string][]): ReplicationObservation => ({
    synchronousStandbyNames: names,
    peers: peers.map(([applicationName, state]) => ({ applicationName, state, syncState: state === 'streaming' ? 'async' : '' })),
    at: Date.now(),
  });
  const observe = (v: ReplicationObservation) => keeper.observe(topology.node('primary')!, v);
  return { topology, admin, set, told, errors, view, observe };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

describe('SyncStandbyKeeper', () => {
  it('leaves the setting while a listed standby streams, or its walsender is there and its state cannot be read', async () => {
    const { admin, view, observe } = setup();
    observe(view('standby1', ['standby1', 'streaming'], ['replica1', 'streaming']));
    observe(view('standby1', ['standby1', ''], ['replica1', '']));
    await new Promise((resolve) => setTimeout(resolve, GRACE + 50));
    observe(view('standby1', ['standby1', ''], ['replica1', '']));
    await settle();
    expect(admin.setSynchronousStandbyNames).not.toHaveBeenCalled();
  });

  it('replaces a lost standby only after the grace, with a caught-up follower, and tells the failover at once', async () => {
    const { admin, set, told, view, observe } = setup();
    observe(view('standby1', ['replica1', 'streaming']));
    await settle();
    expect(admin.caughtUpStandby).not.toHaveBeenCalled();
    await new Promise((resolve) => setTimeout(resolve, GRACE + 50));
    observe(view('standby1', ['replica1', 'streaming']));
    await settle();
    expect(admin.caughtUpStandby).toHaveBeenCalledWith(expect.anything(), ['replica1'], expect.any(Number));
    expect(set).toEqual(['"replica1"']);
    expect(told.at(-1)).toMatchObject({ synchronousStandbyNames: '"replica1"', peers: [{ applicationName: 'replica1', syncState: 'sync' }] });
  });

  it('replaces at once, without the grace, a standby the health checks have found down', async () => {
    const { set, view, observe, topology } = setup();
    topology.node('standby1')!.up = false;
    observe(view('standby1', ['replica1', 'streaming']));
    await settle();
    expect(set).toEqual(['"replica1"']);
  });

  it('counts a standby the health checks found down as lost though its walsender is still there (a silent standby)', async () => {
    const { set, view, observe, topology } = setup();
    topology.node('standby1')!.up = false;
    observe(view('standby1', ['standby1', 'streaming'], ['replica1', 'streaming']));
    await settle();
    expect(set).toEqual(['"replica1"']);
  });

  it('prefers a configured standby among the followers; makes none synchronous that has not caught up', async () => {
    const { admin, set, view, observe, topology } = setup();
    topology.node('standby1')!.up = true;
    admin.caughtUpStandby.mockResolvedValueOnce(undefined as never);
    const lost = view('"gone"', ['replica1', 'streaming'], ['standby1', 'streaming']);
    observe(lost);
    await new Promise((resolve) => setTimeout(resolve, GRACE + 50));
    observe(lost);
    await settle();
    expect(admin.caughtUpStandby.mock.calls[0]![1]).toEqual(['standby1', 'replica1']);
    expect(set).toEqual([]);
  });

  it('with no follower streaming, clears the setting (and says so); the first follower to stream again is made synchronous', async () => {
    const { set, told, errors, view, observe } = setup();
    observe(view('standby1'));
    await new Promise((resolve) => setTimeout(resolve, GRACE + 50));
    observe(view('standby1'));
    await settle();
    expect(set).toEqual(['']);
    expect(told.at(-1)!.synchronousStandbyNames).toBe('');
    expect(errors.some((e) => e.startsWith('the synchronous standby is lost and no other replica streams'))).toBe(true);
    observe(view(''));
    await settle();
    expect(set).toEqual(['']);
    observe(view('', ['replica1', 'streaming']));
    await settle();
    expect(set).toEqual(['', '"replica1"']);
  });

  it('does not give the place back to the configured standby when it streams again', async () => {
    const { set, view, observe } = setup();
    const lost = view('standby1', ['replica1', 'streaming']);
    observe(lost);
    await new Promise((resolve) => setTimeout(resolve, GRACE + 50));
    observe(lost);
    await settle();
    expect(set).toEqual(['"replica1"']);
    const back = view('"replica1"', ['replica1', 'streaming'], ['standby1', 'streaming']);
    observe(back);
    await new Promise((resolve) => setTimeout(resolve, GRACE + 50));
    observe(back);
    await settle();
    expect(set).toEqual(['"replica1"']);
  });

  it('waits for a listed standby that is connected and catching up when no other follower streams: nothing is cleared', async () => {
    const { admin, view, observe } = setup();
    const catchingUp = view('standby1', ['standby1', 'catchup']);
    observe(catchingUp);
    await new Promise((resolve) => setTimeout(resolve, GRACE + 50));
    observe(catchingUp);
    await settle();
    expect(admin.setSynchronousStandbyNames).not.toHaveBeenCalled();
  });

  it('leaves a setting that asks for two synchronous standbys alone, and says so once', async () => {
    const { admin, errors, view, observe } = setup();
    const two = view('FIRST 2 (standby1, replica1)', ['replica1', 'streaming']);
    observe(two);
    await new Promise((resolve) => setTimeout(resolve, GRACE + 50));
    observe(two);
    observe(two);
    await settle();
    expect(admin.setSynchronousStandbyNames).not.toHaveBeenCalled();
    expect(errors.filter((e) => e.startsWith('fewer synchronous standbys stream'))).toHaveLength(1);
  });
});
