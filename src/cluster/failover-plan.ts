import type { NodeRole } from '../config/types.js';
import { parseSyncStandbyNames } from './sync-standby-names.js';

/**
 * The decisions of failover, as pure functions of what the health checks saw: which node to
 * promote, which node is the primary (follow mode), which nodes to fence. No I/O here.
 */

/** What failover needs to know about one node (config order is the order of the array). */
export interface PlanNode {
  name: string;
  /** the application_name it streams with, as pg_stat_replication on its primary shows it */
  applicationName: string;
  configuredRole: NodeRole;
  up: boolean;
  fenced: boolean;
  inRecovery: boolean | undefined;
  timeline: number | undefined;
  /** the WAL it holds (received, else replayed): what it has once promoted */
  walPosition: bigint | undefined;
}

/** The primary's view of its standbys, recorded while it was up. */
export interface ReplicationObservation {
  synchronousStandbyNames: string;
  peers: { applicationName: string; state: string; syncState: string }[];
  /** Date.now() of the observation */
  at: number;
}

export type TargetChoice =
  | { target: string; reason: string; dataLoss: boolean }
  | { target: undefined; reason: string };

/**
 * `failover.evidence_max_age_ms`, or by default (interval + timeout) × (failures + 2) of the
 * health checks: the primary is observed at every successful check, and is marked down after
 * `failures` failed ones, so a failover decided at once finds its evidence younger than that.
 */
export function evidenceMaxAgeMs(health: { interval_ms: number; timeout_ms: number; failures: number }, failover: { evidence_max_age_ms?: number }): number {
  return failover.evidence_max_age_ms ?? (health.interval_ms + health.timeout_ms) * (health.failures + 2);
}

/** How old an observation may be and still count as evidence (see chooseFailoverTarget). */
export interface EvidenceAge {
  /** Date.now() at the decision */
  now: number;
  maxAgeMs: number;
}

/**
 * The node to promote when `failed` (the primary) is down. Only a node known to have every
 * acknowledged commit qualifies: a standby the primary reported as `sync` (FIRST k), or the most
 * advanced of a quorum (ANY k) when fewer than k of its members are unavailable. The knowledge is
 * the primary's own replication view, observed while it was up: without one (pgrelay started or
 * restarted while the primary was down), or with one older than `age.maxAgeMs`, nothing is known
 * and no node qualifies — the configured `standby` role is a hint, not evidence that the node was
 * synchronous. An asynchronous replica (or any node without evidence) only with
 * `allowDataLoss`: the one holding the most WAL.
 */
export function chooseFailoverTarget(nodes: readonly PlanNode[], failed: string, observed: ReplicationObservation | undefined, allowDataLoss: boolean, age?: EvidenceAge): TargetChoice {
  const eligible = nodes.filter((n) => n.name !== failed && n.up && !n.fenced && n.inRecovery === true);
  const stale = observed !== undefined && age !== undefined && age.now - observed.at > age.maxAgeMs;
  const safe = stale
    ? { target: undefined, reason: `the primary's replication was last observed ${Math.round((age.now - observed.at) / 1000)} s ago (more than ${Math.round(age.maxAgeMs / 1000)} s): no evidence which node has every acknowledged commit` }
    : safeTargets(eligible, observed);
  if (safe.target) return { target: safe.target, reason: safe.reason, dataLoss: false };
  if (allowDataLoss && eligible.length > 0) {
    const best = mostAdvanced(eligible)!;
    return { target: best.name, reason: `${safe.reason}; failover.allow_data_loss promotes ${best.name}, the replica holding the most WAL`, dataLoss: true };
  }
  return { target: undefined, reason: eligible.length === 0 ? 'no standby or replica is up and in recovery' : safe.reason };
}

function safeTargets(eligible: readonly PlanNode[], observed: ReplicationObservation | undefined): { target: string | undefined; reason: string } {
  const byApp = (name: string) => eligible.find((n) => n.applicationName.toLowerCase() === name.toLowerCase());
  if (!observed) return { target: undefined, reason: 'the primary\u2019s replication was never observed: no evidence which node has every acknowledged commit' };
  const ssn = parseSyncStandbyNames(observed.synchronousStandbyNames);
  if (ssn.method !== 'none' && observed.peers.length > 0 && observed.peers.every((p) => p.syncState === '')) {
    return { target: undefined, reason: 'which standby was synchronous is not known: the monitor role could not see pg_stat_replication.sync_state (GRANT pg_monitor to it)' };
  }
  if (ssn.method === 'none') return { target: undefined, reason: 'the primary had no synchronous standby (synchronous_standby_names was empty)' };
  if (ssn.method === 'first') {
    const sync = observed.peers.filter((p) => p.syncState === 'sync');
    if (sync.length === 0) return { target: undefined, reason: 'no standby was synchronous when the primary was last seen' };
    const candidates = sync.map((p) => byApp(p.applicationName)).filter((n): n is PlanNode => n !== undefined);
    // every synchronous standby has every acknowledged commit: prefer configured standbys, then config order
    candidates.sort((a, b) => rank(a, eligible) - rank(b, eligible));
    const chosen = candidates[0];
    return chosen
      ? { target: chosen.name, reason: `${chosen.name} was the primary's synchronous standby` }
      : { target: undefined, reason: `the synchronous standby (${sync.map((p) => p.applicationName).join(', ')}) is not available` };
  }
  // ANY k: an acknowledged commit is on at least k of the quorum members connected at the time
  const quorum = observed.peers.filter((p) => p.syncState === 'quorum');
  const available = quorum.map((p) => byApp(p.applicationName)).filter((n): n is PlanNode => n !== undefined);
  const missing = quorum.length - available.length;
  if (quorum.length === 0) return { target: undefined, reason: 'no quorum standby was connected when the primary was last seen' };
  if (missing >= ssn.count) return { target: undefined, reason: `${missing} of the ${quorum.length} quorum standbys are unavailable (ANY ${ssn.count}): an acknowledged commit may be only on them` };
  if (available.some((n) => n.walPosition === undefined)) return { target: undefined, reason: 'the WAL positions of the quorum standbys are unknown' };
  const best = mostAdvanced(available)!;
  return { target: best.name, reason: `${best.name} holds the most WAL of the quorum standbys (ANY ${ssn.count})` };
}

function rank(node: PlanNode, order: readonly PlanNode[]): number {
  return (node.configuredRole === 'standby' ? 0 : 1_000_000) + order.indexOf(node);
}

/** The node with the highest WAL position; ties go to config order. */
function mostAdvanced(nodes: readonly PlanNode[]): PlanNode | undefined {
  let best: PlanNode | undefined;
  for (const node of nodes) {
    if (best === undefined || (node.walPosition ?? -1n) > (best.walPosition ?? -1n)) best = node;
  }
  return best;
}

export type Discovery =
  | { kind: 'keep' }
  | { kind: 'switch'; primary: string; timeline: number }
  | { kind: 'ambiguous'; nodes: string[]; timeline: number };

/**
 * The primary as the servers report it: the single node out of recovery on the highest
 * timeline. The current primary is kept while it is such a node (also on a tie, which is reported
 * by the fencing rule instead); nodes already fenced never qualify.
 */
export function discoverPrimary(nodes: readonly PlanNode[], current: string | undefined): Discovery {
  const out = nodes.filter((n) => n.up && !n.fenced && n.inRecovery === false && n.timeline !== undefined);
  if (out.length === 0) return { kind: 'keep' };
  const timeline = Math.max(...out.map((n) => n.timeline!));
  const top = out.filter((n) => n.timeline === timeline);
  if (current !== undefined && top.some((n) => n.name === current)) return { kind: 'keep' };
  if (top.length > 1) return { kind: 'ambiguous', nodes: top.map((n) => n.name), timeline };
  return { kind: 'switch', primary: top[0]!.name, timeline };
}

/**
 * Nodes to fence: out of recovery, not the primary, on a timeline not newer than the primary's
 * (an older timeline is a former primary; the same timeline is a split brain, and the node that
 * is not the primary must not take work either).
 */
export function nodesToFence(nodes: readonly PlanNode[], primary: PlanNode | undefined): { name: string; reason: string }[] {
  if (!primary || primary.timeline === undefined) return [];
  const out: { name: string; reason: string }[] = [];
  for (const node of nodes) {
    if (node.name === primary.name || node.fenced || !node.up || node.inRecovery !== false || node.timeline === undefined) continue;
    if (node.timeline < primary.timeline) {
      out.push({ name: node.name, reason: `out of recovery on timeline ${node.timeline}, older than the primary ${primary.name} (timeline ${primary.timeline})` });
    } else if (node.timeline === primary.timeline) {
      out.push({ name: node.name, reason: `out of recovery on the primary's own timeline ${node.timeline} (split brain): ${primary.name} stays the primary` });
    }
  }
  return out;
}
