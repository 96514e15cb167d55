import pg from 'pg';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { formatScramVerifier, makeScramSecret } from '../../src/auth/scram.js';
import { errorFields, primaryOnly, RawClient, serialize, startupPacket, startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { sharedCluster } from '../support/shared-cluster.js';

// How pgrelay authenticates its clients besides the SCRAM-SHA-256 default (protocol-pg covers
// that): md5, md5 for a user whose configured secret is a SCRAM verifier (PostgreSQL then asks
// for SCRAM), and trust. The servers are always logged in to with the configured credentials.
const cluster = primaryOnly(sharedCluster());
const relays: Relay[] = [];

async function relayWith(overrides: Record<string, unknown>): Promise<Relay> {
  const relay = await startProtocolRelay(cluster, overrides);
  relays.push(relay);
  return relay;
}

afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()));
});

/** The authentication request code pgrelay answers a StartupMessage for `user` with. */
async function firstAuthRequest(port: number, user: string): Promise<{ raw: RawClient; kind: number }> {
  const raw = await RawClient.open(port);
  raw.send(startupPacket(196608, { user, database: cluster.database }));
  const m = await raw.next();
  expect(m.type).toBe('R');
  return { raw, kind: m.body.readInt32BE(0) };
}

describe('auth.method: md5', () => {
  it('asks for an md5 password; pg and postgres.js log in and query', async () => {
    const relay = await relayWith({ auth: { method: 'md5' } });
    const { raw, kind } = await firstAuthRequest(relay.port, cluster.user);
    raw.destroy();
    expect(kind).toBe(5); // AuthenticationMD5Password
    const client = new pg.Client({ connectionString: relay.url() });
    await client.connect();
    try {
      expect((await client.query('SELECT current_user AS u')).rows[0].u).toBe(cluster.user);
    } finally {
      await client.end();
    }
    const sql = postgres(relay.url(), { max: 1, onnotice: () => undefined });
    try {
      expect(await sql`SELECT ${1}::int AS v`).toEqual([{ v: 1 }]);
    } finally {
      await sql.end({ timeout: 1 });
    }
    const rawLogin = await RawClient.connect(relay.port, { user: cluster.user, password: cluster.password, database: cluster.database });
    rawLogin.destroy();
  });

  it('refuses a wrong password with 28P01, and an unknown user the same way after an md5 challenge', async () => {
    const relay = await relayWith({ auth: { method: 'md5' } });
    const wrong = new pg.Client({ connectionString: relay.url({ password: 'wrong' }) });
    await expect(wrong.connect()).rejects.toMatchObject({ code: '28P01', message: `password authentication failed for user "${cluster.user}"` });
    const { raw, kind } = await firstAuthRequest(relay.port, 'nobody');
    try {
      expect(kind).toBe(5);
      raw.send(serialize.password('md5' + '0'.repeat(32)));
      const m = await raw.next();
      expect(m.type).toBe('E');
      expect(errorFields(m.body).get('C')).toBe('28P01');
      expect(errorFields(m.body).get('M')).toBe('password authentication failed for user "nobody"');
      await raw.closedByServer();
    } finally {
      raw.destroy();
    }
  });

  it('uses SCRAM for a user whose configured password is a SCRAM verifier (as PostgreSQL does)', async () => {
    const verifier = formatScramVerifier(makeScramSecret(cluster.password));
    const relay = await relayWith({ auth: { method: 'md5' }, users: [{ name: cluster.user, password: verifier, server_password: cluster.password }] });
    const { raw, kind } = await firstAuthRequest(relay.port, cluster.user);
    raw.destroy();
    expect(kind).toBe(10); // AuthenticationSASL
    const client = new pg.Client({ connectionString: relay.url() });
    await client.connect();
    try {
      expect((await client.query('SELECT 1 AS v')).rows[0].v).toBe(1);
    } finally {
      await client.end();
    }
    const wrong = new pg.Client({ connectionString: relay.url({ password: 'wrong' }) });
    await expect(wrong.connect()).rejects.toMatchObject({ code: '28P01' });
  });
});

describe('auth.method: trust', () => {
  it('lets a configured user in without a password request', async () => {
    const relay = await relayWith({ auth: { method: 'trust' } });
    const raw = await RawClient.open(relay.port);
    try {
      raw.send(startupPacket(196608, { user: cluster.user, database: cluster.database }));
      const m = await raw.next();
      expect(m.type).toBe('R');
      expect(m.body.readInt32BE(0)).toBe(0); // AuthenticationOk at once
      await raw.until('Z');
      expect((await raw.query('SELECT 1')).map((x) => x.type)).toEqual(['T', 'D', 'C', 'Z']);
    } finally {
      raw.destroy();
    }
    const client = new pg.Client({ connectionString: `postgres://${cluster.user}@127.0.0.1:${relay.port}/${cluster.database}` });
    await client.connect();
    try {
      expect((await client.query('SELECT current_user AS u')).rows[0].u).toBe(cluster.user);
    } finally {
      await client.end();
    }
  });

  it('refuses a user that is not configured with 28000', async () => {
    const relay = await relayWith({ auth: { method: 'trust' } });
    const client = new pg.Client({ connectionString: `postgres://nobody@127.0.0.1:${relay.port}/${cluster.database}` });
    await expect(client.connect()).rejects.toMatchObject({ code: '28000' });
  });
});
