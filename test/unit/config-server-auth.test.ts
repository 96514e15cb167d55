import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configFailure } from '../support/config-failure.js';

const base = 'nodes:\n  - {name: primary, host: 127.0.0.1, role: primary}\nusers:\n  - {name: app, password: secret}\n';


describe('server_auth.require_auth', () => {
  it('defaults to scram-sha-256, md5 and none: no cleartext', () => {
    expect(parseConfig(base).server_auth.require_auth).toEqual(['scram-sha-256', 'md5', 'none']);
  });

  it('takes a list of libpq method names', () => {
    expect(parseConfig(`${base}server_auth:\n  require_auth: [scram-sha-256]\n`).server_auth.require_auth).toEqual(['scram-sha-256']);
  });

  it('refuses an unknown method and an empty list, naming the key and the line', () => {
    expect(configFailure(`${base}server_auth:\n  require_auth: [scram-sha-256, kerberos]\n`)).toMatch(/server_auth\.require_auth\[1\].*line 6/s);
    expect(configFailure(`${base}server_auth:\n  require_auth: []\n`)).toMatch(/line 6.*server_auth\.require_auth is empty/s);
  });
});

describe('server_tls.mode', () => {
  it('takes libpq sslmode names; verify-ca and verify-full need a ca', () => {
    expect(parseConfig(`${base}server_tls:\n  mode: require\n`).server_tls.mode).toBe('require');
    expect(configFailure(`${base}server_tls:\n  mode: verify-full\n`)).toMatch(/line 6.*server_tls\.mode verify-full needs server_tls\.ca/s);
    expect(configFailure(`${base}server_tls:\n  mode: verify-ca\n`)).toMatch(/server_tls\.mode verify-ca needs server_tls\.ca/);
    expect(configFailure(`${base}server_tls:\n  mode: allow\n`)).toMatch(/server_tls\.mode/);
  });
});

describe('auth_query', () => {
  it('is off by default; takes a user, with PgBouncer\u2019s query and postgres as defaults', () => {
    expect(parseConfig(base).auth_query).toBeUndefined();
    expect(parseConfig(`${base}auth_query:\n  user: lookup\n  password: secret\n`).auth_query).toEqual({
      user: 'lookup',
      password: 'secret',
      query: 'SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1',
      database: 'postgres',
    });
    expect(configFailure(`${base}auth_query:\n  query: SELECT 1\n`)).toMatch(/auth_query\.user/);
  });
});

describe('a verifier-only first user', () => {
  const verifierUser = 'nodes:\n  - {name: primary, host: 127.0.0.1, role: primary}\nusers:\n  - {name: app, password: "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB"}\n';
  it('needs health.user for pgrelay\u2019s own connections', () => {
    expect(configFailure(verifierUser)).toMatch(/users\[0\]\.password.*only a SCRAM verifier.*set health\.user/s);
    expect(parseConfig(`${verifierUser}health:\n  user: monitor\n  password: pw\n`).health.user).toBe('monitor');
  });
});
