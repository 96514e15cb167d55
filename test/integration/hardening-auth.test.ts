import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ScramClientExchange } from '../../src/auth/scram.js';
import { removeCompiled, startRelayChild, type RelayChild } from '../support/hardening-process.js';
import { Conversation, sendCancel, sslRequest } from '../support/hardening-wire.js';
import { errorFields, primaryOnly, RawClient, serialize, startupPacket, type BackendMessage } from '../support/protocol-client.js';
import { relayDocument, startRelay, type Relay } from '../support/relay.js';
import { queryNode, sharedCluster } from '../support/shared-cluster.js';

// Authentication, TLS, cancel keys and logs under attack: a wrong password and an unknown user
// look the same (messages, SCRAM parameters, timing); tls.required leaves no plaintext path and
// survives garbage instead of a TLS handshake; a CancelRequest cancels only the query of the
// client whose key it carries, never another client's (not even one that shares its server
// connection); and no password, bind parameter or literal reaches pgrelay's logs at debug level.
const cluster = primaryOnly(sharedCluster());
const BOUND_MS = 30_000;
const relays: Relay[] = [];

async function relayWith(overrides: Record<string, unknown>): Promise<Relay> {
  const relay = await startRelay(cluster, overrides);
  relays.push(relay);
  return relay;
}

afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()));
});

interface ScramAttempt {
  /** the messages pgrelay sent, in order */
  messages: BackendMessage[];
  serverFirst: string;
  /** ms from sending client-final to pgrelay's answer */
  finalMs: number;
}

/** A complete SCRAM exchange with `password`; returns what pgrelay answered at each step. */
async function scramAttempt(port: number, user: string, password: string): Promise<ScramAttempt> {
  const raw = await RawClient.open(port);
  try {
    const messages: BackendMessage[] = [];
    raw.send(startupPacket(196608, { user, database: cluster.database }));
    const sasl = await raw.next();
    messages.push(sasl);
    const scram = new ScramClientExchange(password);
    raw.send(serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', scram.clientFirst()));
    const cont = await raw.next();
    messages.push(cont);
    const serverFirst = cont.body.toString('utf8', 4);
    const final = scram.handleServerFirst(serverFirst);
    const started = performance.now();
    raw.send(serialize.sendSCRAMClientFinalMessage(final));
    const answer = await raw.next();
    const finalMs = performance.now() - started;
    messages.push(answer, ...(await raw.closedByServer()));
    return { messages, serverFirst, finalMs };
  } finally {
    raw.destroy();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('SCRAM: a wrong password and an unknown user look alike', () => {
  let relay: Relay;
  beforeAll(async () => {
    relay = await relayWith({});
  });

  it('refuses a wrong password with 28P01 only after the full exchange', async () => {
    const attempt = await scramAttempt(relay.port, cluster.user, 'not-the-password');
    expect(attempt.messages.map((m) => m.type)).toEqual(['R', 'R', 'E']);
    expect(attempt.messages[0]!.body.readInt32BE(0)).toBe(10); // AuthenticationSASL
    expect(attempt.messages[1]!.body.readInt32BE(0)).toBe(11); // SASLContinue: the exchange goes on
    const fields = errorFields(attempt.messages[2]!.body);
    expect([fields.get('S'), fields.get('C'), fields.get('M')]).toEqual(['FATAL', '28P01', `password authentication failed for user "${cluster.user}"`]);
    // and the right password gets in (the test can tell the two apart)
    const good = await RawClient.connect(relay.port, { user: cluster.user, password: cluster.password, database: cluster.database });
    good.destroy();
  });

  it('answers an unknown user with the same messages, a stable salt and the same iteration count', async () => {
    const known = await scramAttempt(relay.port, cluster.user, 'wrong');
    const unknown = await scramAttempt(relay.port, 'no_such_user_x', 'wrong');
    const again = await scramAttempt(relay.port, 'no_such_user_x', 'other');
    expect(unknown.messages.map((m) => m.type)).toEqual(known.messages.map((m) => m.type));
    const params = (serverFirst: string) => Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
    const [k, u, a] = [params(known.serverFirst), params(unknown.serverFirst), params(again.serverFirst)];
    expect(u.i).toBe(k.i);
    expect(Buffer.from(u.s!, 'base64').length).toBe(Buffer.from(k.s!, 'base64').length);
    expect(a.s).toBe(u.s); // a real user's salt is stable too: a changing salt would give the user away
    const fields = errorFields(unknown.messages[2]!.body);
    expect([fields.get('S'), fields.get('C'), fields.get('M')]).toEqual(['FATAL', '28P01', 'password authentication failed for user "no_such_user_x"']);
  });

  it('takes about as long to refuse an unknown user as a wrong password', async () => {
    const knownMs: number[] = [];
    const unknownMs: number[] = [];
    for (let i = 0; i < 15; i++) {
      knownMs.push((await scramAttempt(relay.port, cluster.user, `wrong-${i}`)).finalMs);
      unknownMs.push((await scramAttempt(relay.port, `ghost_${i % 3}`, `wrong-${i}`)).finalMs);
    }
    console.log(`[hardening] SCRAM final step, median of 15: wrong password ${median(knownMs).toFixed(2)} ms, unknown user ${median(unknownMs).toFixed(2)} ms`);
    // a generous bound (shared machine); the same work is done on both paths by construction
    expect(Math.abs(median(knownMs) - median(unknownMs))).toBeLessThan(20);
  });
});

describe('tls.required', () => {
  let dir: string;
  let relay: Relay;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgrelay-hardening-tls-'));
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    relay = await relayWith({ tls: { cert, key, required: true } });
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function tlsClientWorks(): Promise<void> {
    const client = new pg.Client({ connectionString: relay.url(), ssl: { rejectUnauthorized: false } });
    await client.connect();
    try {
      expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await client.end();
    }
  }

  it('refuses a plaintext startup, also after a GSSENCRequest was declined, with 28000', async () => {
    for (const before of [[], [sslRequest(true)]]) {
      const c = await Conversation.open(relay.port, before.length);
      for (const b of before) await c.write(b);
      if (before.length) await vi.waitFor(() => expect(c.negotiation).toBe('N'), { timeout: BOUND_MS });
      await c.write(startupPacket(196608, { user: cluster.user, database: cluster.database }));
      expect(await c.waitClosed(BOUND_MS)).toBe(true);
      expect(c.errors()).toEqual([{ severity: 'FATAL', code: '28000', message: 'pgrelay requires TLS: connect with sslmode=require' }]);
    }
    await tlsClientWorks();
  });

  it('closes a client that sends garbage instead of a TLS handshake, and stays up', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 600 }), async (garbage) => {
        const c = await Conversation.open(relay.port, 1);
        await c.write(sslRequest());
        await vi.waitFor(() => expect(c.negotiation).toBe('S'), { timeout: BOUND_MS });
        await c.write(Buffer.from(garbage));
        c.end();
        expect(await c.waitClosed(BOUND_MS)).toBe(true);
      }),
      { numRuns: 40 },
    );
    await tlsClientWorks();
  });

  it('closes a client whose TLS session carries garbage instead of a startup packet', async () => {
    for (const garbage of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.from([0, 0, 0, 3]), randomBytes(64)]) {
      const c = await Conversation.open(relay.port, 1);
      await c.write(sslRequest());
      await vi.waitFor(() => expect(c.negotiation).toBe('S'), { timeout: BOUND_MS });
      const secure = tls.connect({ socket: c.socket, rejectUnauthorized: false });
      await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
      const closed = new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        secure.on('data', (chunk: Buffer) => chunks.push(chunk));
        secure.on('error', () => undefined);
        secure.once('close', () => resolve(Buffer.concat(chunks)));
      });
      secure.write(garbage);
      let timer: NodeJS.Timeout | undefined;
      const bytes = await Promise.race([closed, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), BOUND_MS)))]);
      clearTimeout(timer);
      secure.destroy();
      expect(bytes, 'pgrelay closed the TLS session').toBeDefined();
      // the error went through the TLS stream (a FATAL 08P01 ErrorResponse), not in plaintext
      expect(bytes![0]).toBe(0x45);
      expect(errorFields(bytes!.subarray(5)).get('C')).toBe('08P01');
    }
    await tlsClientWorks();
  });
});

describe('CancelRequest', () => {
  let relay: Relay;
  const clients: pg.Client[] = [];
  beforeAll(async () => {
    // one server connection: clients take turns on it, so a stale key could hit the next client
    relay = await relayWith({ pool: { size: 1, checkout_timeout_ms: BOUND_MS } });
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  });

  async function connect(): Promise<pg.Client & { processID: number; secretKey: number }> {
    const client = new pg.Client({ connectionString: relay.url() });
    clients.push(client);
    await client.connect();
    return client as pg.Client & { processID: number; secretKey: number };
  }

  async function runningOnServer(): Promise<void> {
    await vi.waitFor(
      async () => {
        const rows = await queryNode(cluster, 'primary', "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(1.5)%' AND state = 'active'", [], true);
        expect(rows).toHaveLength(1);
      },
      { timeout: BOUND_MS, interval: 50 },
    );
  }

  it('cancels nothing with a wrong key, an unknown process id, or another client’s key', async () => {
    const victim = await connect();
    const other = await connect();
    await other.query('SELECT 1'); // it has used the same server connection before
    const sleeping = victim.query("SELECT pg_sleep(1.5), 'completed' AS outcome");
    await runningOnServer();
    await sendCancel(relay.port, victim.processID, victim.secretKey ^ 1);
    await sendCancel(relay.port, victim.processID, ~victim.secretKey);
    await sendCancel(relay.port, victim.processID + 1, victim.secretKey);
    await sendCancel(relay.port, other.processID, other.secretKey);
    await sendCancel(relay.port, other.processID, victim.secretKey);
    await sendCancel(relay.port, victim.processID, other.secretKey);
    expect((await sleeping).rows[0].outcome).toBe('completed');
  });

  it('a client’s own key does not reach the next client on its former server connection', async () => {
    const first = await connect();
    const next = await connect();
    await first.query('SELECT 1'); // first used the only server connection, and gave it back
    const sleeping = next.query("SELECT pg_sleep(1.5), 'completed' AS outcome");
    await runningOnServer();
    await sendCancel(relay.port, first.processID, first.secretKey);
    expect((await sleeping).rows[0].outcome).toBe('completed');
  });

  it('the right key cancels (the tests above can fail)', async () => {
    const client = await connect();
    const sleeping = client.query('SELECT pg_sleep(1.5)');
    await runningOnServer();
    await sendCancel(relay.port, client.processID, client.secretKey);
    await expect(sleeping).rejects.toMatchObject({ code: '57014' });
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });
});

describe('logs at debug level', () => {
  const marker = (what: string) => `${what}${randomBytes(6).toString('hex')}`;
  const secrets = {
    password: marker('Pw'),
    wrongPassword: marker('WrongPw'),
    bindParameter: marker('BindParam'),
    literal: marker('Literal'),
    applicationName: marker('AppName'),
    setValue: marker('SetValue'),
    castValue: marker('CastValue'),
    badStartupValue: marker('BadStartup'),
  };
  const role = 'hardening_secret';
  let child: RelayChild;

  beforeAll(async () => {
    await queryNode(cluster, 'primary', `DROP ROLE IF EXISTS ${role}`, [], true);
    await queryNode(cluster, 'primary', `CREATE ROLE ${role} LOGIN PASSWORD '${secrets.password}'`, [], true);
    child = await startRelayChild(
      'logs',
      relayDocument(
        { ...cluster, user: role, password: secrets.password },
        { pool: { size: 2, checkout_timeout_ms: 500 }, log: { level: 'debug', format: 'json' }, failover: { mode: 'off' } },
      ),
    );
  });
  afterAll(async () => {
    await child?.stop();
    removeCompiled();
    await queryNode(cluster, 'primary', `DROP ROLE IF EXISTS ${role}`, [], true);
  });

  it('contain no password, bind parameter, literal or setting value of a run that used them all', async () => {
    const url = (password: string, params = '') => `postgres://${role}:${password}@127.0.0.1:${child.port}/${cluster.database}${params}`;
    const client = new pg.Client({ connectionString: url(secrets.password), application_name: secrets.applicationName });
    await client.connect();
    try {
      expect((await client.query('SELECT $1::text AS v', [secrets.bindParameter])).rows[0].v).toBe(secrets.bindParameter);
      expect((await client.query(`SELECT '${secrets.literal}' AS v`)).rows[0].v).toBe(secrets.literal);
      await client.query(`SET application_name = '${secrets.setValue}'`);
      expect((await client.query('SHOW application_name')).rows[0].application_name).toBe(secrets.setValue);
      // errors that carry the values: the server's message names them, pgrelay must not log it
      await expect(client.query('SELECT $1::int', [secrets.castValue])).rejects.toMatchObject({ code: '22P02' });
      await expect(client.query(`SELECT '${secrets.castValue}'::int`)).rejects.toMatchObject({ code: '22P02' });
      await client.query('BEGIN');
      await expect(client.query(`SELECT 1/0 AS "${secrets.literal}"`)).rejects.toMatchObject({ code: '22012' });
      await client.query('ROLLBACK');
    } finally {
      await client.end();
    }
    const wrong = new pg.Client({ connectionString: url(secrets.wrongPassword) });
    await expect(wrong.connect()).rejects.toMatchObject({ code: '28P01' });
    const badStartup = new pg.Client({ connectionString: url(secrets.password, `?options=${encodeURIComponent(`-c statement_timeout=${secrets.badStartupValue}`)}`) });
    await expect(badStartup.connect()).rejects.toMatchObject({ code: '22023' });
    // a client that drops mid-transaction, and one that sends garbage after login
    const dropped = new pg.Client({ connectionString: url(secrets.password) });
    dropped.on('error', () => undefined);
    await dropped.connect();
    await dropped.query('BEGIN');
    await dropped.query('SELECT $1::text', [secrets.bindParameter]);
    (dropped as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    const raw = await RawClient.connect(child.port, { user: role, password: secrets.password, database: cluster.database });
    raw.send(Buffer.from(`\x01\0\0\0\x10${secrets.literal}`));
    await raw.closedByServer();
    // a statement with a bind parameter that pgrelay itself fails (53300: both server connections
    // are held by open transactions): pgrelay logs that failure
    const holders = [new pg.Client({ connectionString: url(secrets.password) }), new pg.Client({ connectionString: url(secrets.password) })];
    const waiter = new pg.Client({ connectionString: url(secrets.password) });
    try {
      await waiter.connect();
      for (const h of holders) {
        await h.connect();
        await h.query('BEGIN');
        await h.query('SELECT 1');
      }
      await expect(waiter.query('SELECT $1::text', [secrets.bindParameter])).rejects.toMatchObject({ code: '53300' });
    } finally {
      await Promise.all([...holders, waiter].map((c) => c.end().catch(() => undefined)));
    }

    await child.stop(); // everything it printed is flushed
    const output = child.output();
    const lines = output.split('\n').filter(Boolean);
    console.log(`[hardening] pgrelay printed ${lines.length} lines at log level debug during the run`);
    // the capture is real: pgrelay's own lines from this run are in it
    expect(output).toContain('"msg":"pgrelay listening"');
    expect(output).toContain('"msg":"unit failed in pgrelay"');
    expect(output).toContain('"msg":"pgrelay stopped"');
    const leaked = Object.entries(secrets).filter(([, value]) => output.includes(value));
    expect(leaked.map(([name]) => name), leaked.map(([name, value]) => `${name}: ${lines.find((l) => l.includes(value))}`).join('\n')).toEqual([]);
  });
});
