import type { AdminApp } from './admin-app.js';
import { json, type AdminServer } from './admin-server.js';
import { switchoverRequest } from '../cluster/switchover.js';
import { collectStateMetrics } from './collect-state.js';
import { reloadFromFile } from './config-reload.js';
import { healthBody, healthOf, statusOf } from './status.js';
import { TOPOLOGY_PAGE } from './topology-page.js';

export { statusOf } from './status.js';

/**
 * The admin API: GET / (the live topology page), /metrics, /health, /status;
 * POST /admin/reload.
 */
export function registerAdminRoutes(admin: AdminServer, app: AdminApp): void {
  admin
    .route('GET', '/', () => ({ status: 200, body: TOPOLOGY_PAGE, contentType: 'text/html; charset=utf-8' }))
    .route('GET', '/metrics', async () => {
      // workers mode: the leader's and every worker's, aggregated (src/workers/leader.ts)
      if (app.workers) return { status: 200, body: await app.workers.metricsText(), contentType: app.metrics.registry.contentType };
      collectStateMetrics(app);
      return { status: 200, body: await app.metrics.registry.metrics(), contentType: app.metrics.registry.contentType };
    })
    .route('GET', '/health', () => {
      const health = healthOf(app.topology, app.stopping, app.preflight.report);
      return json(health.ok ? 200 : 503, healthBody(health));
    })
    .route('GET', '/status', async () => json(200, await statusOf(app)))
    .route('POST', '/admin/reload', () => {
      if (app.configPath === undefined) return json(409, { status: 'rejected', errors: ['pgrelay was not started from a config file (pgrelay start --config FILE): there is nothing to re-read'] });
      const outcome = reloadFromFile(app, app.configPath);
      return json(outcome.result === 'rejected' ? 400 : 200, { status: outcome.result, ...outcome });
    })
    .route('POST', '/admin/switchover', async (_request, body) => {
      const answer = await switchoverRequest((target) => (app.patroni ? app.patroni.switchover(target) : app.failover.switchover(target)), body);
      return json(answer.status, answer.body);
    });
}
