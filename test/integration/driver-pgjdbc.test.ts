import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/local/cluster.js';
import type { Relay } from '../support/relay.js';
import { type ShopReplica, startShopReplica } from '../support/shop-replica.js';
import { runScenario, type Seen } from '../support/driver-scenario.js';
import { grew } from '../support/transaction-outcomes.js';

// pgjdbc, the PostgreSQL JDBC driver (Debian's libpostgresql-jdbc-java, run by the JDK's `java`),
// through pgrelay, with the driver's defaults and with the options Java applications turn on:
// `autosave=always|conservative` (a SAVEPOINT in front of every statement of a transaction, so
// that a failed statement does not fail the transaction), `preferQueryMode=simple`. The
// application's work is test/support/pgjdbc/PgjdbcScenarios.java, with autocommit off as
// frameworks (Spring, Hibernate) run it. Least-privilege roles as an operator sets them up; where
// statements ran is read on the servers (per-node pg_stat_user_tables scan counters).

const execFileAsync = promisify(execFile);
const JAR = process.env.PGJDBC_JAR ?? '/usr/share/java/postgresql.jar';
const SOURCE = path.join(path.dirname(fileURLToPath(import.meta.url)), '../support/pgjdbc/PgjdbcScenarios.java');
const PASSWORD = { shop: 'shop-pw-91', monitor: 'monitor-pw-92', failover: 'failover-pw-93' };
const WAIT = { timeout: 20_000, interval: 200 };
let shop: ShopReplica;
let cluster: LocalCluster;
let relay: Relay;
let classes: string;

beforeAll(async () => {
  classes = mkdtempSync(path.join(tmpdir(), 'pgrelay-pgjdbc-'));
  const compiled = execFileAsync('javac', ['-cp', JAR, '-d', classes, SOURCE]);
  shop = await startShopReplica('jdbc_items', PASSWORD);
  ({ cluster, relay } = shop);
  await compiled;
}, 120_000);

afterAll(async () => {
  await relay?.stop();
  await cluster?.stop();
  if (classes) rmSync(classes, { recursive: true, force: true });
});

/** Runs a scenario of PgjdbcScenarios.java through pgrelay as `shop`: what the application saw. */
function scenario(name: string, options = ''): Promise<Seen> {
  return runScenario('java', ['-cp', `${JAR}${path.delimiter}${classes}`, 'PgjdbcScenarios', '127.0.0.1', String(relay.port), cluster.database, 'shop', options, name], { PGRELAY_TEST_PASSWORD: PASSWORD.shop });
}

/** Waits until the replica's scan counter grew by at least `n` (the server's own counters). */
async function replicaScansGrew(before: Record<string, number>, n: number): Promise<void> {
  await vi.waitFor(async () => expect((await shop.scans()).replica1! - before.replica1!).toBeGreaterThanOrEqual(n), WAIT);
}

const outcomes = () => shop.outcomes();

describe('pgjdbc', () => {
  it('with the driver defaults, autosave, simple query mode and server-side statements from the first use: transactions that only read run on the replica', async () => {
    const variants = ['', '?autosave=always', '?autosave=conservative', '?preferQueryMode=simple', '?prepareThreshold=1'];
    const before = await shop.scans();
    for (const options of variants) {
      const metrics = await outcomes();
      const seen = await scenario('read-transactions', options);
      expect(seen, options).toEqual({ values: Array.from({ length: 5 }, () => ['10', '20', '30']).flat(), errors: [] });
      expect(grew(metrics, await outcomes()), options).toEqual({ replica: 5 });
    }
    // every read of every variant on the replica: nothing else reads the table there (an idle
    // backend flushes its counters up to 10 s late, so they are read once, for all variants)
    await replicaScansGrew(before, variants.length * 15);
  });

  it('targetServerType=primary (as in a multi-host URL): pgrelay is a primary; transactions that only read still run on the replica, one that writes first on the primary', async () => {
    const before = await shop.scans();
    const metrics = await outcomes();
    const seen = await scenario('read-transactions', '?targetServerType=primary');
    expect(seen).toEqual({ values: Array.from({ length: 5 }, () => ['10', '20', '30']).flat(), errors: [] });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 5 });
    await replicaScansGrew(before, 15);
    const value = await shop.valueOf(5);
    expect(await scenario('write-first', '?targetServerType=primary')).toEqual({ values: ['1', String(value + 1)], errors: [] });
    expect(await shop.valueOf(5)).toBe(value + 1);
  });

  it('autosave=always: a statement that fails, then a write: the transaction moves to the primary and commits', async () => {
    const metrics = await outcomes();
    const before = await shop.valueOf(4);
    expect(await scenario('error-then-write', '?autosave=always')).toEqual({ values: ['40', '40', '1'], errors: ['22012'] });
    expect(await shop.valueOf(4)).toBe(before + 1);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
  });

  it('the driver defaults: a result read with a fetch size (a portal in parts), then a write: the transaction moves, its read verified whole, and commits', async () => {
    const metrics = await outcomes();
    const before = await shop.valueOf(6);
    const [{ sum }] = await cluster.query<{ sum: string }>('primary', 'SELECT sum(v) AS sum FROM jdbc_items');
    expect(await scenario('fetch-then-write')).toEqual({ values: [`20 rows, sum ${sum}`, '1'], errors: [] });
    expect(await shop.valueOf(6)).toBe(before + 1);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
  });

  it('the driver defaults: a statement that fails fails the transaction, as on a direct connection (nothing written)', async () => {
    const before = await shop.valueOf(4);
    expect(await scenario('error-then-write')).toEqual({ values: [String(before)], errors: ['22012', '25P02'] });
    expect(await shop.valueOf(4)).toBe(before);
  });

  it.each([
    ['the driver defaults', ''],
    ['autosave=always', '?autosave=always'],
  ])('%s: a transaction that writes first runs on the primary', async (_name, options) => {
    const metrics = await outcomes();
    const before = await shop.valueOf(5);
    expect(await scenario('write-first', options)).toEqual({ values: ['1', String(before + 1)], errors: [] });
    expect(await shop.valueOf(5)).toBe(before + 1);
    expect(grew(metrics, await outcomes())).toEqual({ primary: 1 });
  });
});
