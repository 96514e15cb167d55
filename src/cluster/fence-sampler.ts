import { parseLsn } from './lsn.js';
import type { NodeProbe } from './node-probe.js';
import type { NodeStatus, Topology } from './topology.js';

/** Only the replay position: the cheapest question a replica can be asked. */
const REPLAY_SQL = 'SELECT pg_last_wal_replay_lsn()::text AS replay_lsn';

/** Milliseconds between the end of one sampling tick and the start of the next. */
export const FENCE_SAMPLE_INTERVAL_MS = 1;

/** When there was nothing to ask (or a node failed to answer): how long until the next look. */
const IDLE_RETRY_MS = 5;

interface FenceWaiter {
  ready: () => boolean;
  done: (ready: boolean) => void;
  timer: NodeJS.Timeout;
}

export interface FenceSamplerDeps {
  topology: Topology;
  /** the lag monitor's connection to a node, if it has one */
  probe: (node: string) => NodeProbe | undefined;
}

/**
 * Fast read-your-writes: while reads wait for a replica to replay their client's last write (a
 * fence no replica is known to satisfy), the replay positions of the replicas that serve reads
 * are sampled every ~FENCE_SAMPLE_INTERVAL_MS, one tiny query per replica on the lag monitor's own
 * connections, all waits sharing each tick; nothing runs while no read waits. Each answer raises
 * the node's `replayLsn` (never lowers it: the lag rounds do that) — the position the node had
 * replayed by the time it answered, so a fence at or below it is satisfied. Whether the node serves
 * reads at all (replicating the current primary, within the lag limit) stays the lag monitor's and
 * the lag policy's decision; a sample only counts for a node they vouch for, under the primary it
 * was sent under.
 *
 * A wait ends when its `ready` check passes (checked after every tick and every other change the
 * lag monitor reports: a write's position becoming known) or after its timeout, whichever first.
 */
export class FenceSampler {
  private readonly waiters = new Set<FenceWaiter>();
  private readonly inflight = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** replay positions sampled (for tests and diagnostics) */
  samples = 0;

  constructor(private readonly deps: FenceSamplerDeps) {}

  /** Reads waiting now. */
  get waiting(): number {
    return this.waiters.size;
  }

  /**
   * Calls `done(true)` once `ready()` passes, or `done(false)` after `timeoutMs` (always
   * asynchronously, exactly once). Sampling runs while any wait is open.
   */
  wait(ready: () => boolean, timeoutMs: number, done: (ready: boolean) => void): void {
    if (this.stopped) {
      queueMicrotask(() => done(ready()));
      return;
    }
    const waiter: FenceWaiter = {
      ready,
      done,
      timer: setTimeout(() => {
        if (this.waiters.delete(waiter)) done(false);
      }, timeoutMs),
    };
    this.waiters.add(waiter);
    // a tick skips the nodes being asked already: at most one query in flight per node
    if (this.timer === undefined) this.tick();
  }

  /** Something a wait may depend on changed (a write's position is known, a lag round): check now. */
  progress(): void {
    if (this.waiters.size === 0) return;
    for (const waiter of this.waiters) {
      if (!waiter.ready()) continue;
      this.waiters.delete(waiter);
      clearTimeout(waiter.timer);
      waiter.done(true);
    }
  }

  /** (Again) ready to sample after stop(). */
  start(): void {
    this.stopped = false;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const waiter of waiters) {
      clearTimeout(waiter.timer);
      waiter.done(false);
    }
  }

  /**
   * One tick: the replay position of every candidate replica not already being asked. Each answer
   * is checked against the waits at once and schedules the next tick, so a slow node does not hold
   * back the others.
   */
  private tick(): void {
    this.timer = undefined;
    if (this.stopped || this.waiters.size === 0) return;
    const { topology } = this.deps;
    const primary = topology.primaryName;
    let asked = 0;
    for (const node of topology.nodes.values()) {
      if (!isCandidate(node, primary) || this.inflight.has(node.name)) continue;
      const probe = this.deps.probe(node.name);
      if (!probe) continue;
      this.inflight.add(node.name);
      asked++;
      probe.query<{ replay_lsn: string | null }>('pgrelay_replay_lsn', REPLAY_SQL).then(
        (row) => {
          this.inflight.delete(node.name);
          this.samples++;
          if (row.replay_lsn !== null && topology.primaryName === primary && topology.node(node.name) === node && isCandidate(node, primary)) {
            const lsn = parseLsn(row.replay_lsn);
            if (node.replayLsn === undefined || lsn > node.replayLsn) node.replayLsn = lsn;
          }
          this.answered(FENCE_SAMPLE_INTERVAL_MS);
        },
        () => {
          // the lag monitor's next round sees (and logs) a node it cannot query
          this.inflight.delete(node.name);
          this.answered(IDLE_RETRY_MS);
        },
      );
    }
    // nothing to ask now (no replica serves reads, or all are being asked): look again a little later
    if (asked === 0 && this.inflight.size === 0) this.schedule(IDLE_RETRY_MS);
  }

  private answered(nextInMs: number): void {
    this.progress();
    this.schedule(nextInMs);
  }

  private schedule(inMs: number): void {
    if (this.stopped || this.waiters.size === 0 || this.timer !== undefined) return;
    this.timer = setTimeout(() => this.tick(), inMs);
  }
}

/**
 * A node whose replay position may let a read go there: a replica the lag monitor vouches for,
 * within the lag limit (one excluded for its lag, or paused, is not asked; a read whose own
 * `max_lag_ms` hint would accept it simply finds it at the next lag round).
 */
function isCandidate(node: NodeStatus, primary: string | undefined): boolean {
  return node.up && !node.fenced && node.name !== primary && node.role !== 'primary' && node.replicating && node.fresh && node.inRecovery !== false;
}
