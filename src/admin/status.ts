import type { RemoteApplyStatus } from '../cluster/remote-apply.js';
import { groupShortfalls, type Capability, type CapabilityReport, type CapabilityState, type Feature } from '../cluster/capabilities.js';
import type { AdminApp, WorkerStatus } from './admin-app.js';
import type { FailoverRecord } from '../cluster/failover.js';
import type { NodeStatus, Topology } from '../cluster/topology.js';
import { redactConfig } from '../config/redact.js';
import type { Pool } from '../pool/pool.js';
import { lastReload } from './config-reload.js';

/** A node's health in one word: what the status table and the topology page colour by. */
export type NodeHealth = 'up' | 'stale' | 'down' | 'fenced';

export function nodeHealth(node: NodeStatus): NodeHealth {
  if (node.fenced) return 'fenced';
  if (!node.up) return 'down';
  if (node.role !== 'primary' && !node.fresh) return 'stale';
  return 'up';
}

export interface Health {
  ok: boolean;
  primary: string | null;
  /** why writes cannot be served (when not ok) */
  reason?: string;
  /**
   * whether pgrelay could fail over if the primary died now, as the preflight found it (absent
   * before the first preflight). It does not change `ok`: a pgrelay that serves writes stays in
   * its load balancer even when it could not fail over (alert on pgrelay_capability instead).
   */
  failover?: { state: CapabilityState; reason: string };
}

/** GET /health: pgrelay can serve writes when it runs and knows a primary that is up and not fenced. */
export function healthOf(topology: Topology, stopping: boolean, capabilities?: CapabilityReport): Health {
  const failover = capabilities ? { failover: { state: capabilities.failover.state, reason: capabilities.failover.reason } } : {};
  if (stopping) return { ok: false, primary: topology.primaryName ?? null, reason: 'pgrelay is shutting down', ...failover };
  const primary = topology.primary();
  if (primary) return { ok: true, primary: primary.name, ...failover };
  const name = topology.primaryName;
  const node = name === undefined ? undefined : topology.node(name);
  if (!node) return { ok: false, primary: null, reason: 'no primary is known (failover in progress, or none configured)', ...failover };
  if (node.fenced) return { ok: false, primary: node.name, reason: `primary ${node.name} is fenced`, ...failover };
  return { ok: false, primary: node.name, reason: `primary ${node.name} is down${node.lastError ? ` (${node.lastError})` : ''}`, ...failover };
}

/** The body of GET /health (status 200 when `ok`, else 503). */
export function healthBody(health: Health): Record<string, unknown> {
  const { ok, ...rest } = health;
  return { status: ok ? 'ok' : 'unavailable', ...rest };
}

/** The /status `capabilities` block: what the configured roles let pgrelay do (see cluster/capabilities.ts). */
export interface StatusCapabilities {
  /** ISO time of the preflight this comes from; null before the first one finished */
  checked_at: string | null;
  replica_reads: Capability | null;
  failover: Capability | null;
  switchover: Capability | null;
  /** one entry per role and grant, with the nodes it is missing on */
  shortfalls: { role: string; missing: string; grant: string; nodes: string[]; features: Feature[]; effects: string[]; disables: boolean }[];
  /** nodes a role could not be checked on (they did not answer) */
  unchecked: { node: string; role: string; error: string }[];
  /** the remote_apply shortcut: whether reads right after a write may go to the synchronous standby, and why (not) */
  remote_apply?: RemoteApplyStatus;
}

export function capabilitiesOf(report: CapabilityReport | undefined, checkedAt: number | undefined): StatusCapabilities {
  if (!report) return { checked_at: null, replica_reads: null, failover: null, switchover: null, shortfalls: [], unchecked: [] };
  return {
    checked_at: checkedAt === undefined ? null : new Date(checkedAt).toISOString(),
    replica_reads: report.replica_reads,
    failover: report.failover,
    switchover: report.switchover,
    shortfalls: groupShortfalls(report.shortfalls).map(({ role, missing, grant, nodes, features, effects, disables }) => ({ role, missing, grant, nodes, features, effects, disables })),
    unchecked: report.unchecked,
  };
}

export interface PoolUse {
  user: string;
  database: string;
  idle: number;
  active: number;
  connecting: number;
  waiting: number;
  size: number;
  draining: boolean;
}

/** Units started per node, by what their statements asked for, since pgrelay started. */
export interface UnitCounts {
  reads: number;
  writes: number;
  other: number;
}

export interface StatusNode {
  name: string;
  host: string;
  port: number;
  role: string;
  configured_role: string;
  health: NodeHealth;
  up: boolean;
  fenced: boolean;
  /** why the node gets no reads or writes (failover, switchover, Patroni), when fenced */
  fenced_reason: string | null;
  fresh: boolean;
  stale_reason: string | null;
  /** what the monitor role cannot see on this node (freshness is then judged from positions alone) */
  not_known: string | null;
  last_error: string | null;
  timeline: number | null;
  lag_bytes: number | null;
  lag_seconds: number | null;
  replay_paused: boolean;
  weight: number;
  inflight: number;
  units: UnitCounts;
  pools: PoolUse[];
}

export interface StatusDocument {
  /** epoch milliseconds of this document (the page computes rates from two of them) */
  now: number;
  started_at: number;
  stopping: boolean;
  health: Health;
  primary: string | null;
  consistency: string;
  max_lag_ms: number;
  max_lag_bytes: number;
  clients: number;
  sessions: number;
  pinned_sessions: number;
  /** what the monitor and failover roles let pgrelay do */
  capabilities: StatusCapabilities;
  nodes: StatusNode[];
  /** server connections of nodes a reload removed, still finishing their unit */
  draining_pools: (PoolUse & { node: string })[];
  /** the failover module's record of the last change of primary */
  last_failover: (Omit<FailoverRecord, 'from' | 'detectMs' | 'timeline'> & { from: string | null; detectMs: number | null; timeline: number | null }) | null;
  last_reload: ReturnType<typeof lastReload> | null;
  /** failover.mode patroni: Patroni's last answer (leader, members, scheduled switchover), else null */
  patroni: Record<string, unknown> | null;
  config: unknown;
  /** workers mode: each worker process; null with one process */
  workers: WorkerStatus[] | null;
}

/** The /status document: topology, health, lag, pools and unit counts per node. */
export async function statusOf(app: AdminApp): Promise<StatusDocument> {
  const config = app.currentConfig;
  // workers mode: the units are the workers' (the leader asks them)
  const dataPath = app.workers ? await app.workers.dataPath() : undefined;
  const units = unitCounts(dataPath?.queries ?? (await app.metrics.queries.get()).values);
  const known = new Set(app.topology.nodes.keys());
  // workers mode: clients are the workers' (their pools and unit counts are in /metrics)
  const workers = app.workers?.status() ?? null;
  return {
    now: Date.now(),
    started_at: app.startedAt,
    stopping: app.stopping,
    health: healthOf(app.topology, app.stopping, app.preflight.report),
    primary: app.topology.primaryName ?? null,
    consistency: config.routing.consistency,
    max_lag_ms: config.routing.max_lag_ms,
    max_lag_bytes: config.routing.max_lag_bytes,
    clients: workers ? workers.reduce((sum, w) => sum + w.clients, 0) : app.frontend.clientCount,
    sessions: workers ? workers.reduce((sum, w) => sum + w.sessions, 0) : app.frontend.sessionCount,
    workers,
    pinned_sessions: (await app.metrics.pinnedSessions.get()).values[0]?.value ?? 0,
    capabilities: { ...capabilitiesOf(app.preflight.report, app.preflight.checkedAt), remote_apply: app.remoteApply.status() },
    nodes: [...app.topology.nodes.values()].map((n) => ({
      name: n.name,
      host: n.host,
      port: n.port,
      role: n.role,
      configured_role: n.configuredRole,
      health: nodeHealth(n),
      up: n.up,
      fenced: n.fenced,
      fenced_reason: n.fenced ? (app.failover.fenceReasons.get(n.name) ?? app.patroni?.fenceReasons.get(n.name) ?? null) : null,
      fresh: n.fresh,
      stale_reason: n.staleReason ?? null,
      not_known: n.notKnown ?? null,
      last_error: n.lastError ?? null,
      timeline: n.timeline ?? null,
      lag_bytes: n.lagBytes ?? null,
      lag_seconds: n.lagSeconds ?? null,
      replay_paused: n.replayPaused,
      weight: n.weight,
      inflight: dataPath ? (dataPath.inflight.get(n.name) ?? 0) : n.inflight,
      units: units.get(n.name) ?? { reads: 0, writes: 0, other: 0 },
      pools: app.pools.ofNode(n.name).map(poolUse),
    })),
    draining_pools: app.pools
      .all()
      .filter((p) => p.draining || !known.has(p.endpoint.node))
      .map((p) => ({ node: p.endpoint.node, ...poolUse(p) })),
    last_failover: lastFailover(app),
    last_reload: lastReload(app) ?? null,
    patroni: app.patroni?.status() ?? null,
    config: redactConfig(config),
  };
}

/** The failover module (src/cluster/failover.ts) keeps the last change of primary. */
function lastFailover(app: AdminApp): StatusDocument['last_failover'] {
  const record = app.failover.lastFailover;
  if (!record) return null;
  return { ...record, from: record.from ?? null, detectMs: record.detectMs ?? null, timeline: record.timeline ?? null };
}

function poolUse(pool: Pool): PoolUse {
  return { user: pool.login.user, database: pool.login.database, ...pool.stats(), size: pool.size, draining: pool.draining };
}

/** From pgrelay_queries_total{node,route}: route replica = a read, primary = a write, else other. */
function unitCounts(values: readonly { labels: Record<string, string | number>; value: number }[]): Map<string, UnitCounts> {
  const out = new Map<string, UnitCounts>();
  for (const { labels, value } of values) {
    const node = String(labels.node);
    let counts = out.get(node);
    if (!counts) out.set(node, (counts = { reads: 0, writes: 0, other: 0 }));
    if (labels.route === 'replica') counts.reads += value;
    else if (labels.route === 'primary') counts.writes += value;
    else counts.other += value;
  }
  return out;
}
