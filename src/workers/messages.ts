import type { Config, NodeRole } from '../config/types.js';
import type { RemoteApplyShared } from '../cluster/remote-apply.js';
import type { NodeStatus, Topology } from '../cluster/topology.js';

/**
 * What the leader and the workers tell each other over node:cluster's IPC channel (JSON: WAL
 * positions travel as decimal strings). Every message carries `pgrelay` so that it is never
 * confused with node:cluster's or prom-client's own messages on the same channel.
 */

/** One node as the leader sees it: everything routing reads, nothing a worker measures itself. */
export interface NodeSnapshot {
  name: string;
  host: string;
  port: number;
  weight: number;
  configuredRole: NodeRole;
  role: NodeRole;
  up: boolean;
  fenced: boolean;
  inRecovery: boolean | null;
  timeline: number | null;
  replayLsn: string | null;
  replayPaused: boolean;
  lagBytes: number | null;
  lagSeconds: number | null;
  fresh: boolean;
  replicating: boolean;
  staleReason: string | null;
  notKnown: string | null;
  lastError: string | null;
}

export interface TopologySnapshot {
  primaryName: string | null;
  nodes: NodeSnapshot[];
  /** the remote_apply shortcut's findings (the leader's health checks see the synchronous standby) */
  remoteApply?: RemoteApplyShared;
}

export type LeaderMessage =
  | { pgrelay: 'init'; slot: number; count: number; config: Config; topology: TopologySnapshot }
  | { pgrelay: 'topology'; topology: TopologySnapshot; seq: number }
  /** fast read-your-writes: replay positions the leader just sampled, [node, lsn] */
  | { pgrelay: 'replay'; readings: [string, string][] }
  | { pgrelay: 'reload'; config: Config }
  | { pgrelay: 'close-node'; node: string }
  | { pgrelay: 'write-lsn'; id: number; lsn: string }
  | { pgrelay: 'decided'; id: number }
  | { pgrelay: 'cancel'; processId: number; secretKey: number }
  | { pgrelay: 'metrics'; id: number }
  | { pgrelay: 'stop'; graceMs: number };

export type WorkerMessage =
  /** the worker listens for the leader's messages now (one sent before would be lost) */
  | { pgrelay: 'hello' }
  | { pgrelay: 'listening'; host: string; port: number; family: string }
  | { pgrelay: 'after-write'; id: number }
  | { pgrelay: 'fences'; waiting: boolean }
  | { pgrelay: 'node-broken'; node: string; error: string | null }
  | { pgrelay: 'when-decided'; id: number; node: string }
  | { pgrelay: 'cancel'; processId: number; secretKey: number }
  | { pgrelay: 'metrics'; id: number; metrics: unknown[] }
  /** server connections lent out, opening or waited for, per node (the switchover's drain) */
  | { pgrelay: 'busy'; nodes: Record<string, number>; seq: number; clients: number; sessions: number };

export function isPgrelayMessage<T extends { pgrelay: string }>(message: unknown): message is T {
  return typeof message === 'object' && message !== null && typeof (message as { pgrelay?: unknown }).pgrelay === 'string';
}

export function snapshotOf(topology: Topology): TopologySnapshot {
  const nodes: NodeSnapshot[] = [];
  for (const n of topology.nodes.values()) {
    nodes.push({
      name: n.name,
      host: n.host,
      port: n.port,
      weight: n.weight,
      configuredRole: n.configuredRole,
      role: n.role,
      up: n.up,
      fenced: n.fenced,
      inRecovery: n.inRecovery ?? null,
      timeline: n.timeline ?? null,
      replayLsn: n.replayLsn === undefined ? null : n.replayLsn.toString(),
      replayPaused: n.replayPaused,
      lagBytes: n.lagBytes ?? null,
      lagSeconds: n.lagSeconds ?? null,
      fresh: n.fresh,
      replicating: n.replicating,
      staleReason: n.staleReason ?? null,
      notKnown: n.notKnown ?? null,
      lastError: n.lastError ?? null,
    });
  }
  return { primaryName: topology.primaryName ?? null, nodes };
}

/**
 * Makes a worker's topology the leader's: nodes join and leave as listed, every routing field is
 * copied; what the worker measures itself (units in flight, latency) stays. Calls
 * `topology.changed()` when anything routing depends on differs (lag figures are read as they are). Returns the nodes that went from up to down.
 */
export function applySnapshot(topology: Topology, snapshot: TopologySnapshot): string[] {
  const listed = snapshot.nodes.map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.configuredRole, weight: n.weight }));
  const sameNodes = listed.length === topology.nodes.size && listed.every((n) => {
    const known = topology.node(n.name);
    return known !== undefined && known.host === n.host && known.port === n.port && known.weight === n.weight && known.configuredRole === n.role;
  });
  let changed = false;
  if (!sameNodes) {
    topology.configure(listed);
    changed = true;
  }
  const wentDown: string[] = [];
  for (const s of snapshot.nodes) {
    const node = topology.node(s.name);
    if (!node) continue;
    if (node.up && !s.up) wentDown.push(s.name);
    changed = copy(node, s) || changed;
  }
  const primary = snapshot.primaryName ?? undefined;
  if (topology.primaryName !== primary) {
    topology.primaryName = primary;
    changed = true;
  }
  if (changed) topology.changed();
  return wentDown;
}

function copy(node: NodeStatus, s: NodeSnapshot): boolean {
  const replayLsn = s.replayLsn === null ? undefined : BigInt(s.replayLsn);
  const next: Partial<NodeStatus> = {
    role: s.role,
    up: s.up,
    fenced: s.fenced,
    inRecovery: s.inRecovery ?? undefined,
    timeline: s.timeline ?? undefined,
    replayLsn,
    replayPaused: s.replayPaused,
    lagBytes: s.lagBytes ?? undefined,
    lagSeconds: s.lagSeconds ?? undefined,
    fresh: s.fresh,
    replicating: s.replicating,
    staleReason: s.staleReason ?? undefined,
    notKnown: s.notKnown ?? undefined,
    lastError: s.lastError ?? undefined,
  };
  let changed = false;
  for (const [key, value] of Object.entries(next) as [keyof NodeStatus, unknown][]) {
    if (node[key] === value) continue;
    (node as unknown as Record<string, unknown>)[key] = value;
    if (ROUTING_FIELDS.has(key)) changed = true;
  }
  return changed;
}

/** Fields whose change is a topology change (as in one process: lag figures alone are not). */
const ROUTING_FIELDS = new Set<keyof NodeStatus>(['role', 'up', 'fenced', 'inRecovery', 'timeline', 'fresh', 'replicating']);
