import pg from 'pg';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { prepareWebapp, runWebapp, WEBAPP_TABLE, type WebappNode } from '../../src/bench/webapp.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// The web-application workload of `npm run bench -- --workloads webapp` locates reads by the
// servers' own scan counters: checked here where the answer is known (every read sent straight to
// one node), on a database of its own.
const cluster = sharedCluster();
const DATABASE = 'webapp_e2e';
const url = (node: { host: string; port: number }) =>
  `postgres://${encodeURIComponent(cluster.superuser)}:${encodeURIComponent(cluster.superuserPassword)}@${node.host}:${node.port}/${DATABASE}`;
const nodes: WebappNode[] = cluster.nodes.map((n) => ({ name: n.name, role: n.role, url: url(n) }));
const primary = cluster.nodes.find((n) => n.role === 'primary')!;

beforeAll(async () => {
  await queryNode(cluster, 'primary', `DROP DATABASE IF EXISTS ${DATABASE}`, [], true);
  await queryNode(cluster, 'primary', `CREATE DATABASE ${DATABASE} OWNER ${cluster.user}`, [], true);
  await prepareWebapp(`postgres://${cluster.user}:${cluster.password}@${primary.host}:${primary.port}/${DATABASE}`, 500);
  // the table and its rows have reached every node (scan counters are read on each)
  for (const node of cluster.nodes) {
    await vi.waitFor(async () => {
      const client = new pg.Client({ connectionString: url(node) });
      client.on('error', () => {});
      try {
        await client.connect();
        expect(Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${WEBAPP_TABLE}`)).rows[0]!.n)).toBe(500);
      } finally {
        await client.end().catch(() => {});
      }
    }, { timeout: 30_000, interval: 100 });
  }
});

describe('webapp workload', () => {
  it('counts every read on the node that ran it and finds no stale read on the primary itself', async () => {
    const endpoint = { host: primary.host, port: primary.port, user: cluster.user, password: cluster.password, database: DATABASE };
    for (const mode of ['autocommit', 'transactions'] as const) {
      const result = await runWebapp(endpoint, nodes, { clients: 2, durationS: 1, mode });
      expect(result.errors).toBe(0);
      expect(result.requests).toBeGreaterThan(10);
      expect(result.stale).toBe(0);
      expect(result.onReplicas).toBe(0);
      // each read is one index scan on the primary (the scan of max(id) at the start too)
      expect(result.scansByNode['primary']).toBeGreaterThanOrEqual(result.reads);
      for (const node of nodes.filter((n) => n.role !== 'primary')) expect(result.scansByNode[node.name]).toBe(0);
    }
  });

  it('counts reads run on a replica as reads on replicas', async () => {
    const replica = cluster.nodes.find((n) => n.role === 'replica')!;
    // straight to the replica, reads only (a write would fail there)
    const endpoint = { host: replica.host, port: replica.port, user: cluster.user, password: cluster.password, database: DATABASE };
    const result = await runWebapp(endpoint, nodes, { clients: 2, durationS: 1, mode: 'autocommit', writeShare: 0 });
    expect(result.errors).toBe(0);
    expect(result.reads).toBeGreaterThan(50);
    expect(result.onReplicas).toBe(1);
    expect(result.scansByNode[replica.name]).toBeGreaterThanOrEqual(result.reads);
    expect(result.scansByNode['primary']).toBe(0);
  });
});
