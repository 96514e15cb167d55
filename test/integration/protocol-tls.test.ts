import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { primaryOnly, RawClient, startupPacket, startProtocolRelay } from '../support/protocol-client.js';
import type { Relay } from '../support/relay.js';
import { sharedCluster } from '../support/shared-cluster.js';

// Client-facing TLS: SSLRequest answered 'S' and the session runs over TLS when tls.cert/key are
// configured, 'N' (plaintext fallback for sslmode=prefer) when not, and plaintext refused with
// 28000 when tls.required is set. A throw-away self-signed certificate is made per run.
const cluster = primaryOnly(sharedCluster());
let dir: string;
let cert: string;
let key: string;
const relays: Relay[] = [];

async function relayWith(overrides: Record<string, unknown>): Promise<Relay> {
  const relay = await startProtocolRelay(cluster, overrides);
  relays.push(relay);
  return relay;
}

function psql(url: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-align', '--tuples-only', url, ...args], { env: { ...process.env, PGCONNECT_TIMEOUT: '10', PGGSSENCMODE: 'disable' }, timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pgrelay-tls-'));
  cert = join(dir, 'cert.pem');
  key = join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
});

afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('client TLS', () => {
  it('node-postgres logs in over TLS and queries', async () => {
    const relay = await relayWith({ tls: { cert, key } });
    const client = new pg.Client({ connectionString: relay.url(), ssl: { rejectUnauthorized: false } });
    await client.connect();
    try {
      const stream = (client as unknown as { connection: { stream: TLSSocket } }).connection.stream;
      expect(stream.encrypted).toBe(true);
      expect(stream.getProtocol()).toMatch(/^TLSv1\.[23]$/);
      expect((await client.query('SELECT $1::text AS v', ['over tls'])).rows).toEqual([{ v: 'over tls' }]);
      // a result larger than a TLS record, through the encrypted stream
      expect((await client.query("SELECT count(*)::int AS n FROM (SELECT repeat('x', 1000) FROM generate_series(1, 5000)) s")).rows[0].n).toBe(5000);
      const big = await client.query("SELECT repeat('y', 100000) AS v FROM generate_series(1, 20)");
      expect(big.rows.every((r: { v: string }) => r.v.length === 100_000)).toBe(true);
    } finally {
      await client.end();
    }
    // a wrong password is refused over TLS as well
    const wrong = new pg.Client({ connectionString: relay.url({ password: 'wrong' }), ssl: { rejectUnauthorized: false } });
    await expect(wrong.connect()).rejects.toMatchObject({ code: '28P01' });
  });

  it('postgres.js with ssl: require, and psql with sslmode=require', async () => {
    const relay = await relayWith({ tls: { cert, key } });
    const sql = postgres(relay.url(), { ssl: 'require', max: 1, onnotice: () => undefined });
    try {
      expect(await sql`SELECT ${41}::int + 1 AS v`).toEqual([{ v: 42 }]);
    } finally {
      await sql.end({ timeout: 1 });
    }
    const result = await psql(`${relay.url()}?sslmode=require`, ['-c', 'SELECT 1', '-c', '\\conninfo']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^1\n/);
    expect(result.stdout).toMatch(/SSL connection \(protocol: TLSv1\.[23]/);
  });

  it('refuses plaintext clients with 28000 when tls.required is set', async () => {
    const relay = await relayWith({ tls: { cert, key, required: true } });
    const plain = new pg.Client({ connectionString: relay.url(), ssl: false });
    await expect(plain.connect()).rejects.toMatchObject({ code: '28000' });
    const refused = await psql(`${relay.url()}?sslmode=disable`, ['-c', 'SELECT 1']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/requires TLS/);
    // sslmode=prefer upgrades, and is let in
    const prefer = await psql(`${relay.url()}?sslmode=prefer`, ['-c', 'SELECT 1']);
    expect(prefer.stderr).toBe('');
    expect(prefer.stdout.trim()).toBe('1');
  });

  it('answers N to SSLRequest without tls configured: sslmode=prefer falls back to plaintext, require fails', async () => {
    const relay = await relayWith({});
    const prefer = await psql(`${relay.url()}?sslmode=prefer`, ['-c', 'SELECT 1', '-c', '\\conninfo']);
    expect(prefer.stderr).toBe('');
    expect(prefer.stdout).toMatch(/^1\n/);
    expect(prefer.stdout).not.toMatch(/SSL connection/);
    const require = await psql(`${relay.url()}?sslmode=require`, ['-c', 'SELECT 1']);
    expect(require.code).not.toBe(0);
    expect(require.stderr).toMatch(/server does not support SSL/);
    // the raw exchange: 'N', then a StartupMessage on the same connection logs in
    const raw = await RawClient.open(relay.port);
    try {
      const answer = new Promise<Buffer>((resolve) => raw.socket.once('data', resolve));
      raw.send(sslRequest());
      expect((await answer).toString()).toBe('N');
    } finally {
      raw.destroy();
    }
  });

  it('refuses plaintext bytes sent after an SSLRequest in the same packet (08P01)', async () => {
    const relay = await relayWith({ tls: { cert, key } });
    const raw = await RawClient.open(relay.port);
    try {
      const startup = startupPacket(196608, { user: cluster.user, database: cluster.database });
      const closed = new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        raw.socket.on('data', (c: Buffer) => chunks.push(c));
        raw.socket.on('close', () => resolve(Buffer.concat(chunks)));
      });
      raw.send(Buffer.concat([sslRequest(), startup]));
      const bytes = await closed;
      expect(bytes.toString('latin1')).toContain('08P01');
    } finally {
      raw.destroy();
    }
  });
});

function sslRequest(): Buffer {
  const packet = Buffer.alloc(8);
  packet.writeInt32BE(8, 0);
  packet.writeInt32BE(80877103, 4);
  return packet;
}
