import type { FailoverMode, NodeRole } from '../config/types.js';
import { parseSyncStandbyNames } from './sync-standby-names.js';

/**
 * What pgrelay can do with the roles it logs in as (DESIGN.md "Roles pgrelay logs in as"), as a
 * pure judgment of what the preflight (preflight.ts) found on each node: which features work,
 * which are degraded or impossible, and for each shortfall the grant that fixes it. No I/O here.
 *
 * PostgreSQL's rules this follows (15):
 * - pg_stat_wal_receiver and pg_stat_replication show their columns (status, sender, timeline,
 *   state, sync_state) only to roles with the privileges of pg_read_all_stats (pg_monitor has
 *   them); others see the pid and nulls. pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn(),
 *   pg_is_wal_replay_paused(), pg_is_in_recovery(), pg_current_wal_lsn() are open to every role.
 * - pg_promote() and pg_reload_conf() are revoked from PUBLIC and may be granted (EXECUTE).
 * - ALTER SYSTEM needs a superuser, or (15+) GRANT ALTER SYSTEM ON PARAMETER.
 * - primary_conninfo is readable with pg_read_all_settings; a replication slot needs REPLICATION;
 *   ending another role's sessions needs pg_signal_backend.
 */

/** Parameters failover and switchover write with ALTER SYSTEM. */
export const ALTER_SYSTEM_PARAMETERS = ['synchronous_standby_names', 'primary_conninfo', 'primary_slot_name', 'default_transaction_read_only'] as const;
export type AlterSystemParameter = (typeof ALTER_SYSTEM_PARAMETERS)[number];

/** Functions the health checks and the lag monitor call; all open to PUBLIC unless an operator revoked them. */
export const MONITOR_FUNCTIONS = [
  'pg_current_wal_lsn()',
  'pg_current_wal_insert_lsn()',
  'pg_walfile_name(pg_lsn)',
  'pg_last_wal_replay_lsn()',
  'pg_last_wal_receive_lsn()',
  'pg_is_wal_replay_paused()',
  'pg_control_checkpoint()',
] as const;

/** What one role may do on one node, as the node answered. */
export interface RoleFacts {
  user: string;
  /** server_version_num */
  version: number;
  inRecovery: boolean;
  superuser: boolean;
  replication: boolean;
  /** has the privileges of pg_read_all_stats (pg_monitor includes it) */
  readAllStats: boolean;
  readAllSettings: boolean;
  signalBackend: boolean;
  /** EXECUTE on pg_promote(boolean, integer) */
  promote: boolean;
  /** EXECUTE on pg_reload_conf() */
  reloadConf: boolean;
  /** MONITOR_FUNCTIONS this role may not execute */
  deniedFunctions: string[];
  /** ALTER SYSTEM allowed, per parameter */
  alterSystem: Record<AlterSystemParameter, boolean>;
  synchronousStandbyNames: string;
}

/** The role could not be checked: it was refused (`login`: wrong password, no LOGIN, pg_hba) or the node did not answer. */
export interface CheckFailure {
  error: string;
  login: boolean;
}

export interface NodeCheck {
  node: string;
  configuredRole: NodeRole;
  /** the monitor role's facts (undefined: not checked) */
  monitor: RoleFacts | CheckFailure | undefined;
  /** the failover role's facts (managed mode only) */
  failover: RoleFacts | CheckFailure | undefined;
}

export interface PreflightInput {
  mode: FailoverMode;
  allowDataLoss: boolean;
  monitorUser: string;
  failoverUser: string;
  /** the node that takes writes now, if known */
  primary: string | undefined;
  nodes: NodeCheck[];
}

export type Feature = 'replica_reads' | 'failover' | 'switchover';
export type CapabilityState = 'ok' | 'degraded' | 'impossible' | 'off' | 'unknown';

export interface Capability {
  state: CapabilityState;
  reason: string;
  /** false when the feature is not asked for (no replica configured, failover.mode off) */
  configured: boolean;
}

/** One thing a role lacks on a node, with what it costs and the SQL that fixes it. */
export interface Shortfall {
  node: string;
  role: string;
  feature: Feature;
  /** what the role lacks, in PostgreSQL's words */
  missing: string;
  /** the statement that fixes it (run on the primary: roles and grants are cluster-wide) */
  grant: string;
  /** what pgrelay cannot do without it */
  effect: string;
  /** the feature cannot work at all (as opposed to working with less) */
  disables: boolean;
}

export interface CapabilityReport {
  replica_reads: Capability;
  failover: Capability;
  switchover: Capability;
  shortfalls: Shortfall[];
  /** nodes a role could not be checked on because they did not answer (judged when they do) */
  unchecked: { node: string; role: string; error: string }[];
}

const isFailure = (facts: RoleFacts | CheckFailure | undefined): facts is CheckFailure => facts !== undefined && 'error' in facts;

/** SQL that grants ALTER SYSTEM on `parameter` (15+), else what older servers need. */
export function alterSystemGrant(parameter: string, role: string, version: number): string {
  return version >= 150000 ? `GRANT ALTER SYSTEM ON PARAMETER ${parameter} TO ${role};` : `ALTER ROLE ${role} SUPERUSER; -- PostgreSQL ${Math.floor(version / 10000)} allows ALTER SYSTEM only to superusers`;
}

/** A role name as SQL writes it (quoted when it is not a plain lower-case identifier). */
export function sqlRole(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

export function judgeCapabilities(input: PreflightInput): CapabilityReport {
  const shortfalls: Shortfall[] = [];
  const unchecked: CapabilityReport['unchecked'] = [];
  const replicaReads = judgeReads(input, shortfalls, unchecked);
  const { failover, switchover } = judgeFailover(input, shortfalls, unchecked);
  // the monitor and failover roles may be one: each node and role once
  const seen = new Set<string>();
  const once = unchecked.filter((u) => !seen.has(`${u.node}\0${u.role}`) && seen.add(`${u.node}\0${u.role}`));
  return { replica_reads: replicaReads, failover, switchover, shortfalls, unchecked: once };
}

function isPrimary(input: PreflightInput, check: NodeCheck): boolean {
  if (input.primary !== undefined) return check.node === input.primary;
  const facts = check.monitor;
  if (facts && !isFailure(facts)) return !facts.inRecovery;
  return check.configuredRole === 'primary';
}

function loginShortfall(check: NodeCheck, role: string, failure: CheckFailure, feature: Feature, effect: string): Shortfall {
  return {
    node: check.node,
    role,
    feature,
    missing: `log in (${failure.error})`,
    grant: `ALTER ROLE ${sqlRole(role)} LOGIN PASSWORD '…'; -- and a pg_hba.conf line that lets it connect to the postgres database`,
    effect,
    disables: true,
  };
}

function judgeReads(input: PreflightInput, shortfalls: Shortfall[], unchecked: CapabilityReport['unchecked']): Capability {
  const role = input.monitorUser;
  const readers = input.nodes.filter((n) => !isPrimary(input, n));
  if (readers.length === 0) return { state: 'off', reason: 'no standby or replica is configured', configured: false };
  const primary = input.nodes.find((n) => isPrimary(input, n));
  const grantMonitor = `GRANT pg_monitor TO ${sqlRole(role)};`;
  let primaryOff: string | undefined;
  const primaryFacts = primary?.monitor;
  if (primary && isFailure(primaryFacts)) {
    if (primaryFacts.login) {
      primaryOff = `the monitor role ${role} cannot log in to the primary ${primary.node}`;
      shortfalls.push(loginShortfall(primary, role, primaryFacts, 'replica_reads', 'the primary\u2019s WAL position cannot be read: no replica gets reads'));
    } else unchecked.push({ node: primary.node, role, error: primaryFacts.error });
  } else if (primary && primaryFacts && !isFailure(primaryFacts) && primaryFacts.deniedFunctions.length > 0) {
    primaryOff = `the monitor role ${role} may not call ${primaryFacts.deniedFunctions.join(', ')} on the primary ${primary.node}`;
    for (const fn of primaryFacts.deniedFunctions) {
      shortfalls.push({ node: primary.node, role, feature: 'replica_reads', missing: `EXECUTE on ${fn}`, grant: `GRANT EXECUTE ON FUNCTION ${fn} TO ${sqlRole(role)};`, effect: 'the primary\u2019s WAL position cannot be read: no replica gets reads', disables: true });
    }
  }
  const off: string[] = [];
  const blind: string[] = [];
  let judged = 0;
  for (const check of readers) {
    const facts = check.monitor;
    if (facts === undefined) continue;
    if (isFailure(facts)) {
      if (!facts.login) {
        unchecked.push({ node: check.node, role, error: facts.error });
        continue;
      }
      judged++;
      off.push(check.node);
      shortfalls.push(loginShortfall(check, role, facts, 'replica_reads', `${check.node} gets no reads: its replay position cannot be read`));
      continue;
    }
    judged++;
    if (facts.deniedFunctions.length > 0) {
      off.push(check.node);
      for (const fn of facts.deniedFunctions) {
        shortfalls.push({ node: check.node, role, feature: 'replica_reads', missing: `EXECUTE on ${fn}`, grant: `GRANT EXECUTE ON FUNCTION ${fn} TO ${sqlRole(role)};`, effect: `${check.node} gets no reads: its replay position cannot be read`, disables: true });
      }
      continue;
    }
    if (!facts.readAllStats) {
      blind.push(check.node);
      shortfalls.push({
        node: check.node,
        role,
        feature: 'replica_reads',
        missing: 'the privileges of pg_read_all_stats (pg_stat_wal_receiver: status, timeline, sender)',
        grant: grantMonitor,
        effect: 'freshness is judged from replay position and lag only: whether a replica streams, and from which primary, is not known',
        disables: false,
      });
    }
  }
  if (primaryOff) return { state: 'off', reason: `${primaryOff}: reads go to the primary`, configured: true };
  if (judged === 0) return { state: 'unknown', reason: `not checked yet: ${readers.map((r) => r.node).join(', ')} did not answer`, configured: true };
  if (off.length === judged) return { state: 'off', reason: `the monitor role ${role} cannot read the replay position of ${off.join(', ')}: reads go to the primary`, configured: true };
  const parts: string[] = [];
  if (off.length > 0) parts.push(`${off.join(', ')} get no reads (the monitor role ${role} cannot read their replay position)`);
  if (blind.length > 0) {
    parts.push(
      `the monitor role ${role} cannot see pg_stat_wal_receiver on ${blind.join(', ')}: their freshness is judged from replay positions and lag only; whether they stream, and from which primary, is not known (${grantMonitor})`,
    );
  }
  if (parts.length > 0) return { state: 'degraded', reason: parts.join('; '), configured: true };
  return { state: 'ok', reason: `the monitor role ${role} sees replay position, streaming state and timeline of every replica`, configured: true };
}

interface Verdicts {
  failover: Capability;
  switchover: Capability;
}

function judgeFailover(input: PreflightInput, shortfalls: Shortfall[], unchecked: CapabilityReport['unchecked']): Verdicts {
  if (input.mode === 'off') {
    const off: Capability = { state: 'off', reason: 'failover.mode is off: pgrelay only follows node health', configured: false };
    return { failover: off, switchover: off };
  }
  if (input.mode !== 'managed') {
    const external: Capability = { state: 'ok', reason: `failover.mode ${input.mode}: ${input.mode === 'patroni' ? 'Patroni' : 'another manager'} promotes; pgrelay follows what the servers report`, configured: true };
    return { failover: external, switchover: input.mode === 'patroni' ? external : { state: 'off', reason: `failover.mode ${input.mode}: switchover needs managed`, configured: false } };
  }
  // what makes each verdict, with the nodes it was found on
  const impossible = new Findings();
  const degraded = new Findings();
  const switchoverImpossible = new Findings();
  let checked = false;

  // the synchronous standby is judged from the primary's pg_stat_replication, read by the monitor role
  const primary = input.nodes.find((n) => isPrimary(input, n));
  const monitor = primary?.monitor;
  if (primary && monitor && !isFailure(monitor)) {
    checked = true;
    const role = input.monitorUser;
    if (!monitor.readAllStats) {
      const effect = input.allowDataLoss
        ? 'which standby is synchronous is not known: failover.allow_data_loss promotes the replica holding the most WAL, and acknowledged writes may be lost'
        : 'which standby is synchronous is not known: failover is impossible (it never promotes a node that may lack acknowledged writes)';
      shortfalls.push({ node: primary.node, role, feature: 'failover', missing: 'the privileges of pg_read_all_stats (pg_stat_replication.sync_state)', grant: `GRANT pg_monitor TO ${sqlRole(role)};`, effect, disables: !input.allowDataLoss });
      const reason = `the monitor role ${role} cannot see pg_stat_replication.sync_state on the primary ${primary.node} (GRANT pg_monitor TO ${sqlRole(role)};)`;
      (input.allowDataLoss ? degraded : impossible).add(input.allowDataLoss ? `${reason}: failover.allow_data_loss promotes the replica holding the most WAL, and acknowledged writes may be lost` : reason);
    } else if (parseSyncStandbyNames(monitor.synchronousStandbyNames).method === 'none') {
      const reason = `the primary ${primary.node} has no synchronous standby (synchronous_standby_names is empty)`;
      (input.allowDataLoss ? degraded : impossible).add(input.allowDataLoss ? `${reason}: failover.allow_data_loss promotes the replica holding the most WAL, and acknowledged writes may be lost` : reason);
    }
  } else if (primary && isFailure(monitor) && monitor.login) {
    checked = true;
    impossible.add(`the monitor role ${input.monitorUser} cannot log in to the primary ${primary.node}`);
  }

  const role = input.failoverUser;
  const r = sqlRole(role);
  for (const check of input.nodes) {
    const facts = check.failover;
    if (facts === undefined) continue;
    if (isFailure(facts)) {
      if (!facts.login) {
        unchecked.push({ node: check.node, role, error: facts.error });
        continue;
      }
      checked = true;
      shortfalls.push(loginShortfall(check, role, facts, 'failover', `nothing can be promoted or re-pointed on ${check.node}`));
      impossible.add(`the failover role ${role} cannot log in`, check.node);
      continue;
    }
    checked = true;
    if (facts.superuser) continue;
    const lack = (feature: Feature, missing: string, grant: string, effect: string, disables: boolean) => shortfalls.push({ node: check.node, role, feature, missing, grant, effect, disables });
    const at = check.node;
    if (!facts.promote) {
      lack('failover', 'EXECUTE on pg_promote(boolean, integer)', `GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO ${r};`, 'cannot promote', true);
      impossible.add(`the failover role ${role} may not call pg_promote()`, at);
    }
    if (!facts.reloadConf) {
      lack('failover', 'EXECUTE on pg_reload_conf()', `GRANT EXECUTE ON FUNCTION pg_reload_conf() TO ${r};`, 'cannot apply settings it writes', true);
      impossible.add(`the failover role ${role} may not call pg_reload_conf()`, at);
    }
    if (!facts.alterSystem.synchronous_standby_names) {
      lack('failover', 'ALTER SYSTEM on synchronous_standby_names', alterSystemGrant('synchronous_standby_names', r, facts.version), 'cannot clear or set the synchronous standby of a promoted node (its commits would wait forever)', true);
      impossible.add(`the failover role ${role} may not ALTER SYSTEM SET synchronous_standby_names`, at);
    }
    if (!facts.readAllStats) {
      lack('failover', 'the privileges of pg_read_all_stats (pg_stat_replication.state)', `GRANT pg_monitor TO ${r};`, 'cannot see which replicas stream from a new primary: it gets no synchronous standby after a failover', false);
      degraded.add(`the failover role ${role} cannot see pg_stat_replication: a new primary gets no synchronous standby`, at);
    }
    const repoint: string[] = [];
    if (!facts.readAllSettings) {
      repoint.push('primary_conninfo');
      lack('failover', 'the privileges of pg_read_all_settings (primary_conninfo)', `GRANT pg_read_all_settings TO ${r};`, 'cannot re-point replicas at a new primary', false);
    }
    for (const parameter of ['primary_conninfo', 'primary_slot_name'] as const) {
      if (facts.alterSystem[parameter]) continue;
      repoint.push(parameter);
      lack('failover', `ALTER SYSTEM on ${parameter}`, alterSystemGrant(parameter, r, facts.version), 'cannot re-point replicas at a new primary', false);
    }
    if (!facts.replication) {
      repoint.push('REPLICATION');
      lack('failover', 'the REPLICATION attribute (replication slots)', `ALTER ROLE ${r} REPLICATION;`, 'cannot create a replica\u2019s slot on a new primary', false);
    }
    if (repoint.length > 0) degraded.add(`the failover role ${role} cannot re-point replicas (lacks ${repoint.join(', ')})`, at);
    if (!facts.alterSystem.default_transaction_read_only) {
      lack('switchover', 'ALTER SYSTEM on default_transaction_read_only', alterSystemGrant('default_transaction_read_only', r, facts.version), 'switchover cannot make the old primary refuse writes', true);
      switchoverImpossible.add(`the failover role ${role} may not ALTER SYSTEM SET default_transaction_read_only`, at);
    }
    if (!facts.signalBackend) {
      lack('switchover', 'the privileges of pg_signal_backend', `GRANT pg_signal_backend TO ${r};`, 'switchover cannot end the application\u2019s sessions on the old primary', true);
      switchoverImpossible.add(`the failover role ${role} cannot end other roles' sessions`, at);
    }
  }
  if (!checked) {
    const unknown: Capability = { state: 'unknown', reason: 'not checked yet: no node answered', configured: true };
    return { failover: unknown, switchover: unknown };
  }
  const failover: Capability =
    impossible.size > 0
      ? { state: 'impossible', reason: impossible.text(), configured: true }
      : degraded.size > 0
        ? { state: 'degraded', reason: degraded.text(), configured: true }
        : { state: 'ok', reason: `the failover role ${role} can promote and re-point, and the synchronous standby is visible`, configured: true };
  const switchover: Capability =
    failover.state === 'impossible'
      ? { state: 'impossible', reason: 'failover is impossible (see failover)', configured: true }
      : switchoverImpossible.size > 0
        ? { state: 'impossible', reason: switchoverImpossible.text(), configured: true }
        : { state: 'ok', reason: `the failover role ${role} can fence the old primary and promote`, configured: true };
  return { failover, switchover };
}

/** Reasons in the order found, each with the nodes it applies to ("…, on a, b"). */
class Findings {
  private readonly nodes = new Map<string, string[]>();

  add(reason: string, node?: string): void {
    const nodes = this.nodes.get(reason) ?? [];
    if (node !== undefined && !nodes.includes(node)) nodes.push(node);
    this.nodes.set(reason, nodes);
  }

  get size(): number {
    return this.nodes.size;
  }

  text(): string {
    return [...this.nodes].map(([reason, nodes]) => (nodes.length > 0 ? `${reason} (on ${nodes.join(', ')})` : reason)).join('; ');
  }
}

/** Shortfalls of the same role and grant on several nodes, as one line each (roles and grants are cluster-wide). */
export function groupShortfalls(shortfalls: readonly Shortfall[]): { role: string; grant: string; missing: string; nodes: string[]; effects: string[]; features: Feature[]; disables: boolean }[] {
  const groups = new Map<string, { role: string; grant: string; missing: string; nodes: string[]; effects: string[]; features: Feature[]; disables: boolean }>();
  for (const s of shortfalls) {
    const key = `${s.role}\0${s.grant}`;
    let group = groups.get(key);
    if (!group) groups.set(key, (group = { role: s.role, grant: s.grant, missing: s.missing, nodes: [], effects: [], features: [], disables: false }));
    if (!group.nodes.includes(s.node)) group.nodes.push(s.node);
    if (!group.effects.includes(s.effect)) group.effects.push(s.effect);
    if (!group.features.includes(s.feature)) group.features.push(s.feature);
    group.disables ||= s.disables;
  }
  return [...groups.values()];
}
