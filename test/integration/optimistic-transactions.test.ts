import { execFile } from 'node:child_process';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { LocalCluster } from '../../src/local/cluster.js';
import { leastPrivilegeRoles } from '../support/least-privilege-roles.js';
import { errorFields, RawClient, serialize } from '../support/protocol-client.js';
import { startRelay, type Relay } from '../support/relay.js';
import { grew, transactionOutcomes } from '../support/transaction-outcomes.js';

// Optimistic transactions (routing.transactions: optimistic, DESIGN.md) against a cluster of our
// own (primary, two async replicas), through the least-privilege application role `shop`. A
// transaction begun with a plain BEGIN whose first statement is a plain read starts on the
// replica; before its first statement that is not a plain read it moves to the primary, where
// its earlier reads run again and are compared; a difference is 40001 and nothing is written.
// Where statements ran is read on the servers: per-node pg_stat_user_tables scan counters of the
// table read (opt_items), and current_setting('port') where the statement may carry it.

const PASSWORD = { shop: 'shop-pw-71', monitor: 'monitor-pw-72', failover: 'failover-pw-73' };
const WAIT = { timeout: 20_000, interval: 100 };
const NODES = ['primary', 'replica1', 'replica2'];
const REPLICAS = ['replica1', 'replica2'];
let cluster: LocalCluster;
const ports: Record<string, number> = {};
let relay: Relay;

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: false, settings: { max_prepared_transactions: 4 } });
  for (const name of NODES) ports[name] = cluster.node(name).port;
  for (const sql of leastPrivilegeRoles(PASSWORD)) await cluster.query('primary', sql, [], { superuser: true, database: 'postgres' });
  await cluster.query('primary', 'CREATE TABLE opt_items (id int PRIMARY KEY, v int NOT NULL)');
  await cluster.query('primary', 'INSERT INTO opt_items SELECT g, g * 10 FROM generate_series(1, 20) g');
  await cluster.query('primary', 'CREATE TABLE opt_log (id serial PRIMARY KEY, note text NOT NULL)');
  await cluster.query('primary', 'CREATE TABLE opt_sp (id int PRIMARY KEY, v int NOT NULL)');
  await cluster.query('primary', 'INSERT INTO opt_sp SELECT g, g * 10 FROM generate_series(1, 3) g');
  await cluster.query('primary', 'GRANT SELECT, INSERT, UPDATE ON opt_items, opt_log, opt_sp TO shop; GRANT USAGE ON SEQUENCE opt_log_id_seq TO shop');
  await cluster.waitForReplay('replica1');
  await cluster.waitForReplay('replica2');
  relay = await relayWith({});
}, 120_000);

afterAll(async () => {
  await relay?.stop();
  await cluster?.stop();
});

async function relayWith(routing: Record<string, unknown>): Promise<Relay> {
  const r = await startRelay(cluster, {
    users: [{ name: 'shop', password: PASSWORD.shop }],
    health: { user: 'pgrelay_monitor', password: PASSWORD.monitor },
    routing: { consistency: 'session', fence_wait_ms: 500, max_lag_ms: 60_000, lag_interval_ms: 100, ...routing },
  });
  await vi.waitFor(() => expect([r.app.topology.node('replica1')!.fresh, r.app.topology.node('replica2')!.fresh]).toEqual([true, true]), WAIT);
  return r;
}

function shopUrl(r: Relay): string {
  return r.url({ user: 'shop', password: PASSWORD.shop });
}

async function client(r: Relay = relay): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: shopUrl(r) });
  c.on('error', () => undefined);
  onTestFinished(() => c.end().catch(() => undefined));
  await c.connect();
  return c;
}

/** Scans of opt_items on each node so far (the server's own counters, flushed within ~1 s of a backend going idle). */
async function scans(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const name of NODES) {
    const [row] = await cluster.query<{ n: string }>(name, "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) AS n FROM pg_stat_user_tables WHERE relname = 'opt_items'");
    out[name] = Number(row!.n);
  }
  return out;
}

/** Waits until the scan counters grew by at least `by` on the primary and on the replicas together. */
async function scansGrew(before: Record<string, number>, by: { primary?: number; replicas?: number }): Promise<void> {
  const onReplicas = (counts: Record<string, number>): number => REPLICAS.reduce((n, name) => n + counts[name]!, 0);
  await vi.waitFor(async () => {
    const now = await scans();
    if (by.primary !== undefined) expect(now.primary! - before.primary!).toBeGreaterThanOrEqual(by.primary);
    if (by.replicas !== undefined) expect(onReplicas(now) - onReplicas(before)).toBeGreaterThanOrEqual(by.replicas);
  }, WAIT);
}

/** The port a statement reported is a replica's. */
function replicaPort(port: string | number): string {
  const name = REPLICAS.find((n) => ports[n] === Number(port));
  expect(name, `port ${port}`).toBeDefined();
  return name!;
}

function outcomes(r: Relay = relay): Promise<Record<string, number>> {
  return transactionOutcomes(r);
}

/** Server connections pgrelay saw lost so far (all nodes). */
async function serverErrors(r: Relay = relay): Promise<number> {
  return (await r.app.metrics.serverErrors.get()).values.reduce((n, v) => n + v.value, 0);
}


async function spValue(id: number): Promise<number> {
  const [row] = await cluster.query<{ v: number }>('primary', 'SELECT v FROM opt_sp WHERE id = $1', [id]);
  return row!.v;
}

async function valueOf(id: number): Promise<number> {
  const [row] = await cluster.query<{ v: number }>('primary', 'SELECT v FROM opt_items WHERE id = $1', [id]);
  return row!.v;
}

describe('optimistic transactions', () => {
  it('pg: a transaction that only reads runs and commits on the replica', async () => {
    const c = await client();
    const before = await scans();
    const metrics = await outcomes();
    await c.query('BEGIN');
    const read = await c.query<{ v: number }>('SELECT v FROM opt_items WHERE id = $1', [3]);
    expect(read.rows).toEqual([{ v: 30 }]);
    const simple = await c.query<{ n: string }>('SELECT count(*) AS n FROM opt_items');
    expect(simple.rows[0]!.n).toBe('20');
    const port = await c.query<{ port: string }>("SELECT current_setting('port') AS port");
    await c.query('COMMIT');
    replicaPort(port.rows[0]!.port);
    await scansGrew(before, { replicas: 2 });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 1 });
  });

  it('pg: read, then write: moves before the write, the read is verified on the primary, commits there', async () => {
    const c = await client();
    const before = await scans();
    const metrics = await outcomes();
    await c.query('BEGIN');
    const read = await c.query<{ v: number }>('SELECT v FROM opt_items WHERE id = $1', [4]);
    expect(read.rows).toEqual([{ v: 40 }]);
    await c.query('INSERT INTO opt_log (note) VALUES ($1)', ['moved-pg']);
    const port = await c.query<{ port: string }>("SELECT current_setting('port') AS port");
    await c.query('COMMIT');
    expect(Number(port.rows[0]!.port)).toBe(ports.primary);
    // the read ran on the replica, and once more on the primary (the check)
    await scansGrew(before, { replicas: 1, primary: 1 });
    expect(await cluster.query('primary', 'SELECT note FROM opt_log WHERE note = $1', ['moved-pg'])).toHaveLength(1);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
  });

  it('pg: a transaction setting right after BEGIN (SET TRANSACTION ISOLATION LEVEL, SET LOCAL, as ORMs send it) starts on the replica too; a write after it moves it with the setting; SERIALIZABLE starts on the primary', async () => {
    const c = await client();
    const port = async () => Number((await c.query<{ port: string }>("SELECT current_setting('port') AS port")).rows[0]!.port);
    // read-only: on the replica, the isolation level as asked
    let metrics = await outcomes();
    for (const setting of ['SET TRANSACTION ISOLATION LEVEL READ COMMITTED', 'SET TRANSACTION ISOLATION LEVEL REPEATABLE READ', "SET LOCAL statement_timeout = '5s'"]) {
      await c.query('START TRANSACTION');
      await c.query(setting);
      expect((await c.query<{ v: number }>('SELECT v FROM opt_items WHERE id = $1', [8])).rows).toEqual([{ v: 80 }]);
      replicaPort(await port());
      if (setting.includes('REPEATABLE')) expect((await c.query('SHOW transaction_isolation')).rows[0].transaction_isolation).toBe('repeatable read');
      await c.query('COMMIT');
    }
    expect(grew(metrics, await outcomes())).toEqual({ replica: 3 });
    // then a write: moved, the setting with it (it is run again on the primary), committed
    metrics = await outcomes();
    await c.query('BEGIN');
    await c.query("SET LOCAL statement_timeout = '4321ms'");
    expect((await c.query<{ v: number }>('SELECT v FROM opt_items WHERE id = $1', [8])).rows).toEqual([{ v: 80 }]);
    await c.query('INSERT INTO opt_log (note) VALUES ($1)', ['moved-with-set-local']);
    expect(await port()).toBe(ports.primary);
    expect((await c.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('4321ms');
    await c.query('COMMIT');
    expect(await cluster.query('primary', 'SELECT note FROM opt_log WHERE note = $1', ['moved-with-set-local'])).toHaveLength(1);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
    // a setting the replica would run otherwise than the primary: on the primary from the start
    metrics = await outcomes();
    for (const setting of ['SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', 'SET TRANSACTION READ WRITE']) {
      await c.query('BEGIN');
      await c.query(setting);
      expect(await port()).toBe(ports.primary);
      await c.query('COMMIT');
    }
    expect(grew(metrics, await outcomes())).toEqual({ primary: 2 });
    // the setting fails as on the primary: the server answers it, not pgrelay
    await c.query('BEGIN');
    await expect(c.query("SET LOCAL statement_timeout = 'soon'")).rejects.toMatchObject({ code: '22023' });
    await c.query('ROLLBACK');
  });

  it("pg: the row-level-security pattern (set_config('app.tenant', …, true) first in every transaction) starts on the replica; a write moves it, the setting with it", async () => {
    const c = await client();
    let metrics = await outcomes();
    for (let i = 0; i < 3; i++) {
      await c.query('BEGIN');
      expect((await c.query("SELECT set_config('app.tenant', $1, true) AS t", [`t${i}`])).rows).toEqual([{ t: `t${i}` }]);
      const read = await c.query<{ v: number; tenant: string; port: string }>("SELECT v, current_setting('app.tenant') AS tenant, current_setting('port') AS port FROM opt_items WHERE id = $1", [10]);
      expect(read.rows[0]).toMatchObject({ v: 100, tenant: `t${i}` });
      replicaPort(read.rows[0]!.port);
      await c.query('COMMIT');
    }
    expect(grew(metrics, await outcomes())).toEqual({ replica: 3 });
    metrics = await outcomes();
    await c.query('BEGIN');
    await c.query("SELECT set_config('app.tenant', 'moving', true)");
    expect((await c.query<{ v: number }>('SELECT v FROM opt_items WHERE id = $1', [10])).rows).toEqual([{ v: 100 }]);
    await c.query("INSERT INTO opt_log (note) VALUES (current_setting('app.tenant'))");
    expect((await c.query("SELECT current_setting('app.tenant') AS tenant, current_setting('port') AS port")).rows[0]).toEqual({ tenant: 'moving', port: String(ports.primary) });
    await c.query('COMMIT');
    expect(await cluster.query('primary', 'SELECT note FROM opt_log WHERE note = $1', ['moving'])).toHaveLength(1);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
  });

  it('pg: PREPARE TRANSACTION after reads (two-phase commit, as XA transaction managers send it) moves the transaction to the primary first; COMMIT PREPARED commits it there', async () => {
    const c = await client();
    const metrics = await outcomes();
    await c.query('BEGIN');
    expect((await c.query<{ v: number }>('SELECT v FROM opt_items WHERE id = $1', [9])).rows).toEqual([{ v: 90 }]);
    await c.query("INSERT INTO opt_log (note) VALUES ('two-phase')");
    await c.query("PREPARE TRANSACTION 'opt_2pc'");
    expect(await cluster.query('primary', "SELECT gid FROM pg_prepared_xacts WHERE gid = 'opt_2pc'")).toHaveLength(1);
    await c.query("COMMIT PREPARED 'opt_2pc'");
    expect(await cluster.query('primary', 'SELECT note FROM opt_log WHERE note = $1', ['two-phase'])).toHaveLength(1);
    // only reads before it: still prepared on the primary (a hot standby refuses it with 25006)
    await c.query('BEGIN');
    expect((await c.query<{ v: number }>('SELECT v FROM opt_items WHERE id = $1', [9])).rows).toEqual([{ v: 90 }]);
    await c.query("PREPARE TRANSACTION 'opt_2pc_read'");
    await c.query("ROLLBACK PREPARED 'opt_2pc_read'");
    expect(grew(metrics, await outcomes())).toEqual({ moved: 2 });
  });

  it('pg: another client changes a row the transaction read: 40001 at the write, nothing of it is written', async () => {
    const c = await client();
    const metrics = await outcomes();
    await c.query('BEGIN');
    const read = await c.query<{ v: number }>('SELECT v FROM opt_items WHERE id = $1', [5]);
    expect(read.rows).toEqual([{ v: 50 }]);
    // after the read, before the write
    await cluster.query('primary', 'UPDATE opt_items SET v = v + 1 WHERE id = 5');
    const error = await c.query('UPDATE opt_items SET v = 999 WHERE id = 6').then(
      () => undefined,
      (e: { code?: string; message: string }) => e,
    );
    expect(error?.code).toBe('40001');
    expect(error?.message).toMatch(/data it read changed/);
    // the transaction is failed, as after any error: statements fail until ROLLBACK
    await expect(c.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await c.query('ROLLBACK');
    expect(await valueOf(6)).toBe(60);
    expect(await valueOf(5)).toBe(51);
    expect(grew(metrics, await outcomes())).toEqual({ conflict: 1 });
    // the client goes on: its next transaction (a retry) runs on the primary and commits
    await c.query('BEGIN');
    expect((await c.query<{ v: number }>('SELECT v FROM opt_items WHERE id = $1', [5])).rows).toEqual([{ v: 51 }]);
    await c.query('UPDATE opt_items SET v = 61 WHERE id = 6');
    await c.query('COMMIT');
    expect(await valueOf(6)).toBe(61);
    await cluster.query('primary', 'UPDATE opt_items SET v = 50 WHERE id = 5; UPDATE opt_items SET v = 60 WHERE id = 6');
  });

  it('pg: savepoints, ROLLBACK TO and SET LOCAL stay on the replica and are carried to the primary in order', async () => {
    const c = await client();
    const metrics = await outcomes();
    await c.query('BEGIN');
    expect((await c.query<{ v: number }>('SELECT v FROM opt_items WHERE id = $1', [8])).rows).toEqual([{ v: 80 }]);
    await c.query("SET LOCAL app.tenant = 'acme'");
    await c.query('SAVEPOINT a');
    await c.query("SET LOCAL app.tenant = 'other'");
    expect((await c.query('SELECT v FROM opt_items WHERE id = 9')).rows).toEqual([{ v: 90 }]);
    await c.query('ROLLBACK TO SAVEPOINT a');
    await c.query('SAVEPOINT b');
    const onReplica = await c.query<{ tenant: string }>("SELECT current_setting('app.tenant') AS tenant");
    expect(onReplica.rows[0]).toEqual({ tenant: 'acme' });
    await c.query('ROLLBACK TO SAVEPOINT b');
    // moves here: on the primary, the SET LOCAL and both savepoints are there, in order
    await c.query('INSERT INTO opt_log (note) VALUES ($1)', ['savepoint-kept']);
    const onPrimary = await c.query<{ port: string; tenant: string }>("SELECT current_setting('port') AS port, current_setting('app.tenant') AS tenant");
    expect(onPrimary.rows[0]).toEqual({ port: String(ports.primary), tenant: 'acme' });
    await c.query('INSERT INTO opt_log (note) VALUES ($1)', ['savepoint-undone']);
    await c.query('ROLLBACK TO SAVEPOINT a');
    await c.query('INSERT INTO opt_log (note) VALUES ($1)', ['after-rollback-to']);
    await c.query('RELEASE SAVEPOINT a');
    await c.query('COMMIT');
    const notes = await cluster.query<{ note: string }>('primary', "SELECT note FROM opt_log WHERE note IN ('savepoint-kept', 'savepoint-undone', 'after-rollback-to') ORDER BY id");
    expect(notes.map((r) => r.note)).toEqual(['after-rollback-to']);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
  });

  it('pg: a SAVEPOINT right after BEGIN (pgjdbc autosave, nested transaction blocks) is held with it: the transaction still starts on the replica', async () => {
    const c = await client();
    const before = await scans();
    const metrics = await outcomes();
    await c.query('BEGIN');
    await c.query('SAVEPOINT outer_block');
    await c.query('SAVEPOINT "Inner Block"');
    const read = await c.query<{ v: number; port: string }>("SELECT v, current_setting('port') AS port FROM opt_items WHERE id = $1", [7]);
    expect(read.rows[0]!.v).toBe(70);
    replicaPort(read.rows[0]!.port);
    // both savepoints are there, on the replica
    await c.query('RELEASE SAVEPOINT "Inner Block"');
    await c.query('ROLLBACK TO SAVEPOINT outer_block');
    await c.query('COMMIT');
    await scansGrew(before, { replicas: 1 });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 1 });
    // a transaction that writes first: the BEGIN and SAVEPOINT go with the write, to the primary
    await c.query('BEGIN');
    await c.query('SAVEPOINT a');
    await c.query('UPDATE opt_sp SET v = 11 WHERE id = 1');
    await c.query('ROLLBACK TO SAVEPOINT a');
    await c.query('UPDATE opt_sp SET v = 12 WHERE id = 1');
    await c.query('COMMIT');
    expect(await spValue(1)).toBe(12);
    expect(grew(metrics, await outcomes())).toEqual({ replica: 1, primary: 1 });
  });

  it('pg: a statement that failed on the replica, rolled back to a savepoint, fails again on the primary when the transaction moves; the write commits', async () => {
    const c = await client();
    const metrics = await outcomes();
    await c.query('BEGIN');
    await c.query('SAVEPOINT s');
    expect((await c.query('SELECT v FROM opt_sp WHERE id = 2')).rows).toEqual([{ v: 20 }]);
    await expect(c.query('SELECT v / (v - 20) FROM opt_sp WHERE id = 2')).rejects.toMatchObject({ code: '22012' });
    await c.query('ROLLBACK TO SAVEPOINT s');
    expect((await c.query('SELECT v FROM opt_sp WHERE id = 2')).rows).toEqual([{ v: 20 }]);
    await c.query('UPDATE opt_sp SET v = 21 WHERE id = 2');
    await c.query('COMMIT');
    expect(await spValue(2)).toBe(21);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
  });

  it('pg: a statement that failed on the replica and would not fail on the primary (its row changed): 40001 at the write, nothing written', async () => {
    const c = await client();
    const metrics = await outcomes();
    await c.query('BEGIN');
    // the transaction's one difference on the primary is the failed statement's: it would not fail there
    expect((await c.query('SELECT v FROM opt_items WHERE id = 7')).rows).toEqual([{ v: 70 }]);
    await c.query('SAVEPOINT s');
    await expect(c.query('SELECT v / (v - 30) FROM opt_sp WHERE id = 3')).rejects.toMatchObject({ code: '22012' });
    await c.query('ROLLBACK TO SAVEPOINT s');
    await cluster.query('primary', 'UPDATE opt_sp SET v = 35 WHERE id = 3');
    await expect(c.query('UPDATE opt_sp SET v = 0 WHERE id = 3')).rejects.toMatchObject({ code: '40001' });
    await c.query('ROLLBACK');
    expect(await spValue(3)).toBe(35);
    expect(grew(metrics, await outcomes())).toEqual({ conflict: 1 });
  });

  it('pg: with no replica to read from (pgrelay in front of the primary alone), a transaction that reads, then writes runs on the primary from its start: nothing moves, and a row changed meanwhile is no conflict', async () => {
    const primaryOnly = { nodes: cluster.nodes.filter((n) => n.name === 'primary'), user: cluster.user, password: cluster.password, database: cluster.database };
    const r = await startRelay(primaryOnly, { users: [{ name: 'shop', password: PASSWORD.shop }], health: { user: 'pgrelay_monitor', password: PASSWORD.monitor } });
    onTestFinished(() => r.stop());
    const c = await client(r);
    const metrics = await outcomes(r);
    const before = await spValue(1);
    await c.query('BEGIN');
    expect((await c.query('SELECT v FROM opt_sp WHERE id = 1')).rows).toEqual([{ v: before }]);
    // another client changes the row read: under READ COMMITTED the transaction goes on, as on a direct connection
    await cluster.query('primary', 'UPDATE opt_sp SET v = v + 100 WHERE id = 1');
    await c.query('INSERT INTO opt_log (note) VALUES ($1)', ['primary-only']);
    await c.query('COMMIT');
    expect(await cluster.query('primary', "SELECT 1 FROM opt_log WHERE note = 'primary-only'")).toHaveLength(1);
    expect(grew(metrics, await outcomes(r))).toEqual({ primary: 1 });
  });

  it('pg: a read of the replica itself that answers differently on the primary is a conflict, not a wrong answer', async () => {
    const c = await client();
    await c.query('BEGIN');
    replicaPort((await c.query<{ port: string }>("SELECT current_setting('port') AS port")).rows[0]!.port);
    await expect(c.query('INSERT INTO opt_log (note) VALUES ($1)', ['never'])).rejects.toMatchObject({ code: '40001' });
    await c.query('ROLLBACK');
    expect(await cluster.query('primary', "SELECT 1 FROM opt_log WHERE note = 'never'")).toHaveLength(0);
  });

  it('pg: REPEATABLE READ and READ COMMITTED start on the replica and keep their level when moved; SERIALIZABLE runs on the primary', async () => {
    const c = await client();
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    const replica = await c.query<{ port: string; level: string }>("SELECT current_setting('port') AS port, current_setting('transaction_isolation') AS level");
    replicaPort(replica.rows[0]!.port);
    expect(replica.rows[0]!.level).toBe('repeatable read');
    await c.query('COMMIT');

    await c.query('START TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    expect((await c.query('SELECT v FROM opt_items WHERE id = 10')).rows).toEqual([{ v: 100 }]);
    await c.query('UPDATE opt_items SET v = 101 WHERE id = 10');
    const moved = await c.query<{ port: string; level: string }>("SELECT current_setting('port') AS port, current_setting('transaction_isolation') AS level");
    expect(moved.rows[0]).toEqual({ port: String(ports.primary), level: 'repeatable read' });
    await c.query('COMMIT');
    expect(await valueOf(10)).toBe(101);

    await c.query('BEGIN ISOLATION LEVEL READ COMMITTED');
    replicaPort((await c.query<{ port: string }>("SELECT current_setting('port') AS port")).rows[0]!.port);
    await c.query('COMMIT');

    await c.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
    const serializable = await c.query<{ port: string; level: string }>("SELECT current_setting('port') AS port, current_setting('transaction_isolation') AS level");
    expect(serializable.rows[0]).toEqual({ port: String(ports.primary), level: 'serializable' });
    await c.query('COMMIT');
  });

  it.each([
    ['SELECT … FOR UPDATE', "SELECT v, current_setting('port') AS port FROM opt_items WHERE id = 11 FOR UPDATE"],
    ['nextval()', "SELECT nextval('opt_log_id_seq') AS v, current_setting('port') AS port"],
    ['now()', "SELECT now() AS v, current_setting('port') AS port"],
    ['random()', "SELECT random() AS v, current_setting('port') AS port"],
    ['inet_server_port()', 'SELECT inet_server_port() AS v, inet_server_port()::text AS port'],
  ])('pg: %s moves the transaction before it runs', async (_name, sql) => {
    const c = await client();
    const metrics = await outcomes();
    await c.query('BEGIN');
    expect((await c.query('SELECT v FROM opt_items WHERE id = 11')).rows).toEqual([{ v: 110 }]);
    const row = (await c.query<{ port: string }>(sql)).rows[0]!;
    expect(row.port).toBe(String(ports.primary));
    await c.query('COMMIT');
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
  });

  it('pg: a statement that fails on the replica fails the transaction as on a direct connection', async () => {
    const c = await client();
    await c.query('BEGIN');
    expect((await c.query('SELECT v FROM opt_items WHERE id = 12')).rows).toEqual([{ v: 120 }]);
    await expect(c.query('SELECT 1 / (v - v) FROM opt_items WHERE id = 12')).rejects.toMatchObject({ code: '22012' });
    await expect(c.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    replicaPort((await c.query<{ port: string }>("SELECT current_setting('port') AS port")).rows[0]!.port);
    await c.query('COMMIT');
  });

  it('postgres.js: begin() with a read then a write, and with both pipelined in one go', async () => {
    const sql = postgres(shopUrl(relay), { max: 1, onnotice: () => undefined });
    onTestFinished(() => sql.end({ timeout: 1 }));
    const metrics = await outcomes();
    const readOnly = await sql.begin(async (tx) => {
      const [row] = await tx<{ v: number }[]>`SELECT v FROM opt_items WHERE id = ${13}`;
      const [port] = await tx<{ port: string }[]>`SELECT current_setting('port') AS port`;
      return { v: row!.v, port: port!.port };
    });
    expect(readOnly.v).toBe(130);
    replicaPort(readOnly.port);
    const written = await sql.begin(async (tx) => {
      const [row] = await tx<{ v: number }[]>`SELECT v FROM opt_items WHERE id = ${14}`;
      await tx`INSERT INTO opt_log (note) VALUES (${'pjs-' + row!.v})`;
      const [port] = await tx<{ port: string }[]>`SELECT current_setting('port') AS port`;
      return port!.port;
    });
    expect(written).toBe(String(ports.primary));
    // several statements written at once, one Sync each (postgres.js pipelines them)
    const pipelined = await sql.begin((tx) => [tx`SELECT v FROM opt_items WHERE id = ${15}`, tx`UPDATE opt_items SET v = ${151} WHERE id = ${15}`, tx`SELECT current_setting('port') AS port`]);
    expect(pipelined[0]).toEqual([{ v: 150 }]);
    expect((pipelined[2] as unknown as { port: string }[])[0]!.port).toBe(String(ports.primary));
    expect(await valueOf(15)).toBe(151);
    expect(await cluster.query('primary', "SELECT 1 FROM opt_log WHERE note = 'pjs-140'")).toHaveLength(1);
    expect(grew(metrics, await outcomes())).toEqual({ replica: 1, moved: 2 });
    // a conflict reaches postgres.js as 40001 and nothing is written
    const conflict = sql.begin(async (tx) => {
      await tx`SELECT v FROM opt_items WHERE id = ${16}`;
      await cluster.query('primary', 'UPDATE opt_items SET v = 161 WHERE id = 16');
      await tx`UPDATE opt_items SET v = ${999} WHERE id = ${17}`;
    });
    await expect(conflict).rejects.toMatchObject({ code: '40001' });
    expect(await valueOf(17)).toBe(170);
  });

  it('postgres.js: a result read through a cursor (a portal in parts), then a write: moved and committed; a row of it changed meanwhile: 40001', async () => {
    const sql = postgres(shopUrl(relay), { max: 1, onnotice: () => undefined });
    onTestFinished(() => sql.end({ timeout: 1 }));
    await cluster.query('primary', 'CREATE TABLE IF NOT EXISTS opt_cursor (id int PRIMARY KEY, v int NOT NULL)');
    await cluster.query('primary', 'INSERT INTO opt_cursor SELECT g, g FROM generate_series(1, 12) g ON CONFLICT DO NOTHING');
    await cluster.query('primary', 'GRANT SELECT, UPDATE ON opt_cursor TO shop');
    await cluster.waitForReplay('replica1');
    await cluster.waitForReplay('replica2');
    const metrics = await outcomes();
    const read = await sql.begin(async (tx) => {
      let seen = 0;
      await tx<{ v: number }[]>`SELECT v FROM opt_cursor ORDER BY id`.cursor(5, (rows) => {
        seen += rows.length;
      });
      await tx`UPDATE opt_cursor SET v = v + 100 WHERE id = 1`;
      return seen;
    });
    expect(read).toBe(12);
    expect((await cluster.query<{ v: number }>('primary', 'SELECT v FROM opt_cursor WHERE id = 1'))[0]!.v).toBe(101);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
    // another client changes a row the cursor read, before the write: the move finds it
    const conflict = sql.begin(async (tx) => {
      await tx<{ v: number }[]>`SELECT v FROM opt_cursor ORDER BY id`.cursor(5, () => undefined);
      await cluster.query('primary', 'UPDATE opt_cursor SET v = v + 1 WHERE id = 12');
      await tx`UPDATE opt_cursor SET v = 0 WHERE id = 2`;
    });
    await expect(conflict).rejects.toMatchObject({ code: '40001' });
    expect((await cluster.query<{ v: number }>('primary', 'SELECT v FROM opt_cursor WHERE id = 2'))[0]!.v).toBe(2);
  });

  it('a portal left before its end, read between other statements, or read on after the move: moved and committed, the portal there on the primary at the same row; a row of it changed meanwhile: 40001', async () => {
    await cluster.query('primary', 'CREATE TABLE IF NOT EXISTS opt_cursor (id int PRIMARY KEY, v int NOT NULL)');
    await cluster.query('primary', 'INSERT INTO opt_cursor SELECT g, g FROM generate_series(1, 12) g ON CONFLICT DO NOTHING');
    await cluster.query('primary', 'GRANT SELECT, UPDATE ON opt_cursor TO shop');
    await cluster.waitForReplay('replica1');
    await cluster.waitForReplay('replica2');
    // postgres.js: a cursor closed after its first 5 rows (sql.CLOSE), then a write
    const sql = postgres(shopUrl(relay), { max: 1, onnotice: () => undefined });
    onTestFinished(() => sql.end({ timeout: 1 }));
    let metrics = await outcomes();
    const firstPage = await sql.begin(async (tx) => {
      let seen = 0;
      await tx<{ v: number }[]>`SELECT v FROM opt_cursor ORDER BY id`.cursor(5, (rows) => {
        seen += rows.length;
        return sql.CLOSE;
      });
      await tx`UPDATE opt_cursor SET v = v + 100 WHERE id = 3`;
      return seen;
    });
    expect(firstPage).toBe(5);
    expect((await cluster.query<{ v: number }>('primary', 'SELECT v FROM opt_cursor WHERE id = 3'))[0]!.v).toBe(103);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });

    // pgjdbc's fetch size, as bytes: two named portals read 4 rows at a time, in turns, with a
    // simple Query between; then a write moves the transaction; then both are read on to their end
    const raw = await RawClient.connect(relay.port, { user: 'shop', password: PASSWORD.shop, database: cluster.database });
    onTestFinished(() => raw.destroy());
    const rowsOf = (messages: { type: string; body: Buffer }[]) => messages.filter((m) => m.type === 'D').map((m) => Number(m.body.toString('utf8', 6)));
    const part = async (portal: string) => {
      raw.send(Buffer.concat([serialize.execute({ portal, rows: 4 }), serialize.sync()]));
      return raw.until('Z');
    };
    const run = async (meanwhile: string | undefined) => {
      raw.send(serialize.query('BEGIN'));
      await raw.until('Z');
      raw.send(Buffer.concat([serialize.parse({ name: 'S_1', text: 'SELECT id FROM opt_cursor ORDER BY id' }), serialize.bind({ portal: 'C_1', statement: 'S_1' }), serialize.bind({ portal: 'C_2', statement: 'S_1' }), serialize.sync()]));
      await raw.until('Z');
      const seen: Record<string, number[]> = { C_1: [], C_2: [] };
      const first = await part('C_1');
      expect(first.map((m) => m.type)).toEqual(['D', 'D', 'D', 'D', 's', 'Z']);
      seen.C_1!.push(...rowsOf(first));
      seen.C_2!.push(...rowsOf(await part('C_2')));
      raw.send(serialize.query('SELECT 1'));
      await raw.until('Z');
      seen.C_1!.push(...rowsOf(await part('C_1')));
      if (meanwhile !== undefined) await cluster.query('primary', meanwhile);
      raw.send(serialize.query('UPDATE opt_cursor SET v = v + 1000 WHERE id = 12'));
      const write = await raw.until('Z');
      if (write.some((m) => m.type === 'E')) {
        raw.send(serialize.query('ROLLBACK'));
        await raw.until('Z');
        const fields = errorFields(write.find((m) => m.type === 'E')!.body);
        return { error: `${fields.get('C')} ${fields.get('M')}`, seen };
      }
      // read on, on the primary: each portal from where it was left
      for (const portal of ['C_1', 'C_2', 'C_1', 'C_2', 'C_1'] as const) seen[portal]!.push(...rowsOf(await part(portal)));
      raw.send(serialize.query('COMMIT'));
      await raw.until('Z');
      return { error: undefined, seen };
    };
    const twelve = async () => (await cluster.query<{ v: number }>('primary', 'SELECT v FROM opt_cursor WHERE id = 12'))[0]!.v;
    const before = await twelve();
    metrics = await outcomes();
    const all = Array.from({ length: 12 }, (_, i) => i + 1);
    expect(await run(undefined)).toEqual({ error: undefined, seen: { C_1: all, C_2: all } });
    expect(await twelve()).toBe(before + 1000);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
    // another client adds a row the parts read would have begun with, before the write: the move finds it
    const conflict = await run('INSERT INTO opt_cursor VALUES (0, 0)');
    expect(conflict.error).toMatch(/^40001 .*answered differently/);
    expect(await twelve()).toBe(before + 1000);
    await cluster.query('primary', 'DELETE FROM opt_cursor WHERE id = 0');
  });

  it('psql: a script that reads, sets a savepoint and writes commits once, on the primary', async () => {
    const metrics = await outcomes();
    const script = [
      'BEGIN;',
      'SELECT v FROM opt_items WHERE id = 18;',
      'SAVEPOINT s;',
      "INSERT INTO opt_log (note) VALUES ('psql-script');",
      "SELECT current_setting('port');",
      'COMMIT;',
    ].join('\n');
    const result = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = execFile('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-align', '--tuples-only', shopUrl(relay)], { timeout: 60_000 }, (error, stdout, stderr) =>
        resolve({ code: error ? 1 : 0, stdout, stderr }),
      );
      child.stdin!.end(script + '\n');
    });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.split('\n').filter(Boolean)).toEqual(['180', String(ports.primary)]);
    expect(await cluster.query('primary', "SELECT 1 FROM opt_log WHERE note = 'psql-script'")).toHaveLength(1);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
  });
});

describe('a read-only transaction whose replica connection is lost', () => {
  it('continues on another replica, its reads run again there and compared, without an error', async () => {
    const c = await client();
    const metrics = await outcomes();
    await c.query('BEGIN');
    expect((await c.query('SELECT v FROM opt_items WHERE id = $1', [20])).rows).toEqual([{ v: 200 }]);
    expect((await c.query('SELECT count(*)::int AS n FROM opt_items')).rows).toEqual([{ n: 20 }]);
    // the server connection of the transaction, idle in it on one replica, is terminated there
    const errorsBefore = await serverErrors();
    let lostOn: string | undefined;
    for (const name of REPLICAS) {
      const killed = await cluster.query<{ pid: number }>(
        name,
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'shop' AND state = 'idle in transaction'",
        [],
        { superuser: true, database: 'postgres' },
      );
      if (killed.length > 0) lostOn = name;
    }
    expect(lostOn).toBeDefined();
    await vi.waitFor(async () => {
      const left = await cluster.query(lostOn!, "SELECT 1 FROM pg_stat_activity WHERE usename = 'shop' AND state = 'idle in transaction'", [], { superuser: true, database: 'postgres' });
      expect(left).toHaveLength(0);
    }, WAIT);
    // pgrelay has seen the connection go (a statement sent before that would be lost with it: 08006)
    await vi.waitFor(async () => expect(await serverErrors()).toBeGreaterThan(errorsBefore), WAIT);
    // the client never knows: the transaction goes on, on the other replica
    expect((await c.query('SELECT v FROM opt_items WHERE id = $1', [19])).rows).toEqual([{ v: 190 }]);
    const port = (await c.query<{ port: string }>("SELECT current_setting('port') AS port")).rows[0]!.port;
    expect(replicaPort(port)).not.toBe(lostOn);
    await c.query('COMMIT');
    expect(grew(metrics, await outcomes())).toEqual({ replica: 1 });
  });

  it('a row it read changed meanwhile: 40001, as for a move', async () => {
    const c = await client();
    await c.query('BEGIN');
    expect((await c.query('SELECT v FROM opt_items WHERE id = $1', [1])).rows).toEqual([{ v: 10 }]);
    await cluster.query('primary', 'UPDATE opt_items SET v = 11 WHERE id = 1');
    for (const name of REPLICAS) await cluster.waitForReplay(name);
    const errorsBefore = await serverErrors();
    for (const name of REPLICAS) {
      await cluster.query(name, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'shop' AND state = 'idle in transaction'", [], { superuser: true, database: 'postgres' });
    }
    await vi.waitFor(async () => expect(await serverErrors()).toBeGreaterThan(errorsBefore), WAIT);
    await expect(c.query('SELECT v FROM opt_items WHERE id = 2')).rejects.toMatchObject({ code: '40001' });
    await c.query('ROLLBACK');
    await cluster.query('primary', 'UPDATE opt_items SET v = 10 WHERE id = 1');
  });
});

describe('the replay bound and the off switch', () => {
  it('routing.optimistic_max_bytes: past it, the transaction moves at its next statement, even a read', async () => {
    const small = await relayWith({ optimistic_max_bytes: 0 });
    onTestFinished(() => small.stop());
    const c = await client(small);
    await c.query('BEGIN');
    expect((await c.query('SELECT v FROM opt_items WHERE id = 19')).rows).toEqual([{ v: 190 }]);
    // the log now holds more than 0 bytes: this read moves the transaction first (the one above verified)
    const port = await c.query<{ port: string }>("SELECT current_setting('port') AS port");
    expect(port.rows[0]!.port).toBe(String(ports.primary));
    await c.query('COMMIT');
    expect(grew({}, await outcomes(small))).toEqual({ moved: 1 });
  });

  it('routing.transactions: primary runs every transaction of a plain BEGIN on the primary', async () => {
    const off = await relayWith({ transactions: 'primary' });
    onTestFinished(() => off.stop());
    const c = await client(off);
    for (const begin of ['BEGIN', 'BEGIN ISOLATION LEVEL REPEATABLE READ']) {
      await c.query(begin);
      expect((await c.query<{ port: string }>("SELECT current_setting('port') AS port")).rows[0]!.port).toBe(String(ports.primary));
      await c.query('COMMIT');
    }
    // outside a transaction, reads still go to the replica
    replicaPort((await c.query<{ port: string }>("SELECT current_setting('port') AS port")).rows[0]!.port);
    expect(grew({}, await outcomes(off))).toEqual({ primary: 1 });
  });
});
