/**
 * Issue 11: two pgrelays follow one Patroni cluster (etcd + three PostgreSQL 15 nodes, synchronous
 * mode). The tests run in order on one cluster: topology, kill -9 of the leader under load, the
 * killed node's rejoin, a switchover through pgrelay's admin API under load.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Load } from '../support/failover-load.js';
import { PatroniCluster, queryUrl, startPatroniRelay } from '../support/patroni-cluster.js';
import { adminRequest, type Relay } from '../support/relay.js';

const TABLE = 'patroni_load';
/** SQLSTATEs a write may get while the leader dies: connection lost (08…), shutting down (57P01-3) */
const FAILOVER_ERROR = /^(08|57P0)/;

let cluster: PatroniCluster;
const relays: Relay[] = [];
/** the leader killed by the failover test, restarted by the rejoin test */
let killed: string | undefined;

/** A client connected through a relay and left idle, to check that it survives. */
async function idleClient(relay: Relay): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url() });
  client.on('error', () => {});
  await client.connect();
  await client.query('SELECT 1');
  return client;
}

describe('pgrelay following Patroni (failover.mode patroni)', () => {
  beforeAll(async () => {
    cluster = await PatroniCluster.create();
    for (let i = 0; i < 2; i++) relays.push(await startPatroniRelay(cluster));
    await queryUrl(relays[0]!.url(), Load.createTableSql(TABLE));
  }, 240_000);

  afterAll(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    await cluster?.stop();
  }, 60_000);

  it('takes its nodes and its primary from Patroni; writes go to the leader, reads to fresh replicas', async () => {
    const leader = (await cluster.leader())!.name;
    for (const relay of relays) {
      const { topology } = relay.app;
      expect([...topology.nodes.keys()].sort()).toEqual(cluster.memberNames().sort());
      expect(topology.primaryName).toBe(leader);
      for (const name of cluster.memberNames()) expect(topology.node(name)!.port).toBe(cluster.port(name));
      const status = (await (await fetch(`${relay.adminUrl}/status`)).json()) as { primary: string; patroni: { leader: string; members: { name: string }[]; error: string | null } };
      expect(status.primary).toBe(leader);
      expect(status.patroni.leader).toBe(leader);
      expect(status.patroni.error).toBeNull();
      expect(status.patroni.members.map((m) => m.name).sort()).toEqual(cluster.memberNames().sort());
      const [write] = await queryUrl<{ port: number }>(relay.url(), `INSERT INTO ${TABLE} (writer, seq) VALUES (-1, 0) RETURNING inet_server_port() AS port`);
      expect(write!.port).toBe(cluster.port(leader));
      // the replicas serve reads once the lag monitor vouches for them
      await vi.waitFor(() => {
        const fresh = [...topology.nodes.values()].filter((n) => n.name !== leader && n.fresh && n.replicating);
        expect(fresh.length).toBe(2);
      }, { timeout: 30_000, interval: 100 });
      const replicaPorts = new Set(cluster.memberNames().filter((n) => n !== leader).map((n) => cluster.port(n)));
      const [read] = await queryUrl<{ port: number }>(relay.url(), 'SELECT inet_server_port() AS port');
      expect(replicaPorts.has(read!.port)).toBe(true);
    }
  }, 60_000);

  it('a config reload keeps Patroni\'s nodes and primary; nodes: entries only give weights', async () => {
    const relay = relays[1]!;
    const { topology } = relay.app;
    const leader = topology.primaryName!;
    const replica = cluster.memberNames().find((n) => n !== leader)!;
    const before = new Map([...topology.nodes.values()].map((n) => [n.name, { up: n.up, fresh: n.fresh }]));
    relay.app.reload({ ...relay.config, nodes: [{ name: replica, host: '192.0.2.1', port: 5432, role: 'primary', weight: 5 }] });
    expect([...topology.nodes.keys()].sort()).toEqual(cluster.memberNames().sort());
    expect(topology.primaryName).toBe(leader);
    const node = topology.node(replica)!;
    expect([node.host, node.port, node.weight]).toEqual(['127.0.0.1', cluster.port(replica), 5]);
    for (const [name, state] of before) expect({ up: topology.node(name)!.up, fresh: topology.node(name)!.fresh }).toEqual(state);
    const [write] = await queryUrl<{ port: number }>(relay.url(), `INSERT INTO ${TABLE} (writer, seq) VALUES (-5, 0) RETURNING inet_server_port() AS port`);
    expect(write!.port).toBe(cluster.port(leader));
    relay.app.reload(relay.config);
    expect(topology.node(replica)!.weight).toBe(1);
  }, 30_000);

  it('kill -9 of the leader: both pgrelays write to the new leader, every acknowledged id is there, idle clients survive', async () => {
    const oldLeader = (await cluster.leader())!.name;
    const oldPort = cluster.port(oldLeader);
    const loads = relays.map((r) => new Load(r.url(), TABLE));
    const idle = await Promise.all(relays.map(idleClient));
    try {
      loads.forEach((load) => load.start(4, 2));
      await vi.waitFor(() => loads.forEach((l) => expect(l.acks.length).toBeGreaterThan(20)), { timeout: 20_000, interval: 50 });

      const killStart = performance.now();
      killed = await cluster.killLeader();
      // every process of the old leader is gone from here on
      const killedAt = performance.now();
      // Patroni elects the synchronous standby once the leader key expires (ttl 10 s)
      const newLeader = await vi.waitFor(async () => {
        const leader = await cluster.leader();
        expect(leader && leader.name !== oldLeader).toBe(true);
        return leader!.name;
      }, { timeout: 60_000, interval: 200 });
      const newPort = cluster.port(newLeader);
      // both pgrelays' writers get through again, on the new leader
      await vi.waitFor(() => loads.forEach((l) => expect(l.acksAfter(killedAt).filter((a) => a.port === newPort).length).toBeGreaterThan(20)), { timeout: 60_000, interval: 100 });
      await Promise.all(loads.map((l) => l.stop()));

      for (const [i, load] of loads.entries()) {
        const relay = relays[i]!;
        expect(relay.app.topology.primaryName).toBe(newLeader);
        // no unit reached the old leader after the kill: every acknowledged write sent afterwards was committed by the new leader
        expect(load.acksAfter(killedAt).every((a) => a.port === newPort)).toBe(true);
        expect(load.acks.filter((a) => a.sentAt < killStart).every((a) => a.port === oldPort)).toBe(true);
        // a write never reached a node in recovery (25006): pgrelay waited for Patroni's promotion to complete
        const writeErrors = load.errorsOf('writer');
        expect(writeErrors.filter((e) => !FAILOVER_ERROR.test(e.code ?? '')), JSON.stringify(writeErrors.slice(0, 5))).toEqual([]);
        expect(load.reconnects).toBe(0);
        // reads were held or served elsewhere, never failed
        expect(load.errorsOf('reader'), JSON.stringify(load.errorsOf('reader').slice(0, 5))).toEqual([]);
        const ids = load.acks.map((a) => a.id);
        const [present] = await queryUrl<{ n: string }>(cluster.url(newLeader), `SELECT count(*) AS n FROM ${TABLE} WHERE id = ANY($1::bigint[])`, [ids]);
        expect(Number(present!.n)).toBe(ids.length);
        const writes = load.acks.map((a) => a.at);
        const gapMs = Math.max(...writes.slice(1).map((at, k) => at - writes[k]!));
        console.log(`relay ${i}: ${load.acks.length} acknowledged writes (${load.acksAfter(killedAt).length} after the kill), ${load.reads} reads, ${writeErrors.length} write errors (${[...new Set(writeErrors.map((e) => e.code))].join(', ')}), longest gap between acknowledged writes ${Math.round(gapMs)} ms`);
      }
      // idle clients of both pgrelays were kept across the failover
      for (const client of idle) {
        const [row] = (await client.query<{ port: number }>('SELECT inet_server_port() AS port')).rows;
        expect(row!.port).toBeTypeOf('number');
        const [write] = (await client.query<{ port: number }>(`INSERT INTO ${TABLE} (writer, seq) VALUES (-2, 0) RETURNING inet_server_port() AS port`)).rows;
        expect(write!.port).toBe(newPort);
      }
    } finally {
      await Promise.all(loads.map((l) => l.stop()));
      await Promise.all(idle.map((c) => c.end().catch(() => {})));
    }
  }, 150_000);

  it('the killed node rejoins (Patroni rewinds it) and gets reads once it is fresh, never writes', async () => {
    expect(killed).toBeDefined();
    const rejoining = killed!;
    const leader = (await cluster.leader())!.name;
    await cluster.restartMember(rejoining);
    await cluster.waitForHealthy(120_000);
    for (const relay of relays) {
      await vi.waitFor(() => {
        const node = relay.app.topology.node(rejoining);
        expect(node?.up && !node.fenced && node.inRecovery === true && node.fresh && node.replicating).toBe(true);
      }, { timeout: 60_000, interval: 200 });
    }
    const port = cluster.port(rejoining);
    for (const relay of relays) {
      const client = new pg.Client({ connectionString: relay.url() });
      client.on('error', () => {});
      await client.connect();
      try {
        // the balancer weighs latency, so a node just back may get few reads at first: bounded by time, not tries
        let served = 0;
        await vi.waitFor(
          async () => {
            const [row] = (await client.query<{ port: number }>('SELECT inet_server_port() AS port')).rows;
            if (row!.port === port) served++;
            expect(served).toBe(5);
          },
          { timeout: 30_000, interval: 10 },
        );
        const [write] = (await client.query<{ port: number }>(`INSERT INTO ${TABLE} (writer, seq) VALUES (-3, 0) RETURNING inet_server_port() AS port`)).rows;
        expect(write!.port).toBe(cluster.port(leader));
      } finally {
        await client.end().catch(() => {});
      }
    }
    // the rejoined node took no write: every row it has came from the leader by replication
    const [rows] = await queryUrl<{ n: string }>(cluster.url(rejoining), `SELECT count(*) AS n FROM ${TABLE} WHERE writer = -3`);
    expect(Number(rows!.n)).toBeLessThanOrEqual(relays.length);
  }, 180_000);

  it('switchover through pgrelay\'s admin API under load on both pgrelays: zero client errors, zero lost writes', async () => {
    const before = await cluster.waitForHealthy(60_000);
    const oldLeader = before.find((m) => m.role === 'leader')!.name;
    const syncStandby = before.find((m) => m.role === 'sync_standby')!.name;
    const loads = relays.map((r) => new Load(r.url(), TABLE));
    try {
      loads.forEach((load) => load.start(4, 2));
      await vi.waitFor(() => loads.forEach((l) => expect(l.acks.length).toBeGreaterThan(20)), { timeout: 20_000, interval: 50 });
      const askedAt = performance.now();
      const response = await adminRequest(relays[0]!.adminUrl, 'POST', '/admin/switchover', '', { signal: AbortSignal.timeout(90_000) });
      const answer = (await response.json()) as Record<string, unknown>;
      expect(response.status, JSON.stringify(answer)).toBe(200);
      expect(answer['from']).toBe(oldLeader);
      expect(answer['to']).toBe(syncStandby);
      const newPort = cluster.port(syncStandby);
      await vi.waitFor(() => relays.forEach((r) => expect(r.app.topology.primaryName).toBe(syncStandby)), { timeout: 30_000, interval: 100 });
      await vi.waitFor(() => loads.forEach((l) => expect(l.acksAfter(askedAt).filter((a) => a.port === newPort).length).toBeGreaterThan(20)), { timeout: 30_000, interval: 100 });
      await Promise.all(loads.map((l) => l.stop()));
      expect((await cluster.leader())!.name).toBe(syncStandby);
      for (const [i, load] of loads.entries()) {
        expect(load.errors, JSON.stringify(load.errors.slice(0, 5))).toEqual([]);
        expect(load.reconnects).toBe(0);
        const ids = load.acks.map((a) => a.id);
        const [present] = await queryUrl<{ n: string }>(cluster.url(syncStandby), `SELECT count(*) AS n FROM ${TABLE} WHERE id = ANY($1::bigint[])`, [ids]);
        expect(Number(present!.n)).toBe(ids.length);
        const writes = load.acks.map((a) => a.at);
        const gapMs = Math.max(...writes.slice(1).map((at, k) => at - writes[k]!));
        console.log(`switchover, relay ${i}: ${load.acks.length} acknowledged writes, ${load.reads} reads, no errors, longest pause between acknowledged writes ${Math.round(gapMs)} ms (pgrelay reports paused ${answer['pausedMs']} ms)`);
      }
    } finally {
      await Promise.all(loads.map((l) => l.stop()));
    }
  }, 150_000);

  it('a node promoted behind Patroni\'s back (newer timeline, not the leader) is fenced: no writes, no reads', async () => {
    const members = await cluster.waitForHealthy(60_000);
    const leader = members.find((m) => m.role === 'leader')!.name;
    const rogue = members.find((m) => m.role === 'replica')!.name;
    // the rogue streams the leader's timeline, so that its promotion makes a newer one
    const [{ timeline: leaderTimeline }] = (await queryUrl<{ timeline: number }>(cluster.url(leader), "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline")) as [{ timeline: number }];
    await vi.waitFor(async () => {
      const [receiver] = await cluster.query<{ tli: number }>(rogue, "SELECT received_tli AS tli FROM pg_stat_wal_receiver WHERE status = 'streaming'", [], { superuser: true, database: 'postgres' });
      expect(receiver?.tli).toBe(leaderTimeline);
    }, { timeout: 30_000, interval: 200 });
    // maintenance mode, so that Patroni leaves the split brain alone
    await cluster.setPaused(true);
    await cluster.promoteByHand(rogue);
    const [rogueState] = await queryUrl<{ recovery: boolean; timeline: number }>(
      cluster.url(rogue),
      "SELECT pg_is_in_recovery() AS recovery, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline",
    );
    expect(rogueState!.recovery).toBe(false);
    for (const relay of relays) {
      await vi.waitFor(() => expect(relay.app.topology.node(rogue)?.fenced).toBe(true), { timeout: 20_000, interval: 100 });
      // a newer timeline than the leader's (what follow mode would take for a promotion), yet writes stay with Patroni's leader
      expect(rogueState!.timeline).toBeGreaterThan(leaderTimeline);
      expect(relay.app.topology.primaryName).toBe(leader);
      const client = new pg.Client({ connectionString: relay.url() });
      client.on('error', () => {});
      await client.connect();
      try {
        for (let i = 0; i < 50; i++) {
          const [read] = (await client.query<{ port: number }>('SELECT inet_server_port() AS port')).rows;
          expect(read!.port).not.toBe(cluster.port(rogue));
        }
        const [write] = (await client.query<{ port: number }>(`INSERT INTO ${TABLE} (writer, seq) VALUES (-4, 0) RETURNING inet_server_port() AS port`)).rows;
        expect(write!.port).toBe(cluster.port(leader));
      } finally {
        await client.end().catch(() => {});
      }
    }
    const [rogueWrites] = await queryUrl<{ n: string }>(cluster.url(rogue), `SELECT count(*) AS n FROM ${TABLE} WHERE writer = -4`);
    expect(Number(rogueWrites!.n)).toBe(0);
  }, 90_000);
});
