import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { printStatus } from '../../src/admin/status-command.js';
import type { StatusDocument } from '../../src/admin/status.js';
import { adminRequest, startRelay, type Relay } from '../support/relay.js';
import { sharedCluster } from '../support/shared-cluster.js';

// The admin API against a relay in front of the shared cluster: /health, /status, the
// `pgrelay status` table, the topology page's document, and the HTTP router's answers.
const cluster = sharedCluster();
let relay: Relay;
const clients: pg.Client[] = [];

function sink(): { text: string; write(chunk: string): boolean } {
  return {
    text: '',
    write(chunk: string) {
      this.text += chunk;
      return true;
    },
  };
}

async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: relay.url() });
  clients.push(client);
  await client.connect();
  return client;
}

beforeAll(async () => {
  // health checks that tolerate a loaded test machine (every node is expected up here)
  relay = await startRelay(cluster, { routing: { consistency: 'session' }, health: { timeout_ms: 5000, failures: 5 } });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await relay?.stop();
});

describe('admin API', () => {
  it('GET /health is 200 with the primary when writes can be served', async () => {
    const response = await fetch(`${relay.adminUrl}/health`);
    expect(response.status).toBe(200);
    // the failover verdict of the preflight rides along; it does not change the status code
    expect(await response.json()).toEqual({ status: 'ok', primary: 'primary', failover: { state: 'ok', reason: expect.stringContaining('can promote') } });
  });

  it('GET /status describes nodes, pools, clients and unit counts', async () => {
    const client = await connect();
    await client.query('CREATE TEMP TABLE IF NOT EXISTS ops_status_t (n int)'); // pins this client to the primary
    for (let i = 0; i < 5; i++) await client.query('INSERT INTO ops_status_t VALUES ($1)', [i]);
    const response = await fetch(`${relay.adminUrl}/status`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('application/json');
    const status = (await response.json()) as StatusDocument;
    expect(status.primary).toBe('primary');
    expect(status.health).toEqual({ ok: true, primary: 'primary', failover: { state: 'ok', reason: expect.any(String) } });
    expect(status.consistency).toBe('session');
    expect(status.max_lag_ms).toBe(relay.config.routing.max_lag_ms);
    expect(status.clients).toBeGreaterThanOrEqual(1);
    expect(status.pinned_sessions).toBeGreaterThanOrEqual(1);
    expect(status.last_failover).toBeNull();
    expect(status.nodes.map((n) => n.name).sort()).toEqual(cluster.nodes.map((n) => n.name).sort());
    for (const node of status.nodes) {
      const configured = cluster.nodes.find((n) => n.name === node.name)!;
      expect(node).toMatchObject({ host: configured.host, port: configured.port, configured_role: configured.role, up: true, fenced: false });
      expect(['up', 'stale']).toContain(node.health);
      expect(typeof node.inflight).toBe('number');
    }
    const primary = status.nodes.find((n) => n.name === 'primary')!;
    expect(primary.health).toBe('up');
    expect(primary.units.writes).toBeGreaterThanOrEqual(6);
    expect(primary.pools.length).toBeGreaterThanOrEqual(1);
    expect(primary.pools[0]).toMatchObject({ user: cluster.user, database: cluster.database, size: relay.config.pool.size, draining: false });
    expect(primary.pools.reduce((s, p) => s + p.active + p.idle, 0)).toBeGreaterThanOrEqual(1);
    // the config is there, without credentials
    expect(JSON.stringify(status.config)).not.toContain(`"password":"${cluster.password}"`);
  });

  it('`pgrelay status` prints the table from a running relay', async () => {
    const out = sink();
    const err = sink();
    expect(await printStatus(relay.adminUrl, out, err)).toBe(0);
    expect(err.text).toBe('');
    const lines = out.text.split('\n');
    expect(lines[0]).toMatch(/^primary: primary {3}writes: ok {3}consistency: session {3}max lag: \d+(ms|\.\d+s) {3}clients: \d+$/);
    expect(lines[1]).toMatch(/^NODE\s+ROLE\s+ADDRESS\s+HEALTH\s+LAG\s+IN FLIGHT\s+POOL ACT\/IDLE\/WAIT\s+UNITS R\/W$/);
    for (const node of cluster.nodes) {
      const row = lines.find((l) => l.startsWith(`${node.name} `));
      expect(row, node.name).toBeDefined();
      expect(row).toContain(`${node.host}:${node.port}`);
      expect(row).toMatch(/\s(up|stale)\s/);
    }
    expect(out.text).toContain('last failover: none');
  });

  it('`pgrelay status` fails clearly when nothing answers', async () => {
    const out = sink();
    const err = sink();
    const closed = await startRelay(cluster);
    const url = closed.adminUrl;
    await closed.stop();
    expect(await printStatus(url, out, err)).toBe(1);
    expect(out.text).toBe('');
    expect(err.text).toMatch(/^pgrelay status: cannot read http:\/\/127\.0\.0\.1:\d+\/status: /);
  });

  it('GET / serves the self-contained topology page', async () => {
    const response = await fetch(`${relay.adminUrl}/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const html = await response.text();
    expect(html).toContain('<title>pgrelay topology</title>');
    expect(html).toContain('fetch("/status"');
    // served offline: no script, style, image or font from anywhere else
    expect(html).not.toMatch(/(src|href)\s*=\s*["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/@import|url\(\s*["']?https?:/i);
  });

  it('answers 404 for unknown paths, 405 for a known path with the wrong method, 409 for a reload without a file', async () => {
    expect((await fetch(`${relay.adminUrl}/nope`)).status).toBe(404);
    expect((await adminRequest(relay.adminUrl, 'POST', '/status')).status).toBe(405);
    const reload = await adminRequest(relay.adminUrl, 'POST', '/admin/reload');
    expect(reload.status).toBe(409);
    expect(((await reload.json()) as { errors: string[] }).errors[0]).toContain('not started from a config file');
  });
});
