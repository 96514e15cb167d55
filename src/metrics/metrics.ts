import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every Prometheus metric pgrelay exports, in one place. Labels stay low-cardinality: node names,
 * roles, routes and reasons, never a query text or a client address.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly clientConnections = new Gauge({ name: 'pgrelay_client_connections', help: 'Client connections currently open.', registers: [this.registry] });
  readonly clientConnectionsTotal = new Counter({ name: 'pgrelay_client_connections_total', help: 'Client connections accepted since start.', registers: [this.registry] });
  readonly authFailures = new Counter({ name: 'pgrelay_auth_failures_total', help: 'Client authentications that failed.', registers: [this.registry] });
  readonly clientsRefused = new Counter({ name: 'pgrelay_clients_refused_total', help: 'Clients refused before authentication, by reason.', labelNames: ['reason'], registers: [this.registry] });
  readonly queries = new Counter({ name: 'pgrelay_queries_total', help: 'Units (a simple Query or an extended-protocol run up to Sync) sent to a node, by route.', labelNames: ['node', 'route'], registers: [this.registry] });
  readonly unitsByReason = new Counter({ name: 'pgrelay_units_total', help: 'Units by where they went and why.', labelNames: ['route', 'reason'], registers: [this.registry] });
  readonly queryDuration = new Histogram({
    name: 'pgrelay_query_duration_seconds',
    help: 'Time from a unit reaching a server connection to its ReadyForQuery.',
    labelNames: ['node'],
    buckets: [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly primaryReads = new Counter({ name: 'pgrelay_primary_reads_total', help: 'Reads sent to the primary instead of a replica, by reason (no_replica, lag, consistency).', labelNames: ['reason'], registers: [this.registry] });
  readonly replicaLagSeconds = new Gauge({ name: 'pgrelay_replica_lag_seconds', help: 'How long ago the primary was at the replica\u2019s replay position.', labelNames: ['node'], registers: [this.registry] });
  readonly replicaLagBytes = new Gauge({ name: 'pgrelay_replica_lag_bytes', help: 'WAL bytes between the primary\u2019s current position and the replica\u2019s replay position.', labelNames: ['node'], registers: [this.registry] });
  readonly nodeUp = new Gauge({ name: 'pgrelay_node_up', help: '1 when the node passes its health check.', labelNames: ['node', 'role'], registers: [this.registry] });
  readonly failovers = new Counter({ name: 'pgrelay_failovers_total', help: 'Primary changes (failover or switchover) carried out or followed.', registers: [this.registry] });
  readonly failoverDuration = new Gauge({ name: 'pgrelay_last_failover_duration_seconds', help: 'Duration of the last failover, from detection to writes flowing.', registers: [this.registry] });
  readonly poolConnections = new Gauge({ name: 'pgrelay_pool_connections', help: 'Server connections by node and state (idle, active, connecting).', labelNames: ['node', 'state'], registers: [this.registry] });
  readonly poolWaits = new Counter({ name: 'pgrelay_pool_waits_total', help: 'Units that had to wait for a free server connection.', labelNames: ['node'], registers: [this.registry] });
  readonly poolWaitTimeouts = new Counter({ name: 'pgrelay_pool_wait_timeouts_total', help: 'Units refused with 53300 after waiting for a server connection.', labelNames: ['node'], registers: [this.registry] });
  readonly pinnedSessions = new Gauge({ name: 'pgrelay_pinned_sessions', help: 'Clients pinned to one server connection (temp tables, LISTEN, session locks, ...).', registers: [this.registry] });
  readonly bytesIn = new Counter({ name: 'pgrelay_client_bytes_received_total', help: 'Bytes received from clients.', registers: [this.registry] });
  readonly bytesOut = new Counter({ name: 'pgrelay_client_bytes_sent_total', help: 'Bytes sent to clients.', registers: [this.registry] });
  readonly serverErrors = new Counter({ name: 'pgrelay_server_connection_errors_total', help: 'Server connections that broke or could not be opened.', labelNames: ['node'], registers: [this.registry] });
  readonly classifyCacheHits = new Gauge({ name: 'pgrelay_classify_cache_hits', help: 'Classification cache hits since start.', registers: [this.registry] });
  readonly classifyCacheMisses = new Gauge({ name: 'pgrelay_classify_cache_misses', help: 'Classification cache misses (statement shapes parsed) since start.', registers: [this.registry] });

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'pgrelay_' });
  }
}
