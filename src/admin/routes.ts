import type { App } from '../app.js';
import { redactConfig } from '../config/redact.js';
import { json, type AdminServer } from './admin-server.js';

/** The admin API: GET /metrics, /health, /status. */
export function registerAdminRoutes(admin: AdminServer, app: App): void {
  admin
    .route('GET', '/metrics', async () => {
      refreshGauges(app);
      return { status: 200, body: await app.metrics.registry.metrics(), contentType: app.metrics.registry.contentType };
    })
    .route('GET', '/health', () => {
      const primary = app.topology.primary();
      return primary ? json(200, { status: 'ok', primary: primary.name }) : json(503, { status: 'unavailable', reason: 'no primary is available for writes' });
    })
    .route('GET', '/status', () => json(200, statusOf(app)));
}

/** The /status document: topology, health, lag and pools per node. */
export function statusOf(app: App): Record<string, unknown> {
  const config = app.currentConfig;
  return {
    primary: app.topology.primaryName ?? null,
    consistency: config.routing.consistency,
    clients: app.frontend.clientCount,
    nodes: [...app.topology.nodes.values()].map((n) => ({
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
      pools: app.pools.ofNode(n.name).map((p) => ({ user: p.login.user, database: p.login.database, ...p.stats() })),
    })),
    config: redactConfig(config),
  };
}

function refreshGauges(app: App): void {
  const { metrics } = app;
  metrics.poolConnections.reset();
  metrics.nodeUp.reset();
  for (const node of app.topology.nodes.values()) {
    const sum = { idle: 0, active: 0, connecting: 0 };
    for (const pool of app.pools.ofNode(node.name)) {
      const s = pool.stats();
      sum.idle += s.idle;
      sum.active += s.active;
      sum.connecting += s.connecting;
    }
    for (const [state, value] of Object.entries(sum)) metrics.poolConnections.labels(node.name, state).set(value);
    metrics.nodeUp.labels(node.name, node.role).set(node.up ? 1 : 0);
  }
  metrics.classifyCacheHits.set(app.classifier.stats.hits);
  metrics.classifyCacheMisses.set(app.classifier.stats.misses);
}
