import { describe, expect, it } from 'vitest';
import { ALTER_SYSTEM_PARAMETERS, groupShortfalls, judgeCapabilities, sqlRole, type CheckFailure, type NodeCheck, type PreflightInput, type RoleFacts } from '../../src/cluster/capabilities.js';
import { chooseFailoverTarget, type PlanNode } from '../../src/cluster/failover-plan.js';
import { disablesConfiguredFeature } from '../../src/cluster/preflight.js';

// The preflight's judgment on plain facts: what each role may do on each node → capabilities and
// the grants that fix each shortfall.

const allParameters = (allowed: boolean) => Object.fromEntries(ALTER_SYSTEM_PARAMETERS.map((p) => [p, allowed])) as RoleFacts['alterSystem'];

/** A role with nothing but LOGIN (what an application role usually is). */
function plain(user: string, inRecovery: boolean, extra: Partial<RoleFacts> = {}): RoleFacts {
  return {
    user,
    version: 150004,
    inRecovery,
    superuser: false,
    replication: false,
    readAllStats: false,
    readAllSettings: false,
    signalBackend: false,
    promote: false,
    reloadConf: false,
    deniedFunctions: [],
    alterSystem: allParameters(false),
    synchronousStandbyNames: inRecovery ? '' : 'FIRST 1 (standby1)',
    ...extra,
  };
}
const monitorRole = (user: string, inRecovery: boolean) => plain(user, inRecovery, { readAllStats: true, readAllSettings: true });
const superuser = (user: string, inRecovery: boolean) => plain(user, inRecovery, { superuser: true, replication: true, readAllStats: true, readAllSettings: true, signalBackend: true, promote: true, reloadConf: true, alterSystem: allParameters(true) });
/** The PostgreSQL 15 grants of the README's pgrelay_failover role. */
const failoverRole = (user: string, inRecovery: boolean) => plain(user, inRecovery, { replication: true, readAllStats: true, readAllSettings: true, signalBackend: true, promote: true, reloadConf: true, alterSystem: allParameters(true) });

const NODES = [
  { node: 'primary', configuredRole: 'primary', inRecovery: false },
  { node: 'standby1', configuredRole: 'standby', inRecovery: true },
  { node: 'replica1', configuredRole: 'replica', inRecovery: true },
] as const;

function input(monitor: (user: string, inRecovery: boolean) => RoleFacts | CheckFailure, failover: ((user: string, inRecovery: boolean) => RoleFacts | CheckFailure) | undefined, options: Partial<PreflightInput> = {}): PreflightInput {
  const nodes: NodeCheck[] = NODES.map((n) => ({ node: n.node, configuredRole: n.configuredRole, monitor: monitor('mon', n.inRecovery), failover: failover?.('fo', n.inRecovery) }));
  return { mode: 'managed', allowDataLoss: false, monitorUser: 'mon', failoverUser: 'fo', primary: 'primary', nodes, ...options };
}

describe('judgeCapabilities', () => {
  it('an application role alone: reads degraded (judged from positions), failover and switchover impossible, each with its grant', () => {
    const report = judgeCapabilities(input(plain, plain));
    expect(report.replica_reads.state).toBe('degraded');
    expect(report.replica_reads.reason).toContain('GRANT pg_monitor TO mon;');
    expect(report.replica_reads.reason).toContain('standby1, replica1');
    expect(report.failover.state).toBe('impossible');
    expect(report.failover.reason).toMatch(/cannot see pg_stat_replication.sync_state on the primary primary/);
    expect(report.switchover.state).toBe('impossible');
    const grants = new Set(report.shortfalls.map((s) => s.grant));
    for (const grant of [
      'GRANT pg_monitor TO mon;',
      'GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO fo;',
      'GRANT EXECUTE ON FUNCTION pg_reload_conf() TO fo;',
      'GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names TO fo;',
      'GRANT ALTER SYSTEM ON PARAMETER primary_conninfo TO fo;',
      'GRANT ALTER SYSTEM ON PARAMETER primary_slot_name TO fo;',
      'GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only TO fo;',
      'GRANT pg_read_all_settings TO fo;',
      'GRANT pg_signal_backend TO fo;',
      'ALTER ROLE fo REPLICATION;',
    ]) {
      expect(grants).toContain(grant);
    }
    // the monitor's missing pg_monitor is reported on the replicas (reads) and on the primary (failover)
    const monitor = report.shortfalls.filter((s) => s.role === 'mon');
    expect(monitor.filter((s) => s.feature === 'replica_reads').map((s) => s.node)).toEqual(['standby1', 'replica1']);
    expect(monitor.filter((s) => s.feature === 'failover').map((s) => s.node)).toEqual(['primary']);
    expect(disablesConfiguredFeature(report)).toBe(true);
  });

  it('pg_monitor for health and a superuser for failover: everything ok, no shortfall', () => {
    const report = judgeCapabilities(input(monitorRole, superuser));
    expect([report.replica_reads.state, report.failover.state, report.switchover.state]).toEqual(['ok', 'ok', 'ok']);
    expect(report.shortfalls).toEqual([]);
    expect(disablesConfiguredFeature(report)).toBe(false);
  });

  it('the non-superuser failover role with the PostgreSQL 15 grants is enough', () => {
    const report = judgeCapabilities(input(monitorRole, failoverRole));
    expect([report.failover.state, report.switchover.state]).toEqual(['ok', 'ok']);
    expect(report.shortfalls).toEqual([]);
  });

  it('without sync_state visible, allow_data_loss makes failover degraded (lossy), not impossible', () => {
    const report = judgeCapabilities(input(plain, superuser, { allowDataLoss: true }));
    expect(report.failover.state).toBe('degraded');
    expect(report.failover.reason).toMatch(/acknowledged writes may be lost/);
    expect(report.shortfalls.find((s) => s.feature === 'failover')).toMatchObject({ role: 'mon', grant: 'GRANT pg_monitor TO mon;', disables: false });
    expect(disablesConfiguredFeature(report)).toBe(false);
  });

  it('a primary without a synchronous standby cannot fail over without loss', () => {
    const monitor = (user: string, inRecovery: boolean) => ({ ...monitorRole(user, inRecovery), synchronousStandbyNames: '' });
    const report = judgeCapabilities(input(monitor, superuser));
    expect(report.failover).toMatchObject({ state: 'impossible', reason: expect.stringContaining('has no synchronous standby') });
    expect(report.shortfalls).toEqual([]);
    expect(judgeCapabilities(input(monitor, superuser, { allowDataLoss: true })).failover.state).toBe('degraded');
  });

  it('re-pointing without its grants degrades failover (promotion still works)', () => {
    const report = judgeCapabilities(input(monitorRole, (u, r) => ({ ...failoverRole(u, r), replication: false, alterSystem: { ...allParameters(true), primary_conninfo: false } })));
    expect(report.failover.state).toBe('degraded');
    expect(report.failover.reason).toMatch(/cannot re-point replicas \(lacks primary_conninfo, REPLICATION\) \(on primary, standby1, replica1\)/);
    expect(report.switchover.state).toBe('ok');
  });

  it('PostgreSQL 14: ALTER SYSTEM needs a superuser, and the fix says so', () => {
    const report = judgeCapabilities(input(monitorRole, (u, r) => ({ ...failoverRole(u, r), version: 140010, alterSystem: allParameters(false) })));
    expect(report.failover.state).toBe('impossible');
    expect(report.shortfalls.map((s) => s.grant)).toContain('ALTER ROLE fo SUPERUSER; -- PostgreSQL 14 allows ALTER SYSTEM only to superusers');
  });

  it('a replica whose replay position the monitor may not read gets no reads; when none can be read, reads are off', () => {
    const denied = (u: string, r: boolean) => (r && u === 'mon' ? { ...monitorRole(u, r), deniedFunctions: ['pg_last_wal_replay_lsn()'] } : monitorRole(u, r));
    const report = judgeCapabilities(input(denied, superuser));
    expect(report.replica_reads).toMatchObject({ state: 'off', configured: true });
    expect(report.shortfalls.map((s) => s.grant)).toContain('GRANT EXECUTE ON FUNCTION pg_last_wal_replay_lsn() TO mon;');
    expect(disablesConfiguredFeature(report)).toBe(true);
  });

  it('a monitor role that cannot log in to the primary: reads off, failover impossible', () => {
    const refused = (u: string, r: boolean): RoleFacts | CheckFailure => (!r ? { error: '28P01 password authentication failed for user "mon"', login: true } : monitorRole(u, r));
    const report = judgeCapabilities(input(refused, superuser));
    expect(report.replica_reads.state).toBe('off');
    expect(report.failover.state).toBe('impossible');
    expect(report.shortfalls[0]).toMatchObject({ node: 'primary', role: 'mon', disables: true });
  });

  it('nodes that do not answer are not judged: unknown until they do', () => {
    const down = (): CheckFailure => ({ error: 'connect ECONNREFUSED', login: false });
    const report = judgeCapabilities(input(down, down));
    expect(report.replica_reads.state).toBe('unknown');
    expect(report.failover.state).toBe('unknown');
    expect(report.shortfalls).toEqual([]);
    expect(report.unchecked.map((u) => `${u.node}/${u.role}`)).toEqual(expect.arrayContaining(['primary/mon', 'standby1/mon', 'replica1/mon', 'primary/fo']));
  });

  it('failover.mode off and follow need no failover role; no replica configured means reads are not asked for', () => {
    const off = judgeCapabilities(input(plain, undefined, { mode: 'off' }));
    expect(off.failover).toMatchObject({ state: 'off', configured: false });
    const follow = judgeCapabilities(input(plain, undefined, { mode: 'follow' }));
    expect(follow.failover.state).toBe('ok');
    expect(follow.shortfalls.every((s) => s.feature === 'replica_reads')).toBe(true);
    expect(disablesConfiguredFeature(follow)).toBe(false);
    const alone = judgeCapabilities({ ...input(monitorRole, superuser), nodes: [{ node: 'primary', configuredRole: 'primary', monitor: monitorRole('mon', false), failover: superuser('fo', false) }] });
    expect(alone.replica_reads).toMatchObject({ state: 'off', configured: false });
  });

  it('groups one grant missing on several nodes into one line, and quotes role names SQL needs quoted', () => {
    const report = judgeCapabilities(input(plain, monitorRole));
    const groups = groupShortfalls(report.shortfalls);
    const promote = groups.find((g) => g.grant.includes('pg_promote'))!;
    expect(promote.nodes).toEqual(['primary', 'standby1', 'replica1']);
    expect(groups.filter((g) => g.grant.includes('pg_promote'))).toHaveLength(1);
    expect(sqlRole('app_ro')).toBe('app_ro');
    expect(sqlRole('App-Reader')).toBe('"App-Reader"');
  });
});

describe('chooseFailoverTarget without sync_state', () => {
  it('says that the synchronous standby is not known, instead of "none was synchronous"', () => {
    const node = (name: string, configuredRole: PlanNode['configuredRole']): PlanNode => ({ name, applicationName: name, configuredRole, up: name !== 'primary', fenced: false, inRecovery: name !== 'primary', timeline: 1, walPosition: 100n });
    const observed = { synchronousStandbyNames: 'FIRST 1 (standby1)', peers: [{ applicationName: 'standby1', state: '', syncState: '' }], at: 0 };
    const choice = chooseFailoverTarget([node('primary', 'primary'), node('standby1', 'standby')], 'primary', observed, false);
    expect(choice.target).toBeUndefined();
    expect(choice.reason).toMatch(/not known: the monitor role could not see pg_stat_replication.sync_state/);
  });
});
