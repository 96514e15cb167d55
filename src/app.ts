import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { AdminApp, WorkersView } from './admin/admin-app.js';
import { AdminServer } from './admin/admin-server.js';
import { registerAdminRoutes } from './admin/routes.js';
import { AuthQuery } from './auth/auth-query.js';
import { UserDirectory } from './auth/user-directory.js';
import { Classifier } from './classify/classifier.js';
import { Failover } from './cluster/failover.js';
import { HealthChecker } from './cluster/health-checker.js';
import { RemoteApply } from './cluster/remote-apply.js';
import type { ProbeResult } from './cluster/health-probe.js';
import { LagMonitor } from './cluster/lag-monitor.js';
import { PatroniTopologySource } from './cluster/patroni.js';
import { Preflight } from './cluster/preflight.js';
import { Topology } from './cluster/topology.js';
import type { Config } from './config/types.js';
import { Frontend } from './frontend/frontend.js';
import { StatementRegistry } from './frontend/prepared-statements.js';
import { PrimaryWaiters } from './frontend/primary-waiters.js';
import type { AppServices } from './frontend/session-services.js';
import { REROUTED_CONFLICT, REROUTED_READONLY, REROUTED_SERIALIZABLE, unitReason } from './metrics/unit-reason.js';
import { Metrics } from './metrics/metrics.js';
import { PoolSet } from './pool/pool-set.js';
import { Freshness, type WriteLsnSource } from './routing/freshness.js';
import { LagPolicy, lagLimits } from './routing/lag-policy.js';
import { Router } from './routing/router.js';
import { VolatilityLoader } from './routing/volatility.js';
import { monitorCredentials } from './cluster/credentials.js';
import { silentLogger, type Logger } from './util/log.js';

export interface AppOptions {
  log?: Logger;
  /** collect process metrics (off in tests that start many apps in one process) */
  processMetrics?: boolean;
  /** the file the config came from: SIGHUP and POST /admin/reload re-read it */
  configPath?: string;
  /**
   * `workers: N` (src/workers/): `leader` runs everything but the client listener (health, lag,
   * failover, Patroni, admin, preflight); a worker passes `follower` and runs only the data path,
   * following the leader's topology.
   */
  role?: 'single' | 'leader';
  follower?: ClusterFollower;
}

/** Waits of reads for a replica past their client's last write (FenceSampler, or the leader's over IPC). */
export interface FenceWaits {
  wait(ready: () => boolean, timeoutMs: number, done: (ready: boolean) => void): void;
  progress(): void;
}

/** A worker process's line to the leader: what the cluster-side parts do in one process. */
export interface ClusterFollower {
  /** read-your-writes: a primary WAL position sampled after a write */
  readonly writes: WriteLsnSource;
  readonly fences: FenceWaits;
  nodeBroken(node: string, error: Error | undefined): void;
  whenDecided(node: string, callback: () => void): void;
  /** BackendKeyData process ids that say which worker a session is on, and cancels for another worker's */
  readonly backendKeys: { next(taken: (processId: number) => boolean): number; cancelElsewhere(processId: number, secretKey: number): void };
  /** called once the App is built, before it listens: the leader's topology is applied from here on */
  attach(app: App): void;
}

/**
 * The composition root: builds every part from a Config, starts them in order (pools and cluster
 * view before the listener), stops them in reverse order.
 */
export class App implements AdminApp {
  readonly metrics: Metrics;
  readonly topology: Topology;
  readonly router: Router;
  /** routing.max_lag_ms / max_lag_bytes: the lag monitor reports to it, the router reads its verdicts */
  readonly lagPolicy: LagPolicy;
  readonly pools: PoolSet;
  readonly users: UserDirectory;
  private readonly authQuery: AuthQuery;
  readonly frontend: Frontend;
  /** units for the primary wait here during a failover (failover.wait_ms) */
  readonly primaryWaiters: PrimaryWaiters;
  readonly admin: AdminServer;
  readonly health: HealthChecker;
  readonly failover: Failover;
  readonly lagMonitor: LagMonitor;
  /** what the monitor and failover roles may do (capabilities in /status, /health, pgrelay_capability) */
  readonly preflight: Preflight;
  /** failover.mode patroni: the topology comes from Patroni's REST API */
  readonly patroni: PatroniTopologySource | undefined;
  readonly freshness: Freshness;
  /** the remote_apply shortcut: the synchronous standby serves reads right after a write */
  readonly remoteApply: RemoteApply;
  readonly volatility: VolatilityLoader;
  readonly log: Logger;
  private secureContext: tls.SecureContext | undefined;
  listenAddress: AddressInfo | undefined;
  adminAddress: AddressInfo | undefined;
  private stopped = false;
  readonly configPath: string | undefined;
  readonly startedAt = Date.now();
  readonly role: 'single' | 'leader' | 'worker';
  /** a worker's line to the leader */
  private readonly follower: ClusterFollower | undefined;
  /** read-your-writes waits: the lag monitor's sampler, or the leader's through `follower` */
  readonly fences: FenceWaits;
  /** leader: server connections the workers have busy on a node; stops the workers; tells them a reload */
  workers: (WorkersView & { busy(node: string): number; stop(graceMs: number): Promise<void>; reloaded(next: Config): void }) | undefined;

  private constructor(
    private config: Config,
    readonly classifier: Classifier,
    options: AppOptions,
  ) {
    this.log = options.log ?? silentLogger;
    this.configPath = options.configPath;
    this.follower = options.follower;
    this.role = options.follower ? 'worker' : (options.role ?? 'single');
    this.metrics = new Metrics({ processMetrics: options.processMetrics ?? true });
    this.topology = new Topology(config.nodes);
    this.lagPolicy = new LagPolicy(lagLimits(config.routing));
    this.router = new Router(this.topology, routerOptions(config), this.lagPolicy);
    this.pools = new PoolSet(config);
    this.users = new UserDirectory(config.users);
    this.pools.passThroughKeys = (user) => this.users.clientKeys(user);
    this.authQuery = new AuthQuery(() => this.config, () => this.topology.primary());
    this.pools.lookedUpUser = (user) => this.users.lookedUp(user);
    this.users.setLookup(this.lookupOf(config));
    this.secureContext = loadTls(config);
    this.health = new HealthChecker({ topology: this.topology, metrics: this.metrics, log: this.log, config: () => this.config });
    this.failover = new Failover({ topology: this.topology, health: this.health, pools: this.pools, metrics: this.metrics, log: this.log, config: () => this.config, busyElsewhere: (node) => this.workers?.busy(node) ?? 0 });
    this.pools.onNodeBroken = (node, error) => (this.follower ? this.follower.nodeBroken(node, error) : this.health.nodeBroken(node, error));
    // a replica (or standby) marked down: its server connections are given up, so that units in
    // flight there fail with 08006 instead of waiting forever on a silent node (SIGSTOP, network
    // partition); the primary's are closed by failover when it takes over
    this.health.on('down', (event: { node: string }) => {
      if (event.node !== this.topology.primaryName) this.pools.closeNode(event.node);
    });
    this.preflight = new Preflight({ topology: this.topology, metrics: this.metrics, log: this.log, config: () => this.config });
    this.health.on('up', (name: string) => this.preflight.nodeUp(name));
    this.health.on('checked', (name: string, result: ProbeResult | undefined) => {
      if (result && !result.inRecovery && name === this.topology.primaryName) this.preflight.primarySeen(name, result.synchronousStandbyNames);
    });
    this.lagMonitor = new LagMonitor({ topology: this.topology, metrics: this.metrics, log: this.log, config: () => this.config, lagPolicy: this.lagPolicy });
    this.remoteApply = new RemoteApply({ topology: this.topology, log: this.log, config: () => this.config, applicationName: (node) => this.health.applicationName(node) });
    // a worker runs no health checks: its shortcut follows the leader's findings (workers/follower.ts)
    this.health.on('checked', (name: string, result: ProbeResult | undefined) => result && this.remoteApply.primaryChecked(name, result));
    this.freshness = new Freshness(this.follower?.writes ?? this.lagMonitor, config.routing.consistency, this.remoteApply, () => this.router.anyReplicaServes());
    this.fences = this.follower?.fences ?? this.lagMonitor.fences;
    this.patroni =
      config.failover.mode === 'patroni'
        ? new PatroniTopologySource({ topology: this.topology, pools: this.pools, health: this.health, metrics: this.metrics, log: this.log, config: () => this.config, nodesChanged: () => this.lagMonitor.configure(), primaryMoved: (record) => (this.failover.lastFailover = record) })
        : undefined;
    this.primaryWaiters = new PrimaryWaiters(this.topology, () => this.config.failover.wait_ms);
    this.frontend = new Frontend({ services: this.sessionServices(), users: this.users, tls: () => this.secureContext, backendKeys: this.follower?.backendKeys });
    this.volatility = new VolatilityLoader(this.topology, this.classifier, () => monitorCredentials(this.config), config.routing.volatility_refresh_ms, this.log);
    this.admin = new AdminServer(this.log, () => this.config.admin);
    registerAdminRoutes(this.admin, this);
  }

  /** The one object every client session uses: routing view, freshness, failover waits, metrics. */
  private sessionServices(): AppServices {
    const metrics = this.metrics;
    return {
      config: () => this.config,
      pools: this.pools,
      router: this.router,
      topology: this.topology,
      classifier: this.classifier,
      statements: new StatementRegistry(() => this.config.pool.max_statement_registry_bytes),
      metrics,
      log: this.log,
      readConstraints: (session, classification) => this.freshness.readConstraints(session, classification),
      wroteOnPrimary: (session) => this.freshness.wroteOnPrimary(session),
      lastWritePosition: (session, done) => this.freshness.lastWritePosition(session, done),
      syncCommitTouched: (session, sticky) => this.remoteApply.touched(session, sticky),
      waitForPrimary: (callback) => this.primaryWaiters.wait(callback),
      waitForFence: (session, classification, callback) => {
        const waitMs = this.config.routing.fence_wait_ms;
        if (waitMs <= 0) return false;
        const ready = () => this.router.readCandidates(this.freshness.readConstraints(session, classification)).length > 0;
        this.fences.wait(ready, waitMs, (replica) => {
          metrics.fenceWaits.labels(replica ? 'replica' : 'primary').inc();
          callback();
        });
        return true;
      },
      nodeBroken: (node, error) => {
        if (this.follower) return this.follower.nodeBroken(node, error);
        this.health.nodeBroken(node, error);
        this.patroni?.nodeBroken(node);
      },
      whenNodeDecided: (node, callback) => (this.follower ?? this.health).whenDecided(node, () => queueMicrotask(callback)),
      countUnit: (node, route, classification) => {
        // a read run again on the primary after a replica refused it asked for a replica
        metrics.countUnit(node.name, route === REROUTED_READONLY || route === REROUTED_SERIALIZABLE || route === REROUTED_CONFLICT ? 'replica' : route);
        metrics.countUnitReason(node.role, unitReason(route, classification));
      },
    };
  }

  static async start(config: Config, options: AppOptions = {}): Promise<App> {
    const classifier = await Classifier.create({ functions: config.routing.functions });
    const app = new App(config, classifier, options);
    if (app.follower) return app.startWorker();
    try {
      // patroni mode: the nodes come from Patroni's REST API first
      await app.patroni?.start();
      // the servers' own view (recovery state, timeline) before anything routes on it
      await app.health.start();
      app.failover.start();
      // what the roles may do, logged before the ready line (a node that does not answer is checked when it comes up)
      await app.preflight.start();
      // the leader serves no client: the workers classify
      if (app.role !== 'leader') await app.volatility.start();
      await app.lagMonitor.start();
      app.adminAddress = await app.admin.listen(config.admin.host, config.admin.port, config.admin.cert && config.admin.key ? { cert: config.admin.cert, key: config.admin.key } : undefined);
      if (app.role !== 'leader') app.listenAddress = await app.frontend.listen(config.listen.host, config.listen.port);
    } catch (error) {
      await app.stop();
      throw error;
    }
    const listen = app.listenAddress ? `${app.listenAddress.address}:${app.listenAddress.port}` : 'in the workers';
    app.log.info({ listen, admin: `${app.adminAddress.address}:${app.adminAddress.port}` }, 'pgrelay listening');
    return app;
  }

  /** A worker: the leader's topology, then the data path only (no health, lag, failover, admin). */
  private async startWorker(): Promise<App> {
    try {
      this.follower!.attach(this);
      await this.volatility.start();
      this.listenAddress = await this.frontend.listen(this.config.listen.host, this.config.listen.port);
    } catch (error) {
      await this.stop();
      throw error;
    }
    return this;
  }

  get currentConfig(): Config {
    return this.config;
  }

  /** Applies a new config without dropping clients (listen/admin addresses need a restart). */
  reload(next: Config): void {
    // the one step that can fail (reading the certificate files) comes before anything is applied
    const secureContext = loadTls(next);
    this.config = next;
    this.users.configure(next.users);
    this.users.setLookup(this.lookupOf(next));
    if (this.role === 'worker') return this.reloadWorker(next, secureContext);
    this.topology.configure(this.patroni?.nodeConfigs(next) ?? next.nodes);
    this.health.reload();
    this.router.configure(routerOptions(next));
    this.lagPolicy.configure(lagLimits(next.routing));
    this.lagMonitor.configure();
    this.freshness.configure(next.routing.consistency);
    this.volatility.configure(next.routing.volatility_refresh_ms);
    this.pools.configure(this.patroni ? { ...next, nodes: this.patroni.nodeConfigs(next) } : next);
    this.patroni?.reload();
    this.secureContext = secureContext;
    void this.preflight.run(true);
    this.workers?.reloaded(next);
  }

  /** A worker's reload: the nodes are the leader's (its topology), the rest is the file's. */
  private reloadWorker(next: Config, secureContext: tls.SecureContext | undefined): void {
    this.router.configure(routerOptions(next));
    this.lagPolicy.configure(lagLimits(next.routing));
    this.freshness.configure(next.routing.consistency);
    this.volatility.configure(next.routing.volatility_refresh_ms);
    const nodes = [...this.topology.nodes.values()].map((n) => ({ name: n.name, host: n.host, port: n.port, role: n.configuredRole, weight: n.weight }));
    this.pools.configure({ ...next, nodes });
    this.secureContext = secureContext;
  }

  /** auth_query: the verifier lookup for users not in the config (failures logged, never the verifier). */
  private lookupOf(config: Config): ((user: string) => Promise<string | undefined>) | undefined {
    if (!config.auth_query) return undefined;
    return (user) =>
      this.authQuery.verifier(user).catch((error: unknown) => {
        this.log.warn({ user, err: error instanceof Error ? error.message : String(error) }, 'auth_query failed');
        throw error;
      });
  }

  /** stop() was called: /health answers 503 from then on */
  get stopping(): boolean {
    return this.stopped;
  }

  /** Stops accepting, lets running transactions finish (bounded by graceMs), then closes everything. */
  async stop(graceMs = 0): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // the leader: the workers stop their clients first (same grace)
    await this.workers?.stop(graceMs);
    await this.frontend.stopAccepting();
    await this.frontend.closeAll(graceMs);
    this.primaryWaiters.close();
    this.volatility.stop();
    this.patroni?.stop();
    this.failover.stop();
    this.preflight.stop();
    this.remoteApply.stop();
    this.health.stop();
    await this.lagMonitor.stop();
    this.pools.close();
    this.authQuery.close();
    await this.admin.close();
    this.log.info('pgrelay stopped');
  }
}

function routerOptions(config: Config) {
  return { balance: config.routing.balance, fallback: config.routing.fallback };
}

function loadTls(config: Config): tls.SecureContext | undefined {
  if (!config.tls.cert || !config.tls.key) return undefined;
  return tls.createSecureContext({ cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) });
}
