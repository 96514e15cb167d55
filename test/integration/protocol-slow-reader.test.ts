import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startPgrelayProcess, type PgrelayProcess } from '../support/pgrelay-process.js';
import { primaryOnly, RawClient, serialize } from '../support/protocol-client.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// Backpressure, measured on a real pgrelay process: a client asks for ~200 MB and reads it slowly.
// pgrelay must stop reading from the server while the client's socket is full, so that its memory
// stays bounded (RSS from /proc, sampled all along), and PostgreSQL is seen waiting to write.
const shared = sharedCluster();
const cluster = primaryOnly(shared);
const primary = cluster.nodes[0]!.name;
const QUERY = "SELECT repeat('x', 1000) FROM generate_series(1, 200000)";
const RSS_LIMIT = 150 * 1024 * 1024;
const READ_FOR_MS = 15_000;
const READ_BYTES_PER_TICK = 64 * 1024;
const TICK_MS = 10;
let relay: PgrelayProcess;

beforeAll(async () => {
  relay = await startPgrelayProcess(cluster, { pool: { size: 2 } });
});

afterAll(async () => {
  await relay?.stop();
});

describe('a slow reader of a 200 MB result', () => {
  it('keeps pgrelay under 150 MB RSS; the server waits on the client (ClientWrite); pgrelay serves others afterwards', async () => {
    const client = await RawClient.connect(relay.port, { user: cluster.user, password: cluster.password, database: cluster.database, params: { application_name: 'proto-slow-reader' } });
    const { socket } = client.release();
    try {
      const rssBefore = relay.rssBytes();
      socket.write(serialize.query(QUERY));
      let received = 0;
      let maxRss = rssBefore;
      let sawClientWrite = false;
      const started = Date.now();
      let lastSample = 0;
      while (Date.now() - started < READ_FOR_MS) {
        let taken = 0;
        let chunk: Buffer | null;
        while (taken < READ_BYTES_PER_TICK && (chunk = socket.read() as Buffer | null) !== null) taken += chunk.length;
        received += taken;
        if (Date.now() - lastSample >= 250) {
          lastSample = Date.now();
          maxRss = Math.max(maxRss, relay.rssBytes());
          if (!sawClientWrite) {
            const rows = await queryNode<{ wait_event: string | null }>(shared, primary, 'SELECT wait_event FROM pg_stat_activity WHERE query = $1', [QUERY], true);
            sawClientWrite = rows.some((r) => r.wait_event === 'ClientWrite');
          }
        }
        await new Promise((r) => setTimeout(r, TICK_MS));
      }
      const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
      console.info(`slow reader: read ${mb(received)} MB in ${READ_FOR_MS / 1000} s; pgrelay RSS ${mb(rssBefore)} MB before, max ${mb(maxRss)} MB`);
      expect(received).toBeGreaterThan(1024 * 1024); // it did read: the result was flowing
      expect(received).toBeLessThan(200 * 1024 * 1024); // and it was slow: most of the result was still to come
      expect(maxRss).toBeLessThan(RSS_LIMIT);
      expect(sawClientWrite).toBe(true);
    } finally {
      socket.destroy();
    }
    // the abandoned result's server connection is thrown away, and pgrelay serves the next client
    await vi.waitFor(
      async () => {
        const rows = await queryNode(shared, primary, 'SELECT 1 FROM pg_stat_activity WHERE query = $1', [QUERY], true);
        expect(rows).toEqual([]);
      },
      { timeout: 30_000, interval: 200 },
    );
    const other = new pg.Client({ connectionString: relay.url() });
    await other.connect();
    try {
      const result = await other.query('SELECT count(*)::int AS n FROM generate_series(1, 1000)');
      expect(result.rows[0].n).toBe(1000);
    } finally {
      await other.end();
    }
    expect(relay.rssBytes()).toBeLessThan(RSS_LIMIT);
  });
});
