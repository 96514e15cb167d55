import { EventEmitter } from 'node:events';
import { loadServerTls } from '../auth/server-tls.js';
import type { Config, NodeRole } from '../config/types.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Logger } from '../util/log.js';
import { HealthProbe, type NodeLogin, type ProbeResult } from './health-probe.js';
import type { NodeStatus, Topology } from './topology.js';

/** Re-check pace after a data-path connection to the node broke, until the node is decided. */
export const FAST_CHECK_MS = 100;

export interface HealthCheckerDeps {
  topology: Topology;
  metrics: Metrics;
  log: Logger;
  config: () => Config;
}

/** A node's health as the checker tracks it. */
interface NodeHealth {
  readonly name: string;
  probe: HealthProbe;
  /** failed checks in a row */
  failures: number;
  /** when the first failure of the current run happened (performance.now()) */
  firstFailureAt: number | undefined;
  /** a check is running */
  running: Promise<ProbeResult | undefined> | undefined;
  timer: NodeJS.Timeout | undefined;
  /** re-check every FAST_CHECK_MS until the node is decided (a check passes, or it is down) */
  fast: boolean;
  /** no check has passed yet: a first failure marks the node down at once */
  seen: boolean;
  last: ProbeResult | undefined;
  /** the application_name it was last seen streaming under */
  applicationName: string | undefined;
  /** told once the fast re-checks have decided (see whenDecided) */
  waiters: (() => void)[];
}

export interface NodeDownEvent {
  node: string;
  /** performance.now() when the first of the failed checks began and when the node was marked down */
  firstFailureAt: number;
  downAt: number;
  error: string;
}

/**
 * Checks every node with a real query over its own connection, every `health.interval_ms`
 * (start to start), each check bounded by `health.timeout_ms`; `health.failures` failures in a row
 * mark a node down, one passing check marks it up. A broken data-path connection
 * (`nodeBroken`) starts a check at once and re-checks every FAST_CHECK_MS until the node is
 * decided, so a killed server is found in a few hundred milliseconds, while a silent one
 * (connections hang) is found by the timeout.
 *
 * Sets on NodeStatus: up, inRecovery, timeline, role, lastError. Events: 'checked'
 * (name, ProbeResult | undefined) after every check, 'down' (NodeDownEvent), 'up' (name).
 */
export class HealthChecker extends EventEmitter {
  private readonly nodes = new Map<string, NodeHealth>();
  private running = false;

  constructor(private readonly deps: HealthCheckerDeps) {
    super();
  }

  /** Checks every node once (bounded by the timeout), then keeps checking on the interval. */
  async start(): Promise<void> {
    this.running = true;
    await Promise.all(this.syncNodes().map((h) => this.runCheck(h)));
  }

  stop(): void {
    this.running = false;
    for (const health of this.nodes.values()) {
      clearTimeout(health.timer);
      health.probe.close();
      this.settle(health);
    }
    this.nodes.clear();
  }

  /** Nodes or credentials changed (config reload). */
  reload(): void {
    if (!this.running) return;
    for (const health of this.syncNodes()) void this.runCheck(health);
  }

  /** A data-path connection to the node broke or could not be opened: look at it now. */
  nodeBroken(name: string, error: Error | undefined): void {
    const health = this.nodes.get(name);
    const node = this.deps.topology.node(name);
    if (!health || !node || !this.running || !node.up || health.fast) return;
    this.deps.log.info({ node: name, err: error?.message }, 'a connection to the node broke: checking it now');
    health.fast = true;
    if (!health.running) {
      clearTimeout(health.timer);
      void this.runCheck(health);
    }
  }

  /**
   * Calls back once the node is decided: at once when it is not being re-checked after a broken
   * connection, else when a check passes or the node is marked down (at most `failures` checks).
   * Sessions whose connect failed wait on this before routing their unit again.
   */
  whenDecided(name: string, callback: () => void): void {
    const health = this.nodes.get(name);
    if (!health || !health.fast || !this.running) callback();
    else health.waiters.push(callback);
  }

  /** Runs a check now (or joins the one running) and returns its result; undefined = failed. */
  checkNow(name: string): Promise<ProbeResult | undefined> {
    const health = this.nodes.get(name);
    if (!health) return Promise.resolve(undefined);
    if (health.running) return health.running;
    clearTimeout(health.timer);
    return this.runCheck(health);
  }

  /** The last passing check of a node (may be old when the node is down). */
  lastResult(name: string): ProbeResult | undefined {
    return this.nodes.get(name)?.last;
  }

  /** Failed checks in a row (0 after a passing one). */
  consecutiveFailures(name: string): number {
    return this.nodes.get(name)?.failures ?? 0;
  }

  /** The application_name the node streams under, as last seen (its name when never seen). */
  applicationName(name: string): string {
    return this.nodes.get(name)?.applicationName ?? name;
  }

  /** Follows the topology's node list; returns the nodes that are new. */
  private syncNodes(): NodeHealth[] {
    const added: NodeHealth[] = [];
    const config = this.deps.config();
    const login = healthLogin(config);
    for (const [name, health] of this.nodes) {
      if (!this.deps.topology.node(name)) {
        clearTimeout(health.timer);
        health.probe.close();
        this.nodes.delete(name);
        this.settle(health);
      }
    }
    for (const node of this.deps.topology.nodes.values()) {
      const nodeLogin = { ...login, host: node.host, port: node.port };
      const known = this.nodes.get(node.name);
      if (known) {
        known.probe.setLogin(nodeLogin);
        continue;
      }
      const health: NodeHealth = {
        name: node.name,
        probe: new HealthProbe(nodeLogin, (error) => this.nodeBroken(node.name, error)),
        failures: 0,
        firstFailureAt: undefined,
        running: undefined,
        timer: undefined,
        fast: false,
        seen: false,
        last: undefined,
        applicationName: undefined,
        waiters: [],
      };
      this.nodes.set(node.name, health);
      added.push(health);
    }
    return added;
  }

  private runCheck(health: NodeHealth): Promise<ProbeResult | undefined> {
    const config = this.deps.config();
    const startedAt = performance.now();
    const run = health.probe.check(config.health.timeout_ms).then(
      (result) => {
        this.passed(health, result);
        return result;
      },
      (error: unknown) => {
        this.failed(health, startedAt, error instanceof Error ? error.message : String(error));
        return undefined;
      },
    );
    health.running = run;
    void run.finally(() => {
      if (health.running === run) health.running = undefined;
      this.schedule(health, startedAt);
    });
    return run;
  }

  private schedule(health: NodeHealth, startedAt: number): void {
    if (!this.running || this.nodes.get(health.name) !== health) return;
    clearTimeout(health.timer);
    const interval = this.deps.config().health.interval_ms;
    const delay = health.fast ? FAST_CHECK_MS : Math.max(0, startedAt + interval - performance.now());
    health.timer = setTimeout(() => {
      health.timer = undefined;
      if (!health.running) void this.runCheck(health);
    }, delay);
    health.timer.unref?.();
  }

  private passed(health: NodeHealth, result: ProbeResult): void {
    const node = this.deps.topology.node(health.name);
    health.failures = 0;
    health.firstFailureAt = undefined;
    health.fast = false;
    health.seen = true;
    health.last = result;
    if (result.applicationName) health.applicationName = result.applicationName;
    if (!node) return;
    let changed = false;
    const cameUp = !node.up;
    if (cameUp) {
      node.up = true;
      changed = true;
      this.deps.log.info({ node: node.name, inRecovery: result.inRecovery, timeline: result.timeline }, 'node is up');
    }
    node.lastError = undefined;
    if (node.inRecovery !== result.inRecovery || node.timeline !== result.timeline) {
      node.inRecovery = result.inRecovery;
      node.timeline = result.timeline;
      changed = true;
    }
    const role = this.roleOf(node, result);
    if (node.role !== role) {
      node.role = role;
      changed = true;
    }
    this.setUpGauge(node);
    if (changed) this.deps.topology.changed();
    this.emit('checked', health.name, result);
    if (cameUp) this.emit('up', health.name);
    this.settle(health);
  }

  private failed(health: NodeHealth, startedAt: number, message: string): void {
    const node = this.deps.topology.node(health.name);
    health.failures++;
    health.firstFailureAt ??= startedAt;
    if (!node) {
      health.fast = false;
      this.settle(health);
      return;
    }
    node.lastError = message;
    const threshold = health.seen ? this.deps.config().health.failures : 1;
    if (node.up && health.failures >= threshold) {
      node.up = false;
      health.fast = false;
      const event: NodeDownEvent = { node: node.name, firstFailureAt: health.firstFailureAt, downAt: performance.now(), error: message };
      this.deps.log.warn({ node: node.name, failures: health.failures, err: message, detectMs: Math.round(event.downAt - event.firstFailureAt) }, 'node is down');
      this.setUpGauge(node);
      this.deps.topology.changed();
      this.emit('checked', health.name, undefined);
      this.emit('down', event);
      this.settle(health);
      return;
    }
    if (!node.up) health.fast = false;
    else this.deps.log.debug({ node: node.name, failures: health.failures, err: message }, 'health check failed');
    this.emit('checked', health.name, undefined);
    if (!health.fast) this.settle(health);
  }

  /** The node is decided: whoever waited for it routes again. */
  private settle(health: NodeHealth): void {
    if (health.waiters.length === 0) return;
    const waiters = health.waiters;
    health.waiters = [];
    for (const waiter of waiters) waiter();
  }

  /**
   * Role as the server reports it: out of recovery = primary; in recovery = standby when the
   * current primary lists it as synchronous, else its configured role (a configured primary in
   * recovery is a replica).
   */
  private roleOf(node: NodeStatus, result: ProbeResult): NodeRole {
    if (!result.inRecovery) return 'primary';
    const primaryName = this.deps.topology.primaryName;
    const primaryView = primaryName === undefined || primaryName === node.name ? undefined : this.nodes.get(primaryName)?.last;
    if (primaryView && !primaryView.inRecovery) {
      const app = (result.applicationName ?? node.name).toLowerCase();
      const peer = primaryView.peers.find((p) => p.applicationName.toLowerCase() === app);
      if (peer && (peer.syncState === 'sync' || peer.syncState === 'quorum')) return 'standby';
      if (peer) return node.configuredRole === 'standby' && primaryView.synchronousStandbyNames !== '' ? 'standby' : 'replica';
    }
    return node.configuredRole === 'primary' ? 'replica' : node.configuredRole;
  }

  private setUpGauge(node: NodeStatus): void {
    for (const role of ['primary', 'standby', 'replica'] as const) {
      if (role !== node.role) this.deps.metrics.nodeUp.remove(node.name, role);
    }
    this.deps.metrics.nodeUp.labels(node.name, node.role).set(node.up ? 1 : 0);
  }
}

/** The role health checks log in as: health.user/password, else the first user's server credentials. */
export function healthLogin(config: Config): Omit<NodeLogin, 'host' | 'port'> {
  const first = config.users[0];
  const user = config.health.user ?? first?.server_user ?? first?.name ?? 'postgres';
  const password = config.health.password ?? (config.health.user === undefined ? (first?.server_password ?? first?.password) : undefined) ?? '';
  return { user, password, database: 'postgres', tls: loadServerTls(config), requireAuth: new Set(config.server_auth.require_auth) };
}

/** The superuser failover acts as: failover.user/password, else health's credentials. */
export function failoverLogin(config: Config): Omit<NodeLogin, 'host' | 'port'> {
  if (config.failover.user === undefined) return healthLogin(config);
  return { user: config.failover.user, password: config.failover.password ?? '', database: 'postgres', tls: loadServerTls(config), requireAuth: new Set(config.server_auth.require_auth) };
}

