import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// pgbench through pgrelay: 32 clients on 8 server connections (transaction pooling), in the three
// query modes. -M prepared makes every client prepare the same statement names, which pgrelay
// maps onto shared server-side statements. Its own database, so that its tables meet nobody's.
const cluster = sharedCluster();
const database = 'proto_pgbench';
let relay: Relay;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function pgbench(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      'pgbench',
      ['-h', '127.0.0.1', '-p', String(relay.port), '-U', cluster.user, ...args, database],
      { env: { ...process.env, PGPASSWORD: cluster.password, PGCONNECT_TIMEOUT: '10' }, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The counters of pgbench's summary. */
function summary(output: string): { processed: number; failed: number; tps: number } {
  const processed = /number of transactions actually processed: (\d+)/.exec(output);
  const failed = /number of failed transactions: (\d+)/.exec(output);
  const tps = /tps = ([\d.]+)/.exec(output);
  if (!processed || !failed || !tps) throw new Error(`unexpected pgbench output:\n${output}`);
  return { processed: Number(processed[1]), failed: Number(failed[1]), tps: Number(tps[1]) };
}

beforeAll(async () => {
  await queryNode(cluster, 'primary', `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`, [], true);
  await queryNode(cluster, 'primary', `CREATE DATABASE ${database} OWNER ${cluster.user}`, [], true);
  relay = await startProtocolRelay(cluster, { pool: { size: 8, checkout_timeout_ms: 30_000 } });
});

afterAll(async () => {
  await relay?.stop();
  await queryNode(cluster, 'primary', `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`, [], true);
});

describe('pgbench through pgrelay', () => {
  it('initialises with pgbench -i -s 1', async () => {
    const run = await pgbench(['-i', '-s', '1', '-q']);
    expect(run.stderr).toMatch(/done in/);
    expect(run.code).toBe(0);
    const [row] = await queryNode<{ n: number }>({ ...cluster, database }, 'primary', 'SELECT count(*)::int AS n FROM pgbench_accounts');
    expect(row!.n).toBe(100_000);
  });

  for (const mode of ['simple', 'extended', 'prepared'] as const) {
    it(`runs -c 32 -j 2 -T 10 -M ${mode} with zero failed transactions`, async () => {
      const run = await pgbench(['-c', '32', '-j', '2', '-T', '10', '-M', mode, '-n']);
      expect(run.code, run.stderr).toBe(0);
      const { processed, failed, tps } = summary(run.stdout);
      console.info(`pgbench -M ${mode}: ${processed} transactions, ${failed} failed, ${tps} tps`);
      expect(failed).toBe(0);
      expect(processed).toBeGreaterThan(0);
      // what pgbench counted is what the database holds: one history row per transaction
      const [row] = await queryNode<{ n: number }>({ ...cluster, database }, 'primary', 'SELECT count(*)::int AS n FROM pgbench_history');
      expect(row!.n).toBeGreaterThanOrEqual(processed);
      const primary = cluster.nodes.find((n) => n.role === 'primary')!.name;
      const stats = relay.app.pools.get(primary, cluster.user, database).stats();
      expect(stats.idle + stats.active).toBeLessThanOrEqual(8);
    });
  }
});
