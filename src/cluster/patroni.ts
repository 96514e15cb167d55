/**
 * `failover.mode: patroni` — pgrelay follows Patroni (with its consensus in etcd, Consul, …) for
 * the topology and never promotes anything itself, so several pgrelays in front of one cluster
 * all follow the HA engine's single answer.
 *
 * - Nodes come from Patroni's `GET /cluster` (name, host, port, role), polled every
 *   `patroni.poll_ms`; a `nodes:` entry with the same name may give a weight. Members that Patroni
 *   stops listing leave the topology (their pools close); the current primary is never dropped on
 *   a partial answer.
 * - Only Patroni's leader gets writes, and only once pgrelay's own health check sees it out of
 *   recovery (Patroni names the leader a moment before its promotion completes). While there is
 *   no such leader, `topology.primaryName` is unset and units for the primary wait
 *   (`failover.wait_ms`) as during a managed failover.
 * - A node out of recovery that is not Patroni's leader is fenced (split brain, or a former leader
 *   started by hand); it is let back when it is in recovery again (Patroni rejoined it) — reads
 *   then follow the lag monitor, which must first see it stream from the current primary.
 * - A broken data-path connection to the primary, a failed health check of the primary, or a
 *   leader that is not the primary yet switch to fast polling (FAST_POLL_MS) with immediate health
 *   checks of the named leader, so pgrelay adds little to Patroni's own failover time.
 * - Planned switchover (POST /admin/switchover on any pgrelay): pgrelay asks Patroni for a
 *   switchover *scheduled* a few seconds ahead (`POST /switchover` with `scheduled_at`). Patroni
 *   lists it in `GET /cluster` (`scheduled_switchover`), so every pgrelay following the cluster
 *   sees it: each one holds new units for the primary from HOLD_AHEAD_MS before the set time (the
 *   units already running on the leader finish meanwhile), Patroni switches over at the set time,
 *   and each pgrelay releases the held units on the new leader. Clients of all pgrelays see a
 *   pause instead of errors. Needs clocks in sync (NTP) between pgrelay and Patroni hosts.
 */
import type { Config, NodeConfig, NodeRole } from '../config/types.js';
import { ProxyError, SqlState } from '../errors.js';
import { PatroniClient, type PatroniClusterView, type PatroniMember } from './patroni-client.js';
import type { PatroniFailoverRecord, PatroniSourceDeps, PatroniSwitchoverResult } from './patroni-source-types.js';
import { HOLD_AHEAD_MS, SwitchoverHold } from './switchover-hold.js';
import type { NodeStatus } from './topology.js';

export type { HealthView, PatroniFailoverRecord, PatroniSourceDeps, PatroniSwitchoverResult } from './patroni-source-types.js';
export { HOLD_AHEAD_MS } from './switchover-hold.js';

/** Poll pace while there is no writable leader, or a leader change or a switchover is under way. */
export const FAST_POLL_MS = 100;
/** Pace and bound of the checks of a newly named leader until it is out of recovery. */
const CONFIRM_MS = 20;
const CONFIRM_MAX_MS = 3_000;
/** Timeout of one `GET /cluster`. */
const CLUSTER_TIMEOUT_MS = 2_000;
/** The same Patroni API error is logged at most this often. */
const ERROR_LOG_MS = 10_000;

export class PatroniTopologySource {
  readonly client: PatroniClient;
  /** the last answer of Patroni's REST API */
  view: PatroniClusterView | undefined;
  /** when `view` was read (Date.now()) */
  viewAt = 0;
  lastError: string | undefined;
  /** a scheduled switchover that is near, and the last one */
  private readonly holds: SwitchoverHold;
  /** the primary that was lost, and when (performance.now()), until a new one takes writes */
  private lost: { name: string; at: number; reason: string } | undefined;
  /** nodes this module fenced, with why */
  readonly fenceReasons = new Map<string, string>();
  /** polls started so far, and the number of the poll whose answer `view` is */
  private pollsStarted = 0;
  private viewSeq = 0;
  /**
   * nodes seen out of recovery while not Patroni's leader, with the number of polls started by
   * then: fenced only when a poll started after that still does not name them (a health check
   * may see a promotion before a poll shows the new leader)
   */
  private readonly suspects = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private pollAgain = false;
  private running = false;
  private readonly lastErrorLog = new Map<string, number>();
  private readonly onChecked = (): void => this.decide();

  /** the last hold, once released (performance.now() figures) */
  get lastHold(): SwitchoverHold['last'] {
    return this.holds.last;
  }

  constructor(private readonly deps: PatroniSourceDeps) {
    this.client = new PatroniClient(deps.config().patroni.endpoints);
    this.holds = new SwitchoverHold(deps.log);
  }

  /**
   * Reads Patroni once (bounded) and fills the topology with its members; the primary is set once
   * the health checker (started next) sees the leader out of recovery. Then polls.
   */
  async start(): Promise<void> {
    this.running = true;
    // the nodes: entries are hints (weights); no node takes writes before Patroni and the server agree
    this.deps.topology.setPrimary(undefined);
    this.deps.health.on('checked', this.onChecked);
    await this.poll();
    if (!this.view) this.deps.log.error({ endpoints: this.client.labels, err: this.lastError }, 'Patroni is not reachable: no primary until it answers');
  }

  stop(): void {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.deps.health.off('checked', this.onChecked);
  }

  /** Applies a reloaded config (endpoints, weights); the node list stays Patroni's. */
  reload(): void {
    this.client.configure(this.deps.config().patroni.endpoints);
    if (this.view) this.applyMembers(this.view);
    this.pollSoon();
  }

  /** The node list as Patroni last reported it, with the weights of `config.nodes` (for App.reload). */
  nodeConfigs(config: Config = this.deps.config()): NodeConfig[] {
    const members = this.view?.members ?? [];
    const primary = this.deps.topology.primaryName;
    const out: NodeConfig[] = [];
    for (const member of members) {
      const node = nodeConfigOf(member, config, primary);
      if (node) out.push(node);
    }
    // the primary stays while Patroni still lists a leader it could be (never dropped on a partial answer)
    const current = primary === undefined ? undefined : this.deps.topology.node(primary);
    if (current && !out.some((n) => n.name === current.name)) out.push({ name: current.name, host: current.host, port: current.port, role: 'primary', weight: current.weight });
    return out;
  }

  /** For GET /status: what Patroni last said and what this module does with it. */
  status(): Record<string, unknown> {
    const view = this.view;
    const scheduled = view?.scheduledSwitchover;
    return {
      endpoint: view?.endpoint ?? null,
      read_at: this.viewAt > 0 ? new Date(this.viewAt).toISOString() : null,
      error: this.lastError ?? null,
      leader: view?.leader ?? null,
      paused: view?.paused ?? false,
      members: (view?.members ?? []).map((m) => ({ name: m.name, role: m.role, state: m.state, timeline: m.timeline ?? null, lag_bytes: m.lagBytes ?? null })),
      scheduled_switchover: scheduled ? { at: new Date(scheduled.atMs).toISOString(), from: scheduled.from ?? null, to: scheduled.to ?? null } : null,
      holding_units_for_switchover: this.holds.current !== undefined,
      fenced: Object.fromEntries(this.fenceReasons),
    };
  }

  /** A data-path connection to `node` broke: if it is the primary, ask Patroni at once. */
  nodeBroken(node: string): void {
    if (!this.running || node !== this.deps.topology.primaryName) return;
    this.pollSoon();
  }

  /**
   * Planned switchover through Patroni (POST /admin/switchover): schedules it a little ahead so
   * that every pgrelay following the cluster holds its units for the primary (see the file
   * comment), then waits until the new leader takes writes here.
   */
  async switchover(target: string | undefined): Promise<PatroniSwitchoverResult> {
    const { topology, log } = this.deps;
    const config = this.deps.config();
    const startedAt = performance.now();
    const seq = ++this.pollsStarted;
    const view = await this.readCluster();
    this.viewSeq = seq;
    this.applyView(view);
    const leader = view.leader;
    if (view.scheduledSwitchover) throw new ProxyError(SqlState.cannotConnectNow, `a switchover is already scheduled for ${new Date(view.scheduledSwitchover.atMs).toISOString()}`);
    if (!leader || topology.primaryName !== leader || !topology.primary()) {
      throw new ProxyError(SqlState.cannotConnectNow, `no primary to switch over from (Patroni's leader: ${leader ?? 'none'}, pgrelay's primary: ${topology.primaryName ?? 'none'})`);
    }
    if (view.paused) throw new ProxyError(SqlState.cannotConnectNow, 'Patroni is paused (maintenance mode): resume it before a switchover');
    let candidate = target;
    if (target !== undefined) {
      if (target === leader) throw new ProxyError(SqlState.invalidParameterValue, `${target} is already the primary`);
      if (!view.members.some((m) => m.name === target)) throw new ProxyError(SqlState.invalidParameterValue, `Patroni has no member named "${target}"`);
    } else {
      candidate = view.syncStandbys[0] ?? view.members.find((m) => m.name !== leader && isRunning(m))?.name;
      if (candidate === undefined) throw new ProxyError(SqlState.cannotConnectNow, 'no switchover candidate: Patroni lists no other running member');
    }
    // every pgrelay polling at poll_ms sees the schedule before its hold begins
    const leadMs = HOLD_AHEAD_MS + 2 * config.patroni.poll_ms + 1000;
    const scheduledAt = new Date(Date.now() + leadMs);
    const leaderMember = view.members.find((m) => m.name === leader);
    const reason = target ? `switchover to ${candidate} requested` : `switchover to ${candidate}${view.syncStandbys.includes(candidate!) ? ', the synchronous standby' : ''}`;
    let answer: string;
    try {
      answer = await this.client.switchover(leader, candidate, scheduledAt, leaderMember?.apiUrl, 10_000);
    } catch (error) {
      log.error({ from: leader, to: candidate, err: describe(error) }, 'Patroni did not take the switchover');
      throw new ProxyError(SqlState.cannotConnectNow, describe(error), { cause: error });
    }
    log.warn({ from: leader, to: candidate, at: scheduledAt.toISOString(), answer }, 'switchover scheduled with Patroni: units for the primary are held from shortly before');
    this.pollSoon();
    const waitMs = leadMs + Math.max(config.failover.wait_ms, 30_000);
    const moved = await waitUntil(waitMs, () => topology.primaryName !== undefined && topology.primaryName !== leader && topology.primary() !== undefined);
    if (!moved) throw new ProxyError(SqlState.cannotConnectNow, `the switchover scheduled for ${scheduledAt.toISOString()} did not give a new writable leader within ${waitMs} ms`);
    const to = topology.primaryName!;
    const pausedMs = this.holds.last ? this.holds.last.releasedAt - this.holds.last.startedAt : 0;
    return {
      from: leader,
      to,
      timeline: topology.node(to)?.timeline ?? 0,
      finalLsn: '',
      scheduledAt: scheduledAt.toISOString(),
      pausedMs,
      durationMs: performance.now() - startedAt,
      reason,
      patroni: answer,
    };
  }

  // ---------------------------------------------------------------- polling

  /** Polls now (coalesced with a poll under way), then goes on at the right pace. */
  private pollSoon(): void {
    if (!this.running) return;
    void this.poll();
  }

  private poll(): Promise<void> {
    if (this.polling) {
      this.pollAgain = true;
      return this.polling;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.polling = (async () => {
      do {
        this.pollAgain = false;
        await this.pollOnce();
      } while (this.pollAgain && this.running);
    })().finally(() => {
      this.polling = undefined;
      this.schedule();
    });
    return this.polling;
  }

  private async pollOnce(): Promise<void> {
    let view: PatroniClusterView;
    const seq = ++this.pollsStarted;
    try {
      view = await this.readCluster();
    } catch (error) {
      this.lastError = describe(error);
      this.logError('api', { err: this.lastError }, 'cannot read the topology from Patroni; keeping the last one');
      this.decide();
      return;
    }
    if (!this.running || seq < this.viewSeq) return; // an answer older than the one applied
    if (this.lastError !== undefined && this.view) this.deps.log.info({ endpoint: view.endpoint }, 'Patroni answers again');
    this.lastError = undefined;
    this.viewSeq = seq;
    this.applyView(view);
    // Patroni names a leader that does not take writes here yet (its promotion runs): check it
    // every CONFIRM_MS rather than at the next poll or health check, so writes resume right after
    const leader = view.leader;
    const deadline = performance.now() + CONFIRM_MAX_MS;
    while (this.running && leader !== undefined && this.view?.leader === leader && leader !== this.deps.topology.primaryName && this.holds.current?.from !== leader && this.deps.topology.node(leader)?.up !== false) {
      await this.deps.health.checkNow(leader);
      if (performance.now() > deadline || this.deps.topology.primaryName === leader) break;
      await new Promise((resolve) => setTimeout(resolve, CONFIRM_MS));
    }
  }

  private readCluster(): Promise<PatroniClusterView> {
    return this.client.cluster(Math.min(CLUSTER_TIMEOUT_MS, Math.max(500, this.deps.config().patroni.poll_ms)));
  }

  private schedule(): void {
    if (!this.running) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.poll();
    }, this.settled() ? this.deps.config().patroni.poll_ms : FAST_POLL_MS);
    this.timer.unref?.();
  }

  /** Nothing is changing: Patroni's leader is pgrelay's primary and takes writes. */
  private settled(): boolean {
    const { topology } = this.deps;
    return !this.holds.current && !this.view?.scheduledSwitchover && this.view?.leader !== undefined && topology.primaryName === this.view.leader && topology.primary() !== undefined;
  }

  // ---------------------------------------------------------------- applying Patroni's view

  private applyView(view: PatroniClusterView): void {
    const previous = this.view;
    this.view = view;
    this.viewAt = Date.now();
    if (previous?.leader !== view.leader) this.deps.log.info({ leader: view.leader ?? null, was: previous?.leader ?? null, endpoint: view.endpoint }, 'Patroni leader');
    this.applyMembers(view);
    this.decide();
  }

  /** Brings the topology's node list (and the pools' addresses) in line with Patroni's members. */
  private applyMembers(view: PatroniClusterView): void {
    const { topology, pools } = this.deps;
    if (view.members.length === 0) return; // an empty answer is not a cluster without nodes
    const before = new Map([...topology.nodes.values()].map((n) => [n.name, `${n.host}:${n.port}`]));
    const nodes = this.nodeConfigs();
    const listed = new Set(nodes.map((n) => n.name));
    const changed = nodes.length !== before.size || nodes.some((n) => before.get(n.name) !== `${n.host}:${n.port}`);
    const fresh = nodes.filter((n) => !before.has(n.name)).map((n) => n.name);
    for (const node of nodes) pools.upsertNode(node);
    for (const name of before.keys()) if (!listed.has(name)) pools.closeNode(name);
    topology.configure(nodes);
    for (const name of fresh) {
      // nothing about a new node is known: no reads before the lag monitor has measured it
      const status = topology.node(name)!;
      status.fresh = false;
      status.replicating = false;
      status.staleReason = 'discovered from Patroni: lag not measured yet';
      status.inRecovery = undefined;
    }
    for (const member of view.members) {
      const status = topology.node(member.name);
      if (status && member.timeline !== undefined && status.timeline === undefined) status.timeline = member.timeline;
    }
    if (changed) {
      const removed = [...before.keys()].filter((name) => !listed.has(name));
      this.deps.log.info({ nodes: nodes.map((n) => `${n.name}@${n.host}:${n.port}`), added: fresh, removed }, 'nodes from Patroni');
      for (const name of removed) this.fenceReasons.delete(name);
      this.deps.health.reload();
      this.deps.nodesChanged?.();
    }
  }

  /**
   * The primary and the fenced nodes from Patroni's view and the health checks:
   * - primary: Patroni's leader, when it is up and out of recovery (and not being switched away from);
   * - fenced: any other node out of recovery; unfenced once in recovery again.
   */
  private decide(): void {
    const { topology, log } = this.deps;
    const leader = this.view?.leader;
    this.holds.update(leader, this.view?.scheduledSwitchover);
    let changed = false;
    for (const node of topology.nodes.values()) {
      if (node.name === leader || node.inRecovery !== false) this.suspects.delete(node.name);
      if (node.name === leader) {
        if (this.fenceReasons.delete(node.name) && node.fenced) {
          node.fenced = false;
          changed = true;
        }
        continue;
      }
      if (node.up && node.inRecovery === false && !node.fenced && !this.confirmedSuspect(node.name)) continue;
      if (node.up && node.inRecovery === false && !node.fenced) {
        const reason = `out of recovery but Patroni's leader is ${leader ?? 'none'}`;
        node.fenced = true;
        this.fenceReasons.set(node.name, reason);
        this.deps.pools.closeNode(node.name);
        log.warn({ node: node.name, reason }, 'node fenced: it gets no reads or writes while it is out of recovery and not the leader');
        changed = true;
      } else if (node.fenced && node.inRecovery === true && this.fenceReasons.has(node.name)) {
        node.fenced = false;
        this.fenceReasons.delete(node.name);
        log.info({ node: node.name }, 'node is in recovery again (rejoined by Patroni): reads once the lag monitor finds it fresh');
        changed = true;
      }
    }
    const candidate = leader === undefined || this.holds.current?.from === leader ? undefined : topology.node(leader);
    const next = candidate && candidate.up && !candidate.fenced && candidate.inRecovery === false ? candidate.name : undefined;
    const current = topology.primaryName;
    if (next !== current) {
      if (next === undefined) {
        if (current !== undefined) {
          const why = this.holds.current ? `switchover from ${current}` : !leader ? 'Patroni names no leader' : leader !== current ? `Patroni's leader is now ${leader}` : `${current} does not take writes (${this.whyNot(topology.node(current))})`;
          this.lost ??= { name: current, at: this.holds.current?.startedAt ?? performance.now(), reason: why };
          log.warn({ primary: current, reason: why }, 'no primary: units for the primary wait for Patroni\'s next leader');
        }
        topology.setPrimary(undefined);
      } else {
        topology.setPrimary(next);
        this.primaryFound(next, current);
      }
      changed = false; // setPrimary told the topology
    }
    if (changed) topology.changed();
  }


  /** Whether a poll started after the node was first seen out of recovery still does not name it leader. */
  private confirmedSuspect(name: string): boolean {
    const since = this.suspects.get(name);
    if (since === undefined) {
      this.suspects.set(name, this.pollsStarted);
      this.pollSoon();
      return false;
    }
    if (this.viewSeq > since) {
      this.suspects.delete(name);
      return true;
    }
    return false;
  }

  private primaryFound(name: string, current: string | undefined): void {
    const { log, metrics } = this.deps;
    const lost = this.lost;
    this.lost = undefined;
    const hold = this.holds.release();
    const from = lost?.name ?? current;
    if (from === undefined) {
      log.info({ primary: name }, 'primary: Patroni\'s leader');
      return;
    }
    if (from === name) {
      log.info({ primary: name }, 'the primary takes writes again');
      return;
    }
    const durationMs = lost ? performance.now() - lost.at : 0;
    this.deps.pools.closeNode(from);
    const record: PatroniFailoverRecord = {
      kind: hold ? 'switchover' : 'follow',
      from,
      to: name,
      at: new Date().toISOString(),
      durationMs,
      detectMs: undefined,
      timeline: this.deps.topology.node(name)?.timeline,
      reason: hold ? `switchover through Patroni from ${from}, scheduled for ${new Date(hold.atMs).toISOString()}` : `Patroni's new leader (${lost?.reason ?? 'leader changed'})`,
      dataLoss: false,
    };
    metrics.failovers.inc();
    metrics.failoverDuration.set(durationMs / 1000);
    this.deps.primaryMoved?.(record);
    log.warn({ ...record, durationMs: Math.round(durationMs) }, `${record.kind}: writes go to ${name}`);
  }

  private whyNot(node: NodeStatus | undefined): string {
    if (!node) return 'not listed';
    if (!node.up) return `down${node.lastError ? `: ${node.lastError}` : ''}`;
    if (node.fenced) return 'fenced';
    if (node.inRecovery !== false) return 'in recovery';
    return 'unknown';
  }

  private logError(key: string, fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    const last = this.lastErrorLog.get(key);
    if (last !== undefined && now - last < ERROR_LOG_MS) return;
    this.lastErrorLog.set(key, now);
    this.deps.log.warn(fields, message);
  }
}

/** A member as a node: Patroni's address, the configured weight, leader = primary only when it is pgrelay's primary. */
export function nodeConfigOf(member: PatroniMember, config: Config, primary: string | undefined): NodeConfig | undefined {
  if (member.host === undefined || member.port === undefined) return undefined;
  const hint = config.nodes.find((n) => n.name === member.name);
  const role: NodeRole = member.name === primary ? 'primary' : member.role === 'sync_standby' || member.role === 'leader' ? 'standby' : 'replica';
  return { name: member.name, host: member.host, port: member.port, role, weight: hint?.weight ?? 1 };
}

function isRunning(member: PatroniMember): boolean {
  return member.state === 'running' || member.state === 'streaming';
}

async function waitUntil(timeoutMs: number, done: () => boolean): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
