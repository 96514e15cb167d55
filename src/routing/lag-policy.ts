import type { NodeStatus } from '../cluster/topology.js';
import { judgeLag, type LagLimits, type LagReading, withinLag } from './eligibility.js';

/**
 * The one lag policy: `routing.max_lag_ms` / `max_lag_bytes`, owned by routing and replaced on
 * reload. The lag monitor only measures: it reports each replica's reading here (or that it has
 * none it can vouch for, with the reason), and the policy decides whether the replica serves
 * reads (with hysteresis, see eligibility.ts) and records that decision, with its reason, in the
 * topology the router reads. A statement's own `max_lag_ms` hint is checked against the raw
 * figures by `within`.
 */
export class LagPolicy {
  constructor(private current: LagLimits) {}

  get limits(): LagLimits {
    return this.current;
  }

  /** A reload: the new limits apply from the next reading on. */
  configure(limits: LagLimits): void {
    this.current = limits;
  }

  /**
   * A replica's reading (undefined: no figure the monitor can vouch for, `reason` says why).
   * Returns whether the node's eligibility changed.
   */
  report(node: NodeStatus, reading: LagReading | undefined, reason: string | undefined): boolean {
    const wasFresh = node.fresh;
    const wasReplicating = node.replicating;
    if (reading === undefined) {
      node.fresh = false;
      node.replicating = false;
      node.staleReason = reason;
    } else {
      const verdict = judgeLag(wasFresh, reading, this.current);
      node.fresh = verdict.fresh;
      node.replicating = true;
      node.staleReason = verdict.reason;
    }
    return node.fresh !== wasFresh || node.replicating !== wasReplicating;
  }

  /** Whether a replica's figures meet a statement's own limit (no hysteresis; the byte limit still applies). */
  within(node: NodeStatus, maxLagMs: number): boolean {
    return withinLag({ lagMs: node.lagSeconds === undefined ? undefined : node.lagSeconds * 1000, lagBytes: node.lagBytes, replayPaused: node.replayPaused }, maxLagMs, this.current.maxLagBytes);
  }

  /** For an error text: the limits a read could not meet. */
  describe(maxLagMs: number | undefined): string {
    const bytes = this.current.maxLagBytes;
    return `lag limit ${maxLagMs ?? this.current.maxLagMs} ms${bytes > 0 ? ` / ${bytes} bytes` : ''}`;
  }
}

export function lagLimits(routing: { max_lag_ms: number; max_lag_bytes: number }): LagLimits {
  return { maxLagMs: routing.max_lag_ms, maxLagBytes: routing.max_lag_bytes };
}
