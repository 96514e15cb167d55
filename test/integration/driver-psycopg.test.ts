import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import type { LocalCluster } from '../../src/local/cluster.js';
import { startRelay, type Relay } from '../support/relay.js';
import { type ShopReplica, startShopReplica } from '../support/shop-replica.js';
import { runScenario, type Seen } from '../support/driver-scenario.js';
import { grew } from '../support/transaction-outcomes.js';

// psycopg 3 and psycopg2 (Debian's python3-psycopg and python3-psycopg2, run by Debian's
// python3) through pgrelay with their defaults: autocommit off, so every first statement opens a
// transaction; psycopg 3 sends its BEGIN, SAVEPOINTs and every command of its own as
// Parse/Bind/Describe/Execute (libpq's PQsendQueryParams), prepares a query from its fifth use,
// and after a rollback sends DEALLOCATE ALL (and DEALLOCATE name when its statement cache
// rotates) the same way. The application's work is test/support/psycopg/scenarios.py.
// Least-privilege roles as an operator sets them up; where reads ran is read on the servers
// (per-node pg_stat_user_tables scan counters).

const PYTHON = process.env.PGRELAY_TEST_PYTHON ?? '/usr/bin/python3';
const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), '../support/psycopg/scenarios.py');
const ASYNCPG_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), '../support/asyncpg/scenarios.py');
const PASSWORD = { shop: 'shop-pw-95', monitor: 'monitor-pw-96', failover: 'failover-pw-97' };
const WAIT = { timeout: 20_000, interval: 200 };
let shop: ShopReplica;
let cluster: LocalCluster;
let relay: Relay;

beforeAll(async () => {
  shop = await startShopReplica('py_items', PASSWORD);
  ({ cluster, relay } = shop);
}, 120_000);

afterAll(async () => {
  await relay?.stop();
  await cluster?.stop();
});

/** Runs a scenario of scenarios.py (asyncpg's: asyncpg/scenarios.py) through pgrelay (`through`, else the test's) as `shop`: what the application saw. */
function scenario(driver: 'psycopg' | 'psycopg2' | 'asyncpg', name: string, through: Relay = relay): Promise<Seen> {
  return runScenario(PYTHON, driver === 'asyncpg' ? [ASYNCPG_SCRIPT, name] : [SCRIPT, driver, name], { PGRELAY_TEST_DSN: through.url({ user: 'shop', password: PASSWORD.shop }) });
}

const replicaScans = () => shop.replicaScans();
const outcomes = () => shop.outcomes();

describe('psycopg', () => {
  it('psycopg 3 and psycopg2, defaults: transactions that only read, and nested transaction blocks, run on the replica', async () => {
    const before = await replicaScans();
    let metrics = await outcomes();
    expect(await scenario('psycopg', 'read-transactions')).toEqual({ values: Array.from({ length: 7 }, () => ['10', '20', '30']).flat(), errors: [] });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 7 });
    metrics = await outcomes();
    expect(await scenario('psycopg', 'nested-blocks')).toEqual({ values: ['40', '40', '40'], errors: [] });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 3 });
    metrics = await outcomes();
    expect(await scenario('psycopg2', 'read-transactions')).toEqual({ values: Array.from({ length: 5 }, () => ['10', '20', '30']).flat(), errors: [] });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 5 });
    // every read on the replica: nothing else reads the table there (counters read once, as an idle backend flushes them up to 10 s late)
    await vi.waitFor(async () => expect((await replicaScans()) - before).toBeGreaterThanOrEqual(21 + 3 + 15), WAIT);
  });

  it('psycopg 3: an inner block that fails rolls back to its savepoint (then DEALLOCATE ALL); the write after it moves the transaction and commits', async () => {
    const metrics = await outcomes();
    const before = await shop.valueOf(5);
    expect(await scenario('psycopg', 'error-then-write')).toEqual({ values: [String(before), '1', String(before + 1)], errors: ['22012'] });
    expect(await shop.valueOf(5)).toBe(before + 1);
    // the six reads before it (one transaction: autocommit off) and the read after it on the replica, the block moved
    expect(grew(metrics, await outcomes())).toEqual({ replica: 2, moved: 1 });
  });

  it('psycopg 3: DEALLOCATE ALL after a rollback and DEALLOCATE name when the statement cache rotates are answered by pgrelay; the statements still answer', async () => {
    expect(await scenario('psycopg', 'rollback-and-rotation')).toEqual({ values: ['60', '70', '71', '72', '73'], errors: [] });
  });

  it('psycopg 3 with session pooling (each client keeps its server connection): DEALLOCATE ALL runs there, pgrelay prepares its statements again', async () => {
    const session = await startRelay(cluster, { users: [{ name: 'shop', password: PASSWORD.shop }], health: { user: 'pgrelay_monitor', password: PASSWORD.monitor }, pool: { mode: 'session' } });
    onTestFinished(() => session.stop());
    expect(await scenario('psycopg', 'rollback-and-rotation', session)).toEqual({ values: ['60', '70', '71', '72', '73'], errors: [] });
    const before = await shop.valueOf(5);
    expect(await scenario('psycopg', 'error-then-write', session)).toEqual({ values: [String(before), '1', String(before + 1)], errors: ['22012'] });
  });
});

describe('asyncpg', () => {
  it('defaults (a named statement per query): read-only transactions, REPEATABLE READ READ ONLY, and a pool run on the replica', async () => {
    const before = await replicaScans();
    let metrics = await outcomes();
    expect(await scenario('asyncpg', 'read-transactions')).toEqual({ values: [...Array.from({ length: 5 }, () => ['10', '20', '30']).flat(), '40'], errors: [] });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 5 });
    metrics = await outcomes();
    expect(await scenario('asyncpg', 'pool-reads')).toEqual({ values: ['10', '20', '30'], errors: [] });
    await vi.waitFor(async () => expect((await replicaScans()) - before).toBeGreaterThanOrEqual(15 + 1 + 60), WAIT);
  });

  it('a cursor read in part, then a write: the transaction moves, the cursor reads on from the same row on the primary, the write commits', async () => {
    const metrics = await outcomes();
    const nine = await shop.valueOf(9);
    expect(await scenario('asyncpg', 'cursor-then-write')).toEqual({ values: ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', String(nine + 1)], errors: [] });
    expect(await shop.valueOf(9)).toBe(nine + 1);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
  });

  it('an error in a transaction block rolls it back; the connection serves on', async () => {
    const seven = String(await shop.valueOf(7));
    expect(await scenario('asyncpg', 'error-in-transaction')).toEqual({ values: [seven, seven], errors: ['22012'] });
  });
});
