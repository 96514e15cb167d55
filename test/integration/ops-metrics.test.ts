import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { App } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { parsePrometheusText, sumOf, valueOf, type MetricFamily } from '../support/prometheus-text.js';
import { relayDocument } from '../support/relay.js';
import { sharedCluster } from '../support/shared-cluster.js';

// GET /metrics of a relay in front of the shared cluster, read with a strict parser of the
// Prometheus text format: every metric DESIGN.md names is there with its type, and the traffic
// this file makes moves the counters and gauges it should.
const cluster = sharedCluster();
let app: App;
let metricsUrl: string;
let port: number;
const clients: pg.Client[] = [];

/** DESIGN.md "Contracts": the metrics others script against, with their types. */
const DESIGN_METRICS: Record<string, MetricFamily['type']> = {
  pgrelay_client_connections: 'gauge',
  pgrelay_queries_total: 'counter',
  pgrelay_query_duration_seconds: 'histogram',
  pgrelay_replica_lag_seconds: 'gauge',
  pgrelay_replica_lag_bytes: 'gauge',
  pgrelay_node_up: 'gauge',
  pgrelay_failovers_total: 'counter',
  pgrelay_pool_connections: 'gauge',
  pgrelay_pinned_sessions: 'gauge',
};

/** The operations issue's list on top of DESIGN.md's. */
const OPERATIONS_METRICS: Record<string, MetricFamily['type']> = {
  pgrelay_client_bytes_received_total: 'counter',
  pgrelay_client_bytes_sent_total: 'counter',
  pgrelay_units_total: 'counter',
  pgrelay_pool_waits_total: 'counter',
  pgrelay_pool_wait_timeouts_total: 'counter',
  pgrelay_auth_failures_total: 'counter',
  pgrelay_last_failover_duration_seconds: 'gauge',
  pgrelay_classify_cache_hits_total: 'counter',
  pgrelay_classify_cache_misses_total: 'counter',
  pgrelay_classify_cache_hit_ratio: 'gauge',
  pgrelay_primary_reads_total: 'counter',
  pgrelay_process_cpu_seconds_total: 'counter',
  pgrelay_process_resident_memory_bytes: 'gauge',
  pgrelay_nodejs_heap_size_used_bytes: 'gauge',
};

async function scrape(): Promise<Map<string, MetricFamily>> {
  const response = await fetch(metricsUrl);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await response.text());
}

async function connect(password = cluster.password): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: cluster.user, password, database: cluster.database });
  await client.connect();
  clients.push(client);
  return client;
}

beforeAll(async () => {
  const config = parseConfig(stringify(relayDocument(cluster, { pool: { size: 2 }, routing: { consistency: 'eventual' }, health: { timeout_ms: 5000, failures: 5 } })), { source: 'test' });
  // with process metrics, as `pgrelay start` runs
  app = await App.start(config, { processMetrics: true });
  port = app.listenAddress!.port;
  metricsUrl = `http://127.0.0.1:${app.adminAddress!.port}/metrics`;
  await queryNodeTable();
});

async function queryNodeTable(): Promise<void> {
  const client = new pg.Client({ host: '127.0.0.1', port: cluster.nodes[0]!.port, user: cluster.user, password: cluster.password, database: cluster.database });
  await client.connect();
  try {
    await client.query('CREATE TABLE IF NOT EXISTS ops_metrics (id serial PRIMARY KEY, v text)');
  } finally {
    await client.end();
  }
}

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await app?.stop();
});

describe('GET /metrics', () => {
  it('has every DESIGN.md metric with its type, help text and low-cardinality labels, and they move with traffic', async () => {
    const before = await scrape();
    for (const [name, type] of Object.entries({ ...DESIGN_METRICS, ...OPERATIONS_METRICS })) {
      expect(before.get(name)?.type, name).toBe(type);
    }
    for (const family of before.values()) {
      expect(family.name, family.name).toMatch(/^pgrelay_/);
      expect(family.help, family.name).toBeTruthy();
    }

    // traffic: reads, writes with bind parameters, a transaction, a wait for a pool connection,
    // a failed login, a pinned session
    const a = await connect();
    const b = await connect();
    const c = await connect();
    for (let i = 0; i < 20; i++) await a.query('SELECT $1::int AS n', [i]);
    for (let i = 0; i < 10; i++) await b.query('INSERT INTO ops_metrics (v) VALUES ($1)', [`value ${i}`]);
    // (a plain BEGIN would be answered by pgrelay and sent with the INSERT: no unit of its own)
    await c.query('BEGIN READ WRITE');
    await c.query('INSERT INTO ops_metrics (v) VALUES ($1)', ['in a transaction']);
    await c.query('COMMIT');
    // pool.size is 2: the third of three slow primary units has to wait for a connection
    await Promise.all([a, b, c].map((client) => client.query('SELECT pg_sleep(0.3) /* pgrelay:primary */')));
    await expect(connect('wrong password')).rejects.toThrow(/password authentication failed/);
    await c.query('CREATE TEMP TABLE ops_metrics_pin (n int)');

    // the refused login's socket closes on its own time
    let after = await scrape();
    await vi.waitFor(
      async () => {
        after = await scrape();
        expect(valueOf(after, 'pgrelay_client_connections')).toBe(3);
      },
      { timeout: 10_000, interval: 50 },
    );
    const grew = (name: string, labels: Record<string, string> = {}) => sumOf(after, name, labels) - sumOf(before, name, labels);
    // gauges describe now: three clients, one of them pinned to a primary connection
    expect(valueOf(after, 'pgrelay_pinned_sessions')).toBe(1);
    // pool.size 2: the three slow units opened both primary connections; the pinned client holds
    // one (active), the other went back (idle)
    expect(valueOf(after, 'pgrelay_pool_connections', { node: 'primary', state: 'active' })).toBe(1);
    expect(valueOf(after, 'pgrelay_pool_connections', { node: 'primary', state: 'idle' })).toBe(1);
    for (const node of cluster.nodes) {
      expect(valueOf(after, 'pgrelay_node_up', { node: node.name }), node.name).toBe(1);
      expect(after.get('pgrelay_node_up')!.samples.filter((s) => s.labels.node === node.name), node.name).toHaveLength(1);
    }
    // counters moved by what was done
    expect(grew('pgrelay_queries_total', { node: 'primary', route: 'primary' })).toBeGreaterThanOrEqual(13);
    expect(grew('pgrelay_queries_total', { route: 'replica' })).toBeGreaterThanOrEqual(20);
    expect(grew('pgrelay_query_duration_seconds_count')).toBeGreaterThanOrEqual(37); // per unit: in a transaction and in a pinned session too
    expect(grew('pgrelay_query_duration_seconds_sum')).toBeGreaterThanOrEqual(0.9); // three pg_sleep(0.3)
    expect(grew('pgrelay_units_total', { reason: 'read' })).toBeGreaterThanOrEqual(20);
    expect(grew('pgrelay_units_total', { reason: 'write' })).toBeGreaterThanOrEqual(11);
    expect(grew('pgrelay_units_total', { reason: 'hint' })).toBe(3);
    expect(grew('pgrelay_units_total', { reason: 'pin' })).toBe(1);
    expect(grew('pgrelay_units_total', { reason: 'transaction_control' })).toBeGreaterThanOrEqual(2);
    expect(grew('pgrelay_pool_waits_total', { node: 'primary' })).toBeGreaterThanOrEqual(1);
    expect(grew('pgrelay_auth_failures_total')).toBe(1);
    expect(grew('pgrelay_client_connections_total')).toBe(4);
    expect(grew('pgrelay_client_bytes_received_total')).toBeGreaterThan(1000);
    expect(grew('pgrelay_client_bytes_sent_total')).toBeGreaterThan(1000);
    expect(grew('pgrelay_classify_cache_hits_total')).toBeGreaterThan(20);
    const ratio = valueOf(after, 'pgrelay_classify_cache_hit_ratio')!;
    expect(ratio > 0 && ratio <= 1).toBe(true);
    expect(grew('pgrelay_process_cpu_seconds_total')).toBeGreaterThan(0);
    // nothing failed over: present, and zero
    expect(valueOf(after, 'pgrelay_failovers_total')).toBe(0);

    // labels never carry a statement, a value or a client address
    for (const family of after.values()) {
      for (const sample of family.samples) {
        for (const value of Object.values(sample.labels)) {
          expect(value, `${sample.name} ${value}`).not.toMatch(/select|insert|pg_sleep|value \d|127\.0\.0\.1/i);
        }
      }
    }
    const units = after.get('pgrelay_units_total')!.samples;
    expect(new Set(units.map((s) => s.labels.reason)).size).toBeLessThanOrEqual(10);
  });

  it('has a lag figure for each replica once the lag monitor measured it', async () => {
    const replicas = cluster.nodes.filter((n) => n.role !== 'primary');
    let families = await scrape();
    await vi.waitFor(
      async () => {
        families = await scrape();
        for (const node of replicas) expect(valueOf(families, 'pgrelay_replica_lag_seconds', { node: node.name }), node.name).toBeDefined();
      },
      { timeout: 20_000, interval: 200 },
    );
    // an idle test cluster: every replica is within the lag limit, less than a WAL segment behind
    const maxLagSeconds = app.currentConfig.routing.max_lag_ms / 1000;
    for (const node of replicas) {
      const seconds = valueOf(families, 'pgrelay_replica_lag_seconds', { node: node.name })!;
      const bytes = valueOf(families, 'pgrelay_replica_lag_bytes', { node: node.name })!;
      expect(seconds, node.name).toBeGreaterThanOrEqual(0);
      expect(seconds, node.name).toBeLessThan(maxLagSeconds);
      expect(Number.isInteger(bytes), `${node.name}: ${bytes}`).toBe(true);
      expect(bytes, node.name).toBeGreaterThanOrEqual(0);
      expect(bytes, node.name).toBeLessThan(16 * 1024 * 1024);
    }
    expect(valueOf(families, 'pgrelay_replica_lag_seconds', { node: 'primary' })).toBeUndefined();
  });
});
