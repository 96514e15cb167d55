import type { Balance, Fallback } from '../config/types.js';
import type { NodeStatus, Topology } from '../cluster/topology.js';
import { ProxyError, SqlState } from '../errors.js';
import type { LagPolicy } from './lag-policy.js';
import { ReplicaRefusals } from './replica-refusals.js';

export type Target = 'primary' | 'replica';

export interface ReadConstraints {
  /** the replica must have replayed at least this WAL position (read-your-writes) */
  minLsn?: bigint | undefined;
  /**
   * a write this read must see has committed but its WAL position is not known yet: no replica
   * qualifies, the read goes to the primary
   */
  pendingWrite?: boolean | undefined;
  /** a per-statement lag limit (hint), tighter or looser than the configured one */
  maxLagMs?: number | undefined;
  /** a replica not to use: the read is run again because its connection there was just lost */
  avoidNode?: string | undefined;
  /**
   * a node known to have applied every write of the fence (`minLsn`, `pendingWrite`) whatever its
   * sampled position: the synchronous standby, when the session's last write committed under
   * `synchronous_commit = remote_apply` (the remote_apply shortcut)
   */
  fenceAppliedOn?: string | undefined;
  /** a causality token (`/* pgrelay:after_lsn=X/Y *\/`): the replica must have replayed this position, always */
  afterLsn?: bigint | undefined;
}

export interface RouterOptions {
  balance: Balance;
  fallback: Fallback;
}

/** Sources of chance and time, replaceable in tests. */
export interface RouterEnvironment {
  /** uniform in [0, 1) */
  random(): number;
  /** milliseconds, monotonic */
  now(): number;
}

/** Why a read went to the primary, for metrics. */
export type PrimaryReadReason = 'no_replica' | 'lag' | 'consistency';

/**
 * Where a unit goes: a node (with the reason a read went to the primary instead of a replica), a
 * wait (no primary is known: failover is under way), or a refusal with its SQLSTATE.
 */
export type Route =
  | { readonly kind: 'node'; readonly node: NodeStatus; readonly fallback: PrimaryReadReason | undefined }
  | { readonly kind: 'wait'; readonly reason: 'no primary' }
  | { readonly kind: 'refuse'; readonly error: ProxyError };

const WAIT_FOR_PRIMARY: Route = { kind: 'wait', reason: 'no primary' };

/**
 * Under `latency` balancing a replica's latency figure only moves when it serves units, so one
 * slow unit could keep it out for good: the figure of a replica not chosen for over
 * LATENCY_HALF_LIFE_MS is discounted (halved for every further LATENCY_HALF_LIFE_MS) until it is
 * tried again.
 */
export const LATENCY_HALF_LIFE_MS = 1000;

/**
 * Picks the node for a unit. It does no I/O: it reads the topology (kept current by the health
 * checker and the lag monitor) and returns a Route: a node, a wait while no primary is known (the
 * caller waits for failover), or a refusal when reads may not fall back. It never throws.
 *
 * A replica qualifies for a read when it is up, not fenced, in recovery, not the primary, the lag
 * monitor vouches for it (`replicating`), its lag is within the limit (`fresh`, with hysteresis;
 * or the statement's own `max_lag_ms` hint, checked against the raw figures), it has replayed
 * the read's `minLsn` (unless it is `fenceAppliedOn`) and its `afterLsn`. Among qualified replicas:
 * - `round_robin`: in turn;
 * - `random`: uniformly;
 * - `least_connections`: fewest units in flight, ties taken in turn;
 * - `weighted`: smooth weighted round robin on `nodes[].weight` (exact shares; weight 0 only
 *   when every qualified replica has weight 0);
 * - `latency` (default): power of two choices — two distinct random replicas, the one with the
 *   lower (in-flight + 1) × latency EWMA wins.
 */
export class Router {
  private rr = 0;
  /** smooth weighted round robin: each node's running credit */
  private readonly credit = new Map<string, number>();
  /** when each node was last chosen (latency balancing) */
  private readonly lastChosen = new Map<string, number>();
  private readonly env: RouterEnvironment;
  /** read shapes a replica refused as writes: they go to the primary (see UnitPlacement.targetOf) */
  readonly refusedOnReplica = new ReplicaRefusals();

  constructor(
    private readonly topology: Topology,
    private options: RouterOptions,
    /** the lag limits (a replica's `fresh` is its verdict; a statement's hint is checked here) */
    private readonly lagPolicy: LagPolicy,
    env: Partial<RouterEnvironment> = {},
  ) {
    this.env = { random: env.random ?? Math.random, now: env.now ?? (() => performance.now()) };
  }

  configure(options: RouterOptions): void {
    this.options = options;
  }

  route(target: Target, constraints?: ReadConstraints): Route {
    const primary = this.topology.primary();
    if (target === 'primary') return primary ? { kind: 'node', node: primary, fallback: undefined } : WAIT_FOR_PRIMARY;
    const candidates = this.readCandidates(constraints);
    if (candidates.length > 0) return { kind: 'node', node: this.balance(candidates), fallback: undefined };
    const reason = this.whyNoReplica(constraints);
    if (this.options.fallback === 'error' && reason !== 'consistency') {
      const why = reason === 'lag' ? `every replica is stale (${this.lagPolicy.describe(constraints?.maxLagMs)})` : 'no replica is up';
      return { kind: 'refuse', error: new ProxyError(SqlState.cannotConnectNow, `no replica can serve this read: ${why}, and routing.fallback is error`, { retryable: true }) };
    }
    return primary ? { kind: 'node', node: primary, fallback: reason } : WAIT_FOR_PRIMARY;
  }

  /** A unit starts on `node` (in-flight count, for balancing). */
  started(node: NodeStatus): void {
    node.inflight++;
  }

  /** A unit on `node` ended after `elapsedMs` (undefined: its connection was lost, no latency sample). */
  finished(node: NodeStatus, elapsedMs: number | undefined): void {
    node.inflight--;
    if (elapsedMs !== undefined) node.latencyEwmaMs = node.latencyEwmaMs * 0.9 + elapsedMs * 0.1;
  }

  /** Whether any replica is up, replicating and fresh enough to serve a read now (before a client's own constraints). */
  anyReplicaServes(): boolean {
    for (const node of this.topology.nodes.values()) if (this.freshEnough(node, undefined)) return true;
    return false;
  }

  /** Replicas that may serve a read now. */
  readCandidates(constraints?: ReadConstraints): NodeStatus[] {
    const applied = constraints?.fenceAppliedOn;
    const pending = constraints?.pendingWrite === true;
    if (pending && applied === undefined) return [];
    const out: NodeStatus[] = [];
    const minLsn = constraints?.minLsn;
    const afterLsn = constraints?.afterLsn;
    const avoid = constraints?.avoidNode;
    for (const node of this.topology.nodes.values()) {
      if (!this.freshEnough(node, constraints?.maxLagMs)) continue;
      if (avoid !== undefined && node.name === avoid) continue;
      if (node.name !== applied && (pending || !replayed(node, minLsn))) continue;
      if (!replayed(node, afterLsn)) continue;
      out.push(node);
    }
    return out;
  }

  private freshEnough(node: NodeStatus, maxLagMs: number | undefined): boolean {
    if (!this.isReader(node) || !node.replicating) return false;
    if (maxLagMs === undefined) return node.fresh;
    return this.lagPolicy.within(node, maxLagMs);
  }

  /** Why no replica qualified: read-your-writes alone, their lag, or none is up. */
  private whyNoReplica(constraints?: ReadConstraints): PrimaryReadReason {
    let anyUp = false;
    for (const node of this.topology.nodes.values()) {
      if (!this.isReader(node)) continue;
      anyUp = true;
      if (this.freshEnough(node, constraints?.maxLagMs)) return 'consistency';
    }
    return anyUp ? 'lag' : 'no_replica';
  }

  private isReader(node: NodeStatus): boolean {
    return node.up && !node.fenced && node.role !== 'primary' && node.name !== this.topology.primaryName && node.inRecovery !== false;
  }

  private balance(nodes: NodeStatus[]): NodeStatus {
    const chosen = nodes.length === 1 ? nodes[0]! : this.pick(nodes);
    if (this.options.balance === 'latency') this.lastChosen.set(chosen.name, this.env.now());
    return chosen;
  }

  private pick(nodes: NodeStatus[]): NodeStatus {
    switch (this.options.balance) {
      case 'round_robin':
        return nodes[this.turn() % nodes.length]!;
      case 'random':
        return nodes[this.randomIndex(nodes.length)]!;
      case 'least_connections': {
        let fewest = Infinity;
        let ties = 0;
        for (const n of nodes) {
          if (n.inflight < fewest) {
            fewest = n.inflight;
            ties = 1;
          } else if (n.inflight === fewest) ties++;
        }
        let k = this.turn() % ties;
        for (const n of nodes) if (n.inflight === fewest && k-- === 0) return n;
        return nodes[0]!;
      }
      case 'weighted':
        return this.smoothWeighted(nodes);
      case 'latency': {
        // power of two choices: two distinct random candidates, the one with less expected wait wins
        const i = this.randomIndex(nodes.length);
        let j = this.randomIndex(nodes.length - 1);
        if (j >= i) j++;
        const a = nodes[i]!;
        const b = nodes[j]!;
        return this.cost(a) <= this.cost(b) ? a : b;
      }
    }
  }

  /**
   * nginx's smooth weighted round robin: every pick adds each node's weight to its credit, the
   * node with the most credit wins and pays the total. Over any window of sum(weights) picks each
   * node is chosen exactly weight times, interleaved. All-zero weights fall back to round robin.
   */
  private smoothWeighted(nodes: NodeStatus[]): NodeStatus {
    let total = 0;
    let best: NodeStatus | undefined;
    let bestCredit = -Infinity;
    for (const n of nodes) {
      const weight = Math.max(0, n.weight);
      total += weight;
      const credit = (this.credit.get(n.name) ?? 0) + weight;
      this.credit.set(n.name, credit);
      if (weight > 0 && credit > bestCredit) {
        best = n;
        bestCredit = credit;
      }
    }
    if (!best) return nodes[this.turn() % nodes.length]!;
    this.credit.set(best.name, bestCredit - total);
    if (this.credit.size > nodes.length * 2) this.forgetCredit();
    return best;
  }

  /** Drops credit of nodes no longer in the topology (so the map does not grow across reloads). */
  private forgetCredit(): void {
    for (const name of this.credit.keys()) if (!this.topology.nodes.has(name)) this.credit.delete(name);
  }

  private cost(node: NodeStatus): number {
    const idleMs = this.env.now() - (this.lastChosen.get(node.name) ?? -Infinity);
    const discount = idleMs > LATENCY_HALF_LIFE_MS ? 0.5 ** ((idleMs - LATENCY_HALF_LIFE_MS) / LATENCY_HALF_LIFE_MS) : 1;
    return (node.inflight + 1) * node.latencyEwmaMs * discount;
  }

  private turn(): number {
    const t = this.rr;
    this.rr = (this.rr + 1) % 0x40000000;
    return t;
  }

  private randomIndex(n: number): number {
    return Math.min(n - 1, Math.floor(this.env.random() * n));
  }
}

/** The node is known to have replayed `lsn` (undefined: nothing to replay). */
function replayed(node: NodeStatus, lsn: bigint | undefined): boolean {
  return lsn === undefined || (node.replayLsn !== undefined && node.replayLsn >= lsn);
}
