import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/local/cluster.js';
import type { Relay } from '../support/relay.js';
import { type ShopReplica, startShopReplica } from '../support/shop-replica.js';
import { runScenario, type Seen } from '../support/driver-scenario.js';
import { grew } from '../support/transaction-outcomes.js';

// pgx (Go; Debian's golang-github-jackc-pgx-v4-dev, built with Debian's golang-go) through pgrelay
// with its defaults: every query is prepared as a named statement of pgx's statement cache (Parse
// and Describe in a round trip of their own, then Bind/Execute/Sync), Begin is a simple Query, a
// batch is several Bind/Execute under one Sync, an evicted statement is dropped with DEALLOCATE.
// The application's work is test/support/pgx/scenarios.go. Least-privilege roles as an operator
// sets them up; where reads ran is read on the servers (per-node pg_stat_user_tables counters).

const execFileAsync = promisify(execFile);
const SOURCE = path.join(path.dirname(fileURLToPath(import.meta.url)), '../support/pgx/scenarios.go');
const PASSWORD = { shop: 'shop-pw-85', monitor: 'monitor-pw-86', failover: 'failover-pw-87' };
const WAIT = { timeout: 20_000, interval: 200 };
let shop: ShopReplica;
let cluster: LocalCluster;
let relay: Relay;
let buildDir: string;
let binary: string;
/** the replica's scans of the table before the first test; reads the tests expect there since */
let scansAtStart = 0;
let readsOnReplica = 0;

beforeAll(async () => {
  buildDir = mkdtempSync(path.join(os.tmpdir(), 'pgrelay-pgx-'));
  binary = path.join(buildDir, 'scenarios');
  // GOPATH mode: the Debian packages' sources under /usr/share/gocode, no module download
  const env = { ...process.env, GO111MODULE: 'off', GOPATH: `${buildDir}:/usr/share/gocode`, GOCACHE: path.join(buildDir, 'cache'), GOFLAGS: '' };
  [, shop] = await Promise.all([execFileAsync('go', ['build', '-o', binary, SOURCE], { env, timeout: 180_000 }), startShopReplica('pgx_items', PASSWORD)]);
  ({ cluster, relay } = shop);
  scansAtStart = await replicaScans();
}, 240_000);

afterAll(async () => {
  await relay?.stop();
  await cluster?.stop();
  if (buildDir) rmSync(buildDir, { recursive: true, force: true });
});

/** Runs a scenario of scenarios.go through pgrelay as `shop`: what the application saw. */
function scenario(name: string, params = ''): Promise<Seen> {
  return runScenario(binary, [name], { PGRELAY_TEST_DSN: `${relay.url({ user: 'shop', password: PASSWORD.shop })}?sslmode=disable${params}` });
}

const replicaScans = () => shop.replicaScans();
const outcomes = () => shop.outcomes();

describe('pgx', () => {
  it('defaults, statement_cache_mode=describe (unnamed statements) and prefer_simple_protocol: transactions that only read run on the replica', async () => {
    for (const params of ['', '&statement_cache_mode=describe', '&prefer_simple_protocol=true']) {
      const metrics = await outcomes();
      expect(await scenario('read-transactions', params)).toEqual({ values: Array.from({ length: 5 }, () => ['10', '20', '30']).flat(), errors: [] });
      expect(grew(metrics, await outcomes())).toEqual({ replica: 5 });
      readsOnReplica += 15;
    }
  });

  it('pgxpool, eight goroutines: autocommit reads and read-only transactions on the replica', async () => {
    const metrics = await outcomes();
    const seen = await scenario('pool-reads');
    expect(seen.errors).toEqual([]);
    expect(seen.values).toHaveLength(160);
    expect(new Set(seen.values)).toEqual(new Set(['10', '20', '30']));
    expect(grew(metrics, await outcomes())).toEqual({ replica: 80 });
    readsOnReplica += 160;
  });

  it('a batch (three reads under one Sync) outside and inside a transaction, on the replica', async () => {
    const metrics = await outcomes();
    expect(await scenario('batch')).toEqual({ values: ['10', '20', '30', '10', '20', '30'], errors: [] });
    expect(grew(metrics, await outcomes())).toEqual({ replica: 1 });
    readsOnReplica += 6;
  });

  it('target_session_attrs=read-write and =primary (pgx asks "show transaction_read_only", "select pg_is_in_recovery()" when it connects): pgrelay is a primary, and transactions that only read still run on the replica', async () => {
    for (const params of ['&target_session_attrs=read-write', '&target_session_attrs=primary']) {
      const metrics = await outcomes();
      expect(await scenario('read-transactions', params), params).toEqual({ values: Array.from({ length: 5 }, () => ['10', '20', '30']).flat(), errors: [] });
      expect(grew(metrics, await outcomes()), params).toEqual({ replica: 5 });
      readsOnReplica += 15;
    }
  });

  it('ran every read of the tests above on the replica, by its own counters (read once: an idle backend reports them up to 10 s late)', async () => {
    expect(readsOnReplica).toBe(241);
    await vi.waitFor(async () => expect((await replicaScans()) - scansAtStart).toBeGreaterThanOrEqual(readsOnReplica), WAIT);
  });

  it('a transaction that reads, then writes, moves to the primary and commits; a read right after an autocommit write sees it', async () => {
    const five = await shop.valueOf(5);
    const metrics = await outcomes();
    expect(await scenario('read-then-write')).toEqual({ values: [String(five), String(five + 1)], errors: [] });
    expect(await shop.valueOf(5)).toBe(five + 1);
    expect(grew(metrics, await outcomes())).toEqual({ moved: 1 });
    const six = await shop.valueOf(6);
    expect(await scenario('write-then-read')).toEqual({ values: [1, 2, 3, 4, 5].map((k) => String(six + k)), errors: [] });
  });

  it('an error aborts the transaction (25P02 after it), the rollback ends it, the connection serves on', async () => {
    const seven = String(await shop.valueOf(7));
    expect(await scenario('error-in-transaction')).toEqual({ values: [seven, seven], errors: ['22012', '25P02'] });
  });

  it('a statement cache of two: the statements pgx evicts and deallocates, and prepares again, still answer', async () => {
    const eight = await shop.valueOf(8);
    expect(await scenario('cache-rotation')).toEqual({ values: [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3].map((k) => String(eight + k)), errors: [] });
  });
});
