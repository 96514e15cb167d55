import { createRequire } from 'node:module';
import type { AdminApp } from './admin-app.js';

/**
 * Gauges that describe state are read from their owners when Prometheus scrapes, so that the data
 * path never pays for them: pools, node health and lag, the classification cache. The health
 * checker and the lag monitor also set pgrelay_node_up and pgrelay_replica_lag_* as they measure;
 * both derive from the same NodeStatus fields, so this only makes a scrape consistent with the
 * topology of that moment (nodes a reload removed disappear, a node that changed role is listed
 * once). Failover counters are moved by the failover module itself.
 */
export function collectStateMetrics(app: AdminApp): void {
  const { metrics, topology } = app;
  // nodes can leave (reload) and change role (failover): start from empty label sets each time
  metrics.poolConnections.reset();
  metrics.poolWaiting.reset();
  metrics.nodeUp.reset();
  metrics.nodeFenced.reset();
  metrics.nodeFresh.reset();
  metrics.nodeInflight.reset();
  metrics.replicaLagSeconds.reset();
  metrics.replicaLagBytes.reset();
  const pools = new Map<string, { idle: number; active: number; connecting: number; waiting: number }>();
  for (const pool of app.pools.all()) {
    const s = pool.stats();
    const sum = pools.get(pool.endpoint.node) ?? { idle: 0, active: 0, connecting: 0, waiting: 0 };
    sum.idle += s.idle;
    sum.active += s.active;
    sum.connecting += s.connecting;
    sum.waiting += s.waiting;
    pools.set(pool.endpoint.node, sum);
  }
  for (const node of topology.nodes.values()) {
    const sum = pools.get(node.name) ?? { idle: 0, active: 0, connecting: 0, waiting: 0 };
    pools.delete(node.name);
    metrics.poolConnections.labels(node.name, 'idle').set(sum.idle);
    metrics.poolConnections.labels(node.name, 'active').set(sum.active);
    metrics.poolConnections.labels(node.name, 'connecting').set(sum.connecting);
    metrics.poolWaiting.labels(node.name).set(sum.waiting);
    metrics.nodeUp.labels(node.name, node.role).set(node.up ? 1 : 0);
    metrics.nodeFenced.labels(node.name).set(node.fenced ? 1 : 0);
    metrics.nodeInflight.labels(node.name).set(node.inflight);
    if (node.role !== 'primary') {
      metrics.nodeFresh.labels(node.name).set(node.fresh ? 1 : 0);
      if (node.lagSeconds !== undefined) metrics.replicaLagSeconds.labels(node.name).set(node.lagSeconds);
      if (node.lagBytes !== undefined) metrics.replicaLagBytes.labels(node.name).set(node.lagBytes);
    }
  }
  // nodes a reload removed whose connections are still finishing their unit
  for (const [node, sum] of pools) {
    metrics.poolConnections.labels(node, 'active').set(sum.active);
    metrics.poolConnections.labels(node, 'connecting').set(sum.connecting);
  }
  const { hits, misses } = app.classifier.stats;
  syncCounter(metrics.classifyCacheHits, hits);
  syncCounter(metrics.classifyCacheMisses, misses);
  if (hits + misses > 0) metrics.classifyCacheHitRatio.set(hits / (hits + misses));
  metrics.info.reset();
  metrics.info.labels(VERSION, app.currentConfig.routing.consistency).set(1);
}

/** package.json sits two levels up from both src/admin and dist/admin. */
const VERSION = ((): string => {
  try {
    return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

/** Counts that their owner keeps (the classifier's cache stats) reach a Counter by their increase. */
function syncCounter(counter: { get(): Promise<unknown>; inc(value: number): void }, total: number): void {
  const last = synced.get(counter) ?? 0;
  if (total > last) counter.inc(total - last);
  synced.set(counter, Math.max(last, total));
}
const synced = new WeakMap<object, number>();
