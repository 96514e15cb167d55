import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { FastHistogram } from './fast-histogram.js';

/**
 * Every Prometheus metric pgrelay exports, in one place. Labels stay low-cardinality: node names,
 * roles, routes, states and fixed reason words, never a query text or a client address.
 *
 * Who moves what: the frontend and sessions move the traffic counters as they go (per unit or per
 * socket chunk, never per data row); the gauges that describe state (pools, node health, lag,
 * classification cache) are read from their owners when Prometheus scrapes (`collectState`, see
 * state-metrics.ts), so nothing on the hot path keeps them current.
 */
export class Metrics {
  readonly registry = new Registry();

  // ---------------------------------------------------------------- clients
  readonly clientConnections = new Gauge({ name: 'pgrelay_client_connections', help: 'Client connections currently open.', registers: [this.registry] });
  readonly clientConnectionsTotal = new Counter({ name: 'pgrelay_client_connections_total', help: 'Client connections accepted since start.', registers: [this.registry] });
  readonly authFailures = new Counter({ name: 'pgrelay_auth_failures_total', help: 'Client authentications that failed (wrong password, unknown role, TLS required).', registers: [this.registry] });
  readonly clientsRefused = new Counter({ name: 'pgrelay_clients_refused_total', help: 'Clients refused before or during authentication, by reason (max_connections, shutdown, startup_timeout).', labelNames: ['reason'], registers: [this.registry] });
  // moved per socket chunk through addBytesIn/addBytesOut: plain sums, added when the registry reads them
  readonly bytesIn: Counter = new Counter({ name: 'pgrelay_client_bytes_received_total', help: 'Bytes received from clients.', registers: [this.registry], collect: () => this.flushBytes() });
  readonly bytesOut: Counter = new Counter({ name: 'pgrelay_client_bytes_sent_total', help: 'Bytes sent to clients.', registers: [this.registry], collect: () => this.flushBytes() });
  readonly pinnedSessions = new Gauge({ name: 'pgrelay_pinned_sessions', help: 'Clients pinned to one server connection (temp tables, LISTEN, session locks, session pooling).', registers: [this.registry] });

  // ---------------------------------------------------------------- units (routing)
  // counted once per unit through countUnit/countUnitReason: plain numbers, added when the registry reads them
  readonly queries: Counter<'node' | 'route'> = new Counter({ name: 'pgrelay_queries_total', help: 'Units (a simple Query or an extended-protocol run up to Sync) sent to a node, by the route their statement asked for (primary, replica, any, function call).', labelNames: ['node', 'route'], registers: [this.registry], collect: () => this.pendingQueries.flush(this.queries, 'node', 'route') });
  readonly unitsByReason: Counter<'route' | 'reason'> = new Counter({ name: 'pgrelay_units_total', help: 'Units by the role of the node that ran them (primary, replica) and why (read, write, function, transaction_control, session, hint, pin, parse_error, function_call, unclassified, rerouted_readonly: a read a replica refused as a write, run again on the primary; rerouted_serializable: a read a replica refused as serializable (the default of the role or database), run again on the primary; rerouted_conflict: a read a replica cancelled for a conflict with recovery, run again on the primary).', labelNames: ['route', 'reason'], registers: [this.registry], collect: () => this.pendingUnitReasons.flush(this.unitsByReason, 'route', 'reason') });
  /** observed once per unit: a FastHistogram (prom-client's Histogram allocates and hashes per observation) */
  readonly queryDuration = new FastHistogram(
    'pgrelay_query_duration_seconds',
    'Time from a unit reaching a server connection to its ReadyForQuery, by node.',
    'node',
    [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    [this.registry],
  );
  readonly primaryReads: Counter<'reason'> = new Counter({ name: 'pgrelay_primary_reads_total', help: 'Reads sent to the primary instead of a replica, by reason (no_replica, lag, consistency).', labelNames: ['reason'], registers: [this.registry], collect: () => this.pendingPrimaryReads.flush(this.primaryReads, 'reason') });
  // counted once per transaction through countTransaction: plain numbers, added when the registry reads them
  readonly transactions: Counter<'outcome'> = new Counter({ name: 'pgrelay_transactions_total', help: 'Transactions begun with a BEGIN pgrelay held for their first statement, by where they ran: replica (optimistic, ended there), moved (to the primary, their reads verified), conflict (a read answered differently on the primary: 40001), primary (there from the start).', labelNames: ['outcome'], registers: [this.registry], collect: () => this.pendingTransactions.flush(this.transactions, 'outcome') });
  readonly fenceWaits = new Counter({ name: 'pgrelay_fence_waits_total', help: 'Reads that waited (routing.fence_wait_ms) for a replica past their client\'s last write, by how the wait ended: replica (one is past it) or primary (the wait ran out).', labelNames: ['outcome'], registers: [this.registry] });

  // ---------------------------------------------------------------- nodes, lag, failover
  readonly nodeUp = new Gauge({ name: 'pgrelay_node_up', help: '1 when the node passes its health check, 0 when it is down; role as the servers report it.', labelNames: ['node', 'role'], registers: [this.registry] });
  readonly nodeFenced = new Gauge({ name: 'pgrelay_node_fenced', help: '1 when the node is fenced (a former primary that must not take writes).', labelNames: ['node'], registers: [this.registry] });
  readonly nodeFresh = new Gauge({ name: 'pgrelay_node_fresh', help: '1 when the lag monitor lets the replica serve reads.', labelNames: ['node'], registers: [this.registry] });
  readonly nodeInflight = new Gauge({ name: 'pgrelay_node_inflight_units', help: 'Units running on the node now.', labelNames: ['node'], registers: [this.registry] });
  readonly replicaLagSeconds = new Gauge({ name: 'pgrelay_replica_lag_seconds', help: 'How long ago the primary was at the replica\u2019s replay position (absent until the lag monitor has measured it).', labelNames: ['node'], registers: [this.registry] });
  readonly replicaLagBytes = new Gauge({ name: 'pgrelay_replica_lag_bytes', help: 'WAL bytes between the primary\u2019s current position and the replica\u2019s replay position (absent until measured).', labelNames: ['node'], registers: [this.registry] });
  readonly failovers = new Counter({ name: 'pgrelay_failovers_total', help: 'Primary changes (failover, switchover, or one followed) carried out or followed.', registers: [this.registry] });
  readonly failoverDuration = new Gauge({ name: 'pgrelay_last_failover_duration_seconds', help: 'Duration of the last failover or switchover, from detection to writes flowing on the new primary (0 until one happened).', registers: [this.registry] });
  readonly capability = new Gauge({ name: 'pgrelay_capability', help: 'Per capability (replica_reads, failover, switchover): 1 when the preflight finds it fully working with the configured roles, 0 when it is degraded, impossible, off or not yet checked; absent when not configured (no replica, failover.mode off).', labelNames: ['capability'], registers: [this.registry] });

  // ---------------------------------------------------------------- pools
  readonly poolConnections = new Gauge({ name: 'pgrelay_pool_connections', help: 'Server connections by node and state (idle, active, connecting).', labelNames: ['node', 'state'], registers: [this.registry] });
  readonly poolWaiting = new Gauge({ name: 'pgrelay_pool_waiting_clients', help: 'Units waiting for a free server connection now.', labelNames: ['node'], registers: [this.registry] });
  readonly poolWaits: Counter<'node'> = new Counter({ name: 'pgrelay_pool_waits_total', help: 'Units that had to wait for a free server connection.', labelNames: ['node'], registers: [this.registry], collect: () => this.pendingPoolWaits.flush(this.poolWaits, 'node') });
  readonly poolWaitTimeouts = new Counter({ name: 'pgrelay_pool_wait_timeouts_total', help: 'Units refused with 53300 after waiting for a server connection.', labelNames: ['node'], registers: [this.registry] });
  /** counted by the pipelines of this process (countPipelinedUnit), read when the registry is */
  readonly pipelinedUnits: Counter<'node'> = new Counter({ name: 'pgrelay_pipelined_units_total', help: 'Units written behind another client\u2019s unit on one server connection (pool.pipeline_depth), by node.', labelNames: ['node'], registers: [this.registry], collect: () => copyCounts(this.pipelinedUnits, pipelinedTotals) });
  readonly serverErrors = new Counter({ name: 'pgrelay_server_connection_errors_total', help: 'Server connections in the data path that broke.', labelNames: ['node'], registers: [this.registry] });

  // ---------------------------------------------------------------- classification cache
  readonly classifyCacheHits = new Counter({ name: 'pgrelay_classify_cache_hits_total', help: 'Statements whose routing decision came from the classification cache.', registers: [this.registry] });
  readonly classifyCacheMisses = new Counter({ name: 'pgrelay_classify_cache_misses_total', help: 'Statements whose shape had to be parsed (classification cache misses).', registers: [this.registry] });
  // workers mode: each worker has its own cache; /metrics shows their mean (src/workers/leader.ts)
  readonly classifyCacheHitRatio = new Gauge({ name: 'pgrelay_classify_cache_hit_ratio', help: 'Classification cache hits / lookups since start (absent before the first lookup).', registers: [this.registry], aggregator: 'average' });

  // ---------------------------------------------------------------- operations
  readonly reloads = new Counter({ name: 'pgrelay_config_reloads_total', help: 'Configuration reloads (SIGHUP or POST /admin/reload), by result (applied, rejected).', labelNames: ['result'], registers: [this.registry] });
  readonly info = new Gauge({ name: 'pgrelay_info', help: 'Always 1; labels carry the version and the consistency mode.', labelNames: ['version', 'consistency'], registers: [this.registry] });

  /**
   * A prom-client `inc()` builds and hashes a label string and allocates: per unit, that showed in
   * the CPU profile. Units are counted here and handed to the counters when they are read.
   */
  private readonly pendingQueries = new PendingCounts();
  private readonly pendingUnitReasons = new PendingCounts();
  private readonly pendingPoolWaits = new PendingCounts();
  private readonly pendingPrimaryReads = new PendingCounts();
  private readonly pendingTransactions = new PendingCounts();
  private pendingBytesIn = 0;
  private pendingBytesOut = 0;

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'pgrelay_' });
  }

  /** Records a unit's duration on its node. */
  observeUnit(node: string, seconds: number): void {
    this.queryDuration.observe(node, seconds);
  }

  /** Counts a unit sent to a node, by the route its statement asked for. */
  countUnit(node: string, route: string): void {
    this.pendingQueries.add(node, route);
  }

  /** Counts a unit by the role of its node and a reason word (see unitReason). */
  countUnitReason(route: string, reason: string): void {
    this.pendingUnitReasons.add(route, reason);
  }

  /** Counts a read sent to the primary instead of a replica, by reason. */
  countPrimaryRead(reason: string): void {
    this.pendingPrimaryReads.add(reason);
  }

  /** Counts a transaction of a held BEGIN by where it ran (pgrelay_transactions_total's outcome). */
  countTransaction(outcome: 'replica' | 'moved' | 'conflict' | 'primary'): void {
    this.pendingTransactions.add(outcome);
  }

  /** Counts a unit that had to wait for a free server connection of a node. */
  countPoolWait(node: string): void {
    this.pendingPoolWaits.add(node);
  }

  addBytesIn(bytes: number): void {
    this.pendingBytesIn += bytes;
  }

  addBytesOut(bytes: number): void {
    this.pendingBytesOut += bytes;
  }

  private flushBytes(): void {
    if (this.pendingBytesIn > 0) this.bytesIn.inc(this.pendingBytesIn);
    if (this.pendingBytesOut > 0) this.bytesOut.inc(this.pendingBytesOut);
    this.pendingBytesIn = 0;
    this.pendingBytesOut = 0;
  }

}

/** Counts by one or two label values (constant strings: Map lookups hash them once), not yet in prom-client. */
class PendingCounts {
  private readonly counts = new Map<string, Map<string, { n: number }>>();

  add(first: string, second = ''): void {
    let inner = this.counts.get(first);
    if (inner === undefined) {
      inner = new Map();
      this.counts.set(first, inner);
    }
    const entry = inner.get(second);
    if (entry === undefined) inner.set(second, { n: 1 });
    else entry.n++;
  }

  flush<T extends string>(counter: Counter<T>, firstLabel: T, secondLabel?: T): void {
    for (const [first, inner] of this.counts) {
      for (const [second, entry] of inner) {
        if (entry.n === 0) continue;
        const labels = (secondLabel === undefined ? { [firstLabel]: first } : { [firstLabel]: first, [secondLabel]: second }) as Partial<Record<T, string>>;
        counter.inc(labels, entry.n);
        entry.n = 0;
      }
    }
  }
}

/** Sets a counter by node to the totals a module keeps itself (plain numbers, process-wide). */
function copyCounts(counter: Counter<'node'>, totals: ReadonlyMap<string, number>): void {
  counter.reset();
  for (const [node, n] of totals) counter.inc({ node }, n);
}

/** Units written behind another client's unit, by node, in this process (see ServerPipeline). */
const pipelinedTotals = new Map<string, number>();

/** A unit was written behind another client's unit on a connection to `node` (pgrelay_pipelined_units_total). */
export function countPipelinedUnit(node: string): void {
  pipelinedTotals.set(node, (pipelinedTotals.get(node) ?? 0) + 1);
}
