import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { startRelay, type Relay } from '../support/relay.js';
import { setApplyDelay } from '../support/apply-delay.js';

// Consistency modes against a cluster of our own whose two async replicas replay with an
// artificial delay (recovery_min_apply_delay): a read sent to a replica right after a write
// misses it, unless pgrelay holds it back. Each read reports the row and the server it ran on.

const APPLY_DELAY = '200ms';
const CLIENTS = 16;

let cluster: LocalCluster;
let primaryPort: number;
let nextId = 1;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: false });
  primaryPort = cluster.node('primary').port;
  await cluster.query('primary', 'CREATE TABLE rw (id bigint PRIMARY KEY, client int NOT NULL)');
  for (const name of ['replica1', 'replica2']) {
    await cluster.waitForReplay(name);
    await setApplyDelay(cluster, name, APPLY_DELAY);
  }
});

afterAll(async () => {
  await cluster?.stop();
});

async function relayWith(routing: Record<string, unknown>): Promise<Relay> {
  const relay = await startRelay(cluster, { routing });
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

const READ = 'SELECT count(*)::int AS n, inet_server_port() AS port FROM rw WHERE id = $1';

interface Tally {
  iterations: number;
  misses: number;
  onPrimary: number;
  onReplica: number;
  ms: number;
}

/** Each client loops: INSERT a row, then at once SELECT it; `iterations` in all. */
async function readYourWrites(relay: Relay, iterations: number): Promise<Tally> {
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => client(relay.url())));
  const tally: Tally = { iterations: 0, misses: 0, onPrimary: 0, onReplica: 0, ms: 0 };
  const started = Date.now();
  await Promise.all(
    clients.map(async (c, k) => {
      for (let i = k; i < iterations; i += CLIENTS) {
        const id = nextId++;
        await c.query('INSERT INTO rw (id, client) VALUES ($1, $2)', [id, k]);
        const row = (await c.query<{ n: number; port: number }>(READ, [id])).rows[0]!;
        tally.iterations++;
        if (row.n !== 1) tally.misses++;
        if (row.port === primaryPort) tally.onPrimary++;
        else tally.onReplica++;
      }
    }),
  );
  tally.ms = Date.now() - started;
  return tally;
}

describe('read-your-writes under replica lag', () => {
  it('session: 16 clients, 10,000 INSERT-then-SELECT, zero misses', async () => {
    const relay = await relayWith({ consistency: 'session' });
    const samplesBefore = relay.app.lagMonitor.primarySamples;
    const tally = await readYourWrites(relay, 10_000);
    const samples = relay.app.lagMonitor.primarySamples - samplesBefore;
    console.log(`[freshness] session: ${tally.iterations} iterations in ${tally.ms} ms, ${tally.misses} misses, reads on primary ${tally.onPrimary}, on replicas ${tally.onReplica}; ${samples} primary WAL position samples for 10000 writes`);
    expect(tally.iterations).toBe(10_000);
    expect(tally.misses).toBe(0);
    const consistency = (await relay.app.metrics.primaryReads.get()).values.find((v) => v.labels.reason === 'consistency');
    expect(consistency!.value).toBeGreaterThanOrEqual(tally.onPrimary);
  }, 120_000);

  it('session: a client that only writes asks for no WAL position per commit; its next read still sees its writes', async () => {
    // rounds of the lag monitor (each samples the primary) once a second only
    const relay = await relayWith({ consistency: 'session', lag_interval_ms: 1000 });
    const c = await client(relay.url());
    const samplesBefore = relay.app.lagMonitor.primarySamples;
    const started = performance.now();
    const WRITES = 200;
    let last = 0;
    for (let i = 0; i < WRITES; i++) {
      last = nextId++;
      // TPC-B-like: its reads (none here) would be inside the transaction, on the primary
      await c.query('BEGIN');
      await c.query('INSERT INTO rw (id, client) VALUES ($1, 2)', [last]);
      await c.query('COMMIT');
    }
    const ms = performance.now() - started;
    const samples = relay.app.lagMonitor.primarySamples - samplesBefore;
    console.log(`[freshness] session, write-only: ${WRITES} transactions in ${Math.round(ms)} ms, ${samples} primary WAL position samples`);
    // only the monitor's own rounds sampled the primary (before: one sample per commit, at most one per 5 ms)
    expect(samples).toBeLessThanOrEqual(Math.ceil(ms / 1000) + 2);
    // the read asks for the position now; the replicas, 200 ms behind, cannot have the last row yet
    const row = (await c.query<{ n: number; port: number }>(READ, [last])).rows[0]!;
    expect(row.n).toBe(1);
  });

  it('eventual: the same loop misses its own rows (so the test above can fail)', async () => {
    const relay = await relayWith({ consistency: 'eventual' });
    const tally = await readYourWrites(relay, 2_000);
    console.log(`[freshness] eventual: ${tally.iterations} iterations in ${tally.ms} ms, ${tally.misses} misses, reads on primary ${tally.onPrimary}, on replicas ${tally.onReplica}`);
    expect(tally.onReplica).toBeGreaterThan(0);
    expect(tally.misses).toBeGreaterThan(0);
  });

  it('session: a read after the write position is known and replayed goes to a replica', async () => {
    const relay = await relayWith({ consistency: 'session', lag_interval_ms: 50 });
    const c = await client(relay.url());
    const id = nextId++;
    await c.query('INSERT INTO rw (id, client) VALUES ($1, 0)', [id]);
    // once the replicas have replayed it (past the apply delay) and the monitor has seen that,
    // the client's reads leave the primary, and still see the row
    let row: { n: number; port: number };
    const deadline = Date.now() + 30_000;
    do row = (await c.query<{ n: number; port: number }>(READ, [id])).rows[0]!;
    while (row.port === primaryPort && Date.now() < deadline && (await new Promise((r) => setTimeout(r, 20)), true));
    expect(row.port).not.toBe(primaryPort);
    expect(row.n).toBe(1);
  });

  it('session: a write\'s reads run on the primary only until a replica has replayed it, then on replicas, by the servers\' own counters', async () => {
    const relay = await relayWith({ consistency: 'session', lag_interval_ms: 50 });
    const c = await client(relay.url());
    const before = await tableScans();
    const WRITES = 10;
    const reads: { port: number; n: number; ms: number }[] = [];
    let lastPrimaryMs = 0;
    for (let k = 0; k < WRITES; k++) {
      const id = nextId++;
      await c.query('INSERT INTO rw (id, client) VALUES ($1, 0)', [id]);
      const wrote = performance.now();
      const read = async () => {
        const row = (await c.query<{ n: number; port: number }>(READ, [id])).rows[0]!;
        reads.push({ ...row, ms: performance.now() - wrote });
        return row;
      };
      // reads at once and then every 20 ms until one runs on a replica (once one has replayed the write) …
      await vi.waitFor(async () => expect((await read()).port).not.toBe(primaryPort), { timeout: 10_000, interval: 20 });
      lastPrimaryMs = Math.max(lastPrimaryMs, ...reads.filter((r) => r.port === primaryPort).map((r) => r.ms));
      // … and from then on every read of it runs on a replica
      for (let i = 0; i < 5; i++) expect((await read()).port).not.toBe(primaryPort);
    }
    const onPrimary = reads.filter((r) => r.port === primaryPort).length;
    const onReplicas = reads.length - onPrimary;
    await c.end();
    await relay.stop(); // its server connections end: each node's counters are flushed
    let scans: Record<string, number> = {};
    await vi.waitFor(
      async () => {
        const after = await tableScans();
        scans = Object.fromEntries(Object.keys(after).map((k) => [k, after[k]! - before[k]!]));
        expect(scans.replica1! + scans.replica2!).toBe(onReplicas);
      },
      { timeout: 15_000, interval: 200 },
    );
    console.log(`[freshness] session, ${WRITES} writes: ${reads.length} reads, ${onPrimary} on the primary (the last ${Math.round(lastPrimaryMs)} ms after its write), ${onReplicas} on replicas; scans by the servers ${JSON.stringify(scans)}`);
    expect(reads.every((r) => r.n === 1)).toBe(true);
    expect(scans.primary).toBe(onPrimary);
    expect(onReplicas).toBeGreaterThanOrEqual(WRITES * 6);
    // the primary served a write's reads only while the replicas, 200 ms behind, could not have it yet (plus the monitor's sampling)
    expect(lastPrimaryMs).toBeLessThan(200 + 1_000);
  }, 120_000);
});

/** Scans of the table on each node, as that node counts them (pg_stat_user_tables). */
async function tableScans(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const name of ['primary', 'replica1', 'replica2']) {
    const [row] = await cluster.query<{ n: string }>(name, "SELECT pg_stat_clear_snapshot(), (SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = 'rw')::text AS n", [], { superuser: true });
    out[name] = Number(row!.n);
  }
  return out;
}

/** Client A writes, then tells B (in this process), which reads at once (and every tenth time, again 500 ms later). */
async function writeThenOtherReads(relay: Relay, iterations: number): Promise<Tally> {
  const [a, b] = await Promise.all([client(relay.url()), client(relay.url())]);
  const tally: Tally = { iterations: 0, misses: 0, onPrimary: 0, onReplica: 0, ms: 0 };
  const started = Date.now();
  for (let i = 0; i < iterations; i++) {
    const id = nextId++;
    await a.query('INSERT INTO rw (id, client) VALUES ($1, 1)', [id]);
    const reads = [(await b.query<{ n: number; port: number }>(READ, [id])).rows[0]!];
    // now and then B reads again a while later: replicas have replayed the write by then, and
    // B's reads may use them again
    if (i % 10 === 9) {
      await new Promise((r) => setTimeout(r, 500));
      reads.push((await b.query<{ n: number; port: number }>(READ, [id])).rows[0]!);
    }
    for (const row of reads) {
      tally.iterations++;
      if (row.n !== 1) tally.misses++;
      if (row.port === primaryPort) tally.onPrimary++;
      else tally.onReplica++;
    }
  }
  tally.ms = Date.now() - started;
  return tally;
}

describe('global consistency', () => {
  it('client B sees what client A wrote the moment A is answered: zero misses', async () => {
    const relay = await relayWith({ consistency: 'global', lag_interval_ms: 50 });
    const tally = await writeThenOtherReads(relay, 300);
    console.log(`[freshness] global: ${tally.iterations} B reads of A's rows in ${tally.ms} ms, ${tally.misses} misses, B reads on primary ${tally.onPrimary}, on replicas ${tally.onReplica}`);
    expect(tally.misses).toBe(0);
    expect(tally.onReplica).toBeGreaterThan(0);
  });

  it('under session consistency B is not covered by A\'s writes (so the test above can fail)', async () => {
    const relay = await relayWith({ consistency: 'session', lag_interval_ms: 50 });
    const tally = await writeThenOtherReads(relay, 100);
    console.log(`[freshness] session, A writes/B reads: ${tally.misses} misses of ${tally.iterations}`);
    expect(tally.misses).toBeGreaterThan(0);
  });
});

describe('per-statement max_lag_ms hint', () => {
  it('tightens or loosens the lag limit for one read', async () => {
    // replicas lag about the apply delay (200 ms) while writes flow
    const relay = await relayWith({ consistency: 'eventual', max_lag_ms: 1000, lag_interval_ms: 50 });
    const writer = await client(cluster.url('primary'));
    let running = true;
    const writes = (async () => {
      while (running) {
        await writer.query('INSERT INTO rw (id, client) VALUES ($1, 2)', [nextId++]);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    onTestFinished(async () => {
      running = false;
      await writes;
    });
    const c = await client(relay.url());
    const where = async (sql: string) => {
      const counts = { primary: 0, replica: 0 };
      for (let i = 0; i < 50; i++) {
        const port = (await c.query<{ port: number }>(sql)).rows[0]!.port;
        if (port === primaryPort) counts.primary++;
        else counts.replica++;
      }
      return counts;
    };
    // wait until the monitor sees the delay-induced lag
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const lags = ['replica1', 'replica2'].map((n) => relay.app.topology.node(n)!.lagSeconds ?? 0);
      if (lags.every((l) => l > 0.1)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const plain = await where('SELECT inet_server_port() AS port');
    const tight = await where('/* pgrelay:max_lag_ms=20 */ SELECT inet_server_port() AS port');
    const loose = await where('/* pgrelay:max_lag_ms=60000 */ SELECT inet_server_port() AS port');
    console.log(`[freshness] hint: plain ${JSON.stringify(plain)}, max_lag_ms=20 ${JSON.stringify(tight)}, max_lag_ms=60000 ${JSON.stringify(loose)}`);
    expect(plain.replica).toBeGreaterThan(40);
    expect(tight.primary).toBeGreaterThan(40);
    expect(loose.replica).toBeGreaterThan(40);
    running = false;
    await writes;
  });
});
