import { describe, expect, it } from 'vitest';
import { checkAdminRequest, type AdminAccessConfig, type AdminRequest } from '../../src/admin/admin-guard.js';

// Who may do what on the admin port: Host (DNS rebinding), Origin (cross-site), JSON-only
// mutations, the write token, the read-only token, read_access.
const TOKEN = 'write-token-0123456789';
const READ = 'read-token-0123456789ab';
const base: AdminAccessConfig = { host: '127.0.0.1', port: 9930, token: TOKEN, read_token: READ, read_access: 'open', allowed_hosts: ['pgrelay.internal'] };

function request(method: string, path: string, headers: Record<string, string> = {}): AdminRequest {
  return { method, path, headers: { host: '127.0.0.1:9930', ...headers } };
}
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const basic = (token: string) => ({ authorization: `Basic ${Buffer.from(`viewer:${token}`).toString('base64')}` });
const JSON_TYPE = { 'content-type': 'application/json' };

function status(req: AdminRequest, config: AdminAccessConfig = base, secure = false): number {
  const verdict = checkAdminRequest(req, config, secure);
  return verdict.ok ? 200 : verdict.status;
}

describe('state-changing requests', () => {
  it('need the write token, sent as Bearer or as the Basic password', () => {
    expect(status(request('POST', '/admin/reload', JSON_TYPE))).toBe(401);
    expect(status(request('POST', '/admin/reload', { ...JSON_TYPE, ...bearer('wrong-token-0123456789') }))).toBe(401);
    expect(status(request('POST', '/admin/reload', { ...JSON_TYPE, ...bearer(TOKEN) }))).toBe(200);
    expect(status(request('DELETE', '/admin/cluster/nodes/r1', { ...JSON_TYPE, ...basic(TOKEN) }))).toBe(200);
  });

  it('are refused with the read-only token (403), and when no token is configured at all', () => {
    expect(status(request('POST', '/admin/switchover', { ...JSON_TYPE, ...bearer(READ) }))).toBe(403);
    const verdict = checkAdminRequest(request('POST', '/admin/switchover', { ...JSON_TYPE, ...bearer(TOKEN) }), { ...base, token: undefined }, false);
    expect(verdict).toMatchObject({ ok: false, status: 403, error: expect.stringContaining('set admin.token') });
  });

  it('need Content-Type application/json, even with the right token (a form or simple fetch cannot send it)', () => {
    for (const type of [undefined, 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const headers = { ...bearer(TOKEN), ...(type ? { 'content-type': type } : {}) };
      expect(status(request('POST', '/admin/switchover', headers))).toBe(415);
    }
    expect(status(request('POST', '/admin/switchover', { ...bearer(TOKEN), 'content-type': 'Application/JSON; charset=utf-8' }))).toBe(200);
  });
});

describe('Host and Origin', () => {
  it('accept IP addresses, localhost, admin.host and allowed_hosts; refuse other names (DNS rebinding)', () => {
    for (const host of ['127.0.0.1:9930', '[::1]:9930', '10.1.2.3', 'localhost:9930', 'pgrelay.internal:9930', 'PGRELAY.internal']) {
      expect(status(request('GET', '/status', { host })), host).toBe(200);
    }
    for (const host of ['attacker.example:9930', 'pgrelay.internal.attacker.example', '127.0.0.1:9930@evil', '']) {
      expect(status(request('GET', '/status', { host })), host).toBe(403);
    }
    expect(status({ method: 'GET', path: '/status', headers: {} })).toBe(400);
  });

  it('refuse a foreign Origin and Sec-Fetch-Site cross-site, also for reads and with the token', () => {
    const write = { ...JSON_TYPE, ...bearer(TOKEN) };
    expect(status(request('POST', '/admin/switchover', { ...write, origin: 'http://attacker.example' }))).toBe(403);
    expect(status(request('POST', '/admin/switchover', { ...write, origin: 'null' }))).toBe(403);
    expect(status(request('POST', '/admin/switchover', { ...write, origin: 'https://127.0.0.1:9930' }))).toBe(403);
    expect(status(request('GET', '/status', { origin: 'http://attacker.example' }))).toBe(403);
    expect(status(request('GET', '/status', { 'sec-fetch-site': 'cross-site' }))).toBe(403);
    expect(status(request('GET', '/status', { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'cors' }))).toBe(403);
    // following a link from another site (Grafana) to the page: shown to the operator, not readable by that site
    expect(status(request('GET', '/', { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' }))).toBe(200);
    expect(status(request('POST', '/admin/switchover', { ...write, 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' }))).toBe(403);
    // the page itself (same origin) may post
    expect(status(request('POST', '/admin/switchover', { ...write, origin: 'http://127.0.0.1:9930', 'sec-fetch-site': 'same-origin' }))).toBe(200);
    expect(status(request('POST', '/admin/switchover', { ...write, origin: 'https://127.0.0.1:9930' }), base, true)).toBe(200);
  });
});

describe('reads', () => {
  it('open: every GET without a token; a wrong token is still refused', () => {
    expect(status(request('GET', '/status'))).toBe(200);
    expect(status(request('GET', '/', bearer('wrong-token-0123456789')))).toBe(401);
  });

  it('probes: /health and /metrics open, the rest needs the read or the write token', () => {
    const probes = { ...base, read_access: 'probes' as const };
    expect(status(request('GET', '/health'), probes)).toBe(200);
    expect(status(request('GET', '/metrics'), probes)).toBe(200);
    const verdict = checkAdminRequest(request('GET', '/status'), probes, false);
    expect(verdict).toMatchObject({ ok: false, status: 401, headers: { 'www-authenticate': expect.stringContaining('Basic realm=') } });
    expect(status(request('GET', '/status', basic(READ)), probes)).toBe(200);
    expect(status(request('GET', '/', bearer(TOKEN)), probes)).toBe(200);
  });

  it('token: nothing without a token', () => {
    const closed = { ...base, read_access: 'token' as const };
    expect(status(request('GET', '/health'), closed)).toBe(401);
    expect(status(request('GET', '/health', bearer(READ)), closed)).toBe(200);
  });
});
