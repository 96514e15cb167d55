import net from 'node:net';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { AuthError } from '../../src/auth/auth-error.js';
import { enforceServerAuth } from '../../src/auth/pg-client-auth.js';
import type { ServerAuthMethod } from '../../src/config/types.js';
import { ServerConnection } from '../../src/pool/server-connection.js';
import { useCleanups } from '../support/cleanups.js';
import { sharedCluster } from '../support/shared-cluster.js';

// pgrelay logging in to servers (server_auth.require_auth, libpq's model): a server that asks
// for a cleartext password gets nothing unless the configuration allows it; an AuthenticationOk
// in the middle of SCRAM, before the server proved it knows the password, is refused. Both for
// the data path (ServerConnection) and for pgrelay's own pg.Client connections (health, lag,
// pg_proc, failover). Real logins to the local cluster (SCRAM) still work.
const cleanups = useCleanups();
const DEFAULT: ReadonlySet<ServerAuthMethod> = new Set(['scram-sha-256', 'md5', 'none']);
const PASSWORD = 'fake-server-must-not-see-this';

function frame(code: string, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.write(code, 0, 'latin1');
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}
const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const authRequest = (kind: number, rest = Buffer.alloc(0)) => frame('R', Buffer.concat([int32(kind), rest]));
const AUTH_OK = authRequest(0);
const READY = frame('Z', Buffer.from('I'));
const CLEARTEXT = authRequest(3);
const SASL = authRequest(10, Buffer.from('SCRAM-SHA-256\0\0'));

interface FakeServer {
  port: number;
  /** frontend messages received after the startup packet: type letter and body */
  received: { type: string; body: Buffer }[];
}

/**
 * A PostgreSQL impostor on 127.0.0.1: reads the startup packet, sends `greeting`, and answers
 * every later message with `reply` (AuthenticationOk + ReadyForQuery by default).
 */
async function fakeServer(greeting: Buffer, reply: Buffer = Buffer.concat([AUTH_OK, READY])): Promise<FakeServer> {
  const received: FakeServer['received'] = [];
  const server = net.createServer((socket) => {
    let pending = Buffer.alloc(0);
    let started = false;
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        if (!started) {
          if (pending.length < 4) return;
          const length = pending.readInt32BE(0);
          if (pending.length < length) return;
          pending = pending.subarray(length);
          started = true;
          socket.write(greeting);
          continue;
        }
        if (pending.length < 5) return;
        const length = pending.readInt32BE(1);
        if (pending.length < length + 1) return;
        received.push({ type: String.fromCharCode(pending[0]!), body: pending.subarray(5, length + 1) });
        pending = pending.subarray(length + 1);
        socket.write(reply);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  return { port: (server.address() as net.AddressInfo).port, received };
}

function connectRelay(port: number, requireAuth: ReadonlySet<ServerAuthMethod>, login = { user: 'app', password: PASSWORD, database: 'app' }): Promise<ServerConnection> {
  return ServerConnection.connect({ node: 'impostor', host: '127.0.0.1', port }, login, { connectTimeoutMs: 5000, tls: { mode: 'disable' }, requireAuth });
}

async function connectPg(port: number, requireAuth: ReadonlySet<ServerAuthMethod>, login = { user: 'app', password: PASSWORD, database: 'app' }): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', port, ...login, connectionTimeoutMillis: 5000 });
  enforceServerAuth(client, 'impostor', requireAuth);
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    client.connection.stream.destroy();
    throw error;
  }
  cleanups.push(() => client.end());
  return client;
}

async function refusal(attempt: Promise<unknown>): Promise<AuthError> {
  const error = await attempt.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AuthError);
  return error as AuthError;
}

/** Everything the fake server received, as text: the password must appear nowhere. */
function receivedText(server: FakeServer): string {
  return server.received.map((m) => m.body.toString('latin1')).join('|');
}

describe('data path (ServerConnection)', () => {
  it('refuses a server that asks for a cleartext password, and sends it nothing', async () => {
    const server = await fakeServer(CLEARTEXT);
    const error = await refusal(connectRelay(server.port, DEFAULT));
    expect(error.code).toBe('method-not-allowed');
    expect(error.sqlstate).toBe('28000');
    expect(error.message).toBe('node impostor asked for a cleartext password, which server_auth.require_auth does not allow (allowed: scram-sha-256, md5, none)');
    expect(server.received.filter((m) => m.type === 'p')).toEqual([]);
    expect(receivedText(server)).not.toContain(PASSWORD);
  });

  it('sends the cleartext password when require_auth lists `password` (the refusal above is the policy, not an accident)', async () => {
    const server = await fakeServer(CLEARTEXT);
    const conn = await connectRelay(server.port, new Set(['password']));
    conn.destroy();
    expect(server.received.map((m) => m.type)).toEqual(['p']);
    expect(server.received[0]!.body.toString('utf8')).toBe(`${PASSWORD}\0`);
  });

  it('refuses AuthenticationOk in the middle of SCRAM, before the server signature', async () => {
    const server = await fakeServer(SASL);
    const error = await refusal(connectRelay(server.port, DEFAULT));
    expect(error.code).toBe('server-signature');
    expect(error.message).toContain('node impostor said AuthenticationOk before proving it knows the password');
    // the client-first message went out (no secret in it); then nothing more
    expect(server.received.map((m) => m.type)).toEqual(['p']);
    expect(receivedText(server)).toContain('SCRAM-SHA-256');
  });

  it('refuses a trust server when require_auth leaves out `none`', async () => {
    const server = await fakeServer(Buffer.concat([AUTH_OK, READY]));
    const error = await refusal(connectRelay(server.port, new Set(['scram-sha-256'])));
    expect(error.message).toContain('did not ask for authentication');
    const conn = await connectRelay(server.port, DEFAULT);
    conn.destroy();
  });

  it('logs in to the real cluster with SCRAM, and refuses it when only md5 is allowed', async () => {
    const cluster = sharedCluster();
    const primary = cluster.nodes.find((n) => n.role === 'primary')!;
    const login = { user: cluster.user, password: cluster.password, database: cluster.database };
    const endpoint = { node: primary.name, host: primary.host, port: primary.port };
    const conn = await ServerConnection.connect(endpoint, login, { connectTimeoutMs: 5000, tls: { mode: 'disable' }, requireAuth: DEFAULT });
    expect(conn.processId).toBeGreaterThan(0);
    conn.terminate();
    const error = await refusal(ServerConnection.connect(endpoint, login, { connectTimeoutMs: 5000, tls: { mode: 'disable' }, requireAuth: new Set(['md5']) }));
    expect(error.message).toBe(`node ${primary.name} asked for scram-sha-256 authentication, which server_auth.require_auth does not allow (allowed: md5)`);
  });
});

describe("pgrelay's own connections (pg.Client with enforceServerAuth)", () => {
  it('refuses a cleartext request before pg answers it', async () => {
    const server = await fakeServer(CLEARTEXT);
    const error = await refusal(connectPg(server.port, DEFAULT));
    expect(error.code).toBe('method-not-allowed');
    expect(error.message).toContain('asked for a cleartext password');
    // give pg's own (async) password handler the time to run: it must find the socket closed
    await new Promise((resolve) => setImmediate(resolve));
    expect(receivedText(server)).not.toContain(PASSWORD);
    expect(server.received.filter((m) => m.type === 'p')).toEqual([]);
  });

  it('refuses AuthenticationOk in the middle of SCRAM', async () => {
    const server = await fakeServer(SASL);
    const error = await refusal(connectPg(server.port, DEFAULT));
    expect(error.code).toBe('server-signature');
  });

  it('logs in to the real cluster, and refuses it when only `password` is allowed', async () => {
    const cluster = sharedCluster();
    const primary = cluster.nodes.find((n) => n.role === 'primary')!;
    const login = { user: cluster.user, password: cluster.password, database: cluster.database };
    const client = await connectPg(primary.port, DEFAULT, login);
    const { rows } = await client.query<{ one: number }>('SELECT 1 AS one');
    expect(rows).toEqual([{ one: 1 }]);
    const error = await refusal(connectPg(primary.port, new Set(['password']), login));
    expect(error.message).toContain('asked for scram-sha-256 authentication');
  });
});
