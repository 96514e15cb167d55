import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { printStatus } from '../../src/admin/status-command.js';
import type { StatusDocument } from '../../src/admin/status.js';
import { useCleanups } from '../support/cleanups.js';
import { primaryOnly, STEADY } from '../support/protocol-client.js';
import { ADMIN_TOKEN, startRelay, type Relay } from '../support/relay.js';
import { sharedCluster } from '../support/shared-cluster.js';

// The admin API as an attacker and as an operator see it: every state-changing endpoint refuses
// a request without the token, with the read-only token, with a foreign Origin, under a foreign
// Host (DNS rebinding) and with a non-JSON body, while the token works; read access is
// configurable (probes open, /status behind a token) and the topology page works for a read-only
// viewer in a browser; the admin port can serve HTTPS.
const cleanups = useCleanups();
const cluster = primaryOnly(sharedCluster());
const READ_TOKEN = 'pgrelay-test-read-only-token';
let relay: Relay;

/** Every state-changing route pgrelay has (the cluster routes only in the demo: refused before routing). */
const MUTATIONS: ['POST' | 'DELETE', string][] = [
  ['POST', '/admin/reload'],
  ['POST', '/admin/switchover'],
  ['POST', '/admin/cluster/replicas'],
  ['POST', '/admin/cluster/standby'],
  ['DELETE', '/admin/cluster/nodes/replica1'],
];

async function start(overrides: Record<string, unknown>): Promise<Relay> {
  const started = await startRelay(cluster, { ...STEADY, ...overrides });
  cleanups.push(() => started.stop());
  return started;
}

/** A raw request (fetch cannot set Host): status and body. */
function raw(url: string, options: { method: string; headers: Record<string, string>; body?: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method: options.method, headers: options.headers }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode!, body }));
    });
    request.on('error', reject);
    request.end(options.body);
  });
}

const write = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };

async function primaryState(): Promise<Pick<StatusDocument, 'primary' | 'last_failover' | 'last_reload'>> {
  const status = (await (await fetch(`${relay.adminUrl}/status`, { headers: { authorization: `Bearer ${READ_TOKEN}` } })).json()) as StatusDocument;
  return { primary: status.primary, last_failover: status.last_failover, last_reload: status.last_reload };
}

beforeAll(async () => {
  relay = await start({ admin: { read_token: READ_TOKEN, read_access: 'probes' } });
});

describe('state-changing requests', () => {
  it('are refused without the token, with a wrong one and with the read-only one', async () => {
    for (const [method, path] of MUTATIONS) {
      const none = await fetch(`${relay.adminUrl}${path}`, { method, headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(none.status, `${method} ${path}`).toBe(401);
      expect(none.headers.get('www-authenticate')).toContain('Basic realm="pgrelay admin"');
      const wrong = await fetch(`${relay.adminUrl}${path}`, { method, headers: { ...write, authorization: 'Bearer not-the-admin-token-at-all' }, body: '{}' });
      expect(wrong.status, `${method} ${path}`).toBe(401);
      const reader = await fetch(`${relay.adminUrl}${path}`, { method, headers: { ...write, authorization: `Bearer ${READ_TOKEN}` }, body: '{}' });
      expect(reader.status, `${method} ${path}`).toBe(403);
    }
  });

  it('are refused from another origin, under a foreign Host and with a non-JSON body, even with the token', async () => {
    for (const [method, path] of MUTATIONS) {
      // a page on another site posting with the operator's credentials
      const crossOrigin = await fetch(`${relay.adminUrl}${path}`, { method, headers: { ...write, origin: 'http://attacker.example' }, body: '{}' });
      expect(crossOrigin.status, `${method} ${path}`).toBe(403);
      expect(await crossOrigin.json()).toEqual({ error: 'cross-origin request refused (Origin http://attacker.example)' });
      // DNS rebinding: the attacker's name resolves to the admin address
      const rebound = await raw(`${relay.adminUrl}${path}`, { method, headers: { ...write, host: 'attacker.example' }, body: '{}' });
      expect(rebound.status, `${method} ${path}`).toBe(403);
      expect((JSON.parse(rebound.body) as { error: string }).error).toContain('unexpected Host header "attacker.example"');
      // what an HTML form or a "simple" cross-site fetch sends
      for (const type of ['text/plain', 'application/x-www-form-urlencoded']) {
        const form = await fetch(`${relay.adminUrl}${path}`, { method, headers: { ...write, 'content-type': type }, body: 'target=standby1' });
        expect(form.status, `${method} ${path} ${type}`).toBe(415);
      }
    }
    // nothing happened
    expect(await primaryState()).toEqual({ primary: 'primary', last_failover: null, last_reload: null });
  });

  it('reach the handler with the token and a JSON body (or none)', async () => {
    const reload = await fetch(`${relay.adminUrl}/admin/reload`, { method: 'POST', headers: write });
    expect(reload.status).toBe(409);
    expect(((await reload.json()) as { errors: string[] }).errors[0]).toContain('not started from a config file');
    const switchover = await fetch(`${relay.adminUrl}/admin/switchover`, { method: 'POST', headers: write, body: JSON.stringify({ target: 'no-such-node' }) });
    expect(switchover.status).toBeGreaterThanOrEqual(400);
    expect(await switchover.json()).toMatchObject({ status: 'rejected' });
    const notJson = await fetch(`${relay.adminUrl}/admin/switchover`, { method: 'POST', headers: write, body: 'target=standby1' });
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toMatchObject({ status: 'rejected', error: expect.stringContaining('the body must be JSON') });
    expect((await primaryState()).primary).toBe('primary');
  });

  it('are all refused when no admin.token is configured (read-only admin API; the token is read live, a reload removes it)', async () => {
    const readOnly = await start({});
    readOnly.app.reload({ ...readOnly.config, admin: { ...readOnly.config.admin, token: undefined } });
    const response = await fetch(`${readOnly.adminUrl}/admin/switchover`, { method: 'POST', headers: write, body: '{}' });
    expect(response.status).toBe(403);
    expect(await response.json()).toEqual({ error: 'the admin API is read-only: set admin.token to allow state-changing requests' });
    expect((await fetch(`${readOnly.adminUrl}/status`)).status).toBe(200);
  });
});

describe('reads', () => {
  it('read_access probes: /health and /metrics open, /status and the page need a token', async () => {
    expect((await fetch(`${relay.adminUrl}/health`)).status).toBe(200);
    const metrics = await fetch(`${relay.adminUrl}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain('pgrelay_client_connections');
    expect((await fetch(`${relay.adminUrl}/status`)).status).toBe(401);
    expect((await fetch(`${relay.adminUrl}/`)).status).toBe(401);
    expect((await fetch(`${relay.adminUrl}/status`, { headers: { authorization: `Bearer ${READ_TOKEN}` } })).status).toBe(200);
    expect((await fetch(`${relay.adminUrl}/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(200);
    // DNS rebinding cannot read /status either
    expect((await raw(`${relay.adminUrl}/status`, { method: 'GET', headers: { host: 'attacker.example', authorization: `Bearer ${READ_TOKEN}` } })).status).toBe(403);
  });

  it('pgrelay status sends the token it is given, and says what is missing without one', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const sink = (into: string[]) => ({ write: (text: string) => void into.push(text) });
    expect(await printStatus(relay.adminUrl, sink(out), sink(err), READ_TOKEN)).toBe(0);
    expect(out.join('')).toMatch(/^primary: primary/);
    expect(await printStatus(relay.adminUrl, sink(out), sink(err))).toBe(1);
    expect(err.join('')).toContain('HTTP 401: set PGRELAY_ADMIN_TOKEN to admin.read_token or admin.token');
  });

  it('the topology page works for a read-only viewer in a browser (HTTP Basic with the read token)', async () => {
    const closed = await start({ admin: { read_token: READ_TOKEN, read_access: 'token' } });
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'] });
    cleanups.push(() => browser.close());
    expect((await fetch(`${closed.adminUrl}/`)).status).toBe(401);
    const context = await browser.newContext({ httpCredentials: { username: 'viewer', password: READ_TOKEN } });
    const page = await context.newPage();
    const statuses: number[] = [];
    page.on('response', (response) => statuses.push(response.status()));
    expect((await page.goto(`${closed.adminUrl}/`))!.status()).toBe(200);
    await page.waitForSelector('[data-node="primary"][data-role="primary"]', { timeout: 30_000 });
    expect(await page.textContent('#health')).toBe('writes OK');
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
  });
});

describe('HTTPS', () => {
  it('serves the admin API over TLS when admin.cert and admin.key are set', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgrelay-admin-tls-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-days', '1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    const secure = await start({ admin: { cert, key } });
    const port = secure.app.adminAddress!.port;
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', servername: 'localhost', port, path: '/health', headers: { host: `localhost:${port}` }, ca: readFileSync(cert) }, (response) => {
          let body = '';
          response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
          response.on('end', () => resolve({ status: response.statusCode!, body }));
        })
        .on('error', reject);
    });
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body)).toMatchObject({ status: 'ok', primary: 'primary' });
    // plain HTTP gets no answer from it
    await expect(fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(5000) })).rejects.toThrow();
  });
});
