import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startPgrelayProcess, type PgrelayProcess } from '../support/pgrelay-process.js';
import { primaryOnly, RawClient, serialize, STEADY } from '../support/protocol-client.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';
import type { Socket } from 'node:net';

// Backpressure, measured on a real pgrelay process: a client asks for ~200 MB and reads it slowly.
// pgrelay must stop reading from the server while the client's socket is full, so that its memory
// stays bounded (RSS from /proc, sampled all along), and PostgreSQL is seen waiting to write. And
// the reverse: a client pushing a big COPY FROM STDIN that the server does not read (the table is
// locked) is not read by pgrelay either.
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
  relay = await startPgrelayProcess(cluster, { ...STEADY, pool: { size: 2 } });
});

afterAll(async () => {
  await relay?.stop();
});

describe('backpressure', () => {
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

  it('does not read a client pushing a 150 MB COPY that the server does not take (locked table); RSS stays under 150 MB', async () => {
    await queryNode(shared, primary, 'DROP TABLE IF EXISTS proto_copy_in; CREATE TABLE proto_copy_in (v text)');
    const locker = new pg.Client({ host: cluster.nodes[0]!.host, port: cluster.nodes[0]!.port, user: cluster.user, password: cluster.password, database: cluster.database });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE proto_copy_in IN ACCESS EXCLUSIVE MODE');
      const client = await RawClient.connect(relay.port, { user: cluster.user, password: cluster.password, database: cluster.database });
      const { socket } = client.release();
      try {
        const rssBefore = relay.rssBytes();
        socket.write(serialize.query('COPY proto_copy_in FROM STDIN'));
        const row = Buffer.from(`${'y'.repeat(1023)}\n`);
        const message = serialize.copyData(Buffer.concat(Array.from({ length: 64 }, () => row))); // 64 KB of rows
        const target = 150 * 1024 * 1024;
        let accepted = 0;
        let maxRss = rssBefore;
        const started = Date.now();
        // write as fast as the socket takes it, for a bounded time
        while (accepted < target && Date.now() - started < 8_000) {
          if (!writeOrWait(socket, message)) await drainedOrTimeout(socket, 250);
          else accepted += message.length;
          maxRss = Math.max(maxRss, relay.rssBytes());
        }
        const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
        console.info(`COPY pusher: pgrelay took ${mb(accepted)} MB of ${mb(target)} MB while the table was locked; RSS ${mb(rssBefore)} MB before, max ${mb(maxRss)} MB`);
        expect(accepted).toBeLessThan(100 * 1024 * 1024); // kernel buffers and a little more, not the whole COPY
        expect(maxRss).toBeLessThan(RSS_LIMIT);
      } finally {
        socket.destroy();
      }
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      await locker.end();
    }
    // the abandoned COPY's server connection goes away; nothing was copied; others are served
    await vi.waitFor(
      async () => {
        const rows = await queryNode(shared, primary, "SELECT 1 FROM pg_stat_activity WHERE query = 'COPY proto_copy_in FROM STDIN'", [], true);
        expect(rows).toEqual([]);
      },
      { timeout: 30_000, interval: 200 },
    );
    expect(await queryNode(shared, primary, 'SELECT count(*)::int AS n FROM proto_copy_in')).toEqual([{ n: 0 }]);
    const other = new pg.Client({ connectionString: relay.url() });
    await other.connect();
    try {
      expect((await other.query('SELECT 1 AS v')).rows[0].v).toBe(1);
    } finally {
      await other.end();
    }
  });

  it('stops reading a client that writes Syncs in a loop and never reads (each answered by pgrelay itself): RSS stays bounded, others are served, every Sync is answered once it reads', async () => {
    const client = await RawClient.connect(relay.port, { user: cluster.user, password: cluster.password, database: cluster.database });
    const { socket } = client.release(); // paused: nothing is read
    const MAX_SYNCS = 20_000_000; // 100 MB of Syncs, 120 MB of answers
    const BATCH = 10_000;
    const batch = Buffer.concat(Array.from({ length: BATCH }, () => serialize.sync()));
    try {
      const rssBefore = relay.rssBytes();
      let written = 0;
      let maxRss = rssBefore;
      const started = Date.now();
      // write as fast as the socket takes them, for a bounded time
      while (written < MAX_SYNCS && Date.now() - started < 8_000) {
        if (!writeOrWait(socket, batch)) await drainedOrTimeout(socket, 100);
        else written += BATCH;
        maxRss = Math.max(maxRss, relay.rssBytes());
      }
      const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
      console.info(`Sync flood: pgrelay took ${written} Syncs (${mb(written * 5)} MB) in ${Date.now() - started} ms; RSS ${mb(rssBefore)} MB before, max ${mb(maxRss)} MB`);
      // kernel buffers and a bounded queue of answers, not the whole loop (which would read on)
      expect(written * 5).toBeLessThan(30 * 1024 * 1024);
      expect(maxRss - rssBefore).toBeLessThan(40 * 1024 * 1024);
      // meanwhile another client is served
      const other = new pg.Client({ connectionString: relay.url() });
      await other.connect();
      try {
        expect((await other.query('SELECT 2 AS v')).rows[0].v).toBe(2);
      } finally {
        await other.end();
      }
      // the flooding client reads at last: one ReadyForQuery (6 bytes) for each Sync it wrote
      let received = 0;
      let tail = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        received += chunk.length;
        tail = Buffer.concat([tail, chunk]).subarray(-6);
      });
      socket.resume();
      await vi.waitFor(() => expect(received).toBe(written * 6), { timeout: 60_000, interval: 100 });
      expect([...tail]).toEqual([0x5a, 0, 0, 0, 5, 0x49]);
    } finally {
      socket.destroy();
    }
  }, 120_000);
});

/** socket.write, unless its buffer is already full (then nothing is written). */
function writeOrWait(socket: Socket, data: Buffer): boolean {
  if (socket.writableNeedDrain) return false;
  socket.write(data);
  return true;
}

function drainedOrTimeout(socket: Socket, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    socket.once('drain', done);
    function done() {
      clearTimeout(timer);
      socket.off('drain', done);
      resolve();
    }
  });
}
