import type { Classification, Classifier } from '../classify/classifier.js';
import type { Config } from '../config/types.js';
import type { NodeStatus, Topology } from '../cluster/topology.js';
import type { Metrics } from '../metrics/metrics.js';
import type { PoolSet } from '../pool/pool-set.js';
import type { ReadConstraints, Router } from '../routing/router.js';
import type { Logger } from '../util/log.js';
import type { StatementRegistry } from './prepared-statements.js';

/**
 * What a client session uses of the rest of pgrelay, handed to every session as one object: the
 * App builds it (AppServices), the frontend adds its bookkeeping of sessions. A session is known
 * to these services only as an opaque key (read-your-writes fences are kept per session) and by
 * its process id.
 */
export interface SessionServices {
  config(): Config;
  readonly pools: PoolSet;
  readonly router: Router;
  readonly topology: Topology;
  readonly classifier: Classifier;
  readonly statements: StatementRegistry;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** freshness a read of this session needs (read-your-writes), if any */
  readConstraints(session: object, classification: Classification | undefined): ReadConstraints | undefined;
  /** a unit that went to the primary for a write has completed outside a transaction (committed) */
  wroteOnPrimary(session: object): void;
  /**
   * A read of this session whose fence (its last write) no replica is known to have replayed yet:
   * calls back (asynchronously, once) when a replica may have, or after routing.fence_wait_ms.
   * Returns false when it does not wait (fence_wait_ms is 0): the read goes to the primary at once.
   */
  waitForFence(session: object, classification: Classification | undefined, callback: () => void): boolean;
  /**
   * The causality token: calls back with a WAL position at or past the session's last
   * acknowledged write (0 when none), maybe synchronously (see Freshness.lastWritePosition).
   */
  lastWritePosition(session: object, done: (lsn: bigint) => void): void;
  /**
   * The session sent a text that may change synchronous_commit other than by a session-level SET
   * (SET LOCAL, set_config(): `sticky`): its next write does not use the remote_apply shortcut
   * (with `sticky`, none of its writes do).
   */
  syncCommitTouched(session: object, sticky: boolean): void;
  /** calls back when a primary is known again, or with an error after failover.wait_ms */
  waitForPrimary(callback: (error?: Error) => void): void;
  /** a data-path connection to the node broke or could not be opened */
  nodeBroken(node: string, error: Error | undefined): void;
  /** calls back (asynchronously) once health checks have decided about a node they re-check after nodeBroken */
  whenNodeDecided(node: string, callback: () => void): void;
  /** a unit starts on `node`; `route` is what its statement asked for, `classification` why (metrics) */
  countUnit(node: NodeStatus, route: string, classification: Classification | undefined): void;
  /** a session became pinned (+1) or a pinned one ended (-1) */
  pinned(delta: number): void;
  sessionClosed(session: { readonly processId: number }): void;
}

/** The part of SessionServices the App builds (the frontend adds the rest). */
export type AppServices = Omit<SessionServices, 'pinned' | 'sessionClosed'>;
