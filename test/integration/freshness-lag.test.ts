import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { stringify } from 'yaml';
import { parseConfig } from '../../src/config/load.js';
import { LocalCluster } from '../../src/local/cluster.js';
import { relayDocument, startRelay, type Relay } from '../support/relay.js';
import { setApplyDelay } from '../support/apply-delay.js';

// Lag-aware balancing against a cluster of our own (primary + two async replicas, no standby):
// these tests pause replay, so they cannot use the shared cluster. Where a read ran is read on
// the server side with inet_server_port().

const LAG_INTERVAL_MS = 250;
const MAX_LAG_MS = 1000;
const WAIT = { timeout: 30_000, interval: 50 };

let cluster: LocalCluster;
let ports: { primary: number; replica1: number; replica2: number };

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: false });
  ports = { primary: cluster.node('primary').port, replica1: cluster.node('replica1').port, replica2: cluster.node('replica2').port };
  await cluster.query('primary', 'CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())');
  await cluster.waitForReplay('replica1');
  await cluster.waitForReplay('replica2');
});

afterAll(async () => {
  await cluster?.stop();
});

async function relayWith(routing: Record<string, unknown>): Promise<Relay> {
  const relay = await startRelay(cluster, { routing: { lag_interval_ms: LAG_INTERVAL_MS, max_lag_ms: MAX_LAG_MS, ...routing } });
  onTestFinished(() => relay.stop());
  return relay;
}

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  onTestFinished(() => c.end().catch(() => undefined));
  await c.connect();
  return c;
}

/** Inserts a row on the primary every few ms until stopped, so that a paused replica falls behind. */
async function startWriter(): Promise<{ stop(): Promise<number> }> {
  const c = await client(cluster.url('primary'));
  let running = true;
  let rows = 0;
  const loop = (async () => {
    while (running) {
      await c.query('INSERT INTO ticks DEFAULT VALUES');
      rows++;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const stop = async () => {
    running = false;
    await loop;
    return rows;
  };
  onTestFinished(() => stop().then(() => undefined));
  return { stop };
}

async function portOf(c: pg.Client, sql = 'SELECT inet_server_port() AS port'): Promise<number> {
  return (await c.query<{ port: number }>(sql)).rows[0]!.port;
}

describe('balancing over fresh replicas', () => {
  for (const balance of ['latency', 'round_robin'] as const) {
    it(`${balance}: 10,000 reads from 16 clients spread over both replicas`, async () => {
      const relay = await relayWith({ consistency: 'eventual', balance });
      const clients = await Promise.all(Array.from({ length: 16 }, () => client(relay.url())));
      const byPort = new Map<number, number>();
      await Promise.all(
        clients.map(async (c) => {
          for (let i = 0; i < 625; i++) {
            const port = await portOf(c);
            byPort.set(port, (byPort.get(port) ?? 0) + 1);
          }
        }),
      );
      const total = [...byPort.values()].reduce((a, b) => a + b, 0);
      const share = (port: number) => (byPort.get(port) ?? 0) / total;
      console.log(`[freshness] ${balance}: replica1 ${byPort.get(ports.replica1) ?? 0}, replica2 ${byPort.get(ports.replica2) ?? 0}, primary ${byPort.get(ports.primary) ?? 0} of ${total} reads`);
      expect(total).toBe(10_000);
      expect(share(ports.replica1)).toBeGreaterThanOrEqual(0.35);
      expect(share(ports.replica1)).toBeLessThanOrEqual(0.65);
      expect(share(ports.replica2)).toBeGreaterThanOrEqual(0.35);
      expect(share(ports.replica2)).toBeLessThanOrEqual(0.65);
    });
  }
});

describe('a replica whose replay is paused', () => {
  it('gets no reads once it lacks a write, its lag keeps growing, and it reads again after resume', async () => {
    const relay = await relayWith({ consistency: 'eventual', balance: 'round_robin' });
    const node = relay.app.topology.node('replica1')!;
    expect(node.fresh).toBe(true);
    const transitions = watchFreshness(relay, 'replica1');

    const writer = await startWriter();
    await cluster.pauseReplay('replica1');
    onTestFinished(() => cluster.resumeReplay('replica1'));
    // the first write replica1 does not have: from then on it is behind and paused
    // (none yet when replay paused before the writer's first row arrived: every row is missing)
    const [last] = await cluster.query<{ at: Date | null }>('replica1', 'SELECT max(at) AS at FROM ticks');
    const since = last!.at ?? new Date(0);
    await vi.waitFor(async () => {
      const [row] = await cluster.query<{ n: number }>('primary', 'SELECT count(*)::int AS n FROM ticks WHERE at > $1', [since]);
      expect(row!.n).toBeGreaterThan(0);
    }, WAIT);
    const [firstMissing] = await cluster.query<{ at: Date }>('primary', 'SELECT min(at) AS at FROM ticks WHERE at > $1', [since]);
    const behindSince = firstMissing!.at.getTime();

    // reads keep flowing through pgrelay meanwhile
    const reader = await client(relay.url());
    const reads: { sentAt: number; port: number }[] = [];
    await vi.waitFor(
      async () => {
        const sentAt = Date.now();
        reads.push({ sentAt, port: await portOf(reader) });
        expect(transitions.excludedAt).toBeDefined();
        // and past max_lag_ms, so that the lag figure can be checked too
        expect(Date.now() - behindSince).toBeGreaterThan(MAX_LAG_MS + 500);
        expect(reads.filter((r) => r.sentAt > transitions.excludedAt!).length).toBeGreaterThan(10);
      },
      { timeout: 30_000, interval: 5 },
    );
    const excludedAt = transitions.excludedAt!;
    console.log(`[freshness] paused replica1 excluded ${excludedAt - behindSince} ms after the first write it lacks (lag_interval_ms=${LAG_INTERVAL_MS}); reason: ${transitions.reason}`);
    expect(transitions.reason).toMatch(/replay is paused/);
    expect(excludedAt - behindSince).toBeLessThan(5000);
    // no read sent after the exclusion reached replica1
    const after = reads.filter((r) => r.sentAt > excludedAt);
    expect(after.filter((r) => r.port !== ports.replica2)).toEqual([]);
    // the time lag keeps growing while paused: pgrelay's figure against the rows' own timestamps
    const lag = (await relay.app.metrics.replicaLagSeconds.get()).values.find((v) => v.labels.node === 'replica1')!.value * 1000;
    const observed = Date.now() - behindSince;
    console.log(`[freshness] paused replica1: pgrelay_replica_lag_seconds ${Math.round(lag)} ms, observed ${observed} ms`);
    expect(lag).toBeGreaterThan(MAX_LAG_MS);
    expect(Math.abs(observed - lag)).toBeLessThan(1500);

    await cluster.resumeReplay('replica1');
    const resumedAt = Date.now();
    await vi.waitFor(async () => expect(await portOf(reader)).toBe(ports.replica1), WAIT);
    console.log(`[freshness] replica1 back in ${transitions.includedAt! - resumedAt} ms after pg_wal_replay_resume()`);
    expect(node.fresh).toBe(true);
    await writer.stop();
  });
});

describe('a replica that falls behind (recovery_min_apply_delay)', () => {
  it('gets no reads once its lag passes max_lag_ms, and reads again when it catches up', async () => {
    const relay = await relayWith({ consistency: 'eventual', balance: 'round_robin' });
    const transitions = watchFreshness(relay, 'replica1');
    const writer = await startWriter();
    // an independent observer of replica1's lag: the newest row it shows, against the time the
    // primary wrote the next one (rows carry their clock_timestamp())
    const observer = await client(cluster.url('replica1'));
    const primary = await client(cluster.url('primary'));
    await setApplyDelay(cluster, 'replica1', '3s');
    onTestFinished(() => setApplyDelay(cluster, 'replica1', '0'));

    const reader = await client(relay.url());
    const reads: { sentAt: number; port: number }[] = [];
    let crossedAt: number | undefined;
    await vi.waitFor(
      async () => {
        const seenAt = Date.now();
        const { rows } = await observer.query<{ at: Date }>('SELECT max(at) AS at FROM ticks');
        const next = await primary.query<{ at: Date | null }>('SELECT min(at) AS at FROM ticks WHERE at > $1', [rows[0]!.at]);
        const lagMs = next.rows[0]!.at === null ? 0 : seenAt - next.rows[0]!.at.getTime();
        if (crossedAt === undefined && lagMs > MAX_LAG_MS) crossedAt = seenAt - (lagMs - MAX_LAG_MS);
        const sentAt = Date.now();
        reads.push({ sentAt, port: await portOf(reader) });
        expect(transitions.excludedAt).toBeDefined();
        expect(Date.now() - transitions.excludedAt!).toBeGreaterThan(500);
        expect(reads.filter((r) => r.sentAt > transitions.excludedAt!).length).toBeGreaterThan(10);
      },
      { timeout: 30_000, interval: 5 },
    );
    expect(crossedAt).toBeDefined();
    const delayMs = transitions.excludedAt! - crossedAt!;
    console.log(`[freshness] lagging replica1 excluded ${delayMs} ms after its lag crossed max_lag_ms=${MAX_LAG_MS} (lag_interval_ms=${LAG_INTERVAL_MS}; target ${LAG_INTERVAL_MS + 250} ms); reason: ${transitions.reason}`);
    expect(transitions.reason).toMatch(/exceeds max_lag_ms/);
    // generous bound (the target is one lag interval + 250 ms; the shared machine is busy)
    expect(delayMs).toBeLessThan(3000);
    // and not before the lag crossed the limit: the figure pgrelay acted on was over it, and the
    // independent observer saw the crossing no later than pgrelay's sample spacing (one lag
    // interval, its history's resolution) plus the observer's own 100 ms of query latency
    const judgedMs = Number(/lag (\d+) ms/.exec(transitions.reason ?? '')?.[1]);
    expect(judgedMs).toBeGreaterThan(MAX_LAG_MS);
    expect(delayMs).toBeGreaterThan(-(LAG_INTERVAL_MS + 100));
    const after = reads.filter((r) => r.sentAt > transitions.excludedAt!);
    expect(after.filter((r) => r.port !== ports.replica2)).toEqual([]);

    // a reload with a looser limit takes it back while it still lags about 3 s
    relay.app.reload(parseConfig(stringify(relayDocument(cluster, { routing: { consistency: 'eventual', balance: 'round_robin', lag_interval_ms: LAG_INTERVAL_MS, max_lag_ms: 10_000 } })), { source: 'test' }));
    await vi.waitFor(async () => expect(await portOf(reader)).toBe(ports.replica1), WAIT);
    expect(relay.app.topology.node('replica1')!.lagSeconds).toBeGreaterThan(1);
    relay.app.reload(relay.config);

    await setApplyDelay(cluster, 'replica1', '0');
    await vi.waitFor(async () => expect(await portOf(reader)).toBe(ports.replica1), WAIT);
    await writer.stop();
  });
});

/** When pgrelay takes a replica out of the read pool and puts it back, seen from inside the process. */
function watchFreshness(relay: Relay, name: string): { excludedAt?: number; includedAt?: number; reason?: string } {
  const node = relay.app.topology.node(name)!;
  const seen: { excludedAt?: number; includedAt?: number; reason?: string } = {};
  const onChange = () => {
    if (!node.fresh && seen.excludedAt === undefined) {
      seen.excludedAt = Date.now();
      seen.reason = node.staleReason;
    }
    if (node.fresh && seen.excludedAt !== undefined && seen.includedAt === undefined) seen.includedAt = Date.now();
  };
  relay.app.topology.on('change', onChange);
  onTestFinished(() => void relay.app.topology.off('change', onChange));
  return seen;
}

describe('every replica past max_lag', () => {
  it('reads go to the primary under fallback: primary and fail with 57P03 under fallback: error', async () => {
    const lenient = await relayWith({ consistency: 'eventual', fallback: 'primary' });
    const strict = await relayWith({ consistency: 'eventual', fallback: 'error' });
    const writer = await startWriter();
    await cluster.pauseReplay('replica1');
    onTestFinished(() => cluster.resumeReplay('replica1'));
    await cluster.pauseReplay('replica2');
    onTestFinished(() => cluster.resumeReplay('replica2'));
    await vi.waitFor(() => {
      for (const app of [lenient.app, strict.app]) for (const name of ['replica1', 'replica2']) expect(app.topology.node(name)!.fresh).toBe(false);
    }, WAIT);

    const a = await client(lenient.url());
    for (let i = 0; i < 20; i++) expect(await portOf(a)).toBe(ports.primary);
    const counted = (await lenient.app.metrics.primaryReads.get()).values.find((v) => v.labels.reason === 'lag');
    expect(counted!.value).toBeGreaterThanOrEqual(20);

    const b = await client(strict.url());
    const error = await b.query('SELECT inet_server_port()').then(
      () => undefined,
      (e: unknown) => e as pg.DatabaseError,
    );
    expect(error?.code).toBe('57P03');
    expect(error?.message).toMatch(/no replica can serve this read: every replica is stale.*routing\.fallback is error/);
    // the client connection stays usable, and writes still work
    expect((await b.query('INSERT INTO ticks DEFAULT VALUES RETURNING inet_server_port() AS port')).rows[0].port).toBe(ports.primary);

    await cluster.resumeReplay('replica1');
    await cluster.resumeReplay('replica2');
    await writer.stop();
    await vi.waitFor(async () => expect([ports.replica1, ports.replica2]).toContain(await portOf(b)), WAIT);
  });
});
