import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configFailure } from '../support/config-failure.js';
import { redactConfig } from '../../src/config/redact.js';

const base = 'nodes:\n  - {name: primary, host: 127.0.0.1, role: primary}\nusers:\n  - {name: app, password: secret}\n';


describe('admin security keys', () => {
  it('default: no token (read-only API), reads open, no extra host names', () => {
    const { admin } = parseConfig(base);
    expect(admin).toEqual({ host: '127.0.0.1', port: 9930, read_access: 'open', allowed_hosts: [] });
  });

  it('takes the token from the environment and never shows it in /status', () => {
    const config = parseConfig(`${base}admin:\n  token: \${ADMIN_TOKEN}\n  read_access: probes\n`, { env: { ADMIN_TOKEN: 'from-the-environment-123' } });
    expect(config.admin.token).toBe('from-the-environment-123');
    expect(JSON.stringify(redactConfig(config))).not.toContain('from-the-environment-123');
  });

  it('refuses short tokens, the same token twice, a lone cert, and closed reads without a token', () => {
    expect(configFailure(`${base}admin:\n  token: short\n`)).toMatch(/line 6.*admin\.token is too short \(5 characters\); use at least 16/s);
    expect(configFailure(`${base}admin:\n  token: same-token-0123456789\n  read_token: same-token-0123456789\n`)).toMatch(/admin\.read_token is the same as admin\.token/);
    expect(configFailure(`${base}admin:\n  cert: admin.crt\n`)).toMatch(/admin\.cert is set but admin\.key is not/);
    expect(configFailure(`${base}admin:\n  read_access: token\n`)).toMatch(/admin\.read_access: token needs admin\.read_token or admin\.token/);
    expect(configFailure(`${base}admin:\n  read_access: everyone\n`)).toMatch(/admin\.read_access/);
  });
});
