import type { Balance, Fallback } from '../config/types.js';
import type { NodeStatus, Topology } from '../cluster/topology.js';
import { ProxyError, SqlState } from '../errors.js';

export type Target = 'primary' | 'replica';

export interface ReadConstraints {
  /** the replica must have replayed at least this WAL position (read-your-writes) */
  minLsn?: bigint | undefined;
  /** a per-statement lag limit (hint), tighter or looser than the configured one */
  maxLagMs?: number | undefined;
}

export interface RouterOptions {
  balance: Balance;
  fallback: Fallback;
  maxLagMs: number;
  maxLagBytes: number;
}

/** Why a read went to the primary, for metrics. */
export type PrimaryReadReason = 'no_replica' | 'lag' | 'consistency';

export interface Choice {
  node: NodeStatus;
  /** set when a read was sent to the primary instead of a replica */
  fallback: PrimaryReadReason | undefined;
}

/**
 * Picks the node for a unit. It does no I/O: it reads the topology (kept current by the health
 * checker and the lag monitor) and returns a node, or undefined for the primary while none is known
 * (the caller waits for failover), or throws a ProxyError when reads may not fall back.
 */
export class Router {
  private rr = 0;

  constructor(
    private readonly topology: Topology,
    private options: RouterOptions,
  ) {}

  configure(options: RouterOptions): void {
    this.options = options;
  }

  choose(target: Target, constraints?: ReadConstraints): Choice | undefined {
    const primary = this.topology.primary();
    if (target === 'primary') return primary && { node: primary, fallback: undefined };
    const candidates = this.readCandidates(constraints);
    if (candidates.length > 0) return { node: this.balance(candidates), fallback: undefined };
    const reason = this.whyNoReplica(constraints);
    if (this.options.fallback === 'error' && reason !== 'consistency') {
      throw new ProxyError(SqlState.cannotConnectNow, `no replica is fresh enough for reads (${reason === 'lag' ? `all lag more than ${this.options.maxLagMs} ms` : 'none is up'}) and routing.fallback is error`, { retryable: true });
    }
    return primary && { node: primary, fallback: reason };
  }

  /** Replicas that may serve a read now. */
  readCandidates(constraints?: ReadConstraints): NodeStatus[] {
    const out: NodeStatus[] = [];
    const maxLagMs = constraints?.maxLagMs;
    for (const node of this.topology.nodes.values()) {
      if (!isReader(node)) continue;
      if (maxLagMs === undefined ? !node.fresh : !withinLag(node, maxLagMs, this.options.maxLagBytes)) continue;
      if (constraints?.minLsn !== undefined && (node.replayLsn === undefined || node.replayLsn < constraints.minLsn)) continue;
      out.push(node);
    }
    return out;
  }

  private whyNoReplica(constraints?: ReadConstraints): PrimaryReadReason {
    let anyUp = false;
    let anyFresh = false;
    for (const node of this.topology.nodes.values()) {
      if (!isReader(node)) continue;
      anyUp = true;
      if (node.fresh) anyFresh = true;
    }
    if (!anyUp) return 'no_replica';
    if (anyFresh && constraints?.minLsn !== undefined) return 'consistency';
    return 'lag';
  }

  private balance(nodes: NodeStatus[]): NodeStatus {
    if (nodes.length === 1) return nodes[0]!;
    switch (this.options.balance) {
      case 'round_robin':
        return nodes[this.rr++ % nodes.length]!;
      case 'random':
        return nodes[Math.floor(Math.random() * nodes.length)]!;
      case 'least_connections': {
        let best = nodes[0]!;
        for (const n of nodes) if (n.inflight < best.inflight) best = n;
        return best;
      }
      case 'weighted': {
        let total = 0;
        for (const n of nodes) total += n.weight;
        if (total <= 0) return nodes[this.rr++ % nodes.length]!;
        let pick = Math.random() * total;
        for (const n of nodes) {
          pick -= n.weight;
          if (pick < 0) return n;
        }
        return nodes[nodes.length - 1]!;
      }
      case 'latency': {
        // power of two choices: two random candidates, the one with less expected wait wins
        const a = nodes[Math.floor(Math.random() * nodes.length)]!;
        let b = nodes[Math.floor(Math.random() * (nodes.length - 1))]!;
        if (b === a) b = nodes[nodes.length - 1]!;
        return cost(a) <= cost(b) ? a : b;
      }
    }
  }
}

function isReader(node: NodeStatus): boolean {
  return node.up && !node.fenced && node.role !== 'primary' && node.inRecovery !== false;
}

function withinLag(node: NodeStatus, maxLagMs: number, maxLagBytes: number): boolean {
  if (node.replayPaused && (node.lagBytes ?? 0) > 0) return false;
  if (node.lagSeconds !== undefined && node.lagSeconds * 1000 > maxLagMs) return false;
  if (maxLagBytes > 0 && node.lagBytes !== undefined && node.lagBytes > maxLagBytes) return false;
  return true;
}

function cost(node: NodeStatus): number {
  return (node.inflight + 1) * node.latencyEwmaMs;
}
