import type { Config } from '../config/types.js';
import { ProxyError, SqlState } from '../errors.js';
import type { Metrics } from '../metrics/metrics.js';
import type { PoolSet } from '../pool/pool-set.js';
import type { Logger } from '../util/log.js';
import { chooseFailoverTarget, discoverPrimary, evidenceMaxAgeMs, nodesToFence, type PlanNode, type ReplicationObservation } from './failover-plan.js';
import { failoverLogin, type HealthChecker, type NodeDownEvent } from './health-checker.js';
import type { ProbeResult } from './health-probe.js';
import { addressOf, NodeAdmin, sleep } from './node-admin.js';
import { formatSyncStandbyNames, listsStandby, parseSyncStandbyNames } from './sync-standby-names.js';
import { runSwitchover, type SwitchoverResult } from './switchover.js';
import { SyncStandbyKeeper } from './sync-standby-keeper.js';
import type { NodeStatus, Topology } from './topology.js';

export interface FailoverDeps {
  topology: Topology;
  health: HealthChecker;
  pools: PoolSet;
  metrics: Metrics;
  log: Logger;
  config: () => Config;
  /** workers mode: server connections the worker processes have busy on a node (a switchover drains them too) */
  busyElsewhere?: (node: string) => number;
}

/** The last change of primary, for /status and the logs. */
export interface FailoverRecord {
  kind: 'failover' | 'switchover' | 'follow';
  from: string | undefined;
  to: string;
  /** ISO time the change completed */
  at: string;
  /** from the decision (primary marked down, switchover asked, new primary discovered) to writes flowing */
  durationMs: number;
  /** from the first failed check of the old primary to its being marked down (failover only) */
  detectMs: number | undefined;
  timeline: number | undefined;
  reason: string;
  dataLoss: boolean;
}

/** How long re-pointed replicas get to stream from a new primary before failover gives up on them. */
const STREAMING_WAIT_MS = 30_000;
/** Minimum pause between two attempts to re-point the same replica. */
const REPOINT_RETRY_MS = 5_000;
/** The same failover error is logged at most this often. */
const ERROR_LOG_MS = 10_000;

/**
 * Acts on what the health checks see (DESIGN.md "Health and failover"):
 * - every mode but `off`: the primary is the single node out of recovery on the highest timeline
 *   (so pgrelay follows a promotion made elsewhere), and any other node out of recovery on an
 *   older (or the same) timeline is fenced: it never gets units again, even when it comes back.
 * - `managed`: when the primary is down, promote the node that has every acknowledged commit
 *   (the synchronous standby; an async replica only with allow_data_loss), send writes there,
 *   re-point the other replicas at it and give it a synchronous standby once one streams.
 * - `off`: health only (the router leaves out nodes that are down).
 * One change of primary runs at a time; planned switchovers go through the same lock.
 */
export class Failover {
  readonly admin: NodeAdmin;
  lastFailover: FailoverRecord | undefined;
  /** why each fenced node was fenced */
  readonly fenceReasons = new Map<string, string>();
  /** the primary's last-seen replication (synchronous_standby_names, walsenders), per primary */
  private readonly observations = new Map<string, ReplicationObservation>();
  /** replicas known to stream from (or re-pointed at) a given primary */
  private readonly pointedAt = new Map<string, string>();
  /** the last attempt to re-point a replica: at which primary, when (Date.now()) */
  private readonly repointAttempts = new Map<string, { primary: string; at: number }>();
  /** the primary for which a synchronous standby has been settled */
  private syncSettledFor: string | undefined;
  /** whether the cluster runs with a synchronous standby (seen on the first primary, or configured) */
  private syncWanted: boolean;
  /** the primary has changed since start: replicas may need re-pointing */
  private primaryChanged = false;
  private busy: 'failover' | 'switchover' | undefined;
  private evaluateQueued = false;
  private reconciling: Promise<void> | undefined;
  private reconcileAgain = false;
  private stopped = false;
  private readonly lastErrorLog = new Map<string, number>();
  /** no failover target was found: do not look again before this (Date.now()) */
  private retryFailoverAt = 0;
  private settleAttemptAt = 0;
  /** a synchronous standby that dies is replaced (managed mode) */
  readonly syncKeeper: SyncStandbyKeeper;
  /** when each node was last marked down (performance.now()), to time a followed change of primary */
  private readonly downAt = new Map<string, number>();
  private readonly onChecked = (name: string, result: ProbeResult | undefined) => this.checked(name, result);
  private readonly onDown = (event: NodeDownEvent) => this.nodeDown(event);

  constructor(private readonly deps: FailoverDeps) {
    this.admin = new NodeAdmin(() => failoverLogin(deps.config()));
    this.syncWanted = deps.config().nodes.some((n) => n.role === 'standby');
    this.syncKeeper = new SyncStandbyKeeper({ ...deps, admin: this.admin, replicationSet: (primary, view) => this.observations.set(primary, view) });
  }

  get mode(): Config['failover']['mode'] {
    return this.deps.config().failover.mode;
  }

  /** Whether a failover or switchover is running now. */
  get inProgress(): 'failover' | 'switchover' | undefined {
    return this.busy;
  }

  /** Starts following the health checks (call after the checker's first round). */
  start(): void {
    this.deps.health.on('checked', this.onChecked);
    this.deps.health.on('down', this.onDown);
    const primary = this.deps.topology.primaryName;
    const seen = primary === undefined ? undefined : this.deps.health.lastResult(primary);
    if (seen && !seen.inRecovery) this.observe(primary!, seen);
    this.evaluate();
  }

  stop(): void {
    this.stopped = true;
    this.deps.health.off('checked', this.onChecked);
    this.deps.health.off('down', this.onDown);
  }

  /** Planned switchover (POST /admin/switchover): see switchover.ts. */
  async switchover(target?: string): Promise<SwitchoverResult> {
    if (this.mode !== 'managed') throw new ProxyError(SqlState.featureNotSupported, `switchover needs failover.mode managed (it is ${this.mode})`);
    if (this.busy) throw new ProxyError(SqlState.cannotConnectNow, `a ${this.busy} is already running`);
    this.busy = 'switchover';
    try {
      // a re-pointing or a change of synchronous standby under way would race the switchover's
      // own (a standby re-pointed after it was made synchronous holds every commit): it stops at
      // its next step now that a switchover is busy, and the switchover starts after it
      await this.reconciling;
      const result = await runSwitchover(
        {
          topology: this.deps.topology,
          pools: this.deps.pools,
          busyElsewhere: this.deps.busyElsewhere,
          admin: this.admin,
          health: this.deps.health,
          log: this.deps.log,
          config: this.deps.config,
          planNodes: () => this.planNodes(),
          observation: (name) => this.observations.get(name),
          fence: (name, reason, options) => this.fence(name, reason, options),
          unfence: (name) => this.unfence(name),
        },
        target,
      );
      this.primaryMoved({
        kind: 'switchover',
        from: result.from,
        to: result.to,
        at: new Date().toISOString(),
        durationMs: result.durationMs,
        detectMs: undefined,
        timeline: result.timeline,
        reason: result.reason,
        dataLoss: false,
      });
      return result;
    } finally {
      this.busy = undefined;
      this.evaluate();
    }
  }

  // ---------------------------------------------------------------- reacting to health checks

  private checked(name: string, result: ProbeResult | undefined): void {
    if (result && !result.inRecovery && name === this.deps.topology.primaryName) this.observe(name, result);
    this.evaluate();
  }

  private observe(name: string, result: ProbeResult): void {
    const observation = { synchronousStandbyNames: result.synchronousStandbyNames, peers: result.peers, at: Date.now() };
    if (!this.syncKeeper.busy) this.observations.set(name, observation); // else the keeper hands over new evidence once it holds
    const node = this.deps.topology.node(name);
    if (this.mode === 'managed' && !this.busy && node?.up) this.syncKeeper.observe(node, observation);
    if (result.synchronousStandbyNames.trim() !== '') this.syncWanted = true;
    // replicas that stream from the primary need no re-pointing
    for (const peer of result.peers) {
      if (peer.state !== 'streaming') continue;
      const follower = [...this.deps.topology.nodes.values()].find((n) => this.deps.health.applicationName(n.name).toLowerCase() === peer.applicationName.toLowerCase());
      if (follower) this.pointedAt.set(follower.name, name);
    }
  }

  private nodeDown(event: NodeDownEvent): void {
    this.downAt.set(event.node, event.downAt);
    if (event.node === this.deps.topology.primaryName && this.mode === 'managed' && !this.busy) void this.failover(event);
  }

  /** Re-evaluates the topology soon (coalesced: many checks finishing together run it once). */
  private evaluate(): void {
    if (this.evaluateQueued || this.stopped) return;
    this.evaluateQueued = true;
    queueMicrotask(() => {
      this.evaluateQueued = false;
      if (!this.stopped) this.evaluateNow();
    });
  }

  private evaluateNow(): void {
    // patroni mode: Patroni decides, PatroniTopologySource follows (cluster/patroni.ts)
    if (this.mode === 'off' || this.mode === 'patroni' || this.busy) return;
    const topology = this.deps.topology;
    const nodes = this.planNodes();
    const discovery = discoverPrimary(nodes, topology.primaryName);
    if (discovery.kind === 'switch') {
      this.follow(discovery.primary, discovery.timeline);
    } else if (discovery.kind === 'ambiguous') {
      this.logError('ambiguous', { nodes: discovery.nodes, timeline: discovery.timeline }, 'several nodes are out of recovery on the highest timeline: keeping the current primary');
    }
    const primary = topology.primaryName === undefined ? undefined : nodes.find((n) => n.name === topology.primaryName);
    for (const { name, reason } of nodesToFence(this.planNodes(), primary)) this.fence(name, reason);
    if (this.mode !== 'managed') return;
    const current = topology.primaryName === undefined ? undefined : topology.node(topology.primaryName);
    if (current && !current.up) {
      if (Date.now() >= this.retryFailoverAt) void this.failover(undefined);
      return;
    }
    if (current && this.needsReconcile(current)) void this.reconcile();
  }

  // ---------------------------------------------------------------- managed failover

  private async failover(event: NodeDownEvent | undefined): Promise<void> {
    const topology = this.deps.topology;
    const oldName = topology.primaryName;
    if (this.busy || this.stopped || oldName === undefined) return;
    const old = topology.node(oldName);
    if (!old || old.up) return;
    const config = this.deps.config;
    // a node never seen up is marked down at its first failed check (no reads go to it), but a
    // primary is given up only after `failures` checks in a row, also right after start
    if (this.deps.health.consecutiveFailures(oldName) < config().health.failures) return;
    this.busy = 'failover';
    const startedAt = performance.now();
    const { log } = this.deps;
    let promoting: string | undefined;
    try {
      // from now on nothing reaches the old primary, should it come back while we promote
      const wasFenced = old.fenced;
      old.fenced = true;
      if (!wasFenced) this.fenceReasons.set(oldName, 'primary down: failover in progress');
      this.deps.pools.closeNode(oldName);
      topology.changed();
      const observed = this.observations.get(oldName);
      const age = () => ({ now: Date.now(), maxAgeMs: evidenceMaxAgeMs(config().health, config().failover) });
      const choose = () => chooseFailoverTarget(this.planNodes(), oldName, observed, config().failover.allow_data_loss, age());
      let choice = choose();
      // WAL positions decide a quorum or a lossy choice: take them fresh (a synchronous standby needs none)
      if (!choice.target || choice.dataLoss || (observed && parseSyncStandbyNames(observed.synchronousStandbyNames).method === 'any')) {
        const candidates = [...topology.nodes.values()].filter((n) => n.name !== oldName && n.up && !n.fenced && n.inRecovery !== false);
        await Promise.all(candidates.map((n) => this.deps.health.checkNow(n.name)));
        choice = choose();
      }
      if (!choice.target) {
        // nothing promoted: the old primary may take writes again if it comes back
        old.fenced = wasFenced;
        if (!wasFenced) this.fenceReasons.delete(oldName);
        topology.changed();
        this.retryFailoverAt = Date.now() + config().health.interval_ms;
        this.logError('no-target', { node: oldName, reason: choice.reason }, 'primary is down and cannot be failed over: no node has every acknowledged commit');
        return;
      }
      const target = topology.node(choice.target)!;
      log.warn({ from: oldName, to: target.name, reason: choice.reason, dataLoss: choice.dataLoss, detectMs: event ? Math.round(event.downAt - event.firstFailureAt) : undefined }, 'primary is down: promoting');
      promoting = target.name;
      const promoteStartedAt = performance.now();
      const { timeline, clearedSyncNames } = await this.admin.promote(addressOf(target));
      log.info({ node: target.name, timeline, promoteMs: Math.round(performance.now() - promoteStartedAt), clearedSyncNames }, 'promoted');
      this.fence(oldName, `former primary: ${target.name} was promoted on timeline ${timeline}`);
      target.inRecovery = false;
      target.timeline = timeline;
      topology.setPrimary(target.name);
      const durationMs = performance.now() - startedAt;
      this.primaryMoved({
        kind: 'failover',
        from: oldName,
        to: target.name,
        at: new Date().toISOString(),
        durationMs,
        detectMs: event ? event.downAt - event.firstFailureAt : undefined,
        timeline,
        reason: choice.reason,
        dataLoss: choice.dataLoss,
      });
    } catch (error) {
      // a promotion that went through anyway is found by discovery (out of recovery, newest timeline)
      log.error({ from: oldName, to: promoting, err: errorText(error) }, 'failover failed; will retry on the next health check');
    } finally {
      this.busy = undefined;
      this.evaluate();
    }
  }

  /** A primary found out of recovery on the highest timeline (promoted by someone else). */
  private follow(name: string, timeline: number): void {
    const topology = this.deps.topology;
    const from = topology.primaryName;
    if (from !== undefined && from !== name) this.fence(from, `former primary: ${name} is out of recovery on the newer timeline ${timeline}`);
    topology.setPrimary(name);
    this.deps.log.warn({ from, to: name, timeline }, 'following the new primary');
    if (from === undefined) return; // the first primary seen (startup): not a change
    // timed from the old primary's going down, when it went down first
    const downAt = this.deps.topology.node(from)?.up === false ? this.downAt.get(from) : undefined;
    const durationMs = downAt === undefined ? 0 : performance.now() - downAt;
    this.primaryMoved({ kind: 'follow', from, to: name, at: new Date().toISOString(), durationMs, detectMs: undefined, timeline, reason: `${name} is out of recovery on timeline ${timeline}`, dataLoss: false });
  }

  private primaryMoved(record: FailoverRecord): void {
    this.lastFailover = record;
    this.primaryChanged = true;
    this.syncSettledFor = undefined;
    this.deps.metrics.failovers.inc();
    this.deps.metrics.failoverDuration.set(record.durationMs / 1000);
    this.deps.log.warn({ ...record, durationMs: Math.round(record.durationMs), detectMs: record.detectMs === undefined ? undefined : Math.round(record.detectMs) }, `${record.kind}: writes go to ${record.to}`);
  }

  private fence(name: string, reason: string, options: { closePools: boolean } = { closePools: true }): void {
    const node = this.deps.topology.node(name);
    if (!node) return;
    this.fenceReasons.set(name, reason);
    if (node.fenced) return;
    node.fenced = true;
    if (options.closePools) this.deps.pools.closeNode(name);
    this.deps.log.warn({ node: name, reason }, 'node fenced: it gets no reads or writes until an operator rejoins it');
    this.deps.topology.changed();
  }

  private unfence(name: string): void {
    const node = this.deps.topology.node(name);
    if (!node || !node.fenced) return;
    node.fenced = false;
    this.fenceReasons.delete(name);
    this.deps.topology.changed();
  }

  // ---------------------------------------------------------------- re-pointing replicas

  private needsReconcile(primary: NodeStatus): boolean {
    if (this.stopped || !primary.up || primary.fenced) return false;
    if (this.primaryChanged && this.syncWanted && this.syncSettledFor !== primary.name && Date.now() - this.settleAttemptAt >= 1000) return true;
    return this.followersToRepoint(primary).length > 0;
  }

  private followersToRepoint(primary: NodeStatus): NodeStatus[] {
    if (!this.primaryChanged) return []; // the operator's own replication setup stands until the primary moves
    const now = Date.now();
    return [...this.deps.topology.nodes.values()].filter((n) => {
      if (n.name === primary.name || !n.up || n.fenced || n.inRecovery !== true) return false;
      if (this.pointedAt.get(n.name) === primary.name) return false;
      const upstream = this.deps.health.lastResult(n.name)?.upstream;
      if (upstream && upstream.status === 'streaming' && sameAddress(upstream, primary)) {
        this.pointedAt.set(n.name, primary.name);
        return false;
      }
      const attempt = this.repointAttempts.get(n.name);
      return attempt === undefined || attempt.primary !== primary.name || now - attempt.at >= REPOINT_RETRY_MS;
    });
  }

  /** Re-points replicas at the current primary, then settles its synchronous standby. One at a time. */
  private reconcile(): Promise<void> {
    if (this.reconciling) {
      this.reconcileAgain = true;
      return this.reconciling;
    }
    this.reconciling = (async () => {
      do {
        this.reconcileAgain = false;
        await this.reconcileOnce().catch((error: unknown) => {
          if (!this.stopped) this.logError('reconcile', { err: errorText(error) }, 're-pointing replicas failed; will retry');
        });
      } while (this.reconcileAgain && !this.stopped && !this.busy);
    })().finally(() => {
      this.reconciling = undefined;
    });
    return this.reconciling;
  }

  private async reconcileOnce(): Promise<void> {
    const topology = this.deps.topology;
    const primary = topology.primary();
    if (!primary || this.stopped) return;
    const log = this.deps.log;
    const followers = this.followersToRepoint(primary);
    const repointed: NodeStatus[] = [];
    await Promise.all(
      followers.map(async (follower) => {
        this.repointAttempts.set(follower.name, { primary: primary.name, at: Date.now() });
        try {
          const { slot, followsLatest, changed } = await this.admin.repoint(addressOf(follower), addressOf(primary));
          this.pointedAt.set(follower.name, primary.name);
          repointed.push(follower);
          if (!followsLatest) log.warn({ node: follower.name }, 'replica has recovery_target_timeline other than latest: it cannot follow the new timeline without a restart');
          log.info({ node: follower.name, primary: primary.name, slot, changed }, 'replica re-pointed at the new primary');
        } catch (error) {
          this.logError(`repoint-${follower.name}`, { node: follower.name, err: errorText(error) }, 'could not re-point replica');
        }
      }),
    );
    if (topology.primaryName !== primary.name || this.stopped || this.busy) return;
    if (repointed.length > 0) await this.waitForStreaming(primary, repointed);
    if (this.busy) return;
    if (this.syncWanted && this.syncSettledFor !== primary.name) await this.settleSynchronousStandby(primary);
  }

  /** Until the re-pointed replicas stream from the primary (bounded); those that do not are reported. */
  private async waitForStreaming(primary: NodeStatus, followers: NodeStatus[]): Promise<void> {
    const deadline = Date.now() + STREAMING_WAIT_MS;
    let waiting = followers;
    while (waiting.length > 0 && Date.now() < deadline && !this.stopped && !this.busy && this.deps.topology.primaryName === primary.name) {
      const peers = await this.admin.streamingPeers(addressOf(primary)).catch(() => []);
      const streaming = new Set(peers.filter((p) => p.state === 'streaming').map((p) => p.applicationName.toLowerCase()));
      waiting = waiting.filter((f) => !streaming.has(this.deps.health.applicationName(f.name).toLowerCase()));
      if (waiting.length > 0) await sleep(100);
    }
    if (this.stopped || this.busy || this.deps.topology.primaryName !== primary.name) return;
    for (const follower of waiting) {
      this.pointedAt.delete(follower.name);
      this.deps.log.error({ node: follower.name, primary: primary.name }, 'replica does not stream from the new primary (it may have gone past the point where the new timeline forked: rejoin it with pg_rewind)');
    }
  }

  /**
   * Gives the primary a synchronous standby once a replica streams from it: a configured standby
   * first, else the first streaming replica in config order. Never before it streams (commits
   * would wait for it).
   */
  private async settleSynchronousStandby(primary: NodeStatus): Promise<void> {
    this.settleAttemptAt = Date.now();
    const peers = (await this.admin.streamingPeers(addressOf(primary))).filter((p) => p.state === 'streaming');
    const current = parseSyncStandbyNames(await this.admin.synchronousStandbyNames(addressOf(primary)));
    if (current.method !== 'none' && peers.some((p) => listsStandby(current, p.applicationName))) {
      this.syncSettledFor = primary.name;
      return;
    }
    const streaming = new Set(peers.map((p) => p.applicationName.toLowerCase()));
    const followers = [...this.deps.topology.nodes.values()]
      .filter((n) => n.name !== primary.name && !n.fenced && streaming.has(this.deps.health.applicationName(n.name).toLowerCase()))
      .sort((a, b) => (a.configuredRole === 'standby' ? 0 : 1) - (b.configuredRole === 'standby' ? 0 : 1));
    const chosen = followers[0];
    if (!chosen) {
      this.logError('no-sync', { primary: primary.name }, 'no replica streams from the primary yet: it runs without a synchronous standby', 'warn');
      return;
    }
    const applicationName = this.deps.health.applicationName(chosen.name);
    await this.admin.setSynchronousStandbyNames(addressOf(primary), formatSyncStandbyNames([applicationName]));
    this.syncSettledFor = primary.name;
    this.deps.log.info({ primary: primary.name, standby: chosen.name }, 'new synchronous standby');
    void this.deps.health.checkNow(primary.name);
  }

  // ---------------------------------------------------------------- helpers

  /** What the plan functions need, in config order. */
  private planNodes(): PlanNode[] {
    return [...this.deps.topology.nodes.values()].map((n) => {
      const seen = this.deps.health.lastResult(n.name);
      return {
        name: n.name,
        applicationName: this.deps.health.applicationName(n.name),
        configuredRole: n.configuredRole,
        up: n.up,
        fenced: n.fenced,
        inRecovery: n.inRecovery,
        timeline: n.timeline,
        walPosition: seen?.receiveLsn !== undefined && seen.replayLsn !== undefined ? (seen.receiveLsn > seen.replayLsn ? seen.receiveLsn : seen.replayLsn) : (seen?.receiveLsn ?? seen?.replayLsn),
      };
    });
  }

  /** Logs a condition that persists at most once per ERROR_LOG_MS. */
  private logError(key: string, fields: Record<string, unknown>, message: string, level: 'warn' | 'error' = 'error'): void {
    const now = Date.now();
    const last = this.lastErrorLog.get(key);
    if (last !== undefined && now - last < ERROR_LOG_MS) return;
    this.lastErrorLog.set(key, now);
    this.deps.log[level](fields, message);
  }
}


function sameAddress(upstream: { host: string; port: number }, node: NodeStatus): boolean {
  return upstream.port === node.port && normalizeHost(upstream.host) === normalizeHost(node.host);
}

function normalizeHost(host: string): string {
  return host === 'localhost' || host === '::1' ? '127.0.0.1' : host.toLowerCase();
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
