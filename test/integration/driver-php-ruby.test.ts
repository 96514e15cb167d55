import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/local/cluster.js';
import type { Relay } from '../support/relay.js';
import { type ShopReplica, startShopReplica } from '../support/shop-replica.js';
import { runScenario, type Seen } from '../support/driver-scenario.js';
import { grew } from '../support/transaction-outcomes.js';

// Two libpq applications through pgrelay with their defaults: PHP's PDO (Debian's php-pgsql;
// native prepares: each statement object a named server statement, dropped with DEALLOCATE) and
// Ruby's pg as Rails uses it (Debian's ruby-pg; BEGIN/COMMIT as simple Queries, prepared and
// unnamed statements). Their work is test/support/php/scenarios.php and
// test/support/ruby/scenarios.rb. Least-privilege roles as an operator sets them up; where reads
// ran is read on the servers (per-node pg_stat_user_tables counters).

const here = path.dirname(fileURLToPath(import.meta.url));
const SCRIPTS = { php: path.join(here, '../support/php/scenarios.php'), ruby: path.join(here, '../support/ruby/scenarios.rb') };
const PASSWORD = { shop: 'shop-pw-75', monitor: 'monitor-pw-76', failover: 'failover-pw-77' };
const WAIT = { timeout: 20_000, interval: 200 };
let shop: ShopReplica;
let cluster: LocalCluster;
let relay: Relay;
/** the replica's scans of the table before the first test; reads the tests expect there since */
let scansAtStart = 0;
let readsOnReplica = 0;

beforeAll(async () => {
  shop = await startShopReplica('php_items', PASSWORD);
  ({ cluster, relay } = shop);
  scansAtStart = await shop.replicaScans();
}, 120_000);

afterAll(async () => {
  await relay?.stop();
  await cluster?.stop();
});

/** Runs a scenario through pgrelay as `shop`: what the application saw. */
function scenario(language: 'php' | 'ruby', name: string): Promise<Seen> {
  return runScenario(language, [SCRIPTS[language], name], {
    PGRELAY_TEST_HOST: '127.0.0.1',
    PGRELAY_TEST_PORT: String(relay.port),
    PGRELAY_TEST_DATABASE: cluster.database,
    PGRELAY_TEST_USER: 'shop',
    PGRELAY_TEST_PASSWORD: PASSWORD.shop,
    PGRELAY_TEST_URL: `${relay.url({ user: 'shop', password: PASSWORD.shop })}?sslmode=disable`,
  });
}

const outcomes = () => shop.outcomes();

describe('PHP PDO and Ruby pg', () => {
  it('PDO: read-only transactions (a statement each, one statement in three, emulated prepares) run on the replica', async () => {
    const metrics = await outcomes();
    expect(await scenario('php', 'read-transactions')).toEqual({ values: [...Array.from({ length: 5 }, () => ['10', '20', '30']).flat(), '40', '40', '40', '40'], errors: [] });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 9 });
    readsOnReplica += 19;
  });

  it('Ruby pg: read-only transactions with prepared statements and a transaction block run on the replica; a DEALLOCATEd name is gone (26000)', async () => {
    const metrics = await outcomes();
    expect(await scenario('ruby', 'read-transactions')).toEqual({ values: [...Array.from({ length: 5 }, () => ['10', '20', '30']).flat(), '40'], errors: ['26000'] });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 6 });
    readsOnReplica += 16;
  });

  it('both: a transaction that reads, then writes, moves to the primary and commits', async () => {
    for (const language of ['php', 'ruby'] as const) {
      const five = await shop.valueOf(5);
      const metrics = await outcomes();
      expect(await scenario(language, 'read-then-write')).toEqual({ values: [String(five), String(five + 1)], errors: [] });
      expect(await shop.valueOf(5)).toBe(five + 1);
      expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
    }
  });

  it('both: an error aborts the transaction (25P02 after it), the rollback ends it, the connection serves on', async () => {
    const seven = String(await shop.valueOf(7));
    for (const language of ['php', 'ruby'] as const) expect(await scenario(language, 'error-in-transaction')).toEqual({ values: [seven, seven], errors: ['22012', '25P02'] });
  });

  it('ran every read-only transaction above on the replica, by its own counters (read once: an idle backend reports them up to 10 s late)', async () => {
    expect(readsOnReplica).toBe(35);
    await vi.waitFor(async () => expect((await shop.replicaScans()) - scansAtStart).toBeGreaterThanOrEqual(readsOnReplica), WAIT);
  });
});
