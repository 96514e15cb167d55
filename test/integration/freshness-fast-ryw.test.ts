import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { startRelay, type Relay } from '../support/relay.js';
import { setApplyDelay } from '../support/apply-delay.js';

// Fast read-your-writes (routing.fence_wait_ms) against a cluster of our own: replica1's replay
// is paused (it never has a client's new row), replica2 replays normally. A client writes a row
// and reads it back at once, over and over (extended protocol, pg and postgres.js). Every read
// must find its row, and the server it ran on (inet_server_port(), answered by the server) must
// mostly be replica2: the read waits a moment for replica2 to be seen past the write instead of
// going to the primary. With fence_wait_ms 0 the same loop reads from the primary.

const CLIENTS = 4;
const ITERATIONS = 400;
/** generous against a loaded shared machine; the default is 10 ms */
const FENCE_WAIT_MS = 200;

let cluster: LocalCluster;
const ports: Record<string, number> = {};
let nextId = 1;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: false });
  for (const name of ['primary', 'replica1', 'replica2']) ports[name] = cluster.node(name).port;
  await cluster.query('primary', 'CREATE TABLE ryw (id bigint PRIMARY KEY, client int NOT NULL)');
  await cluster.waitForReplay('replica1');
  await cluster.waitForReplay('replica2');
  await cluster.query('replica1', 'SELECT pg_wal_replay_pause()', [], { superuser: true, database: 'postgres' });
  const [row] = await cluster.query<{ paused: boolean }>('replica1', 'SELECT pg_is_wal_replay_paused() AS paused', [], { superuser: true, database: 'postgres' });
  expect(row!.paused).toBe(true);
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

async function relayWith(fenceWaitMs: number): Promise<Relay> {
  const relay = await startRelay(cluster, { routing: { consistency: 'session', fence_wait_ms: fenceWaitMs } });
  onTestFinished(() => relay.stop());
  // replica2 serves reads once the lag monitor has measured it
  await vi.waitFor(() => expect(relay.app.topology.node('replica2')!.fresh).toBe(true), { timeout: 10_000, interval: 50 });
  return relay;
}

const READ = 'SELECT count(*)::int AS n, inet_server_port() AS port FROM ryw WHERE id = $1';

interface Tally {
  reads: number;
  misses: number;
  /** reads per server port */
  on: Map<number, number>;
}

function newTally(): Tally {
  return { reads: 0, misses: 0, on: new Map() };
}

function count(tally: Tally, row: { n: number; port: number }): void {
  tally.reads++;
  if (row.n !== 1) tally.misses++;
  tally.on.set(row.port, (tally.on.get(row.port) ?? 0) + 1);
}

function share(tally: Tally, node: string): number {
  return (tally.on.get(ports[node]!) ?? 0) / tally.reads;
}

function describeTally(tally: Tally): string {
  return `${tally.reads} reads, ${tally.misses} misses; primary ${tally.on.get(ports.primary!) ?? 0}, replica1 (paused) ${tally.on.get(ports.replica1!) ?? 0}, replica2 ${tally.on.get(ports.replica2!) ?? 0}`;
}

/** node-postgres: each client loops INSERT a row, then SELECT it at once (parameters: extended protocol). */
async function pgLoop(relay: Relay): Promise<Tally> {
  const tally = newTally();
  const clients = await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const c = new pg.Client({ connectionString: relay.url() });
      c.on('error', () => undefined);
      onTestFinished(() => c.end().catch(() => undefined));
      await c.connect();
      return c;
    }),
  );
  await Promise.all(
    clients.map(async (c, k) => {
      for (let i = k; i < ITERATIONS; i += CLIENTS) {
        const id = nextId++;
        await c.query('INSERT INTO ryw (id, client) VALUES ($1, $2)', [id, k]);
        count(tally, (await c.query<{ n: number; port: number }>(READ, [id])).rows[0]!);
      }
    }),
  );
  return tally;
}

/** postgres.js (prepared statements, pipelined protocol): the same loop. */
async function postgresJsLoop(relay: Relay): Promise<Tally> {
  const tally = newTally();
  const clients = Array.from({ length: CLIENTS }, () => postgres(relay.url(), { max: 1, onnotice: () => undefined }));
  onTestFinished(() => Promise.all(clients.map((sql) => sql.end({ timeout: 1 }).catch(() => undefined))).then(() => undefined));
  await Promise.all(
    clients.map(async (sql, k) => {
      for (let i = k; i < ITERATIONS; i += CLIENTS) {
        const id = nextId++;
        await sql`INSERT INTO ryw (id, client) VALUES (${id}, ${k})`;
        const [row] = await sql<{ n: number; port: number }[]>`SELECT count(*)::int AS n, inet_server_port() AS port FROM ryw WHERE id = ${id}`;
        count(tally, row!);
      }
    }),
  );
  return tally;
}

async function fenceWaits(relay: Relay, outcome: string): Promise<number> {
  return (await relay.app.metrics.fenceWaits.get()).values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
}

describe('fast read-your-writes (routing.fence_wait_ms)', () => {
  it('pg: reads right after a write wait for the replica that has it, never the paused one, zero misses', async () => {
    const relay = await relayWith(FENCE_WAIT_MS);
    const tally = await pgLoop(relay);
    console.log(`[fast-ryw] pg, fence_wait_ms ${FENCE_WAIT_MS}: ${describeTally(tally)}; ${relay.app.lagMonitor.fences.samples} replay samples`);
    expect(tally.reads).toBe(ITERATIONS);
    expect(tally.misses).toBe(0);
    expect(tally.on.get(ports.replica1!) ?? 0).toBe(0);
    expect(share(tally, 'replica2')).toBeGreaterThanOrEqual(0.8);
    expect(await fenceWaits(relay, 'replica')).toBeGreaterThan(0);
    // sampling stops with the waits
    expect(relay.app.lagMonitor.fences.waiting).toBe(0);
  }, 120_000);

  it('postgres.js: the same, zero misses, reads mostly on the replica that has the write', async () => {
    const relay = await relayWith(FENCE_WAIT_MS);
    const tally = await postgresJsLoop(relay);
    console.log(`[fast-ryw] postgres.js, fence_wait_ms ${FENCE_WAIT_MS}: ${describeTally(tally)}`);
    expect(tally.reads).toBe(ITERATIONS);
    expect(tally.misses).toBe(0);
    expect(tally.on.get(ports.replica1!) ?? 0).toBe(0);
    expect(share(tally, 'replica2')).toBeGreaterThanOrEqual(0.8);
  }, 120_000);

  it('fence_wait_ms 0: the old behaviour, reads right after a write run on the primary (so the tests above can fail)', async () => {
    const relay = await relayWith(0);
    const tally = await pgLoop(relay);
    console.log(`[fast-ryw] pg, fence_wait_ms 0: ${describeTally(tally)}`);
    expect(tally.misses).toBe(0);
    expect(share(tally, 'primary')).toBeGreaterThanOrEqual(0.8);
    expect(await fenceWaits(relay, 'replica')).toBe(0);
    expect(relay.app.lagMonitor.fences.samples).toBe(0);
  }, 120_000);

  it('a read whose fence no replica reaches waits fence_wait_ms, then runs on the primary', async () => {
    // replica2 applies commits 2 s late but stays within the lag limit (fresh): it is a candidate
    // the sampler asks, yet it never reaches the fence within the wait
    await setApplyDelay(cluster, 'replica2', '2s');
    onTestFinished(() => setApplyDelay(cluster, 'replica2', undefined));
    const relay = await startRelay(cluster, { routing: { consistency: 'session', fence_wait_ms: FENCE_WAIT_MS, max_lag_ms: 60_000 } });
    onTestFinished(() => relay.stop());
    await vi.waitFor(() => expect(relay.app.topology.node('replica2')!.fresh).toBe(true), { timeout: 10_000, interval: 50 });
    const c = new pg.Client({ connectionString: relay.url() });
    c.on('error', () => undefined);
    onTestFinished(() => c.end().catch(() => undefined));
    await c.connect();
    for (let i = 0; i < 5; i++) {
      const id = nextId++;
      await c.query('INSERT INTO ryw (id, client) VALUES ($1, 0)', [id]);
      const started = performance.now();
      const row = (await c.query<{ n: number; port: number }>(READ, [id])).rows[0]!;
      const waited = performance.now() - started;
      expect(row.n).toBe(1);
      expect(row.port).toBe(ports.primary);
      expect(waited).toBeGreaterThanOrEqual(FENCE_WAIT_MS - 5);
      expect(waited).toBeLessThan(FENCE_WAIT_MS + 2_000);
    }
    expect(relay.app.topology.node('replica2')!.fresh).toBe(true);
    expect(await fenceWaits(relay, 'primary')).toBe(5);
    expect(await fenceWaits(relay, 'replica')).toBe(0);
  }, 60_000);
});
