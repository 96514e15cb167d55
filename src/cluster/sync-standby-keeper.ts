import type { Config } from '../config/types.js';
import type { Logger } from '../util/log.js';
import type { ReplicationObservation } from './failover-plan.js';
import type { HealthChecker } from './health-checker.js';
import { addressOf, sleep, type NodeAdmin, type NodeAddress } from './node-admin.js';
import { formatSyncStandbyNames, listsStandby, parseSyncStandbyNames } from './sync-standby-names.js';
import type { NodeStatus, Topology } from './topology.js';

/** The shortest time no listed standby streams before the keeper acts (health settings below it are for tests). */
const MIN_GRACE_MS = 1_000;
/** How long a follower gets to flush the primary's WAL up to now before it is made the synchronous standby. */
const CATCH_UP_MS = 5_000;

export interface SyncStandbyKeeperDeps {
  topology: Topology;
  health: HealthChecker;
  admin: NodeAdmin;
  log: Logger;
  config: () => Config;
  /**
   * The primary's replication as the keeper left it, told at once (a failover's evidence): a
   * primary that dies before its next health check is failed over to the new synchronous
   * standby, and after a clear to none.
   */
  replicationSet(primary: string, view: ReplicationObservation): void;
}

/**
 * Keeps writes going when the synchronous standby dies (`failover.mode: managed`, the RDS way: a
 * Multi-AZ standby that fails is replaced, it does not stop the primary's writes). PostgreSQL makes
 * every commit wait for a standby `synchronous_standby_names` lists; with none of them streaming,
 * every write waits forever. Once the primary's replication view (its health check) has shown no
 * listed standby streaming for `health.interval_ms + timeout_ms` (at least 1 s; at once when the
 * health checks have found every listed standby down):
 * - another follower that streams (a configured standby first, then replicas, in config order)
 *   becomes the synchronous standby, once it has flushed the primary's WAL up to that moment — every
 *   commit acknowledged so far — so that a failover may promote it without losing one;
 * - with no follower streaming and no listed standby connected at all (one catching up is waited
 *   for), `synchronous_standby_names` is cleared: commits are acknowledged by
 *   the primary alone, which the log says (a failover then promotes nothing unless
 *   `failover.allow_data_loss`: no node is known to hold every acknowledged commit), and the first
 *   follower to stream again becomes the synchronous standby.
 * While it changes the setting, the failover keeps the evidence it had; the keeper hands it the
 * new one once it holds (see `busy`). A standby that comes back is not made synchronous again over
 * the follower that took its place (switching a live synchronous standby would leave a moment in
 * which neither is known to hold every acknowledged commit). The operator's setting stands while a
 * standby it lists streams; one that asks for more than one synchronous standby (`FIRST 2 (…)`,
 * `ANY 2 (…)`) is left alone (logged).
 */
export class SyncStandbyKeeper {
  /** Date.now() since which no listed standby has streamed (undefined: one does) */
  private lostSince: number | undefined;
  private working = false;
  /** the primary whose synchronous_standby_names the keeper cleared: it gets one again when a follower streams */
  private cleared: string | undefined;
  private warnedAt = 0;
  /** what the keeper did last, once the failover has its evidence: the primary, and the node made its synchronous standby (undefined: cleared) */
  settled: { primary: string; standby: string | undefined } | undefined;
  private failedAt = 0;

  constructor(private readonly deps: SyncStandbyKeeperDeps) {}

  /** The keeper is changing synchronous_standby_names: a health check's view is not yet evidence of it. */
  get busy(): boolean {
    return this.working;
  }

  /** The primary's replication view, from a health check (managed mode, no failover or switchover running). */
  observe(primary: NodeStatus, view: ReplicationObservation): void {
    if (this.working) return;
    const names = parseSyncStandbyNames(view.synchronousStandbyNames);
    if (names.method === 'none') {
      this.lostSince = undefined;
      if (this.cleared === primary.name && this.followers(primary, view).length > 0) this.settle(primary, view, undefined);
      return;
    }
    if (this.cleared === primary.name) this.cleared = undefined;
    // a walsender whose state this role may not read ('') counts as streaming: a dead standby's is
    // gone; one of a standby the health checks found down (silent: stopped, a cut network) counts
    // as lost, though the primary keeps it until wal_sender_timeout (a minute by default)
    const listed = view.peers.filter((p) => listsStandby(names, p.applicationName) && this.nodeOf(p.applicationName.toLowerCase())?.up !== false);
    const streaming = listed.filter((p) => p.state === 'streaming' || p.state === '').length;
    if (streaming >= names.count) {
      this.lostSince = undefined;
      return;
    }
    const now = Date.now();
    this.lostSince ??= now;
    const { interval_ms, timeout_ms } = this.deps.config().health;
    // no grace when the health checks have already found every listed standby down
    const down = listed.length === 0 && names.names.every((name) => this.nodeOf(name)?.up === false);
    if (!down && now - this.lostSince < Math.max(MIN_GRACE_MS, interval_ms + timeout_ms)) return;
    if (names.count > 1) {
      if (now - this.warnedAt < 60_000) return;
      this.warnedAt = now;
      this.deps.log.error({ primary: primary.name, synchronous_standby_names: view.synchronousStandbyNames }, 'fewer synchronous standbys stream than synchronous_standby_names asks for: commits wait (pgrelay replaces a lost synchronous standby only where one is asked for)');
      return;
    }
    // a listed standby still connected (catching up) is waited for unless another follower can take its place
    this.settle(primary, view, names.names, listed.length === 0);
  }

  /** The node whose application_name is `applicationName` (lower case), if any. */
  private nodeOf(applicationName: string): NodeStatus | undefined {
    for (const node of this.deps.topology.nodes.values()) if (this.deps.health.applicationName(node.name).toLowerCase() === applicationName) return node;
    return undefined;
  }

  /** Followers of `primary` that stream, as nodes of the topology: configured standbys first, then in config order. */
  private followers(primary: NodeStatus, view: ReplicationObservation): NodeStatus[] {
    const streaming = new Set(view.peers.filter((p) => p.state === 'streaming' || p.state === '').map((p) => p.applicationName.toLowerCase()));
    return [...this.deps.topology.nodes.values()]
      .filter((n) => n.name !== primary.name && n.up && !n.fenced && n.inRecovery !== false && streaming.has(this.deps.health.applicationName(n.name).toLowerCase()))
      .sort((a, b) => (a.configuredRole === 'standby' ? 0 : 1) - (b.configuredRole === 'standby' ? 0 : 1));
  }

  /** The primary's walsenders once `applicationName` is reported synchronous (each look a new session: the reloaded setting). */
  private async whenSynchronous(at: NodeAddress, applicationName: string): Promise<ReplicationObservation['peers']> {
    const deadline = Date.now() + CATCH_UP_MS;
    for (;;) {
      const peers = await this.deps.admin.streamingPeers(at);
      if (peers.some((p) => p.syncState === 'sync' && p.applicationName.toLowerCase() === applicationName.toLowerCase())) return peers;
      if (Date.now() >= deadline) throw new Error(`${applicationName} is not reported synchronous ${CATCH_UP_MS} ms after the reload`);
      await sleep(50);
    }
  }

  /** Makes a caught-up follower the synchronous standby, or clears the setting when none streams. `lost`: the names listed before. */
  private settle(primary: NodeStatus, view: ReplicationObservation, lost: string[] | undefined, mayClear = true): void {
    this.working = true;
    const at = addressOf(primary);
    const followers = this.followers(primary, view);
    const log = this.deps.log;
    void (async () => {
      if (followers.length === 0) {
        if (!mayClear) return;
        await this.deps.admin.setSynchronousStandbyNames(at, '');
        this.deps.replicationSet(primary.name, { ...view, synchronousStandbyNames: '', at: Date.now() });
        this.cleared = primary.name;
        this.settled = { primary: primary.name, standby: undefined };
        log.error({ primary: primary.name, lost }, 'the synchronous standby is lost and no other replica streams: synchronous replication is off, commits are acknowledged by the primary alone (a failover promotes no node until one streams again, unless failover.allow_data_loss)');
        return;
      }
      const byApplication = new Map(followers.map((n) => [this.deps.health.applicationName(n.name), n]));
      const chosen = await this.deps.admin.caughtUpStandby(at, [...byApplication.keys()], CATCH_UP_MS);
      if (chosen === undefined) {
        if (Date.now() - this.failedAt < 10_000) return;
        this.failedAt = Date.now();
        log.warn({ primary: primary.name, candidates: followers.map((n) => n.name) }, 'no streaming replica has flushed the primary\'s WAL yet (or the failover role cannot see flush_lsn in pg_stat_replication): the synchronous standby is not replaced yet');
        return;
      }
      const value = formatSyncStandbyNames([chosen]);
      await this.deps.admin.setSynchronousStandbyNames(at, value);
      // the reload reaches the primary's backends a moment later: once a new session sees the
      // follower synchronous, every commit waits for it; once it has flushed what the primary
      // has now, it holds every commit acknowledged before too (the primary acknowledged alone
      // while the setting was cleared, and until the reload took)
      const peers = await this.whenSynchronous(at, chosen);
      if ((await this.deps.admin.caughtUpStandby(at, [chosen], CATCH_UP_MS)) === undefined) throw new Error(`${chosen} has not flushed the primary's WAL ${CATCH_UP_MS} ms after it became synchronous`);
      this.deps.replicationSet(primary.name, { synchronousStandbyNames: value, peers, at: Date.now() });
      this.cleared = undefined;
      this.lostSince = undefined;
      this.settled = { primary: primary.name, standby: byApplication.get(chosen)?.name };
      log.warn({ primary: primary.name, lost, standby: byApplication.get(chosen)?.name }, lost ? 'the synchronous standby is lost: another replica is the synchronous standby now' : 'a replica streams again: it is the synchronous standby');
    })()
      .catch((error: unknown) => {
        if (Date.now() - this.failedAt < 10_000) return;
        this.failedAt = Date.now();
        log.error({ primary: primary.name, err: error instanceof Error ? error.message : String(error) }, 'could not change synchronous_standby_names; will retry');
      })
      .finally(() => {
        this.working = false;
      });
  }
}
