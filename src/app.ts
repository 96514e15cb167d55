import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { AdminServer, json } from './admin/admin-server.js';
import { UserDirectory } from './auth/user-directory.js';
import { Classifier } from './classify/classifier.js';
import { Topology } from './cluster/topology.js';
import type { Config } from './config/types.js';
import { redactConfig } from './config/redact.js';
import { Frontend } from './frontend/frontend.js';
import { Metrics } from './metrics/metrics.js';
import { PoolSet } from './pool/pool-set.js';
import { Router } from './routing/router.js';
import { silentLogger, type Logger } from './util/log.js';

export interface AppOptions {
  log?: Logger;
  /** collect process metrics (off in tests that start many apps in one process) */
  processMetrics?: boolean;
}

/**
 * The composition root: builds every part from a Config, starts them in order (pools and cluster
 * view before the listener), stops them in reverse order.
 */
export class App {
  readonly metrics: Metrics;
  readonly topology: Topology;
  readonly router: Router;
  readonly pools: PoolSet;
  readonly users: UserDirectory;
  readonly frontend: Frontend;
  readonly admin: AdminServer;
  readonly log: Logger;
  private secureContext: tls.SecureContext | undefined;
  listenAddress: AddressInfo | undefined;
  adminAddress: AddressInfo | undefined;
  private stopped = false;

  private constructor(
    private config: Config,
    readonly classifier: Classifier,
    options: AppOptions,
  ) {
    this.log = options.log ?? silentLogger;
    this.metrics = new Metrics({ processMetrics: options.processMetrics ?? true });
    this.topology = new Topology(config.nodes);
    this.router = new Router(this.topology, routerOptions(config));
    this.pools = new PoolSet(config);
    this.users = new UserDirectory(config.users);
    this.secureContext = loadTls(config);
    this.frontend = new Frontend({
      config: () => this.config,
      pools: this.pools,
      router: this.router,
      topology: this.topology,
      classifier: this.classifier,
      metrics: this.metrics,
      log: this.log,
      users: this.users,
      tls: () => this.secureContext,
    });
    this.admin = new AdminServer(this.log);
    this.admin
      .route('GET', '/metrics', async () => {
        this.refreshGauges();
        return { status: 200, body: await this.metrics.registry.metrics(), contentType: this.metrics.registry.contentType };
      })
      .route('GET', '/health', () => {
        const primary = this.topology.primary();
        return primary ? json(200, { status: 'ok', primary: primary.name }) : json(503, { status: 'unavailable', reason: 'no primary is available for writes' });
      })
      .route('GET', '/status', () => json(200, this.status()));
  }

  static async start(config: Config, options: AppOptions = {}): Promise<App> {
    const classifier = await Classifier.create({ functions: config.routing.functions });
    const app = new App(config, classifier, options);
    try {
      app.adminAddress = await app.admin.listen(config.admin.host, config.admin.port);
      app.listenAddress = await app.frontend.listen(config.listen.host, config.listen.port);
    } catch (error) {
      await app.stop();
      throw error;
    }
    app.log.info({ listen: `${app.listenAddress.address}:${app.listenAddress.port}`, admin: `${app.adminAddress.address}:${app.adminAddress.port}` }, 'pgrelay listening');
    return app;
  }

  get currentConfig(): Config {
    return this.config;
  }

  /** Applies a new config without dropping clients (listen/admin addresses need a restart). */
  reload(next: Config): void {
    this.config = next;
    this.users.configure(next.users);
    this.topology.configure(next.nodes);
    this.router.configure(routerOptions(next));
    this.pools.configure(next);
    this.secureContext = loadTls(next);
    this.log.info({ nodes: next.nodes.map((n) => n.name) }, 'configuration reloaded');
  }

  status(): Record<string, unknown> {
    return {
      primary: this.topology.primaryName ?? null,
      consistency: this.config.routing.consistency,
      clients: this.frontend.clientCount,
      nodes: [...this.topology.nodes.values()].map((n) => ({
        name: n.name,
        host: n.host,
        port: n.port,
        role: n.role,
        configured_role: n.configuredRole,
        up: n.up,
        fenced: n.fenced,
        timeline: n.timeline ?? null,
        lag_bytes: n.lagBytes ?? null,
        lag_seconds: n.lagSeconds ?? null,
        fresh: n.fresh,
        stale_reason: n.staleReason ?? null,
        inflight: n.inflight,
        pools: this.pools.ofNode(n.name).map((p) => ({ user: p.login.user, database: p.login.database, ...p.stats() })),
      })),
      config: redactConfig(this.config),
    };
  }

  private refreshGauges(): void {
    this.metrics.poolConnections.reset();
    for (const node of this.topology.nodes.values()) {
      const sum = { idle: 0, active: 0, connecting: 0 };
      for (const pool of this.pools.ofNode(node.name)) {
        const s = pool.stats();
        sum.idle += s.idle;
        sum.active += s.active;
        sum.connecting += s.connecting;
      }
      for (const [state, value] of Object.entries(sum)) this.metrics.poolConnections.labels(node.name, state).set(value);
      this.metrics.nodeUp.labels(node.name, node.role).set(node.up ? 1 : 0);
    }
    this.metrics.classifyCacheHits.set(this.classifier.stats.hits);
    this.metrics.classifyCacheMisses.set(this.classifier.stats.misses);
  }

  /** Stops accepting, lets running transactions finish (bounded by graceMs), then closes everything. */
  async stop(graceMs = 0): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.frontend.stopAccepting();
    await this.frontend.closeAll(graceMs);
    this.pools.close();
    await this.admin.close();
    this.log.info('pgrelay stopped');
  }
}

function routerOptions(config: Config) {
  return {
    balance: config.routing.balance,
    fallback: config.routing.fallback,
    maxLagMs: config.routing.max_lag_ms,
    maxLagBytes: config.routing.max_lag_bytes,
  };
}

function loadTls(config: Config): tls.SecureContext | undefined {
  if (!config.tls.cert || !config.tls.key) return undefined;
  return tls.createSecureContext({ cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) });
}
