import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { handleSignals, type SignalHandling } from '../../src/admin/signal-handlers.js';
import type { StatusDocument } from '../../src/admin/status.js';
import { App } from '../../src/app.js';
import { loadConfig } from '../../src/config/load.js';
import { LocalCluster, type LocalNode } from '../../src/local/cluster.js';
import { createLogger } from '../../src/util/log.js';
import { adminRequest, relayDocument } from '../support/relay.js';

// Reload under load, on a cluster of this file's own (it adds and removes a replica): 16 clients
// run reads, writes and transactions while the config file is edited and pgrelay gets a real
// SIGHUP. Where each read ran is what the server itself answers (inet_server_port()).
let cluster: LocalCluster;
let app: App;
let signals: SignalHandling;
let dir: string;
let configPath: string;
const logLines: string[] = [];
const clients: pg.Client[] = [];

function writeConfig(nodes: LocalNode[], extra: Record<string, unknown> = {}): void {
  const document = relayDocument(
    { nodes, user: cluster.user, password: cluster.password, superuser: cluster.superuser, superuserPassword: cluster.superuserPassword },
    // health checks that tolerate a loaded test machine: a node marked down has its connections closed
    { routing: { consistency: 'eventual', balance: 'round_robin', max_lag_ms: 5000 }, pool: { size: 24 }, health: { timeout_ms: 5000, failures: 5 }, ...extra },
  );
  writeFileSync(configPath, stringify(document));
}

function url(user = cluster.user, password = cluster.password): string {
  return `postgres://${user}:${password}@127.0.0.1:${app.listenAddress!.port}/${cluster.database}`;
}

async function connect(user?: string, password?: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url(user, password) });
  clients.push(client);
  await client.connect();
  return client;
}

async function status(): Promise<StatusDocument> {
  return (await (await fetch(`http://127.0.0.1:${app.adminAddress!.port}/status`)).json()) as StatusDocument;
}

function logged(message: string): Record<string, unknown>[] {
  return logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.msg === message);
}

beforeAll(async () => {
  cluster = await LocalCluster.create({ replicas: 2, standby: false });
  dir = mkdtempSync(join(tmpdir(), 'pgrelay-ops-reload-'));
  configPath = join(dir, 'pgrelay.yaml');
  writeConfig(cluster.nodes);
  const log = createLogger({
    level: 'info',
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logLines.push(line);
        callback();
      },
    }),
  });
  app = await App.start(loadConfig(configPath), { log, configPath, processMetrics: false });
  // real signals to this worker process, handled as `pgrelay start` handles them
  signals = handleSignals(app, { signals: process, configPath, graceMs: 5000, onForcedExit: () => undefined });
  await cluster.query('primary', 'CREATE TABLE ops_reload (id serial PRIMARY KEY, client int, n int)');
});

afterAll(async () => {
  signals?.dispose();
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await app?.stop();
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Read {
  port: number;
  /** performance.now() before the query was sent */
  sentAt: number;
}

/** 16 clients running reads, writes and short transactions until stopped; the first error ends a client. */
function startTraffic(count: number) {
  const reads: Read[] = [];
  const errors: unknown[] = [];
  let writes = 0;
  let running = true;
  const loops = Array.from({ length: count }, async (_, id) => {
    const client = await connect();
    client.on('error', (error) => errors.push(error));
    for (let i = 0; running; i++) {
      try {
        if (i % 4 === 3) {
          await client.query('INSERT INTO ops_reload (client, n) VALUES ($1, $2)', [id, i]);
          writes++;
        } else if (i % 10 === 5) {
          await client.query('BEGIN');
          await client.query('INSERT INTO ops_reload (client, n) VALUES ($1, $2)', [id, -i]);
          await client.query('SELECT count(*) FROM ops_reload WHERE client = $1', [id]);
          await client.query('COMMIT');
          writes++;
        } else {
          const sentAt = performance.now();
          const { rows } = await client.query<{ port: number }>('SELECT inet_server_port() AS port');
          reads.push({ port: rows[0]!.port, sentAt });
        }
      } catch (error) {
        errors.push(error);
        return; // one error fails the test; a client looping on errors would only pile them up
      }
    }
  });
  return {
    reads,
    errors,
    get writes() {
      return writes;
    },
    /** reads of `node` sent after `after` (performance.now()) */
    served: (node: LocalNode, after = 0) => reads.filter((r) => r.sentAt > after && r.port === node.port).length,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

describe('reload', () => {
  it('adds a replica and removes one under 16 busy clients: no client error, the new one serves, the removed one does not', async () => {
    const replica1 = cluster.node('replica1');
    const replica2 = cluster.node('replica2');
    const traffic = startTraffic(16);
    const t0 = performance.now();
    const step = (what: string) => process.stderr.write(`[ops-reload] ${((performance.now() - t0) / 1000).toFixed(1)}s ${what}: ${traffic.reads.length} reads, ${traffic.writes} writes, ${traffic.errors.length} errors\n`);
    let reloadedAt = Infinity;
    let replica3: LocalNode | undefined;
    try {
      await vi.waitFor(() => expect(traffic.served(replica1) > 20 && traffic.served(replica2) > 20 && traffic.writes > 20).toBe(true), { timeout: 60_000, interval: 100 });
      step('traffic on both replicas');

      // a read-only transaction held open on replica2 across the reload
      const holder = await connect();
      for (let attempt = 0; ; attempt++) {
        await holder.query('BEGIN READ ONLY');
        const { rows } = await holder.query<{ port: number }>('SELECT inet_server_port() AS port');
        if (rows[0]!.port === replica2.port) break;
        await holder.query('COMMIT');
        expect(attempt).toBeLessThan(50);
      }

      replica3 = await cluster.addNode('replica');
      expect(replica3.name).toBe('replica3');
      step('replica3 built');
      writeConfig(
        cluster.nodes.filter((n) => n.name !== 'replica2'),
        { pool: { size: 30 }, routing: { consistency: 'eventual', balance: 'round_robin', max_lag_ms: 4000 } },
      );
      process.kill(process.pid, 'SIGHUP');
      await vi.waitFor(() => expect(app.currentConfig.nodes.map((n) => n.name)).toEqual(['primary', 'replica1', 'replica3']), { timeout: 30_000, interval: 20 });
      reloadedAt = performance.now();
      step('reloaded');
      expect(logged('configuration reloaded').at(-1)?.changes).toBe('nodes +replica3 -replica2; pool.size, routing.max_lag_ms');

      // the removed node drains: its pool lends nothing more, the open transaction goes on there
      const draining = await status();
      expect(draining.nodes.map((n) => n.name)).toEqual(['primary', 'replica1', 'replica3']);
      expect(draining.max_lag_ms).toBe(4000);
      expect(draining.draining_pools).toEqual([expect.objectContaining({ node: 'replica2', active: 1, draining: true })]);
      expect((await holder.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port).toBe(replica2.port);
      await holder.query('COMMIT');
      await vi.waitFor(() => expect(app.pools.ofNode('replica2')).toEqual([]), { timeout: 10_000, interval: 20 });
      expect((await holder.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port).not.toBe(replica2.port);

      await vi.waitFor(() => expect(traffic.served(replica3!, reloadedAt)).toBeGreaterThan(50), { timeout: 60_000, interval: 100 });
      step('replica3 serving');
      // replica2 leaves the cluster for good while the clients go on
      await cluster.removeNode('replica2');
      const removedAt = performance.now();
      await vi.waitFor(() => expect(traffic.served(replica1, removedAt) > 20 && traffic.served(replica3!, removedAt) > 20).toBe(true), { timeout: 60_000, interval: 100 });
      step('replica2 gone');
    } finally {
      await traffic.stop();
    }
    expect(traffic.errors).toEqual([]);
    expect(traffic.served(replica2, reloadedAt)).toBe(0);
    expect(traffic.served(replica3, reloadedAt)).toBeGreaterThan(50);
    expect(traffic.served(replica1, reloadedAt)).toBeGreaterThan(50);
    // no client was dropped
    expect(app.frontend.clientCount).toBe(clients.length);
    const after = await status();
    expect(after.nodes.find((n) => n.name === 'primary')!.pools.every((p) => p.size === 30)).toBe(true);
    expect(after.draining_pools).toEqual([]);
    expect(after.last_reload).toMatchObject({ result: 'applied', changes: 'nodes +replica3 -replica2; pool.size, routing.max_lag_ms' });
  }, 300_000);

  it('rejects an invalid file (SIGHUP or POST /admin/reload), logs why, and keeps running the old configuration', async () => {
    const before = app.currentConfig;
    writeFileSync(configPath, stringify({ ...relayDocument({ nodes: cluster.nodes, user: cluster.user, password: cluster.password }), pool: { size: 'lots' } }));
    const rejectedBefore = logged('configuration reload rejected; keeping the running configuration').length;
    process.kill(process.pid, 'SIGHUP');
    await vi.waitFor(() => expect(logged('configuration reload rejected; keeping the running configuration').length).toBe(rejectedBefore + 1), { timeout: 10_000, interval: 20 });
    const entry = logged('configuration reload rejected; keeping the running configuration').at(-1)!;
    expect(entry.level).toBe('error');
    expect(entry.errors).toEqual([expect.stringMatching(/pool\.size at line \d+.*expected an integer ≥ 1, got "lots"/)]);
    expect(app.currentConfig).toBe(before);

    const response = await adminRequest(`http://127.0.0.1:${app.adminAddress!.port}`, 'POST', '/admin/reload');
    expect(response.status).toBe(400);
    const body = (await response.json()) as { status: string; errors: string[] };
    expect(body.status).toBe('rejected');
    expect(body.errors[0]).toMatch(/pool\.size at line \d+/);
    expect(app.currentConfig).toBe(before);
    // the relay still serves
    const client = await connect();
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('applies users live and keeps the running value of what needs a restart', async () => {
    const client = await connect();
    const document = relayDocument(
      { nodes: cluster.nodes, user: cluster.user, password: cluster.password, superuser: cluster.superuser, superuserPassword: cluster.superuserPassword },
      { routing: { consistency: 'eventual' }, listen: { host: '127.0.0.1', port: 1 } },
    );
    (document.users as unknown[]).push({ name: 'reporting', password: 'rep-secret', server_user: cluster.user, server_password: cluster.password });
    writeFileSync(configPath, stringify(document));
    await expect(connect('reporting', 'rep-secret')).rejects.toThrow(/password authentication failed for user "reporting"/);
    const response = await adminRequest(`http://127.0.0.1:${app.adminAddress!.port}`, 'POST', '/admin/reload');
    expect(response.status).toBe(200);
    const body = (await response.json()) as { status: string; changes: string; restartRequired: string[] };
    expect(body.status).toBe('applied');
    expect(body.changes).toContain('users +reporting');
    expect(body.restartRequired).toEqual(['listen.port']);
    expect(app.currentConfig.listen.port).not.toBe(1);
    expect(logged('configuration reload: these changes need a restart; their running values are kept').at(-1)?.keys).toEqual(['listen.port']);
    const reporting = await connect('reporting', 'rep-secret');
    expect((await reporting.query<{ u: string }>('SELECT current_user AS u')).rows[0]!.u).toBe(cluster.user);
    // the clients that were there all along are still served
    expect((await client.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
    // nothing in the log carries a password
    expect(logLines.filter((line) => line.includes('rep-secret'))).toEqual([]);
  });

  it('moves a node to another address: a transaction on the old one finishes there, then the old connections close', async () => {
    const replica1 = cluster.node('replica1');
    const replica3 = cluster.node('replica3');
    const holder = await connect();
    // a read-only transaction that landed on replica1 (once the lag monitor lets reads go there)
    await vi.waitFor(
      async () => {
        await holder.query('BEGIN READ ONLY');
        const { rows } = await holder.query<{ port: number }>('SELECT inet_server_port() AS port');
        if (rows[0]!.port !== replica1.port) {
          await holder.query('COMMIT');
          throw new Error(`the transaction landed on port ${rows[0]!.port}, not on replica1`);
        }
      },
      { timeout: 30_000, interval: 20 },
    );
    // "replica1" now names the server that was replica3 (which leaves the file)
    const moved = [cluster.node('primary'), { ...replica1, host: replica3.host, port: replica3.port }];
    writeConfig(moved);
    const response = await adminRequest(`http://127.0.0.1:${app.adminAddress!.port}`, 'POST', '/admin/reload');
    expect(response.status).toBe(200);
    expect(((await response.json()) as { changes: string }).changes).toMatch(/^nodes -replica3 ~replica1\(port\)/);
    // the old replica1 pool is retired with the transaction's connection still lent
    const draining = await status();
    expect(draining.draining_pools).toContainEqual(expect.objectContaining({ node: 'replica1', active: 1, draining: true }));
    expect((await holder.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port).toBe(replica1.port);
    await holder.query('COMMIT');
    // the connection came back to the new replica1 pool (same key), which handed it to the retired one
    await vi.waitFor(async () => expect((await status()).draining_pools).toEqual([]), { timeout: 10_000, interval: 50 });
    // reads under the name replica1 now reach the other server (once the lag monitor vouches for it), never the old one
    const ports: number[] = [];
    await vi.waitFor(
      async () => {
        ports.push((await holder.query<{ port: number }>('SELECT inet_server_port() AS port')).rows[0]!.port);
        expect(ports.at(-1)).toBe(replica3.port);
      },
      { timeout: 30_000, interval: 100 },
    );
    expect(ports.filter((port) => port === replica1.port)).toEqual([]);
  });
});
