import type { Classification } from '../classify/classifier.js';
import type { Consistency } from '../config/types.js';
import type { ReadConstraints } from './router.js';

/**
 * Where the WAL position of a committed write comes from (the lag monitor): a sample of the
 * primary's position taken after the moment of the call, shared by every write waiting for one.
 */
export interface WriteLsnSource {
  /**
   * A write has just committed; `done` gets a primary WAL position taken after this call. `soon`
   * false: no sample is asked for on its behalf (the next one taken anyway serves it, or one asked
   * for by `hurry`); a source without `hurry` asks at once whatever `soon` says.
   */
  afterWrite(done: (lsn: bigint) => void, soon?: boolean): void;
  /** Writes registered with `soon` false want their position now: a sample is asked for. */
  hurry?(): void;
}

/** What one client (or, under `global`, everyone) must see: its writes' positions. */
class WriteFence {
  /** highest WAL position of a write that is known */
  minLsn: bigint | undefined = undefined;
  /** the node that applied the last write before it was acknowledged (remote_apply shortcut), if any */
  appliedOn: string | undefined = undefined;
  /** writes committed whose position is not known yet */
  private written = 0;
  private known = 0;
  /** the position of the writes pending was asked for (see Freshness.wroteOnPrimary) */
  hurried = true;

  get pending(): boolean {
    return this.known < this.written;
  }

  /** Registers a committed write; returns a callback for its WAL position. */
  wrote(): (lsn: bigint) => void {
    const token = ++this.written;
    this.hurried = false;
    return (lsn) => {
      if (token > this.known) this.known = token;
      if (this.minLsn === undefined || lsn > this.minLsn) this.minLsn = lsn;
    };
  }

  constraints(maxLagMs: number | undefined, afterLsn: bigint | undefined, appliedOn: string | undefined): ReadConstraints {
    return { minLsn: this.minLsn, pendingWrite: this.pending, maxLagMs, afterLsn, fenceAppliedOn: appliedOn };
  }
}

/**
 * The remote_apply shortcut (cluster/remote-apply.ts): which node, if any, applied a write of this
 * session before its commit was acknowledged, and whether that node still is the synchronous one.
 */
export interface AppliedWrites {
  /** asked when the session's write has just committed */
  appliedOn(session: object): string | undefined;
  /** asked for every read: the node is (still) the synchronous standby under remote_apply */
  stillApplies(node: string): boolean;
}

const NO_SHORTCUT: AppliedWrites = { appliedOn: () => undefined, stillApplies: () => false };

/**
 * The consistency modes (`routing.consistency`), as read constraints for the router:
 * - `eventual`: only the lag limit applies (and a statement's `max_lag_ms` hint).
 * - `session` (default, read-your-writes): once a client's write has committed on the primary, its
 *   reads go to the primary until the WAL position covering that write is known (a sample taken
 *   by the lag monitor after the commit, one in flight at a time, shared by all waiting writes:
 *   no round trip is added to the client's answer); afterwards only to replicas that have
 *   replayed that position, else to the primary. The sample is asked for when the client next
 *   reads (or asks for its causality token), not at the commit: a client that only writes (a
 *   TPC-B-like transaction, whose reads are in it) costs no query on the primary per commit; its
 *   writes are covered by the lag monitor's regular samples meanwhile. A sample taken later is
 *   still at or past the commit's position, so the fence is as safe.
 * - `global`: the same with one fence shared by every client of this pgrelay, so any read sees
 *   every write this pgrelay has acknowledged to anyone.
 * In every mode a read's own causality token (`after_lsn` hint) must be replayed where it runs.
 * Under `session`, a write acknowledged under `synchronous_commit = remote_apply` while a
 * synchronous standby was in sync has been applied there: the fence lets that node serve the
 * session's reads at once, without waiting for the write's position (the remote_apply shortcut).
 * A client's state lives in a WeakMap keyed by its session: nothing to clean up when it leaves.
 */
export class Freshness {
  private readonly sessions = new WeakMap<object, WriteFence>();
  private global = new WriteFence();
  /** sessions that wrote, under `eventual` and `global` (whose own fences are not kept): for the causality token */
  private readonly wrote = new WeakSet<object>();

  constructor(
    private readonly source: WriteLsnSource,
    private mode: Consistency,
    private readonly applied: AppliedWrites = NO_SHORTCUT,
    /** a replica could serve a read now (none: a read goes to the primary, whose writes' position it needs not) */
    private readonly replicaServes: () => boolean = () => true,
  ) {}

  get consistency(): Consistency {
    return this.mode;
  }

  configure(mode: Consistency): void {
    if (mode === this.mode) return;
    this.mode = mode;
    // a fence from another mode would be stale or incomplete: start clean (writes not yet
    // covered keep their callbacks into the old fences, which are simply dropped)
    this.global = new WriteFence();
  }

  /** A client's write unit completed on the primary outside a transaction (it committed). */
  wroteOnPrimary(session: object): void {
    switch (this.mode) {
      case 'eventual':
        this.wrote.add(session);
        return;
      case 'session': {
        let fence = this.sessions.get(session);
        if (!fence) {
          fence = new WriteFence();
          this.sessions.set(session, fence);
        }
        fence.appliedOn = this.applied.appliedOn(session);
        this.source.afterWrite(fence.wrote(), false);
        return;
      }
      case 'global':
        this.wrote.add(session);
        this.source.afterWrite(this.global.wrote());
        return;
    }
  }

  /**
   * The causality token (`SHOW pgrelay.last_write_lsn`): calls back with a WAL position at or past
   * the session's last acknowledged write, 0 when it wrote nothing through this pgrelay. Under
   * `session` it is the position read-your-writes records (once known: while it is not, and under
   * the other modes, a primary sample taken after this call, which covers every write acknowledged
   * before it). May call back synchronously; never calls back while no primary can be sampled.
   */
  lastWritePosition(session: object, done: (lsn: bigint) => void): void {
    const fence = this.mode === 'session' ? this.sessions.get(session) : undefined;
    if (fence && !fence.pending) return done(fence.minLsn ?? 0n);
    // a sample asked for now serves the fence's pending writes too
    if (fence || this.wrote.has(session)) return this.source.afterWrite(done);
    done(0n);
  }

  /** What a read of this client must satisfy; undefined when only the configured lag limit applies. */
  readConstraints(session: object, classification: Classification | undefined): ReadConstraints | undefined {
    const maxLagMs = classification?.maxLagMs;
    const afterLsn = classification?.afterLsn;
    const own = maxLagMs === undefined && afterLsn === undefined ? undefined : { maxLagMs, afterLsn };
    switch (this.mode) {
      case 'eventual':
        return own;
      case 'session': {
        const fence = this.sessions.get(session);
        if (!fence) return own;
        if (!fence.hurried && fence.pending && this.replicaServes()) {
          // the client reads and a replica could serve it: its writes' position is asked for now (see the class)
          fence.hurried = true;
          this.source.hurry?.();
        }
        const appliedOn = fence.appliedOn !== undefined && this.applied.stillApplies(fence.appliedOn) ? fence.appliedOn : undefined;
        return fence.constraints(maxLagMs, afterLsn, appliedOn);
      }
      case 'global':
        return this.global.constraints(maxLagMs, afterLsn, undefined);
    }
  }
}
