import type { Classification } from '../classify/classifier.js';
import type { Consistency } from '../config/types.js';
import type { ReadConstraints } from './router.js';

/**
 * Where the WAL position of a committed write comes from (the lag monitor): a sample of the
 * primary's position taken after the moment of the call, shared by every write waiting for one.
 */
export interface WriteLsnSource {
  /** A write has just committed; `done` gets a primary WAL position taken after this call. */
  afterWrite(done: (lsn: bigint) => void): void;
}

/** What one client (or, under `global`, everyone) must see: its writes' positions. */
class WriteFence {
  /** highest WAL position of a write that is known */
  minLsn: bigint | undefined = undefined;
  /** writes committed whose position is not known yet */
  private written = 0;
  private known = 0;

  get pending(): boolean {
    return this.known < this.written;
  }

  /** Registers a committed write; returns a callback for its WAL position. */
  wrote(): (lsn: bigint) => void {
    const token = ++this.written;
    return (lsn) => {
      if (token > this.known) this.known = token;
      if (this.minLsn === undefined || lsn > this.minLsn) this.minLsn = lsn;
    };
  }

  constraints(maxLagMs: number | undefined): ReadConstraints {
    return { minLsn: this.minLsn, pendingWrite: this.pending, maxLagMs };
  }
}

/**
 * The consistency modes (`routing.consistency`), as read constraints for the router:
 * - `eventual`: only the lag limit applies (and a statement's `max_lag_ms` hint).
 * - `session` (default, read-your-writes): once a client's write has committed on the primary, its
 *   reads go to the primary until the WAL position covering that write is known (a sample taken
 *   by the lag monitor after the commit, one in flight at a time, shared by all waiting writes:
 *   no round trip is added to the client's answer); afterwards only to replicas that have
 *   replayed that position, else to the primary.
 * - `global`: the same with one fence shared by every client of this pgrelay, so any read sees
 *   every write this pgrelay has acknowledged to anyone.
 * A client's state lives in a WeakMap keyed by its session: nothing to clean up when it leaves.
 */
export class Freshness {
  private readonly sessions = new WeakMap<object, WriteFence>();
  private global = new WriteFence();

  constructor(
    private readonly source: WriteLsnSource,
    private mode: Consistency,
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
        return;
      case 'session': {
        let fence = this.sessions.get(session);
        if (!fence) {
          fence = new WriteFence();
          this.sessions.set(session, fence);
        }
        this.source.afterWrite(fence.wrote());
        return;
      }
      case 'global':
        this.source.afterWrite(this.global.wrote());
        return;
    }
  }

  /** What a read of this client must satisfy; undefined when only the configured lag limit applies. */
  readConstraints(session: object, classification: Classification | undefined): ReadConstraints | undefined {
    const maxLagMs = classification?.maxLagMs;
    switch (this.mode) {
      case 'eventual':
        return maxLagMs === undefined ? undefined : { maxLagMs };
      case 'session': {
        const fence = this.sessions.get(session);
        if (fence) return fence.constraints(maxLagMs);
        return maxLagMs === undefined ? undefined : { maxLagMs };
      }
      case 'global':
        return this.global.constraints(maxLagMs);
    }
  }
}
