import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/local/cluster.js';
import type { Relay } from '../support/relay.js';
import { type ShopReplica, startShopReplica } from '../support/shop-replica.js';

// A connection string that asks for a server that takes writes — libpq's
// target_session_attrs=read-write|primary (psql, psycopg, every libpq driver), pgx's, pgjdbc's
// targetServerType=primary, usual in a multi-host URL — must accept pgrelay when it has replicas:
// pgrelay is one logical primary (writes go to the primary whichever server serves a read). libpq
// 14+ decides from the ParameterStatus in_hot_standby and default_transaction_read_only; older
// libpq, pgx and Npgsql ask `SHOW transaction_read_only` or `SELECT pg_is_in_recovery()`, which
// the primary answers. Least-privilege roles as an operator sets them up; where the application's
// reads ran is told by the servers themselves (inet_server_port()).

const execFileAsync = promisify(execFile);
const PASSWORD = { shop: 'shop-pw-91', monitor: 'monitor-pw-92', failover: 'failover-pw-93' };
let shop: ShopReplica;
let cluster: LocalCluster;
let relay: Relay;

beforeAll(async () => {
  shop = await startShopReplica('tsa_items', PASSWORD);
  ({ cluster, relay } = shop);
}, 120_000);

afterAll(async () => {
  await relay?.stop();
  await cluster?.stop();
});

const url = (params: string) => `${relay.url({ user: 'shop', password: PASSWORD.shop })}?sslmode=disable&${params}`;

/** psql (libpq) with `params` in its URL: stdout, or libpq's error. */
async function psql(params: string, sql: string): Promise<{ out: string; error?: string }> {
  try {
    const { stdout } = await execFileAsync('psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', url(params), '-c', sql], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' }, timeout: 30_000 });
    return { out: stdout.trim() };
  } catch (error) {
    return { out: '', error: String((error as { stderr?: string }).stderr ?? error) };
  }
}

describe('a client that asks for a server that takes writes', () => {
  it('libpq, target_session_attrs=read-write and =primary: psql connects, writes on the primary, reads on the replica', async () => {
    const replicaPort = String(cluster.node('replica1').port);
    for (const attrs of ['read-write', 'primary']) {
      const before = await shop.valueOf(3);
      const seen = await psql(`target_session_attrs=${attrs}`, 'UPDATE tsa_items SET v = v + 1 WHERE id = 3');
      expect(seen.error, attrs).toBeUndefined();
      expect(await shop.valueOf(3), attrs).toBe(before + 1);
      const read = await psql(`target_session_attrs=${attrs}`, 'SELECT inet_server_port() FROM tsa_items WHERE id = 1');
      expect(read, attrs).toEqual({ out: replicaPort });
    }
    // and one that asks for a standby is told pgrelay is not one, as libpq says of a primary
    expect((await psql('target_session_attrs=read-only', 'SELECT 1')).error).toMatch(/session is not read-only/);
    expect((await psql('target_session_attrs=standby', 'SELECT 1')).error).toMatch(/server is not in hot standby mode/);
  });

  it('is told in_hot_standby = off at startup, and the primary answers the questions older libpq, pgx and Npgsql ask instead', async () => {
    const client = new pg.Client(url(''));
    const reported = new Map<string, string>();
    client.connection.on('parameterStatus', (m: { parameterName: string; parameterValue: string }) => reported.set(m.parameterName, m.parameterValue));
    await client.connect();
    try {
      expect(reported.get('in_hot_standby')).toBe('off');
      expect(reported.get('default_transaction_read_only')).toBe('off');
      const ask = async (sql: string) => Object.values((await client.query({ text: sql, rowMode: 'array' })).rows[0] as unknown[]);
      expect(await ask('show transaction_read_only')).toEqual(['off']);
      expect(await ask('SHOW in_hot_standby')).toEqual(['off']);
      expect(await ask('select pg_catalog.pg_is_in_recovery()')).toEqual([false]);
      // Npgsql's question, one simple Query of two statements
      const both = (await client.query('SELECT pg_is_in_recovery(); SHOW default_transaction_read_only')) as unknown as pg.QueryResult[];
      expect(both.map((r) => Object.values(r.rows[0] as object)[0])).toEqual([false, 'off']);
      // the application's reads still go to the replica
      expect(await ask('SELECT inet_server_port() FROM tsa_items WHERE id = 1')).toEqual([cluster.node('replica1').port]);
      // inside a READ ONLY transaction (on the replica) the answer is the transaction's own
      await client.query('BEGIN READ ONLY');
      expect(await ask('SELECT v FROM tsa_items WHERE id = 2')).toEqual([20]);
      expect(await ask('show transaction_read_only')).toEqual(['on']);
      await client.query('COMMIT');
    } finally {
      await client.end();
    }
  });
});
